"""surfbench.ema.ema_update against the formula."""
import copy

import pytest
import torch
from torch import nn

from surfbench.ema import ema_update


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)


def _pair(seed=0):
    torch.manual_seed(seed)
    student, teacher = Net(), Net()
    for p in list(student.parameters()) + list(teacher.parameters()):
        with torch.no_grad():
            p.copy_(torch.randn_like(p))
    student.norm.running_mean.copy_(torch.randn(3))
    student.norm.running_var.copy_(torch.rand(3) + 0.5)
    student.norm.num_batches_tracked.fill_(7)
    return student, teacher


@pytest.mark.parametrize("alpha", [0.0, 0.9, 0.999, 1.0])
def test_ema_formula(alpha):
    student, teacher = _pair(1)
    before = copy.deepcopy(teacher)
    ema_update(teacher, student, alpha)
    for (n, tp), bp, sp in zip(teacher.named_parameters(), before.parameters(), student.parameters()):
        expected = alpha * bp + (1 - alpha) * sp
        assert torch.allclose(tp, expected, atol=1e-7), n
        assert not tp.requires_grad or tp.grad is None
    # buffers copied from the student
    assert torch.equal(teacher.norm.running_mean, student.norm.running_mean)
    assert torch.equal(teacher.norm.running_var, student.norm.running_var)
    assert teacher.norm.num_batches_tracked.item() == 7


def test_alpha_zero_copies_alpha_one_keeps():
    student, teacher = _pair(2)
    before = copy.deepcopy(teacher)
    ema_update(teacher, student, 1.0)
    for tp, bp in zip(teacher.parameters(), before.parameters()):
        assert torch.equal(tp, bp)
    ema_update(teacher, student, 0.0)
    for tp, sp in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(tp, sp)


def test_student_untouched_and_wrapped_student():
    student, teacher = _pair(3)
    snap = copy.deepcopy(student)
    wrapped = nn.DataParallel(student)  # same `.module` unwrapping as DistributedDataParallel
    ema_update(teacher, wrapped, 0.5)
    for sp, qp, tp in zip(student.parameters(), snap.parameters(), teacher.parameters()):
        assert torch.equal(sp, qp)
    ref_student, ref_teacher = _pair(3)
    ema_update(ref_teacher, ref_student, 0.5)
    for a, b in zip(teacher.parameters(), ref_teacher.parameters()):
        assert torch.equal(a, b)

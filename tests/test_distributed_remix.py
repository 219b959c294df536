"""Remixing over the global batch under torchrun (surfbench.remix.GlobalRemix).

Two CPU processes on gloo (torch.multiprocessing spawn) against one process with the whole batch:
the remixed rows each process holds, the four remixing methods' losses and DDP-averaged gradients,
and how many remixed rows come from the other process's mixtures.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from surfbench.remix import GlobalRemix, draw_global_remix, draw_remix_permutation, remix, unremix

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
B, K = 8, 2            # global batch of the remix tests; each process holds B / WORLD mixtures
STEPS = 200            # remix draws per process for the cross-process statistic
SHAPE = (1, 8, 8)      # the method tests: 8x8 grey images, a global batch of 6
B_METHOD = 6
METHODS = ["remixit", "self_remixing", "surf_remixit", "surf_self_remixing"]


# ----------------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        torch.save(fn(rank, WORLD), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _two_processes(fn, out_dir: Path) -> list:
    """Run ``fn(rank, world)`` in two gloo processes; their return values, by rank."""
    mp.spawn(_entry, args=(fn, _free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _rank_generator(rank: int) -> torch.Generator:
    # rank 1's stream differs from rank 0's: Π must come from rank 0 alone
    return torch.Generator().manual_seed(100 + 7 * rank)


def _pi_tensor(pi) -> torch.Tensor:
    return pi.pi if isinstance(pi, GlobalRemix) else pi


# ----------------------------------------------------------------------------- 1 and 3: which rows a process holds
def _labels() -> torch.Tensor:
    """``X̄`` of the global batch, ``[B, K, 2]``: every row holds (its mixture, its slot)."""
    b, k = torch.meshgrid(torch.arange(B), torch.arange(K), indexing="ij")
    return torch.stack([b, k], -1).double()


def _remix_worker(rank: int, world: int) -> dict:
    b = B // world
    x_bar = _labels()[rank * b:(rank + 1) * b]          # this process's mixtures
    gen, own_gen = _rank_generator(rank), torch.Generator().manual_seed(rank)
    pis, rows, back, before = [], [], [], []
    for _ in range(STEPS):
        pi = draw_global_remix(b, K, gen)
        x_tilde = remix(x_bar, pi)
        pis.append(_pi_tensor(pi))
        rows.append(x_tilde)
        back.append(unremix(x_tilde, pi))
        before.append(remix(x_bar, draw_remix_permutation(b, K, own_gen)))  # what each process did before: its own Π
    return {"pi": pis, "rows": rows, "back": back, "before": before, "x_bar": x_bar}


@pytest.fixture(scope="module")
def remix_runs(tmp_path_factory):
    return _two_processes(_remix_worker, tmp_path_factory.mktemp("remix"))


def test_one_process_draws_the_same_permutation_as_before():
    # without torch.distributed the baselines get the very tensor of draw_remix_permutation (golden values hold)
    pi = draw_global_remix(5, 3, torch.Generator().manual_seed(3))
    assert isinstance(pi, torch.Tensor) and torch.equal(pi, draw_remix_permutation(5, 3, torch.Generator().manual_seed(3)))


def test_each_process_holds_its_rows_of_one_permutation_of_the_gathered_batch(remix_runs):
    b = B // WORLD
    one = torch.Generator().manual_seed(100)   # one process with rank 0's generator
    for step in range(STEPS):
        pi = remix_runs[0]["pi"][step]
        assert pi.shape == (B * K,), "Π must act on the B·K rows of the global batch"
        assert torch.equal(remix_runs[1]["pi"][step], pi), "every process must hold the same Π"
        assert torch.equal(pi, draw_remix_permutation(B, K, one))
        everyone = remix(_labels(), pi)
        for r in range(WORLD):
            assert torch.equal(remix_runs[r]["rows"][step], everyone[r * b:(r + 1) * b]), (step, r)
            assert torch.equal(remix_runs[r]["back"][step], remix_runs[r]["x_bar"]), (step, r)   # Π⁻¹ Π = I


def test_remixed_rows_come_from_the_other_process(remix_runs):
    b = B // WORLD
    after, mixed, before = [], [], []
    for r in range(WORLD):
        for step in range(STEPS):
            owner = remix_runs[r]["rows"][step][..., 0] // b            # [b, K]: the process each row came from
            after.append((owner != r).double().mean())
            mixed.append((owner != owner[:, :1]).any(1).double().mean())  # remixed mixtures spanning both processes
            before.append((remix_runs[r]["before"][step][..., 0] // b != r).double().mean())
    after, mixed, before = (torch.stack(v).mean().item() for v in (after, mixed, before))
    mixed_expected = 1 - (b * K - 1) / (B * K - 1)     # K = 2: the second row is not from the first row's process
    print(f"\nrows from the other process: before {before:.3f}, after {after:.3f} (expected 0.5); remixed "
          f"mixtures with sources of both processes: {mixed:.3f} (expected {mixed_expected:.3f})")
    assert before == 0.0
    assert abs(after - 0.5) < 0.05
    assert abs(mixed - mixed_expected) < 0.06


# ----------------------------------------------------------------------------- 2: losses and gradients of the methods
class _StubMixit:
    """A frozen 'MixIT' teacher with 4 slots: a fixed function of each mixture alone."""

    def separate_slots(self, m: torch.Tensor) -> torch.Tensor:
        return torch.stack([0.6 * m, 0.4 * m + 0.1 * torch.sin(6 * m), 0.05 * torch.cos(4 * m), -0.1 * m], 1)


def _inputs() -> dict:
    g = torch.Generator().manual_seed(5)
    return {"M": (0.5 * torch.rand(B_METHOD, K, *SHAPE, generator=g)).sum(1),   # observed mixtures
            "t": torch.rand(B_METHOD, generator=g),                           # t and Z of each remixed mixture
            "Z": torch.randn(B_METHOD, K, *SHAPE, generator=g)}


@contextlib.contextmanager
def _fixed_t_and_z(module, t: torch.Tensor, z: torch.Tensor):
    """A SURF baseline's t and Z come from each process's own generator: fix them per remixed mixture instead."""
    names = ("draw_times", "mixture_consistent_start")
    if not hasattr(module, "draw_times"):
        yield
        return
    saved = {n: getattr(module, n) for n in names}
    module.draw_times = lambda batch, training_cfg, generator, device: t.to(device)
    module.mixture_consistent_start = lambda m, _z: saved["mixture_consistent_start"](m, z)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(module, n, f)


def _method_step(name: str, rank: int, world: int, gen: torch.Generator) -> dict:
    """One ``training_step`` + backward of method ``name`` on this process's share of the batch."""
    from surfbench.config import RunId, load_config, resolve_run
    from surfbench.method import StepContext
    from surfbench.registry import registry
    from surfbench.train import unwrap

    cfg = load_config(ROOT / "config" / "ci.yaml")
    rc = resolve_run(cfg, RunId("mnist", name, 0))
    cls = registry().get(name)
    torch.manual_seed(0)
    method = cls(rc, SHAPE, K, "cpu")
    method.set_teacher(_StubMixit())
    if world > 1:
        method.student = torch.nn.parallel.DistributedDataParallel(method.student)
    data, b = _inputs(), B_METHOD // world
    own = slice(rank * b, (rank + 1) * b)     # this process's observed mixtures, and its remixed ones
    ctx = StepContext(step=0, phase="frozen_teacher", phase_step=0, phase_steps=1, generator=gen, device=torch.device("cpu"))
    with _fixed_t_and_z(sys.modules[cls.__module__], data["t"][own], data["Z"][own]):
        loss = method.training_step({"mixture": data["M"][own]}, ctx)
    loss.backward()   # DDP averages the gradients over the processes here
    grads = {n: p.grad.detach().clone() for n, p in unwrap(method.student).named_parameters() if p.grad is not None}
    return {"loss": loss.item(), "grads": grads}


def _methods_worker(rank: int, world: int) -> dict:
    return {name: _method_step(name, rank, world, _rank_generator(rank)) for name in METHODS}


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory):
    return _two_processes(_methods_worker, tmp_path_factory.mktemp("methods"))


@pytest.mark.parametrize("name", METHODS)
def test_two_processes_match_one_process_on_the_whole_batch(name, method_runs):
    ref = _method_step(name, 0, 1, _rank_generator(0))   # one process, the whole batch, the same Π
    losses = [run[name]["loss"] for run in method_runs]
    assert sum(losses) / WORLD == pytest.approx(ref["loss"], rel=1e-5)
    assert ref["grads"] and set(method_runs[0][name]["grads"]) == set(ref["grads"])
    # float32 sums in another order: tolerances relative to the largest gradient entry (some, e.g. the bias
    # of the last layer, are ~0: the mixture-consistency projection removes them)
    scale = max(g.abs().max().item() for g in ref["grads"].values())
    worst = 0.0
    for r, run in enumerate(method_runs):
        for n, g in ref["grads"].items():
            got = run[name]["grads"][n]
            worst = max(worst, (got - g).abs().max().item() / scale)
            torch.testing.assert_close(got, g, rtol=1e-4, atol=1e-5 * scale,
                                       msg=lambda m: f"{name}: rank {r} gradient of {n}: {m}")
    print(f"\n{name}: loss 1 process {ref['loss']:.6g}, 2 processes {losses} (mean {sum(losses) / WORLD:.6g}); "
          f"largest gradient difference {worst:.1e} of the largest gradient {scale:.3g}")

"""Flow time sampling (``training.time_sampling``, ``training.time_power``): t = u ** p with u ~ U(0, 1)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import scipy.stats
import torch

from surfbench.config import RunId, load_config, resolve_run
from surfbench.method import StepContext
from surfbench.registry import registry
from surfbench.separation import draw_times

ROOT = Path(__file__).resolve().parents[1]
PER_EXAMPLE = {"time_sampling": "per_example"}


def test_power_one_is_the_uniform_draw_itself():
    """The default consumes the generator as before and returns its uniform draws unchanged (bit for bit)."""
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(draw_times(7, PER_EXAMPLE, g, "cpu"), torch.rand(7, generator=ref))
    assert torch.equal(draw_times(7, {**PER_EXAMPLE, "time_power": 1.0}, g, "cpu"), torch.rand(7, generator=ref))


def test_power_raises_the_same_uniform_draws():
    g, ref = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    t = draw_times(6, {**PER_EXAMPLE, "time_power": 3.0}, g, "cpu")
    torch.testing.assert_close(t, torch.rand(6, generator=ref) ** 3, rtol=0, atol=0)
    one = draw_times(6, {"time_sampling": "per_batch", "time_power": 3.0}, g, "cpu")
    assert one.shape == (6,) and torch.equal(one, one[:1].expand(6))


@pytest.mark.parametrize("power", [1.0, 3.0, 8.0])
def test_power_gives_the_beta_distribution(power):
    """u ** p for u ~ U(0, 1) is Beta(1/p, 1): P(t <= x) = x ** (1/p) (scipy's Beta as the reference)."""
    t = draw_times(20000, {**PER_EXAMPLE, "time_power": power}, torch.Generator().manual_seed(0), "cpu")
    assert scipy.stats.kstest(t.numpy(), scipy.stats.beta(1.0 / power, 1.0).cdf).pvalue > 1e-3
    assert float((t < 0.5 ** power).float().mean()) == pytest.approx(0.5, abs=0.02)  # the median is 0.5 ** p


class _Teacher:
    """A fixed stand-in teacher with 4 MixIT slots (the remixing flows' first phase)."""

    def separate_slots(self, m: torch.Tensor) -> torch.Tensor:
        return torch.stack([0.6 * m, 0.4 * m, 0.05 * torch.cos(4 * m), -0.05 * m], 1)


@pytest.mark.parametrize("name", ["supervised_flow", "surf_remixit", "surf_self_remixing"])
def test_time_power_reaches_every_flow_method(name, monkeypatch):
    """Each flow method's training step draws its times with the run's ``time_power``."""
    cfg = load_config(ROOT / "config" / "ci.yaml", overrides={"training": {"time_power": 5.0}})
    rc = resolve_run(cfg, RunId("mnist", name, 0))
    cls = registry().get(name)
    torch.manual_seed(0)
    method = cls(rc, (1, 8, 8), 2, "cpu")
    if hasattr(method, "set_teacher"):
        method.set_teacher(_Teacher())
    seen = []

    def recording(batch, training_cfg, generator, device):
        seen.append(training_cfg.get("time_power", 1.0))
        return draw_times(batch, training_cfg, generator, device)

    monkeypatch.setattr(sys.modules[cls.__module__], "draw_times", recording)
    g = torch.Generator().manual_seed(1)
    sources = 0.5 * torch.rand(4, 2, 1, 8, 8, generator=g)
    ctx = StepContext(step=0, phase="frozen_teacher", phase_step=0, phase_steps=1,
                      generator=torch.Generator().manual_seed(9), device=torch.device("cpu"))
    loss = method.training_step({"mixture": sources.sum(1), "sources": sources}, ctx)
    assert seen == [5.0] and torch.isfinite(loss)

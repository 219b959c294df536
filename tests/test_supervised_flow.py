"""Supervised Flow: Algorithm 1 (ReMixIT variant) with the ground truth in place of the teacher samples,
remixed across the batch or not (``training.supervised_flow_remix``)."""
import sys
from pathlib import Path

import pytest
import torch

from surfbench.config import RunId, load_config, resolve_run
from surfbench.method import StepContext
from surfbench.registry import registry

ROOT = Path(__file__).resolve().parents[1]
B, K, SIDE = 6, 2, 8


def _targets_seen(monkeypatch, remix: bool):
    """One training step on sources whose rows are told apart by their value (row r is (r + 1) / 100
    everywhere); returns those sources and what the student is trained towards (``floss_align``'s X1, M)."""
    cls = registry().get("supervised_flow")
    module = sys.modules[cls.__module__]
    seen = {}
    real = module.floss_align

    def spy(v, X0, X1, M):
        seen.update(X1=X1.clone(), M=M.clone())
        return real(v, X0, X1, M)

    monkeypatch.setattr(module, "floss_align", spy)
    rc = resolve_run(load_config(ROOT / "config" / "ci.yaml"), RunId("mnist", "supervised_flow", 0))
    assert rc["training"]["supervised_flow_remix"] is False  # the schema default: the ci golden values
    rc["training"]["supervised_flow_remix"] = remix
    method = cls(rc, (1, SIDE, SIDE), K, "cpu")
    rows = (torch.arange(B * K, dtype=torch.float32) + 1) / 100
    sources = rows.view(B, K, 1, 1, 1).expand(B, K, 1, SIDE, SIDE).contiguous()
    ctx = StepContext(step=0, phase="train", phase_step=0, phase_steps=1,
                      generator=torch.Generator().manual_seed(3), device=torch.device("cpu"))
    loss = method.training_step({"sources": sources, "mixture": sources.sum(1)}, ctx)
    assert torch.isfinite(loss)
    return sources, seen


def _row_ids(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 0, 0, 0] * 100).round().long() - 1   # [B, K] row ids


def test_remix_on_trains_on_new_mixtures_of_the_batchs_ground_truth_rows(monkeypatch):
    sources, seen = _targets_seen(monkeypatch, remix=True)
    ids = _row_ids(seen["X1"])
    # every ground-truth row exactly once (a permutation Π of the B·K rows), each row intact
    assert sorted(ids.flatten().tolist()) == list(range(B * K))
    torch.testing.assert_close(seen["X1"], sources.flatten(0, 1)[ids.flatten()].view_as(sources), rtol=0, atol=0)
    # grouped into new K-tuples: some tuple mixes rows of different original mixtures
    assert any(len({int(i) // K for i in tup}) > 1 for tup in ids)
    # the mixture the student separates is the sum of its new tuple, not the batch's mixture
    torch.testing.assert_close(seen["M"], seen["X1"].sum(1), rtol=0, atol=0)
    assert not torch.equal(seen["M"], sources.sum(1))


def test_remix_off_trains_on_each_mixtures_own_sources(monkeypatch):
    sources, seen = _targets_seen(monkeypatch, remix=False)
    assert torch.equal(seen["X1"], sources)
    assert torch.equal(seen["M"], sources.sum(1))

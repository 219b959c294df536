"""``surfbench bench step``: the timing harness measures what it claims."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from surfbench import bench
from surfbench.method import Method

ROOT = Path(__file__).resolve().parents[1]


class _Sleeper(Method):
    """A fake method: its training step costs a known wall time; counts its after_step calls."""

    display_name = "sleeper"
    training_data = "sources"
    delay = 0.0

    def build(self):
        self.student = torch.nn.Linear(1, 1, bias=False)
        self.after = 0

    def training_step(self, batch, ctx):
        time.sleep(self.delay)
        return (self.student.weight ** 2).sum() + 0 * batch["mixture"].sum()

    def after_step(self, ctx):
        self.after += 1


def _sleeper(delay: float) -> _Sleeper:
    cls = type(f"Sleeper{int(delay * 1e3)}", (_Sleeper,), {"delay": delay})
    return cls({"training": {"lr": 0.1, "grad_clip": 1.0, "warmup_steps": 0}}, (4,), 2, "cpu")


def test_fake_clock_medians_ratios_and_verdicts():
    """Exact numbers with an injected clock: warm-up rounds dropped, median / IQR / ratio, PASS vs ABOVE."""
    now = [0.0]
    cost = {"supervised_flow": [1.0] * 2 + [1.0, 2.0, 3.0, 4.0, 5.0],   # 2 warm-up rounds first
            "surf_x/ema": [9.0] * 2 + [2.0, 4.0, 6.0, 8.0, 10.0],
            "surf_y/frozen": [9.0] * 2 + [1.0, 2.0, 3.0, 4.0, 5.0]}
    calls = {k: 0 for k in cost}
    order = []

    def stepper(label):
        def f():
            now[0] += cost[label][calls[label]]
            calls[label] += 1
            order.append(label)
        return f

    times = bench.time_rounds({k: stepper(k) for k in cost}, repeats=5, warmup=2, clock=lambda: now[0])
    assert times["supervised_flow"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert times["surf_x/ema"] == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert order[:3] == ["supervised_flow", "surf_x/ema", "surf_y/frozen"]
    assert order[3:6] == ["surf_x/ema", "surf_y/frozen", "supervised_flow"]   # rotated each round
    s = bench.summarize(times)
    assert s["supervised_flow"]["median_s"] == 3.0 and s["supervised_flow"]["iqr_s"] == 2.0
    assert s["surf_x/ema"]["ratio"] == pytest.approx(2.0) and s["surf_x/ema"]["verdict"] == "PASS"
    assert s["surf_y/frozen"]["ratio"] == pytest.approx(1.0)
    assert s["surf_x/ema"]["round_ratio_q25"] == pytest.approx(2.0)
    s = bench.summarize(times, limit=1.5)
    assert s["surf_x/ema"]["verdict"] == "ABOVE" and s["surf_y/frozen"]["verdict"] == "PASS"
    assert "verdict" not in s["supervised_flow"]
    assert "ABOVE" in bench.format_table(s)


def test_real_steps_are_timed_with_known_cost():
    """Through the trainer's step (make_batch, training_step, backward, Adam, after_step): sleeps of known length."""
    src = torch.rand(3, 2, 4)
    cases = {lab: bench.make_case(lab, _sleeper(d), "train", src, "audio", {"single_source_prob": 0.0})
             for lab, d in (("supervised_flow", 0.03), ("surf_remixit/ema", 0.12), ("remixit/ema", 0.045))}
    w0 = cases["supervised_flow"].method.student.weight.detach().clone()
    times = bench.time_rounds({k: c.step for k, c in cases.items()}, repeats=5, warmup=1)
    s = bench.summarize(times)
    for lab, d in (("supervised_flow", 0.03), ("surf_remixit/ema", 0.12), ("remixit/ema", 0.045)):
        assert d <= s[lab]["median_s"] < d + 0.04, (lab, s[lab]["median_s"])
        assert cases[lab].method.after == 6          # after_step ran once per step (warm-up included)
    assert s["surf_remixit/ema"]["ratio"] == pytest.approx(4.0, rel=0.3)
    assert s["surf_remixit/ema"]["verdict"] == "ABOVE"
    assert s["remixit/ema"]["ratio"] == pytest.approx(1.5, rel=0.3) and "verdict" not in s["remixit/ema"]
    assert not torch.equal(cases["supervised_flow"].method.student.weight, w0)   # the Adam step really ran


def test_ema_case_samples_the_teacher_flow_every_euler_step(tmp_path):
    """The SURF EMA case is the expensive one: β = 0, so the EMA flow runs sampler.euler_steps times per step."""
    cfg = bench.bench_config(ROOT / "config" / "ci.yaml", "tiny", batch_size=2)
    cases, info = bench.build_cases(cfg, "mnist", torch.device("cpu"),
                                    ["surf_remixit/ema", "surf_remixit/frozen", "mixit"])
    by = {c.label: c for c in cases}
    assert list(by) == ["supervised_flow", "surf_remixit/ema", "surf_remixit/frozen", "mixit"]
    assert info["beta"]["surf_remixit/ema"] == 0.0 and info["euler_steps"] == 5
    assert by["mixit"].sources.shape[0] == 2 * by["supervised_flow"].sources.shape[0] == 4
    # EMA phase at beta = 0: 5 teacher Euler steps and no MixIT forward (the anchor is unused);
    # frozen phase: the MixIT teacher once, no EMA model
    for label, want_ema, want_mixit in (("surf_remixit/ema", 5, 0), ("surf_remixit/frozen", 0, 1)):
        m = by[label].method
        n = {"ema": 0, "mixit": 0}
        h1 = m.ema.register_forward_hook(lambda *a: n.__setitem__("ema", n["ema"] + 1))
        h2 = m.mixit.student.register_forward_hook(lambda *a: n.__setitem__("mixit", n["mixit"] + 1))
        by[label].step()
        h1.remove(), h2.remove()
        assert n == {"ema": want_ema, "mixit": want_mixit}, (label, n)
    # the JSON writer of the CLI
    out = tmp_path / "b.json"
    rc = bench.main(["step", "--config", str(ROOT / "config" / "ci.yaml"), "--batch-size", "2", "--repeats", "1",
                     "--warmup", "0", "--cases", "mixit", "--json", str(out)])
    blob = json.loads(out.read_text())
    assert rc == 0 and set(blob["cases"]) == {"supervised_flow", "mixit"}
    assert blob["cases"]["supervised_flow"]["ratio"] == 1.0 and np.isfinite(blob["cases"]["mixit"]["ratio"])


# ----------------------------------------------------------------------------- surfbench bench metrics
def test_bench_metrics_images_times_the_available_suite(tmp_path, monkeypatch, capsys):
    """On prepared MNIST with no LPIPS weights: the suite row times PSNR+SSIM, LPIPS is listed unavailable,
    and the throughput is items / median time; the scored estimate is the Average baseline's."""
    from surfbench.bench import average_estimates, main as bench_main
    from surfbench.data.store import load_split
    from test_determinism import prepare_tiny_mnist

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))
    data = prepare_tiny_mnist(tmp_path / "mnist")
    out = tmp_path / "bench.json"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("profile: benchtest\nevaluation: {image_metrics: [psnr, ssim, lpips]}\n")
    assert bench_main(["metrics", "--config", str(cfg), "--dataset", "mnist", "--data", str(data), "--n", "5",
                       "--repeats", "2", "--json", str(out)]) == 0
    rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["suite"]["metrics"] == ["psnr", "ssim"] and rows["suite"]["items"] == 10
    assert rows["suite"]["items_per_s"] == pytest.approx(10 / rows["suite"]["median_s"])
    assert "unavailable" in rows["lpips"] and "surfbench weights" in rows["lpips"]["unavailable"]
    assert set(rows) == {"suite", "psnr", "ssim", "lpips"}
    src = load_split(data, "eval").all()[:5]
    est = average_estimates(src)
    assert torch.allclose(est.sum(1), src.sum(1)) and torch.equal(est[:, 0], est[:, 1])
    assert "unavailable" in capsys.readouterr().out


def test_bench_metrics_speech_compares_worker_counts():
    """Two process counts, interleaved: one row each, the speed-up relative to the first."""
    from surfbench.bench import speech_metric_throughput

    t = torch.arange(8000) / 8000
    g = torch.Generator().manual_seed(0)
    src = torch.stack([torch.stack([torch.sin(2 * torch.pi * f * t) * (0.3 + 0.1 * torch.rand(1, generator=g))
                                    for f in (220.0 + 40 * i, 330.0 + 40 * i)]) for i in range(4)])
    rows = speech_metric_throughput(src, 8000, ["si_sdr", "estoi"], workers=[1, 2], repeats=1)
    assert [r["workers"] for r in rows] == [1, 2] and all(r["items"] == 8 for r in rows)
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert rows[1]["speedup"] == pytest.approx(rows[0]["median_s"] / rows[1]["median_s"])


def test_an_explicit_batch_size_wins_over_the_profile_layers():
    """config/ci.yaml sets domains.audio.training.batch_size 4: --batch-size 1 must still be what runs."""
    from surfbench.config import RunId, resolve_run

    cfg = bench.bench_config(ROOT / "config" / "ci.yaml", "tiny", batch_size=1)
    for dataset in ("mnist", "libri2mix"):
        for method in ("supervised_flow", "surf_remixit", "mixit"):
            assert resolve_run(cfg, RunId(dataset, method, 0))["training"]["batch_size"] == 1, (dataset, method)
    default = bench.bench_config(ROOT / "config" / "ci.yaml", "tiny", batch_size=None)
    assert resolve_run(default, RunId("libri2mix", "supervised_flow", 0))["training"]["batch_size"] == 4

"""Resume (issue item 4).

* a training job killed with SIGKILL and rerun with the same command continues from its last
  checkpoint (losing at most ``checkpoint_every`` steps) and ends with exactly the weights of an
  uninterrupted run (CPU, torch.equal);
* an evaluation that dies midway (exception or SIGKILL) leaves no ``metrics.json``.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from test_determinism import run_config, tiny_cfg, tiny_mnist  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 40, 4


def _train_cmd(rc_path, data, out, ckpt, teacher=None):
    cmd = [sys.executable, "-m", "surfbench.train", "--run-config", str(rc_path), "--data", str(data), "--out", str(out),
           "--ckpt-dir", str(ckpt), "--device", "cpu", "--threads", "1", "--no-progress"]
    return cmd + (["--teacher", str(teacher)] if teacher else [])


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["modules"]


@pytest.fixture(scope="module")
def teacher(tiny_mnist, tmp_path_factory):
    from surfbench.train import train

    d = tmp_path_factory.mktemp("teacher")
    cfg = tiny_cfg()
    return train(run_config(cfg, "mixit"), tiny_mnist, d / "model.pt", d / "ckpt", device="cpu", progress=False)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_then_rerun_gives_the_uninterrupted_weights(tiny_mnist, teacher, tmp_path):
    cfg = tiny_cfg(steps=STEPS, checkpoint_every=EVERY, log_every=1)
    rc = run_config(cfg, "surf_self_remixing")           # frozen-teacher phase, then EMA phase (EMA state resumed too)
    rc_path = tmp_path / "config.yaml"
    rc_path.write_text(yaml.safe_dump(rc))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    # reference: uninterrupted
    ref = tmp_path / "ref" / "model.pt"
    subprocess.run(_train_cmd(rc_path, tiny_mnist, ref, tmp_path / "ref" / "ckpt", teacher), check=True, env=env,
                   capture_output=True)

    # killed once a checkpoint inside the EMA phase exists (step >= 60% of the run), then rerun
    out, ckpt = tmp_path / "killed" / "model.pt", tmp_path / "killed" / "ckpt"
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        p = subprocess.Popen(_train_cmd(rc_path, tiny_mnist, out, ckpt, teacher), stderr=f, stdout=f, env=env)
        kill_at = int(STEPS * 0.6)
        ck_step = None
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            if (ckpt / "last.pt").exists():
                try:
                    ck_step = torch.load(ckpt / "last.pt", weights_only=False)["step"]
                except Exception:
                    ck_step = None  # being replaced right now
                if ck_step is not None and ck_step >= kill_at:
                    # let it run past the checkpoint, so that the kill loses work (at most one interval)
                    while p.poll() is None and time.time() < deadline:
                        steps = [int(m) for m in re.findall(r"step (\d+)/", log.read_text())]
                        if steps and max(steps) >= ck_step + EVERY // 2:
                            break
                        time.sleep(0.01)
                    break
            time.sleep(0.02)
        assert p.poll() is None, "training finished before it could be killed; raise STEPS"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not leave model.pt"
    logged = [int(m) for m in re.findall(r"step (\d+)/", log.read_text())]
    done = max(logged)
    saved = torch.load(ckpt / "last.pt", weights_only=False)["step"]
    lost = done - saved
    print(f"killed after {done} steps; last checkpoint at step {saved}; steps lost on resume: {lost}")
    assert 0 <= lost <= EVERY

    res = subprocess.run(_train_cmd(rc_path, tiny_mnist, out, ckpt, teacher), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"resuming {ckpt / 'last.pt'} at step {saved}/{STEPS}" in res.stderr
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys() == {"student", "ema"}
    for mod in a:
        assert a[mod].keys() == b[mod].keys()
        for k in a[mod]:
            assert torch.equal(a[mod][k], b[mod][k]), f"{mod}.{k} differs after resume"
    ha = torch.load(ref, weights_only=False)["history"]
    hb = torch.load(out, weights_only=False)["history"]
    assert ha == hb  # the same losses, step for step
    # the learning curve (training.curve of the ci profile: every 12 steps) continues without duplicates and
    # equals the uninterrupted one (its clocks aside)
    import pandas as pd

    assert rc["training"]["curve"]["every"] > 0
    ca, cb = pd.read_csv(ref.parent / "curve.csv"), pd.read_csv(out.parent / "curve.csv")
    assert cb["step"].tolist() == sorted(set(range(12, STEPS + 1, 12)) | {STEPS})
    cols = ["step", "metric", "value", "n_items", "method", "seed"]
    pd.testing.assert_frame_equal(ca[cols], cb[cols])


@pytest.mark.slow
def test_stop_after_then_resume_in_process(tiny_mnist, teacher, tmp_path):
    """The same guarantee through ``train(stop_after=...)`` (fast, in-process)."""
    from surfbench.train import train

    cfg = tiny_cfg(steps=8, checkpoint_every=2)
    rc = run_config(cfg, "surf_self_remixing")
    ref = train(rc, tiny_mnist, tmp_path / "ref.pt", tmp_path / "ck_ref", teacher_path=teacher, device="cpu", progress=False)
    assert train(rc, tiny_mnist, tmp_path / "res.pt", tmp_path / "ck", teacher_path=teacher, device="cpu",
                 progress=False, stop_after=5) is None
    assert torch.load(tmp_path / "ck" / "last.pt", weights_only=False)["step"] == 4  # the step-5 work is lost
    train(rc, tiny_mnist, tmp_path / "res.pt", tmp_path / "ck", teacher_path=teacher, device="cpu", progress=False)
    a, b = _weights(ref), _weights(tmp_path / "res.pt")
    for mod in a:
        for k in a[mod]:
            assert torch.equal(a[mod][k], b[mod][k]), (mod, k)


def test_checkpoint_of_another_config_is_refused(tiny_mnist, teacher, tmp_path):
    from surfbench.train import TrainingError, train

    rc = run_config(tiny_cfg(steps=4, checkpoint_every=2), "surf_self_remixing")
    train(rc, tiny_mnist, tmp_path / "a.pt", tmp_path / "ck", teacher_path=teacher, device="cpu", progress=False,
          stop_after=2)
    rc2 = run_config(tiny_cfg(steps=4, checkpoint_every=2, lr=0.01), "surf_self_remixing")
    with pytest.raises(TrainingError, match="belongs to another configuration"):
        train(rc2, tiny_mnist, tmp_path / "b.pt", tmp_path / "ck", teacher_path=teacher, device="cpu", progress=False)


# ----------------------------------------------------------------------------- evaluation
def test_evaluation_failing_in_the_metric_step_leaves_no_metrics_json(tiny_mnist, teacher, tmp_path, monkeypatch):
    import surfbench.metrics.image as image_metrics
    from surfbench.evaluate import evaluate

    def boom(*a, **k):
        raise RuntimeError("simulated crash in the metric step")

    monkeypatch.setattr(image_metrics, "evaluate_images", boom)
    cfg = tiny_cfg()
    out = tmp_path / "res"
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(run_config(cfg, "mixit"), cfg["evaluation"], teacher, tiny_mnist, "table1", out, device="cpu",
                 cache_dir=tmp_path / "cache", progress=False)
    assert not (out / "metrics.json").exists() and not (out / "items.csv").exists()
    assert not [p for p in out.glob("*.tmp")] if out.exists() else True


@pytest.mark.slow
def test_evaluation_killed_midway_leaves_no_metrics_json_and_rerun_completes(tiny_mnist, teacher, tmp_path):
    cfg = tiny_cfg()
    rc_path = tmp_path / "config.yaml"
    rc_path.write_text(yaml.safe_dump(run_config(cfg, "mixit")))
    import json

    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "surfbench.evaluate", "--run-config", str(rc_path), "--eval-config-json",
           json.dumps(cfg["evaluation"]), "--model", str(teacher), "--data", str(tiny_mnist), "--protocol", "table1",
           "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill once it is working (the interpreter has imported torch and started); any moment must be safe
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not (out / "examples.npz").exists():
        time.sleep(0.01)
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    from surfbench.results import load_metrics

    if p.returncode == -signal.SIGKILL and (out / "metrics.json").exists():
        # killed after the atomic write of metrics.json (the last step) but before exiting: the file
        # must then be complete, with every item of items.csv behind it
        import pandas as pd

        blob = load_metrics(out / "metrics.json")
        assert len(pd.read_csv(out / "items.csv")) == blob["n_items"]
    elif p.returncode == -signal.SIGKILL:
        assert not (out / "metrics.json").exists()
    subprocess.run(cmd, check=True, capture_output=True)

    assert load_metrics(out / "metrics.json")["metrics"]["psnr"]["available"]

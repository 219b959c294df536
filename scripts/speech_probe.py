"""Train one method on a prepared speech set and print its SI-SDR improvement on the whole evaluation set as it learns.

The side-by-side probes of docs/benchmarks.md ("Speech at the tiny budget") that compare a model or a recipe
without running the pipeline: the run is the method's own (``training_step``, ``optimisation_step``: warm-up,
clipping, Adam, EMA), the batches are the trainer's (``make_batch``, ``training.crop_seconds``), the separation is
the evaluation's (``separate_all`` with ``separate_for_scoring``); only the phases' teacher hand-over is left out,
so methods with a teacher (the remixing ones) are not probed here. SI-SDRi is the mean over every separated
source of SI-SDR(estimate) − SI-SDR(mixture), best permutation per mixture.

    python scripts/speech_probe.py --config config/tiny.yaml --data data/tiny/libri2mix \\
        --method supervised_regression --steps 300 --every 50 \\
        --set '{"domains": {"audio": {"models": {"regression": {"arch": "mb_tflocoformer", "preset": "tiny"}}}}}'

``--euler`` adds the SI-SDRi of a flow sampled with that many Euler steps beside the profile's.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from surfbench.config import RunId, load_config, resolve_run
from surfbench.evaluate import separate_all
from surfbench.method import StepContext
from surfbench.metrics.audio import align_to_reference, si_sdr_improvement
from surfbench.registry import registry
from surfbench.seeding import derive_seed
from surfbench.train import adam, make_batch, optimisation_step, random_crop


def si_sdr_improvement_of(method, sources: torch.Tensor, cfg: dict, euler_steps: int | None = None) -> float:
    sampler = method.cfg["sampler"]
    saved = sampler["euler_steps"]
    if euler_steps is not None:
        sampler["euler_steps"] = euler_steps
    try:
        est = separate_all(method, sources.sum(1), cfg["seeds"][0], cfg["evaluation"]["batch_size"], "cpu",
                           progress=False, references=sources, evaluation=cfg["evaluation"])
    finally:
        sampler["euler_steps"] = saved
    aligned, _ = align_to_reference(est, sources)
    return float(si_sdr_improvement(aligned, sources, sources.sum(1)).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="profile YAML")
    ap.add_argument("--data", required=True, type=Path, help="prepared libri2mix folder (train.npz, eval.npz)")
    ap.add_argument("--method", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--set", default="{}", help="config overrides as JSON (merged over the profile)")
    ap.add_argument("--euler", type=int, default=None, help="also score a flow with this many Euler steps")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    cfg = load_config(args.config, overrides=json.loads(args.set))
    rc = resolve_run(cfg, RunId("libri2mix", args.method, cfg["seeds"][0]))
    train = torch.from_numpy(np.load(args.data / "train.npz")["sources"])
    evaluation = torch.from_numpy(np.load(args.data / "eval.npz")["sources"])
    torch.manual_seed(derive_seed(rc["seed"], "init"))  # the trainer's initial weights
    method = registry().get(args.method)(rc, tuple(train.shape[2:]), train.shape[1], "cpu")
    tc = method.training_cfg
    params = [p for p in method.student.parameters() if p.requires_grad]
    opt = adam(params, tc)
    gen = torch.Generator().manual_seed(derive_seed(rc["seed"], "train", 0))
    crop = tc.get("crop_seconds")
    t0 = time.process_time()
    for step in range(args.steps):
        x = train[torch.randint(0, train.shape[0], (tc["batch_size"],), generator=gen)]
        if crop:
            x = random_crop(x, int(crop * 16000), gen)
        batch = make_batch(method.training_data, x, "audio", method.cfg["mixit"], gen, "cpu")
        loss = optimisation_step(method, batch, StepContext(step, "probe", step, args.steps, gen,
                                                            torch.device("cpu")), opt, params)
        if (step + 1) % args.every == 0:
            line = f"step {step + 1} loss {loss:.2f} SI-SDRi {si_sdr_improvement_of(method, evaluation, cfg):.2f}"
            if args.euler is not None:
                line += f" (Euler {args.euler}: {si_sdr_improvement_of(method, evaluation, cfg, args.euler):.2f})"
            print(f"{line} CPU {time.process_time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

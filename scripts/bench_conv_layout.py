"""Side by side: one training step (forward, backward, Adam) of the tiny profile's U-Net flow model on CIFAR-10's
shape, batch 16, one torch thread, in three forms: eager NCHW (what the trainer runs), channels_last (model and
activations in NHWC), and torch.compile (inductor; its compile time reported apart, from the first step).
Rounds interleave the forms, the order rotated each round; per form, the median CPU time per step and its ratio to
eager.  docs/benchmarks.md, "Cheaper steps".

    python scripts/bench_conv_layout.py [--forms eager,channels_last,compile] [--rounds 5] [--steps 10]
"""
import argparse
import statistics
import time

import torch

from surfbench.nn.registry import build_model

SPEC = {"arch": "unet", "base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1, "fourier_scale": 1.0}
SHAPE, K, B = (3, 32, 32), 2, 16


def build(form: str):
    torch.manual_seed(0)
    model = build_model(SPEC, "flow", K, SHAPE)
    if form == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    return (torch.compile(model) if form == "compile" else model), opt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--forms", default="eager,channels_last,compile")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(B, K, *SHAPE, generator=g), torch.rand(B, generator=g)
    m = x.sum(1)

    def step(f, opt):
        loss = (f(x, t, m) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    forms = {name: build(name) for name in a.forms.split(",")}
    for name, (f, opt) in forms.items():  # first step: compilation happens here
        c0, w0 = time.process_time(), time.time()
        step(f, opt)
        print(f"{name}: first step {time.process_time() - c0:.2f} s CPU (this process), {time.time() - w0:.2f} s wall")
    per = {name: [] for name in forms}
    names = list(forms)
    for r in range(a.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            f, opt = forms[name]
            c0 = time.process_time()
            for _ in range(a.steps):
                step(f, opt)
            per[name].append((time.process_time() - c0) / a.steps)
    base = statistics.median(per[names[0]])
    for name, v in per.items():
        print(f"{name:14s} {1000 * statistics.median(v):7.1f} ms CPU per step, ratio {statistics.median(v) / base:.3f} "
              f"(rounds: {', '.join(f'{1000 * s:.0f}' for s in v)})")


if __name__ == "__main__":
    main()

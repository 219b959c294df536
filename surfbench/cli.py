"""The ``surfbench`` command.

    surfbench baselines [--json]           the registered methods and their metadata
    surfbench validate CONFIG               check a profile (schema + method names), fast
    surfbench prepare --dataset D ...       build a prepared dataset (used by Snakemake)
    surfbench report --config CONFIG        tables + leaderboard from the results store
    surfbench figure --dataset D --runs ... figure grid from runs' examples
    surfbench curves --dataset D --runs ... learning curves (curve.csv) of a dataset's runs
    surfbench site [--config CONFIG] [--out DIR]   static leaderboard site: report/<profile>/site/
    surfbench weights [--fetch] [--from DIR] [--json]   pretrained weights of the metrics
    surfbench separate --run RUN INPUT... --out DIR      separate your own mixtures
    surfbench bench step [...]              time per training step of the methods, side by side
    surfbench golden [--update] [--profile ci] [--results results]   golden regression of the ci profile
    surfbench sigma-data DATA_DIR [--relative-to-mixture]   training.sigma_data of a prepared set
    surfbench export RUN_DIR... -o bundle.tar.gz [--with-weights]   pack results to be checked elsewhere
    surfbench import BUNDLE [--results DIR] [--data DIR] [--profile P]   check a bundle into the results store
    surfbench compare A B [--profile P] [--tol X | --tol METRIC=X]... [--json OUT] [--only-changes]   two stores side by side
    surfbench score-fuss --list eval_example_list.txt --estimates DIR --out DIR   FUSS metrics (1S, MSi, under/over)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .atomic import write_yaml as write_yaml_atomic  # noqa: F401  (workflow/rules/train.smk imports this name)


def _load_cfg(args) -> dict:
    from .config import load_config, validate

    if getattr(args, "config_json", None):
        return validate(json.loads(args.config_json), source="--config-json")
    return load_config(getattr(args, "config", None) or "config/tiny.yaml")


def cmd_baselines(args) -> int:
    from .registry import registry

    reg = registry()
    rows = [dict(reg.get(n).metadata(), file=str(reg.file(n))) for n in reg.names()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            flags = ("supervised" if r["supervised"] else "unsupervised") + (", generative" if r["generative"] else "")
            print(f"{r['name']:<{w}}  {r['display_name']:<28} {flags:<26} {r['citation']}")
    return 0


def cmd_validate(args) -> int:
    cfg = _load_cfg(args)
    from . import plan

    print(f"{args.config}: valid (profile {cfg['profile']}: {len(plan.runs(cfg))} training runs, "
          f"{len(plan.eval_jobs(cfg))} evaluations)")
    return 0


def cmd_prepare(args) -> int:
    from .config import validate
    from .data.store import prepare

    cfg = validate(json.loads(args.config_json), source="--config-json", check_methods=False) if args.config_json \
        else _load_cfg(args)
    manifest = prepare(cfg, args.dataset, args.out)
    print(json.dumps({k: v for k, v in manifest.items() if k != "config"}, indent=2, default=str))
    return 0


#: a data shape to build each dataset's models with (parameter counts do not depend on the audio length)
PARAM_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "libri2mix": (32000,), "audioset": (32000,),
                "fuss": (32000,)}


def model_parameters(cfg: dict) -> list[dict]:
    """Trainable parameters of every model a profile builds: one row per (dataset, role, spec)."""
    from . import plan
    from .config import RunId, resolve_run
    from .nn import build_model

    rows, seen = [], set()
    for run in plan.runs(cfg):
        r = resolve_run(cfg, run)
        k = r["training"].get("output_slots") or 2
        for role_key, spec in sorted(r["models"].items()):
            n_out = r["mixit"]["n_slots"] if role_key == "mixit" else k
            key = (run.dataset, role_key, json.dumps(spec, sort_keys=True), n_out)
            if key in seen or role_key == "score":
                continue
            seen.add(key)
            role = "regression" if role_key == "mixit" else role_key
            model = build_model(spec, role, n_out, PARAM_SHAPES[run.dataset])
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            rows.append({"dataset": run.dataset, "role": role_key, "spec": spec, "output_slots": n_out, "parameters": n})
            del model
    return rows


def cmd_params(args) -> int:
    cfg = _load_cfg(args)
    rows = model_parameters(cfg)
    for r in rows:
        spec = ", ".join(f"{k}={v}" for k, v in r["spec"].items())
        print(f"{r['dataset']:10s} {r['role']:10s} {r['parameters'] / 1e6:9.2f}M  ({spec}; {r['output_slots']} output slots)")
    return 0


def cmd_report(args) -> int:
    from .report.build import build_report

    for p in build_report(_load_cfg(args)):
        print(p)
    return 0


def cmd_figure(args) -> int:
    from .report.figures import figure_grid, spectrogram_grid

    if args.dataset == "table3":  # spectrograms of the Table 3 runs' separations
        print(spectrogram_grid(args.runs, args.out))
        return 0
    print(figure_grid(args.runs, args.out))
    return 0


def cmd_curves(args) -> int:
    from .report.curves import plot_curves

    print(plot_curves(args.dataset, args.runs, args.out))
    return 0


def cmd_site(args) -> int:
    from .report.site import build_site

    print(build_site(_load_cfg(args), out=args.out, n_listen=args.listen))
    return 0


def cmd_weights(args) -> int:
    from . import weights

    return weights.main(args.rest)


def cmd_separate(args) -> int:
    from .separate import separate_files

    written = separate_files(args.run, args.inputs, args.out, device=args.device)
    for p in written:
        print(p)
    blob = json.loads(Path(written[-1]).read_text())
    for item in blob["items"]:  # audio: say which outputs hold (almost) nothing
        for q, active, lv in zip(item["outputs"], item.get("outputs_active", []), item.get("outputs_level_db_re_mixture", [])):
            if not active:
                print(f"{q}: inactive ({'silent' if lv is None else f'{lv:.1f} dB'} re. the mixture; {blob['inactive_rule']})")
    return 0


def cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args.rest)


def cmd_golden(args) -> int:
    from .golden import run

    return run(args.results, args.profile, args.golden_dir, do_update=args.update)


def cmd_sigma_data(args) -> int:
    import torch

    from .data.store import load_split
    from .flow import source_spread

    split = load_split(args.data, args.split)
    n = len(split) if args.max_examples is None else min(len(split), args.max_examples)
    x1 = torch.as_tensor(split.get_batch(list(range(n)))).float()
    value = source_spread(x1, relative_to_mixture=args.relative_to_mixture)
    print(json.dumps({"data": str(args.data), "split": args.split, "examples": n,
                      "relative_to_mixture": args.relative_to_mixture, "sigma_data": round(value, 6)}))
    return 0


def cmd_export(args) -> int:
    from .bundle import cmd_export as run

    return run(args)


def cmd_import(args) -> int:
    from .bundle import cmd_import as run

    return run(args)


def cmd_compare(args) -> int:
    from .compare import cmd_compare as run

    return run(args)


def cmd_score_fuss(args) -> int:
    from .score_fuss import cmd_score_fuss as run

    return run(args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="surfbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("baselines", help="list the registered methods")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_baselines)
    p = sub.add_parser("validate", help="validate a profile config")
    p.add_argument("config")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("prepare", help="build a prepared dataset")
    p.add_argument("--dataset", required=True, choices=["mnist", "cifar10", "libri2mix", "audioset", "fuss"])
    p.add_argument("--config", default=None)
    p.add_argument("--config-json", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_prepare)
    p = sub.add_parser("params", help="parameter count of every model a profile builds (e.g. Table 8's MB-TFLocoformer)")
    p.add_argument("--config", default=None)
    p.set_defaults(fn=cmd_params)
    p = sub.add_parser("report", help="write the tables from the results store")
    p.add_argument("--config", default=None)
    p.add_argument("--config-json", default=None)
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("figure", help="figure grid of separations")
    p.add_argument("--dataset", required=True)
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_figure)
    p = sub.add_parser("curves", help="learning curves of a dataset's runs (their curve.csv) in one plot")
    p.add_argument("--dataset", required=True)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (results/<profile>/<dataset>/<method>/seed<k>)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_curves)
    p = sub.add_parser("site", help="static leaderboard site (tables, runs, figures, listening page, leaderboard.json)")
    p.add_argument("--config", default=None)
    p.add_argument("--config-json", default=None)
    p.add_argument("--out", default=None, help="site folder (default: <paths.report>/<profile>/site)")
    p.add_argument("--listen", type=int, default=3, help="evaluation mixtures on the listening page (default 3)")
    p.set_defaults(fn=cmd_site)
    p = sub.add_parser("weights", help="pretrained weights of the metrics", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_weights)
    p = sub.add_parser("separate", help="separate your own mixtures with a trained run")
    p.add_argument("--run", required=True, help="results/<profile>/<dataset>/<method>/seed<k>")
    p.add_argument("inputs", nargs="+", help="PNG images (image runs) or WAV files (speech runs)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=cmd_separate)
    p = sub.add_parser("bench", help="benchmarks (surfbench bench step --help)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("golden", help="check the results against the golden files (tests/golden/<profile>)")
    p.add_argument("--update", action="store_true", help="rewrite the golden files from the results (on purpose)")
    p.add_argument("--profile", default="ci")
    p.add_argument("--results", default="results", help="results root (results/<profile>/... below it)")
    p.add_argument("--golden-dir", default="tests/golden", help="golden root (<golden-dir>/<profile>/... below it)")
    p.set_defaults(fn=cmd_golden)
    p = sub.add_parser("sigma-data", help="std of P⊥x1 on a prepared set (training.sigma_data of flow_preconditioning: edm)")
    p.add_argument("data", help="a prepared dataset folder (data/<profile>/<dataset>)")
    p.add_argument("--split", default="train", choices=["train", "eval"])
    p.add_argument("--relative-to-mixture", action="store_true",
                   help="divide by each mixture's RMS first (for sigma_z_scale: mixture_rms)")
    p.add_argument("--max-examples", type=int, default=None, help="use the first N examples only")
    p.set_defaults(fn=cmd_sigma_data)
    p = sub.add_parser("export", help="pack runs' results (metrics.json, items.csv, config.yaml) into a bundle")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="results/<profile>/<dataset>/<method>/seed<k> "
                   "(or any folder above runs: every run below it)")
    p.add_argument("-o", "--output", required=True, help="the bundle to write (.tar.gz)")
    p.add_argument("--with-weights", action="store_true", help="include model.pt (left out by default)")
    p.add_argument("--with-examples", action="store_true", help="include examples.npz (the figures' separations)")
    p.add_argument("--label", default=None, help="where the results come from, as the tables will say "
                   "(default: the bundle's name)")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("import", help="check a bundle and add its runs to the results store")
    p.add_argument("bundle")
    p.add_argument("--results", default=None, help="results root (default: paths.results of --config, else results)")
    p.add_argument("--data", default=None, help="prepared-data root holding <profile>/<dataset>/manifest.json "
                   "(default: paths.data of --config, else data)")
    p.add_argument("--config", default=None, help="a profile config: its paths, and its configuration of each run to "
                   "compare with (default: config/<profile>.yaml where it exists)")
    p.add_argument("--profile", default=None, help="the profile to import into (default: each run's own)")
    p.add_argument("--label", default=None, help="where the results come from (default: the bundle's label)")
    p.add_argument("--dry-run", action="store_true", help="check only; write nothing")
    p.set_defaults(fn=cmd_import)
    p = sub.add_parser("compare", help="two results stores side by side; exit 1 when a cell moved or is missing")
    p.add_argument("a", help="results root (or a working folder with results/)")
    p.add_argument("b")
    p.add_argument("--profile", default=None, help="default: the one profile both stores hold")
    p.add_argument("--tol", action="append", default=None, metavar="X|METRIC=X",
                   help="absolute tolerance, for every metric or one (repeatable); default: the golden tolerances")
    p.add_argument("--json", default=None, help="also write the comparison as JSON")
    p.add_argument("--only-changes", action="store_true", help="print only the cells that are not ok")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("score-fuss", help="FUSS separation metrics as Google's reference computes them")
    p.add_argument("--list", required=True, help="FUSS example list (tab-separated: mixture, then its sources)")
    p.add_argument("--estimates", required=True, help="folder with <example>/est0.wav ... est3.wav")
    p.add_argument("--out", required=True, help="folder for fuss_examples.csv and fuss_summary.json")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_score_fuss)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"surfbench {args.cmd}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

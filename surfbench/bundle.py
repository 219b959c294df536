"""Result bundles: ``surfbench export`` packs runs, ``surfbench import`` checks them into a results store.

A bundle is a gzipped tar::

    bundle.json                                               the manifest (format surfbench-bundle/1)
    runs/<profile>/<dataset>/<method>[@<variant>]/seed<k>/
        config.yaml                                           always
        metrics.json    items.csv                             Tables 1, 4 and 9, where the run has them
        table2/metrics.json    table2/items.csv               the Table 2 protocol, where the run has it
        table3/metrics.json    table3/items.csv               the Table 3 protocol, where the run has it
        table3/fuss_examples.csv    table3/fuss_summary.json    (its FUSS values per example, and their summary)
        examples.npz    table3/examples.npz                   with --with-examples, where the evaluation wrote them
        model.pt                                              with --with-weights only

``bundle.json``: ``{"format", "created", "label", "surfbench_version", "git_commit", "with_weights",
"runs": [{"path", "profile", "dataset", "method", "variant", "seed", "protocols"}],
"files": {member: {"sha256", "size"}}}``.  A run's place in the bundle comes from its ``metrics.json``
(not from the folder it was exported from).

Import reads the tar member by member and refuses it, before anything is written, when

* a member is not a plain file or folder (links, devices), has an absolute name, a ``..`` or an
  unexpected name, is larger than its limit, or the members add up to more than :data:`LIMITS` allow;
* a file differs from its sha256 in ``bundle.json`` (corrupt in transit);
* ``metrics.json`` has a ``schema_version`` this surfbench cannot read (older versions are upgraded as
  :func:`surfbench.results.load_metrics` does: 1 -> 2), or lacks a field;
* a protocol's ``metrics.json`` lies elsewhere than in its folder (Table 2: ``table2/``, Table 3: ``table3/``,
  the others: the run folder), or the run it describes is not the one it lies in;
* its ``dataset_hash`` is not the hash of this benchmark's evaluation set for that profile and dataset:
  the ``eval_hash`` (``eval_table2_hash`` for Table 2) of ``<data>/<profile>/<dataset>/manifest.json``,
  the manifest the pipeline writes when it prepares the data; for Table 3, whatever the run's dataset, the
  ``eval_fuss_hash`` and (``dataset_hashes.eval_librispeech_fuss``) the ``eval_librispeech_fuss_hash`` of the
  ``fuss`` dataset's manifest, on whose evaluation sets every Table 3 run is scored.  Where that data is not
  prepared here, the import is refused with the command that prepares it: a hash recorded elsewhere (a golden
  file) could be stale, and the local manifest is what the tables' own runs were checked against;
* a summary (mean, standard error, n, items missing, and the bootstrap interval where the evaluation
  settings are recorded) differs from what the evaluation's own :func:`surfbench.evaluate._item_summary`
  computes from ``items.csv`` (set-level metrics, FID and IS, have no per-item values and are taken as they
  are: said in ``imported.json``).  Table 3: the LibriSpeech + FUSS summaries from its ``librispeech_fuss``
  rows; the FUSS metrics (1S, 2Si, 3Si, 4Si, MSi, under/equal/over) and ``fuss_summary.json`` from
  ``fuss_examples.csv`` read back (:func:`surfbench.score_fuss.read_examples`) and summarised by the
  evaluation's :func:`surfbench.evaluate.fuss_metrics` and ``FussAccumulator.summary``: that file's dB values
  have 6 decimals, so the dB figures agree within 1e-6 dB, not to the bit; its rows must be ``items.csv``'s
  ``fuss`` rows;
* ``config.yaml`` does not hash to the recorded ``config_hash``, or ``model.pt`` (when shipped) to ``model_hash``;
* the method is not registered here (no ``baselines/<name>.py``) and its ``method_info`` lacks
  ``display_name``, ``supervised``, ``generative`` or ``citation``;
* the store already holds that run (profile, dataset, method, variant, seed) with other contents,
  or the same trained model (``model_hash``) under another seed: a result is never overwritten, and
  one model never counts as two seeds.  The identical result again is skipped.

Every imported file is stored byte for byte as exported; beside each
``metrics.json`` an ``imported.json`` says where it came from and what was checked.  The results store
reads it (:func:`surfbench.results.imported_info`), so the tables footnote imported values.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from .atomic import atomic_path, copy_file, write_json
from .bundle_checks import (PROTOCOL_DIRS, RESULT_FILES, BundleError, check_config, check_folder, check_method,
                            check_results, check_schema)
from .config import method_dir
from .weights import file_sha256

BUNDLE_FORMAT = "surfbench-bundle/1"
IMPORT_FORMAT = "surfbench-import/1"
MANIFEST = "bundle.json"
IMPORTED = "imported.json"  # beside every imported metrics.json
EXAMPLES, WEIGHTS = "examples.npz", "model.pt"
HAS_EXAMPLES = ("", "table3")

#: what an import reads at most (bytes / members); a bundle over a limit is refused before it is unpacked
LIMITS = {
    "file": 256 * 2**20,        # any file but model.pt
    "weights": 4 * 2**30,       # one model.pt
    "total": 16 * 2**30,        # all members together
    "members": 20000,
}

_SEG = r"[A-Za-z0-9_][A-Za-z0-9_.=@+,-]*"
_FILES = ["config.yaml", WEIGHTS] + [f"{sub + '/' if sub else ''}{n}" for sub, names in RESULT_FILES.items()
                                     for n in names + ((EXAMPLES,) if sub in HAS_EXAMPLES else ())]
_MEMBER = re.compile(rf"^runs/(?P<run>{_SEG}/{_SEG}/{_SEG}/seed[0-9]+)/(?P<file>{'|'.join(map(re.escape, _FILES))})$")
_DIR = re.compile(rf"^runs(/{_SEG}){{0,3}}(/seed[0-9]+(/(?:{'|'.join(PROTOCOL_DIRS.values())}))?)?$")


def run_path(blob: dict, profile: str | None = None) -> str:
    """``<profile>/<dataset>/<method>[@<variant>]/seed<k>`` of a metrics.json blob."""
    return (f"{profile or blob['profile']}/{blob['dataset']}/"
            f"{method_dir(blob['method'], blob.get('variant') or '')}/seed{blob['seed']}")


# ----------------------------------------------------------------------------- export
def find_runs(paths) -> list[Path]:
    """Run folders (``.../seed<k>``) at or below ``paths``: each folder holding a metrics.json, or one in a protocol's
    own folder (``table2/``, ``table3/``)."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise BundleError(f"{p}: no such run folder")
        cands = [p / "metrics.json"] if (p / "metrics.json").is_file() else []
        cands += sorted(p.glob("**/metrics.json"))
        for m in cands:
            d = m.parent.parent if m.parent.name in PROTOCOL_DIRS.values() else m.parent
            found.setdefault(d.resolve(), None)
    if not found:
        raise BundleError(f"no metrics.json at or below {', '.join(map(str, paths))}; export evaluated runs "
                          f"(results/<profile>/<dataset>/<method>/seed<k>)")
    return list(found)


def export_bundle(run_dirs, out: str | Path, *, with_weights: bool = False, with_examples: bool = False,
                  label: str | None = None) -> dict:
    """Write ``out`` (a .tar.gz) with the runs at or below ``run_dirs``; returns the manifest.

    Each run is checked as an import would check it (schema, config hash, summaries against items.csv),
    except the evaluation set, which the importing side checks against its own data."""
    from . import __version__
    from .results import git_commit

    out = Path(out)
    members: list[tuple[str, Path]] = []
    runs, seen = [], {}
    for d in find_runs(run_dirs):
        blobs = {}
        for sub in RESULT_FILES:
            mpath = d / sub / "metrics.json" if sub else d / "metrics.json"
            if not mpath.is_file():
                continue
            try:
                raw = json.loads(mpath.read_text())
            except json.JSONDecodeError as e:
                raise BundleError(f"{mpath}: not valid JSON ({e})") from e
            blob = check_schema(raw, str(mpath))
            check_folder(blob, sub, str(mpath), str(d))
            check_results(blob, mpath.parent, str(mpath))
            blobs[sub] = blob
        first = next(iter(blobs.values()))
        rp = run_path(first)
        for b in blobs.values():
            if run_path(b) != rp:
                raise BundleError(f"{d}: its metrics files disagree on the run ({run_path(b)} vs {rp})")
        if rp in seen:
            raise BundleError(f"{d} and {seen[rp]} are the same run ({rp}); export one of them")
        seen[rp] = d
        if not (d / "config.yaml").is_file():
            raise BundleError(f"{d}: no config.yaml; a result is exported with the configuration that made it")
        check_config(first, (d / "config.yaml").read_text(), str(d / "config.yaml"))
        files = ["config.yaml"]
        for sub in blobs:
            extra = (EXAMPLES,) if with_examples and sub in HAS_EXAMPLES and (d / sub / EXAMPLES).is_file() else ()
            files += [f"{sub + '/' if sub else ''}{n}" for n in RESULT_FILES[sub] + extra]
        if with_weights:
            if not (d / WEIGHTS).is_file():
                raise BundleError(f"{d}: --with-weights, but it has no {WEIGHTS}")
            if file_sha256(d / WEIGHTS) != first["model_hash"]:
                raise BundleError(f"{d / WEIGHTS} does not hash to the model_hash its metrics.json records")
            files.append(WEIGHTS)
        members += [(f"runs/{rp}/{f}", d / f) for f in files]
        runs.append({"path": rp, "profile": first["profile"], "dataset": first["dataset"], "method": first["method"],
                     "variant": first.get("variant") or "", "seed": first["seed"],
                     "protocols": sorted(b["protocol"] for b in blobs.values())})
    manifest = {"format": BUNDLE_FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "label": label or out.name.split(".")[0], "surfbench_version": __version__,
                "git_commit": git_commit(), "with_weights": with_weights, "runs": runs,
                "files": {name: {"sha256": file_sha256(src), "size": src.stat().st_size} for name, src in members}}
    blob = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with atomic_path(out) as tmp:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            def add(name: str, data_or_path) -> None:
                info = tarfile.TarInfo(name)
                info.mode, info.mtime, info.uname, info.gname = 0o644, int(_dt.datetime.now().timestamp()), "", ""
                if isinstance(data_or_path, bytes):
                    info.size = len(data_or_path)
                    tar.addfile(info, io.BytesIO(data_or_path))
                else:
                    info.size = data_or_path.stat().st_size
                    with open(data_or_path, "rb") as f:
                        tar.addfile(info, f)
            add(MANIFEST, blob)
            for name, src in members:
                add(name, src)
    return manifest


# ----------------------------------------------------------------------------- reading a bundle safely
def _member_problem(m: tarfile.TarInfo) -> str | None:
    name = m.name
    p = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\\" in name or "\x00" in name:
        return f"member {name!r} has an absolute or non-portable path"
    if ".." in p.parts:
        return f"member {name!r} has a '..' component (path traversal)"
    if m.issym() or m.islnk():
        return f"member {name!r} is a {'symbolic' if m.issym() else 'hard'} link (to {m.linkname!r}); bundles hold plain files only"
    if m.isdir():
        return None if _DIR.match(name.rstrip("/")) else f"unexpected folder {name!r}"
    if not m.isfile() or m.issparse():
        return f"member {name!r} is not a plain file (a device, FIFO or sparse file)"
    if name != MANIFEST and not _MEMBER.match(name):
        return (f"unexpected member {name!r}: a bundle holds {MANIFEST} and runs/<profile>/<dataset>/<method>/seed<k>/"
                f"{{{', '.join(_FILES)}}} only")
    return None


def unpack(bundle: str | Path, dest: Path, limits: dict | None = None) -> dict:
    """Check every member of ``bundle`` and copy the plain files under ``dest``; returns the manifest.

    Nothing is extracted by ``tarfile`` itself: each member's name, type and size is checked first, and its
    bytes are copied (at most its declared size) to ``dest / name``."""
    lim = {**LIMITS, **(limits or {})}
    bundle = Path(bundle)
    if not bundle.is_file():
        raise BundleError(f"{bundle}: no such bundle")
    names, total = set(), 0
    try:
        tar = tarfile.open(bundle, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{bundle}: not a (gzipped) tar file ({e})") from e
    with tar:
        try:
            for i, m in enumerate(tar):
                if i >= lim["members"]:
                    raise BundleError(f"{bundle}: more than {lim['members']} members; refused")
                why = _member_problem(m)
                if why:
                    raise BundleError(f"{bundle}: {why}; refused, nothing imported")
                if m.isdir():
                    continue
                if m.name in names:
                    raise BundleError(f"{bundle}: member {m.name!r} appears twice; refused")
                names.add(m.name)
                cap = lim["weights"] if m.name.endswith("/" + WEIGHTS) else lim["file"]
                if m.size > cap:
                    raise BundleError(f"{bundle}: member {m.name!r} is {m.size} bytes, over the limit of {cap}; refused")
                total += m.size
                if total > lim["total"]:
                    raise BundleError(f"{bundle}: the members add up to more than {lim['total']} bytes; refused")
                target = dest / m.name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                with open(target, "wb") as f:
                    left = m.size
                    while left > 0:
                        chunk = src.read(min(left, 1 << 20))
                        if not chunk:
                            raise BundleError(f"{bundle}: member {m.name!r} is truncated")
                        f.write(chunk)
                        left -= len(chunk)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise BundleError(f"{bundle}: a corrupt or truncated tar ({type(e).__name__}: {e})") from e
    if MANIFEST not in names:
        raise BundleError(f"{bundle}: no {MANIFEST}; not a surfbench bundle (make one with `surfbench export`)")
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{bundle}: {MANIFEST} is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{bundle}: {MANIFEST} has format {got!r}, this surfbench reads {BUNDLE_FORMAT}")
    listed = manifest.get("files") or {}
    present = names - {MANIFEST}
    for name in sorted(present - set(listed)):
        raise BundleError(f"{bundle}: member {name!r} is not listed in {MANIFEST}")
    for name in sorted(set(listed) - present):
        raise BundleError(f"{bundle}: {MANIFEST} lists {name!r}, which the bundle lacks")
    for name in sorted(present):
        if file_sha256(dest / name) != listed[name].get("sha256"):
            raise BundleError(f"{bundle}: {name} does not match its sha256 in {MANIFEST} (corrupt or edited after export)")
    return manifest


# ----------------------------------------------------------------------------- import
@dataclass
class StagedRun:
    path: str                        # <profile>/<dataset>/<method_dir>/seed<k> in the bundle
    src: Path                        # its staged folder
    blobs: dict = field(default_factory=dict)  # "" | "table2" -> upgraded metrics blob
    target: str = ""                 # the same, under the importing profile
    checks: list = field(default_factory=list)
    not_checked: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # e.g. how its config differs from this profile's run of it
    status: str = "new"              # "new" | "identical"


def _dataset_check(blob: dict, profile: str, data_root: Path, where: str) -> str:
    """The evaluation sets a result records are this benchmark's: each hash equal to its key in the local manifest
    of the data it was evaluated on (Table 3: the ``fuss`` dataset's, :data:`surfbench.plan.TABLE3_EVAL_DATASET`)."""
    from .plan import TABLE3_EVAL_DATASET

    protocol = blob["protocol"]
    dataset = TABLE3_EVAL_DATASET if protocol == "table3" else blob["dataset"]
    manifest = data_root / profile / dataset / "manifest.json"
    # (the field of metrics.json, its value, the manifest's key, the evaluation set in words)
    if protocol == "table3":
        hashes = blob.get("dataset_hashes") or {}
        wanted = [("dataset_hash", blob["dataset_hash"], "eval_fuss_hash", f"{dataset} FUSS evaluation set"),
                  ("dataset_hashes.eval_fuss", hashes.get("eval_fuss"), "eval_fuss_hash", f"{dataset} FUSS evaluation set"),
                  ("dataset_hashes.eval_librispeech_fuss", hashes.get("eval_librispeech_fuss"),
                   "eval_librispeech_fuss_hash", f"{dataset} LibriSpeech + FUSS evaluation set")]
    elif protocol == "table2":
        wanted = [("dataset_hash", blob["dataset_hash"], "eval_table2_hash", f"{dataset} Table 2 evaluation set")]
    else:
        wanted = [("dataset_hash", blob["dataset_hash"], "eval_hash", f"{dataset} evaluation set")]
    if not manifest.is_file():
        why = (f" (Table 3 results of every dataset are evaluated on the {dataset} dataset's evaluation sets)"
               if protocol == "table3" else "")
        raise BundleError(
            f"{where}: cannot check its evaluation set: the {dataset} data of profile {profile} is not prepared "
            f"here ({manifest} is missing){why}. Run `snakemake data --configfile config/{profile}.yaml` in this working "
            f"directory (or pass --data DIR), then import again")
    try:
        man = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{manifest}: not valid JSON ({e}); rerun `snakemake data`") from e
    problems = []
    for field_name, got, key, what in wanted:
        want = man.get(key)
        if not want:
            raise BundleError(f"{manifest} records no {key}; rerun `snakemake data --configfile config/{profile}.yaml`")
        if got != want:
            problems.append(f"evaluated on another evaluation set: its {field_name} is {got}, but this benchmark's {what} "
                            f"of profile {profile} has {key} {want} ({manifest})")
    if problems:
        raise BundleError(f"{where}: " + "; ".join(problems) + "; a result on another evaluation set is not comparable, "
                          "refused")
    return ", ".join(f"{f} = {k}" for f, _, k, _ in wanted) + f" of {manifest}"


def _flat(d, prefix="") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_difference(run_cfg: dict, profile_cfg: dict | None) -> str | None:
    """How ``run_cfg`` differs from ``profile_cfg``'s own resolved config of the same run (``None``: no profile
    config to compare with).  Not a refusal: a result may come from other settings, and this says which."""
    from .config import NON_SEMANTIC_TRAINING_KEYS, RunId, resolve_run

    if profile_cfg is None:
        return None
    try:
        ours = resolve_run(profile_cfg, RunId(run_cfg["dataset"], run_cfg["method"], int(run_cfg["seed"]),
                                              run_cfg.get("variant") or ""))
    except Exception as e:  # an unregistered method, a dataset the profile disables ...
        return f"not compared with profile {profile_cfg['profile']}'s configuration ({type(e).__name__}: {e})"
    ignore = {"profile"} | {f"training.{k}" for k in NON_SEMANTIC_TRAINING_KEYS}
    a, b = _flat(ours), _flat(run_cfg)
    diff = [f"{k} {a.get(k)!r} here, {b.get(k)!r} in the bundle" for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k) != b.get(k)]
    if not diff:
        return f"config.yaml = profile {profile_cfg['profile']}'s configuration of this run (profile name aside)"
    return (f"config.yaml differs from profile {profile_cfg['profile']}'s configuration of this run in {len(diff)} "
            f"key(s): " + "; ".join(diff[:8]) + ("; ..." if len(diff) > 8 else ""))


def _store_index(store: Path) -> dict[str, list[tuple[Path, dict]]]:
    """model_hash -> [(metrics.json, blob)] of every run in the store (every profile)."""
    from .results import load_metrics

    out: dict[str, list] = {}
    if store.is_dir():
        for p in sorted(store.glob("*/**/metrics.json")):
            try:
                b = load_metrics(p)
            except ValueError:
                continue
            out.setdefault(b.get("model_hash"), []).append((p, b))
    return out


def _provenance_diff(old: dict, new: dict) -> str:
    diffs = [f"{k} {old.get(k)} here, {new.get(k)} in the bundle"
             for k in ("model_hash", "config_hash", "dataset_hash", "git_commit") if old.get(k) != new.get(k)]
    if not diffs:
        same = old.get("metrics") == new.get("metrics")
        diffs = ["the same model, configuration and data" + (
            " and the same metric values, but another evaluation record (runtime, environment)" if same
            else ", but other metric values (evaluated again)")]
    return "; ".join(diffs)


def stage_runs(manifest: dict, staged: Path, results_root: Path, data_root: Path, profile: str | None,
               profile_configs=None) -> list[StagedRun]:
    """Check every run of an unpacked bundle; returns them, or raises one :class:`BundleError` listing every refusal."""
    runs_dir = staged / "runs"
    run_paths = sorted({m.group("run") for m in map(_MEMBER.match, manifest.get("files", {})) if m})
    if not run_paths:
        raise BundleError("the bundle holds no runs")
    index = _store_index(results_root)
    refusals, out, targets = [], [], {}
    for rp in run_paths:
        src = runs_dir / rp
        where = f"{rp}"
        try:
            run = StagedRun(rp, src)
            for sub in RESULT_FILES:
                m = src / sub / "metrics.json" if sub else src / "metrics.json"
                if not m.is_file():
                    continue
                w = f"{where}/{sub + '/' if sub else ''}metrics.json"
                try:
                    raw = json.loads(m.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise BundleError(f"{w}: not valid JSON ({e})") from e
                blob = check_schema(raw, w)
                if run_path(blob) != rp:
                    raise BundleError(f"{w}: describes {run_path(blob)} ({blob['protocol']}) but lies at {rp}")
                check_folder(blob, sub, w, rp)
                checks, unchecked = check_results(blob, m.parent, w)
                run.checks.append(_dataset_check(blob, profile or blob["profile"], data_root, w))
                run.checks += checks
                run.not_checked += unchecked
                run.blobs[sub] = blob
            if not run.blobs:
                raise BundleError(f"{where}: no metrics.json")
            first = next(iter(run.blobs.values()))
            if not (src / "config.yaml").is_file():
                raise BundleError(f"{where}: no config.yaml")
            check_config(first, (src / "config.yaml").read_text(), f"{where}/config.yaml")
            run.checks.append("config.yaml hashes to config_hash")
            if profile_configs is not None:
                diff = config_difference(yaml.safe_load((src / "config.yaml").read_text()),
                                         profile_configs(profile or first["profile"]))
                if diff:
                    (run.checks if diff.startswith("config.yaml = ") else run.notes).append(diff)
            run.checks.append(check_method(first, where))
            if (src / WEIGHTS).is_file():
                if file_sha256(src / WEIGHTS) != first["model_hash"]:
                    raise BundleError(f"{where}/{WEIGHTS} does not hash to the recorded model_hash {first['model_hash']}")
                run.checks.append("model.pt hashes to model_hash")
            run.target = run_path(first, profile or first["profile"])
            if run.target in targets:
                raise BundleError(f"{where}: the bundle holds this run twice ({targets[run.target]}, {rp})")
            targets[run.target] = rp
            run.status = _collision(run, results_root, index)
            out.append(run)
        except BundleError as e:
            refusals.append(str(e))
    if refusals:
        raise BundleError("import refused, nothing imported:\n  " + "\n  ".join(refusals))
    return out


def _collision(run: StagedRun, results_root: Path, index: dict) -> str:
    dest = results_root / run.target
    identical = []
    for sub, blob in run.blobs.items():
        here = dest / sub / "metrics.json" if sub else dest / "metrics.json"
        there = run.src / sub / "metrics.json" if sub else run.src / "metrics.json"
        if here.is_file():
            from .results import load_metrics

            same = all((here.parent / n).is_file() and (here.parent / n).read_bytes() == (there.parent / n).read_bytes()
                       for n in RESULT_FILES[sub])
            if not same:
                try:
                    old = load_metrics(here)
                except ValueError:
                    old = {}
                raise BundleError(
                    f"{run.path}: {here} already holds this run ({blob['protocol']}) with different provenance "
                    f"({_provenance_diff(old, blob)}); an existing result is never overwritten: refused. "
                    f"Another seed is added as a new run; to replace this one, remove {dest} first")
            identical.append(sub)
    for sub, blob in run.blobs.items():
        for p, b in index.get(blob["model_hash"], []):
            same_run = p.resolve() == ((dest / sub / "metrics.json") if sub else (dest / "metrics.json")).resolve()
            if not same_run and b.get("protocol") == blob["protocol"]:
                raise BundleError(
                    f"{run.path}: the same trained model (model_hash {blob['model_hash']}) is already in the store as "
                    f"{p.parent if not sub else p.parent.parent} (seed {b.get('seed')}); one model counts once, refused")
    if identical and len(identical) == len(run.blobs):
        return "identical"
    if identical:
        raise BundleError(f"{run.path}: {dest} holds part of this run already; remove it or export the whole run")
    if dest.exists() and any(dest.iterdir()):
        stray = sorted(p.name for p in dest.iterdir())
        raise BundleError(f"{run.path}: {dest} exists without this run's metrics.json ({', '.join(stray)}): perhaps "
                          f"a run still in progress here; refused, never overwritten")
    return "new"


def import_bundle(bundle: str | Path, results_root: str | Path = "results", data_root: str | Path = "data",
                  profile: str | None = None, label: str | None = None, dry_run: bool = False,
                  limits: dict | None = None, profile_configs=None) -> list[StagedRun]:
    """Check ``bundle`` and copy its runs into ``results_root`` (all of them, or none); returns the runs.

    ``profile_configs``: ``profile -> validated config or None``, to say how each run's config.yaml differs
    from that profile's own configuration of it (a note, not a refusal)."""
    bundle, results_root, data_root = Path(bundle), Path(results_root), Path(data_root)
    with tempfile.TemporaryDirectory(prefix="surfbench-import-") as tmp:
        staged = Path(tmp)
        manifest = unpack(bundle, staged, limits)
        runs = stage_runs(manifest, staged, results_root, data_root, profile, profile_configs)
        if dry_run:
            return runs
        bsha = file_sha256(bundle)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for run in runs:
            if run.status == "identical":
                continue
            dest = results_root / run.target
            sidecar = {"format": IMPORT_FORMAT, "label": label or manifest.get("label") or bundle.name,
                       "bundle": bundle.name, "bundle_sha256": bsha, "imported_at": now,
                       "exported_at": manifest.get("created"), "exported_by": {
                           "surfbench_version": manifest.get("surfbench_version"), "git_commit": manifest.get("git_commit")},
                       "path_in_bundle": run.path, "checks": run.checks, "not_checked": run.not_checked,
                       "notes": run.notes}
            # metrics.json last (as the evaluation writes it): a store never shows a result without its files
            for name in ("config.yaml", WEIGHTS):
                if (run.src / name).is_file():
                    copy_file(run.src / name, dest / name)
            for sub in run.blobs:
                d_src, d_dst = (run.src / sub, dest / sub) if sub else (run.src, dest)
                for name in RESULT_FILES[sub][1:] + ((EXAMPLES,) if sub in HAS_EXAMPLES else ()):
                    if (d_src / name).is_file():
                        copy_file(d_src / name, d_dst / name)
                # tied to this metrics.json: a later local run of the same folder is not taken for an import
                write_json(d_dst / IMPORTED, {**sidecar, "metrics_sha256": file_sha256(d_src / "metrics.json")},
                           indent=2, sort_keys=True)
            for sub in sorted(run.blobs, key=lambda s: s == ""):  # table2/3 first, the main metrics.json last
                d_src, d_dst = (run.src / sub, dest / sub) if sub else (run.src, dest)
                copy_file(d_src / "metrics.json", d_dst / "metrics.json")
        return runs


# ----------------------------------------------------------------------------- the commands
def cmd_export(args) -> int:
    m = export_bundle(args.run_dirs, args.output, with_weights=args.with_weights, with_examples=args.with_examples,
                      label=args.label)
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output} ({len(m['runs'])} runs, {len(m['files'])} files, {size} bytes"
          f"{', with weights' if args.with_weights else ', no weights'})")
    for r in m["runs"]:
        print(f"  {r['path']}  ({', '.join(r['protocols'])})")
    return 0


def cmd_import(args) -> int:
    from .config import load_config

    results, data, cfg = args.results, args.data, None
    if args.config:
        cfg = load_config(args.config)
        results = results or cfg["paths"]["results"]
        data = data or cfg["paths"]["data"]
    cache: dict = {}

    def profile_config(name: str):
        """--config when it is that profile, else config/<name>.yaml where it exists (None otherwise)."""
        if name not in cache:
            if cfg is not None and cfg["profile"] == name:
                cache[name] = cfg
            else:
                path = Path("config") / f"{name}.yaml"
                try:
                    cache[name] = load_config(path) if path.is_file() else None
                except (ValueError, KeyError, FileNotFoundError):
                    cache[name] = None
        return cache[name]

    runs = import_bundle(args.bundle, results or "results", data or "data", profile=args.profile, label=args.label,
                         dry_run=args.dry_run, profile_configs=profile_config)
    verb = "would import" if args.dry_run else "imported"
    for r in runs:
        if r.status == "identical":
            print(f"already present, identical: {Path(results or 'results') / r.target}")
        else:
            print(f"{verb} {r.path} -> {Path(results or 'results') / r.target}")
            for c in r.checks:
                print(f"    checked: {c}")
            for c in r.not_checked:
                print(f"    not checked: {c}")
            for c in r.notes:
                print(f"    note: {c}")
    n = sum(r.status == "new" for r in runs)
    print(f"{verb} {n} run(s), {len(runs) - n} already present")
    return 0

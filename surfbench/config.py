"""Profiles as config: load, validate against the JSON Schema, fill defaults, resolve per run.

``load_config`` is called by the Snakefile and by every command; a typo, a wrong
type or an unknown method fails here, before any job runs, naming the key and
suggesting the nearest valid name.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

#: Keys of a resolved run config that do not change results (excluded from the hash).
#: ``curve``: the learning curves are measured beside training and never change it (tests/test_curves.py)
NON_SEMANTIC_TRAINING_KEYS = ("log_every", "checkpoint_every", "curve")

DOMAIN_OF_DATASET = {"mnist": "image", "cifar10": "image", "libri2mix": "audio",
                     # Table 3: AudioSet (mixtures only) trains the unsupervised rows, FUSS train the supervised one
                     "audioset": "audio", "fuss": "audio"}


class ConfigError(ValueError):
    """A configuration problem; the message names the file, key or value."""


def schema() -> dict:
    with resources.files("surfbench").joinpath("schemas/config.schema.yaml").open() as f:
        return yaml.safe_load(f)


def _path_str(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _subschema(root: dict, path: list) -> dict:
    """The schema node describing the object at ``path`` (follows properties, $ref, additionalProperties)."""
    node = root

    def deref(n):
        while isinstance(n, dict) and "$ref" in n:
            ref = n["$ref"].split("/")[1:]
            n = root
            for part in ref:
                n = n[part]
        return n

    node = deref(node)
    for p in path:
        if isinstance(p, int):
            node = deref(node.get("items", {}))
            continue
        props = node.get("properties", {})
        if p in props:
            node = deref(props[p])
        elif isinstance(node.get("additionalProperties"), dict):
            node = deref(node["additionalProperties"])
        else:
            return {}
    return node


def _explain(err: jsonschema.ValidationError, root: dict, source: str) -> str:
    where = _path_str(err.absolute_path)
    if err.validator == "additionalProperties":
        node = _subschema(root, list(err.absolute_path))
        allowed = sorted(node.get("properties", {}))
        extras = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        msgs = []
        for key in extras:
            near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
            hint = f" Did you mean {near[0]!r}?" if near else f" Valid keys: {', '.join(allowed)}."
            full = f"{where}.{key}" if err.absolute_path else key
            msgs.append(f"{source}: unknown key {full!r}.{hint}")
        return "\n".join(msgs)
    if err.validator == "enum":
        near = difflib.get_close_matches(str(err.instance), [str(v) for v in err.validator_value], n=1, cutoff=0.4)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        return f"{source}: {where} = {err.instance!r} is not one of {err.validator_value}.{hint}"
    return f"{source}: {where}: {err.message}"


def _fill_defaults(node: dict, obj: Any, root: dict) -> Any:
    """Recursively insert schema defaults into ``obj`` (objects only).

    Override blocks (``x-no-defaults: true``) are left as written, so that an
    override changes only the keys it names.
    """
    if node.get("x-no-defaults"):
        return obj
    while "$ref" in node:
        ref = node["$ref"].split("/")[1:]
        n = root
        for part in ref:
            n = n[part]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**n, **extra}
    if not isinstance(obj, dict):
        return obj
    for key, sub in node.get("properties", {}).items():
        sub_r = sub
        while "$ref" in sub_r:
            ref = sub_r["$ref"].split("/")[1:]
            n = root
            for part in ref:
                n = n[part]
            sub_r = {**n, **{k: v for k, v in sub_r.items() if k != "$ref"}}
        if sub.get("x-no-defaults"):
            continue
        if key not in obj and "default" in sub_r:
            obj[key] = copy.deepcopy(sub_r["default"])
        if key in obj:
            obj[key] = _fill_defaults(sub_r, obj[key], root)
    add = node.get("additionalProperties")
    if isinstance(add, dict) and not add.get("x-no-defaults"):
        for key in list(obj):
            if key not in node.get("properties", {}):
                obj[key] = _fill_defaults(add, obj[key], root)
    return obj


def validate(cfg: dict, source: str = "config", check_methods: bool = True) -> dict:
    """Validate and fill defaults; returns a new dict.  Raises :class:`ConfigError`."""
    root = schema()
    cfg = copy.deepcopy(cfg) if cfg else {}
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(_explain(e, root, source) for e in errors))
    cfg = _fill_defaults(root, cfg, root)
    if check_methods:
        _check_method_names(cfg, source)
    return cfg


def _check_method_names(cfg: dict, source: str) -> None:
    from .registry import method_names

    known = method_names()
    named: list[tuple[str, str]] = []
    for m in cfg.get("methods") or []:
        named.append(("methods", m))
    for m in cfg.get("exclude_methods", []):
        named.append(("exclude_methods", m))
    for m in cfg.get("method_overrides", {}):
        named.append(("method_overrides", m))
    for d, dom in cfg.get("domains", {}).items():
        for m in dom.get("method_overrides", {}):
            named.append((f"domains.{d}.method_overrides", m))
    for ds, over in cfg.get("dataset_overrides", {}).items():
        for m in over.get("method_overrides", {}):
            named.append((f"dataset_overrides.{ds}.method_overrides", m))
    for m in cfg.get("ablations", {}).get("methods", []):
        named.append(("ablations.methods", m))
    bad = []
    for key, m in named:
        if m not in known:
            near = difflib.get_close_matches(m, known, n=1, cutoff=0.4)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            bad.append(f"{source}: {key}: unknown method {m!r} (no baselines/{m}.py).{hint} Known: {', '.join(known)}.")
    if bad:
        raise ConfigError("\n".join(bad))


def read_profile(path: str | Path, _seen: tuple = ()) -> dict:
    """A profile YAML as written, with its ``extends`` chain expanded (see :func:`expand_extends`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (profiles live in config/: tiny.yaml, ci.yaml, "
                          f"paper.yaml, paper-smoke.yaml)")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(cfg).__name__}")
    return expand_extends(cfg, path, _seen)


def expand_extends(cfg: dict, path: str | Path, _seen: tuple = ()) -> dict:
    """``extends: other.yaml`` (a path relative to the file that says it): that profile, with this one's keys
    merged over it (mappings key by key, anything else replaced).  One source of truth for a profile that is
    another at a different scale (paper-smoke.yaml extends paper.yaml)."""
    if "extends" not in cfg:
        return cfg
    path = Path(path)
    base_path = (path.parent / str(cfg["extends"])).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends {cfg['extends']!r}, but {base_path} does not exist (the path is relative "
                          f"to {path.parent})")
    seen = _seen + (path.resolve(),)
    if base_path in seen:
        raise ConfigError(f"{path}: extends {cfg['extends']!r} forms a cycle ({' -> '.join(map(str, seen + (base_path,)))})")
    return deep_merge(read_profile(base_path, seen), {k: v for k, v in cfg.items() if k != "extends"})


def load_config(path: str | Path | None = None, overrides: dict | None = None, check_methods: bool = True) -> dict:
    """Load a profile YAML (plus dict overrides, e.g. Snakemake's --config) and validate it."""
    cfg: dict = {}
    source = "config"
    if path is not None:
        source = str(path)
        cfg = read_profile(path)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate(cfg, source=source, check_methods=check_methods)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------- runs
def method_dir(method: str, variant: str = "") -> str:
    """A run's folder name: ``<method>`` or ``<method>@<variant>`` (a Table 9 ablation)."""
    return f"{method}@{variant}" if variant else method


@dataclass(frozen=True)
class RunId:
    """One (dataset, method[@variant], seed) run of a profile."""

    dataset: str
    method: str  # registered method name
    seed: int
    variant: str = ""  # Table 9 ablation, e.g. "alpha=0.9", "batch_size=16", "beta=0.5"

    @property
    def method_dir(self) -> str:
        return method_dir(self.method, self.variant)

    @staticmethod
    def parse_method_dir(method_dir: str) -> tuple[str, str]:
        if "@" in method_dir:
            m, v = method_dir.split("@", 1)
            return m, v
        return method_dir, ""


def parse_variant(variant: str) -> dict:
    """``"alpha=0.9"`` -> training overrides ``{"ema_alpha": 0.9}`` (Table 9)."""
    if not variant:
        return {}
    key, _, value = variant.partition("=")
    try:
        if key == "alpha":
            return {"ema_alpha": float(value)}
        if key == "batch_size":
            return {"batch_size": int(value)}
        if key == "beta":
            return {"beta_schedule": {"kind": "constant", "value": float(value)}}
    except ValueError:
        pass
    raise ConfigError(f"unknown ablation variant {variant!r}; expected alpha=<float>, batch_size=<int> or beta=<float>")


def resolve_run(cfg: dict, run: RunId) -> dict:
    """The fully resolved settings of one run (written beside its outputs, hashed for checkpoints)."""
    if run.dataset not in DOMAIN_OF_DATASET:
        raise ConfigError(f"unknown dataset {run.dataset!r}; expected one of {sorted(DOMAIN_OF_DATASET)}")
    domain = DOMAIN_OF_DATASET[run.dataset]
    dom = cfg["domains"].get(domain, {})
    ds = cfg.get("dataset_overrides", {}).get(run.dataset, {})
    training = copy.deepcopy(cfg["training"])
    # general to specific, later wins (the order is in the schema's description of dataset_overrides)
    for layer in (
        dom.get("training", {}),
        ds.get("training", {}),
        cfg["method_overrides"].get(run.method, {}),
        dom.get("method_overrides", {}).get(run.method, {}),
        ds.get("method_overrides", {}).get(run.method, {}),
        parse_variant(run.variant),
    ):
        training = deep_merge(training, layer)
    return {
        "profile": cfg["profile"],
        "dataset": run.dataset,
        "domain": domain,
        "method": run.method,
        "variant": run.variant,
        "seed": run.seed,
        "training": training,
        # a role named in dataset_overrides.<ds>.models replaces the domain's spec of that role whole
        "models": {**copy.deepcopy(dom.get("models", {})), **copy.deepcopy(ds.get("models", {}))},
        "sampler": copy.deepcopy(cfg["sampler"]),
        "mixit": copy.deepcopy(cfg["mixit"]),
        "basis": deep_merge(cfg["basis"], ds.get("basis", {})),
        "data": copy.deepcopy(cfg["datasets"][run.dataset]),
    }


def config_hash(resolved: dict) -> str:
    """Short hash of the semantic part of a resolved run config."""
    semantic = copy.deepcopy(resolved)
    for k in NON_SEMANTIC_TRAINING_KEYS:
        semantic.get("training", {}).pop(k, None)
    blob = json.dumps(semantic, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]

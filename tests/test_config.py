"""Config: the profiles validate, typos are refused with a suggestion, defaults are filled,
runs are resolved layer by layer, and the run hash ignores only the non-semantic keys."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from surfbench.config import (
    ConfigError,
    RunId,
    config_hash,
    load_config,
    parse_variant,
    read_profile,
    resolve_run,
    schema,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "config").glob("*.yaml"))


# ----------------------------------------------------------------------------- profiles and schema
def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(schema())


def test_there_are_profiles():
    assert {p.stem for p in PROFILES} >= {"tiny", "ci", "paper"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_validates_and_keeps_its_values(path):
    raw = read_profile(path)  # with its `extends` chain expanded (paper-smoke extends paper)
    cfg = load_config(path)
    assert cfg["profile"] == raw["profile"] == path.stem
    # what the file says survives validation unchanged ...
    for key, value in raw["training"].items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert cfg["training"][key][k] == v
        else:
            assert cfg["training"][key] == value, key
    for ds, dcfg in raw["datasets"].items():
        for k, v in dcfg.items():
            assert cfg["datasets"][ds][k] == v, (ds, k)
    # ... and what it omits is filled from the schema
    assert cfg["training"]["grad_clip"] == 1.0
    assert cfg["evaluation"]["lpips_net"] == "alex"
    assert cfg["paths"] == {"data": "data", "work": "work", "results": "results", "report": "report"}


def _leaf_properties(node, root, path=()):
    """Every named property of the schema (following $ref), with its path."""
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].split("/")[1:]:
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    for key, sub in node.get("properties", {}).items():
        yield path + (key,), sub
        yield from _leaf_properties(sub, root, path + (key,))


def test_every_leaf_key_has_a_description_and_a_default():
    """The schema promises a description and a default for every key (model specs excepted:
    a model must be written out, so its ``arch`` has no default)."""
    root = schema()
    no_doc, no_default = [], []
    for path, sub in _leaf_properties(root, root):
        s = sub
        while "$ref" in s:
            target = root
            for part in s["$ref"].split("/")[1:]:
                target = target[part]
            s = {**target, **{k: v for k, v in s.items() if k != "$ref"}}
        if s.get("type") == "object" or "properties" in s:
            continue
        name = ".".join(path)
        if "description" not in s:
            no_doc.append(name)
        if "default" not in s and ".models." not in name:
            no_default.append(name)
    assert not no_doc, f"schema keys without a description: {no_doc}"
    assert not no_default, f"schema keys without a default: {no_default}"


# ----------------------------------------------------------------------------- typos and types
def _err(cfg: dict, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        validate(cfg, source="my.yaml", **kw)
    return str(e.value)


def test_unknown_top_level_key_names_it_and_suggests_the_nearest():
    msg = _err({"trainig": {"steps": 3}})
    assert "'trainig'" in msg
    assert "Did you mean 'training'?" in msg
    assert msg.startswith("my.yaml")


def test_unknown_nested_key_names_its_full_path_and_suggests():
    msg = _err({"training": {"stepz": 3}})
    assert "'training.stepz'" in msg
    assert "Did you mean 'steps'?" in msg


@pytest.mark.parametrize("cfg, where, near", [
    ({"method_overrides": {"mixit": {"lr_": 0.1}}}, "method_overrides.mixit.lr_", "lr"),
    ({"domains": {"image": {"training": {"batchsize": 4}}}}, "domains.image.training.batchsize", "batch_size"),
    ({"domains": {"audio": {"method_overrides": {"mixit": {"ema_alpah": 0.5}}}}},
     "domains.audio.method_overrides.mixit.ema_alpah", "ema_alpha"),
    ({"datasets": {"mnist": {"n_train_image": 10}}}, "datasets.mnist.n_train_image", "n_train_images"),
    ({"sampler": {"euler_step": 3}}, "sampler.euler_step", "euler_steps"),
    ({"dataset_overrides": {"mnsit": {}}}, "dataset_overrides.mnsit", "mnist"),
    ({"dataset_overrides": {"mnist": {"basis": {"steps_per_levl": 3}}}}, "dataset_overrides.mnist.basis.steps_per_levl",
     "steps_per_level"),
    ({"dataset_overrides": {"cifar10": {"method_overrides": {"basis": {"stepz": 3}}}}},
     "dataset_overrides.cifar10.method_overrides.basis.stepz", "steps"),
])
def test_unknown_keys_in_nested_and_override_blocks(cfg, where, near):
    msg = _err(cfg)
    assert repr(where) in msg
    assert f"Did you mean {near!r}?" in msg


def test_unknown_key_without_a_near_match_lists_the_valid_keys():
    msg = _err({"sampler": {"qqqqqqqq": 1}})
    assert "'sampler.qqqqqqqq'" in msg and "Valid keys: euler_steps" in msg


def test_several_typos_are_all_reported():
    msg = _err({"trainig": {}, "sampler": {"euler_step": 3}})
    assert "'trainig'" in msg and "'sampler.euler_step'" in msg


@pytest.mark.parametrize("cfg, key", [
    ({"training": {"steps": "ten"}}, "training.steps"),
    ({"training": {"lr": -1.0}}, "training.lr"),
    ({"seeds": [0, "one"]}, "seeds[1]"),
    ({"datasets": {"cifar10": {"patches_per_photo": 1.5}}}, "datasets.cifar10.patches_per_photo"),
    ({"method_overrides": {"mixit": {"steps": "many"}}}, "method_overrides.mixit.steps"),
])
def test_wrong_type_names_the_key(cfg, key):
    msg = _err(cfg)
    assert f"my.yaml: {key}:" in msg


def test_enum_value_is_refused_with_a_suggestion():
    msg = _err({"device": "cuad"})
    assert "device" in msg and "'cuad'" in msg and "Did you mean 'cuda'?" in msg


@pytest.mark.parametrize("cfg, where", [
    ({"methods": ["surf_remixt"]}, "methods"),
    ({"exclude_methods": ["surf_remixt"]}, "exclude_methods"),
    ({"method_overrides": {"surf_remixt": {"steps": 2}}}, "method_overrides"),
    ({"domains": {"image": {"method_overrides": {"surf_remixt": {"steps": 2}}}}}, "domains.image.method_overrides"),
    ({"ablations": {"methods": ["surf_remixt"]}}, "ablations.methods"),
    ({"dataset_overrides": {"mnist": {"method_overrides": {"surf_remixt": {"steps": 2}}}}},
     "dataset_overrides.mnist.method_overrides"),
])
def test_unknown_method_is_refused_with_a_suggestion(cfg, where):
    msg = _err(cfg)
    assert f"my.yaml: {where}: unknown method 'surf_remixt'" in msg
    assert "Did you mean 'surf_remixit'?" in msg


def test_method_names_are_not_checked_when_asked_not_to():
    cfg = validate({"methods": ["not_a_method"]}, check_methods=False)
    assert cfg["methods"] == ["not_a_method"]


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(lst)


# ----------------------------------------------------------------------------- defaults and overrides
def test_defaults_are_filled_from_the_schema():
    cfg = validate({})
    assert cfg["sampler"]["euler_steps"] == 5
    assert cfg["profile"] == "tiny"
    assert cfg["seeds"] == [0]
    assert cfg["methods"] is None and cfg["exclude_methods"] == []
    assert cfg["training"]["steps"] == 1000 and cfg["training"]["lr"] == 0.0002
    assert cfg["training"]["beta_schedule"] == {"kind": "linear", "decay_fraction": 0.5, "value": 0.0}
    assert cfg["mixit"]["n_slots"] == 4 and cfg["mixit"]["tau"] == 0.001
    assert cfg["datasets"]["libri2mix"]["sample_rate"] == 16000
    assert cfg["ablations"]["alpha"] == [0.0, 0.9, 0.99, 0.999, 0.9999]
    assert cfg["domains"]["image"]["method_overrides"] == {}


def test_validate_does_not_mutate_its_input():
    raw = {"training": {"steps": 3}}
    validate(raw)
    assert raw == {"training": {"steps": 3}}


def test_partial_blocks_keep_their_values_and_get_the_rest():
    cfg = validate({"training": {"steps": 7, "beta_schedule": {"kind": "constant"}}})
    assert cfg["training"]["steps"] == 7
    assert cfg["training"]["batch_size"] == 32
    assert cfg["training"]["beta_schedule"] == {"kind": "constant", "decay_fraction": 0.5, "value": 0.0}


def test_override_blocks_hold_only_the_keys_they_name():
    cfg = validate({
        "training": {"lr": 0.01, "steps": 100},
        "method_overrides": {"mixit": {"steps": 7}},
        "domains": {"image": {"training": {"batch_size": 4}}},
    })
    assert cfg["method_overrides"]["mixit"] == {"steps": 7}
    assert cfg["domains"]["image"]["training"] == {"batch_size": 4}
    tr = resolve_run(cfg, RunId("mnist", "mixit", 0))["training"]
    assert tr["steps"] == 7
    assert tr["lr"] == 0.01          # not reset to the schema default 0.0002
    assert tr["batch_size"] == 4
    assert tr["ema_alpha"] == 0.999  # untouched default


# ----------------------------------------------------------------------------- resolve_run
HAND_MADE = {
    "profile": "handmade",
    "training": {"steps": 10, "lr": 0.1, "batch_size": 8, "ema_alpha": 0.5, "log_every": 3},
    "domains": {
        "image": {
            "training": {"lr": 0.2, "steps": 20},
            "method_overrides": {"surf_remixit": {"steps": 40}},
            "models": {"flow": {"arch": "unet", "base_channels": 8}},
        },
        "audio": {"models": {"flow": {"arch": "mb_tflocoformer"}}},
    },
    "method_overrides": {"surf_remixit": {"steps": 30, "warmup_steps": 3}},
    "datasets": {"cifar10": {"n_eval_mixtures": 11}},
}


@pytest.fixture(scope="module")
def hand_cfg():
    return validate(HAND_MADE)


def test_resolve_run_layers_in_order(hand_cfg):
    # training < domains.image.training < method_overrides < domains.image.method_overrides < variant
    r = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 3, "alpha=0.7"))
    tr = r["training"]
    assert tr["lr"] == 0.2              # domain layer over the global one
    assert tr["steps"] == 40            # domain method override wins over the global method override (30) and domain (20)
    assert tr["warmup_steps"] == 3      # global method override, not touched by later layers
    assert tr["ema_alpha"] == 0.7       # the ablation variant is the last layer
    assert tr["batch_size"] == 8 and tr["log_every"] == 3
    assert tr["grad_clip"] == 1.0       # schema default
    assert r["profile"] == "handmade" and r["dataset"] == "cifar10" and r["domain"] == "image"
    assert r["method"] == "surf_remixit" and r["variant"] == "alpha=0.7" and r["seed"] == 3
    assert r["models"] == {"flow": {"arch": "unet", "base_channels": 8}}
    assert r["data"]["n_eval_mixtures"] == 11
    assert r["sampler"] == {"euler_steps": 5}


def test_resolve_run_dataset_overrides_layer_between_domain_and_method():
    cfg = validate({**HAND_MADE, "basis": {"steps_per_level": 7, "lr": 2e-5},
                    "dataset_overrides": {"mnist": {"training": {"lr": 0.3, "steps": 50},
                                                    "method_overrides": {"basis": {"steps": 90}},
                                                    "basis": {"steps_per_level": 30}}}})
    basis = resolve_run(cfg, RunId("mnist", "basis", 0))
    assert basis["training"]["steps"] == 90 and basis["training"]["lr"] == 0.3
    # only the keys written replace the profile's basis block; the rest keep the profile's values or defaults
    assert basis["basis"] == {"sigma_max": 1.0, "sigma_min": 0.01, "levels": 10, "steps_per_level": 30, "lr": 2e-5,
                              "constraint_weight": 1.0, "update_order": "jacobi"}
    # a per-method override (domain level) still beats the dataset's training block
    assert resolve_run(cfg, RunId("mnist", "surf_remixit", 0))["training"]["steps"] == 40
    assert resolve_run(cfg, RunId("mnist", "mixit", 0))["training"]["steps"] == 50
    # other datasets of the same domain are untouched, and so is their config hash
    other = resolve_run(cfg, RunId("cifar10", "basis", 0))
    assert other["training"]["steps"] == 20 and other["training"]["lr"] == 0.2 and other["basis"]["steps_per_level"] == 7
    plain = validate({**HAND_MADE, "basis": {"steps_per_level": 7, "lr": 2e-5}})
    assert config_hash(other) == config_hash(resolve_run(plain, RunId("cifar10", "basis", 0)))
    assert config_hash(basis) != config_hash(resolve_run(plain, RunId("mnist", "basis", 0)))


def test_resolve_run_other_domain_and_method(hand_cfg):
    audio = resolve_run(hand_cfg, RunId("libri2mix", "surf_remixit", 0))["training"]
    assert (audio["lr"], audio["steps"], audio["warmup_steps"], audio["ema_alpha"]) == (0.1, 30, 3, 0.5)
    mixit = resolve_run(hand_cfg, RunId("mnist", "mixit", 0))["training"]
    assert (mixit["lr"], mixit["steps"], mixit["warmup_steps"]) == (0.2, 20, 0)


def test_resolve_run_variants_override_every_layer(hand_cfg):
    b = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0, "batch_size=16"))["training"]
    assert b["batch_size"] == 16 and b["steps"] == 40
    beta = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0, "beta=0.25"))["training"]
    assert beta["beta_schedule"] == {"kind": "constant", "value": 0.25, "decay_fraction": 0.5}


def test_resolve_run_does_not_share_state_with_the_config(hand_cfg):
    r = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0))
    r["training"]["lr"] = 123.0
    r["models"]["flow"]["arch"] = "changed"
    again = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0))
    assert again["training"]["lr"] == 0.2 and again["models"]["flow"]["arch"] == "unet"
    assert hand_cfg["training"]["lr"] == 0.1


def test_resolve_run_unknown_dataset(hand_cfg):
    with pytest.raises(ConfigError, match="unknown dataset 'mnsit'"):
        resolve_run(hand_cfg, RunId("mnsit", "mixit", 0))


def test_run_id_method_dir_round_trip():
    r = RunId("cifar10", "surf_remixit", 0, "alpha=0.9")
    assert r.method_dir == "surf_remixit@alpha=0.9"
    assert RunId.parse_method_dir(r.method_dir) == ("surf_remixit", "alpha=0.9")
    assert RunId.parse_method_dir("mixit") == ("mixit", "")
    assert RunId("mnist", "mixit", 1).method_dir == "mixit"


# ----------------------------------------------------------------------------- parse_variant
@pytest.mark.parametrize("variant, expected", [
    ("", {}),
    ("alpha=0.9", {"ema_alpha": 0.9}),
    ("alpha=0", {"ema_alpha": 0.0}),
    ("batch_size=16", {"batch_size": 16}),
    ("beta=0.5", {"beta_schedule": {"kind": "constant", "value": 0.5}}),
    ("beta=1.0", {"beta_schedule": {"kind": "constant", "value": 1.0}}),
])
def test_parse_variant(variant, expected):
    out = parse_variant(variant)
    assert out == expected
    if "ema_alpha" in out:
        assert isinstance(out["ema_alpha"], float)
    if "batch_size" in out:
        assert isinstance(out["batch_size"], int)


@pytest.mark.parametrize("variant", ["gamma=0.5", "alpha=high", "batch_size=1.5", "alpha", "beta="])
def test_parse_variant_refuses_unknown_variants(variant):
    with pytest.raises(ConfigError, match="unknown ablation variant") as e:
        parse_variant(variant)
    assert repr(variant) in str(e.value)


# ----------------------------------------------------------------------------- config_hash
def test_config_hash_ignores_logging_and_checkpoint_cadence(hand_cfg):
    base = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0))
    h = config_hash(base)
    assert len(h) == 12 and int(h, 16) >= 0
    for key, value in (("log_every", 999), ("checkpoint_every", 7)):
        other = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0))
        other["training"][key] = value
        assert config_hash(other) == h, key
    # hashing does not remove the keys from the run config itself
    assert base["training"]["log_every"] == 3 and "checkpoint_every" in base["training"]


@pytest.mark.parametrize("change", [
    lambda r: r["training"].__setitem__("lr", 0.3),
    lambda r: r["training"].__setitem__("steps", 41),
    lambda r: r.__setitem__("seed", 1),
    lambda r: r["models"]["flow"].__setitem__("base_channels", 16),
    lambda r: r["mixit"].__setitem__("tau", 0.01),
])
def test_config_hash_changes_with_semantic_keys(hand_cfg, change):
    base = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0))
    other = resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0))
    change(other)
    assert config_hash(other) != config_hash(base)


def test_faithfulness_choices_default_to_the_golden_behaviour_and_take_the_paper_settings(hand_cfg):
    """The four choices of the paper review: defaults as before them (the ci golden values), the paper
    profile's settings valid, BASIS's per dataset; scoring choices are evaluation settings (no retraining)."""
    assert hand_cfg["training"]["supervised_flow_remix"] is False
    assert hand_cfg["mixit"]["teacher_reduction"] == "top_energy"
    assert (hand_cfg["evaluation"]["extra_slots"], hand_cfg["evaluation"]["image_pairing"]) == ("label_free", "mse")
    assert (hand_cfg["basis"]["constraint_weight"], hand_cfg["basis"]["update_order"]) == (1.0, "jacobi")
    paper = validate({**HAND_MADE, "training": {**HAND_MADE["training"], "supervised_flow_remix": True},
                      "evaluation": {"image_pairing": "psnr", "extra_slots": "oracle_assignment"},
                      "dataset_overrides": {"cifar10": {"basis": {"constraint_weight": 0.5,
                                                                  "update_order": "gauss_seidel"}}}})
    assert resolve_run(paper, RunId("mnist", "supervised_flow", 0))["training"]["supervised_flow_remix"] is True
    assert resolve_run(paper, RunId("cifar10", "basis", 0))["basis"]["update_order"] == "gauss_seidel"
    assert resolve_run(paper, RunId("mnist", "basis", 0))["basis"]["update_order"] == "jacobi"
    # how the MixIT row is scored, and the image pairing, are not part of any run's config: no retraining
    for method in ("mixit", "surf_remixit"):
        assert config_hash(resolve_run(paper, RunId("mnist", method, 0))) == \
            config_hash(resolve_run(validate({**HAND_MADE, "training": paper["training"]}), RunId("mnist", method, 0)))
    with pytest.raises(ConfigError, match="update_order"):
        validate({**HAND_MADE, "basis": {"update_order": "gauss-seidel"}})


def test_config_hash_is_stable_and_independent_of_key_order(hand_cfg):
    a = resolve_run(hand_cfg, RunId("mnist", "mixit", 0))
    b = {k: a[k] for k in reversed(list(a))}
    b["training"] = {k: a["training"][k] for k in reversed(list(a["training"]))}
    assert config_hash(a) == config_hash(b)
    # a different variant or dataset is a different run
    assert config_hash(resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0, "alpha=0.7"))) != \
        config_hash(resolve_run(hand_cfg, RunId("cifar10", "surf_remixit", 0)))


# ----------------------------------------------------------------------------- the real entry point
def _snakemake(args, cwd=ROOT):
    exe = Path(sys.executable).with_name("snakemake")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("body, key, hint", [
    ("profile: tiny\ntrainig: {steps: 3}\n", "'trainig'", "Did you mean 'training'?"),
    ("profile: tiny\ntraining: {stepz: 3}\n", "'training.stepz'", "Did you mean 'steps'?"),
    ("profile: tiny\nmethods: [surf_remixt]\n", "'surf_remixt'", "Did you mean 'surf_remixit'?"),
])
def test_snakemake_refuses_a_config_typo_before_planning(tmp_path, body, key, hint):
    """A typo is refused, with a suggestion, before any job is planned.  That it is also quick is a
    benchmark (docs/benchmarks.md); that it does not import torch, the test below."""
    cfgfile = tmp_path / "typo.yaml"
    cfgfile.write_text(body)
    p = _snakemake(["-n", "--nolock", "tables", "-s", str(ROOT / "Snakefile"), "--configfile", str(cfgfile),
                               "--directory", str(tmp_path)])
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert key in out and hint in out, out
    assert "Building DAG" not in out  # refused before any job is planned


def test_checking_method_names_does_not_import_torch():
    """A config typo must be reported in seconds: validating method names needs file names, not torch."""
    code = ("import sys\n"
            "from surfbench.config import ConfigError, validate\n"
            "try:\n    validate({'methods': ['surf_remixt']})\n"
            "except ConfigError as e:\n    assert 'surf_remixit' in str(e)\n"
            "print('torch' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False", "validating method names imported torch (slow config errors)"

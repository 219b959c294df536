"""Method registry: one file per method in baselines/, found without any list to edit."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import surfbench.registry as registry_mod
from surfbench import plan
from surfbench.config import ConfigError, RunId, validate
from surfbench.method import TRAINING_DATA, Method
from surfbench.registry import REPO_BASELINES, Registry, RegistryError, registry

ROOT = Path(__file__).resolve().parents[1]
BASELINE_FILES = sorted(p.stem for p in (ROOT / "baselines").glob("*.py") if not p.name.startswith("_"))

# what the paper says about each method (Tables 1, 2 and 4: supervised / generative columns)
PAPER_FLAGS = {
    "average": (False, False),
    "basis": (True, True),
    "mixit": (False, False),
    "remixit": (False, False),
    "self_remixing": (False, False),
    "supervised_flow": (True, True),
    "supervised_regression": (True, False),
    "surf_remixit": (False, True),
    "surf_self_remixing": (False, True),
}


@pytest.fixture
def fresh_registry(monkeypatch):
    """Clear the registry cache before and after (the search path is read from the environment)."""
    registry_mod._cached.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    registry_mod._cached.cache_clear()


def _write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


GOOD_METHOD = """
    import torch
    from surfbench.method import Method

    class MyNewMethod(Method):
        display_name = "My New Method"
        supervised = False
        generative = False
        citation = "Me et al. 2026"
        training_data = "mixtures"
        domains = ("image",)

        def build(self):
            self.student = self.make_model("regression")

        def training_step(self, batch, ctx):
            est = self.mixture_consistent(self.student(batch["mixture"]), batch["mixture"])
            return (est ** 2).mean()

        def separate(self, mixtures, noise):
            return self.mixture_consistent(self.student(mixtures), mixtures)
"""


# ----------------------------------------------------------------------------- discovery and metadata
def test_every_baseline_file_is_a_registered_method():
    reg = registry()
    assert reg.names() == BASELINE_FILES
    assert set(BASELINE_FILES) >= set(PAPER_FLAGS)
    for name in BASELINE_FILES:
        cls = reg.get(name)
        assert issubclass(cls, Method) and cls is not Method
        assert cls.name == name
        assert reg.file(name) == REPO_BASELINES / f"{name}.py"


@pytest.mark.parametrize("name", sorted(PAPER_FLAGS))
def test_metadata_matches_the_paper(name):
    meta = registry().get(name).metadata()
    assert set(meta) == {"name", "display_name", "supervised", "generative", "citation", "domains",
                         "training_data", "teacher", "tables"}
    assert meta["name"] == name
    assert (meta["supervised"], meta["generative"]) == PAPER_FLAGS[name]
    assert meta["display_name"] and meta["citation"]
    assert meta["training_data"] in TRAINING_DATA
    assert set(meta["domains"]) <= {"image", "audio"} and meta["domains"]
    if not meta["supervised"]:
        assert meta["training_data"] not in ("sources", "single_sources")


def test_specific_metadata():
    reg = registry()
    assert reg.get("mixit").training_data == "mixtures_of_mixtures"
    assert reg.get("basis").training_data == "single_sources"
    assert reg.get("basis").domains == ("image",)
    assert reg.get("supervised_regression").domains == ("image",)
    assert reg.get("average").training_data == "none"
    for name in ("remixit", "self_remixing", "surf_remixit", "surf_self_remixing"):
        assert reg.get(name).teacher == "mixit", name
        assert reg.get(name).training_data == "mixtures", name
    for name in ("mixit", "basis", "supervised_flow", "supervised_regression", "average"):
        assert reg.get(name).teacher is None
    assert set(reg.for_domain("audio")) == {n for n in BASELINE_FILES if "audio" in reg.get(n).domains}
    assert "basis" not in reg.for_domain("audio") and "basis" in reg.for_domain("image")


def test_misspelt_name_gets_a_suggestion():
    with pytest.raises(RegistryError) as e:
        registry().get("surf_remixt")
    msg = str(e.value)
    assert "unknown method 'surf_remixt'" in msg and "Did you mean 'surf_remixit'?" in msg
    with pytest.raises(RegistryError) as e:
        registry().get("zzzzzzzzzzzz")
    assert "Did you mean" not in str(e.value) and "Known: average" in str(e.value)


# ----------------------------------------------------------------------------- a new method needs only its file
def test_new_file_on_the_search_path_is_discovered_and_planned(tmp_path, fresh_registry):
    folder = tmp_path / "extra"
    path = _write(folder, "my_new_method", GOOD_METHOD)
    # before: an unknown method in a config is refused
    with pytest.raises(ConfigError, match="unknown method 'my_new_method'"):
        validate({"methods": ["my_new_method"]})
    fresh_registry.setenv("SURFBENCH_BASELINES", str(folder))
    registry_mod._cached.cache_clear()
    reg = registry()
    assert "my_new_method" in reg.names()
    assert set(BASELINE_FILES) < set(reg.names())
    assert reg.file("my_new_method") == path
    cls = reg.get("my_new_method")
    assert cls.name == "my_new_method" and cls.display_name == "My New Method"

    cfg = validate({"tables": ["1", "2", "4", "9"]})
    jobs = plan.eval_jobs(cfg)
    mine = [j for j in jobs if j.run.method == "my_new_method"]
    # Table 1 on both image datasets; not Table 4 (image only); Table 2 and 9 only if asked (tables=None: all)
    assert {(j.table, j.run.dataset) for j in mine} == {("1", "mnist"), ("1", "cifar10"), ("2", "cifar10")}
    assert all(j.protocol in ("table1", "table2") for j in mine)
    assert RunId("mnist", "my_new_method", 0) in plan.runs(cfg)
    # and the config accepts it by name now
    assert validate({"methods": ["my_new_method"]})["methods"] == ["my_new_method"]


def test_first_folder_on_the_search_path_wins(tmp_path, fresh_registry):
    folder = tmp_path / "shadow"
    _write(folder, "mixit", GOOD_METHOD.replace('"My New Method"', '"Shadow MixIT"'))
    fresh_registry.setenv("SURFBENCH_BASELINES", str(folder))
    registry_mod._cached.cache_clear()
    assert registry().get("mixit").display_name == "Shadow MixIT"
    assert registry().file("mixit") == folder / "mixit.py"


def test_private_files_are_skipped(tmp_path):
    _write(tmp_path, "_helpers", "X = 1\n")
    _write(tmp_path, "ok_method", GOOD_METHOD)
    assert Registry([tmp_path]).names() == ["ok_method"]


# ----------------------------------------------------------------------------- malformed baselines are refused
def test_two_method_classes_in_one_file_are_refused(tmp_path):
    path = _write(tmp_path, "twice", textwrap.dedent(GOOD_METHOD) + textwrap.dedent("""
        class Another(MyNewMethod):
            display_name = "Another"
    """))
    with pytest.raises(RegistryError) as e:
        Registry([tmp_path])
    assert str(path) in str(e.value) and "exactly one" in str(e.value) and "found 2" in str(e.value)


def test_a_file_without_a_method_class_is_refused(tmp_path):
    path = _write(tmp_path, "empty_one", """
        from surfbench.method import Method   # imported, not defined here: does not count
        from surfbench.remixing import RemixingTeacher

        def helper():
            return 1
    """)
    with pytest.raises(RegistryError) as e:
        Registry([tmp_path])
    assert str(path) in str(e.value) and "found 0" in str(e.value)


def test_an_unsupervised_method_on_clean_sources_is_refused(tmp_path):
    path = _write(tmp_path, "cheater", GOOD_METHOD.replace('training_data = "mixtures"', 'training_data = "sources"'))
    with pytest.raises(RegistryError) as e:
        Registry([tmp_path])
    assert str(path) in str(e.value) and "unsupervised method cannot train on clean sources" in str(e.value)


def test_unknown_training_data_and_empty_display_name_are_refused(tmp_path):
    path = _write(tmp_path, "odd", GOOD_METHOD.replace('training_data = "mixtures"', 'training_data = "mixturez"')
                  .replace('display_name = "My New Method"', 'display_name = ""'))
    with pytest.raises(RegistryError) as e:
        Registry([tmp_path])
    msg = str(e.value)
    assert str(path) in msg and "'mixturez'" in msg and "display_name is empty" in msg


def test_an_import_error_names_the_file(tmp_path):
    path = _write(tmp_path, "broken", "import surfbench.no_such_module\n")
    with pytest.raises(RegistryError) as e:
        Registry([tmp_path])
    assert str(path) in str(e.value) and "ModuleNotFoundError" in str(e.value)


def test_search_path_ignores_missing_folders(tmp_path, fresh_registry):
    fresh_registry.setenv("SURFBENCH_BASELINES", str(tmp_path / "does_not_exist"))
    assert registry_mod.baseline_dirs() == [REPO_BASELINES]

"""Method registry: every ``baselines/<name>.py`` defining one :class:`~surfbench.method.Method`
subclass is a method named ``<name>``; there is no list to edit anywhere.

Search path: ``$SURFBENCH_BASELINES`` (``os.pathsep``-separated folders) first, then the
``baselines/`` folder of the repository.
"""
from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import sys
from functools import lru_cache
from pathlib import Path

REPO_BASELINES = Path(__file__).resolve().parents[1] / "baselines"


class RegistryError(ValueError):
    pass


def baseline_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("SURFBENCH_BASELINES", "").split(os.pathsep) if p]
    dirs.append(REPO_BASELINES)
    return [d for d in dirs if d.is_dir()]


def method_names() -> list[str]:
    """The registered names from the file names alone (no import of torch or the baselines: fast config checks)."""
    names: set[str] = set()
    for d in baseline_dirs():
        names.update(p.stem for p in d.glob("*.py") if not p.name.startswith("_"))
    return sorted(names)


class Registry:
    def __init__(self, dirs: list[Path]):
        self._methods: dict[str, type] = {}
        self._files: dict[str, Path] = {}
        for d in dirs:
            for path in sorted(d.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                name = path.stem
                if name in self._methods:
                    continue  # first folder on the search path wins
                self._methods[name] = self._load(path)
                self._files[name] = path

    @staticmethod
    def _load(path: Path):
        from .method import TRAINING_DATA, Method

        modname = f"surfbench_baselines.{path.stem}"
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            raise RegistryError(f"{path}: failed to import ({type(e).__name__}: {e})") from e
        classes = [c for _, c in inspect.getmembers(mod, inspect.isclass)
                   if issubclass(c, Method) and c is not Method and c.__module__ == modname]
        if len(classes) != 1:
            raise RegistryError(f"{path}: a baseline file must define exactly one subclass of surfbench.method.Method, found {len(classes)}")
        cls = classes[0]
        cls.name = path.stem
        problems = []
        if not cls.display_name:
            problems.append("display_name is empty")
        if cls.training_data not in TRAINING_DATA:
            problems.append(f"training_data={cls.training_data!r} not in {TRAINING_DATA}")
        if cls.supervised is False and cls.training_data in ("sources", "single_sources"):
            problems.append("an unsupervised method cannot train on clean sources")
        if problems:
            raise RegistryError(f"{path}: " + "; ".join(problems))
        return cls

    def names(self) -> list[str]:
        return sorted(self._methods)

    def get(self, name: str):
        if name not in self._methods:
            near = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.4)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise RegistryError(f"unknown method {name!r}.{hint} Known: {', '.join(self.names())}")
        return self._methods[name]

    def file(self, name: str) -> Path:
        return self._files[name]

    def for_domain(self, domain: str) -> list[str]:
        return [n for n in self.names() if domain in self._methods[n].domains]


@lru_cache(maxsize=None)
def _cached(dirs: tuple[str, ...]) -> Registry:
    return Registry([Path(d) for d in dirs])


def registry() -> Registry:
    return _cached(tuple(str(d) for d in baseline_dirs()))

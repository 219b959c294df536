"""surfbench.atomic: the one way surfbench writes a file (temp file beside it, then os.replace).

* permissions: under umask 022 every writer's file is 0644, under 077 it is 0600 (run in a
  subprocess, so this process's umask is never changed);
* an exception while writing leaves the previous file as it was and no temporary file behind;
* formatting is the caller's (goldens and results hash/compare the bytes);
* no other module of surfbench renames temporary files into place itself (the duplicates that
  this module replaced must not come back), and data/store and data/audio_store no longer
  import each other.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from surfbench import atomic, audio_io
from surfbench.atomic import atomic_path, copy_file, write_bytes, write_json, write_npz, write_text, write_yaml
from surfbench.data.store import array_hash, save_npz_atomic
from surfbench.train import save_atomic

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "surfbench"

# ----------------------------------------------------------------------------- permissions
# Every kind of writer, in a fresh process whose umask is argv[2]; prints {writer: mode}.
_WRITERS = r"""
import json, os, sys
from pathlib import Path

os.umask(int(sys.argv[2], 8))
out = Path(sys.argv[1])

import numpy as np
import torch

from surfbench import atomic, golden
from surfbench.audio_io import write_audio
from surfbench.cli import write_yaml_atomic
from surfbench.data.store import save_npz_atomic
from surfbench.results import summarize, write_run_results
from surfbench.separate import _write_png
from surfbench.train import save_atomic
import pandas as pd

files = {}
files["text"] = atomic.write_text(out / "a.txt", "hello\n")
files["text_fsync"] = atomic.write_text(out / "b.tex", "x", fsync=True)
files["bytes"] = atomic.write_bytes(out / "c.bin", b"\x00\x01")
files["json"] = atomic.write_json(out / "d.json", {"a": 1})
files["yaml"] = atomic.write_yaml(out / "e.yaml", {"a": 1})
files["yaml_cli"] = write_yaml_atomic(out / "config.yaml", {"b": 2})
files["npz"] = atomic.write_npz(out / "f.npz", x=np.zeros(3))
save_npz_atomic(out / "train.npz", x=np.ones(3)); files["npz_store"] = out / "train.npz"
with atomic.atomic_path(out / "g.npy") as tmp, open(tmp, "wb") as fh:
    np.save(fh, np.zeros(2))
files["npy"] = out / "g.npy"
files["torch"] = save_atomic({"w": torch.zeros(2)}, out / "model.pt")
files["wav"] = write_audio(out / "h.wav", np.zeros(160, np.float32), 16000)
_write_png(out / "i.png", torch.zeros(1, 4, 4)); files["png"] = out / "i.png"
files["copy"] = atomic.copy_file(out / "a.txt", out / "sub" / "copied.txt")
os.close(os.open(out / "old.txt", os.O_WRONLY | os.O_CREAT, 0o600))   # a private file, overwritten
files["overwrite"] = atomic.write_text(out / "old.txt", "new")
items = pd.DataFrame({"item": [0, 1], "psnr": [1.0, 2.0]})
files["metrics_json"] = write_run_results(out / "run", header={"profile": "p"}, items=items,
                                          metrics={"psnr": summarize([1.0, 2.0], True)})
files["items_csv"] = out / "run" / "items.csv"
entry = {"dataset": "mnist", "method": "mixit", "variant": "", "protocol": "table1", "metrics": {"psnr": 1.0},
         "provenance": {}}
files["golden"] = golden.update({"ci/mnist/mixit": entry}, out / "golden", previous={})[0]
print(json.dumps({k: oct(os.stat(p).st_mode & 0o777) for k, p in files.items()}))
"""

KINDS = ["text", "text_fsync", "bytes", "json", "yaml", "yaml_cli", "npz", "npz_store", "npy", "torch", "wav", "png",
         "copy", "overwrite", "metrics_json", "items_csv", "golden"]


def _modes_under(umask: str, tmp_path: Path) -> dict[str, str]:
    out = tmp_path / f"umask{umask}"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _WRITERS, str(out), umask], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(modes) == sorted(KINDS)
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert not leftovers, leftovers
    return modes


@pytest.mark.parametrize("umask, mode", [("022", "0o644"), ("077", "0o600"), ("002", "0o664")])
def test_every_writer_gives_the_permissions_of_the_umask(umask, mode, tmp_path):
    modes = _modes_under(umask, tmp_path)
    wrong = {k: m for k, m in modes.items() if m != mode}
    assert not wrong, f"under umask {umask} expected {mode}, got {wrong}"


def test_this_process_umask_is_untouched_by_writing(tmp_path):
    before = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else None
    write_text(tmp_path / "x.txt", "x")
    if before is not None:
        umask_line = [ln for ln in before.splitlines() if ln.startswith("Umask:")]
        after = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("Umask:")]
        assert umask_line == after


# ----------------------------------------------------------------------------- failure: old file kept, no temp file
class _Unconvertible:
    def __array__(self, *a, **k):
        raise RuntimeError("cannot convert")


def _fail_in_block(p):
    with atomic_path(p) as tmp:
        tmp.write_bytes(b"half a fi")
        raise RuntimeError("killed while writing")


def _interrupt_in_block(p):
    with atomic_path(p) as tmp:
        tmp.write_bytes(b"half a fi")
        raise KeyboardInterrupt


def _fail_json(p):
    write_json(p, {"a": object()})


def _fail_npz(p):
    write_npz(p, first=np.zeros(1000), second=_Unconvertible())   # numpy has written `first` by then


def _fail_torch(p):
    save_atomic({"w": torch.zeros(1000), "f": lambda: 0}, p)     # a lambda does not pickle


def _fail_copy(p):
    copy_file(p.parent / "no-such-file", p)


def _fail_wav(p, monkeypatch):
    def half_then_boom(file, *a, **k):
        Path(file).write_bytes(b"RIFF\x00\x00")
        raise OSError("disk full")

    monkeypatch.setattr(audio_io.sf, "write", half_then_boom)
    audio_io.write_audio(p, np.zeros(16, np.float32), 16000)


FAILING = {"block": (_fail_in_block, RuntimeError), "interrupt": (_interrupt_in_block, KeyboardInterrupt),
           "json": (_fail_json, TypeError), "npz": (_fail_npz, RuntimeError), "torch": (_fail_torch, Exception),
           "copy": (_fail_copy, FileNotFoundError), "wav": (_fail_wav, OSError)}


@pytest.mark.parametrize("kind", sorted(FAILING))
def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temp_file(kind, tmp_path, monkeypatch):
    fn, exc = FAILING[kind]
    target = tmp_path / "out.bin"
    target.write_bytes(b"the previous, complete file")
    with pytest.raises(exc):
        fn(target, monkeypatch) if kind == "wav" else fn(target)
    assert target.read_bytes() == b"the previous, complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_failed_rename_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out"
    (target / "inner").mkdir(parents=True)          # a non-empty folder where the file should go
    with pytest.raises(OSError):
        write_text(target, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "inner").is_dir()


def test_an_error_with_no_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        _fail_in_block(tmp_path / "new.txt")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- behaviour the callers rely on
def test_the_temporary_file_is_a_hidden_tmp_file_beside_the_target(tmp_path):
    target = tmp_path / "deep" / "er" / "metrics.json"     # folders are created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".metrics.json.") and tmp.name.endswith(".tmp")
        assert tmp.exists() and tmp.stat().st_size == 0 and not target.exists()
        tmp.write_text("done")
    assert target.read_text() == "done" and not tmp.exists()
    with atomic_path(tmp_path / "x.png", suffix=".tmp.png") as tmp:
        assert tmp.name.endswith(".tmp.png")
    long = tmp_path / ("n" * 250)                            # NAME_MAX is 255: the temp name is shortened
    assert write_text(long, "ok").read_text() == "ok"


def test_json_text_and_yaml_are_formatted_as_the_caller_says(tmp_path):
    obj = {"b": [1, 2.5], "a": {"z": None, "y": "é"}, "p": Path("/x")}
    assert write_json(tmp_path / "g.json", {k: v for k, v in obj.items() if k != "p"}, indent=2, sort_keys=True) \
        .read_text() == json.dumps({k: v for k, v in obj.items() if k != "p"}, indent=2, sort_keys=True) + "\n"
    assert write_json(tmp_path / "b.json", obj, indent=2, default=str).read_text() == \
        json.dumps(obj, indent=2, default=str) + "\n"
    assert write_json(tmp_path / "m.json", obj, indent=1, default=str, end="").read_text() == \
        json.dumps(obj, indent=1, default=str)
    assert write_text(tmp_path / "t.csv", "a,b\r\n1,é\n").read_bytes() == "a,b\r\n1,é\n".encode("utf-8")
    assert write_bytes(tmp_path / "x.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    import yaml

    cfg = {"z": 1, "a": {"c": [1, 2], "b": "x"}}
    assert write_yaml(tmp_path / "c.yaml", cfg).read_text() == yaml.safe_dump(cfg, sort_keys=True)


def test_npz_keeps_its_name_and_store_returns_the_content_hash(tmp_path):
    arrays = {"path": np.arange(3), "images": np.zeros((2, 1, 2, 2), np.uint8)}   # "path" is a fine array name
    h = save_npz_atomic(tmp_path / "eval.npz", **arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.npz"]               # numpy added no second .npz
    with np.load(tmp_path / "eval.npz") as z:
        assert h == array_hash({k: z[k] for k in z.files}) == array_hash(arrays)


def test_copy_file_copies_bytes_not_mode(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights")
    src.chmod(0o400)
    dst = copy_file(src, tmp_path / "cache" / "w.pth")
    assert dst.read_bytes() == b"weights" and dst.stat().st_mode & 0o200       # writable: not the source's 0400


def test_fsync_only_when_asked(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    write_text(tmp_path / "a", "x")
    assert synced == []
    write_text(tmp_path / "b", "x", fsync=True)
    assert len(synced) == 1


# ----------------------------------------------------------------------------- no second way to write a file
_TEMP_MAKERS = {("tempfile", "mkstemp"), ("tempfile", "mktemp")}
_RENAMERS = {("os", "replace"), ("os", "rename"), ("os", "renames")}
#: calls that write a file's content (any object's method of that name counts; over-inclusive on purpose)
_WRITES = {"write", "write_text", "write_bytes", "save", "savez", "savez_compressed", "dump", "safe_dump",
           "copyfile", "copy", "copy2", "copyfileobj", "to_csv", "savefig", "fdopen"}


def _renames_in(path: Path) -> list[str]:
    """Hand-made "write a temporary file, rename it into place" code in ``path``.

    Flagged: any ``tempfile.mkstemp``/``mktemp`` call; and a rename — ``os.replace``/``os.rename``
    (also imported by name or under another module name) or ``<path>.replace(x)``/``.rename(x)``
    (one argument: ``str.replace`` always has two) — in a function (or at module level) that also
    writes a file (:data:`_WRITES`).  A rename alone (say, swapping in a finished directory) is not
    a file write and is not flagged.  Comments and docstrings are not code: not flagged either.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = {}   # local name -> module, for `import os as _os`
    names = {}     # local name -> (module, function), for `from os import replace as r`
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in {"os", "tempfile"}:
            for a in node.names:
                names[a.asname or a.name] = (node.module, a.name)

    def qualified(f) -> tuple | None:
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
            return modules[f.value.id], f.attr
        if isinstance(f, ast.Name):
            return names.get(f.id)
        return None

    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    in_function = {id(c) for fn in functions for c in ast.walk(fn) if isinstance(c, ast.Call)}
    scopes = [[c for c in ast.walk(fn) if isinstance(c, ast.Call)] for fn in functions]
    scopes.append([c for c in ast.walk(tree) if isinstance(c, ast.Call) and id(c) not in in_function])
    hits = set()
    for calls in scopes:
        writes = any((c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", None)) in _WRITES
                     for c in calls)
        for c in calls:
            f, q = c.func, qualified(c.func)
            where = f"{path.relative_to(ROOT)}:{c.lineno}"
            if q in _TEMP_MAKERS:
                hits.add(f"{where} {q[0]}.{q[1]}")
            elif not writes:
                continue
            elif q in _RENAMERS:
                hits.add(f"{where} {q[0]}.{q[1]}")
            elif isinstance(f, ast.Attribute) and f.attr in {"replace", "rename"} and len(c.args) == 1 \
                    and not c.keywords and q is None:
                hits.add(f"{where} .{f.attr}(...)")
    return sorted(hits, key=lambda h: int(h.split(":")[1].split(" ")[0]))


#: the shapes of the helpers surfbench.atomic replaced, and code that is fine
_DETECTOR_CASES = '''
import dataclasses
import os
import os as o
import shutil
import tempfile
from os import replace as r
from tempfile import mkstemp

def like_cli(path, obj):
    fd, tmp = tempfile.mkstemp(dir=path.parent)                  # flagged: mkstemp
    with os.fdopen(fd, "w") as f:
        f.write(obj)
    os.replace(tmp, path)                                        # flagged

def like_golden(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)                                            # flagged: Path.replace

def like_train(obj, path):
    tmp = path.with_name(path.name + ".tmp1")
    torch.save(obj, tmp)
    o.rename(tmp, path)                                          # flagged: os under another name

def like_tables(path, data):
    with open(tmp, "xb") as fh:
        fh.write(data)
    r(tmp, path)                                                 # flagged: os.replace imported by name

def fine(site, tmp, obj, d):
    os.replace(site, site.with_name(".old"))                     # a directory swap: no file written here
    Path(tmp).rename(site)
    shutil.rmtree(tmp)

def fine_too(text, obj, d):
    open(p, "w").write(text.replace("a", "b"))                   # str.replace has two arguments
    dataclasses.replace(obj)                                     # a module's function, not Path.replace
    d.replace(year=1)                                            # keywords: datetime.replace

fd, t = mkstemp()                                                # flagged at module level too
'''


def test_the_detector_finds_the_old_helpers_and_nothing_else(tmp_path, monkeypatch):
    src = tmp_path / "m.py"
    src.write_text(_DETECTOR_CASES)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    lines = _DETECTOR_CASES.splitlines()
    found = {int(h.split(":")[1].split(" ")[0]) for h in _renames_in(src)}
    expected = {i + 1 for i, line in enumerate(lines) if "# flagged" in line}
    assert found == expected, [lines[i - 1].strip() for i in found ^ expected]


def test_only_surfbench_atomic_renames_files_into_place():
    hits = [h for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "atomic.py" for h in _renames_in(p)]
    assert not hits, ("write files through surfbench.atomic (atomic_path / write_text / write_json / ...), "
                      "not with a temp file and a rename of your own: " + "; ".join(hits))


def _imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_data_store_and_audio_store_do_not_import_each_other():
    assert "surfbench.data.audio_store" in _imported_modules(PACKAGE / "data" / "store.py", "surfbench.data")
    assert "surfbench.data.store" not in _imported_modules(PACKAGE / "data" / "audio_store.py", "surfbench.data")


def test_torch_checkpoints_are_byte_identical_and_keep_their_archive_name(tmp_path):
    """torch.save names the zip archive inside after the file: save_atomic (keep_name) must not let the
    random temporary name into the bytes (model_hash would differ between two runs of the same job)."""
    import zipfile

    import torch

    from surfbench.train import save_atomic

    obj = {"w": torch.arange(6.0)}
    a, b = save_atomic(obj, tmp_path / "a" / "model.pt"), save_atomic(obj, tmp_path / "b" / "model.pt")
    assert a.read_bytes() == b.read_bytes()
    assert zipfile.ZipFile(a).namelist()[0].startswith("model.pt/")  # as before the atomic module
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.pt"]  # no temporary folder left


def test_keep_name_failure_leaves_nothing_behind(tmp_path):
    from surfbench.atomic import atomic_path

    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, keep_name=True) as tmp:
            assert tmp.name == "model.pt.tmp" and tmp.parent != tmp_path
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]

"""One way to write a file safely: every file surfbench writes goes through here.

A writer writes into a fresh temporary file in the target's folder, and only once it has
finished is the temporary file renamed onto the target (``os.replace``, atomic within a
file system).  So

* a reader (Snakemake, the report, a second process) never sees a half-written file under
  the final name; a killed process leaves at most a hidden ``.NAME.XXXXXXXX.tmp`` beside it;
* an exception while writing removes the temporary file and re-raises: the previous file,
  if any, is left as it was;
* the file gets the permissions any other tool's output gets (see below).

API (every function returns the final path):

* :func:`atomic_path` — context manager yielding the temporary path, for writers that want a
  path (``torch.save``, ``soundfile.write``, ``PIL.Image.save(..., format=...)``, ``open``);
* :func:`write_bytes`, :func:`write_text`, :func:`write_json`, :func:`write_yaml`,
  :func:`write_npz`, :func:`copy_file` — thin helpers on top of it.

The temporary path ends in ``.tmp`` (not in the target's extension, so a glob such as
``**/*.json`` never picks up a file still being written).  A writer that picks the format
from the extension must be told the format (``format="PNG"``, ``format="WAV"``); numpy's
``np.save``/``np.savez`` append ``.npy``/``.npz`` to a path, so give them an open file
(as :func:`write_npz` does) — or pass ``suffix=``.

Permissions.  ``tempfile.mkstemp`` creates files with mode 0600, which a rename keeps: the
results, prepared data and outputs were unreadable to the rest of a research group on a
shared disk.  Here the temporary file is created with ``os.open(..., O_CREAT | O_EXCL,
0o666)``, so the kernel applies the process's umask at that moment (``0o666 & ~umask``,
or a default ACL of the folder where there is one) — exactly what ``open(path, "w")`` or
any other tool gives.  This reads the umask neither by ``os.umask`` set-and-restore (a
process-wide change, racy with other threads creating files) nor once at import (stale if
the program changes its umask later) nor from ``/proc/self/status`` (Linux only), and
needs no ``chmod``.  Writers must write *into* the temporary file (open/truncate it, as
all of the above do), not rename another file onto it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Union

PathLike = Union[str, os.PathLike]

_NAME_ROOM = 200  # characters of the target's name kept in the temporary name (NAME_MAX is 255 bytes)


def _create_temp(path: Path, suffix: str) -> Path:
    """A new, empty file ``.<name>.<random><suffix>`` beside ``path``, mode ``0o666 & ~umask``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name[:_NAME_ROOM]}.{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask: see the module docstring
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _create_temp_in_private_dir(path: Path, suffix: str) -> Path:
    """A new, empty file ``.<name>.<random>.tmp/<name><suffix>``: the target's own name in a fresh hidden folder."""
    for _ in range(100):
        d = path.with_name(f".{path.name[:_NAME_ROOM]}.{secrets.token_hex(4)}.tmp")
        try:
            d.mkdir()
        except FileExistsError:
            continue
        tmp = d / f"{path.name}{suffix}"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        return tmp
    raise FileExistsError(f"could not create a temporary folder beside {path}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: PathLike, *, suffix: str = ".tmp", fsync: bool = False,
                keep_name: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, on error remove it.

    The folder is created if missing.  The temporary file exists (empty) when the block starts.
    ``fsync=True`` flushes the data to disk before the rename.  ``keep_name=True``: the temporary
    file is ``<name><suffix>`` in a fresh hidden folder beside ``path``, for writers whose output
    depends on the file's name (``torch.save`` names the zip archive inside the file after it:
    a random temporary name would make the same model's bytes, and so its hash, differ run to run).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_in_private_dir(path, suffix) if keep_name else _create_temp(path, suffix)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if keep_name:
            tmp.parent.rmdir()


def write_bytes(path: PathLike, data: bytes, *, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text(path: PathLike, text: str, *, fsync: bool = False) -> Path:
    """``text`` encoded as UTF-8, written as is (no newline translation)."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
               default: Callable[[Any], Any] | None = None, end: str = "\n") -> Path:
    """``json.dumps(obj, indent=, sort_keys=, default=) + end``.

    The caller states the formatting: files that are hashed or compared (goldens, results)
    must keep theirs byte for byte.  Serialisation happens before anything is created.
    """
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + end)


def write_yaml(path: PathLike, obj: Any) -> Path:
    """``yaml.safe_dump(obj, sort_keys=True)``."""
    import yaml

    return write_text(path, yaml.safe_dump(obj, sort_keys=True))


def write_npz(path: PathLike, /, **arrays) -> Path:
    """``np.savez(path, **arrays)`` (uncompressed), written to an open file so numpy adds no ``.npz``."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def copy_file(src: PathLike, dst: PathLike) -> Path:
    """Copy the bytes of ``src`` to ``dst`` (not its mode: ``dst`` gets the usual permissions)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)

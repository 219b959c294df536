"""Pretrained network weights the perceptual metrics need, and where they live.

The image metrics LPIPS (AlexNet / VGG-16 trunk from torchvision) and
FID / IS / KID (torch-fidelity's Inception-v3) need weight files that the
libraries would download on first use. surfbench never lets them download
implicitly: the files are looked up in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, the place torchvision and torch-fidelity
use themselves) and, when absent, the metric is reported unavailable with a
reason (:class:`surfbench.metrics.base.MetricUnavailable`).

Getting the files there:

* ``surfbench weights --fetch``: download where the network allows;
* ``surfbench weights --from DIR``: copy files found in ``DIR`` (e.g. carried
  over from a machine with internet) into the cache after a sha256 check;
* ``surfbench weights [--json]``: show what is present and whether each file
  is the published one.

The sha256 values below are the published files' (each file name ends with
the first 8 hex digits of its sha256, torchvision's convention, which the
test-suite checks).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from surfbench.atomic import copy_file
from surfbench.metrics.base import MetricUnavailable


@dataclass(frozen=True)
class WeightFile:
    name: str  #: short key, e.g. ``"alexnet"``
    filename: str  #: file name in the hub cache (what the libraries look for)
    sha256: str  #: of the published file (full 64 hex digits)
    url: str  #: where it is published
    metrics: tuple[str, ...]  #: metric names that need it
    note: str = ""


KNOWN_WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="inception",
            filename="weights-inception-2015-12-05-6726825d.pth",
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
            metrics=("fid", "is", "kid"),
            note="torch-fidelity Inception-v3 (TF 2015-12-05 graph), 95,628,359 bytes",
        ),
        WeightFile(
            name="alexnet",
            filename="alexnet-owt-7be5be79.pth",
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            metrics=("lpips",),
            note="torchvision AlexNet IMAGENET1K_V1, LPIPS trunk for net='alex', 244,408,911 bytes",
        ),
        WeightFile(
            name="vgg16",
            filename="vgg16-397923af.pth",
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            metrics=("lpips",),
            note="torchvision VGG-16 IMAGENET1K_V1, LPIPS trunk for net='vgg'",
        ),
    )
}


def cache_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``).

    Same rule as ``torch.hub.get_dir()`` (``TORCH_HOME``, else
    ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``), evaluated now so a
    changed environment variable is honoured.
    """
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _known(name: str) -> WeightFile:
    try:
        return KNOWN_WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(KNOWN_WEIGHTS)}") from None


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime) within the process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def sha_matches(path: str | os.PathLike, expected: str) -> bool:
    """True when the file's sha256 starts with ``expected`` (a full digest or a prefix)."""
    return file_sha256(path).startswith(expected.lower())


def _install_hint(w: WeightFile) -> str:
    return (
        f"run `surfbench weights --fetch` where the network allows, or copy {w.filename} "
        f"(from {w.url}) into a folder and run `surfbench weights --from DIR`"
    )


def weights_path(name: str, verify: bool = False) -> Path:
    """Path of the cached weight file ``name``; :class:`MetricUnavailable` when absent.

    ``verify=True`` also refuses a file whose sha256 is not the published one
    (by default any file under the expected name is used, which is what the
    tests rely on; :func:`status` tells whether the cached file is official).
    """
    w = _known(name)
    p = cache_dir() / w.filename
    if not p.is_file():
        raise MetricUnavailable(
            f"{w.note.split(',')[0]} weights {w.filename} not found in {p.parent}; {_install_hint(w)}",
            metric=",".join(w.metrics),
        )
    if verify and not sha_matches(p, w.sha256):
        raise MetricUnavailable(
            f"{p} does not have the published sha256 {w.sha256[:16]}...; {_install_hint(w)}",
            metric=",".join(w.metrics),
        )
    return p


@dataclass
class WeightStatus:
    name: str
    filename: str
    present: bool
    path: str
    sha_ok: bool | None  #: None when absent
    metrics: tuple[str, ...]


def status(names: Iterable[str] | None = None) -> list[WeightStatus]:
    """One row per known weight file: present?, where, published sha256?"""
    rows = []
    for name in names or KNOWN_WEIGHTS:
        w = _known(name)
        p = cache_dir() / w.filename
        present = p.is_file()
        rows.append(
            WeightStatus(
                name=w.name,
                filename=w.filename,
                present=present,
                path=str(p),
                sha_ok=sha_matches(p, w.sha256) if present else None,
                metrics=w.metrics,
            )
        )
    return rows


@dataclass
class Outcome:
    """What :func:`fetch` / :func:`install_from` did with one weight file."""

    name: str
    filename: str
    status: str  #: "installed", "downloaded", "present", "not-found", "refused" or "failed"
    message: str

    @property
    def ok(self) -> bool:
        return self.status not in ("refused", "failed")


def fetch(names: Iterable[str] | None = None) -> list[Outcome]:
    """Download the named weight files (all known ones by default) into :func:`cache_dir`.

    A file already present with the published sha256 is kept (a file under the
    expected name with another hash is replaced). The download is
    checked against the sha256 (``torch.hub.download_url_to_file``'s
    ``hash_prefix``); a failure (no network, wrong hash) is reported in the
    outcome's message, never raised.
    """
    import torch.hub

    out = []
    for name in names or KNOWN_WEIGHTS:
        w = _known(name)
        dst = cache_dir() / w.filename
        if dst.is_file() and sha_matches(dst, w.sha256):
            out.append(Outcome(w.name, w.filename, "present", f"already present: {dst}"))
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Writes to a temporary file beside dst, checks the hash, then moves it in place.
            torch.hub.download_url_to_file(w.url, str(dst), hash_prefix=w.sha256, progress=False)
        except Exception as e:  # noqa: BLE001 - any failure becomes a message
            out.append(
                Outcome(
                    w.name,
                    w.filename,
                    "failed",
                    f"could not download {w.filename} from {w.url}: {type(e).__name__}: {e}. "
                    f"Copy the file from a machine with internet and run `surfbench weights --from DIR`.",
                )
            )
            continue
        out.append(Outcome(w.name, w.filename, "downloaded", f"downloaded to {dst}"))
    return out


def install_from(directory: str | os.PathLike, names: Iterable[str] | None = None) -> list[Outcome]:
    """Copy known weight files found in ``directory`` (searched recursively) into the cache.

    Each candidate must have the published sha256; a file with another hash is
    refused (status ``"refused"``, naming the file and both hashes) and nothing
    is copied for it. Files not in ``directory`` get status ``"not-found"``.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"install_from: {d} is not a directory")
    out = []
    for name in names or KNOWN_WEIGHTS:
        w = _known(name)
        dst = cache_dir() / w.filename
        candidates = sorted(p for p in d.rglob(w.filename) if p.is_file())
        if not candidates:
            out.append(Outcome(w.name, w.filename, "not-found", f"{w.filename} not found under {d} (skipped)"))
            continue
        src = candidates[0]
        got = file_sha256(src)
        if not got.startswith(w.sha256):
            out.append(
                Outcome(
                    w.name,
                    w.filename,
                    "refused",
                    f"refused {src}: sha256 {got} is not the published {w.sha256}",
                )
            )
            continue
        if dst.is_file() and sha_matches(dst, w.sha256):
            out.append(Outcome(w.name, w.filename, "present", f"already present: {dst}"))
            continue
        copy_file(src, dst)
        out.append(Outcome(w.name, w.filename, "installed", f"installed {src} -> {dst}"))
    return out


def _print_table(rows: Sequence[WeightStatus], file=None) -> None:
    file = file or sys.stdout
    print(f"weights cache: {cache_dir()}", file=file)
    for r in rows:
        if not r.present:
            state = "MISSING"
        elif r.sha_ok:
            state = "ok"
        else:
            state = "present, NOT the published file (sha256 differs)"
        print(f"  {r.name:<10} {r.filename:<45} {state:<10}  needed by: {', '.join(r.metrics)}", file=file)


def main(argv: Sequence[str] | None = None) -> int:
    """``surfbench weights [--fetch] [--from DIR] [--json] [NAME ...]``; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="surfbench weights",
        description="Show, download or install the network weights that LPIPS and FID/IS/KID need.",
    )
    ap.add_argument("names", nargs="*", help=f"restrict to these weights (default all: {', '.join(KNOWN_WEIGHTS)})")
    ap.add_argument("--fetch", action="store_true", help="download missing files (needs internet)")
    ap.add_argument("--from", dest="from_dir", metavar="DIR", help="copy files found in DIR into the cache (sha256 checked)")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = ap.parse_args(list(argv) if argv is not None else None)
    for n in args.names:
        if n not in KNOWN_WEIGHTS:
            ap.error(f"unknown weights {n!r}; known: {', '.join(KNOWN_WEIGHTS)}")
    names = args.names or None

    outcomes: list[Outcome] = []
    if args.from_dir:
        try:
            installed = install_from(args.from_dir, names)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        outcomes += installed
        if all(o.status == "not-found" for o in installed):
            outcomes.append(Outcome("-", "-", "failed", f"no known weight file found under {args.from_dir}"))
    if args.fetch:
        outcomes += fetch(names)
    rows = status(names)

    failed = [o for o in outcomes if not o.ok]
    if args.json:
        print(
            json.dumps(
                {
                    "cache_dir": str(cache_dir()),
                    "weights": [asdict(r) for r in rows],
                    "actions": [{**asdict(o), "ok": o.ok} for o in outcomes],
                },
                indent=2,
            )
        )
    else:
        for o in outcomes:
            print(("  " if o.ok else "  FAILED: ") + o.message, file=sys.stdout if o.ok else sys.stderr)
        _print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""``surfbench score-fuss``: score separated FUSS examples with the reference FUSS metrics.

    surfbench score-fuss --list FUSS/ssdata_reverb/eval_example_list.txt --estimates EST --out OUT

The list is FUSS's ``*_example_list.txt``: one example per line, tab-separated, the mixture's
path first and then its source paths (``..._sources/background0_sound.wav``, then
``foreground0_sound.wav`` … up to ``foreground2_sound.wav``), relative to the list's folder
(``data_io.read_lines_from_file(..., base_path='relative')`` in google-research/sound-separation;
an absolute path stays absolute, as ``os.path.join`` makes it).  Blank lines are ignored.  The
mixture file itself is not read: the reference scores improvements against the sum of the
sources (see :mod:`surfbench.metrics.fuss`); only its name is used: the estimates of the example
whose mixture is ``.../<name>.wav`` are ``EST/<name>/est0.wav`` … ``est3.wav``.

Every WAV is read with :func:`surfbench.audio_io.read_audio` (soundfile, float32, mono, 16 kHz):
a missing file, a wrong sample rate, more than one channel, NaN/Inf samples, an estimates folder
holding other than 4 files, or signals of different lengths within an example stop the run with
an error naming the file.  (The reference's reader instead zero-pads or truncates every file to
160000 samples, ``tf.audio.decode_wav(desired_samples=...)``; FUSS's clips are all 160000 samples
long, so a length mismatch here means the files are not what they should be.)

Writes, atomically (:mod:`surfbench.atomic`), into ``OUT``:

* ``fuss_examples.csv``: one row per example: ``example, n_ref_active, n_est_active, separation``
  and, per slot ``k`` = 0..3 (after alignment): ``ref_active_k, est_active_k, estimate_k`` (the
  ``est<j>.wav`` matched to slot ``k``), ``sisnr_k``, ``sisnr_mixture_k``, ``sisnri_k`` (dB);
  a skipped (silent) example has ``separation`` = ``skipped`` and empty values;
* ``fuss_summary.json``: :meth:`surfbench.metrics.fuss.FussAccumulator.summary` (keys ``1S, 2Si,
  3Si, 4Si, MSi, under, equal, over``, ``std``, ``n_values``, ``n_examples``,
  ``n_examples_by_ref_count``, ``n_skipped``) plus ``skipped``, ``list``, ``estimates``,
  ``sample_rate`` and ``reference``.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import write_json, write_text
from .audio_io import BadInputError, read_audio
from .metrics.fuss import NUM_SLOTS, FussAccumulator, FussExample

SAMPLE_RATE = 16000
#: At least this many examples: a progress bar (unless told otherwise).
PROGRESS_FROM = 20
REFERENCE = ("google-research/sound-separation models/dcase2020_fuss_baseline/evaluate_lib.py "
             "(compute_metrics, evaluate)")


@dataclass(frozen=True)
class FussItem:
    """One line of a FUSS example list."""

    name: str  #: the mixture's file name without ``.wav``
    mixture: Path
    sources: tuple[Path, ...]
    line: int  #: 1-based line number in the list


def read_list(list_path) -> list[FussItem]:
    """The examples of a FUSS list (format in the module docstring); raises BadInputError on a bad line."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise BadInputError(f"{list_path}: FUSS example list does not exist. Pass the path of "
                            f"eval_example_list.txt (or another *_example_list.txt).", list_path)
    base = os.path.dirname(str(list_path))
    items: list[FussItem] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(list_path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split("\t")
        n_src = len(fields) - 1
        if not 1 <= n_src <= NUM_SLOTS:
            raise BadInputError(f"{list_path}:{i}: expected a mixture path and 1 to {NUM_SLOTS} source paths, "
                                f"separated by tabs, got {len(fields)} field(s): {line[:200]!r}", list_path)
        paths = [Path(os.path.join(base, f)) for f in fields]
        name = paths[0].name[:-4] if paths[0].name.lower().endswith(".wav") else paths[0].name
        if name in names:
            raise BadInputError(f"{list_path}:{i}: mixture name {name!r} already on line {names[name]}; the "
                                f"estimates folder <estimates>/{name}/ would be ambiguous", list_path)
        names[name] = i
        items.append(FussItem(name=name, mixture=paths[0], sources=tuple(paths[1:]), line=i))
    if not items:
        raise BadInputError(f"{list_path}: the list holds no examples", list_path)
    return items


def estimate_paths(estimates_dir, name: str) -> list[Path]:
    """``<estimates_dir>/<name>/est0.wav … est3.wav``; the folder must hold exactly these 4 files."""
    folder = Path(estimates_dir) / name
    if not folder.is_dir():
        raise BadInputError(f"{folder}: estimates folder does not exist. Write the {NUM_SLOTS} separated "
                            f"signals of example {name!r} as {folder}/est0.wav ... est{NUM_SLOTS - 1}.wav.", folder)
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    wanted = [f"est{k}.wav" for k in range(NUM_SLOTS)]
    if len(files) != NUM_SLOTS:
        raise BadInputError(f"{folder}: expected exactly {NUM_SLOTS} estimate files ({', '.join(wanted)}), "
                            f"found {len(files)}: {', '.join(files) or 'none'}", folder)
    missing = [w for w in wanted if w not in files]
    if missing:
        raise BadInputError(f"{folder / missing[0]}: estimate file does not exist (the folder holds "
                            f"{', '.join(files)}; name them {', '.join(wanted)})", folder / missing[0])
    return [folder / w for w in wanted]


def read_example(item: FussItem, estimates_dir, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """``(references [n, T], estimates [4, T])`` as float32, every file checked (see the module docstring)."""
    refs = [read_audio(p, sample_rate) for p in item.sources]
    est_files = estimate_paths(estimates_dir, item.name)
    ests = [read_audio(p, sample_rate) for p in est_files]
    t = refs[0].shape[0]
    for p, x in list(zip(item.sources, refs)) + list(zip(est_files, ests)):
        if x.shape[0] != t:
            raise BadInputError(f"{p}: {x.shape[0]} samples, but {item.sources[0]} (the first source of example "
                                f"{item.name!r}) has {t}; all signals of an example must have the same length", p)
    return np.stack(refs), np.stack(ests)


#: decimals of the dB values in ``fuss_examples.csv``: a value read back lies within half a unit of the last one
CSV_DECIMALS = 6


def _fmt(v: float) -> str:
    return f"{float(v):.{CSV_DECIMALS}f}"


def example_row(name: str, ex: FussExample | None) -> list:
    """The ``fuss_examples.csv`` row of one example (:func:`csv_header`'s columns); ``ex`` None: skipped."""
    if ex is None:
        return [name, "", "", "skipped"] + [""] * (6 * NUM_SLOTS)
    row = [name, ex.n_ref_active, ex.n_est_active, ex.separation]
    for k in range(NUM_SLOTS):
        row += [int(ex.ref_active[k]), int(ex.est_active[k]), ex.permutation[k], _fmt(ex.sisnr_separated[k]),
                _fmt(ex.sisnr_mixture[k]), _fmt(ex.sisnr_improvement[k])]
    return row


def csv_header() -> list[str]:
    head = ["example", "n_ref_active", "n_est_active", "separation"]
    for k in range(NUM_SLOTS):
        head += [f"ref_active_{k}", f"est_active_{k}", f"estimate_{k}", f"sisnr_{k}", f"sisnr_mixture_{k}",
                 f"sisnri_{k}"]
    return head


def read_examples(path) -> tuple[FussAccumulator, list]:
    """``(accumulator, rows)`` of a ``fuss_examples.csv`` read back (the inverse of :func:`example_row`).

    Each scored row becomes the :class:`~surfbench.metrics.fuss.FussExample` it was written from (per slot: activity,
    matched estimate, SI-SNR, SI-SNR of the mixture, SI-SNRi; its powers are not in the file and are NaN) and is pooled
    with :meth:`~surfbench.metrics.fuss.FussAccumulator.add_scored`, in file order, as the scoring pooled it; a
    ``skipped`` row goes to ``skipped``.  The dB values come back with the file's :data:`CSV_DECIMALS` decimals.
    Raises ValueError naming the line of a row that :func:`example_row` cannot have written: a wrong number of
    fields, a value that does not parse or is not finite, a permutation that is none, no active reference, counts or
    a separation that do not follow from the slots, or an SI-SNRi that is not SI-SNR minus the mixture's SI-SNR."""
    path = Path(path)
    head = csv_header()
    acc, rows = FussAccumulator(), []
    tol = 1.5 * 10.0 ** -CSV_DECIMALS  # three values, each rounded to half a unit
    with open(path, newline="") as f:
        reader = csv.reader(f)
        if next(reader, None) != head:
            raise ValueError(f"{path}: not a fuss_examples.csv (its first line is not the header {','.join(head[:6])},...)")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if len(row) != len(head):
                raise ValueError(f"{where}: {len(row)} fields, expected {len(head)}")
            name, separation = row[0], row[3]
            if separation == "skipped":
                if any(row[1:3]) or any(row[4:]):
                    raise ValueError(f"{where}: example {name!r} is skipped but has values")
                acc.skipped.append(name)
                rows.append(example_row(name, None))
                continue
            try:
                slots = [row[4 + 6 * k: 10 + 6 * k] for k in range(NUM_SLOTS)]
                flags = np.array([[int(s[0]), int(s[1])] for s in slots])
                perm = tuple(int(s[2]) for s in slots)
                sep, mix, imp = (np.array([float(s[i]) for s in slots]) for i in (3, 4, 5))
                counts = int(row[1]), int(row[2])
            except ValueError as e:
                raise ValueError(f"{where}: example {name!r}: {e}") from None
            if not np.isin(flags, (0, 1)).all() or sorted(perm) != list(range(NUM_SLOTS)):
                raise ValueError(f"{where}: example {name!r}: activity flags {flags.tolist()} / matched estimates "
                                 f"{list(perm)}: not 0/1 flags and a permutation of 0..{NUM_SLOTS - 1}")
            if not all(np.isfinite(v).all() for v in (sep, mix, imp)):
                raise ValueError(f"{where}: example {name!r}: a non-finite SI-SNR value")
            bad = np.abs(imp - (sep - mix)) > tol
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{where}: example {name!r}, slot {k}: sisnri {imp[k]!r} is not sisnr {sep[k]!r} minus "
                                 f"sisnr_mixture {mix[k]!r}")
            ref, est = flags[:, 0].astype(bool), flags[:, 1].astype(bool)
            nan = np.full(NUM_SLOTS, np.nan)
            ex = FussExample(permutation=perm, sisnr_separated=sep, sisnr_mixture=mix, sisnr_improvement=imp,
                             power_separated=nan, power_sources=nan, ref_active=ref, est_active=est,
                             pair_active=ref & est)
            if ex.n_ref_active == 0:
                raise ValueError(f"{where}: example {name!r} is scored but has no active reference")
            if counts != (ex.n_ref_active, ex.n_est_active) or separation != ex.separation:
                raise ValueError(f"{where}: example {name!r}: n_ref_active, n_est_active, separation {counts[0]}, "
                                 f"{counts[1]}, {separation!r}, but its slots give {ex.n_ref_active}, {ex.n_est_active}, "
                                 f"{ex.separation!r}")
            acc.add_scored(ex)
            rows.append(example_row(name, ex))
    return acc, rows


def score_fuss(list_path, estimates_dir, out_dir, sample_rate: int = SAMPLE_RATE,
               progress: bool | None = None) -> dict:
    """Score every example of ``list_path``; write ``fuss_examples.csv`` and ``fuss_summary.json`` into
    ``out_dir``; return the summary.  ``progress=None``: a bar from :data:`PROGRESS_FROM` examples on."""
    items = read_list(list_path)
    if not Path(estimates_dir).is_dir():
        raise BadInputError(f"{estimates_dir}: estimates folder does not exist", estimates_dir)
    if progress is None:
        progress = len(items) >= PROGRESS_FROM
    acc = FussAccumulator()
    rows = []
    for item in tqdm(items, disable=not progress, desc="score-fuss", unit="ex", dynamic_ncols=True):
        refs, ests = read_example(item, estimates_dir, sample_rate)
        rows.append(example_row(item.name, acc.add(refs, ests, name=item.name)))
    return write_outputs(out_dir, acc, rows, list=str(list_path), estimates=str(estimates_dir), sample_rate=sample_rate)


def write_outputs(out_dir, acc: FussAccumulator, rows: list, **about) -> dict:
    """Write ``fuss_examples.csv`` (``rows``, :func:`example_row`) and ``fuss_summary.json`` (``acc``'s summary,
    the skipped examples, ``about`` and the reference followed) into ``out_dir``; return the summary."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_header())
    w.writerows(rows)
    out = Path(out_dir)
    write_text(out / "fuss_examples.csv", buf.getvalue())
    summary = acc.summary()
    summary.update(skipped=list(acc.skipped), **about, reference=REFERENCE)
    write_json(out / "fuss_summary.json", summary, indent=2)
    return summary


def format_summary(s: dict) -> list[str]:
    """The reference's final statistics lines (``evaluate_lib.evaluate``), from a summary."""
    def stat(g: str, label: str) -> str:
        if s[g] is None:
            return f"{label} ({g}) = n/a (no active pairs)"
        return f"{label} ({g}) = {s[g]:.1f} +/- {s['std'][g]:.1f} dB over {s['n_values'][g]} sources"
    lines = [stat("1S", "SI-SNR"), stat("2Si", "SI-SNRi"), stat("3Si", "SI-SNRi"), stat("4Si", "SI-SNRi"),
             stat("MSi", "SI-SNRi")]
    for k in ("under", "equal", "over"):
        lines.append(f"{k.capitalize()} separation: " + ("n/a" if s[k] is None else f"{s[k]:.2f}"))
    lines.append(f"{s['n_examples']} examples scored, {s['n_skipped']} skipped (silent references)")
    return lines


def cmd_score_fuss(args) -> int:
    s = score_fuss(args.list, args.estimates, args.out, sample_rate=args.sample_rate,
                   progress=False if args.no_progress else None)
    for line in format_summary(s):
        print(line)
    print(Path(args.out) / "fuss_examples.csv")
    print(Path(args.out) / "fuss_summary.json")
    return 0

"""Speech metrics of the Libri2Mix track (paper Section 5, Table 4): SI-SDR, SI-SDRi, ESTOI, PESQ-WB, DNSMOS OVRL.

Per-item pure functions plus :func:`evaluate_speech`, which aligns estimates to
references by the best permutation on SI-SDR and runs the CPU-bound metrics
(PESQ, ESTOI, DNSMOS) across worker processes.

Conventions and choices (each stated where it is implemented):

* **SI-SDR** (Le Roux et al. 2019, "SDR - half-baked or well done?"), zero-mean
  by default: ``α = <ŝ, s>/‖s‖²``, ``SI-SDR = 10·log10(‖α s‖² / ‖α s − ŝ‖²)``,
  computed in float64 with the ``eps`` convention of torchmetrics
  (``eps = finfo(input dtype).eps`` added to the numerator and denominator of
  ``α`` and of the ratio) so the two agree to ~1e-4 dB.
* **ESTOI**: ``pystoi.stoi(ref, est, sr, extended=True)`` (pystoi resamples to
  10 kHz and removes silent frames internally).
* **PESQ**: ITU-T P.862.2 wide band via the ``pesq`` package, 16 kHz only.
  When PESQ cannot score a pair (e.g. a silent reference: ``NoUtterancesError``),
  :func:`pesq_wb` **raises** :class:`PesqFailure` naming the reason; a per-item
  function that silently returns NaN would hide bugs.  :func:`evaluate_speech`
  catches it per item, stores NaN for that item and emits one warning listing
  the failed items and reasons (``strict=True`` re-raises instead), so one
  silent reference cannot abort a whole evaluation.
* **DNSMOS P.835 OVRL** by ``speechmos``'s scorer (its ``DNSMOS`` class: the
  features, windows and polynomial fit of ``dnsmos.run(x, 16000)['ovrl_mos']``),
  non-intrusive (no reference), on ONNX Runtime sessions this module opens from
  the models speechmos ships, with a set thread count: 1 per worker process, so
  that the pool scales (speechmos's own sessions take every core); the torch
  thread count when run inline.  ORT's sums depend on the thread count in the
  last bits (OVRL moves by up to ~2e-7; the same count gives the same numbers
  every run).  speechmos refuses samples outside [-1, 1].
  DNSMOS is level-dependent, so inputs are **not** normalised in general: a clip
  whose peak exceeds 1 is scaled by ``1/peak`` (to peak exactly 1), every other
  clip is passed unchanged.  Clips shorter than 9.01 s are tiled by speechmos
  itself (as in Microsoft's reference script): doubled until at least 9.01 s
  long, then scored in every 9.01-s window at a 1-s hop and averaged.  The cost
  therefore jumps with the clip length: a 2.0-s clip becomes 16 s and 7 model
  runs, a 2.3-s clip 9.2 s and one run (the tiny profile's ``clip_seconds``).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import warnings
from typing import Iterable

import numpy as np
import torch

from surfbench.metrics.base import MetricInfo, register_metric
from surfbench.pit import best_permutation, inverse_permutation, permute

SI_SDR = register_metric(MetricInfo("si_sdr", "SI-SDR", True, "item", "dB"))
SI_SDR_I = register_metric(MetricInfo("si_sdr_i", "SI-SDRi", True, "item", "dB"))
ESTOI = register_metric(MetricInfo("estoi", "ESTOI", True, "item", ""))
PESQ_WB = register_metric(MetricInfo("pesq_wb", "PESQ", True, "item", ""))
DNSMOS_OVRL = register_metric(MetricInfo("dnsmos_ovrl", "DNSMOS OVRL", True, "item", ""))

#: Metrics :func:`evaluate_speech` computes by default, in table order.
SPEECH_METRICS = ("si_sdr", "si_sdr_i", "estoi", "pesq_wb", "dnsmos_ovrl")
#: The CPU-bound ones, run per item in worker processes.
CPU_METRICS = ("estoi", "pesq_wb", "dnsmos_ovrl")


class PesqFailure(ValueError):
    """PESQ could not score this pair (reason in the message)."""


# ----------------------------------------------------------------------------- SI-SDR

def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def si_sdr(est, ref, zero_mean: bool = True) -> torch.Tensor:
    """Scale-invariant SDR in dB over the last axis; ``est``, ``ref``: ``[..., T]`` (torch or numpy).

    Returns a tensor of shape ``[...]`` in the input's floating dtype (float32 for
    integer input); computed in float64.
    """
    e, r = _as_tensor(est), _as_tensor(ref)
    if e.shape != r.shape:
        raise ValueError(f"si_sdr: shapes differ: est {tuple(e.shape)} vs ref {tuple(r.shape)}")
    out_dtype = e.dtype if e.is_floating_point() else torch.float32
    eps = torch.finfo(out_dtype).eps
    e, r = e.double(), r.double()
    if zero_mean:
        e = e - e.mean(-1, keepdim=True)
        r = r - r.mean(-1, keepdim=True)
    alpha = ((e * r).sum(-1, keepdim=True) + eps) / (r.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * r
    noise = target - e
    val = (target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return (10 * torch.log10(val)).to(out_dtype)


def si_sdr_improvement(est, ref, mix, zero_mean: bool = True) -> torch.Tensor:
    """``si_sdr(est, ref) − si_sdr(mix, ref)``; ``est``, ``ref``: ``[B, K, T]`` (or ``[N, T]``), ``mix``: ``[B, T]``
    (broadcast over the source axis) or the same shape as ``ref``."""
    e, r, m = _as_tensor(est), _as_tensor(ref), _as_tensor(mix)
    if m.shape != r.shape:
        m = m.unsqueeze(-2).expand_as(r)
    return si_sdr(e, r, zero_mean) - si_sdr(m.to(e.dtype), r, zero_mean)


def pairwise_neg_si_sdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``cost[b, i, j] = −SI-SDR(est[b, i], ref[b, j])``, shape ``[B, K, K]`` (for :func:`surfbench.pit.best_permutation`)."""
    e, r = _as_tensor(est), _as_tensor(ref)
    k = e.shape[1]
    return -si_sdr(e.unsqueeze(2).expand(-1, -1, k, -1), r.unsqueeze(1).expand(-1, k, -1, -1))


def align_to_reference(est, ref) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder estimate slots to the reference order by the best SI-SDR permutation.

    Returns ``(est_aligned, perm)`` with ``est_aligned[b, j]`` the estimate paired
    with ``ref[b, j]``; ``perm`` is :func:`surfbench.pit.best_permutation`'s
    (``perm[b, i] = j``: estimate slot ``i`` ↔ reference slot ``j``).
    """
    e, r = _as_tensor(est), _as_tensor(ref)
    with torch.no_grad():
        perm = best_permutation(pairwise_neg_si_sdr(e, r))
    return permute(e, inverse_permutation(perm)), perm


# ----------------------------------------------------------------------------- CPU metrics (per item, numpy)

def _as_1d(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D signal [T], got shape {a.shape}")
    return a


def estoi(est, ref, sr: int) -> float:
    """Extended STOI (Jensen & Taal 2016) via ``pystoi.stoi(ref, est, sr, extended=True)``."""
    from pystoi import stoi

    e, r = _as_1d(est, "estoi(est)"), _as_1d(ref, "estoi(ref)")
    if e.shape != r.shape:
        raise ValueError(f"estoi: lengths differ: est {e.shape[0]} vs ref {r.shape[0]}")
    return float(stoi(r, e, int(sr), extended=True))


def pesq_wb(est, ref, sr: int = 16000) -> float:
    """Wide-band PESQ (P.862.2) via ``pesq.pesq(sr, ref, est, 'wb')``; raises :class:`PesqFailure` when unscorable."""
    import pesq as _pesq

    if int(sr) != 16000:
        raise ValueError(f"pesq_wb: wide-band PESQ needs 16 kHz audio, got sr={sr}; resample first")
    e, r = _as_1d(est, "pesq_wb(est)"), _as_1d(ref, "pesq_wb(ref)")
    if e.shape != r.shape:
        raise ValueError(f"pesq_wb: lengths differ: est {e.shape[0]} vs ref {r.shape[0]}")
    if not (np.isfinite(e).all() and np.isfinite(r).all()):
        raise PesqFailure("pesq_wb: NaN/Inf in the input")
    if not e.any():  # the library would raise a bare ValueError ("cannot convert float NaN to integer")
        raise PesqFailure("pesq_wb: the estimate is all zeros (silent): PESQ is undefined")
    try:
        return float(_pesq.pesq(16000, r, e, "wb"))
    except _pesq.NoUtterancesError as err:
        raise PesqFailure(f"pesq_wb: no utterances detected (silent or near-silent reference/estimate): {err}") from err
    except (_pesq.PesqError, ValueError) as err:  # ValueError: the library's level arithmetic on near-silence
        raise PesqFailure(f"pesq_wb: {type(err).__name__}: {err}") from err


def dnsmos_input(x) -> tuple[np.ndarray, float]:
    """The clip DNSMOS is given, and the scale applied: ``x / peak`` if ``peak = max|x| > 1``, else ``x`` (scale 1).

    Minimal rescaling on purpose: DNSMOS P.835 depends on level, so clips that
    are already within [-1, 1] are scored as they are.
    """
    a = _as_1d(x, "dnsmos_ovrl(x)").astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("dnsmos_ovrl: NaN/Inf in the input")
    peak = float(np.abs(a).max()) if a.size else 0.0
    if peak > 1.0:
        a = (a.astype(np.float64) / peak).astype(np.float32)
        a = np.clip(a, -1.0, 1.0)  # guards float rounding only; the max element is exactly ±1 already
        return a, 1.0 / peak
    return a, 1.0


#: This process's DNSMOS scorers by ONNX Runtime intra-op thread count (see :func:`_dnsmos_model`).
_DNSMOS_MODELS: dict = {}


def _dnsmos_model(threads: int):
    """speechmos's ``DNSMOS`` scorer on ONNX Runtime sessions of ``threads`` intra-op threads (built once per count).

    The object is speechmos's own class, so its ``__call__`` (tiling to 9.01 s, 1-s hop windows,
    P.808 mel features, polynomial fit, mean OVRL) scores the clip exactly as ``dnsmos.run`` does;
    only the sessions are ours.  They replace speechmos's ``DNSMOS.__init__``
    (speechmos/dnsmos.py lines 17-20: ``InferenceSession(path)`` with default options) for the
    models ``dnsmos.run`` picks for ``model_type="dnsmos"`` (lines 106-107, 114-115).
    """
    model = _DNSMOS_MODELS.get(threads)
    if model is None:
        import onnxruntime as ort
        from speechmos import dnsmos

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1  # only the parallel execution mode uses it; sessions run sequentially
        cpu = ["CPUExecutionProvider"]  # what speechmos's sessions (no providers given) run on too
        folder = os.path.join(os.path.dirname(os.path.abspath(dnsmos.__file__)), "dnsmos_models")
        model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)
        model.primary_model_path = os.path.join(folder, "sig_bak_ovr.onnx")
        model.onnx_sess = ort.InferenceSession(model.primary_model_path, sess_options=opts, providers=cpu)
        model.p808_onnx_sess = ort.InferenceSession(os.path.join(folder, "model_v8.onnx"), sess_options=opts,
                                                    providers=cpu)
        _DNSMOS_MODELS[threads] = model
    return model


def dnsmos_ovrl(est, sr: int = 16000, threads: int | None = None) -> float:
    """DNSMOS P.835 overall MOS as ``speechmos.dnsmos.run(x, 16000)['ovrl_mos']``; peaks above 1 handled by
    :func:`dnsmos_input`.

    ``threads``: ONNX Runtime intra-op threads; default (the inline choice) this process's torch
    thread count, the job's thread budget.  Worker processes of :func:`evaluate_speech` use 1.
    """
    if int(sr) != 16000:
        raise ValueError(f"dnsmos_ovrl: DNSMOS needs 16 kHz audio, got sr={sr}; resample first")
    n = torch.get_num_threads() if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"dnsmos_ovrl: threads must be >= 1, got {threads}")
    a, _ = dnsmos_input(est)
    return float(_dnsmos_model(n)(a, 16000, False)["ovrl_mos"])  # False: not the personalised DNSMOS


# ----------------------------------------------------------------------------- batch evaluation

def _cpu_chunk(args) -> dict:
    """Worker task: CPU metrics for a list of items ``(index, est, ref)``; DNSMOS on ``threads`` ORT threads."""
    items, sr, names, threads = args
    out: dict = {n: [] for n in names}
    errors: list = []
    for idx, e, r in items:
        if "estoi" in names:
            out["estoi"].append(estoi(e, r, sr))
        if "pesq_wb" in names:
            try:
                out["pesq_wb"].append(pesq_wb(e, r, sr))
            except PesqFailure as err:
                out["pesq_wb"].append(float("nan"))
                errors.append((idx, str(err)))
        if "dnsmos_ovrl" in names:
            out["dnsmos_ovrl"].append(dnsmos_ovrl(e, sr, threads))
    return {"values": out, "pesq_errors": errors}


#: Objects inherited through fork that must never be freed in a worker (see :func:`_worker_init`).
_INHERITED_KEEPALIVE: list = []


def _worker_init() -> None:
    # A forked worker must not use the parent's onnxruntime sessions (their thread
    # pools do not survive fork), and must not free them either (destroying an
    # inherited thread pool blocks forever or kills the worker; the latter seen
    # as BrokenProcessPool with a 3-thread session): keep references, and let
    # _dnsmos_model build fresh sessions in this process.
    _INHERITED_KEEPALIVE.extend(_DNSMOS_MODELS.values())
    _DNSMOS_MODELS.clear()


def default_workers() -> int:
    """One worker per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def evaluate_speech(est, ref, mix, sr: int = 16000, workers: int | None = None,
                    metrics: Iterable[str] | None = None, strict: bool = False,
                    failures: dict | None = None) -> dict[str, np.ndarray]:
    """Per-source speech metrics of a batch.

    ``est``, ``ref``: ``[B, K, T]``; ``mix``: ``[B, T]``; or lists of ``B`` items ``[K, T_b]`` and
    ``[T_b]`` whose lengths differ (whole utterances; each is scored as long as it is).  Estimates are first
    aligned to the references by the best permutation of SI-SDR
    (:func:`align_to_reference`); every returned array is ``[B*K]`` float64 in
    reference order (item ``b*K + j`` = reference ``j`` of mixture ``b``).
    ``metrics``: subset of :data:`SPEECH_METRICS` (default: all).  ``workers``:
    processes for ESTOI/PESQ/DNSMOS (default: one per core; 1 runs inline);
    results do not depend on it (bit-exact, except ESTOI, whose numpy sums vary
    in the last bit with memory alignment even within one process, and DNSMOS
    when torch runs on more than one thread: inline DNSMOS uses that many ONNX
    Runtime threads, a worker 1, and OVRL moves by up to ~2e-7).  PESQ failures become NaN with a warning
    (``strict=True`` raises instead); ``failures``, when given, receives ``{metric: {item: why}}``.
    """
    names = tuple(SPEECH_METRICS if metrics is None else metrics)
    unknown = [n for n in names if n not in SPEECH_METRICS]
    if unknown:
        raise KeyError(f"evaluate_speech: unknown metrics {unknown}; known: {SPEECH_METRICS}")
    if isinstance(est, (list, tuple)):  # items of different lengths: each one a batch of one
        if not len(est) == len(ref) == len(mix):
            raise ValueError(f"evaluate_speech: {len(est)} estimates, {len(ref)} references, {len(mix)} mixtures")
        batches = [(_as_tensor(e)[None], _as_tensor(r)[None], _as_tensor(m)[None]) for e, r, m in zip(est, ref, mix)]
    else:
        batches = [(_as_tensor(est), _as_tensor(ref), _as_tensor(mix))]
    out: dict[str, np.ndarray] = {}
    rows: list[tuple[np.ndarray, np.ndarray]] = []  # (aligned estimate, reference) of every source, item order
    parts: dict[str, list] = {"si_sdr": [], "si_sdr_i": []}
    for e, r, m in batches:
        if e.dim() != 3 or e.shape != r.shape or m.shape != (r.shape[0], r.shape[2]):
            raise ValueError(f"evaluate_speech: expected est, ref [B, K, T] and mix [B, T]; got {tuple(e.shape)}, "
                             f"{tuple(r.shape)}, {tuple(m.shape)}")
        e, r, m = (v.detach().cpu().float() for v in (e, r, m))
        e_al, _ = align_to_reference(e, r)
        if "si_sdr" in names:
            parts["si_sdr"].append(si_sdr(e_al, r).reshape(-1).double().numpy())
        if "si_sdr_i" in names:
            parts["si_sdr_i"].append(si_sdr_improvement(e_al, r, m).reshape(-1).double().numpy())
        rows += list(zip(e_al.flatten(0, 1).numpy(), r.flatten(0, 1).numpy()))
    out.update({n: np.concatenate(v) for n, v in parts.items() if v})
    k = batches[0][1].shape[1]
    cpu = tuple(n for n in CPU_METRICS if n in names)
    if cpu:
        items = [(i, en, rn) for i, (en, rn) in enumerate(rows)]
        n_workers = default_workers() if workers is None else int(workers)
        if n_workers < 1:
            raise ValueError(f"evaluate_speech: workers must be >= 1, got {workers}")
        n_workers = min(n_workers, len(items))
        if n_workers == 1:
            results = [_cpu_chunk((items, sr, cpu, None))]  # DNSMOS on the torch thread count
        else:
            # Small chunks keep both workers busy to the end; order is restored below.
            size = max(1, len(items) // (n_workers * 4))
            chunks = [items[i:i + size] for i in range(0, len(items), size)]
            if "dnsmos_ovrl" in cpu:
                _warm_librosa()  # compile librosa's numba kernels once here; forked workers inherit them
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_worker_init) as ex:
                # one ORT thread per worker: n_workers processes share the cores, none spreads over them all
                results = list(ex.map(_cpu_chunk, [(c, sr, cpu, 1) for c in chunks]))
        errors = [err for res in results for err in res["pesq_errors"]]
        if failures is not None and errors:
            failures["pesq_wb"] = {int(i): f"mixture {i // k}, source {i % k}: {why}" for i, why in errors}
        for n in cpu:
            out[n] = np.asarray([v for res in results for v in res["values"][n]], dtype=np.float64)
        if errors:
            msg = "; ".join(f"item {i} (mixture {i // k}, source {i % k}): {why}" for i, why in errors)
            if strict:
                raise PesqFailure(f"evaluate_speech: PESQ failed for {len(errors)} item(s): {msg}")
            warnings.warn(f"evaluate_speech: PESQ failed for {len(errors)} item(s), recorded as NaN: {msg}",
                          RuntimeWarning, stacklevel=2)
    return {n: out[n] for n in names}


_LIBROSA_WARM = False


def _warm_librosa() -> None:
    """Run the librosa feature path DNSMOS uses once on a tiny signal (numba compilation happens here)."""
    global _LIBROSA_WARM
    if _LIBROSA_WARM:
        return
    try:
        import librosa

        y = np.zeros(16000, np.float32)
        y[::100] = 0.1
        s = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=321, hop_length=160, n_mels=120)
        librosa.power_to_db(s, ref=np.max)
    except Exception:  # warming is an optimisation only
        pass
    _LIBROSA_WARM = True


__all__ = [
    "SI_SDR", "SI_SDR_I", "ESTOI", "PESQ_WB", "DNSMOS_OVRL", "SPEECH_METRICS", "CPU_METRICS", "PesqFailure",
    "si_sdr", "si_sdr_improvement", "pairwise_neg_si_sdr", "align_to_reference", "estoi", "pesq_wb",
    "dnsmos_input", "dnsmos_ovrl", "evaluate_speech", "default_workers",
]

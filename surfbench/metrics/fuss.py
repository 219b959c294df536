"""FUSS (DCASE 2020 task 4) separation metrics, computed the way Google's reference computes them.

The reference is google-research/sound-separation, ``models/dcase2020_fuss_baseline``:
``evaluate_lib.py`` (``compute_metrics``, ``_weights_for_nonzero_refs``,
``_weights_for_active_seps``, ``evaluate``, ``_report_score_stats``), ``train/metrics.py``
(``signal_to_noise_ratio_gain_invariant``, ``calculate_signal_to_noise_ratio_from_power``),
``train/permutation_invariant.py`` (``wrap``, ``_apply``, ``_resolve_permutation``) and
``train/data_io.py`` (``read_lines_from_file``, ``wavs_to_dataset``).  This module is an
independent numpy re-implementation of what those functions compute (nothing is copied);
each function below names the reference function it follows.

Per example (:func:`score_example`, after ``evaluate_lib.compute_metrics``):

1. The references are zero-padded to :data:`NUM_SLOTS` = 4 slots.  (``data_io.wavs_to_dataset``
   pads every line of the list to the *largest number of sources in the list*, which is 4 for
   the FUSS lists; a FUSS model always outputs 4 signals, so 4 it is here.)
2. The mixture used for the SI-SNR improvements is the **sum of the (padded) references**
   (``data_io.wavs_to_dataset``'s ``combine_mixture_and_sources``; ``evaluate.py`` reads the
   list with ``skip_fields=1``, so the mixture file named first on each line is never read).
3. The 4 estimates are aligned to the 4 slots by an exhaustive search over the 4! = 24
   permutations, minimising the sum over all 4 slots of −SI-SNR (``permutation_invariant.wrap``
   around ``-signal_to_noise_ratio_gain_invariant(est, tar)``).  A padded (all-zero) reference
   scores −80 dB against every estimate, so the padded slots add a constant and only the active
   references decide the match.  Ties go to the first permutation in ``itertools.permutations``
   order (``tf.argmin``).
4. SI-SNR is :func:`si_snr` (``signal_to_noise_ratio_gain_invariant``): no mean removal; both
   signals normalised to unit energy (energy floored at 1e-16), ρ = cosine similarity,
   signal power ρ², noise power 1 − ρ², replaced by the directly computed
   ``‖ê − ρ t̂‖²`` when 1 − ρ² < 0.01; then ``10·log10((ρ² + 1e-8) / (noise + 1e-8))``.
   There is no explicit clip: the 1e-8 epsilons make it saturate at ±80 dB (a silent estimate
   scores −80 dB, a scaled copy +80 dB).
5. A reference is active when its RMS exceeds 1e-8 (``_weights_for_nonzero_refs``); an
   estimate (after alignment, in any of the 4 slots, padded ones included) is active when its
   power (mean square) exceeds 0.01 × the power of the quietest *active* reference
   (``_weights_for_active_seps``, "quietest source power − 20 dB").  A pair is active when
   both are.
6. Under / Equal / Over separation: number of active estimates <, =, > number of active
   references.

Over a set (:class:`FussAccumulator`, after ``evaluate_lib.evaluate``): the SI-SNR (for
examples with one active reference) and SI-SNRi (examples with 2, 3, 4) of the **active pairs
only** are pooled per number of active references; the reported figures are the mean (and the
population std, ``np.std``) of the pooled values: ``1S`` (absolute SI-SNR, 1 source), ``2Si``,
``3Si``, ``4Si`` and ``MSi`` (SI-SNRi pooled over 2, 3 and 4 sources: every pair counts once,
not a mean of means); under/equal/over are fractions of the examples scored.

Where this differs from the reference, on purpose:

* Examples whose references are all (close to) zero are skipped with a warning, as
  ``evaluate`` does (``np.allclose(source_waveforms, 0)``).  An example whose references are
  not all within 1e-8 of zero yet none has RMS > 1e-8 has no active reference: the reference
  then fails (``sisnr_per_source_count[0]``, a KeyError); here it is skipped too and counted.
* The reference computes in float32 (TensorFlow); here the default is float64 (``dtype=``
  selects float32).  The two agree to well below the 0.1 dB the reference prints.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

#: Slots the references are padded to and estimates a FUSS model outputs.
NUM_SLOTS = 4
#: ``calculate_signal_to_noise_ratio_from_power``'s epsilon (as passed by ``signal_to_noise_ratio_gain_invariant``).
SNR_EPS = 1e-8
#: Floor on the energy when normalising (``normalize`` inside ``signal_to_noise_ratio_gain_invariant``).
ENERGY_FLOOR = 1e-16
#: Below this 1 − ρ², the noise power is computed directly (``signal_to_noise_ratio_gain_invariant``).
DIRECT_NOISE_BELOW = 0.01
#: A reference is active when its RMS exceeds this (``_weights_for_nonzero_refs``).
REF_RMS_THRESHOLD = 1e-8
#: An estimate is active when its power exceeds this × the quietest active reference's (``_weights_for_active_seps``).
EST_POWER_RATIO = 0.01
#: The reported groups, in the reference's order (``evaluate``'s final statistics).
GROUPS = ("1S", "2Si", "3Si", "4Si", "MSi")
#: Which numbers of active references each group pools.
GROUP_COUNTS = {"1S": (1,), "2Si": (2,), "3Si": (3,), "4Si": (4,), "MSi": (2, 3, 4)}


def snr_from_power(signal_power, noise_power, eps: float = SNR_EPS) -> np.ndarray:
    """``10·log10((signal_power + eps) / (noise_power + eps))``.

    After ``train/metrics.py:calculate_signal_to_noise_ratio_from_power``.
    """
    signal_power = np.asarray(signal_power)
    noise_power = np.asarray(noise_power)
    return 10.0 * np.log10((signal_power + eps) / (noise_power + eps))


def _normalize(x: np.ndarray) -> np.ndarray:
    energy = np.sum(np.square(x), axis=-1, keepdims=True)
    return x * (1.0 / np.sqrt(np.maximum(energy, ENERGY_FLOOR)))


def si_snr(estimate, target, eps: float = SNR_EPS, dtype=np.float64) -> np.ndarray:
    """Robust scale-invariant SNR in dB over the last axis (broadcasting over the others).

    After ``train/metrics.py:signal_to_noise_ratio_gain_invariant(estimate, target)``: no mean
    removal; ``ê = e/‖e‖``, ``t̂ = t/‖t‖`` (energies floored at 1e-16, so a silent signal
    normalises to zeros); ``ρ = <ê, t̂>``; signal power ``ρ²``; noise power ``1 − ρ²``, or
    ``‖ê − ρ t̂‖²`` computed directly when ``1 − ρ² < 0.01`` (the difference of two close numbers
    is inaccurate there); result :func:`snr_from_power` with ``eps`` (1e-8).  Saturates near
    ±80 dB: a silent estimate (or target) gives ``10·log10(1e-8 / (1 + 1e-8))`` ≈ −80 dB, a
    scaled copy (any non-zero gain, either sign) ``10·log10((1 + 1e-8) / 1e-8)`` ≈ +80 dB.
    """
    e = _normalize(np.asarray(estimate, dtype=dtype))
    t = _normalize(np.asarray(target, dtype=dtype))
    e, t = np.broadcast_arrays(e, t)
    cos = np.sum(e * t, axis=-1)
    signal = np.square(cos)
    noise = 1.0 - signal
    low = noise < DIRECT_NOISE_BELOW
    if np.any(low):
        direct = np.sum(np.square(e - t * cos[..., None]), axis=-1)
        noise = np.where(low, direct, noise)
    return snr_from_power(signal, noise, eps)


def pad_references(references, num_slots: int = NUM_SLOTS) -> np.ndarray:
    """``[n, T]`` references zero-padded to ``[num_slots, T]`` (``data_io.wavs_to_dataset``'s ``'0'`` entries)."""
    refs = np.asarray(references)
    if refs.ndim != 2:
        raise ValueError(f"references must be [sources, samples], got shape {refs.shape}")
    n = refs.shape[0]
    if not 1 <= n <= num_slots:
        raise ValueError(f"an example has {n} references; FUSS has 1 to {num_slots}")
    if n == num_slots:
        return refs
    return np.concatenate([refs, np.zeros((num_slots - n, refs.shape[1]), dtype=refs.dtype)], axis=0)


def pair_si_snr(references, estimates, dtype=np.float64) -> np.ndarray:
    """``M[i, j]`` = SI-SNR of estimate ``j`` against reference ``i`` (the reference's loss matrix, negated).

    ``permutation_invariant._apply`` tiles the estimates ``[e0..e3, e0..e3, ...]`` and the references
    ``[r0, r0, r0, r0, r1, ...]``, so its reshaped loss matrix has the reference on axis 1 and the
    estimate on axis 2 (its docstring says the opposite; the code is what counts, and is consistent).
    """
    refs = np.asarray(references)
    ests = np.asarray(estimates)
    return si_snr(ests[None, :, :], refs[:, None, :], dtype=dtype)


def best_permutation(references, estimates, dtype=np.float64) -> tuple[int, ...]:
    """``perm`` such that ``estimates[perm[i]]`` is matched to ``references[i]``.

    After ``permutation_invariant._resolve_permutation``: all ``S!`` permutations in
    ``itertools.permutations`` order, total loss ``Σ_i −SI-SNR(est[perm[i]], ref[i])`` over all
    slots (padded ones included), the first minimum wins.
    """
    m = pair_si_snr(references, estimates, dtype=dtype)
    s = m.shape[0]
    if m.shape != (s, s):
        raise ValueError(f"need as many estimates as reference slots, got {np.shape(estimates)[0]} and {s}")
    perms = np.array(list(itertools.permutations(range(s))))
    loss = -m[np.arange(s)[None, :], perms].sum(axis=1)  # [S!]
    return tuple(int(k) for k in perms[int(np.argmin(loss))])


def active_references(references) -> np.ndarray:
    """RMS > 1e-8 per slot (``evaluate_lib._weights_for_nonzero_refs``)."""
    refs = np.asarray(references, dtype=np.float64)
    return np.sqrt(np.mean(np.square(refs), axis=-1)) > REF_RMS_THRESHOLD


def active_estimates(power_estimates, power_active_references) -> np.ndarray:
    """Power > 0.01 × the quietest active reference's power (``evaluate_lib._weights_for_active_seps``).

    With no active reference, ``tf.reduce_min`` of nothing is +inf and no estimate is active.
    """
    p_ref = np.asarray(power_active_references, dtype=np.float64)
    min_power = p_ref.min() if p_ref.size else np.inf
    return np.asarray(power_estimates) > EST_POWER_RATIO * min_power


@dataclass
class FussExample:
    """What :func:`score_example` finds for one example (arrays are per slot, after alignment)."""

    permutation: tuple[int, ...]  #: slot i is matched to estimate ``permutation[i]``
    sisnr_separated: np.ndarray  #: SI-SNR(aligned estimate, reference), dB
    sisnr_mixture: np.ndarray  #: SI-SNR(sum of references, reference), dB
    sisnr_improvement: np.ndarray  #: the difference, dB
    power_separated: np.ndarray
    power_sources: np.ndarray
    ref_active: np.ndarray
    est_active: np.ndarray
    pair_active: np.ndarray

    @property
    def n_ref_active(self) -> int:
        return int(self.ref_active.sum())

    @property
    def n_est_active(self) -> int:
        return int(self.est_active.sum())

    @property
    def separation(self) -> str:
        """``"under"``, ``"equal"`` or ``"over"`` (active estimates vs active references)."""
        n_e, n_r = self.n_est_active, self.n_ref_active
        return "under" if n_e < n_r else ("equal" if n_e == n_r else "over")

    def pooled_values(self) -> np.ndarray:
        """The values ``evaluate`` pools for this example: SI-SNR of the active pairs when one reference
        is active, SI-SNRi of the active pairs otherwise."""
        v = self.sisnr_separated if self.n_ref_active == 1 else self.sisnr_improvement
        return v[self.pair_active]


def is_silent(references) -> bool:
    """All references within 1e-8 of zero: ``evaluate`` skips such an example (``np.allclose(sources, 0)``)."""
    return bool(np.allclose(np.asarray(references), 0))


def score_example(references, estimates, dtype=np.float64) -> FussExample:
    """Score one example: ``references`` ``[n ≤ 4, T]`` (padded here), ``estimates`` ``[4, T]``.

    After ``evaluate_lib.compute_metrics`` with ``mixture_waveform`` = the sum of the references
    (as ``evaluate`` passes it; see the module docstring).
    """
    refs = pad_references(np.asarray(references, dtype=dtype))
    ests = np.asarray(estimates, dtype=dtype)
    if ests.shape != refs.shape:
        raise ValueError(f"estimates must be [{NUM_SLOTS}, {refs.shape[1]}] like the padded references, "
                         f"got {ests.shape}")
    mixture = refs.sum(axis=0)
    perm = best_permutation(refs, ests, dtype=dtype)
    aligned = ests[list(perm)]
    power_sep = np.mean(np.square(aligned), axis=-1)
    power_src = np.mean(np.square(refs), axis=-1)
    ref_active = active_references(refs)
    est_active = active_estimates(power_sep, power_src[ref_active])
    sep = si_snr(aligned, refs, dtype=dtype)
    mix = si_snr(np.broadcast_to(mixture, refs.shape), refs, dtype=dtype)
    return FussExample(permutation=perm, sisnr_separated=sep, sisnr_mixture=mix, sisnr_improvement=sep - mix,
                       power_separated=power_sep, power_sources=power_src, ref_active=ref_active,
                       est_active=est_active, pair_active=ref_active & est_active)


def _stat(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not len(values):
        return None, None
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std())


@dataclass
class FussAccumulator:
    """Pools examples as ``evaluate_lib.evaluate`` does and summarises them (:meth:`summary`)."""

    values: dict = field(default_factory=lambda: {c: [] for c in range(1, NUM_SLOTS + 1)})
    separations: list = field(default_factory=list)
    ref_counts: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def add(self, references, estimates, name: str = "", dtype=np.float64) -> FussExample | None:
        """Score and pool one example; ``None`` (and a warning) when it is skipped (see the module docstring)."""
        refs = np.asarray(references)
        if is_silent(refs):
            warnings.warn(f"FUSS example {name!r}: all references are zero; skipped (as the reference does)")
            self.skipped.append(name)
            return None
        ex = score_example(refs, estimates, dtype=dtype)
        if ex.n_ref_active == 0:
            warnings.warn(f"FUSS example {name!r}: no reference has RMS > {REF_RMS_THRESHOLD:g}; skipped")
            self.skipped.append(name)
            return None
        self.add_scored(ex)
        return ex

    def add_scored(self, ex: FussExample) -> None:
        self.values[ex.n_ref_active].extend(ex.pooled_values().tolist())
        self.separations.append(ex.separation)
        self.ref_counts.append(ex.n_ref_active)

    def summary(self) -> dict:
        """``{"1S", "2Si", "3Si", "4Si", "MSi": mean dB or None when empty, "under", "equal", "over": fractions,
        "std": {group: population std}, "n_values": {group: pooled pairs}, "n_examples",
        "n_examples_by_ref_count": {"1".."4": examples}, "n_skipped"}``."""
        out: dict = {}
        std: dict = {}
        n_values: dict = {}
        for g in GROUPS:
            vals = [v for c in GROUP_COUNTS[g] for v in self.values[c]]
            out[g], std[g] = _stat(vals)
            n_values[g] = len(vals)
        n = len(self.separations)
        for s in ("under", "equal", "over"):
            out[s] = (sum(x == s for x in self.separations) / n) if n else None
        out["std"] = std
        out["n_values"] = n_values
        out["n_examples"] = n
        out["n_examples_by_ref_count"] = {str(c): self.ref_counts.count(c) for c in range(1, NUM_SLOTS + 1)}
        out["n_skipped"] = len(self.skipped)
        return out


def summarize(examples: Iterable[FussExample]) -> dict:
    """:meth:`FussAccumulator.summary` of already scored examples."""
    acc = FussAccumulator()
    for ex in examples:
        acc.add_scored(ex)
    return acc.summary()

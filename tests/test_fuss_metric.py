"""surfbench.metrics.fuss and ``surfbench score-fuss``: the FUSS metrics of Google's reference
(google-research/sound-separation, models/dcase2020_fuss_baseline/evaluate_lib.py), on hand-worked cases."""
import itertools
import json
import math

import numpy as np
import pytest
import soundfile as sf

from surfbench import score_fuss as sfuss
from surfbench.cli import main
from surfbench.metrics.fuss import (FussAccumulator, active_estimates, best_permutation, pad_references, si_snr,
                                    score_example, snr_from_power)

SR = 16000
T = 1600  # 0.1 s: enough samples for stable inner products, fast
SAT = 10 * math.log10((1 + 1e-8) / 1e-8)  # +80.0000000434 dB: the reference's epsilon ceiling


def rng(seed=0):
    return np.random.default_rng(seed)


def textbook_si_snr(est, ref):
    """Plain SI-SNR (no epsilons, no fallback): 10 log10(|a r|^2 / |e - a r|^2), a = <e, r>/<r, r>."""
    est, ref = np.asarray(est, np.float64), np.asarray(ref, np.float64)
    a = est @ ref / (ref @ ref)
    return 10 * np.log10(np.sum((a * ref) ** 2) / np.sum((est - a * ref) ** 2))


def orthogonal_noise(ref, ratio, g):
    """Noise orthogonal to ``ref`` with |ref|^2 / |noise|^2 = ratio exactly (up to rounding)."""
    n = g.standard_normal(ref.shape)
    n -= (n @ ref) / (ref @ ref) * ref
    return n * np.sqrt((ref @ ref) / ratio / (n @ n))


def sources(n, g, gains=None):
    gains = gains if gains is not None else [1.0, 0.5, 0.3, 0.2][:n]
    return np.stack([gains[i] * g.standard_normal(T) for i in range(n)])


# --- SI-SNR ------------------------------------------------------------------------------------------------------


def test_silent_estimate_scores_minus_80_and_scaled_copy_plus_80():
    r = rng(1).standard_normal(T)
    assert si_snr(np.zeros(T), r) == pytest.approx(-SAT, abs=1e-6)  # 10 log10(1e-8 / (1 + 1e-8))
    for gain in (3.7, 1e-3, -2.0):  # gain invariant, sign included (rho^2 = 1)
        assert si_snr(gain * r, r) == pytest.approx(SAT, abs=1e-6)
    assert si_snr(r, np.zeros(T)) == pytest.approx(-SAT, abs=1e-6)  # a padded (zero) reference slot


@pytest.mark.parametrize("ratio", [0.1, 1.0, 10.0, 1000.0])
def test_orthogonal_noise_gives_10log10_ratio(ratio):
    """est = ref + n with n orthogonal to ref: rho^2 = ratio / (1 + ratio), so SI-SNR = 10 log10(ratio), up to
    the 1e-8 epsilons: exactly 10 log10((rho^2 + 1e-8) / (1 - rho^2 + 1e-8)) (4e-5 dB below 30 dB at ratio 1000).
    ratio 1000 takes the direct noise path (1 - rho^2 < 0.01)."""
    g = rng(2)
    r = g.standard_normal(T)
    est = r + orthogonal_noise(r, ratio, g)
    rho2 = ratio / (1 + ratio)
    want = 10 * math.log10((rho2 + 1e-8) / (1 - rho2 + 1e-8))
    assert want == pytest.approx(10 * math.log10(ratio), abs=5e-5)
    assert si_snr(est, r) == pytest.approx(want, abs=1e-8)
    assert si_snr(5 * est, 0.1 * r) == pytest.approx(want, abs=1e-8)


def test_direct_noise_power_fallback_in_float32():
    """At 70 dB, 1 - rho^2 = 1e-7 is below float32's resolution near 1: only the reference's direct
    |e^ - rho t^|^2 keeps it.  Expected with the epsilons: 10 log10((rho^2 + 1e-8) / (1 - rho^2 + 1e-8))."""
    g = rng(3)
    r = g.standard_normal(T)
    ratio = 1e7
    est = r + orthogonal_noise(r, ratio, g)
    rho2 = ratio / (1 + ratio)
    want = 10 * math.log10((rho2 + 1e-8) / (1 - rho2 + 1e-8))  # 69.586 dB: the epsilon already bites
    got32 = float(si_snr(est.astype(np.float32), r.astype(np.float32), dtype=np.float32))
    assert got32 == pytest.approx(want, abs=0.05)
    assert float(si_snr(est, r)) == pytest.approx(want, abs=1e-4)
    # without the fallback float32 would be off by decibels: 1 - rho^2 rounds to 0 or 1.19e-7
    t = r.astype(np.float32) / np.linalg.norm(r.astype(np.float32))
    e = est.astype(np.float32) / np.linalg.norm(est.astype(np.float32))
    naive = float(snr_from_power(np.float32(t @ e) ** 2, np.float32(1) - np.float32(t @ e) ** 2))
    assert abs(naive - want) > 0.5


# --- permutation, padding, mixture --------------------------------------------------------------------------------


def brute_force(refs, ests):
    """First permutation (itertools order) maximising sum_i SI-SNR(est[p[i]], ref[i]), pair by pair."""
    best, best_p = -np.inf, None
    for p in itertools.permutations(range(4)):
        total = sum(float(si_snr(ests[p[i]], refs[i])) for i in range(4))
        if total > best + 1e-9:
            best, best_p = total, p
    return best_p, best


@pytest.mark.parametrize("n_src,seed", [(4, 0), (4, 1), (3, 2), (2, 3), (1, 4)])
def test_permutation_search_agrees_with_brute_force(n_src, seed):
    g = rng(seed)
    refs = pad_references(sources(n_src, g))
    mixing = g.standard_normal((4, 4))  # every estimate a bit of everything, plus noise
    ests = mixing @ np.vstack([refs[:n_src], g.standard_normal((4 - n_src, T))]) + 0.3 * g.standard_normal((4, T))
    perm = best_permutation(refs, ests)
    want_p, want_total = brute_force(refs, ests)
    got_total = sum(float(si_snr(ests[perm[i]], refs[i])) for i in range(4))
    assert got_total == pytest.approx(want_total, abs=1e-9)
    assert perm[:n_src] == want_p[:n_src]  # padded slots tie exactly (-80 dB for any estimate)
    if n_src == 4:
        assert perm == want_p


def test_permutation_recovers_shuffled_references():
    g = rng(5)
    refs = sources(4, g)
    order = (2, 0, 3, 1)
    ex = score_example(refs, refs[list(order)] * np.array([[2.0], [-1.0], [0.5], [3.0]]))
    # slot i was given estimate j with order[j] == i
    assert tuple(order.index(i) for i in range(4)) == ex.permutation
    assert np.allclose(ex.sisnr_separated, SAT)


def test_padding_and_sum_of_references_mixture():
    g = rng(6)
    refs = sources(2, g)
    ests = np.vstack([refs[0] + 0.1 * g.standard_normal(T), refs[1] + 0.1 * g.standard_normal(T), np.zeros((2, T))])
    ex = score_example(refs, ests)
    assert ex.ref_active.tolist() == [True, True, False, False]
    mix = refs[0] + refs[1]
    for i in range(2):
        assert ex.sisnr_mixture[i] == pytest.approx(textbook_si_snr(mix, refs[i]), abs=1e-5)
        assert ex.sisnr_improvement[i] == pytest.approx(
            textbook_si_snr(ests[i], refs[i]) - textbook_si_snr(mix, refs[i]), abs=1e-5)
    assert ex.sisnr_mixture[2:] == pytest.approx([-SAT, -SAT], abs=1e-6)  # zero-padded slots
    assert ex.power_sources[2:].tolist() == [0.0, 0.0]


# --- activity, under / equal / over ---------------------------------------------------------------------------------


def test_inactive_estimate_of_active_reference_is_left_out_and_counts_as_under():
    """r1 is the quieter reference (power 1/4 of r0's).  Estimate 1 is 0.09 * r1: SI-SNR +80 dB (scale
    invariant!) but power 0.0081 * P(r1) < 0.01 * P(quietest active ref): inactive, so the 2Si average is
    slot 0's SI-SNRi alone and the example is under-separated."""
    g = rng(7)
    refs = np.stack([g.standard_normal(T), 0.5 * g.standard_normal(T)])
    e0 = refs[0] + orthogonal_noise(refs[0], 10.0, g)
    ests = np.vstack([e0, 0.09 * refs[1], np.zeros((2, T))])
    ex = score_example(refs, ests)
    assert ex.permutation[:2] == (0, 1)
    assert ex.sisnr_separated[1] == pytest.approx(SAT, abs=1e-6)
    assert ex.est_active.tolist() == [True, False, False, False]
    assert ex.pair_active.tolist() == [True, False, False, False]
    assert (ex.n_ref_active, ex.n_est_active, ex.separation) == (2, 1, "under")
    acc = FussAccumulator()
    acc.add(refs, ests)
    s = acc.summary()
    want = 10.0 - textbook_si_snr(refs.sum(0), refs[0])
    assert s["2Si"] == pytest.approx(want, abs=1e-4) and s["MSi"] == pytest.approx(want, abs=1e-4)
    assert s["n_values"]["2Si"] == 1 and (s["under"], s["equal"], s["over"]) == (1.0, 0.0, 0.0)
    # 0.11 * r1 (power 0.0121 * P(r1)) is active: the threshold is the quietest active reference's power
    ex2 = score_example(refs, np.vstack([e0, 0.11 * refs[1], np.zeros((2, T))]))
    assert ex2.pair_active.tolist() == [True, True, False, False] and ex2.separation == "equal"
    # 0.11 * r1 relative to the louder r0 would be inactive: power 0.0121 * 0.25 = 0.003 P(r0)
    assert not active_estimates([np.mean((0.11 * refs[1]) ** 2)], [np.mean(refs[0] ** 2)])[0]


def test_extra_active_estimate_counts_as_over_and_stays_out_of_the_averages():
    """Two references, three active estimates: the third (noise at half r1's power) is matched to a
    zero-padded slot.  Activity is tested on all 4 aligned estimates, so n_est_active = 3 > 2: over.
    The pair of a padded slot is never active, so the averages hold the two real pairs only."""
    g = rng(8)
    refs = np.stack([g.standard_normal(T), 0.5 * g.standard_normal(T)])
    noise = np.sqrt(0.5) * 0.5 * g.standard_normal(T)
    ests = np.vstack([noise, refs[1], np.zeros(T), refs[0]])
    ex = score_example(refs, ests)
    assert ex.permutation[:2] == (3, 1)
    assert (ex.n_ref_active, ex.n_est_active, ex.separation) == (2, 3, "over")
    assert ex.pair_active.tolist() == [True, True, False, False]
    slot_of_noise = ex.permutation.index(0)
    assert slot_of_noise in (2, 3) and ex.est_active[slot_of_noise]
    acc = FussAccumulator()
    acc.add(refs, ests)
    s = acc.summary()
    mix = refs.sum(0)
    want = np.mean([SAT - textbook_si_snr(mix, refs[i]) for i in range(2)])
    assert s["2Si"] == pytest.approx(want, abs=1e-4) and s["n_values"]["2Si"] == 2
    assert (s["under"], s["equal"], s["over"]) == (0.0, 0.0, 1.0)


def test_silent_example_is_skipped_with_a_warning():
    acc = FussAccumulator()
    with pytest.warns(UserWarning, match="all references are zero"):
        assert acc.add(np.zeros((2, T)), np.ones((4, T)), name="ex") is None
    s = acc.summary()
    assert s["n_skipped"] == 1 and s["n_examples"] == 0 and s["1S"] is None and s["under"] is None


# --- baselines -----------------------------------------------------------------------------------------------------


def synthetic_set(seed=9):
    g = rng(seed)
    return [sources(n, g, gains=list(g.uniform(0.2, 1.0, size=n))) for n in (1, 1, 2, 2, 3, 3, 4, 4)]


def test_oracle_baseline():
    """Oracle: the references themselves (in a shuffled order, zero slots for the padding) as estimates.
    Every active pair is a perfect copy: SI-SNR = the +80 dB epsilon ceiling, so 1S = 80 dB and each
    SI-SNRi = 80 - SI-SNR(sum of references, reference); the zero estimates are inactive and match the
    zero slots, so every example is Equal."""
    acc, want = FussAccumulator(), {2: [], 3: [], 4: []}
    for k, refs in enumerate(synthetic_set()):
        padded = pad_references(refs)
        order = np.roll(np.arange(4), k)
        ex = acc.add(refs, padded[order])
        assert ex.separation == "equal" and ex.n_est_active == ex.n_ref_active == len(refs)
        assert np.allclose(ex.sisnr_separated[ex.pair_active], SAT, atol=1e-6)
        if len(refs) > 1:
            want[len(refs)] += [SAT - textbook_si_snr(refs.sum(0), r) for r in refs]
    s = acc.summary()
    assert s["1S"] == pytest.approx(SAT, abs=1e-6) and s["n_values"]["1S"] == 2
    for c in (2, 3, 4):
        assert s[f"{c}Si"] == pytest.approx(np.mean(want[c]), abs=1e-4) and s["n_values"][f"{c}Si"] == 2 * c
    assert s["MSi"] == pytest.approx(np.mean(want[2] + want[3] + want[4]), abs=1e-4)
    assert (s["under"], s["equal"], s["over"]) == (0.0, 1.0, 0.0)


def test_average_baseline():
    """"Average" baseline: the mixture (sum of the references) in one slot, silence in the other three.
    * The silent slots have power 0, never above 0.01 x the quietest reference's: 1 active estimate.
    * One source: the mixture IS the reference, so SI-SNR = +80 dB (ceiling): 1S = 80, Equal.
    * k >= 2 sources: the search gives the mixture to the reference it has the highest SI-SNR with;
      every other reference gets a silent estimate -> inactive pairs, left out.  The one active pair's
      improvement is SI-SNR(mixture, r) - SI-SNR(mixture, r) = 0 exactly (the same signal scored twice),
      so 2Si = 3Si = 4Si = MSi = 0 dB, one pooled value per example, and every such example is Under.
    Over the set of 2 one-source and 6 multi-source examples: under 6/8, equal 2/8, over 0."""
    acc = FussAccumulator()
    for refs in synthetic_set():
        mix = refs.sum(0)
        ex = acc.add(refs, np.vstack([np.zeros((2, T)), mix[None], np.zeros((1, T))]))
        best = int(np.argmax([textbook_si_snr(mix, r) for r in refs])) if len(refs) > 1 else 0
        assert ex.permutation[best] == 2 and ex.n_est_active == 1
        assert ex.pair_active.tolist() == [i == best for i in range(4)]
    s = acc.summary()
    assert s["1S"] == pytest.approx(SAT, abs=1e-6)
    for grp in ("2Si", "3Si", "4Si", "MSi"):
        assert abs(s[grp]) < 1e-9 and s["std"][grp] < 1e-9
    assert s["n_values"] == {"1S": 2, "2Si": 2, "3Si": 2, "4Si": 2, "MSi": 6}
    assert (s["under"], s["equal"], s["over"]) == (0.75, 0.25, 0.0)


# --- the CLI on a FUSS-layout tree ----------------------------------------------------------------------------------


@pytest.fixture
def fuss_tree(tmp_path):
    """tmp/fuss/eval_example_list.txt + eval/exampleK.wav + eval/exampleK_sources/*.wav, tmp/est/exampleK/estJ.wav.
    The mixture files are deliberately NOT the sum of the sources (loud noise added): the scores must not
    depend on them.  Estimates (the references reversed, so the search has work to do): example0 (1 source)
    perfect: Equal; example1 (2 sources) noisy copies, noise in the padded slots at 4x the activity threshold:
    Over; example2 (3 sources) noisy copies, one source's estimate and the padded slot's silent: Under."""
    g = rng(10)
    root, est = tmp_path / "fuss", tmp_path / "est"
    lines, data = [], {}
    for k, n in enumerate((1, 2, 3)):
        name = f"example{k:05d}"
        refs = sources(n, g).astype(np.float32)
        src_names = ["background0_sound.wav"] + [f"foreground{i}_sound.wav" for i in range(n - 1)]
        (root / "eval" / f"{name}_sources").mkdir(parents=True)
        sf.write(root / "eval" / f"{name}.wav", refs.sum(0) + g.standard_normal(T).astype(np.float32), SR,
                 subtype="FLOAT")
        for s_name, r in zip(src_names, refs):
            sf.write(root / "eval" / f"{name}_sources" / s_name, r, SR, subtype="FLOAT")
        lines.append("\t".join([f"eval/{name}.wav"] + [f"eval/{name}_sources/{s}" for s in src_names]))
        ests = pad_references(refs)[::-1].copy()
        if k >= 1:
            ests = ests + {1: 0.1, 2: 0.02}[k] * g.standard_normal(ests.shape).astype(np.float32)
        if k == 2:
            ests[:2] = 0.0  # the padded slot's and r2's estimates
        (est / name).mkdir(parents=True)
        for j, e in enumerate(ests):
            sf.write(est / name / f"est{j}.wav", e, SR, subtype="FLOAT")
        data[name] = (refs, ests)
    (root / "eval_example_list.txt").write_text("\n".join(lines) + "\n")
    return dict(list=root / "eval_example_list.txt", est=est, out=tmp_path / "out", data=data, root=root)


def run_cli(t, capsys):
    rc = main(["score-fuss", "--list", str(t["list"]), "--estimates", str(t["est"]), "--out", str(t["out"])])
    return rc, capsys.readouterr()


def test_cli_scores_a_fuss_tree(fuss_tree, capsys):
    rc, cap = run_cli(fuss_tree, capsys)
    assert rc == 0, cap.err
    summary = json.loads((fuss_tree["out"] / "fuss_summary.json").read_text())
    for key in ("1S", "2Si", "3Si", "4Si", "MSi", "under", "equal", "over", "n_values", "n_examples"):
        assert key in summary
    import csv
    rows = list(csv.DictReader((fuss_tree["out"] / "fuss_examples.csv").open()))
    assert [r["example"] for r in rows] == ["example00000", "example00001", "example00002"]
    acc = FussAccumulator()
    for r in rows:
        refs, ests = fuss_tree["data"][r["example"]]
        ex = acc.add(refs, ests)  # in memory: mixture = sum of the references, not the mixture file
        assert (int(r["n_ref_active"]), int(r["n_est_active"]), r["separation"]) == \
            (ex.n_ref_active, ex.n_est_active, ex.separation)
        for k in range(4):
            assert int(r[f"estimate_{k}"]) == ex.permutation[k]
            assert float(r[f"sisnri_{k}"]) == pytest.approx(ex.sisnr_improvement[k], abs=1e-5)
            assert float(r[f"sisnr_mixture_{k}"]) == pytest.approx(ex.sisnr_mixture[k], abs=1e-5)
    want = acc.summary()
    for key in ("1S", "2Si", "3Si", "MSi", "under", "equal", "over"):
        assert summary[key] == pytest.approx(want[key], abs=1e-9)
    assert summary["4Si"] is None and summary["n_examples_by_ref_count"] == {"1": 1, "2": 1, "3": 1, "4": 0}
    assert summary["1S"] == pytest.approx(SAT, abs=1e-5)
    assert [r["separation"] for r in rows] == ["equal", "over", "under"]
    assert [r["n_est_active"] for r in rows] == ["1", "4", "2"]
    assert summary["under"] == summary["equal"] == summary["over"] == pytest.approx(1 / 3)
    assert "SI-SNR (1S) = 80.0" in cap.out


def test_read_examples_gives_back_what_was_written(fuss_tree, capsys):
    """fuss_examples.csv read back (what `surfbench import` recomputes Table 3's FUSS metrics from): the same rows,
    and the summary within the file's 6 decimals; a row that example_row cannot have written is refused by line."""
    rc, cap = run_cli(fuss_tree, capsys)
    assert rc == 0, cap.err
    path = fuss_tree["out"] / "fuss_examples.csv"
    acc, rows = sfuss.read_examples(path)
    text = "\n".join(",".join(map(str, r)) for r in [sfuss.csv_header()] + rows) + "\n"
    assert text == path.read_text()
    want = json.loads((fuss_tree["out"] / "fuss_summary.json").read_text())
    got = acc.summary()
    for key in ("1S", "2Si", "3Si", "MSi", "under", "equal", "over"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    for key in ("n_values", "n_examples", "n_examples_by_ref_count", "n_skipped"):
        assert got[key] == want[key], key
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",4,over,", ",3,over,", 1)  # example00001's n_est_active
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"fuss_examples.csv:3: example 'example00001': n_ref_active, n_est_active, "
                                         r"separation 2, 3, 'over', but its slots give 2, 4, 'over'"):
        sfuss.read_examples(path)


def test_cli_progress_bar_when_many_examples(fuss_tree, capsys, monkeypatch):
    monkeypatch.setattr(sfuss, "PROGRESS_FROM", 3)
    rc, cap = run_cli(fuss_tree, capsys)
    assert rc == 0 and "score-fuss" in cap.err and "3/3" in cap.err
    monkeypatch.setattr(sfuss, "PROGRESS_FROM", 4)
    rc, cap = run_cli(fuss_tree, capsys)
    assert rc == 0 and "3/3" not in cap.err


def _expect_error(t, capsys, *needles):
    rc, cap = run_cli(t, capsys)
    assert rc == 2
    assert cap.err.startswith("surfbench score-fuss: error: ")
    for n in needles:
        assert str(n) in cap.err, cap.err
    assert not (t["out"] / "fuss_summary.json").exists() and not (t["out"] / "fuss_examples.csv").exists()


def test_cli_missing_source_file(fuss_tree, capsys):
    p = fuss_tree["root"] / "eval" / "example00001_sources" / "foreground0_sound.wav"
    p.unlink()
    _expect_error(fuss_tree, capsys, p, "audio file does not exist")


def test_cli_wrong_sample_rate(fuss_tree, capsys):
    p = fuss_tree["est"] / "example00002" / "est2.wav"
    x, _ = sf.read(p)
    sf.write(p, x, 8000, subtype="FLOAT")
    _expect_error(fuss_tree, capsys, p, "sample rate is 8000 Hz but 16000 Hz is expected")


def test_cli_three_estimate_files(fuss_tree, capsys):
    folder = fuss_tree["est"] / "example00001"
    (folder / "est3.wav").unlink()
    _expect_error(fuss_tree, capsys, folder, "expected exactly 4 estimate files",
                  "found 3: est0.wav, est1.wav, est2.wav")


def test_cli_nan_samples(fuss_tree, capsys):
    p = fuss_tree["est"] / "example00000" / "est1.wav"
    x, _ = sf.read(p, dtype="float32")
    x[5] = np.nan
    sf.write(p, x, SR, subtype="FLOAT")
    _expect_error(fuss_tree, capsys, p, "NaN/Inf sample")


def test_cli_bad_list_line_and_length_mismatch(fuss_tree, capsys):
    p = fuss_tree["est"] / "example00001" / "est0.wav"
    sf.write(p, np.zeros(T - 10, np.float32), SR, subtype="FLOAT")
    _expect_error(fuss_tree, capsys, p, f"{T - 10} samples")
    fuss_tree["list"].write_text("only_a_mixture.wav\n")
    _expect_error(fuss_tree, capsys, f"{fuss_tree['list']}:1", "expected a mixture path and 1 to 4 source paths")

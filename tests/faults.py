"""Deliberate faults for the sensitivity check (issue item 2), as a pytest plugin.

    SURFBENCH_FAULT=<name> PYTHONPATH=tests python -m pytest -p faults tests/test_flow.py ...

applies fault ``<name>`` (monkeypatches of the library) before any test module is
imported, so every ``from surfbench.x import y`` and every baseline loaded by the
registry sees the broken piece.  Without ``SURFBENCH_FAULT`` the plugin does nothing.
:data:`FAULTS` maps each name to (description, the checks expected to catch it);
``tests/test_fault_sensitivity.py`` runs them and asserts each one makes something fail.
"""
from __future__ import annotations

import os

import torch


def _srfm_wrong_axis():
    import surfbench.losses as L
    from surfbench.pit import inverse_permutation, permute
    from surfbench.remix import unremix

    def sr_fm_mixture_residual(R, upsilon, pi):
        r = permute(R, inverse_permutation(upsilon))
        return unremix(r, pi).sum(2)  # FAULT: sums over a data axis instead of the source axis 1

    L.sr_fm_mixture_residual = sr_fm_mixture_residual


def _no_ema():
    from surfbench.remixing import RemixingTeacher

    RemixingTeacher.after_step = lambda self, ctx: None  # FAULT: the EMA teacher is never updated


def _no_pperp():
    import surfbench.flow as F

    F.consistent_velocity = lambda model: model  # FAULT: raw model output, no P⊥ projection layer


def _wrong_unremix():
    import surfbench.remix as R

    def unremix(x_tilde, pi):
        return x_tilde.flatten(0, 1)[pi].reshape(x_tilde.shape)  # FAULT: pi used as its own inverse

    R.unremix = unremix


def _ema_swapped():
    import surfbench.ema as E

    orig = E.ema_update

    def ema_update(teacher, student, alpha):
        return orig(teacher, student, 1.0 - alpha)  # FAULT: alpha and 1 - alpha swapped

    E.ema_update = ema_update


def _pit_identity():
    import surfbench.pit as P

    def best_permutation(cost, *a, **kw):
        b, k = cost.shape[:2]
        return torch.arange(k, device=cost.device).expand(b, k).clone()  # FAULT: no alignment at all

    P.best_permutation = best_permutation


def _noise_per_batch():
    import surfbench.seeding as S

    orig_init = S.ItemNoise.__init__

    def __init__(self, seed, item_ids, device="cpu", tag="sample"):
        ids = list(item_ids)
        orig_init(self, seed, [ids[0]] * len(ids) if ids else ids, device, tag)
        if ids:  # FAULT: one stream per batch, not per item (shared by the batch's items)
            g = self.generators[0]
            self.generators = [g] * len(ids)

    S.ItemNoise.__init__ = __init__


def _mixture_consistency_off():
    from surfbench.method import Method

    Method.mixture_consistent = staticmethod(lambda est, mixtures: est)  # FAULT: estimates need not sum to m


def _start_noise_scale():
    import surfbench.separation as S

    orig = S.noise_std
    S.noise_std = lambda mixtures, training_cfg: 1.1 * orig(mixtures, training_cfg)  # FAULT: sigma_z 10% too large


def _one_euler_step_fewer():
    import surfbench.flow as F

    orig = F.euler_sample
    F.euler_sample = lambda velocity_fn, x0, m, steps: orig(velocity_fn, x0, m, max(1, steps - 1))  # FAULT


UNIT_FLOW = "tests/test_flow.py"
UNIT_LOSSES = "tests/test_remix_losses.py"
SHORT_TRAINING = "tests/test_golden.py::test_short_training_matches_golden_files"
BATCH_INDEPENDENCE = "tests/test_determinism.py::test_evaluation_does_not_depend_on_batch_size"

#: name -> (what is broken, how it is applied, the checks expected to catch it: pytest targets)
FAULTS = {
    "srfm_wrong_axis": ("SR-FM residual summed over the wrong axis", _srfm_wrong_axis, [UNIT_LOSSES, SHORT_TRAINING]),
    "no_ema": ("EMA update skipped (RemixingTeacher.after_step is a no-op)", _no_ema, [SHORT_TRAINING]),
    "no_pperp": ("P⊥ projection dropped (consistent_velocity returns the raw model output)", _no_pperp,
                 [UNIT_FLOW, UNIT_LOSSES, SHORT_TRAINING]),
    "wrong_unremix": ("remixing inverse uses pi instead of argsort(pi)", _wrong_unremix, [UNIT_LOSSES, SHORT_TRAINING]),
    "ema_swapped": ("EMA with alpha and 1-alpha swapped", _ema_swapped, ["tests/test_ema.py"]),
    "pit_identity": ("PIT alignment skipped (identity permutation)", _pit_identity,
                     [UNIT_FLOW, UNIT_LOSSES, "tests/test_pit.py"]),
    "noise_per_batch": ("evaluation noise drawn per batch instead of per item", _noise_per_batch, [BATCH_INDEPENDENCE]),
    "mixture_consistency_off": ("regression estimates not projected to sum to the mixture", _mixture_consistency_off,
                                [SHORT_TRAINING]),
    # two small faults: they move metrics by little, and show the margin of the golden tolerances
    "start_noise_scale": ("start noise sigma_z 10% too large (training and sampling)", _start_noise_scale, [SHORT_TRAINING]),
    "one_euler_step_fewer": ("one Euler step fewer than sampler.euler_steps (teacher and evaluation)",
                             _one_euler_step_fewer, [SHORT_TRAINING]),
}


def apply(name: str) -> None:
    if name not in FAULTS:
        raise ValueError(f"SURFBENCH_FAULT={name!r} is not a known fault; known: {', '.join(FAULTS)}")
    FAULTS[name][1]()


def pytest_configure(config):
    name = os.environ.get("SURFBENCH_FAULT")
    if name:
        apply(name)
        import sys

        print(f"SURFBENCH_FAULT={name} applied: {FAULTS[name][0]}", file=sys.stderr)

def pytest_report_header(config):
    name = os.environ.get("SURFBENCH_FAULT")
    return f"SURFBENCH_FAULT={name}: {FAULTS[name][0]}" if name in FAULTS else None

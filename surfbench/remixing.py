"""The teacher of the remixing methods (ReMixIT, Self-Remixing and both SURF variants).

Training schedule (METHOD.md, App. D.3):

1. phase ``frozen_teacher``: the teacher is the trained MixIT model (frozen), its M
   slots reduced to K without labels (``mixit.teacher_reduction``);
2. phase ``ema``: the teacher is an EMA of the student, ``θ_T ← α θ_T + (1-α) θ``,
   initialised from the student when the phase begins; flow teachers are sampled with
   the hybrid velocity ``v_β`` whose β follows ``training.beta_schedule``.

The share of steps of phase 1 is ``training.frozen_teacher_fraction`` (a choice).
"""
from __future__ import annotations

import copy

import torch

from .ema import ema_update, unwrap_module
from .flow import consistent_velocity, euler_sample, hybrid_velocity, linear_beta
from .method import Method, Phase, StepContext
from .separation import flow_separate, reduce_slots, start_noise


class RemixingTeacher(Method):
    """Shared teacher handling; subclasses write the training step of their paper's algorithm."""

    teacher = "mixit"
    training_data = "mixtures"
    #: "flow": teacher samples with the (hybrid) Euler sampler; "regression": teacher is a separator
    student_kind = "flow"

    def build(self) -> None:
        role = "flow" if self.student_kind == "flow" else "regression"
        self.student = self.make_model(role)
        self.ema = copy.deepcopy(self.student)  # the EMA teacher θ_T (never wrapped in DDP)
        self.ema.requires_grad_(False)
        self.mixit = None
        self._refuse_an_empty_ema_phase()

    def _refuse_an_empty_ema_phase(self) -> None:
        """An EMA phase of 0 steps never updates the EMA teacher; evaluating it would score initial weights."""
        tc = self.training_cfg
        frozen, ema = (p.steps for p in self.phases())
        if ema == 0 and frozen > 0 and tc["evaluate_weights"] == "ema":
            raise ValueError(
                f"{self.name}: training.frozen_teacher_fraction={tc['frozen_teacher_fraction']} leaves none of the "
                f"{frozen} steps to the EMA phase, so the EMA teacher would never be updated, yet "
                f"training.evaluate_weights is 'ema': the run would be evaluated with its initial weights. "
                f"Lower frozen_teacher_fraction, or set training.evaluate_weights: student")

    def set_teacher(self, teacher: Method) -> None:
        self.mixit = teacher  # frozen MixIT method: teacher.separate_slots(m) -> [B, M, *d]

    def phases(self) -> list[Phase]:
        steps = int(self.training_cfg["steps"])
        frozen = int(round(steps * self.training_cfg["frozen_teacher_fraction"]))
        return [Phase("frozen_teacher", frozen), Phase("ema", steps - frozen)]

    def on_phase_start(self, phase: Phase, ctx: StepContext) -> None:
        if phase.name == "ema":
            unwrap_module(self.ema).load_state_dict(unwrap_module(self.student).state_dict())

    def after_step(self, ctx: StepContext) -> None:
        if ctx.phase == "ema":
            ema_update(self.ema, self.student, self.training_cfg["ema_alpha"])  # Alg. 1 line 16

    # ---- the teacher -----------------------------------------------------------------------
    def mixit_estimate(self, mixtures: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return reduce_slots(self.mixit.separate_slots(mixtures), self.n_sources, mixtures,
                                self.cfg["mixit"].get("teacher_reduction", "top_energy"))

    def beta(self, ctx: StepContext) -> float:
        sched = self.training_cfg["beta_schedule"]
        if sched["kind"] == "constant":
            return float(sched["value"])
        return linear_beta(ctx.phase_step, int(round(ctx.phase_steps * sched["decay_fraction"])))

    @torch.no_grad()
    def teacher_estimates(self, mixtures: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """``X̄ ~ p_θT(X̄ | M)`` (Alg. 1 line 4)."""
        if ctx.phase == "frozen_teacher":
            return self.mixit_estimate(mixtures)
        self.ema.eval()
        if self.student_kind == "regression":
            return self.mixture_consistent(self.ema(mixtures), mixtures)
        # hybrid teacher velocity v_β (App. D.3): straight to the MixIT estimate for t < β
        steps = self.cfg["sampler"]["euler_steps"]
        x0 = start_noise(mixtures, self.n_sources, self.training_cfg, generator=ctx.generator)
        beta = self.beta(ctx)
        # with β = 0 no step uses the anchor (t ≥ 0 everywhere): skip the MixIT forward pass
        anchor = self.mixit_estimate(mixtures) if beta > 0 else torch.zeros_like(x0)
        v_beta = hybrid_velocity(consistent_velocity(self.ema), anchor, x0, beta)
        return euler_sample(v_beta, x0, mixtures, steps)

    # ---- evaluation ------------------------------------------------------------------------------
    def eval_model(self) -> torch.nn.Module:
        return self.ema if self.training_cfg["evaluate_weights"] == "ema" else unwrap_module(self.student)

    @torch.no_grad()
    def separate(self, mixtures: torch.Tensor, noise) -> torch.Tensor:
        model = self.eval_model()
        model.eval()
        if self.student_kind == "regression":
            return self.mixture_consistent(model(mixtures), mixtures)
        return flow_separate(consistent_velocity(model), mixtures, self.n_sources, self.training_cfg,
                             self.cfg["sampler"]["euler_steps"], noise=noise)

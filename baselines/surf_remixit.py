"""SURF (ReMixIT): Separation via Unsupervised Remixing Flow, RM-FM loss (Algorithm 1, red; Eq. 24)."""
from surfbench.flow import consistent_velocity, floss_align, flow_matching_residual, mixture_consistent_start
from surfbench.losses import rm_fm_loss
from surfbench.remix import draw_global_remix, remix, sum_sources
from surfbench.remixing import RemixingTeacher
from surfbench.separation import draw_times, noise_std
import torch


class SurfReMixIT(RemixingTeacher):
    display_name = "SURF (ReMixIT)"
    supervised = False
    generative = True
    citation = "SURF: Separation via Unsupervised Remixing Flow, 2026"
    student_kind = "flow"

    def training_step(self, batch, ctx):
        tc = self.training_cfg
        M = batch["mixture"]                                                      # 3: M ~ p(M)
        B, K = M.shape[0], self.n_sources
        X_bar = self.teacher_estimates(M, ctx)                                     # 4: X̄ ~ p_θT(X̄ | M)
        Pi = draw_global_remix(B, K, ctx.generator, M.device)                     # 5: Π ~ U(S_BK) over all processes
        X1 = remix(X_bar, Pi)                                                     # 5: X̃1 = Π X̄
        M_tilde = sum_sources(X1)                                                 # 6: M̃ = (I_B ⊗ 1ᵀ) X̃1
        t = draw_times(B, tc, ctx.generator, M.device)                            # 7: t ~ λ (training.time_power)
        Z = noise_std(M_tilde, tc) * torch.randn(X1.shape, generator=ctx.generator).to(M.device)  # 8: Z ~ N(0, σ_z²I)
        X0 = mixture_consistent_start(M_tilde, Z)                                 # 9: X̃0 = M̃/K + P⊥ Z
        v = consistent_velocity(self.student)                                     # v_θ with the P⊥ layer
        X1_aligned, _ = floss_align(v, X0, X1, M_tilde)                           # 10: Υ (PIT at t = 0)
        R = flow_matching_residual(v, X0, X1_aligned, t, M_tilde)                 # 11-12: R_t
        return rm_fm_loss(R, tc["log_loss"], tc["log_eps"])                       # 13: ||R_t||²
        # 15-16 (Adam step, EMA teacher update) run in the trainer / after_step

"""Supervised flow matching for separation (FLOSS, Scheibler et al. 2025; SURF paper Section 2.2).

Algorithm 1 (ReMixIT variant) with the ground-truth sources in place of the teacher samples;
``training.supervised_flow_remix`` says whether lines 5-6 (remixing across the batch) run on them.
"""
import torch

from surfbench.flow import consistent_velocity, floss_align, flow_matching_residual
from surfbench.losses import rm_fm_loss
from surfbench.method import Method
from surfbench.remix import draw_global_remix, remix, sum_sources
from surfbench.separation import draw_times, flow_separate, start_noise


class SupervisedFlow(Method):
    display_name = "Supervised Flow"
    supervised = True
    generative = True
    citation = "R. Scheibler et al., Source separation by flow matching (FLOSS), 2025"
    training_data = "sources"
    tables = ("1", "3", "4")

    def build(self):
        self.student = self.make_model("flow")

    def training_step(self, batch, ctx):
        tc = self.training_cfg
        X1, M = batch["sources"], batch["mixture"]               # 4: ground truth in place of X̄
        if tc["supervised_flow_remix"]:
            Pi = draw_global_remix(M.shape[0], self.n_sources, ctx.generator, M.device)  # 5: Π ~ U(S_BK), all processes
            X1 = remix(X1, Pi)                                   # 5: X̃1 = Π X
            M = sum_sources(X1)                                  # 6: M̃ = (I_B ⊗ 1ᵀ) X̃1
        v = consistent_velocity(self.student)                   # P⊥ projection layer
        t = draw_times(M.shape[0], tc, ctx.generator, M.device)
        X0 = start_noise(M, self.n_sources, tc, generator=ctx.generator)              # Eq. 4
        X1_aligned, _ = floss_align(v, X0, X1, M)               # PIT at t = 0 (Eq. 7-9)
        R = flow_matching_residual(v, X0, X1_aligned, t, M)     # Eq. 11, 23
        return rm_fm_loss(R, tc["log_loss"], tc["log_eps"])     # Eq. 10

    @torch.no_grad()
    def separate(self, mixtures, noise):
        self.student.eval()
        return flow_separate(consistent_velocity(self.student), mixtures, self.n_sources,
                             self.training_cfg, self.cfg["sampler"]["euler_steps"], noise=noise)

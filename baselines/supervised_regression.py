"""Supervised regression: clean sources, PIT with the log-SNR loss l = 10 log10 ||x - x̂||^2 (Section 5.1)."""
import torch

from surfbench.losses import neg_snr_pit_loss
from surfbench.method import Method


class SupervisedRegression(Method):
    display_name = "Supervised Regression"
    supervised = True
    generative = False
    citation = "Supervised PIT regression (Yu et al. 2017; Section 5.1 of the SURF paper)"
    training_data = "sources"
    domains = ("image",)
    tables = ("1",)

    def build(self):
        self.student = self.make_model("regression")   # no time and no noise input

    def training_step(self, batch, ctx):
        est = self.mixture_consistent(self.student(batch["mixture"]), batch["mixture"])
        loss, _ = neg_snr_pit_loss(est, batch["sources"])
        return loss

    @torch.no_grad()
    def separate(self, mixtures, noise):
        self.student.eval()
        return self.mixture_consistent(self.student(mixtures), mixtures)

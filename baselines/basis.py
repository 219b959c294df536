"""BASIS: Bayesian annealed signal source separation (Jayaram & Thickstun, ICML 2020).

A noise-conditional score model is trained on clean single images (denoising score
matching, NCSN); separation runs annealed Langevin dynamics on every source with the
constraint that the sources average to the observed mixture.  The reference code's recipe differs
by dataset (``basis.constraint_weight``, ``basis.update_order``; per dataset in
``dataset_overrides.<dataset>.basis``): MNIST w = 1 with all sources updated jointly, CIFAR-10
w = 0.5 with the sources updated one after the other.
"""
import torch

from surfbench.basis import basis_separate, check_constraint_step, dsm_loss, geometric_sigmas
from surfbench.method import Method


class BASIS(Method):
    display_name = "BASIS"
    supervised = True
    generative = True
    citation = "V. Jayaram and J. Thickstun, Source separation with deep generative priors, ICML 2020"
    training_data = "single_sources"
    domains = ("image",)
    tables = ("1", "2")
    # the longest chain of every profile: a score model with no teacher to wait for, then annealed
    # Langevin sampling (levels x steps_per_level score evaluations per mixture) at evaluation
    schedule_priority = 2

    def build(self):
        self.student = self.make_model("score")
        b = self.cfg["basis"]
        self.sigmas = geometric_sigmas(b["sigma_max"], b["sigma_min"], b["levels"]).to(self.device)
        self.update_order = b.get("update_order", "jacobi")  # absent from model files older than the key
        # refuse a diverging sampler before training, not after it
        check_constraint_step(self.n_sources, b["constraint_weight"], b["lr"], float(self.sigmas[-1]),
                              self.update_order)

    def training_step(self, batch, ctx):
        images = batch["sources"].flatten(0, 1) * self.n_sources   # full clean images a_k in [0, 1]
        return dsm_loss(self.student, images, self.sigmas, generator=ctx.generator)

    @torch.no_grad()
    def separate(self, mixtures, noise):
        self.student.eval()
        b = self.cfg["basis"]
        images = basis_separate(self.student, mixtures, self.n_sources, self.sigmas, b["steps_per_level"], b["lr"],
                                noise=noise, constraint_weight=b["constraint_weight"], update_order=self.update_order)
        return images / self.n_sources   # back to half images (the mixture is their sum)

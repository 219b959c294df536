"""MixIT: mixture invariant training (Wisdom et al., NeurIPS 2020).

The model sees a mixture of two mixtures ``m1 + m2`` and outputs M slots; the loss is
the best assignment of slots to ``m1`` or ``m2`` of the 30 dB-capped log-MSE.  Its
trained model is the frozen teacher of ReMixIT, Self-Remixing and SURF.

Its M slots become the K sources of a mixture by the label-free ``mixit.teacher_reduction``
(what the teachers use, and :meth:`MixIT.separate`); its table row is scored either the same
way or by the oracle assignment of slots to the references (``evaluation.extra_slots``).
"""
import torch

from surfbench.losses import mixit_loss
from surfbench.method import Method, slot_note
from surfbench.separation import reduce_slots


class MixIT(Method):
    display_name = "MixIT"
    supervised = False
    generative = False
    citation = "S. Wisdom et al., Unsupervised sound separation using mixture invariant training, NeurIPS 2020"
    training_data = "mixtures_of_mixtures"
    tables = ("1", "2", "3", "4", "9")

    def build(self):
        self.student = self.make_model("mixit", role="regression", n_sources=self.cfg["mixit"]["n_slots"])
        # absent from model files older than the key: the rule those were made with
        self.teacher_reduction = self.cfg["mixit"].get("teacher_reduction", "top_energy")

    def training_step(self, batch, ctx):
        parts = batch["mom_parts"]                 # [B, 2, *d]: the two mixtures of each MoM
        mom = parts.sum(1)                         # what the model hears: m1 + m2
        est = self.mixture_consistent(self.student(mom), mom)   # M slots summing to the MoM
        loss, _ = mixit_loss(est, parts, tau=self.cfg["mixit"]["tau"])
        return loss

    @torch.no_grad()
    def separate_slots(self, mixtures):
        """All M slots, ``[B, M, *d]`` (used by the methods it teaches)."""
        self.student.eval()
        return self.mixture_consistent(self.student(mixtures), mixtures)

    @torch.no_grad()
    def separate(self, mixtures, noise):
        return reduce_slots(self.separate_slots(mixtures), self.n_sources, mixtures, self.teacher_reduction)

    @torch.no_grad()
    def separate_for_scoring(self, mixtures, noise, references, evaluation):
        return self.match_slots(self.separate_slots(mixtures), mixtures, references, evaluation)

    def scoring_note(self, evaluation, n_references=None) -> str:
        return slot_note("MixIT", self.cfg["mixit"]["n_slots"], n_references or self.n_sources, evaluation, self.cfg)

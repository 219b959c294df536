"""MixIT: mixture invariant training (Wisdom et al., NeurIPS 2020).

The model sees a mixture of two mixtures ``m1 + m2`` and outputs M slots; the loss is
the best assignment of slots to ``m1`` or ``m2`` of the 30 dB-capped log-MSE.  Its
trained model is the frozen teacher of ReMixIT, Self-Remixing and SURF.

Its M slots become the K sources of a mixture by the label-free ``mixit.teacher_reduction``
(what the teachers use, and :meth:`MixIT.separate`); its table row is scored either the same
way or by the oracle assignment of slots to the references (``evaluation.mixit_reduction``).
"""
import torch

from surfbench.losses import mixit_loss
from surfbench.method import Method
from surfbench.separation import reduce_slots, reduce_slots_oracle

#: what each label-free rule does, for the table's footnote
REDUCTION_TEXT = {
    "top_energy": "the {k} most energetic slots kept, the remainder of the mixture spread equally over them",
    "merge_closest": "the {k} most energetic slots kept, every other slot added to the kept slot it is most "
                     "similar to (cosine)",
}


class MixIT(Method):
    display_name = "MixIT"
    supervised = False
    generative = False
    citation = "S. Wisdom et al., Unsupervised sound separation using mixture invariant training, NeurIPS 2020"
    training_data = "mixtures_of_mixtures"
    tables = ("1", "2", "4", "9")

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
        if evaluation.get("mixit_reduction", "label_free") == "oracle_assignment":
            return reduce_slots_oracle(self.separate_slots(mixtures), references, tau=self.cfg["mixit"]["tau"])
        return self.separate(mixtures, noise)

    def scoring_note(self, evaluation) -> str:
        m, k = self.cfg["mixit"]["n_slots"], self.n_sources
        if evaluation.get("mixit_reduction", "label_free") == "oracle_assignment":
            return (f"MixIT scored with an oracle: each of its {m} output slots assigned to one of the {k} references, "
                    f"the assignment whose per-reference sums best match them (30 dB-capped log-MSE; Wisdom et al. "
                    f"2020, Eq. 3) (evaluation.mixit_reduction: oracle_assignment)")
        rule = self.teacher_reduction
        return (f"MixIT scored without the references, its {m} output slots reduced to {k} as for the teachers: "
                f"{REDUCTION_TEXT[rule].format(k=k)} (mixit.teacher_reduction: {rule})")

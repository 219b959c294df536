"""ReMixIT (Tzinis et al., 2022): a regression student learns from remixed teacher estimates (Eq. 14-16),
with the teacher the frozen MixIT model, then an EMA of the student."""
from surfbench.losses import remixit_loss
from surfbench.remix import draw_global_remix, remix, sum_sources
from surfbench.remixing import RemixingTeacher


class ReMixIT(RemixingTeacher):
    display_name = "Regression (ReMixIT)"
    supervised = False
    generative = False
    citation = "E. Tzinis et al., RemixIT: continual self-training of speech enhancement models via bootstrapped remixing, IEEE JSTSP 2022"
    student_kind = "regression"
    tables = ("1", "3", "4")

    def training_step(self, batch, ctx):
        M = batch["mixture"]
        B, K = M.shape[0], self.n_sources
        X_bar = self.teacher_estimates(M, ctx)                                     # teacher separates
        Pi = draw_global_remix(B, K, ctx.generator, M.device)                     # Π ~ U(S_BK) over all processes
        X_tilde = remix(X_bar, Pi)                                                # Eq. 14
        M_tilde = sum_sources(X_tilde)                                            # Eq. 15
        X_hat = self.mixture_consistent(self.student(M_tilde), M_tilde)           # student on new mixtures
        loss, _ = remixit_loss(X_hat, X_tilde)                                    # Eq. 16
        return loss

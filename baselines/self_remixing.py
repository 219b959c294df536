"""Self-Remixing (Saijo & Ogawa, 2023): like ReMixIT, but the aligned student estimates are routed back
through Π⁻¹ and summed, and the loss is on the observed mixtures (Eq. 17)."""
from surfbench.losses import self_remixing_loss
from surfbench.remix import draw_global_remix, remix, sum_sources
from surfbench.remixing import RemixingTeacher


class SelfRemixing(RemixingTeacher):
    display_name = "Regression (Self-Remixing)"
    supervised = False
    generative = False
    citation = "K. Saijo and T. Ogawa, Self-Remixing: unsupervised speech separation via separation and remixing, ICASSP 2023"
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
        loss, _ = self_remixing_loss(X_hat, X_tilde, Pi, M)                       # Eq. 17
        return loss

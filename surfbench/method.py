"""The base class of a method.  A method is one file ``baselines/<name>.py`` defining one
subclass of :class:`Method`; it composes library pieces and reads like the paper's
algorithm box.  The trainer (``surfbench.train``) owns the loop, data, optimiser,
checkpoints and processes; the method owns the algorithm.

Minimal example (see README, "Add a method")::

    from surfbench.method import Method, Phase
    from surfbench.losses import neg_snr_pit_loss

    class MyRegression(Method):
        display_name = "My Regression"
        supervised, generative = True, False
        citation = "Me et al. 2026"
        training_data = "sources"

        def build(self):
            self.student = self.make_model("regression")

        def training_step(self, batch, ctx):
            loss, _ = neg_snr_pit_loss(self.student(batch["mixture"]), batch["sources"])
            return loss

        def separate(self, mixtures, noise):
            return self.mixture_consistent(self.student(mixtures), mixtures)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from .flow import precondition_flow, project_perp
from .separation import reduce_slots, reduce_slots_oracle
from .nn import build_model

#: what the trainer hands to ``training_step`` (an unsupervised method never sees clean sources)
TRAINING_DATA = ("sources", "mixtures", "mixtures_of_mixtures", "single_sources", "none")


@dataclass(frozen=True)
class Phase:
    name: str
    steps: int


@dataclass
class StepContext:
    step: int                 # global step, 0-based
    phase: str
    phase_step: int           # step within the phase, 0-based
    phase_steps: int
    generator: torch.Generator  # training randomness of this process (saved in checkpoints)
    device: torch.device
    extras: dict = field(default_factory=dict)


class Method:
    # ---- metadata each baseline declares -------------------------------------------------
    display_name: ClassVar[str] = ""
    supervised: ClassVar[bool] = False   # needs clean sources for training
    generative: ClassVar[bool] = False   # samples from a learned distribution
    citation: ClassVar[str] = ""
    domains: ClassVar[tuple[str, ...]] = ("image", "audio")
    training_data: ClassVar[str] = "mixtures"
    #: a method whose trained model this one needs as its frozen teacher (e.g. "mixit")
    teacher: ClassVar[str | None] = None
    #: the evaluation protocols (paper tables) the method is ranked in; None = all of its domains
    tables: ClassVar[tuple[str, ...] | None] = None
    #: Snakemake priority of the method's jobs (``surfbench.plan.run_priority``): when slots are short, higher
    #: starts first. Set it for a method whose chain (training, then evaluation) is among a profile's longest,
    #: so that it does not start last and end the run alone (BASIS: its sampler is levels x steps_per_level
    #: score evaluations per mixture). Teachers are raised by one automatically.
    schedule_priority: ClassVar[int] = 0
    name: ClassVar[str] = ""   # set by the registry from the file name

    def __init__(self, run_cfg: dict, data_shape: tuple[int, ...], n_sources: int, device: torch.device | str = "cpu"):
        self.cfg = run_cfg
        self.training_cfg = run_cfg.get("training", {})
        self.shape = tuple(data_shape)
        self.n_sources = n_sources
        self.device = torch.device(device)
        self.student: nn.Module | None = None
        self.build()

    # ---- to implement -----------------------------------------------------------------
    def build(self) -> None:
        """Create the modules (``self.student`` is the one the optimiser trains)."""

    def phases(self) -> list[Phase]:
        return [Phase("train", int(self.training_cfg.get("steps", 0)))]

    def on_phase_start(self, phase: Phase, ctx: StepContext) -> None:
        """Called once when a phase begins (not again when a run resumes inside it)."""

    def training_step(self, batch: dict, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """Called after each optimiser step (e.g. the EMA teacher update)."""

    def separate(self, mixtures: torch.Tensor, noise) -> torch.Tensor:
        """``[B, *d] -> [B, K, *d]``; ``noise`` draws per-item randomness (``surfbench.seeding.ItemNoise``)."""
        raise NotImplementedError

    def separate_for_scoring(self, mixtures: torch.Tensor, noise, references: torch.Tensor,
                             evaluation: dict) -> torch.Tensor:
        """What the evaluation scores against ``references: [B, K, *d]`` under the profile's ``evaluation``
        settings: :meth:`separate`, its slots matched to the K references by ``evaluation.extra_slots`` when
        it has more (``training.output_slots``; MixIT's M slots); :meth:`scoring_note` then says so."""
        return self.match_slots(self.separate(mixtures, noise), mixtures, references, evaluation)

    def match_slots(self, est: torch.Tensor, mixtures: torch.Tensor, references: torch.Tensor,
                    evaluation: dict) -> torch.Tensor:
        """``est: [B, K', *d]`` -> ``[B, K, *d]`` for ``K' > K`` references, by ``evaluation.extra_slots``."""
        k = references.shape[1]
        if est.shape[1] == k:
            return est
        if evaluation.get("extra_slots", "label_free") == "oracle_assignment":
            return reduce_slots_oracle(est, references, tau=self.cfg["mixit"]["tau"])
        return reduce_slots(est, k, mixtures, self.cfg["mixit"].get("teacher_reduction", "top_energy"))

    def scoring_note(self, evaluation: dict, n_references: int | None = None) -> str:
        """How the scored estimates were made, when that is not plain :meth:`separate` ('' = nothing to say);
        recorded in ``metrics.json`` and footnoted on the method's table row."""
        k = n_references or self.n_sources
        return slot_note(self.display_name or self.name, self.n_sources, k, evaluation, self.cfg) if self.n_sources > k else ""

    def set_teacher(self, teacher: "Method") -> None:
        """Receive the trained frozen teacher (the method named by ``teacher``)."""

    # ---- helpers shared by methods ----------------------------------------------------------
    def make_model(self, role_key: str, role: str | None = None, n_sources: int | None = None) -> nn.Module:
        """Build the configured model ``models.<role_key>`` for a role (flow, regression, score).

        A flow model is wrapped as ``training.flow_preconditioning`` says (``surfbench.flow.precondition_flow``).
        """
        models = self.cfg.get("models", {})
        if role_key not in models:
            raise KeyError(f"domains.{self.cfg.get('domain')}.models.{role_key} is not configured (method {self.name})")
        role = role or ("regression" if role_key == "mixit" else role_key)
        k = n_sources if n_sources is not None else self.n_sources
        model = build_model(models[role_key], role, k, self.shape)
        if role == "flow":
            model = precondition_flow(model, k, self.training_cfg)
        return model.to(self.device)

    @staticmethod
    def mixture_consistent(est: torch.Tensor, mixtures: torch.Tensor) -> torch.Tensor:
        """Project K estimates so they sum to the mixture: x̂ + (m - Σx̂)/K (mixture consistency)."""
        return project_perp(est) + mixtures.unsqueeze(1) / est.shape[1]

    def modules_to_save(self) -> dict[str, nn.Module]:
        """Modules whose weights a checkpoint / ``model.pt`` holds (default: every nn.Module attribute except a frozen teacher)."""
        out = {}
        for k, v in vars(self).items():
            if isinstance(v, nn.Module) and not getattr(v, "_surfbench_frozen_teacher", False):
                out[k] = v.module if hasattr(v, "module") and isinstance(v, nn.parallel.DistributedDataParallel) else v
        return out

    def eval_modules(self) -> None:
        for m in self.modules_to_save().values():
            m.eval()

    @staticmethod
    def frozen_copy(module: nn.Module) -> nn.Module:
        m = copy.deepcopy(module)
        m.requires_grad_(False)
        m.eval()
        return m

    @classmethod
    def metadata(cls) -> dict:
        return {
            "name": cls.name,
            "display_name": cls.display_name or cls.name,
            "supervised": cls.supervised,
            "generative": cls.generative,
            "citation": cls.citation,
            "domains": list(cls.domains),
            "training_data": cls.training_data,
            "teacher": cls.teacher,
            "tables": list(cls.tables) if cls.tables else None,
        }


#: what each label-free rule (``mixit.teacher_reduction``) does, for the tables' footnote
REDUCTION_TEXT = {
    "top_energy": "the {k} most energetic slots kept, the remainder of the mixture spread equally over them",
    "merge_closest": "the {k} most energetic slots kept, every other slot added to the kept slot it is most "
                     "similar to (cosine)",
}


def slot_note(who: str, m: int, k: int, evaluation: dict, cfg: dict) -> str:
    """The footnote of a row whose ``m`` output slots were scored against ``k`` references."""
    if evaluation.get("extra_slots", "label_free") == "oracle_assignment":
        return (f"{who} scored with an oracle: each of its {m} output slots assigned to one of the {k} references, "
                f"the assignment whose per-reference sums best match them (30 dB-capped log-MSE; Wisdom et al. "
                f"2020, Eq. 3) (evaluation.extra_slots: oracle_assignment)")
    rule = cfg["mixit"].get("teacher_reduction", "top_energy")
    return (f"{who} scored without the references, its {m} output slots reduced to {k} as for the teachers: "
            f"{REDUCTION_TEXT[rule].format(k=k)} (mixit.teacher_reduction: {rule})")

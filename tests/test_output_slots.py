"""``training.output_slots``: a model with more output slots K' than the K sources of the data (Tables 7-8:
the MB-TFLocoformer has 4, also for two-source Libri2Mix).

* supervised methods train the extra slots towards silent sources (zero padding, as FUSS pads references);
* every method is scored after ``evaluation.extra_slots`` matches its K' slots to the K references, and its row
  says so;
* the K' slots run through training, remixing and evaluation end to end.
"""
from __future__ import annotations

import json

import pytest
import torch

from surfbench.config import validate
from surfbench.separation import reduce_slots_oracle, reduce_slots_top_energy
from surfbench.train import TrainingError, make_batch, output_slots
from test_determinism import run_config, tiny_cfg, tiny_mnist  # noqa: F401 - the session fixture


def test_supervised_batches_get_silent_extra_slots():
    src = torch.arange(24.0).view(2, 3, 4)[:, :2]  # [B=2, K=2, T=4]
    b = make_batch("sources", src, "audio", {}, torch.Generator(), "cpu", slots=4)
    assert b["sources"].shape == (2, 4, 4)
    assert torch.equal(b["sources"][:, :2], src) and not b["sources"][:, 2:].any()
    assert torch.equal(b["mixture"], src.sum(1))  # the mixture is the data's, silent slots add nothing
    assert set(make_batch("mixtures", src, "audio", {}, torch.Generator(), "cpu", slots=4)) == {"mixture"}
    assert torch.equal(make_batch("sources", src, "audio", {}, torch.Generator(), "cpu", slots=2)["sources"], src)


def test_output_slots_resolves_and_refuses_by_name():
    cfg = {"method": "supervised_flow", "dataset": "libri2mix", "training": {"output_slots": None}}
    assert output_slots(cfg, 2) == 2
    cfg["training"]["output_slots"] = 4
    assert output_slots(cfg, 2) == 4
    with pytest.raises(TrainingError, match="output_slots = 4 is fewer"):
        output_slots(cfg, 5)
    with pytest.raises(TrainingError, match="no extra slots"):
        output_slots({**cfg, "method": "basis"}, 2, "single_sources")
    assert validate({"training": {"output_slots": 4}})["training"]["output_slots"] == 4
    assert validate({})["training"]["output_slots"] is None


def test_extra_slots_are_matched_to_the_references_by_the_evaluation_rule():
    """Hand-made: 3 slots, 2 references; slot 2 is a quiet piece of reference 0."""
    from surfbench.registry import registry

    cfg = tiny_cfg()
    method = registry().get("average")(run_config(cfg, "average"), (4,), 3)
    ref = torch.tensor([[[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 1.0]]])
    est = torch.stack([ref[:, 0] * 0.9, ref[:, 1], ref[:, 0] * 0.1], 1)
    mix = ref.sum(1)
    label_free = method.match_slots(est, mix, ref, {"extra_slots": "label_free"})
    torch.testing.assert_close(label_free, reduce_slots_top_energy(est, 2, mix))
    oracle = method.match_slots(est, mix, ref, {"extra_slots": "oracle_assignment"})
    torch.testing.assert_close(oracle, ref)  # 0.9 r0 + 0.1 r0 = r0, exactly: the oracle adds slot 2 to slot 0
    torch.testing.assert_close(oracle, reduce_slots_oracle(est, ref))
    assert method.match_slots(est[:, :2], mix, ref, {"extra_slots": "oracle_assignment"}) is not None
    assert "3 output slots" in method.scoring_note({"extra_slots": "oracle_assignment"}, 2)
    assert method.scoring_note({"extra_slots": "label_free"}, 3) == ""  # as many slots as references: nothing to say


@pytest.mark.parametrize("method", ["supervised_flow", "surf_self_remixing"])
def test_more_slots_than_sources_train_and_evaluate_end_to_end(method, tiny_mnist, tmp_path):  # noqa: F811
    from surfbench.evaluate import evaluate
    from surfbench.train import load_trained, train

    cfg = tiny_cfg(steps=2, output_slots=3)
    teacher = None
    if method == "surf_self_remixing":
        teacher = tmp_path / "mixit.pt"
        train(run_config(cfg, "mixit"), tiny_mnist, teacher, tmp_path / "ck_mixit", device="cpu", progress=False)
    rc = run_config(cfg, method)
    out = tmp_path / method
    train(rc, tiny_mnist, out / "model.pt", tmp_path / "ck", device="cpu", progress=False, teacher_path=teacher)
    trained = load_trained(out / "model.pt", "cpu")
    assert trained.n_sources == 3
    from surfbench.seeding import ItemNoise

    m = torch.rand(2, 1, 28, 28) * 0.5
    est = trained.separate(m, ItemNoise(0, [0, 1]))
    assert est.shape == (2, 3, 1, 28, 28)
    torch.testing.assert_close(est.sum(1), m, rtol=0, atol=1e-5)  # mixture consistent over all 3 slots
    ecfg = {**cfg["evaluation"], "extra_slots": "oracle_assignment"}
    evaluate(rc, ecfg, out / "model.pt", tiny_mnist, "table1", out, device="cpu", cache_dir=tmp_path / "c", progress=False)
    blob = json.loads((out / "metrics.json").read_text())
    assert blob["n_items"] == 2 * blob["n_mixtures"]  # scored against the 2 references, not 3 slots
    assert "3 output slots" in blob["scoring_note"] and blob["metrics"]["psnr"]["available"]
    assert blob["evaluation"]["extra_slots"] == "oracle_assignment"  # the settings it ran with, recorded

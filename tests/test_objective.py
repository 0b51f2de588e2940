"""The EG objective is the sum of its terms (training/objective.py, training/terms/):

- every preset's EG-step terms equal the record made by the code before issue 30 made the
  DRMM's terms plug-in terms (tests/objective_golden.py), names and values;
- a new term is one class and one config entry: defined here, configured by name, it is summed
  and logged without touching the step;
- an unknown term, an unknown option of a known one, or an option of the wrong type is refused
  by the schema, naming the key and the valid ones, before any data is read;
- checkpoints written before issue 30 (the old objective layout) load and resume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import Tensor

from drmm_lightning.cli.checkpoints import experiment_differences, objective_of
from drmm_lightning.cli.config import check_types
from drmm_lightning.cli.train import train
from drmm_lightning.training import DRMMLitModule, EGObjective
from drmm_lightning.training.objective import upgrade_config
from drmm_lightning.training.terms import MeanTeacher, StepContext, Term

from . import objective_golden as golden
from .conftest import make_config

FIXTURES = Path(__file__).parent / "fixtures"
OLD_CHECKPOINT = FIXTURES / "old_layout.ckpt"


# VAT's value is a KL divergence at a perturbation of the size of float32 rounding (its finite
# difference): the memory layout alone (channels-last or not) moves it by 12% on one step, so
# it is held to 25%, every other term to 1e-5.
RELATIVE_TOLERANCE = {"vat": 0.25}


def test_every_preset_computes_the_recorded_terms() -> None:
    """The golden record (tests/fixtures/objective_golden.json, from the code before issue 30):
    every preset's and objective config's logged term names, their values and the loss."""
    recorded = json.loads(golden.RECORD.read_text())
    measured = golden.record()
    assert sorted(measured) == sorted(recorded), "regenerate the record only for a new preset"
    for case, steps in recorded.items():
        for want, got in zip(steps, measured[case], strict=True):
            assert sorted(got["terms"]) == sorted(want["terms"]), case
            slack = 0.0  # what VAT's tolerance lets into the loss
            for name, value in want["terms"].items():
                rel = RELATIVE_TOLERANCE.get(name, 1e-5)
                assert math.isclose(got["terms"][name], value, rel_tol=rel, abs_tol=1e-6), (
                    case,
                    name,
                )
                if name in RELATIVE_TOLERANCE:
                    slack += 10 * abs(got["terms"][name] - value)
            assert math.isclose(got["loss"], want["loss"], rel_tol=1e-5, abs_tol=1e-6 + slack), case


class TwiceTheCrossEntropy(Term):
    """A throwaway term: twice the labeled images' cross-entropy."""

    name = "test_twice_ce"

    def __init__(self, weight: float = 1.0, factor: float = 2.0) -> None:
        super().__init__(weight)
        self.factor = factor

    def forward(self, ctx: StepContext) -> Tensor:
        assert ctx.labels is not None
        return self.factor * torch.nn.functional.cross_entropy(ctx.logits[ctx.labeled], ctx.labels)


def test_a_new_term_is_one_class_and_one_config_entry(tmp_path: Path) -> None:
    terms = {"cross_entropy": {"weight": 1.0}, "test_twice_ce": {"weight": 0.5, "factor": 3.0}}
    objective = EGObjective.from_config({"terms": terms})
    module = DRMMLitModule(**golden.TINY_MODEL, objective={"terms": terms})
    batch = golden.tiny_batches(1).dataset[0]
    out = objective(module.net, batch["labeled"], batch["unlabeled"])
    assert set(out.terms) == {"cross_entropy", "test_twice_ce"}  # logged as train/<name>
    assert torch.allclose(out.terms["test_twice_ce"], 3 * out.terms["cross_entropy"])
    assert torch.allclose(out.loss, out.terms["cross_entropy"] + 0.5 * out.terms["test_twice_ce"])
    assert out.rendered is None  # no term asked for the rendering: nothing was rendered
    # the schema knows it by name, with its options typed
    check_types(
        make_config(tmp_path / "a", "objective=dcn", "+objective.terms.test_twice_ce.weight=1")
    )
    with pytest.raises(ValueError, match=r"objective.terms.test_twice_ce.factor='x'.*Float"):
        check_types(make_config(tmp_path / "b", "+objective.terms.test_twice_ce.factor=x"))


REFUSED = [
    (
        ["+objective.terms.fixmatch.weight=1"],
        r"Unknown setting objective.terms.fixmatch; valid keys here: class_balance, "
        r"cross_entropy, kl, .*reconstruction, .*vat",
    ),
    (
        ["objective=vat", "+objective.terms.vat.epsilon=1"],
        r"Unknown setting objective.terms.vat.epsilon; valid keys here: weight, eps, xi, "
        r"iterations\.",
    ),
    (
        ["+objective.terms.kl.prior=1"],
        r"Unknown setting objective.terms.kl.prior; valid keys here: weight\.",
    ),
    (  # issue 31: the old layout's weights are refused with the objective's keys
        ["+objective.weights.kl=1"],
        r"Unknown setting objective.weights; valid keys here: estep, cost_mode, .*terms",
    ),
    (
        ["objective=pseudo_label", "objective.terms.pseudo_label.threshold=abc"],
        r"objective.terms.pseudo_label.threshold='abc': .*Float",
    ),
]


@pytest.mark.parametrize("overrides,message", REFUSED, ids=[r[0][-1] for r in REFUSED])
def test_a_bad_term_is_refused_by_name_with_the_valid_keys(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        check_types(make_config(tmp_path / "run", *overrides))


def test_a_bad_term_stops_drmm_train_before_any_data_is_read(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path / "run",
        "objective=pseudo_label",
        "objective.terms.pseudo_label.threshold=abc",
        f"paths.data_dir={tmp_path / 'no_data'}",
        "data.download=false",
        "logger=csv",
    )
    with pytest.raises(ValueError, match="objective.terms.pseudo_label.threshold='abc'"):
        train(cfg)
    assert not (tmp_path / "no_data").exists()


# conf/objective/nn_kl.yaml as the code before issue 30 composed it (checkpoints hold this)
OLD_NN_KL: dict[str, Any] = {
    "weights": {
        "cross_entropy": 1.0,
        "reconstruction": 1.0,
        "kl": 0.5,
        "class_balance": 0.0,
        "nonneg": 0.5,
        "layer_reconstruction": 0.0,
        "render_ce": 0.0,
        "marginal": 0.0,
        "render_consistency": 0.0,
    },
    "estep": "hard",
    "cost_mode": "both",
    "posterior_grad": False,
    "denoise_std": 0.0,
    "switch_dropout": 0.0,
    "posterior_batch": 32,
    "terms": {},
    "evaluate_teacher": False,
}


def test_the_old_layout_is_the_same_experiment(tmp_path: Path) -> None:
    """An old run config's objective translates to today's: the same experiment for
    ckpt_path=last, and today's nn_kl composes to exactly the translation."""
    from omegaconf import OmegaConf

    cfg = make_config(tmp_path / "run", "render=adjoint")  # normalized drops the NN term
    new = OmegaConf.to_container(cfg.objective, resolve=True)
    assert upgrade_config(OLD_NN_KL) == new
    assert experiment_differences({"objective": OLD_NN_KL}, {"objective": new}) == []
    old_marginal = {**OLD_NN_KL, "weights": {**OLD_NN_KL["weights"], "marginal": 1.0}}
    assert objective_of(old_marginal) != objective_of(new)


def test_a_checkpoint_of_the_old_layout_loads_and_resumes(tmp_path: Path) -> None:
    """tests/fixtures/old_layout.ckpt: a tiny model trained one step by the code before issue 30,
    its objective in the old layout with a mean teacher."""
    saved = torch.load(OLD_CHECKPOINT, map_location="cpu", weights_only=False)
    assert "weights" in saved["hyper_parameters"]["objective"]  # the old layout
    module = DRMMLitModule.load_from_checkpoint(OLD_CHECKPOINT, map_location="cpu")
    terms = module.objective.terms
    assert list(terms)[:4] == ["cross_entropy", "kl", "class_balance", "reconstruction"]
    assert terms["render_ce"].posterior_batch == 4 and terms["mean_teacher"].rampup_steps == 2
    teacher = cast(MeanTeacher, terms["mean_teacher"]).teacher
    assert teacher is not None
    key = next(k for k in saved["state_dict"] if k.startswith("objective.terms.mean_teacher."))
    assert torch.equal(
        teacher.state_dict()[key.removeprefix("objective.terms.mean_teacher.teacher.")],
        saved["state_dict"][key],
    )
    trainer = golden.quiet_trainer(max_steps=2, default_root_dir=tmp_path)
    fresh = DRMMLitModule(**golden.TINY_MODEL, objective=golden.OLD_OBJECTIVE)
    trainer.fit(fresh, train_dataloaders=golden.tiny_batches(2), ckpt_path=OLD_CHECKPOINT)
    assert trainer.global_step == 2
    today = {**saved["run_config"], "objective": upgrade_config(golden.OLD_OBJECTIVE)}
    assert experiment_differences(saved["run_config"], today) == []

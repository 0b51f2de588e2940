"""The peer objectives of issue 21 as plug-in terms: pseudo-label, VAT, mean teacher. Each is
checked against its paper's definition, runs an EG step in every regime that makes sense (and
is refused, by name, where it does not), and composes with the DRMM's reconstruction."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from drmm_lightning.cli.eval import evaluate
from drmm_lightning.cli.train import validate
from drmm_lightning.data import STREAMS
from drmm_lightning.models import build_model
from drmm_lightning.training import DRMMLitModule
from drmm_lightning.training.objective import EGObjective
from drmm_lightning.training.terms import VAT, MeanTeacher, PseudoLabel, StepContext
from drmm_lightning.training.terms.pseudo_label import pseudo_labels
from drmm_lightning.training.terms.vat import adversarial_perturbation, kl_divergence

from .conftest import make_config
from .test_data import quiet_trainer
from .test_resume import drmm_train, runs, weights

CNN = {"cross_entropy": {"weight": 1.0}}  # the same-architecture CNN's only term
PEERS = ("pseudo_label", "vat", "mean_teacher")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)
    ).eval()


# ----- VAT ---------------------------------------------------------------------------------------
def test_vat_direction_raises_the_kl_more_than_a_random_one_of_the_same_norm() -> None:
    net, x = small_net(), torch.rand(16, 1, 12, 12)
    clean = net(x).detach()
    torch.manual_seed(1)
    r_adv = adversarial_perturbation(net, x, clean, eps=0.5)
    r_rand = torch.randn_like(x)
    r_rand = r_rand * (0.5 / r_rand.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    assert torch.allclose(r_adv.flatten(1).norm(dim=1), torch.full((16,), 0.5), rtol=1e-4)
    adversarial, random = (kl_divergence(clean, net(x + r)) for r in (r_adv, r_rand))
    assert adversarial > 5 * random


def test_vat_with_eps_zero_is_zero_and_no_gradient_reaches_the_perturbation() -> None:
    net, x = small_net(), torch.rand(8, 1, 12, 12)
    clean = net(x)
    r_adv = adversarial_perturbation(net, x, clean, eps=0.3)
    assert not r_adv.requires_grad and r_adv.grad_fn is None
    assert all(p.grad is None for p in net.parameters())  # the power iteration trains nothing
    assert adversarial_perturbation(net, x, clean, eps=0.0).abs().max() == 0
    model = build_model("drmm2", num_classes=4)
    ctx = StepContext(
        model, torch.rand(4, 1, 28, 28), None, model(torch.rand(4, 1, 28, 28)), 0, None
    )
    assert VAT(eps=0.0)(ctx) == 0


def test_vat_perturbation_is_in_pixel_units_for_standardised_inputs() -> None:
    net, x = small_net(), torch.rand(4, 1, 12, 12)
    r = adversarial_perturbation(net, x, net(x), eps=0.3, pixel_std=torch.tensor([0.5]))
    assert torch.allclose((r * 0.5).flatten(1).norm(dim=1), torch.full((4,), 0.3), rtol=1e-4)


def test_vat_leaves_batch_norm_statistics_alone() -> None:
    model = build_model("drmm2", num_classes=4).train()
    x = torch.rand(6, 1, 28, 28)
    ctx = StepContext(model, x, None, model(x).detach(), 0, None)  # the step's own pass
    before = copy.deepcopy(model.state_dict())
    VAT()(ctx)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" in k)


# ----- mean teacher ------------------------------------------------------------------------------
def test_mean_teacher_after_one_step_is_the_ema_of_the_student(tmp_path: Path) -> None:
    from .test_precision import synthetic_dm

    objective = {"terms": {**CNN, "mean_teacher": {"rampup_steps": 10}}}
    module = DRMMLitModule(arch="drmm2", num_classes=4, objective=objective)
    initial = copy.deepcopy(module.net)
    quiet_trainer(tmp_path, max_steps=1).fit(module, datamodule=synthetic_dm())
    term = module.objective.terms["mean_teacher"]
    assert isinstance(term, MeanTeacher) and term.teacher is not None
    teacher = term.teacher
    decay = 0.99  # step 0 is in the ramp-up
    for (name, t), s, old in zip(
        teacher.named_parameters(), module.net.parameters(), initial.parameters()
    ):
        torch.testing.assert_close(t, decay * old + (1 - decay) * s, msg=name)
        assert not t.requires_grad
    # buffers are the teacher's own: its one forward pass in training mode counted one batch
    counts = [b for n, b in teacher.named_buffers() if n.endswith("num_batches_tracked")]
    assert counts and all(int(c) == 1 for c in counts)


def test_mean_teacher_weight_and_decay_follow_the_ramp_up() -> None:
    term = MeanTeacher(weight=100.0, rampup_steps=400)
    assert term.scale(0) == pytest.approx(100 * torch.exp(torch.tensor(-5.0)).item())
    assert term.scale(200) == pytest.approx(100 * torch.exp(torch.tensor(-1.25)).item())
    assert term.scale(400) == term.scale(5000) == 100.0
    assert (term.decay(399), term.decay(400)) == (0.99, 0.999)


def test_evaluate_teacher_evaluates_the_teacher_and_needs_one() -> None:
    objective = {"terms": {**CNN, "mean_teacher": {}}, "evaluate_teacher": True}
    module = DRMMLitModule(arch="drmm2", num_classes=4, objective=objective)
    assert module.eval_net is module.objective.terms["mean_teacher"].teacher
    assert DRMMLitModule(arch="drmm2", num_classes=4).eval_net is not None
    with pytest.raises(ValueError, match="evaluate_teacher=true needs .*mean_teacher"):
        EGObjective.from_config({"evaluate_teacher": True})


@pytest.mark.slow
def test_killed_mean_teacher_run_resumes_the_same_teacher(tmp_path: Path, mnist: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir()
    cut.mkdir()
    # input noise on student and teacher: the resumed run must draw the same noise too
    args = ["objective=mean_teacher", "trainer.max_epochs=1"]
    assert drmm_train(whole, *args).returncode == 0
    killer = ["+callbacks.kill._target_=tests.stop_at.SignalAt", "+callbacks.kill.step=13"]
    assert drmm_train(cut, *args, *killer).returncode == -9
    resumed = drmm_train(cut, *args, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(runs(whole)[0]), weights(runs(cut)[-1])
    teacher = [k for k in a if k.startswith("objective.terms.mean_teacher.teacher.")]
    assert teacher and a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    # drmm-eval tests the student by default and the teacher with evaluate_teacher=true
    ckpt = runs(whole)[0] / "checkpoints" / "last.ckpt"
    losses = [
        evaluate(
            make_config(
                tmp_path / f"eval_{flag}",
                f"ckpt_path={ckpt}",
                f"evaluate_teacher={flag}",
                "trainer.limit_test_batches=1",
                name="eval",
            )
        )["test/loss"]
        for flag in ("false", "true")
    ]
    assert losses[0] != losses[1]


# ----- pseudo-label ------------------------------------------------------------------------------
def test_pseudo_labels_are_the_detached_argmax_and_the_threshold_masks() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.2], [0.0, 3.0, 0.0]], requires_grad=True)
    labels, keep = pseudo_labels(logits, threshold=0.5)
    assert torch.equal(labels, logits.argmax(1)) and not labels.requires_grad
    assert keep.tolist() == [1.0, 0.0, 1.0]
    model = build_model("drmm2", num_classes=3)
    x = torch.rand(4, 1, 28, 28)
    ctx = StepContext(model, x, torch.tensor([0]), torch.cat([logits[:1], logits]), 0, None)
    PseudoLabel(threshold=0.5)(ctx).backward()
    assert logits.grad is not None and logits.grad[1].abs().max() == 0  # below: no gradient
    assert logits.grad[2].abs().max() > 0


def test_pseudo_label_weight_follows_lees_ramp_at_three_steps() -> None:
    term = PseudoLabel(weight=3.0, ramp_start=200, ramp_end=1200)
    assert term.scale(100) == 0.0  # before T1
    assert term.scale(700) == pytest.approx(3.0 * 500 / 1000)  # alpha_f (t - T1) / (T2 - T1)
    assert term.scale(1500) == 3.0  # after T2


# ----- every peer in the EG step -----------------------------------------------------------------
@pytest.mark.parametrize("peer", list(PEERS))
@pytest.mark.parametrize("regime", ["semi_sup", "sup", "unsup"])
def test_each_peer_runs_an_eg_step_where_it_makes_sense(peer: str, regime: str) -> None:
    objective = EGObjective.from_config({"terms": {**CNN, peer: {}}})
    torch.manual_seed(0)
    model = build_model("drmm2", num_classes=4, render_path="normalized")
    objective.bind(model)
    if any(objective.plugins()[-1].streams - set(STREAMS[regime])):  # the peer: summed last
        with pytest.raises(ValueError, match=f"objective.terms.{peer} needs"):
            objective.check_streams(regime, STREAMS[regime])
        return
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 4, (4,))
    labeled = (x[:4], y) if "labeled" in STREAMS[regime] else None
    unlabeled = x[4:] if "unlabeled" in STREAMS[regime] else None
    out = objective(model, labeled, unlabeled, step=5000)  # past every ramp
    assert peer in out.terms and torch.isfinite(out.loss)
    out.loss.backward()


@pytest.mark.parametrize("peer", list(PEERS))
def test_each_peer_composes_with_the_reconstruction(peer: str) -> None:
    terms = {**CNN, "reconstruction": {"weight": 1.0}, peer: {}}
    objective = EGObjective.from_config({"terms": terms})
    model = build_model("drmm2", num_classes=4, render_path="normalized")
    objective.bind(model)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 4, (4,))
    out = objective(model, (x[:4], y), x[4:], step=5000)
    assert {peer, "reconstruction", "cross_entropy"} <= set(out.terms)
    expected = out.terms["cross_entropy"] + out.terms["reconstruction"]
    expected = expected + objective.plugins()[-1].scale(5000) * out.terms[peer]
    torch.testing.assert_close(out.loss.detach(), expected)


@pytest.mark.parametrize("regime", ["sup", "unsup_pretr"])
def test_pseudo_label_is_refused_by_name_where_labels_and_unlabeled_never_meet(
    tmp_path: Path, regime: str
) -> None:
    cfg = make_config(tmp_path, "objective=pseudo_label", f"regime={regime}")
    with pytest.raises(
        ValueError, match="objective.terms.pseudo_label needs labeled and unlabeled"
    ):
        validate(cfg)
    for peer in ("vat", "mean_teacher"):  # consistency terms work on whatever images come
        validate(make_config(tmp_path, f"objective={peer}", f"regime={regime}"))


def test_unknown_terms_and_options_are_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="Unknown objective.terms entry 'fixmatch'; valid: "):
        EGObjective.from_config({"terms": {"fixmatch": {}}})
    with pytest.raises(
        ValueError, match=r"Unknown option\(s\) \['epsilon'\] of objective.terms.vat"
    ):
        EGObjective.from_config({"terms": {"vat": {"epsilon": 1.0}}})

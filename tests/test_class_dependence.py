"""Options that make the rendering depend on the class (issue: the DRMM classifies by
rendering): prior-mean switches for the lowest layers, the per-class E-step, switch dropout and
the rendering-based posterior terms. Each must take effect and keep the class in the rendering."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import torch

from drmm_lightning.models import DRMM, build_model, render_every_class
from drmm_lightning.models.posterior import class_estep, class_render_errors
from drmm_lightning.training import DRMMLitModule
from drmm_lightning.training.objective import EGObjective


def _model(**kwargs) -> DRMM:
    torch.manual_seed(0)
    model = build_model("drmm5_nrm", render_path="normalized", leak=0.1, **kwargs)
    model.train()
    for _ in range(3):  # move the switch priors and norms off their initial values
        model.infer(torch.randn(16, 1, 28, 28))
    return model.eval()


def _swap_layer_switches(inference, layer: int):
    """The inference with the first two images' switches exchanged at one layer."""
    sw = inference.switches[layer]
    order = torch.tensor([1, 0, *range(2, len(sw.a))])
    swapped = type(sw)(sw.a[order], None if sw.t is None else sw.t[order], sw.size, sw.scale)
    switches = list(inference.switches)
    switches[layer] = swapped
    return type(inference)(inference.logits, inference.features, switches)


@pytest.mark.parametrize("prior_layers", [1, 2, 3])
def test_prior_layers_render_the_lowest_layers_from_the_prior_mean(prior_layers: int) -> None:
    model = _model(prior_layers=prior_layers)
    inference = model.infer(torch.randn(4, 1, 28, 28))
    classes = torch.zeros(4, dtype=torch.long)
    rendered = model.render(inference, classes).image
    # the image's own switches at a layer below prior_layers no longer matter ...
    low = model.render(_swap_layer_switches(inference, prior_layers - 1), classes).image
    torch.testing.assert_close(low, rendered)
    # ... those above do, the class does, and the option changes the rendering
    high = model.render(_swap_layer_switches(inference, prior_layers), classes).image
    assert not torch.allclose(high[:2], rendered[:2])
    assert not torch.allclose(model.render(inference, classes + 1).image, rendered)
    model.prior_layers = 0
    assert not torch.allclose(model.render(inference, classes).image, rendered)


def test_prior_mean_switches_are_the_expectation_of_sampled_ones() -> None:
    torch.manual_seed(0)
    model = build_model("drmm2", render_path="adjoint").eval()
    layer = model.rendering_layers[0]
    layer.prior_a.uniform_(0.1, 0.9)
    layer.prior_t.copy_(torch.softmax(torch.randn_like(layer.prior_t), dim=-1))
    z = torch.randn(1, *model.rendering_layers[1].conv.weight.shape[1:2], 12, 12)
    expected = layer.render_expected(z, None).detach()
    draws = 4000
    sampled = layer.sample_switches(draws, torch.Generator().manual_seed(1))
    average = layer.render(z.expand(draws, -1, -1, -1), sampled, fold_gain=False).mean(0).detach()
    torch.testing.assert_close(
        average, expected[0], atol=0.05 * expected.abs().max().item(), rtol=0
    )


def test_per_class_estep_re_infers_the_switches_for_each_class() -> None:
    model = _model()
    x = torch.randn(4, 1, 28, 28)
    inference = model.infer(x)
    plain = render_every_class(model, inference)
    refined = render_every_class(model, inference, x, estep_steps=2)
    assert refined.shape == plain.shape
    assert not torch.allclose(refined, plain)  # the option is not ignored
    a = class_estep(model, x, inference, torch.zeros(4, dtype=torch.long), 1).switches
    b = class_estep(model, x, inference, torch.full((4,), 7), 1).switches
    assert any(not torch.equal(sa.a, sb.a) for sa, sb in zip(a, b))  # g_c depends on c
    with pytest.raises(ValueError, match="images"):
        render_every_class(model, inference, estep_steps=1)


def test_render_argmin_estep_reaches_the_evaluation_metric() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    module = DRMMLitModule(arch="drmm5_nrm", render_argmin_estep=2).eval()
    with patch(
        "drmm_lightning.training.module.class_render_errors", wraps=class_render_errors
    ) as spy:
        module.evaluate((x, y), "test")
        seen = [call.args[3] for call in spy.call_args_list]
    assert seen == [2]
    with pytest.raises(ValueError, match="render_argmin_estep must be >= 0"):
        DRMMLitModule(arch="drmm2", render_argmin_estep=-1)


NORMALIZED = {"render_path": "normalized", "leak": 0.1}


@pytest.mark.parametrize(("arch", "kwargs"), [("drmm5_nrm", NORMALIZED), ("rfm", {})])
def test_render_argmin_leaves_the_logged_reconstruction_unchanged(arch, kwargs) -> None:
    """The logged reconstruction is the model's own rendering (the inferred class's template, or
    a factor top's code E[z | I]) whether or not every class is also rendered for render-argmin:
    the RFM's class renderings are not its reconstruction."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    with_argmin = DRMMLitModule(arch=arch, arch_kwargs=kwargs).eval()
    alone = DRMMLitModule(arch=arch, arch_kwargs=kwargs, render_argmin=False).eval()
    alone.load_state_dict(with_argmin.state_dict())
    with torch.no_grad():
        for module in (with_argmin, alone):
            module.evaluate((x, y), "test")
    assert with_argmin.test_argmin.update_count == 1 and alone.test_argmin.update_count == 0
    torch.testing.assert_close(with_argmin.test_rec.compute(), alone.test_rec.compute())


def test_switch_dropout_draws_switches_from_the_priors_in_training_renders() -> None:
    model = _model()
    x = torch.randn(8, 1, 28, 28)
    torch.manual_seed(1)
    plain = EGObjective.from_config({})(model, None, x).rendered
    torch.manual_seed(1)
    dropped = EGObjective.from_config({"switch_dropout": 0.5})(model, None, x).rendered
    assert plain is not None and dropped is not None
    assert not torch.allclose(plain, dropped)
    inference = model.infer(x)
    kept = model.drop_switches(inference, 0.0)
    assert all(torch.equal(a.a, b.a) for a, b in zip(kept.switches, inference.switches))
    redrawn = model.drop_switches(inference, 0.999)
    on = torch.stack([s.a.float().mean() for s in redrawn.switches])
    prior = torch.stack([layer.prior_a.mean() for layer in model.rendering_layers])
    torch.testing.assert_close(on, prior, atol=0.05, rtol=0)


def _terms(weights: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
    model = _model()
    model.train()
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    objective = EGObjective.from_config({"weights": weights, "posterior_batch": 4})
    out = objective(model, (x, y), torch.randn(6, 1, 28, 28))
    template_grad, logit_grad = torch.autograd.grad(
        out.loss, [model.classifier.weight, out.inference.logits], allow_unused=True
    )
    return out.terms, template_grad, logit_grad


def test_render_ce_trains_the_class_templates_through_the_rendering() -> None:
    base = {"cross_entropy": 0.0, "kl": 0.0, "nonneg": 0.0, "reconstruction": 0.0}
    terms, template_grad, logit_grad = _terms({**base, "render_ce": 1.0})
    assert terms["render_ce"] > 0
    assert template_grad is not None and template_grad.abs().sum() > 0
    assert logit_grad is None or logit_grad.abs().sum() == 0  # only through the rendering


@pytest.mark.parametrize("stream", ["labeled", "unlabeled"])
def test_render_ce_targets_the_label_or_the_estep_class(stream: str) -> None:
    model = _model()
    model.train()
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 10, (5,))
    objective = EGObjective.from_config({"weights": {"render_ce": 1.0}, "posterior_batch": 5})
    torch.manual_seed(2)
    out = objective(model, (x, y), None) if stream == "labeled" else objective(model, None, x)
    torch.manual_seed(2)
    inference = model.infer(x)  # the same batch statistics as the step's E-step
    errors = (x[:, None] - render_every_class(model, inference)).pow(2).flatten(2).mean(2)
    target = y if stream == "labeled" else inference.logits.argmax(1)
    scale = x[0].numel() / (2 * out.terms["reconstruction"])
    expected = torch.nn.functional.cross_entropy(-scale * errors, target) / scale
    torch.testing.assert_close(out.terms["render_ce"], expected.detach(), rtol=1e-4, atol=1e-7)


def test_marginal_is_a_soft_minimum_of_the_class_rendering_errors() -> None:
    model = _model()
    x = torch.randn(5, 1, 28, 28)
    objective = EGObjective.from_config({"weights": {"marginal": 1.0}, "posterior_batch": 5})
    out = objective(model, None, x)
    errors = (x[:, None] - render_every_class(model, model.infer(x))).pow(2).flatten(2).mean(2)
    # between the smallest class error and that plus the prior's share, log(C) 2 sigma^2 / D
    low = errors.min(1).values.mean()
    slack = torch.log(torch.tensor(10.0)) * 2 * out.terms["reconstruction"] / x[0].numel()
    assert low - 1e-4 <= out.terms["marginal"] <= low + slack + 1e-4


def test_render_consistency_teaches_the_classifier_on_unlabeled_images() -> None:
    base = {"cross_entropy": 0.0, "kl": 0.0, "nonneg": 0.0, "reconstruction": 0.0}
    terms, _, logit_grad = _terms({**base, "render_consistency": 1.0})
    assert logit_grad is not None
    assert logit_grad[6:10].abs().sum() > 0  # the unlabeled rows rendered in every class
    assert logit_grad[:6].abs().sum() == 0 and logit_grad[10:].abs().sum() == 0
    assert set(terms) >= {"render_consistency"} and "render_ce" not in terms


@pytest.mark.parametrize(
    "build,config",
    [
        ({"prior_layers": 4}, None),
        ({"prior_layers": -1}, None),
        (None, {"switch_dropout": 1.0}),
        (None, {"posterior_batch": 0}),
        (None, {"weights": {"render_posterior": 1.0}}),
    ],
)
def test_bad_class_dependence_options_are_refused(build: dict | None, config: dict | None) -> None:
    with pytest.raises(ValueError, match="prior_layers|switch_dropout|posterior_batch|valid"):
        if build is not None:
            build_model("drmm5_nrm", **build)
        else:
            EGObjective.from_config(config)

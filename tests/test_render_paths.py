"""Render paths (adjoint, normalized), the class-informing options and classification by
rendering: shapes, fitting, gradient paths and bad input."""

from __future__ import annotations

import pytest
import torch

from drmm_lightning.cli.config import options
from drmm_lightning.data import resolve_data_root
from drmm_lightning.data.datasets import load_dataset
from drmm_lightning.models import (
    ARCHITECTURES,
    RENDER_PATHS,
    build_model,
    class_render_errors,
    classify_by_rendering,
    layer_reconstruction_error,
    reconstruction_error,
)
from drmm_lightning.models.posterior import euler_gap
from drmm_lightning.training.objective import EGObjective

from .conftest import make_config, run_cli

SHAPES = [(1, 28), (3, 32)]


@pytest.mark.parametrize("path", RENDER_PATHS)
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("channels,size", SHAPES)
def test_every_render_path_renders_the_input_shape(
    path: str, name: str, channels: int, size: int
) -> None:
    torch.manual_seed(0)
    model = build_model(name, channels, 10, size, render_path=path, leak=0.1 * (path != "adjoint"))
    x = torch.randn(3, channels, size, size)
    for mode in (model.train, model.eval):
        mode()
        inference = model.infer(x)
        rendering = model.render(inference)
        assert rendering.image.shape == x.shape
        assert inference.hidden is not None
        assert len(inference.hidden) == len(model.layers)
        for z in rendering.templates[1:]:  # z^(L-1) ... z^(1) have the bottom-up shapes
            assert z.shape in [h.shape for h in inference.hidden]


def test_normalized_path_has_its_own_top_down_norms_and_ties_the_convolutions() -> None:
    adjoint = build_model("drmm5_nrm", render_path="adjoint")
    normalized = build_model("drmm5_nrm", render_path="normalized")
    extra = {n for n, _ in normalized.named_parameters()} - {
        n for n, _ in adjoint.named_parameters()
    }
    assert extra and all(n.startswith("top_down.") for n in extra)
    assert normalized.top_down is not None
    assert normalized.top_down[0].num_features == 1  # the one-channel norm on the image
    # the transposed convolutions use the bottom-up weights: changing them changes the render
    x = torch.randn(4, 1, 28, 28)
    normalized.eval()
    inference = normalized.infer(x)
    before = normalized.render(inference, torch.zeros(4, dtype=torch.long)).image
    with torch.no_grad():
        normalized.rendering_layers[1].conv.weight.mul_(-1)
    after = normalized.render(inference, torch.zeros(4, dtype=torch.long)).image
    assert not torch.allclose(before, after)


def test_leaky_masks_pass_a_fraction_of_switched_off_units() -> None:
    torch.manual_seed(0)
    model = build_model("drmm2", render_path="normalized").eval()
    inference = model.infer(torch.randn(2, 1, 28, 28))
    layer, switches = model.rendering_layers[1], inference.switches[1]
    z = torch.randn(2, *model.feature_shape)
    exact = layer.render(z, switches, leak=0.0, fold_gain=False)
    leaky = layer.render(z, switches, leak=0.1, fold_gain=False)
    off_only = layer.render(z * ~switches.a, switches, leak=1.0, fold_gain=False)
    torch.testing.assert_close(leaky, exact + 0.1 * off_only)


@pytest.mark.parametrize("bad", [{"render_path": "exact"}, {"leak": 1.5}])
def test_unknown_render_path_or_bad_leak_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="adjoint|leak"):
        build_model("drmm2", **bad)


@pytest.mark.parametrize(
    "config",
    [{"posterior": True}, {"weights": {"layer_cost": 1.0}}, {"posterior_grad": True}],
)
def test_unknown_or_inconsistent_objective_options_are_refused(config: dict) -> None:
    with pytest.raises(ValueError, match="valid|estep=soft"):
        EGObjective.from_config(config)


def test_cli_refuses_an_unknown_render_path_before_any_work(tmp_path) -> None:
    result = run_cli("train", "model.arch_kwargs.render_path=exact", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "render_path" in result.stderr and "normalized" in result.stderr
    assert not (tmp_path / "outputs" / "train" / "runs").exists() or not any(
        (tmp_path / "outputs" / "train" / "runs").rglob("*.ckpt")
    )


def test_reconstruction_is_measured_in_pixel_units() -> None:
    pixels, rendered = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    mean, std = 0.13, 0.31
    standardised = reconstruction_error(
        (pixels - mean) / std, (rendered - mean) / std, torch.tensor([std])
    )
    torch.testing.assert_close(standardised, reconstruction_error(pixels, rendered))


def test_layer_costs_pair_each_rendered_template_with_its_layer() -> None:
    torch.manual_seed(0)
    model = build_model("drmm5_nrm", render_path="normalized")
    inference = model.infer(torch.randn(8, 1, 28, 28))
    templates = model.render(inference).templates
    assert inference.hidden is not None
    cost = layer_reconstruction_error(templates, inference.hidden)
    assert cost > 0
    # a rendering equal to the normalised bottom-up activations costs nothing
    perfect = [templates[0]] + [
        (h - h.mean(dim=(0, 2, 3), keepdim=True)) / h.std(dim=(0, 2, 3), keepdim=True)
        for h in reversed(inference.hidden[:-1])
    ]
    assert layer_reconstruction_error(perfect, inference.hidden) < 1e-10


def _posterior_gradient(posterior_grad: bool) -> torch.Tensor | None:
    """d reconstruction / d logits of an unlabeled batch under the soft E-step."""
    torch.manual_seed(0)
    model = build_model("drmm2", render_path="normalized")
    weights = {"cross_entropy": 0.0, "kl": 0.0, "nonneg": 0.0, "reconstruction": 1.0}
    objective = EGObjective.from_config(
        {"weights": weights, "estep": "soft", "posterior_grad": posterior_grad}
    )
    out = objective(model, None, torch.randn(8, 1, 28, 28))
    (grad,) = torch.autograd.grad(out.loss, out.inference.logits, allow_unused=True)
    return grad


def test_posterior_grad_sends_the_unlabeled_reconstruction_to_the_classifier() -> None:
    grad = _posterior_gradient(True)
    assert grad is not None and grad.abs().sum() > 0
    cut = _posterior_gradient(False)  # the detached soft E-step: no path into p(c|I)
    assert cut is None or cut.abs().sum() == 0


def test_denoising_infers_from_noisy_images_and_renders_the_clean_ones() -> None:
    torch.manual_seed(0)
    model = build_model("drmm2", render_path="normalized").eval()
    x = torch.rand(4, 1, 28, 28)
    clean = EGObjective.from_config({})(model, None, x)
    noisy = EGObjective.from_config({"denoise_std": 0.5})(model, None, x)
    assert not torch.allclose(clean.inference.logits, noisy.inference.logits)
    torch.testing.assert_close(noisy.generative_images, x)  # the target stays clean


def test_paper_presets_keep_the_papers_render_path_and_options(tmp_path) -> None:
    presets = [p for p in options("experiment") if p.startswith("paper/")]
    assert presets
    for preset in presets:
        cfg = make_config(tmp_path / preset.replace("/", "_"), f"experiment={preset}")
        assert cfg.model.arch_kwargs.render_path == "adjoint", preset
        assert cfg.model.arch_kwargs.leak == 0.0, preset
        assert not cfg.objective.posterior_grad and cfg.objective.denoise_std == 0, preset
        terms = cfg.objective.terms
        assert terms.layer_reconstruction.weight == 0, preset
        # and none of the class-dependence options (tests/test_class_dependence.py)
        assert cfg.model.arch_kwargs.prior_layers == 0 and cfg.objective.switch_dropout == 0
        posterior = (terms.render_ce, terms.marginal, terms.render_consistency)
        assert all(t.weight == 0 for t in posterior), preset


def test_render_argmin_equals_a_brute_force_loop_over_classes() -> None:
    torch.manual_seed(0)
    model = build_model("drmm2", render_path="normalized").eval()
    x = torch.randn(4, 1, 28, 28)
    inference = model.infer(x)
    errors = class_render_errors(model, inference, x)
    for i in range(len(x)):
        for c in range(model.num_classes):
            one = model.infer(x[i : i + 1])
            image = model.render(one, torch.tensor([c])).image
            torch.testing.assert_close(errors[i, c], (x[i] - image[0]).pow(2).mean())
    assert torch.equal(classify_by_rendering(model, inference, x), errors.argmin(1))


@pytest.mark.real_data
def test_normalized_path_learns_to_reconstruct_real_digits(mnist) -> None:
    """150 steps of reconstruction-only training on 256 real MNIST images (standardised as in
    the ablation) bring the rendering well below the error of their per-pixel mean image."""
    pixels = load_dataset("mnist", resolve_data_root(None), download=False)[0].images[:256] / 255
    mean_image_error = (pixels - pixels.mean(0, keepdim=True)).pow(2).mean().item()
    std = torch.tensor([0.3081])
    x = (pixels - 0.1307) / std
    torch.manual_seed(0)
    model = build_model("drmm2", render_path="normalized", leak=0.1)
    weights = {"cross_entropy": 0.0, "kl": 0.0, "nonneg": 0.0, "reconstruction": 1.0}
    objective = EGObjective.from_config({"weights": weights}, pixel_std=(0.3081,))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        batch = x[torch.randint(0, len(x), (32,), generator=generator)]
        loss = objective(model, None, batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        error = reconstruction_error(x, model.render(model.infer(x)).image, std).item()
    assert error < 0.5 * mean_image_error, (error, mean_image_error)


def test_adjoint_render_satisfies_eulers_identity_and_then_classifies_like_the_cnn() -> None:
    """Without biases or batch norm the network is positively homogeneous, so for the adjoint
    path <I_hat_c, I> = sigma^2 logit_c; with equal rendered norms, render-argmin is argmax."""
    torch.manual_seed(0)
    model = build_model("drmm2", batch_norm=False).double().eval()
    with torch.no_grad():
        for layer in model.rendering_layers:
            assert layer.conv.bias is not None  # batch_norm=False: the conv keeps its bias
            layer.conv.bias.zero_()
        model.classifier.bias.zero_()
        model.log_sigma2.fill_(-0.7)
    x = torch.randn(5, 1, 28, 28, dtype=torch.double)
    inference = model.infer(x)
    inner, logits = euler_gap(model, inference, x)
    torch.testing.assert_close(inner, logits)
    with torch.no_grad():  # a bias breaks the identity, and the gap shows it
        model.classifier.bias.fill_(0.5)
    inner, logits = euler_gap(model, model.infer(x), x)
    torch.testing.assert_close(logits - inner, torch.full_like(logits, 0.5))
    with torch.no_grad():
        model.classifier.bias.zero_()
    one = x[:1]
    inference = model.infer(one)
    norms = torch.stack(
        [model.render(inference, torch.tensor([c])).image.norm() for c in range(10)]
    )
    with torch.no_grad():  # equal rendered norms: rescale each template (classifier row)
        model.classifier.weight.div_(norms[:, None])
    inference = model.infer(one)
    assert classify_by_rendering(model, inference, one).item() == inference.logits.argmax(1).item()


def test_standardize_takes_the_training_statistics_unless_mean_and_std_are_given() -> None:
    from drmm_lightning.data import DRMMDataModule

    assert DRMMDataModule("mnist").transform.mean is None  # raw [0, 1] pixels by default
    assert DRMMDataModule("mnist", standardize=True).transform.mean == (0.1307,)
    assert DRMMDataModule("fashion_mnist", standardize=True).transform.std == (0.3530,)
    given = DRMMDataModule("mnist", standardize=True, mean=[0.5], std=[0.25]).transform
    assert (given.mean, given.std) == ((0.5,), (0.25,))


def test_default_experiment_uses_the_normalized_path_on_standardised_inputs(tmp_path) -> None:
    cfg = make_config(tmp_path / "run")
    assert cfg.model.arch == "drmm5_nrm"
    assert cfg.model.arch_kwargs.render_path == "normalized" and cfg.data.standardize
    terms = cfg.objective.terms
    assert terms.nonneg.weight == 0 and terms.reconstruction.weight > 0
    adjoint = make_config(tmp_path / "adjoint", "render=adjoint")
    assert adjoint.model.arch_kwargs.render_path == "adjoint" and not adjoint.data.standardize


@pytest.mark.parametrize("path,linear", [("rms", True), ("normalized", False)])
def test_rms_path_renders_linearly_in_the_template_and_normalized_does_not(
    path: str, linear: bool
) -> None:
    """rms only scales, so I_hat - bias is linear in mu_c; batch norm's shifts add a
    class-independent image."""
    torch.manual_seed(0)
    model = build_model("drmm2", render_path=path).eval()
    assert model.top_down is not None
    with torch.no_grad():
        for norm in model.top_down:
            if isinstance(norm.bias, torch.Tensor):  # None: an rms norm without a bias
                norm.bias.uniform_(-0.5, 0.5)
    inference = model.infer(torch.randn(3, 1, 28, 28))
    classes = torch.tensor([0, 1, 2])
    image_bias = model.top_down[0].bias
    assert isinstance(image_bias, torch.Tensor)
    bias = model.log_sigma2.exp() * image_bias.view(1, -1, 1, 1)
    once = model.render(inference, classes).image - bias
    with torch.no_grad():
        model.classifier.weight.mul_(2)
    twice = model.render(inference, classes).image - bias
    assert torch.allclose(twice, 2 * once, atol=1e-5) == linear

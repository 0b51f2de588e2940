"""The model library: the adjoint identity, CNN equivalence, a brute-force shallow RMM, shapes."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from drmm_lightning.models import (
    ARCHITECTURES,
    DRFM,
    DRMM,
    LayerSpec,
    RenderingLayer,
    build_model,
    class_balance_kl,
    kl_term,
    nonneg_penalty,
)
from drmm_lightning.models.cnn import plain_cnn

SHAPES = [(1, 28), (3, 32)]
PADDING = {"valid": lambda k: 0, "same": lambda k: (k - 1) // 2, "full": lambda k: k - 1}


def random_model(name: str, channels: int, size: int, **kwargs) -> DRMM:
    """float64 model in eval mode with random normalisation statistics and all biases zero."""
    torch.manual_seed(0)
    model = build_model(name, channels, 10, size, **kwargs).double().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


def independent_cnn(model: DRMM) -> nn.Sequential:
    """An ordinary torch.nn CNN holding copies of the model's weights, built without the
    library's code (paddings from the names, not from LayerSpec)."""
    modules: list[nn.Module] = []
    for layer in model.rendering_layers:
        spec = layer.spec
        conv = nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            padding=PADDING[spec.padding](spec.kernel_size),
            bias=layer.conv.bias is not None,
            dtype=torch.double,
        )
        conv.load_state_dict(layer.conv.state_dict())
        modules.append(conv)
        if layer.norm is not None:
            norm = nn.BatchNorm2d(spec.out_channels, dtype=torch.double)
            norm.load_state_dict(layer.norm.state_dict())
            modules.append(norm)
        modules.append(nn.ReLU())
        modules.append(
            {"max": nn.MaxPool2d(2), "mean": nn.AdaptiveAvgPool2d(1)}.get(spec.pool, nn.Identity())
        )
    modules.append(nn.Flatten())
    if isinstance(model, DRFM):  # the factor E-step is the linear map (s2 I + L^T L)^-1 L^T
        lam, s2 = model.loadings.detach(), model.log_sigma2_top.detach().exp()
        posterior = nn.Linear(lam.shape[0], lam.shape[1], bias=False, dtype=torch.double)
        eye = torch.eye(lam.shape[1], dtype=torch.double)
        posterior.weight.data = torch.linalg.solve(s2 * eye + lam.T @ lam, lam.T)
        modules.append(posterior)
    head = nn.Linear(
        model.classifier.in_features, model.classifier.out_features, dtype=torch.double
    )
    head.load_state_dict(model.classifier.state_dict())
    modules.append(head)
    return nn.Sequential(*modules).eval()


@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_render_is_input_gradient_of_logit(name: str, channels: int, size: int) -> None:
    model = random_model(name, channels, size)
    x = torch.randn(4, channels, size, size, dtype=torch.double, requires_grad=True)
    classes = torch.tensor([0, 3, 7, 9])
    inference = model.infer(x)
    (grad,) = torch.autograd.grad(inference.logits.gather(1, classes[:, None]).sum(), x)
    image = model.render(inference, classes).image / model.log_sigma2.exp()
    assert image.shape == x.shape
    assert ((image - grad).norm() / grad.norm()).item() < 1e-5


@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_bottom_up_equals_plain_cnn(name: str, channels: int, size: int) -> None:
    model = random_model(name, channels, size)
    x = torch.randn(4, channels, size, size, dtype=torch.double)
    torch.testing.assert_close(
        model.infer(x).logits, independent_cnn(model)(x), rtol=1e-9, atol=1e-9
    )


def test_training_mode_normalisation_matches_batchnorm() -> None:
    """The one-pass batch norm of a rendering layer is nn.BatchNorm2d, running statistics too."""
    torch.manual_seed(0)
    layer = RenderingLayer(LayerSpec(3, 8, 3, "same", "max"), input_size=10)
    assert layer.norm is not None
    conv, norm = copy.deepcopy(layer.conv), copy.deepcopy(layer.norm)
    x = torch.randn(16, 3, 10, 10)
    for _ in range(2):
        out, switches = layer.bottom_up(x)
        s = conv(x)
        torch.testing.assert_close(out, torch.relu(nn.functional.max_pool2d(norm(s), 2)))
        torch.testing.assert_close(layer.norm.running_var, norm.running_var)
        gain = norm.weight / (s.var((0, 2, 3), unbiased=False) + norm.eps).sqrt()
        torch.testing.assert_close(switches.scale, gain)


def test_plain_cnn_shares_weights() -> None:
    model = random_model("drfm2", 1, 28)
    x = torch.randn(2, 1, 28, 28, dtype=torch.double)
    cnn = plain_cnn(model)
    torch.testing.assert_close(cnn(x), model(x))
    with torch.no_grad():  # shared, not copied: a change to the DRMM's weights shows in the CNN
        model.rendering_layers[0].conv.weight.mul_(2.0)
        model.classifier.bias.add_(1.0)
    torch.testing.assert_close(cnn(x), model(x))
    drmm_params = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() in drmm_params for p in cnn.parameters())


def test_render_gain_scales_image() -> None:
    model = random_model("drmm2", 1, 28)
    inference = model.infer(torch.randn(2, 1, 28, 28, dtype=torch.double))
    base = model.render(inference).image
    with torch.no_grad():
        model.log_sigma2.fill_(math.log(3.0))
    torch.testing.assert_close(model.render(inference).image, 3.0 * base)


def test_shallow_rmm_max_sum_matches_exhaustive_search() -> None:
    """Eq. 2 by enumeration over (c, g, a) against the bottom-up pass of a one-layer DRMM.

    Three 3x3 class templates at four translations inside a 4x4 image; the layer's filters are
    the natural parameters w_c = mu_c / sigma^2, b_c = -|mu_c|^2 / (2 sigma^2) (Eq. 3) and its
    2x2 max-pool covers the four translations.
    """
    torch.manual_seed(1)
    num_classes, sigma2 = 3, 0.5
    mu = torch.randn(num_classes, 3, 3, dtype=torch.double)
    mu *= (
        torch.tensor([1.0, 1.3, 1.6], dtype=torch.double)[:, None, None]
        * 2
        / mu.flatten(1).norm(dim=1)[:, None, None]
    )
    spec = LayerSpec(1, num_classes, 3, "valid", "max", batch_norm=False)
    model = DRMM([spec], num_classes, image_size=4).double()
    with torch.no_grad():
        conv = model.rendering_layers[0].conv
        assert conv.bias is not None  # batch_norm=False: the conv keeps its bias
        conv.weight.copy_(mu[:, None] / sigma2)
        conv.bias.copy_(-mu.flatten(1).pow(2).sum(1) / (2 * sigma2))
        model.classifier.weight.copy_(torch.eye(num_classes))
        model.classifier.bias.zero_()
        model.log_sigma2.fill_(math.log(sigma2))

    def placed(c: int, g: tuple[int, int]) -> torch.Tensor:
        """The template mu_cg: class c's template at translation g in a blank 4x4 image."""
        image = torch.zeros(4, 4, dtype=torch.double)
        image[g[0] : g[0] + 3, g[1] : g[1] + 3] = mu[c]
        return image

    configs = list(itertools.product(range(num_classes), itertools.product(range(2), range(2))))
    checked = 0
    for _ in range(300):
        c0, g0 = configs[int(torch.randint(len(configs), ()).item())]
        image = placed(c0, g0) + 0.6 * torch.randn(4, 4, dtype=torch.double)
        # ln p(I | c, g, a) with Gaussian noise and uniform priors; a = 0 renders a blank image.
        score = {(c, g): -(image - placed(c, g)).pow(2).sum() / (2 * sigma2) for c, g in configs}
        blank = -image.pow(2).sum() / (2 * sigma2)
        (c_star, g_star), best = max(score.items(), key=lambda kv: kv[1])
        if best <= blank:  # no template is switched on: the classifier's answer is a tie
            continue
        inference = model.infer(image[None, None])
        assert inference.logits.argmax(1).item() == c_star
        rendered = model.render(inference).image[0, 0]
        torch.testing.assert_close(rendered, placed(c_star, g_star))
        checked += 1
    assert checked > 200


@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_shapes(name: str, channels: int, size: int) -> None:
    model = build_model(name, channels, 10, size)
    x = torch.rand(3, channels, size, size)
    inference = model.infer(x)
    rendering = model.render(inference, torch.tensor([1, 2, 3]))
    assert inference.logits.shape == (3, 10)
    assert len(inference.switches) == len(model.layers) == len(rendering.templates)
    assert rendering.image.shape == x.shape
    assert rendering.templates[0].shape == (3, *model.feature_shape)


@pytest.mark.parametrize("name", ["drmm5", "drfm2"])
def test_soft_render_with_one_hot_equals_hard(name: str) -> None:
    model = random_model(name, 1, 28)
    inference = model.infer(torch.randn(5, 1, 28, 28, dtype=torch.double))
    classes = torch.tensor([0, 1, 2, 3, 9])
    one_hot = nn.functional.one_hot(classes, 10).double()
    torch.testing.assert_close(
        model.render(inference, one_hot).image, model.render(inference, classes).image
    )


def test_soft_render_is_posterior_weighted_mixture() -> None:
    model = random_model("drmm2", 1, 28)
    inference = model.infer(torch.randn(2, 1, 28, 28, dtype=torch.double))
    probs = torch.softmax(torch.randn(2, 10, dtype=torch.double), dim=1)
    per_class = torch.stack(
        [model.render(inference, torch.full((2,), c)).image for c in range(10)], 1
    )
    expected = (probs[:, :, None, None, None] * per_class).sum(1)
    torch.testing.assert_close(model.render(inference, probs).image, expected)


def test_nonneg_penalty() -> None:
    assert nonneg_penalty([torch.rand(2, 3, 4, 4), torch.rand(2, 5)]).item() == 0.0
    assert nonneg_penalty([torch.rand(2, 3, 4, 4), torch.rand(2, 5) - 0.5]).item() > 0.0
    model = random_model("drmm5", 1, 28)
    rendering = model.render(model.infer(torch.randn(2, 1, 28, 28, dtype=torch.double)))
    assert nonneg_penalty(rendering.templates).item() > 0  # random weights render negatives


def test_nonneg_render_option_keeps_templates_nonnegative() -> None:
    model = random_model("drmm5", 1, 28, nonneg_render=True)
    rendering = model.render(model.infer(torch.randn(2, 1, 28, 28, dtype=torch.double)))
    assert all((z >= 0).all() for z in rendering.templates)
    assert nonneg_penalty(rendering.templates).item() == 0.0


def test_factor_posterior_mean_is_closed_form() -> None:
    model = random_model("drfm2", 1, 28)
    assert isinstance(model, DRFM)
    with torch.no_grad():
        model.log_sigma2_top.fill_(math.log(0.7))
    features = torch.rand(6, model.top_dim, dtype=torch.double)
    lam, s2 = model.loadings.detach(), 0.7
    cov = torch.linalg.inv(torch.eye(model.factor_dim).double() + lam.T @ lam / s2)  # S
    expected = features @ lam @ cov.T / s2  # m = S L^T f / s2
    torch.testing.assert_close(model.posterior_mean(features), expected)


def test_factor_model_reconstructs_from_posterior_mean() -> None:
    model = random_model("rfm", 1, 28)
    assert isinstance(model, DRFM)
    inference = model.infer(torch.randn(3, 1, 28, 28, dtype=torch.double))
    top = model.render(inference).templates[0]
    assert inference.code is not None
    torch.testing.assert_close(top, (inference.code @ model.loadings.T).view_as(top))


def test_kl_term_sign_and_value() -> None:
    logits = torch.randn(8, 10, requires_grad=True)
    q = torch.softmax(logits, 1)
    entropy = -(q * q.log()).sum(1).mean()
    torch.testing.assert_close(kl_term(logits), entropy - math.log(10))
    # A gradient step on +kl_term sharpens the posteriors (the authors' sign).
    kl_term(logits).backward()
    assert logits.grad is not None
    sharper = torch.softmax(logits - 0.5 * logits.grad, 1)
    assert -(sharper * sharper.log()).sum(1).mean() < entropy


def test_class_balance_kl() -> None:
    balanced = torch.eye(10) * 5
    assert class_balance_kl(balanced).abs().item() < 1e-6
    collapsed = torch.zeros(10, 10)
    collapsed[:, 0] = 5
    assert class_balance_kl(collapsed).item() > 1.0


@pytest.mark.parametrize(
    "spec,message",
    [
        (LayerSpec(1, 8, 3, "circular", "none"), "unknown padding"),
        (LayerSpec(1, 8, 3, "valid", "avg"), "unknown pooling"),
        (LayerSpec(1, 8, 4, "same", "none"), "odd kernel"),
        (LayerSpec(1, 8, 29, "valid", "none"), "below 1x1"),
    ],
)
def test_bad_layer_specs(spec: LayerSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        DRMM([spec], 10, image_size=28)
    assert "layer 1" in str(info.value)


def test_layers_must_chain_and_fit() -> None:
    with pytest.raises(ValueError, match="layer 2.*channel counts must chain"):
        DRMM([LayerSpec(1, 8, 3), LayerSpec(16, 8, 3)], 10, image_size=28)
    deep = [LayerSpec(1, 4, 3, "valid", "max")] + [LayerSpec(4, 4, 3, "valid", "max")] * 3
    with pytest.raises(ValueError, match="layer 4"):
        DRMM(deep, 10, image_size=28)


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="drmm5.*") as info:
        build_model("resnet50")
    for name in ARCHITECTURES:
        assert name in str(info.value)


@pytest.mark.parametrize("name, factor_top", [("drmm2", False), ("rfm", True), ("drfm2", True)])
def test_eg_step_renders_what_evaluation_renders(name: str, factor_top: bool) -> None:
    """The EG step's reconstruction starts where evaluation's does: the labels and the inferred
    class for a mixture top, E[z | I] for a factor top (whose class templates are only for
    rendering a given class)."""
    from drmm_lightning.training import EGObjective

    torch.manual_seed(0)
    model = build_model(name, 1, 10, 28).eval()
    x, labels, unlabeled = (
        torch.rand(4, 1, 28, 28),
        torch.tensor([1, 2, 3, 4]),
        torch.rand(3, 1, 28, 28),
    )
    out = EGObjective()(model, (x, labels), unlabeled)
    inference = model.infer(torch.cat([x, unlabeled]))
    if not factor_top:
        classes = torch.cat([labels, inference.logits[4:].argmax(1)])
        expected = model.render(inference, classes).image
    else:
        expected = model.render(inference).image
        assert not torch.allclose(
            expected, model.render(inference, inference.logits.argmax(1)).image
        )
    torch.testing.assert_close(out.rendered, expected)

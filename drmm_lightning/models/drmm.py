"""The Deep Rendering Mixture Model: a stack of rendering layers under class templates.

Generation (Eqs. 5-7):  c ~ Cat(pi),  I = sigma^2 * Lambda_g^(1) ... Lambda_g^(L) mu_c + noise.
Bottom-up E-step (Eqs. 8-9, 34/41): a CNN forward pass, c_hat = argmax_c <mu_c, I^(L)> + b_c.
Top-down E-step (Eqs. 35-36): render the template mu_c back through the inferred switches.

The class templates mu_c are tied to the classifier: mu_c is row c of its weight (the logit of
class c is <mu_c, I^(L)> + b_c, Eq. 41), so rendering mu_c gives d logit_c / d I up to sigma^2.

Three render paths share those tied weights and switches (RENDER_PATHS):
- adjoint: the exact Eqs. 35-36, sigma^2 times the adjoint of the bottom-up linear path (the
  paper's model; its scale follows the bottom-up batch-norm gains).
- normalized: the authors' later code (DGM mnist/lenet_ld_opt.py): the same transposed
  convolutions without the bottom-up gain, each followed by its own, untied batch norm (with a
  per-channel top-down bias), the last one on the rendered image itself. Not in the paper.
- rms: as normalized, but the norms only scale (no centring, a bias on the image only), so the
  rendering stays linear in the class template (topdown.py). Not in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layer import LayerSpec, RenderingLayer, Switches
from .topdown import top_down_norms

RENDER_PATHS = ("adjoint", "normalized", "rms")


@dataclass
class Inference:
    """Result of the bottom-up E-step: class logits, top feature map and per-layer switches."""

    logits: Tensor  # (B, C)
    features: Tensor  # I^(L), the top feature map (B, K, H, W)
    switches: list[Switches]  # one per layer, bottom to top
    code: Tensor | None = None  # factor models: posterior mean of the top latent z (B, d)
    hidden: list[Tensor] | None = None  # bottom-up activations I^(1), ..., I^(L)

    def select(self, rows: slice) -> Inference:
        """The inference of a sub-batch (e.g. the unlabeled half of a joint batch)."""
        if rows == slice(0, len(self.logits)):
            return self
        code = None if self.code is None else self.code[rows]
        switches = [s.select(rows) for s in self.switches]
        hidden = None if self.hidden is None else [h[rows] for h in self.hidden]
        return Inference(self.logits[rows], self.features[rows], switches, code, hidden)


@dataclass
class Rendering:
    """Result of the top-down E-step."""

    image: Tensor  # the rendered image I_hat = sigma^2 * z^(0), same shape as the input
    templates: list[Tensor]  # intermediate rendered templates z^(L), ..., z^(1), top first


def check_stack(specs: Sequence[LayerSpec], in_channels: int, image_size: int) -> list[int]:
    """Validate a layer list for an input of (in_channels, image_size, image_size).

    Returns the spatial size after each layer; raises a ValueError naming the offending layer.
    """
    if not specs:
        raise ValueError("A DRMM needs at least one rendering layer; got an empty layer list.")
    sizes, channels, size = [], in_channels, image_size
    for i, spec in enumerate(specs, start=1):
        k = spec.kernel_size
        name = f"layer {i} ({spec.out_channels} {k}x{k} {spec.padding}, pool {spec.pool})"
        spec.validate(name)
        if spec.in_channels != channels:
            raise ValueError(
                f"{name}: expects {spec.in_channels} input channels but the layer below gives "
                f"{channels}; channel counts must chain."
            )
        size_in = size
        conv, size = spec.output_size(size)
        if conv < 1 or size < 1:
            raise ValueError(
                f"{name}: shrinks its {size_in}x{size_in} input below 1x1 (conv output {conv}, "
                f"after pooling {size}); use 'same' or 'full' padding or a larger input."
            )
        if spec.pool == "max" and conv < 2:
            raise ValueError(f"{name}: a 2x2 max-pool needs a map of at least 2x2, got {conv}.")
        sizes.append(size)
        channels = spec.out_channels
    return sizes


class DRMM(nn.Module):
    """Deep Rendering Mixture Model with class templates tied to a linear classifier."""

    def __init__(
        self,
        specs: Sequence[LayerSpec],
        num_classes: int,
        image_size: int,
        nonneg_render: bool = False,
        render_path: str = "adjoint",
        leak: float = 0.0,
        prior_layers: int = 0,
    ) -> None:
        super().__init__()
        if render_path not in RENDER_PATHS:
            raise ValueError(f"Unknown render_path {render_path!r}; valid: {RENDER_PATHS}.")
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], got {leak}.")
        if not 0 <= prior_layers < len(specs):
            raise ValueError(
                f"prior_layers must be in [0, {len(specs) - 1}] for {len(specs)} layers (the top "
                f"layer's switches always render), got {prior_layers}."
            )
        sizes = check_stack(specs, specs[0].in_channels if specs else 0, image_size)
        self.in_channels = specs[0].in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.feature_shape = (specs[-1].out_channels, sizes[-1], sizes[-1])
        # NN-DRMM (Section 3.2): a ReLU on the intermediate rendered templates z^(l) >= 0.
        self.nonneg_render = nonneg_render
        inputs = [image_size, *sizes[:-1]]
        self.layers = nn.ModuleList(RenderingLayer(s, n) for s, n in zip(specs, inputs))
        self.render_path = render_path
        self.leak = leak  # what switched-off ReLU units pass top-down (0: exact Eq. 35)
        # Not in the paper: render the lowest `prior_layers` layers through the prior mean
        # switches, so only the upper layers' switches (and the class) shape the rendering.
        self.prior_layers = prior_layers
        # untied norms after each transposed convolution (None on the exact adjoint path):
        # top_down[i] normalises what layer i renders, i.e. z^(i-1); top_down[0] is the image.
        self.top_down = top_down_norms(render_path, [s.in_channels for s in specs])
        # Pixel noise variance sigma^2 (Eq. 7). The bottom-up weights are natural parameters
        # w = mu / sigma^2 (Section 3.1), so the rendered image is sigma^2 times the adjoint.
        self.log_sigma2 = nn.Parameter(torch.zeros(()))
        self.classifier = self.make_top(num_classes)

    @property
    def rendering_layers(self) -> list[RenderingLayer]:
        """The rendering layers Lambda^(1), ..., Lambda^(L), bottom to top."""
        return cast("list[RenderingLayer]", list(self.layers))

    @property
    def top_dim(self) -> int:
        """Number of units in the top feature map I^(L)."""
        return math.prod(self.feature_shape)

    def make_top(self, num_classes: int) -> nn.Linear:
        """The classifier whose rows are the class templates mu_c (Eq. 41)."""
        return nn.Linear(self.top_dim, num_classes)

    # ----- bottom-up ---------------------------------------------------------------------------
    def bottom_up(self, x: Tensor) -> tuple[list[Tensor], list[Switches]]:
        """Fine-to-coarse pass through the rendering layers (Eq. 9): every I^(l) and switches."""
        hidden, switches = [], []
        for layer in self.rendering_layers:
            x, sw = layer.bottom_up(x)
            hidden.append(x)
            switches.append(sw)
        return hidden, switches

    def infer(self, x: Tensor) -> Inference:
        """Bottom-up E-step: class logits (Eq. 41) and the switches of every layer."""
        hidden, switches = self.bottom_up(x)
        features = hidden[-1]
        logits = self.classifier(features.flatten(1))
        return Inference(logits, features, switches, hidden=hidden)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits; the same numbers as a plain CNN holding the same weights."""
        return self.infer(x).logits

    # ----- top-down ----------------------------------------------------------------------------
    def class_rows(self, classes: Tensor) -> Tensor:
        """Rows of the classifier weight for a LongTensor of classes (hard E-step), or their
        posterior-weighted mixture sum_c p(c|I) w_c for a (B, C) probability matrix (soft)."""
        weight = self.classifier.weight
        if classes.dtype == torch.long:
            return weight[classes]
        return classes.to(weight.dtype) @ weight

    def templates(self, classes: Tensor) -> Tensor:
        """Class templates mu_c (Eq. 41), shaped like the top feature map I^(L)."""
        return self.class_rows(classes).view(-1, *self.feature_shape)

    def top_template(self, inference: Inference, classes: Tensor | None) -> Tensor:
        """z^(L) to render from: mu_c of the given classes, else of the inferred class (Eq. 34)."""
        if classes is None:
            classes = inference.logits.argmax(dim=1)
        return self.templates(classes)

    @torch.no_grad()
    def sample(self, classes: Tensor, generator: torch.Generator | None = None) -> Rendering:
        """Draw from the generative process (Eqs. 5-7): the template of each class rendered
        through switches a ~ Bern(pi_a), t ~ Cat(pi_t) drawn from the learned priors. Returns
        the mean image sigma^2 Lambda_g mu_c (add N(0, sigma^2) pixel noise for a full sample)."""
        return self.render(self.sampled_inference(len(classes), generator), classes)

    def sampled_inference(self, batch: int, generator: torch.Generator | None) -> Inference:
        """An Inference holding switches drawn from the priors instead of inferred ones."""
        switches = [layer.sample_switches(batch, generator) for layer in self.rendering_layers]
        empty = self.log_sigma2.new_empty(batch, 0)
        return Inference(empty, empty, switches)

    def drop_switches(self, inference: Inference, p: float) -> Inference:
        """The inference with each switch replaced by a draw from its prior with probability p."""
        layers = self.rendering_layers
        switches = [layer.drop_switches(s, p) for layer, s in zip(layers, inference.switches)]
        return Inference(
            inference.logits, inference.features, switches, inference.code, inference.hidden
        )

    def reconstruct(self, inference: Inference, classes: Tensor) -> Rendering:
        """The rendering the EG step fits to the image: from each image's class (its label, or
        the E-step's estimate, hard or soft), the latent of a mixture top."""
        return self.render(inference, classes)

    def render(self, inference: Inference, classes: Tensor | None = None) -> Rendering:
        """Top-down E-step (Eqs. 35-36): render z^(L) down to the image through the switches."""
        z = self.top_template(inference, classes)
        templates = []
        exact = self.top_down is None
        layers = self.rendering_layers
        for i in reversed(range(len(layers))):
            if self.nonneg_render:
                z = F.relu(z)
            templates.append(z)
            switches = inference.switches[i]
            if i < self.prior_layers:  # the prior mean switches E[g], not the image's
                z = layers[i].render_expected(z, switches.scale, self.leak, fold_gain=exact)
            else:
                z = layers[i].render(z, switches, self.leak, fold_gain=exact)
            if self.top_down is not None:
                z = self.top_down[i](z)
        return Rendering(self.log_sigma2.exp() * z, templates)

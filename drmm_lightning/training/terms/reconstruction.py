"""The DRMM's terms on the rendering of each image from its class (the top-down E-step, shared
through the step's context: the first of these terms renders, the others reuse it).

- reconstruction: ||I - I_hat||^2 per pixel, in [0, 1] pixel units whatever the input
  standardisation: -log p(I | c, g) of the Gaussian pixel noise (Eq. 7) up to scale.
- nonneg: the NN-DRMM penalty, mean ReLU(-z^(l))^2 summed over the intermediate rendered
  templates (the authors' "sign cost"; losses.nonneg_penalty).
- layer_reconstruction: sum_l ||z^(l) - norm(I^(l))||^2, each rendered template against the
  normalised bottom-up activation of its layer (the Ladder network's per-layer costs; not in
  the paper).
"""

from __future__ import annotations

from torch import Tensor

from ...models import layer_reconstruction_error, nonneg_penalty
from .base import StepContext, Term


class Reconstruction(Term):
    name = "reconstruction"

    def forward(self, ctx: StepContext) -> Tensor:
        return ctx.reconstruction


class NonNegativity(Term):
    name = "nonneg"

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__(weight)

    def forward(self, ctx: StepContext) -> Tensor:
        return nonneg_penalty(ctx.rendering.templates)


class LayerReconstruction(Term):
    name = "layer_reconstruction"

    def __init__(self, weight: float = 0.0) -> None:
        super().__init__(weight)

    def forward(self, ctx: StepContext) -> Tensor | None:
        templates = ctx.rendering.templates
        if ctx.seen.hidden is None:  # a model that keeps no bottom-up activations
            return None
        return layer_reconstruction_error(templates, ctx.seen.hidden)

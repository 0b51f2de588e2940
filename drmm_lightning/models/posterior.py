"""Classification by rendering: the class whose rendering explains the image best.

The DRMM's generative model gives the class posterior given the image and its switches g
(Eqs. 5-7 with Gaussian pixel noise):

    p(c | I, g)  proportional to  pi_c exp(-||I - I_hat_c||^2 / 2 sigma^2),

where I_hat_c renders class c's template through the image's own inferred switches. Its argmax
is "render-argmin" classification; how often it is right measures whether the class template
shapes the rendering at all, or the switches carry the whole image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .drmm import DRMM, Inference


@torch.no_grad()
def render_every_class(model: DRMM, inference: Inference) -> Tensor:
    """I_hat_c for every image and every class c, shape (B, C, channels, H, W): one batched
    top-down pass per class through each image's own inferred switches."""
    batch = len(inference.switches[0].a)
    device = inference.switches[0].a.device
    renders = [
        model.render(inference, torch.full((batch,), c, dtype=torch.long, device=device)).image
        for c in range(model.num_classes)
    ]
    return torch.stack(renders, dim=1)


def class_render_errors(model: DRMM, inference: Inference, images: Tensor) -> Tensor:
    """||I - I_hat_c||^2 per pixel for every image and every class c, shape (B, C)."""
    return (images[:, None] - render_every_class(model, inference)).pow(2).flatten(2).mean(2)


def render_argmin(model: DRMM, inference: Inference, images: Tensor) -> Tensor:
    """The class whose rendering fits each image best, argmin_c ||I - I_hat_c||^2 (B,)."""
    return class_render_errors(model, inference, images).argmin(dim=1)


@torch.no_grad()
def euler_gap(model: DRMM, inference: Inference, images: Tensor) -> tuple[Tensor, Tensor]:
    """(<I_hat_c, I> / sigma^2, logit_c) for every image and class, each (B, C).

    For the adjoint path of a network without biases or batch-norm shifts the two are equal
    (Euler's identity for positively homogeneous functions), so that ||I - I_hat_c||^2 =
    ||I||^2 - 2 sigma^2 logit_c + ||I_hat_c||^2 and rendering-based classification is the CNN's;
    biases, batch-norm shifts and the normalized path's untied norms open a gap."""
    renders = render_every_class(model, inference)
    inner = (renders * images[:, None]).flatten(2).sum(2) / model.log_sigma2.exp()
    return inner, inference.logits

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
def class_render_errors(model: DRMM, inference: Inference, images: Tensor) -> Tensor:
    """||I - I_hat_c||^2 per pixel for every image and every class c, shape (B, C): one
    batched top-down pass per class through each image's own switches."""
    batch = len(images)
    errors = []
    for c in range(model.num_classes):
        classes = torch.full((batch,), c, dtype=torch.long, device=images.device)
        rendered = model.render(inference, classes).image
        errors.append((images - rendered).pow(2).flatten(1).mean(1))
    return torch.stack(errors, dim=1)


def render_argmin(model: DRMM, inference: Inference, images: Tensor) -> Tensor:
    """The class whose rendering fits each image best, argmin_c ||I - I_hat_c||^2 (B,)."""
    return class_render_errors(model, inference, images).argmin(dim=1)

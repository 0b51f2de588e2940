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
from .losses import pixel_squared_error


@torch.no_grad()
def class_estep(
    model: DRMM, images: Tensor, inference: Inference, classes: Tensor, steps: int
) -> Inference:
    """A per-class E-step (not in the paper): re-infer the switches g_c given class c by
    `steps` alternations of rendering class c and running the bottom-up pass on the image pulled
    halfway towards that rendering (the damped alternation of class_appearance, Eq. 46, with the
    image held fixed). The true class's rendering already matches the image, so its switches
    barely move; a wrong class's switches move towards its own appearance. Evaluation mode only
    (the bottom-up pass would otherwise update the batch-norm and switch statistics)."""
    refined = inference
    for _ in range(steps):
        rendered = model.render(refined, classes).image
        again = model.infer((images + rendered) / 2)
        refined = Inference(inference.logits, inference.features, again.switches, inference.code)
    return refined


def render_every_class(
    model: DRMM, inference: Inference, images: Tensor | None = None, estep_steps: int = 0
) -> Tensor:
    """I_hat_c for every image and every class c, shape (B, C, channels, H, W): one batched
    top-down pass per class through each image's own inferred switches (re-inferred per class
    by `class_estep` when estep_steps > 0, which needs the images). Carries gradient."""
    batch = len(inference.switches[0].a)
    device = inference.switches[0].a.device
    if estep_steps and images is None:
        raise ValueError("The per-class E-step (estep_steps > 0) needs the images.")
    renders = []
    for c in range(model.num_classes):
        classes = torch.full((batch,), c, dtype=torch.long, device=device)
        switches = (
            class_estep(model, images, inference, classes, estep_steps)
            if estep_steps and images is not None
            else inference
        )
        renders.append(model.render(switches, classes).image)
    return torch.stack(renders, dim=1)


def class_render_errors(
    model: DRMM,
    inference: Inference,
    images: Tensor,
    estep_steps: int = 0,
    pixel_std: Tensor | None = None,
) -> Tensor:
    """||I - I_hat_c||^2 per pixel for every image and every class c, (B, C): in input units,
    or in [0, 1] pixel units given the per-channel std the inputs were standardised with."""
    diff = images[:, None] - render_every_class(model, inference, images, estep_steps)
    return pixel_squared_error(diff, pixel_std).flatten(2).mean(2)


def classify_by_rendering(
    model: DRMM, inference: Inference, images: Tensor, estep_steps: int = 0
) -> Tensor:
    """The class whose rendering fits each image best, argmin_c ||I - I_hat_c||^2 (B,)."""
    with torch.no_grad():
        return class_render_errors(model, inference, images, estep_steps).argmin(dim=1)


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

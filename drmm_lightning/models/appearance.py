"""Class appearance models (Section 3.4, Appendix E): the image that maximises a class's score.

The DRMM score of class c on an image I is max_g <mu_cg, I> / sigma^2 (Eq. 45). For a fixed pose
g the best image of a given norm is mu_cg itself, and the best pose for an image is what the
bottom-up pass infers, patch by patch. Eq. 46's solution is the self-consistent pair: an image
that is the rendering of the per-patch best poses for that very image. `class_appearance` finds
it by alternating the two closed-form steps (damped); `activity_maximization` is the usual
gradient ascent on the input (Simonyan et al. 2013), for comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .drmm import DRMM


def _start(model: DRMM, norm: float) -> Tensor:
    """A uniform image of the given norm: no pose is favoured."""
    x = torch.ones(1, model.in_channels, model.image_size, model.image_size)
    return (x * norm / x.norm()).to(model.log_sigma2.device)


@torch.no_grad()
def class_appearance(model: DRMM, c: int, norm: float = 1.0, iterations: int = 30) -> Tensor:
    """Eq. 46 by damped alternation: g* <- the poses the bottom-up pass infers on I, then
    I <- I + mu_{c g*} (the rendering of those poses, both at `norm`), rescaled to `norm`.

    A fixed point is an image proportional to the rendering of its own per-patch best poses, as
    Eq. 46 says; the damping (averaging with the current image) keeps the poses from jumping,
    since with biases and normalisation the inferred poses only approximate the max over g.
    Returns the highest-scoring iterate as a (C, H, W) image."""
    was_training = model.training
    model.eval()
    x = _start(model, norm)
    classes = torch.tensor([c], device=x.device)
    best, best_score = x, model(x)[0, c]
    for _ in range(iterations):
        inference = model.infer(x)
        rendered = model.render(inference, classes).image
        x_new = x + rendered * norm / rendered.norm().clamp_min(1e-12)
        x_new = x_new * norm / x_new.norm().clamp_min(1e-12)
        if torch.allclose(x_new, x, atol=1e-6):
            break
        x = x_new
        score = model(x)[0, c]
        if score > best_score:
            best, best_score = x, score
    model.train(was_training)
    return best[0]


def activity_maximization(
    model: DRMM, c: int, norm: float = 1.0, steps: int = 200, lr: float = 0.05
) -> Tensor:
    """Gradient ascent on logit_c over images of fixed norm (projected back after each step)."""
    was_training = model.training
    model.eval()
    x = _start(model, norm).requires_grad_(True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(model(x)[0, c], x)
        with torch.no_grad():
            x += lr * norm * grad / grad.norm().clamp_min(1e-12)
            x *= norm / x.norm()
    model.train(was_training)
    return x.detach()[0]

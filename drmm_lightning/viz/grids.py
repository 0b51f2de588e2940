"""Image grids for what the generative model shows: renderings, samples, templates, filters."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import make_grid

from ..models import DRMM, activity_maximization, class_appearance, render_every_class


def grid(images: Tensor, nrow: int) -> Tensor:
    """A (3, H, W) grid of images, each min-max scaled to [0, 1] on its own, with a one-pixel
    white border."""
    images = images.detach().float().cpu()
    return make_grid(images, nrow=nrow, padding=1, pad_value=1.0, normalize=True, scale_each=True)


def interleave_rows(top: Tensor, bottom: Tensor, nrow: int) -> Tensor:
    """Rows of `top` alternating with the matching rows of `bottom` (inputs above renderings)."""
    n = len(top) // nrow * nrow
    pairs = torch.stack([top[:n].unflatten(0, (-1, nrow)), bottom[:n].unflatten(0, (-1, nrow))], 1)
    return pairs.flatten(0, 2)


@torch.no_grad()
def reconstructions(model: DRMM, images: Tensor, nrow: int = 8) -> Tensor:
    """Inputs (odd rows) above their renderings from the inferred class and switches."""
    rendered = model.render(model.infer(images)).image
    return grid(interleave_rows(images, rendered, nrow), nrow)


@torch.no_grad()
def samples(
    model: DRMM, classes: list[int], per_class: int = 8, generator: torch.Generator | None = None
) -> Tensor:
    """Samples from the generative process, one row per class."""
    labels = torch.tensor(classes, device=model.log_sigma2.device).repeat_interleave(per_class)
    return grid(model.sample(labels, generator).image, per_class)


def filters(model: DRMM) -> Tensor:
    """The first layer's filters (its rendering templates), one tile per filter and channel."""
    weight = model.rendering_layers[0].conv.weight.detach()
    if weight.shape[1] != 3:
        weight = weight.flatten(0, 1)[:, None]
    return grid(weight, nrow=min(16, len(weight)))


def class_appearances(model: DRMM, classes: list[int], norm: float = 1.0) -> Tensor:
    """Eq. 46's closed-form class appearance of each class (first row) above gradient-ascent
    activity maximisation (second row), for comparison."""
    closed = [class_appearance(model, c, norm) for c in classes]
    ascent = [activity_maximization(model, c, norm) for c in classes]
    return grid(torch.stack(closed + ascent), len(classes))


@torch.no_grad()
def layer_templates(model: DRMM, images: Tensor) -> list[Tensor]:
    """For each layer from the top, the intermediate rendered templates z^(l) of each image
    (summed over channels, shown at their own resolution): one grid per layer."""
    rendering = model.render(model.infer(images))
    return [
        grid(z.sum(1, keepdim=True), nrow=len(images))
        for z in rendering.templates
        if z.shape[-1] > 1
    ]


@torch.no_grad()
def every_class(model: DRMM, images: Tensor) -> Tensor:
    """One row per image: the image, then its rendering from each class's template through
    the image's own switches. Whether the rows differ shows whether the class shapes the
    rendering or the switches carry it all."""
    renders = render_every_class(model, model.infer(images))
    return grid(torch.cat([images[:, None], renders], dim=1).flatten(0, 1), renders.shape[1] + 1)

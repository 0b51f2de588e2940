"""The same architecture as an ordinary torch.nn CNN sharing a model's weights.

This is the discriminative relaxation of Section 3.2 made concrete: the DRMM's bottom-up pass
with the generative constraints dropped is exactly this network (Eqs. 9, 40-41).
"""

from __future__ import annotations

import torch
from torch import nn

from .drmm import DRMM
from .factor import DRFM


class FactorPosterior(nn.Module):
    """The factor model's E-step as a layer: (sigma^2 I + Lambda^T Lambda)^-1 Lambda^T f."""

    def __init__(self, model: DRFM) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.posterior_mean(features)


def plain_cnn(model: DRMM) -> nn.Sequential:
    """Conv2d / BatchNorm2d / ReLU / MaxPool2d / AdaptiveAvgPool2d / Linear modules that hold
    (share, not copy) the model's parameters; its logits equal `model.infer(x).logits`."""
    modules: list[nn.Module] = []
    for layer in model.rendering_layers:
        modules += [layer.conv, layer.norm or nn.Identity(), nn.ReLU()]
        pool = layer.spec.pool
        modules.append(
            {"max": nn.MaxPool2d(2), "mean": nn.AdaptiveAvgPool2d(1)}.get(pool, nn.Identity())
        )
    modules.append(nn.Flatten())
    if isinstance(model, DRFM):
        modules.append(FactorPosterior(model))
    modules.append(model.classifier)
    return nn.Sequential(*modules)

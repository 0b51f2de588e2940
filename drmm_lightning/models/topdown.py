"""Normalisations of the top-down pass, one per render path that is not the exact adjoint.

normalized: batch norm (centre, scale, bias) after each transposed convolution, as in the
  authors' later code. Its shifts add a class-independent image to every rendering.
rms: per-channel scale normalisation without centring (as CNN-F's RMS normalisation) and a
  bias on the image only, so the rendering stays linear in the class template mu_c.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ChannelRMSNorm(nn.Module):
    """z * gain_c / rms_c(z) (+ bias_c): the root mean square per channel over the batch and
    positions in training (a running average in evaluation, as batch norm's variance)."""

    running_ms: Tensor  # buffer (channels,): running mean square

    def __init__(
        self, channels: int, bias: bool = False, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_ms", torch.ones(channels))

    def forward(self, z: Tensor) -> Tensor:
        if self.training:
            ms = z.pow(2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_ms.lerp_(ms.detach().to(self.running_ms), self.momentum)
        else:
            ms = self.running_ms
        # the gain in z's dtype, so a bf16 rendering stays bf16 under autocast
        out = z * (self.weight * torch.rsqrt(ms + self.eps)).to(z.dtype).view(1, -1, 1, 1)
        return out if self.bias is None else out + self.bias.to(z.dtype).view(1, -1, 1, 1)


def top_down_norms(path: str, channels: list[int]) -> nn.ModuleList | None:
    """The normalisation after each layer's transposed convolution (index 0: the image), or
    None for the exact adjoint path."""
    if path == "normalized":
        return nn.ModuleList(nn.BatchNorm2d(c) for c in channels)
    if path == "rms":
        return nn.ModuleList(ChannelRMSNorm(c, bias=i == 0) for i, c in enumerate(channels))
    return None

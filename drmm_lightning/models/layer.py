"""One rendering layer: bottom-up it is a CNN layer, top-down it renders with the same weights.

Bottom-up (paper Eq. 9, 40):   I^(l) = Pool(ReLU(Norm(Conv(I^(l-1), W^(l)))))
recording the ReLU switches a (Eq. 42) and the max-pool switches t (Eq. 43).
Top-down (Eqs. 35-36):          z^(l-1) = Lambda_{a,t}^(l) z^(l)
unpool with t, mask with a, scale by the linear part of the normalisation and apply the
transposed convolution with the *same* weights. Given the switches this is exactly the adjoint
of the bottom-up linear path, so rendering a class template gives d logit_c / d input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PADDINGS = ("valid", "same", "full")
POOLINGS = ("max", "mean", "none")


@dataclass(frozen=True)
class LayerSpec:
    """A rendering layer: conv (stride 1, no dilation), optional batch norm, ReLU, pooling."""

    in_channels: int
    out_channels: int
    kernel_size: int
    padding: str = "valid"  # valid: no padding, same: (k-1)/2, full: k-1
    pool: str = "none"  # max: 2x2 max-pool, mean: global mean-pool, none
    batch_norm: bool = True

    def pad(self) -> int:
        """Zero padding of the convolution in pixels."""
        return {"valid": 0, "same": (self.kernel_size - 1) // 2, "full": self.kernel_size - 1}[
            self.padding
        ]

    def output_size(self, size: int) -> tuple[int, int]:
        """Spatial size after the convolution and after the pooling, for an input of `size`."""
        conv = size + 2 * self.pad() - self.kernel_size + 1
        pooled = {"max": conv // 2, "mean": 1, "none": conv}[self.pool]
        return conv, pooled

    def validate(self, name: str) -> None:
        """Raise a ValueError naming this layer if the spec is not one we can render."""
        if self.padding not in PADDINGS:
            raise ValueError(f"{name}: unknown padding {self.padding!r}; valid: {PADDINGS}.")
        if self.pool not in POOLINGS:
            raise ValueError(f"{name}: unknown pooling {self.pool!r}; valid: {POOLINGS}.")
        if min(self.in_channels, self.out_channels, self.kernel_size) < 1:
            raise ValueError(f"{name}: channels and kernel size must be >= 1, got {self}.")
        if self.padding == "same" and self.kernel_size % 2 == 0:
            raise ValueError(f"{name}: padding 'same' needs an odd kernel, got {self.kernel_size}.")


@dataclass
class Switches:
    """The latent nuisances a layer infers bottom-up and renders with top-down.

    a: ReLU switches (Eq. 42) as a bool mask. For max-pooling layers they are kept only at the
       positions the max-pool selected (elsewhere t already zeroes the rendering).
    t: max-pool switches (Eq. 43): the flat index of the selected position in each 2x2 window
       (as returned by max_pool2d), or None when the layer does not max-pool.
    size: spatial size of the pre-pool map, needed to unpool.
    scale: per-channel gain of the normalisation's linear part (gamma / sqrt(var + eps)), or None.
    """

    a: Tensor
    t: Tensor | None
    size: tuple[int, int]
    scale: Tensor | None

    def select(self, rows: slice) -> Switches:
        """The switches of a sub-batch."""
        t = None if self.t is None else self.t[rows]
        return Switches(self.a[rows], t, self.size, self.scale)


class RenderingLayer(nn.Module):
    """A convolutional rendering layer Lambda^(l) of the DRMM (Section 3.2)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        # Paper Eq. 3: w = mu / sigma^2 with a bias b; with batch norm the bias is its beta.
        self.conv = nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            padding=spec.pad(),
            bias=not spec.batch_norm,
        )
        self.norm = nn.BatchNorm2d(spec.out_channels) if spec.batch_norm else None

    def normalise(self, s: Tensor) -> tuple[Tensor, Tensor | None]:
        """Apply the normalisation; also return the gain of its linear part gamma/sqrt(var+eps).

        The variance is the batch's in training mode (as BatchNorm uses it) and the running one in
        eval mode; the render treats it as a constant of the E-step, like the switches.
        """
        norm = self.norm
        if norm is None:
            return s, None
        if norm.training and type(norm) is nn.BatchNorm2d and norm.track_running_stats:
            # BatchNorm2d.forward in one pass that also returns the batch's 1/sqrt(var + eps).
            norm.num_batches_tracked.add_(1)
            momentum = norm.momentum
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / norm.num_batches_tracked.item()
            out, _, invstd = torch.native_batch_norm(
                s,
                norm.weight,
                norm.bias,
                norm.running_mean,
                norm.running_var,
                True,
                momentum,
                norm.eps,
            )
        else:  # eval mode, or SyncBatchNorm under DDP (the gain then uses the local batch)
            out = norm(s)
            use_batch = norm.training or norm.running_var is None
            var = s.detach().var(dim=(0, 2, 3), unbiased=False) if use_batch else norm.running_var
            invstd = torch.rsqrt(var + norm.eps)
        invstd = invstd.detach()
        return out, invstd if norm.weight is None else norm.weight * invstd

    def bottom_up(self, x: Tensor) -> tuple[Tensor, Switches]:
        """Fine-to-coarse E-step of one layer (Eq. 40): returns I^(l) and the switches a, t."""
        s, scale = self.normalise(self.conv(x))
        size = (s.shape[-2], s.shape[-1])
        pool = self.spec.pool
        if pool == "max":
            s, t = F.max_pool2d(s, 2, return_indices=True)  # Eq. 43, t = argmax over each window
            a = s > 0  # Eq. 42 at the selected positions; max-pool and ReLU commute
            return F.relu(s), Switches(a, t, size, scale)
        a = s > 0  # Eq. 42
        out = F.relu(s)
        if pool == "mean":
            out = out.mean(dim=(2, 3), keepdim=True)
        return out, Switches(a, None, size, scale)

    def render(self, z: Tensor, switches: Switches) -> Tensor:
        """Coarse-to-fine E-step of one layer (Eqs. 35-36): z^(l) -> z^(l-1)."""
        pool = self.spec.pool
        if pool == "max":
            z = F.max_unpool2d(z * switches.a, switches.t, 2, output_size=switches.size)
        elif pool == "mean":
            h, w = switches.size
            z = z.expand(-1, -1, h, w) * switches.a / (h * w)  # adjoint of the global mean
        else:
            z = z * switches.a
        weight = self.conv.weight
        if switches.scale is not None:
            weight = weight * switches.scale.view(-1, 1, 1, 1)  # folds the BN gain into Lambda
        if z.device.type == "cpu":  # oneDNN's transposed conv is much faster channels-last
            z = z.contiguous(memory_format=torch.channels_last)
        return F.conv_transpose2d(z, weight, padding=self.spec.pad())

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


def unpool(z: Tensor, t: Tensor, size: tuple[int, int]) -> Tensor:
    """Place each value at the position its max-pool switch t selected: the adjoint of 2x2
    max-pooling given t (the numbers of F.max_unpool2d). Channels-last maps scatter along the
    positions, so forward and backward keep the layout and dtype (max_unpool2d runs in float32
    under autocast and returns its gradient channels-first, which slows what comes below)."""
    if not (z.dim() == 4 and z.is_contiguous(memory_format=torch.channels_last)):
        with torch.autocast(z.device.type, enabled=False):
            return F.max_unpool2d(z, t, (2, 2), output_size=size)
    b, k, h, w = z.shape
    values = z.permute(0, 2, 3, 1).reshape(b, h * w, k)
    where = t.permute(0, 2, 3, 1).reshape(b, h * w, k)
    out = values.new_zeros(b, size[0] * size[1], k).scatter(1, where, values)
    return out.view(b, size[0], size[1], k).permute(0, 3, 1, 2)


class RenderingLayer(nn.Module):
    """A convolutional rendering layer Lambda^(l) of the DRMM (Section 3.2)."""

    prior_momentum = 0.01  # the authors' EMA of the switch statistics (decay 0.99)
    prior_batch = 32  # images of each training batch that update the priors
    norm: nn.BatchNorm2d | None
    prior_a: Tensor  # buffer (K, H, W): P(a = ON) per unit
    prior_t: Tensor  # buffer (K, H, W, 4), max-pooling layers only: P(t) over each window

    def __init__(self, spec: LayerSpec, input_size: int) -> None:
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
        self.conv_size, pooled = spec.output_size(input_size)
        # Switch priors pi_a, pi_t (Eq. 1, 5): running ON / position frequencies of the inferred
        # switches, i.e. the hard-EM M-step for the priors; generation samples from them.
        a_size = pooled if spec.pool == "max" else self.conv_size
        self.register_buffer("prior_a", torch.full((spec.out_channels, a_size, a_size), 0.5))
        if spec.pool == "max":
            self.register_buffer(
                "prior_t", torch.full((spec.out_channels, pooled, pooled, 4), 0.25)
            )

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
            assert norm.num_batches_tracked is not None  # kept when track_running_stats is set
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
        elif norm.training or norm.running_var is None:  # SyncBatchNorm: the local batch's gain
            out = norm(s)
            invstd = torch.rsqrt(s.detach().var(dim=(0, 2, 3), unbiased=False) + norm.eps)
        else:
            return norm(s), self.eval_gain()
        invstd = invstd.detach()
        return out, invstd if norm.weight is None else norm.weight * invstd

    def eval_gain(self) -> Tensor | None:
        """The normalisation's gain with its running statistics (evaluation mode)."""
        norm = self.norm
        if norm is None:
            return None
        assert norm.running_var is not None  # the layer's BatchNorm2d tracks running statistics
        invstd = torch.rsqrt(norm.running_var + norm.eps)
        return invstd if norm.weight is None else norm.weight * invstd

    def bottom_up(self, x: Tensor) -> tuple[Tensor, Switches]:
        """Fine-to-coarse E-step of one layer (Eq. 40): returns I^(l) and the switches a, t."""
        s, scale = self.normalise(self.conv(x))
        size = (s.shape[-2], s.shape[-1])
        pool = self.spec.pool
        t = None
        if pool == "max":
            s, t = F.max_pool2d(s, 2, return_indices=True)  # Eq. 43, t = argmax over each window
        a = s > 0  # Eq. 42 (for max-pooling at the selected positions: max and ReLU commute)
        out = F.relu(s)
        if pool == "mean":
            out = out.mean(dim=(2, 3), keepdim=True)
        if self.training:
            self.update_priors(a, t)
        return out, Switches(a, t, size, scale)

    @torch.no_grad()
    def update_priors(self, a: Tensor, t: Tensor | None) -> None:
        """Move the switch priors towards the switch frequencies of (up to `prior_batch` images
        of) this batch: the EMA averages over steps, so a slice of each batch is enough."""
        a = a[: self.prior_batch]
        self.prior_a.lerp_(a.to(self.prior_a.dtype).mean(0), self.prior_momentum)
        if t is not None:
            t = t[: self.prior_batch]
            rows, cols = t.div(self.conv_size, rounding_mode="floor"), t % self.conv_size
            position = F.one_hot((rows % 2) * 2 + cols % 2, 4).to(self.prior_t.dtype).mean(0)
            self.prior_t.lerp_(position, self.prior_momentum)

    @torch.no_grad()
    def sample_switches(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        prior_a: Tensor | None = None,
        prior_t: Tensor | None = None,
    ) -> Switches:
        """Draw a ~ Bern(pi_a) and t ~ Cat(pi_t) for `batch` images (the generative process).
        prior_a (B, K, H, W) and prior_t (B, K, H, W, 4), when given, are per-image priors to
        draw from instead of the learned ones (e.g. class-conditional p(g | c))."""
        device = self.prior_a.device
        pi_a = self.prior_a if prior_a is None else prior_a
        a = torch.rand((batch, *self.prior_a.shape), generator=generator, device=device) < pi_a
        t = None
        if self.spec.pool == "max":
            k, h, w, _ = self.prior_t.shape
            if prior_t is None:
                probs = self.prior_t.reshape(-1, 4).repeat(batch, 1)
            else:
                probs = prior_t.reshape(-1, 4)
            position = torch.multinomial(probs, 1, generator=generator).view(batch, k, h, w)
            i = torch.arange(h, device=device).view(1, 1, h, 1)
            j = torch.arange(w, device=device).view(1, 1, 1, w)
            t = (2 * i + position // 2) * self.conv_size + 2 * j + position % 2
        size = (self.conv_size, self.conv_size)
        return Switches(a, t, size, self.eval_gain())

    @torch.no_grad()
    def drop_switches(self, switches: Switches, p: float) -> Switches:
        """Replace each unit's inferred switches by a draw from the priors with probability p
        (switch dropout): the rendering then cannot rely on every switch of the image."""
        drawn = self.sample_switches(len(switches.a))
        drop = torch.rand(switches.a.shape, device=switches.a.device) < p
        t = None
        if switches.t is not None:  # a max-pooling layer: its prior draws t as well
            assert drawn.t is not None
            t = torch.where(drop, drawn.t, switches.t)
        return Switches(torch.where(drop, drawn.a, switches.a), t, switches.size, switches.scale)

    def render_expected(
        self, z: Tensor, scale: Tensor | None, leak: float = 0.0, fold_gain: bool = True
    ) -> Tensor:
        """As `render`, through the prior mean switches E[a] = pi_a, E[t] = pi_t instead of the
        image's own: the class-independent, image-independent part of the rendering."""
        mask = self.prior_a + leak * (1 - self.prior_a)
        pool = self.spec.pool
        if pool == "max":
            k, h, w, _ = self.prior_t.shape  # spread each value over its window by pi_t
            spread = (
                self.prior_t.view(k, h, w, 2, 2).permute(0, 1, 3, 2, 4).reshape(k, 2 * h, 2 * w)
            )
            z = F.interpolate(z * mask, scale_factor=2, mode="nearest") * spread
            pad = self.conv_size - 2 * h
            z = F.pad(z, (0, pad, 0, pad))
        elif pool == "mean":
            z = z.expand(-1, -1, self.conv_size, self.conv_size) * mask / self.conv_size**2
        else:
            z = z * mask
        weight = self.conv.weight
        if fold_gain and scale is not None:
            weight = weight * scale.view(-1, 1, 1, 1)
        return F.conv_transpose2d(z, weight.to(z.dtype), padding=self.spec.pad())

    def render(
        self, z: Tensor, switches: Switches, leak: float = 0.0, fold_gain: bool = True
    ) -> Tensor:
        """Coarse-to-fine E-step of one layer (Eqs. 35-36): z^(l) -> z^(l-1).

        leak: what a switched-off ReLU unit passes (0 is the exact Eq. 35 mask; the authors'
        later code uses 0.1). fold_gain: scale by the bottom-up batch-norm gain (the exact
        adjoint); the normalized render path leaves it out and normalises on its own instead.
        """
        pool = self.spec.pool
        # in z's dtype: a float32 mask would lift a bf16 rendering back to float32
        mask = switches.a.to(z.dtype)
        if leak:
            mask = mask + leak * (1 - mask)
        if pool == "max":
            assert switches.t is not None  # max-pooling layers record their switches t
            z = unpool(z * mask, switches.t, switches.size)
        elif pool == "mean":
            h, w = switches.size
            z = z.expand(-1, -1, h, w) * mask / (h * w)  # adjoint of the global mean
        else:
            z = z * mask
        weight = self.conv.weight
        if fold_gain and switches.scale is not None:
            weight = weight * switches.scale.view(-1, 1, 1, 1)  # folds the BN gain into Lambda
        if z.device.type == "cpu":  # oneDNN's transposed conv is much faster channels-last
            z = z.contiguous(memory_format=torch.channels_last)
        return F.conv_transpose2d(z, weight.to(z.dtype), padding=self.spec.pad())

"""Batch-wise preprocessing on whatever device the batch is on:
uint8 to float, normalise, augment."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class BatchTransform:
    """Scale uint8 pixels to [0, 1], then normalise per channel if `mean` is set;
    augment training batches."""

    mean: tuple[float, ...] | None = None  # None: no normalisation, pixels stay in [0, 1]
    std: tuple[float, ...] | None = None
    # training batches: random translation by up to this many pixels (reflect padding)
    max_shift: int = 0
    hflip: bool = False  # training batches: random horizontal flip with probability 1/2

    def __call__(self, images: Tensor, train: bool) -> Tensor:
        """The float32 batch for a uint8 batch (B, C, H, W); augmented only if `train`."""
        x = self.normalize(images.float() / 255)
        if train and self.max_shift:
            x = random_translate(x, self.max_shift)
        if train and self.hflip:
            x = random_hflip(x)
        return x

    def normalize(self, x: Tensor) -> Tensor:
        """Pixel values in [0, 1] to the model's input units (per-channel, if `mean` is set)."""
        if self.mean is None or self.std is None:  # set together (DataModule)
            return x
        return (x - self._per_channel(self.mean, x)) / self._per_channel(self.std, x)

    def denormalize(self, x: Tensor) -> Tensor:
        """Back to pixel values in [0, 1], for showing images and renderings."""
        if self.mean is None or self.std is None:
            return x
        return x * self._per_channel(self.std, x) + self._per_channel(self.mean, x)

    @staticmethod
    def _per_channel(values: tuple[float, ...], like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def random_translate(x: Tensor, max_shift: int) -> Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift],
    filling by reflection."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="reflect").permute(0, 2, 3, 1)  # (B, H', W', C)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch, 1), device=x.device)
    rows = offsets[0] + torch.arange(height, device=x.device)  # (B, H)
    cols = offsets[1] + torch.arange(width, device=x.device)  # (B, W)
    image = torch.arange(batch, device=x.device)[:, None, None]
    return padded[image, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)

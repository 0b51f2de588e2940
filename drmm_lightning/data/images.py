"""In-memory image sets: uint8 tensors that a whole batch is fetched from by one index operation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True, eq=False)
class ImageData:
    """One split of a data set: images (N, C, H, W) uint8, labels (N,) int64, class names, and
    for data with known nuisances (nuisances.py) each image's values, {name: (N,) float32}."""

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    nuisances: dict[str, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or len(self.images) == 0:
            raise ValueError(
                f"ImageData.images must be a non-empty uint8 tensor of shape (N, C, H, W); got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}."
            )
        if self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"Images must be square; got H x W = {tuple(self.images.shape[2:])}.")
        if self.labels.dtype != torch.long or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"ImageData.labels must be an int64 tensor of shape ({len(self.images)},) to match "
                f"the images; got {self.labels.dtype} of shape {tuple(self.labels.shape)}."
            )
        low, high = int(self.labels.min()), int(self.labels.max())
        if low < 0 or high >= len(self.class_names):
            raise ValueError(
                f"ImageData.labels must lie in [0, {len(self.class_names)}), one class name per "
                f"label value; got labels from {low} to {high}."
            )
        wrong = [k for k, v in (self.nuisances or {}).items() if v.shape != self.labels.shape]
        if wrong:
            raise ValueError(f"ImageData.nuisances {wrong} must hold one value per image.")

    def __len__(self) -> int:
        return len(self.images)


class LabeledImages(Dataset):
    """Images with their labels, restricted to `indices`; `ds[positions]` returns a whole batch."""

    def __init__(self, data: ImageData, indices: Tensor | None = None) -> None:
        self.indices = torch.arange(len(data)) if indices is None else indices
        self.images = data.images
        self.labels = data.labels[self.indices]  # only the labels of this subset are kept

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[self.indices[positions]], self.labels[positions]


class UnlabeledImages(Dataset):
    """Images restricted to `indices`, without labels: none can reach the model through it."""

    def __init__(self, images: Tensor, indices: Tensor) -> None:
        self.indices = indices
        self.images = images

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: Tensor) -> Tensor:
        return self.images[self.indices[positions]]


class StreamBatches(Dataset):
    """Named streams fetched together:
    `ds[{"labeled": p, "unlabeled": q}]` gives one training batch."""

    def __init__(self, streams: dict[str, Dataset]) -> None:
        self.streams = streams

    def __getitem__(self, positions: dict[str, Tensor]) -> dict:
        return {name: self.streams[name][index] for name, index in positions.items()}

"""The loaders of the DataModule: a DataLoader over in-memory images, or the same batches
served from images that live on the accelerator.

Both draw their index batches from the same sampler, so for a seed they yield the same images
in the same order; the device loader moves the data set once and the epoch's indices once, then
fetches every batch on the device (no per-step host-to-device copy, no worker processes).
Kept beside the DataLoader, which Lightning would accept alone, because on a GPU the DataLoader's
per-batch host work and copy cost more than the small networks' steps (docs/benchmarks.md).

The place in the epoch of a resumed run is not the loaders' state: the DataModule keeps it
(datamodule.py: state_dict), because Lightning may build the training loader before a
checkpoint is restored and then never restores the loader's own state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .samplers import ShardedSampler, StreamSampler


class DeviceLoader:
    """Batches of an in-memory data set whose tensors were moved to `device` (the DataModule's
    `on_device`), indexed there by the sampler's index batches: one copy of the epoch's indices
    per epoch. Lightning iterates it like a DataLoader (len, sampler.set_epoch)."""

    def __init__(
        self,
        dataset: Dataset,
        sampler: ShardedSampler | StreamSampler,
        device: torch.device,
    ) -> None:
        self.dataset, self.sampler, self.device = dataset, sampler, device
        self.batch_sampler = None  # as a DataLoader with batch_size=None (Lightning reads it)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        batches: list[Any] = list(self.sampler)  # this epoch's index batches (resume skipped)
        if not batches:
            return
        if isinstance(batches[0], dict):
            columns = {name: self._to_device([b[name] for b in batches]) for name in batches[0]}
            for step in range(len(batches)):
                yield self.dataset[{name: col[step] for name, col in columns.items()}]
        else:
            yield from (self.dataset[index] for index in self._to_device(batches))

    def _to_device(self, batches: list[Tensor]) -> tuple[Tensor, ...]:
        """The index batches as views of one device tensor (a single host-to-device copy)."""
        sizes = [len(b) for b in batches]
        return torch.cat(batches).to(self.device, non_blocking=True).split(sizes)

"""The loaders of the DataModule: a DataLoader over in-memory images, or the same batches
served from images that live on the accelerator.

Both draw their index batches from the same sampler, so for a seed they yield the same images
in the same order; the device loader moves the data set once and the epoch's indices once, then
fetches every batch on the device (no per-step host-to-device copy, no worker processes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .samplers import ShardedSampler, StreamSampler


class EpochPosition:
    """A training loader's place in the epoch, in every checkpoint: Lightning saves the state of
    loaders that have state_dict/load_state_dict and restores it before iterating, so a run
    resumed mid-epoch trains on exactly the batches the uninterrupted run would have. Loaders
    without a `position` (evaluation) have no state."""

    sampler: Any  # a ShardedSampler or StreamSampler (DataLoader types it as any Sampler)
    position: Callable[[], int] | None = None

    def state_dict(self) -> dict[str, int]:
        if self.position is None:
            return {}
        return {"epoch": self.sampler.epoch, "batches": self.position()}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            self.sampler.resume(state_dict["epoch"], state_dict["batches"])


class ResumableLoader(EpochPosition, DataLoader):
    """The training DataLoader (see EpochPosition)."""

    def __init__(self, *args: Any, position: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = position


class DeviceLoader(EpochPosition):
    """Batches of an in-memory data set whose tensors were moved to `device` (the DataModule's
    `on_device`), indexed there by the sampler's index batches: one copy of the epoch's indices
    per epoch. Lightning iterates it like a DataLoader (len, sampler.set_epoch, and for the
    training loader its place in the epoch, as ResumableLoader)."""

    def __init__(
        self,
        dataset: Dataset,
        sampler: ShardedSampler | StreamSampler,
        device: torch.device,
        position: Callable[[], int] | None = None,
    ) -> None:
        self.dataset, self.sampler, self.device = dataset, sampler, device
        self.position = position
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

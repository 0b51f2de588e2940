"""Index-batch samplers: each epoch one permutation drawn from (seed, epoch) on every rank,
sliced per rank.

Kept instead of Lightning's DistributedSampler (use_distributed_sampler=False), which shards one
data set per loader: the semi-supervised step draws two streams in lockstep, the small labeled
one re-drawn (reshuffled) as often as the unlabeled one needs, each with its own order from
(seed, stream, epoch), and a resumed run skips the batches it had trained on.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler


class ShardedSampler(Sampler[Tensor]):
    """Batches of positions in a stream of `size` items for one rank,
    `num_samples` items per epoch in all.

    Every rank draws the same order from (seed, stream, epoch): fresh permutations of the stream,
    one after the other, as many as `num_samples` needs (a small labeled set is re-drawn,
    reshuffled, each pass). The order is padded to a multiple of `world_size`, and rank r takes
    every world_size-th item from position r: the ranks take disjoint parts of one epoch's order,
    each the same number of items.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        num_samples: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        stream: str = "",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if size < 1 or batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"ShardedSampler needs size >= 1, batch_size >= 1 and 0 <= rank < world_size; got "
                f"size={size}, batch_size={batch_size}, rank={rank}, world_size={world_size}."
            )
        self.size, self.batch_size = size, batch_size
        self.num_samples = size if num_samples is None else num_samples
        self.shuffle, self.seed, self.stream = shuffle, seed, stream
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (Lightning calls this)."""
        self.epoch = epoch

    def resume(self, epoch: int, batches: int) -> None:
        """Make the next iteration over `epoch` skip the `batches` a checkpoint had trained on."""
        self.resume_at = (epoch, batches)

    def __len__(self) -> int:
        return math.ceil(self._per_rank() / self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        order = self.epoch_order()
        batches = order[self.rank :: self.world_size].split(self.batch_size)
        yield from itertools.islice(batches, self._skip(), None)

    def _skip(self) -> int:
        """Batches to skip at the start of this iteration: those of a mid-epoch checkpoint."""
        resume, self.resume_at = self.resume_at, None
        return resume[1] if resume is not None and resume[0] == self.epoch else 0

    def epoch_order(self) -> Tensor:
        """The current epoch's order of positions over all ranks, identical on every rank."""
        total = self._per_rank() * self.world_size
        passes = math.ceil(total / self.size)
        if not self.shuffle:
            return torch.arange(self.size).repeat(passes)[:total]
        key = f"{self.seed}/{self.stream}/{self.epoch}".encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        generator = torch.Generator().manual_seed(seed)
        return torch.cat([torch.randperm(self.size, generator=generator) for _ in range(passes)])[
            :total
        ]

    def _per_rank(self) -> int:
        return math.ceil(self.num_samples / self.world_size)


class StreamSampler(Sampler[dict]):
    """Named stream samplers zipped into one dict of index batches per training step."""

    def __init__(self, samplers: dict[str, ShardedSampler]) -> None:
        lengths = {name: len(sampler) for name, sampler in samplers.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"The streams must have the same number of batches; got {lengths}.")
        self.samplers = samplers

    @property
    def epoch(self) -> int:
        return next(iter(self.samplers.values())).epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of every stream."""
        for sampler in self.samplers.values():
            sampler.set_epoch(epoch)

    def resume(self, epoch: int, batches: int) -> None:
        """Skip, in every stream, the batches of `epoch` a checkpoint had trained on."""
        for sampler in self.samplers.values():
            sampler.resume(epoch, batches)

    def __len__(self) -> int:
        return len(next(iter(self.samplers.values())))

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for batches in zip(*self.samplers.values()):
            yield dict(zip(self.samplers, batches))

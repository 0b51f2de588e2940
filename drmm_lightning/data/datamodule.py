"""The LightningDataModule: the labeled and unlabeled streams of each regime,
sharded, preprocessed on device."""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .datasets import check_name, load_dataset
from .images import ImageData, LabeledImages, StreamBatches, UnlabeledImages
from .loaders import DeviceLoader
from .nuisances import NuisanceConfig, canvas_stats, with_nuisances
from .root import resolve_data_root
from .samplers import ShardedSampler, StreamSampler
from .splits import (
    INDEX_FILE,
    Split,
    SplitConfig,
    check_num_labeled,
    draw_split,
    read_record,
    save_record,
    split_from_record,
    split_to_record,
)
from .transforms import BatchTransform

# The streams a data regime serves (the training regimes of cli/train.py map onto these; the
# unsup_pretr regime serves "unsup", then "sup").
STREAMS: dict[str, tuple[str, ...]] = {
    "sup": ("labeled",),
    "unsup": ("unlabeled",),
    "semi_sup": ("labeled", "unlabeled"),
}


class DRMMDataModule(L.LightningDataModule):
    """Training batches are dicts {"labeled": (x, y), "unlabeled": x} of the regime's streams;
    eval batches (x, y).

    Batch sizes are global (images per optimizer step) and split evenly across DDP ranks, which this
    module reads from its trainer: build the Trainer with use_distributed_sampler=False. The
    unlabeled stream, when present, defines the epoch, and the labeled images are re-drawn as often
    as it needs. Settings that need a word:

    - path: image_folder's folder (holding train/ and test/), relative to the data root or absolute.
    - num_labeled: N_L, num_labeled / C per class; equal to the whole pool, it labels every image.
    - num_unlabeled: caps N_U (default: every training image outside the validation split).
    - epoch_size: images of the defining stream per epoch (default: that stream's size).
    - augment: None takes the data set's default (off for MNIST-like sets, on for CIFAR and
      folders); max_shift and hflip say which augmentations it turns on.
    - mean, std: per-channel normalisation; None takes the data set's default.
    - standardize: with mean and std unset, standardise with the training set's per-channel
      statistics (MNIST 0.1307 / 0.3081) where the data set's default is raw [0, 1] pixels.
    - index_dir: the run directory; the split is saved there and read back on resume.
    - data: pre-built (train, test) images to serve instead of loading `name` (whose
      preprocessing defaults still apply), e.g. for tests.
    - nuisances: for mnist_nuisance, the canvas, seed, active nuisances and their ranges
      (nuisances.py: NuisanceConfig); each split's values ride along as ImageData.nuisances,
      while the loaders serve (image, label) as for any data set.
    - on_device: keep the images on the trainer's device and fetch every batch there
      (loaders.DeviceLoader: the same batches as the DataLoader, without per-step copies or
      workers); "auto": on an accelerator other than the CPU, when num_workers is 0.
    """

    name: str  # the data set's name (Lightning's base class leaves it optional)

    def __init__(
        self,
        name: str,
        root: str | os.PathLike | None = None,
        path: str | os.PathLike | None = None,
        num_labeled: int = 100,
        num_unlabeled: int | None = None,
        val_size: int = 0,
        labeled_batch_size: int = 100,
        unlabeled_batch_size: int = 100,
        eval_batch_size: int = 500,
        epoch_size: int | None = None,
        seed: int = 0,
        regime: str = "semi_sup",
        augment: bool | None = None,
        max_shift: int = 4,
        hflip: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        standardize: bool = False,
        num_workers: int = 0,
        index_dir: str | os.PathLike | None = None,
        download: bool = True,
        data: tuple[ImageData, ImageData] | None = None,
        on_device: bool | str = "auto",
        nuisances: NuisanceConfig | None = None,
    ) -> None:
        super().__init__()
        # in checkpoints (datamodule_hyper_parameters): drmm-eval and drmm-render rebuild the
        # data from them (cli/checkpoints.py: load_run). Paths as text, so that a checkpoint
        # loads with torch.load(weights_only=True).
        self.save_hyperparameters(
            ignore=["data", "root", "path", "index_dir", "nuisances"], logger=False
        )
        for key, value in (("root", root), ("path", path), ("index_dir", index_dir)):
            self.hparams[key] = None if value is None else str(value)
        if on_device not in (True, False, "auto"):
            raise ValueError(f"on_device must be true, false or auto, got {on_device!r}.")
        spec = check_name(name)
        if (name == "image_folder") != (path is not None):
            raise ValueError(
                f"data set '{name}' got path={path!r}: a path (the folder holding train/ and "
                f"test/) is needed by image_folder and used by no other data set."
            )
        _check_at_least(
            1,
            labeled_batch_size=labeled_batch_size,
            unlabeled_batch_size=unlabeled_batch_size,
            eval_batch_size=eval_batch_size,
            epoch_size=epoch_size,
            num_unlabeled=num_unlabeled,
        )
        _check_at_least(0, val_size=val_size, num_workers=num_workers, max_shift=max_shift)
        if (name == "mnist_nuisance") != (nuisances is not None):
            raise ValueError(
                f"data set '{name}' got nuisances={nuisances!r}: nuisance settings are needed by "
                "mnist_nuisance (data=mnist_nuisance sets them) and used by no other data set."
            )
        self.nuisances = None if nuisances is None else NuisanceConfig.of(nuisances)
        self.hparams["nuisances"] = None if self.nuisances is None else self.nuisances.as_dict()
        if (mean is None) != (std is None):
            raise ValueError("mean and std go together: give both (per channel) or neither.")
        num_classes = len(data[0].class_names) if data is not None else spec.num_classes
        if num_classes is not None:
            check_num_labeled(num_labeled, num_classes, name)
        self.name, self.num_labeled, self.val_size = name, num_labeled, val_size
        self.num_unlabeled = num_unlabeled
        self.batch_sizes = {"labeled": labeled_batch_size, "unlabeled": unlabeled_batch_size}
        self.eval_batch_size, self.epoch_size, self.seed = eval_batch_size, epoch_size, seed
        self.num_workers, self.download, self.on_device = num_workers, download, on_device
        self.index_dir = None if index_dir is None else Path(index_dir)
        root_dir = resolve_data_root(root)
        self.location = root_dir if path is None else root_dir / Path(path).expanduser()
        augment = spec.augment if augment is None else augment
        if mean is None and spec.mean is None and standardize and spec.stats is not None:
            mean, std = spec.stats
            if self.nuisances is not None:  # the digits on a larger, black canvas
                mean, std = canvas_stats(spec.stats, 28, self.nuisances.canvas)
        self.transform = BatchTransform(
            mean=tuple(mean) if mean is not None else spec.mean,
            std=tuple(std) if std is not None else spec.std,
            max_shift=max_shift if augment else 0,
            hflip=hflip and augment,
        )
        self.set_regime(regime)
        self._data = data
        self._split: Split | None = None
        self._record: dict | None = None
        self._served: dict[tuple[int, str], ImageData] = {}  # device copies of the images
        self._train_sampler: StreamSampler | None = None  # of the last training loader
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint

    def set_regime(self, regime: str) -> None:
        """Serve the streams of `regime` (sup, unsup or semi_sup)
        from the next train_dataloader on."""
        if regime not in STREAMS:
            raise ValueError(f"Unknown regime '{regime}'. Valid regimes: {', '.join(STREAMS)}.")
        self.regime = regime

    # ---- data and split, loaded lazily and cached ------------------------------------------------

    @property
    def train_data(self) -> ImageData:
        """The whole training split in memory (labels included: only the DataModule reads them)."""
        return self._datasets()[0]

    @property
    def test_data(self) -> ImageData:
        """The official test split in memory."""
        return self._datasets()[1]

    @property
    def num_classes(self) -> int:
        """The number of classes C."""
        return len(self.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names, in label order."""
        return self.train_data.class_names

    @property
    def in_channels(self) -> int:
        """Channels per image (1 for MNIST, 3 for CIFAR-10)."""
        return self.train_data.images.shape[1]

    @property
    def image_size(self) -> int:
        """Image height and width (square images)."""
        return self.train_data.images.shape[-1]

    @property
    def labeled_indices(self) -> Tensor:
        """Indices into the training set of the N_L labeled images (sorted)."""
        return self.split.labeled

    @property
    def split(self) -> Split:
        """The labeled, unlabeled and validation indices:
        saved ones from index_dir, else drawn from seed."""
        if self._split is None:
            index_dir = self.index_dir
            saved = read_record(index_dir) if index_dir is not None else None
            if index_dir is not None and saved is not None:
                self._adopt(saved, source=str(index_dir / INDEX_FILE))
            else:
                config, train = self._split_config(), self.train_data
                fresh = draw_split(config, train.labels, train.class_names)
                self._adopt(split_to_record(config, fresh), source="a fresh draw")
        assert self._split is not None  # set by _adopt
        return self._split

    def _datasets(self) -> tuple[ImageData, ImageData]:
        if self._data is None and self.nuisances is not None:
            self._data = nuisance_datasets(self.name, self.location, self.download, self.nuisances)
        elif self._data is None:
            self._data = load_dataset(self.name, self.location, self.download)
        if self.nuisances is not None and self._data[0].nuisances is None:
            train, test = self._data
            self._data = (
                with_nuisances(train, self.nuisances, "train"),
                with_nuisances(test, self.nuisances, "test"),
            )
        return self._data

    def _split_config(self) -> SplitConfig:
        return SplitConfig(
            self.name, self.num_labeled, self.seed, self.val_size, self.num_unlabeled
        )

    def _adopt(self, record: dict, source: str) -> None:
        """Use the split in `record` (checked against the settings) and save it to index_dir."""
        self._split = split_from_record(record, self._split_config(), len(self.train_data), source)
        self._record = record
        if self.index_dir is not None and (self.trainer is None or self.trainer.local_rank == 0):
            save_record(self.index_dir, record)

    # ---- Lightning hooks -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download the files if needed, and fill the decoded-image cache, once per machine."""
        if self._data is None:
            load_dataset(self.name, self.location, self.download)

    def setup(self, stage: str | None = None) -> None:
        """Load the data, check the settings against it, and fix the split (read back on resume)."""
        self._per_rank_batch_sizes()
        if self.transform.mean is not None and len(self.transform.mean) != self.in_channels:
            raise ValueError(
                f"mean/std have {len(self.transform.mean)} values but '{self.name}' has "
                f"{self.in_channels} channels: give one value per channel."
            )
        _ = self.split

    def state_dict(self) -> dict:
        """The split and the training stream's place in the epoch (epoch, batches whose step is
        in the weights), so that both travel inside Lightning checkpoints and a run resumed
        mid-epoch trains on exactly the batches the uninterrupted run would have.

        The place is kept here rather than as the loader's state because Lightning restores a
        loader's state only if it builds the loader after restoring the checkpoint; a scheduler
        that reads `trainer.estimated_stepping_batches` makes it build the loader before (and the
        loader's saved state was then silently dropped). The DataModule's state is restored
        before any loader is built."""
        _ = self.split
        state: dict[str, Any] = {"split": self._record}
        if self._train_sampler is not None and self.trainer is not None:
            progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
            batches = progress.processed  # type: ignore[attr-defined]  # a _ProcessedTracker
            state["position"] = {"epoch": self._train_sampler.epoch, "batches": batches}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume with the checkpoint's split and place in the epoch (Lightning calls this after
        setup, before the loaders)."""
        previous = self._split
        self._adopt(state_dict["split"], source="the checkpoint")
        position = state_dict.get("position")
        self._resume_at = (position["epoch"], position["batches"]) if position else None
        if previous is not None and not previous.labeled.equal(self.split.labeled):
            warnings.warn(
                "The checkpoint's labeled split replaces the one read or drawn at setup.",
                stacklevel=2,
            )

    def train_dataloader(self) -> DataLoader | DeviceLoader:
        """One dict per step of this rank's share of each stream;
        the defining stream sets the epoch."""
        rank, world = self._rank_and_world()
        train, split, streams = self._serve(self.train_data), self.split, STREAMS[self.regime]
        device = train.images.device
        datasets: dict[str, LabeledImages | UnlabeledImages] = {
            "labeled": LabeledImages(train, split.labeled.to(device)),
            "unlabeled": UnlabeledImages(train.images, split.unlabeled.to(device)),
        }
        lead = "unlabeled" if "unlabeled" in streams else "labeled"
        epoch_images = self.epoch_size or len(datasets[lead])
        steps = math.ceil(epoch_images / self.batch_sizes[lead])
        per_rank = self._per_rank_batch_sizes()
        samplers = {
            name: ShardedSampler(
                len(datasets[name]),
                per_rank[name],
                num_samples=epoch_images if name == lead else steps * self.batch_sizes[name],
                seed=self.seed,
                stream=name,
                rank=rank,
                world_size=world,
            )
            for name in streams
        }
        sampler = StreamSampler(samplers)
        if self._resume_at is not None:  # the first loader after a restore: skip what was trained
            sampler.resume(*self._resume_at)
            self._resume_at = None
        self._train_sampler = sampler
        return self._loader(StreamBatches({name: datasets[name] for name in streams}), sampler)

    def val_dataloader(self) -> DataLoader | DeviceLoader | list:
        """The validation split carved out of the training set;
        none (an empty list) if val_size is 0."""
        if not self.val_size:
            return []
        train = self._serve(self.train_data)
        return self._eval_loader(LabeledImages(train, self.split.val.to(train.images.device)))

    def test_dataloader(self) -> DataLoader | DeviceLoader:
        """The whole official test split, in order, on every rank (so the error is exact)."""
        return self._eval_loader(LabeledImages(self._serve(self.test_data)))

    def on_after_batch_transfer(self, batch: dict | tuple, dataloader_idx: int) -> dict | tuple:
        """uint8 to float32 on the batch's device, normalised;
        training batches (dicts) are augmented."""
        if not isinstance(batch, dict):
            images, labels = batch
            return self.transform(images, train=False), labels
        train = self.trainer is None or self.trainer.training
        out: dict[str, Any] = {}
        if "labeled" in batch:
            images, labels = batch["labeled"]
            out["labeled"] = self.transform(images, train), labels
        if "unlabeled" in batch:
            out["unlabeled"] = self.transform(batch["unlabeled"], train)
        return out

    # ---- helpers ---------------------------------------------------------------------------------

    def _rank_and_world(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer; (0, 1) without one."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _per_rank_batch_sizes(self) -> dict[str, int]:
        """The regime's batch sizes on one rank;
        a ValueError if the world size does not divide them."""
        world = self._rank_and_world()[1]
        for stream in STREAMS[self.regime]:
            if self.batch_sizes[stream] % world:
                raise ValueError(
                    f"{stream}_batch_size={self.batch_sizes[stream]} is not divisible by the world "
                    f"size {world}: batch sizes are global (images per optimizer step) and are "
                    f"split evenly across the ranks. Use a multiple of {world}."
                )
        return {stream: self.batch_sizes[stream] // world for stream in STREAMS[self.regime]}

    def _serving_device(self) -> torch.device | None:
        """The device the batches are fetched on (on_device), or None for the DataLoader."""
        if self.on_device is False:
            return None
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if self.on_device == "auto":
            use = device is not None and device.type != "cpu" and self.num_workers == 0
            return device if use else None
        return device or torch.device("cpu")

    def _serve(self, data: ImageData) -> ImageData:
        """`data` on the serving device, moved there once (itself for the DataLoader)."""
        device = self._serving_device()
        if device is None or data.images.device == device:
            return data
        key = (id(data), str(device))
        if key not in self._served:
            images, labels = data.images.to(device), data.labels.to(device)
            self._served[key] = ImageData(images, labels, data.class_names)
        return self._served[key]

    def _eval_loader(self, dataset: LabeledImages) -> DataLoader | DeviceLoader:
        return self._loader(
            dataset, ShardedSampler(len(dataset), self.eval_batch_size, shuffle=False)
        )

    def _loader(
        self, dataset: Dataset, sampler: ShardedSampler | StreamSampler
    ) -> DataLoader | DeviceLoader:
        """Whole batches are fetched by index tensors, so the loader itself does no batching."""
        device = self._serving_device()
        if device is not None:
            return DeviceLoader(dataset, sampler, device)
        options: dict[str, Any] = {
            "sampler": sampler,
            "batch_size": None,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            # its own generator: a DataLoader without one draws its workers' base seed from the
            # global random state each time an iterator starts, which a resumed run does after
            # the checkpoint restored that state (noise, switch dropout and augmentation would
            # then draw other numbers than the uninterrupted run)
            "generator": torch.Generator().manual_seed(self.seed),
        }
        return DataLoader(dataset, **options)


@functools.lru_cache(maxsize=2)
def nuisance_datasets(
    name: str, location: Path, download: bool, config: NuisanceConfig
) -> tuple[ImageData, ImageData]:
    """The splits of `name` with `config`'s nuisances applied, made once per process and
    setting: applying them to MNIST's 70,000 digits takes seconds, and drmm-probe (like the
    tests) loads a run's data more than once."""
    train, test = load_dataset(name, location, download)
    return with_nuisances(train, config, "train"), with_nuisances(test, config, "test")


def _check_at_least(minimum: int, **values: int | None) -> None:
    """A ValueError naming the first setting below `minimum` (None means unset and passes)."""
    for key, value in values.items():
        if value is not None and value < minimum:
            raise ValueError(f"{key}={value} must be at least {minimum}.")

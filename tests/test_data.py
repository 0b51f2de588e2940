"""Data package on tiny synthetic images:
splits, streams, sharding, preprocessing, resume, errors."""

from __future__ import annotations

import json
import math
import os
import time
from types import SimpleNamespace
from typing import Any, cast

import lightning as L
import pytest
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import drmm_lightning.data.datasets as datasets_module
import drmm_lightning.data.image_folder as image_folder_module
from drmm_lightning.data import (
    INDEX_FILE,
    DataNotFoundError,
    DRMMDataModule,
    ImageData,
    ShardedSampler,
    StreamSampler,
    load_dataset,
    resolve_data_root,
)
from drmm_lightning.data.images import LabeledImages, StreamBatches, UnlabeledImages
from drmm_lightning.data.loaders import DeviceLoader
from drmm_lightning.data.transforms import BatchTransform, random_translate

NUM_CLASSES, PER_CLASS, SENTINEL = 4, 30, 77


def synthetic(
    per_class: int = PER_CLASS, channels: int = 1, size: int = 8, seed: int = 0
) -> ImageData:
    """Random uint8 images, `per_class` of each of NUM_CLASSES classes."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(
        0, 256, (NUM_CLASSES * per_class, channels, size, size), generator=generator
    )
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    return ImageData(images.to(torch.uint8), labels, tuple(f"class{c}" for c in range(NUM_CLASSES)))


def make_dm(name: str = "mnist", channels: int = 1, **overrides) -> DRMMDataModule:
    """A DataModule over synthetic data: 120 training images, 40 test images, 4 classes."""
    settings = dict(
        num_labeled=20, labeled_batch_size=10, unlabeled_batch_size=16, eval_batch_size=25
    )
    train, test = synthetic(channels=channels), synthetic(per_class=10, channels=channels, seed=1)
    return DRMMDataModule(name, data=(train, test), **(settings | overrides))


def trainer_stub(rank: int = 0, world_size: int = 1, training: bool = True) -> L.Trainer:
    """What the DataModule reads from a Lightning Trainer (typed as one: it stands in for it)."""
    stub = SimpleNamespace(
        global_rank=rank,
        local_rank=rank,
        world_size=world_size,
        training=training,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    return cast(L.Trainer, stub)


def stream_sampler(loader: DataLoader | DeviceLoader) -> StreamSampler:
    """The sampler of a training loader: one index batch per stream and step."""
    assert isinstance(loader.sampler, StreamSampler)
    return loader.sampler


def stream_of(loader: DataLoader | DeviceLoader, name: str) -> Dataset:
    """The data set of one named stream of a training loader."""
    assert isinstance(loader.dataset, StreamBatches)
    return loader.dataset.streams[name]


def epoch(dm: DRMMDataModule, number: int = 0) -> list:
    """Every training batch of one epoch, after on_after_batch_transfer."""
    loader = dm.train_dataloader()
    stream_sampler(loader).set_epoch(number)
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


# ---- no label leaks through the unlabeled stream -------------------------------------------------


def test_unlabeled_stream_carries_no_labels() -> None:
    dm = make_dm()
    dm.setup()
    unlabeled_only = torch.ones(len(dm.train_data), dtype=torch.bool)
    unlabeled_only[dm.labeled_indices] = False
    dm.train_data.labels[unlabeled_only] = SENTINEL  # a canary: any leak of these labels shows
    loader = dm.train_dataloader()
    unlabeled_dataset = stream_of(loader, "unlabeled")
    assert isinstance(unlabeled_dataset, UnlabeledImages)
    assert not hasattr(unlabeled_dataset, "labels")
    assert all(
        value is dm.train_data.images or value.dim() == 1
        for value in vars(unlabeled_dataset).values()
    )
    for regime in ("semi_sup", "unsup"):
        dm.set_regime(regime)
        for batch in epoch(dm, 0) + epoch(dm, 1):
            assert type(batch["unlabeled"]) is Tensor and batch["unlabeled"].is_floating_point()
            if "labeled" in batch:
                assert set(batch) == {"labeled", "unlabeled"}
                assert not (batch["labeled"][1] == SENTINEL).any()
            else:
                assert set(batch) == {"unlabeled"}


# ---- the labeled split ---------------------------------------------------------------------------


def test_split_is_class_balanced_and_seeded() -> None:
    dm = make_dm(num_labeled=40, val_size=20)
    split = dm.split
    counts = torch.bincount(dm.train_data.labels[split.labeled], minlength=NUM_CLASSES)
    assert counts.tolist() == [10] * NUM_CLASSES
    assert len(split.unlabeled) == 100 and set(split.labeled.tolist()) <= set(
        split.unlabeled.tolist()
    )
    assert not set(split.val.tolist()) & set(split.unlabeled.tolist())
    assert make_dm(num_labeled=40, val_size=20).labeled_indices.equal(split.labeled)
    assert not make_dm(num_labeled=40, val_size=20, seed=1).labeled_indices.equal(split.labeled)


def test_all_labels_ignores_balance_and_cap_draws_unlabeled() -> None:
    assert len(make_dm(num_labeled=120).labeled_indices) == 120
    split = make_dm(num_unlabeled=50).split
    assert len(split.unlabeled) == 50 and len(set(split.unlabeled.tolist())) == 50


def test_resume_reuses_the_saved_split(tmp_path) -> None:
    first = make_dm(index_dir=tmp_path)
    first.setup()
    saved = json.loads((tmp_path / INDEX_FILE).read_text())
    assert saved["dataset"] == "mnist" and saved["num_labeled"] == 20 and saved["seed"] == 0
    assert saved["labeled"] == first.labeled_indices.tolist()
    # the file is the run's split: another seed in the same run directory reads it back,
    # with a warning
    with pytest.warns(UserWarning, match="seed=0"):
        second = make_dm(index_dir=tmp_path, seed=1)
        second.setup()
    assert second.labeled_indices.equal(first.labeled_indices)
    with pytest.raises(ValueError, match="num_labeled=20 there, 40 here"):
        make_dm(index_dir=tmp_path, num_labeled=40).setup()


def test_state_dict_round_trip(tmp_path) -> None:
    source = make_dm(seed=3)
    source.setup()
    target = make_dm(seed=4, index_dir=tmp_path)
    target.setup()
    assert not target.labeled_indices.equal(source.labeled_indices)
    with pytest.warns(UserWarning, match="replaces"):
        target.load_state_dict(json.loads(json.dumps(source.state_dict())))
    assert target.labeled_indices.equal(source.labeled_indices)
    labeled = stream_of(target.train_dataloader(), "labeled")
    assert isinstance(labeled, LabeledImages) and labeled.indices.equal(source.labeled_indices)
    assert json.loads((tmp_path / INDEX_FILE).read_text())["seed"] == 3


# ---- streams, epochs, sharding -------------------------------------------------------------------


def test_semi_sup_epoch_length_and_shapes() -> None:
    batches = epoch(make_dm())
    assert len(batches) == math.ceil(120 / 16)
    assert [len(b["unlabeled"]) for b in batches] == [16] * 7 + [120 - 7 * 16]
    for batch in batches:
        images, labels = batch["labeled"]
        assert (
            images.shape == (10, 1, 8, 8) and labels.shape == (10,) and labels.dtype == torch.long
        )


def test_sup_epoch_size_cycles_the_labeled_images() -> None:
    dm = make_dm(regime="sup", epoch_size=100)
    loader = dm.train_dataloader()
    positions = torch.cat([batch["labeled"] for batch in stream_sampler(loader)])
    assert len(loader) == 10 and torch.bincount(positions).tolist() == [5] * 20
    assert set(epoch(dm)[0]) == {"labeled"}


def test_ranks_get_disjoint_shards_that_cover_each_epoch() -> None:
    samplers = [ShardedSampler(96, 8, seed=5, rank=rank, world_size=2) for rank in (0, 1)]
    orders = []
    for number in (0, 1):
        shards = []
        for sampler in samplers:
            sampler.set_epoch(number)
            shards.append(torch.cat(list(sampler)))
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
        assert sorted(torch.cat(shards).tolist()) == list(range(96))
        orders.append(shards[0])
    assert not orders[0].equal(orders[1])


def test_batch_sizes_are_divided_across_ranks() -> None:
    shards = []
    for rank in (0, 1):
        dm = make_dm(labeled_batch_size=10, unlabeled_batch_size=16)
        dm.trainer = trainer_stub(rank, world_size=2)
        batches = epoch(dm)
        assert len(batches) == math.ceil(120 / 16)
        assert all(len(b["labeled"][0]) == 5 for b in batches) and len(batches[0]["unlabeled"]) == 8
        sampler = stream_sampler(dm.train_dataloader())
        shards.append(torch.cat([b for b in sampler.samplers["unlabeled"]]))
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    dm = make_dm(labeled_batch_size=10)
    dm.trainer = trainer_stub(0, world_size=3)
    with pytest.raises(
        ValueError, match="labeled_batch_size=10 is not divisible by the world size 3"
    ):
        dm.setup()


def test_set_regime_switches_the_streams() -> None:
    dm = make_dm(regime="unsup")
    assert set(epoch(dm)[0]) == {"unlabeled"}
    dm.set_regime("sup")
    assert set(epoch(dm)[0]) == {"labeled"} and len(epoch(dm)) == 2
    dm.set_regime("semi_sup")
    assert set(epoch(dm)[0]) == {"labeled", "unlabeled"}
    with pytest.raises(ValueError, match="Valid regimes: sup, unsup, semi_sup"):
        dm.set_regime("pretrain")


def test_eval_loaders_serve_whole_splits_in_order() -> None:
    dm = make_dm(val_size=30)
    test_batches = [dm.on_after_batch_transfer(batch, 0) for batch in dm.test_dataloader()]
    assert [len(x) for x, _ in test_batches] == [25, 15]
    assert torch.cat([y for _, y in test_batches]).equal(dm.test_data.labels)
    assert sum(len(x) for x, _ in dm.val_dataloader()) == 30
    assert make_dm().val_dataloader() == []


# ---- preprocessing -------------------------------------------------------------------------------


def test_mnist_pixels_are_scaled_to_unit_range_without_augmentation() -> None:
    dm = make_dm()
    x, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert dm.transform == BatchTransform()  # no normalisation, no augmentation
    assert x.equal(dm.test_data.images[:25].float() / 255)


def test_cifar_normalisation_and_augmentation_on_training_batches_only() -> None:
    dm = make_dm("cifar10", channels=3)
    assert dm.transform.max_shift == 4 and dm.transform.hflip
    batch = next(iter(dm.train_dataloader()))
    plain = dm.transform(batch["unlabeled"], train=False)
    assert torch.allclose(
        dm.transform.denormalize(plain), batch["unlabeled"].float() / 255, atol=1e-6
    )
    assert abs(plain.mean()) < 0.5  # normalised, not in [0, 1]
    dm.trainer = trainer_stub(training=True)
    torch.manual_seed(0)
    augmented = dm.on_after_batch_transfer(batch, 0)
    assert isinstance(augmented, dict) and not augmented["unlabeled"].equal(plain)
    dm.trainer = trainer_stub(training=False)
    unaugmented = dm.on_after_batch_transfer(batch, 0)
    assert isinstance(unaugmented, dict) and unaugmented["unlabeled"].equal(plain)
    x, y = next(iter(dm.test_dataloader()))
    assert dm.on_after_batch_transfer((x, y), 0)[0].equal(dm.transform(x, train=False))
    assert make_dm("cifar10", channels=3, augment=False).transform.max_shift == 0


def test_random_translate_moves_whole_images_within_the_shift() -> None:
    x = torch.rand(6, 2, 8, 8)
    shifted = random_translate(x, 2)
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for image, out in zip(padded, shifted):
        windows = [image[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(out.equal(window) for window in windows)


# ---- Lightning integration -----------------------------------------------------------------------


class Recorder(L.LightningModule):
    """Records what reaches the model; a single weight keeps the optimizer happy."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list] = {"train": [], "val": []}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        self.seen["train"].append(batch)
        return self.weight.sum() * batch["unlabeled"].mean()

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self.seen["val"].append(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def quiet_trainer(tmp_path, max_epochs: int = 1, **overrides: Any) -> L.Trainer:
    """A small CPU Trainer as the CLI will build it (use_distributed_sampler=False); two
    training batches per epoch unless `overrides` say otherwise."""
    settings: dict[str, Any] = {"max_epochs": max_epochs, "limit_train_batches": 2}
    return L.Trainer(
        **(settings | overrides),
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )


def test_lightning_fit_uses_the_hooks_and_checkpoints_the_split(tmp_path) -> None:
    dm, model = make_dm("cifar10", channels=3, val_size=20), Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    train, val = model.seen["train"], model.seen["val"]
    assert (
        set(train[0]) == {"labeled", "unlabeled"} and train[0]["unlabeled"].dtype == torch.float32
    )
    assert trainer.train_dataloader is not None
    assert len(train) == 4 and trainer.train_dataloader.sampler.samplers["unlabeled"].epoch == 1
    x, _ = val[-1]  # validation batches are normalised but never augmented
    assert x.equal(dm.transform(dm.train_data.images[dm.split.val], train=False))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["DRMMDataModule"]
    assert state["split"]["labeled"] == dm.labeled_indices.tolist()


def test_lightning_resume_serves_the_checkpoints_split(tmp_path) -> None:
    first = make_dm(index_dir=tmp_path / "run1")
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Recorder(), datamodule=first)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = make_dm(seed=9, index_dir=tmp_path / "run2")  # another seed would draw another split
    with pytest.warns(UserWarning, match="replaces"):
        trainer = quiet_trainer(tmp_path, max_epochs=2)
        trainer.fit(Recorder(), datamodule=resumed, ckpt_path=tmp_path / "last.ckpt")
    assert trainer.train_dataloader is not None
    assert trainer.train_dataloader.dataset.streams["labeled"].indices.equal(first.labeled_indices)
    saved = json.loads((tmp_path / "run2" / INDEX_FILE).read_text())
    assert saved["labeled"] == first.labeled_indices.tolist() and saved["seed"] == 0


# ---- data sets on disk, data root, errors --------------------------------------------------------


def test_image_folder_is_decoded_once_and_cached_outside_the_data_root(
    tmp_path, monkeypatch
) -> None:
    root, cache = tmp_path / "folder", tmp_path / "cache"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / name / f"{i}.png")
    monkeypatch.setenv("DRMM_CACHE_DIR", str(cache))
    train, test = load_dataset("image_folder", root)
    assert train.images.shape == (6, 3, 8, 8) and train.class_names == ("cat", "dog")
    assert len(list(cache.glob("*.pt"))) == 2 and not list(root.rglob("*.pt"))
    monkeypatch.setattr(image_folder_module, "_decode", lambda files: pytest.fail("decoded twice"))
    again, _ = load_dataset("image_folder", root)
    assert again.images.equal(train.images) and again.labels.equal(train.labels)
    # a fresh copy of the same tree (newer files): decoded again, its stale cache removed
    monkeypatch.undo()
    monkeypatch.setenv("DRMM_CACHE_DIR", str(cache))
    before = {p.name for p in cache.glob("*.pt")}
    newer = root / "train" / "cat" / "0.png"
    os.utime(newer, ns=(newer.stat().st_atime_ns, newer.stat().st_mtime_ns + 10**9))
    fresh, _ = load_dataset("image_folder", root)
    after = {p.name for p in cache.glob("*.pt")}
    assert fresh.images.equal(train.images) and len(after) == 2 and len(after - before) == 1


def test_data_root_comes_from_argument_then_environment_then_cwd(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DRMM_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "given") == tmp_path / "given"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("DRMM_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == tmp_path / "data"


def test_missing_data_offline_fails_fast_naming_directory_and_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(datasets_module, "network_available", lambda host: False)
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as error:
        DRMMDataModule("mnist", root=tmp_path).setup()
    assert time.perf_counter() - start < 5
    assert isinstance(error.value, ValueError) and isinstance(error.value, FileNotFoundError)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "cannot be reached" in message
    assert all(name in message for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    with pytest.raises(DataNotFoundError, match="download=False"):
        DRMMDataModule("cifar10", root=tmp_path, download=False).setup()
    with pytest.raises(DataNotFoundError, match="train/<class>/<image>"):
        DRMMDataModule("image_folder", root=tmp_path, path="nowhere").setup()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(name="svhn"), "Valid names: cifar10, fashion_mnist, image_folder, mnist"),
        (dict(num_labeled=22), "not a positive multiple of the 4 classes"),
        (dict(num_labeled=0), "not a positive multiple of the 4 classes"),
        (dict(labeled_batch_size=0), "labeled_batch_size=0 must be at least 1"),
        (dict(unlabeled_batch_size=-1), "unlabeled_batch_size=-1 must be at least 1"),
        (dict(eval_batch_size=0), "eval_batch_size=0 must be at least 1"),
        (dict(val_size=-1), "val_size=-1 must be at least 0"),
        (dict(regime="semi"), "Valid regimes"),
        (dict(name="image_folder"), "a path"),
        (dict(path="somewhere"), "a path"),
        (dict(mean=(0.5,)), "mean and std go together"),
    ],
)
def test_bad_settings_fail_at_construction(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_dm(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(num_labeled=124), "larger than the 120 training images"),
        (dict(num_labeled=80, val_size=100), "larger than the 20 training images"),
        (dict(num_labeled=112, val_size=4), "has only"),
        (dict(val_size=120), "val_size=120 must be at least 0 and below the 120 training images"),
        (dict(num_unlabeled=500), "num_unlabeled=500 must lie between 1 and the 120"),
        (dict(mean=(0.5, 0.5), std=(0.2, 0.2)), "one value per channel"),
    ],
)
def test_bad_settings_for_the_data_fail_at_setup(settings: dict, message: str) -> None:
    dm = make_dm(**settings)
    with pytest.raises(ValueError, match=message):
        dm.setup()

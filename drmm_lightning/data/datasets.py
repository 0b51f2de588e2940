"""The named data sets: where their files are, how they load into memory,
how they are preprocessed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torchvision import datasets as tv

from .image_folder import load_image_folder
from .images import ImageData
from .root import missing_files, network_available, not_found_error

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set: its torchvision class, its files under the root,
    its preprocessing defaults."""

    torchvision_class: type | None  # None: an ImageFolder tree given by a path, never downloaded
    folder: str
    files: tuple[str, ...]
    host: str  # probed before a download so that an offline machine fails fast
    num_classes: int | None  # None: known once the folder is read
    # None: pixels scaled to [0, 1] only, as in the authors' code
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = False
    # the training set's per-channel pixel mean and std, for standardize=True
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def _mnist_like(torchvision_class: Any, mean: float, std: float) -> DatasetSpec:
    """MNIST and Fashion-MNIST share their file names, layout and preprocessing."""
    return DatasetSpec(
        torchvision_class=torchvision_class,
        folder=f"{torchvision_class.__name__}/raw",
        files=_MNIST_FILES,
        host=urlparse(torchvision_class.mirrors[0]).hostname or "",
        num_classes=10,
        stats=((mean,), (std,)),
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist": _mnist_like(tv.MNIST, 0.1307, 0.3081),
    "fashion_mnist": _mnist_like(tv.FashionMNIST, 0.2860, 0.3530),
    # MNIST's files with known nuisances applied (nuisances.py; the DataModule applies them)
    "mnist_nuisance": _mnist_like(tv.MNIST, 0.1307, 0.3081),
    "cifar10": DatasetSpec(
        torchvision_class=tv.CIFAR10,
        folder=tv.CIFAR10.base_folder,
        files=_CIFAR10_FILES,
        host=urlparse(tv.CIFAR10.url).hostname,
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment=True,
    ),
    "image_folder": DatasetSpec(
        torchvision_class=None,
        folder="",
        files=("train/<class>/<image>", "test/<class>/<image>"),
        host="",
        num_classes=None,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment=True,
    ),
}


def check_name(name: str) -> DatasetSpec:
    """The spec of data set `name`; a ValueError listing the valid names if there is none."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data set '{name}'. Valid names: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name]


def ensure_files(name: str, location: Path, download: bool) -> None:
    """Make sure the files of `name` are under `location`, downloading them once if allowed."""
    spec = check_name(name)
    if spec.torchvision_class is None:
        if not all((location / split).is_dir() for split in ("train", "test")):
            raise not_found_error(name, location, spec.files, "image_folder never downloads")
        return
    directory = location / spec.folder
    if not missing_files(directory, spec.files):
        return
    hint = folder_copies_hint(name, location)
    if not download:
        raise not_found_error(
            name, directory, spec.files, f"downloading is off (download=False){hint}"
        )
    if not network_available(spec.host):
        raise not_found_error(
            name, directory, spec.files, f"{spec.host} cannot be reached to download them{hint}"
        )
    try:
        spec.torchvision_class(location, train=True, download=True)
        spec.torchvision_class(location, train=False, download=True)
    except Exception as error:
        raise not_found_error(
            name, directory, spec.files, f"the download failed ({error})"
        ) from error


def folder_copies_hint(name: str, location: Path) -> str:
    """Where the data root holds an image-folder copy of `name` (a folder named like it, e.g.
    cifar10-jpeg, with train/ and test/ inside), a sentence saying how to train on it; else ""."""
    if not location.is_dir():
        return ""
    key = name.replace("_", "").lower()
    copies = sorted(
        folder.name
        for folder in location.iterdir()
        if folder.is_dir()
        and key in folder.name.replace("_", "").replace("-", "").lower()
        and all((folder / split).is_dir() for split in ("train", "test"))
    )
    if not copies:
        return ""
    uses = " or ".join(f"data=image_folder data.path={copy}" for copy in copies)
    return (
        f"; but {location} holds an image-folder copy of it ({', '.join(copies)}: train/ and "
        f"test/ class folders), which {uses} trains on"
    )


def load_dataset(name: str, location: Path, download: bool = True) -> tuple[ImageData, ImageData]:
    """The (train, test) splits of `name` as in-memory uint8 tensors;
    `location` is the root or folder."""
    ensure_files(name, location, download)
    if name == "image_folder":
        train, test = load_image_folder(location / "train"), load_image_folder(location / "test")
        if train.class_names != test.class_names:
            raise ValueError(
                f"The class folders of {location}/train and {location}/test differ: "
                f"{list(train.class_names)} against {list(test.class_names)}."
            )
        return train, test
    spec = DATASETS[name]
    directory = location / spec.folder
    reader = spec.torchvision_class
    assert reader is not None  # only image_folder has none, and it returned above
    if spec.files == _MNIST_FILES:
        for file in spec.files:
            check_idx_file(directory / file)
    try:
        train_set, test_set = reader(location, train=True), reader(location, train=False)
        return _from_torchvision(train_set), _from_torchvision(test_set)
    except Exception as error:  # a torchvision reader's own error does not name the file
        raise ValueError(
            f"Cannot read the {name} files in {directory} ({type(error).__name__}: {error}); one "
            f"of {', '.join(spec.files)} is truncated or corrupt: delete them (download=true "
            "fetches them again) or restore them."
        ) from error


IDX_TYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # idx type code -> bytes


def check_idx_file(path: Path) -> None:
    """A ValueError naming `path` unless it is a whole idx file: its header's magic number and
    sizes, and a length equal to what the header announces (catches truncation and garbling)."""
    size = path.stat().st_size
    with path.open("rb") as file:
        header = file.read(4)
        ok = len(header) == 4 and header[:2] == b"\0\0" and header[2] in IDX_TYPES
        dims = header[3] if ok else 0
        shape_bytes = file.read(4 * dims)
    shape = [int.from_bytes(shape_bytes[i : i + 4], "big") for i in range(0, len(shape_bytes), 4)]
    if not ok or not 1 <= dims <= 4 or len(shape) != dims:
        raise ValueError(
            f"{path} is not an idx file (bad header {header.hex()}): it is corrupt; delete it "
            "(download=true fetches it again) or restore it."
        )
    expected = 4 + 4 * dims + IDX_TYPES[header[2]] * int(torch.tensor(shape).prod())
    if size != expected:
        raise ValueError(
            f"{path} has {size} bytes but its header announces {expected} (shape {shape}): it "
            "is truncated or corrupt; delete it (download=true fetches it again) or restore it."
        )


def _from_torchvision(dataset: tv.VisionDataset) -> ImageData:
    """A torchvision MNIST-style (N, H, W) or CIFAR-style (N, H, W, C) set as (N, C, H, W) uint8."""
    images = torch.as_tensor(dataset.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(dataset.targets, dtype=torch.long)
    return ImageData(images.contiguous(), labels, tuple(dataset.classes))

"""The real MNIST and the CIFAR-10 JPEG copy under $DRMM_DATA_DIR
(skipped, saying why, when absent)."""

from __future__ import annotations

import pytest
import torch

from drmm_lightning.data import DRMMDataModule

from .conftest import require_data as require

pytestmark = pytest.mark.real_data


@pytest.mark.parametrize("num_labeled", [100, 600, 1000, 3000, 60000])
def test_mnist_builds_for_every_paper_label_count(num_labeled: int) -> None:
    require("MNIST/raw/train-images-idx3-ubyte")
    dm = DRMMDataModule("mnist", num_labeled=num_labeled, download=False)
    dm.setup()
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)
    assert len(dm.split.unlabeled) == 60000 and len(dm.test_data) == 10000
    counts = torch.bincount(dm.train_data.labels[dm.labeled_indices], minlength=10)
    expected = torch.bincount(dm.train_data.labels) if num_labeled == 60000 else num_labeled // 10
    assert counts.sum() == num_labeled and (counts == expected).all()
    assert (
        len(dm.train_dataloader()) == 600 and sum(len(x) for x, _ in dm.test_dataloader()) == 10000
    )


@pytest.mark.slow  # decoding 60000 JPEGs the first time (cached afterwards)
def test_cifar10_jpeg_folder_loads_as_50000_plus_10000_images() -> None:
    require("cifar10-jpeg/train")
    dm = DRMMDataModule("image_folder", path="cifar10-jpeg", num_labeled=4000, download=False)
    dm.setup()
    assert (len(dm.train_data), len(dm.test_data)) == (50000, 10000)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, 32)
    assert dm.class_names[:2] == ("airplane", "automobile")
    assert torch.bincount(dm.train_data.labels[dm.labeled_indices]).tolist() == [400] * 10

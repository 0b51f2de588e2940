"""data=mnist_nuisance: each recorded nuisance value is what was applied, the draws come from
the seed, a nuisance switched off is constant, and the DataModule serves it as any data set."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from drmm_lightning.data import DRMMDataModule, ImageData
from drmm_lightning.data.nuisances import NEUTRAL, NuisanceConfig, apply, draw, with_nuisances

from .conftest import require_data


def values(count: int = 1, **given: float) -> dict[str, torch.Tensor]:
    return {k: torch.full((count,), float(given.get(k, v))) for k, v in NEUTRAL.items()}


def centroid(image: torch.Tensor) -> torch.Tensor:
    """(x, y) centre of mass of a (1, H, W) image."""
    weights = image[0].double()
    ys, xs = torch.meshgrid(
        *(torch.arange(n, dtype=torch.double) for n in weights.shape), indexing="ij"
    )
    return torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def blob(size: int = 28) -> torch.Tensor:
    """A centred Gaussian blob as a (1, 1, size, size) uint8 image."""
    r = torch.arange(size, dtype=torch.float) - (size - 1) / 2
    return (
        (255 * torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / 8)).round().to(torch.uint8)[None, None]
    )


@pytest.mark.parametrize(("dx", "dy"), [(3.0, -5.0), (-6.0, 2.0), (2.5, 1.5)])
def test_translation_moves_the_centroid_by_dx_dy(dx: float, dy: float) -> None:
    image = blob()
    canvas = apply(image, values(), 40)[0]
    moved = apply(image, values(dx=dx, dy=dy), 40)[0]
    shift = centroid(moved) - centroid(canvas)
    assert shift.tolist() == pytest.approx([dx, dy], abs=0.05)
    assert centroid(canvas).tolist() == pytest.approx([19.5, 19.5], abs=1e-6)


def test_rotation_by_90_degrees_is_recovered() -> None:
    digit = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    digit[0, 0, 4:10, 6:24] = 200  # an asymmetric L
    digit[0, 0, 10:22, 6:11] = 120
    rotated = apply(digit, values(angle=90.0), 40)[0]
    plain = apply(digit, values(), 40)[0]
    # clockwise on screen (torchvision affine's convention): the top edge turns to the right
    assert torch.equal(rotated, torch.rot90(plain, -1, dims=(1, 2)))


def test_scale_contrast_and_thickness_act_as_recorded() -> None:
    image = blob()
    plain = apply(image, values(), 40)[0].double()
    big = apply(image, values(scale=1.5), 40)[0].double()
    assert big.sum() / plain.sum() == pytest.approx(1.5**2, rel=0.02)  # area grows as scale^2
    dim = apply(image, values(contrast=0.5), 40)[0].double()
    assert dim.max() == pytest.approx(plain.max() / 2, abs=1)
    strokes = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    strokes[0, 0, 10:18, 13:15] = 255
    mass = [apply(strokes, values(thickness=t), 40).double().sum() for t in (-1.0, 0.0, 0.5, 1.0)]
    assert mass[0] == 0 and mass[1] < mass[2] < mass[3]  # 2-wide strokes: eroded away, thickened
    assert mass[3] == 255 * 10 * 4  # a 3x3 dilation of the 8x2 bar is 10x4


def test_the_geometry_is_torchvisions_affine() -> None:
    generator = torch.Generator().manual_seed(0)
    digits = (torch.rand(4, 1, 28, 28, generator=generator) * 255).to(torch.uint8)
    drawn = draw(NuisanceConfig(active=("translate", "rotate", "scale")), 4, "train")
    mine = apply(digits, drawn, 40).float()
    padded = torch.nn.functional.pad(digits.float(), (6, 6, 6, 6))
    for i in range(4):
        ref = TF.affine(
            padded[i],
            angle=float(drawn["angle"][i]),
            translate=[float(drawn["dx"][i]), float(drawn["dy"][i])],
            scale=float(drawn["scale"][i]),
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
        )
        assert (mine[i] - ref.round()).abs().max() <= 1  # rounding to uint8 only


def test_draws_are_reproducible_and_switched_off_nuisances_are_constant() -> None:
    config = NuisanceConfig(seed=3)
    first, again = draw(config, 500, "train"), draw(config, 500, "train")
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = draw(NuisanceConfig(seed=4), 500, "train")
    assert not torch.equal(first["angle"], other["angle"])
    assert not torch.equal(first["angle"], draw(config, 500, "test")["angle"])
    only_rotate = draw(NuisanceConfig(seed=3, active=("rotate",)), 500, "train")
    assert torch.equal(only_rotate["angle"], first["angle"])  # the others' draws are kept
    for name in ("dx", "dy", "scale", "thickness", "contrast"):
        assert (only_rotate[name] == NEUTRAL[name]).all()
    low, high = config.rotate
    assert low <= float(first["angle"].min()) and float(first["angle"].max()) <= high
    assert first["angle"].std() > 10  # uniform on [-30, 30]: std 17


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="shear"):
        NuisanceConfig(active=("shear",))
    with pytest.raises(ValueError, match="low must not exceed high"):
        NuisanceConfig(rotate=(10.0, -10.0))
    with pytest.raises(ValueError, match="nuisance settings are needed by mnist_nuisance"):
        DRMMDataModule("mnist_nuisance")


def synthetic(count: int, seed: int) -> ImageData:
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(count, 1, 28, 28, generator=generator) * 255).to(torch.uint8)
    return ImageData(images, torch.arange(count) % 10, tuple(str(c) for c in range(10)))


def test_the_datamodule_serves_images_and_labels_and_keeps_the_values() -> None:
    config = NuisanceConfig(canvas=36, active=("translate", "contrast"))
    dm = DRMMDataModule(
        "mnist_nuisance",
        num_labeled=20,
        labeled_batch_size=10,
        unlabeled_batch_size=10,
        eval_batch_size=25,
        nuisances=config,
        data=(synthetic(60, 0), synthetic(30, 1)),
    )
    dm.setup()
    assert dm.image_size == 36 and dm.hparams["nuisances"] == config.as_dict()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"labeled", "unlabeled"} and batch["labeled"][0].shape[-1] == 36
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (25, 1, 36, 36) and torch.equal(labels, dm.test_data.labels[:25])
    test = dm.test_data.nuisances
    assert test is not None and torch.equal(test["dx"], draw(config, 30, "test")["dx"])
    assert (test["angle"] == 0).all() and test["contrast"].std() > 0


@pytest.mark.real_data
def test_real_mnist_with_nuisances(mnist) -> None:
    require_data("MNIST/raw/train-images-idx3-ubyte")
    from drmm_lightning.data import load_dataset, resolve_data_root

    _, test = load_dataset("mnist", resolve_data_root(None), download=False)
    few = ImageData(test.images[:300], test.labels[:300], test.class_names)
    out = with_nuisances(few, NuisanceConfig(), "test")
    assert out.images.shape == (300, 1, 40, 40) and torch.equal(out.labels, few.labels)
    assert out.nuisances is not None and set(out.nuisances) == set(NEUTRAL)
    # the ink is kept (up to what thickness adds or removes and rounding)
    ratio = out.images.double().sum() / few.images.double().sum()
    assert 0.5 < ratio < 2.0

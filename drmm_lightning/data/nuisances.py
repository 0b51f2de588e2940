"""Known nuisances rendered onto MNIST digits (data=mnist_nuisance), so a probe can ask how much
of each one every layer of a trained model still carries (paper Fig. 2, left).

How the values are drawn: for split k (train 0, test 1) a torch.Generator seeded with
2 * seed + k draws, in the order of NEUTRAL, one value per image for every variable,
uniform on its range: dx, dy (pixels on the canvas, +x right, +y down), angle (degrees,
clockwise on screen, torchvision affine's convention), scale (size factor), thickness (-1:
strokes eroded by a 3x3 min filter, 0: as drawn, 1: dilated by a 3x3 max filter, linear in
between) and contrast (peak intensity factor). Every variable is drawn whether its nuisance is
active or not, so switching one off leaves the others' values unchanged; an inactive one is
set to its neutral value.

How they are applied, per image: thickness on the 28x28 digit, the digit centred on the canvas,
then one affine transform as torchvision's (rotation and scale about the canvas centre, then the
translation; bilinear), then contrast; rounded back to uint8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import ImageData

# nuisance (what `active` names) -> the variables it draws
GROUPS: dict[str, tuple[str, ...]] = {
    "translate": ("dx", "dy"),
    "rotate": ("angle",),
    "scale": ("scale",),
    "thickness": ("thickness",),
    "contrast": ("contrast",),
}
# every variable's value when its nuisance is off; the order is the order of the draws
NEUTRAL: dict[str, float] = {
    "dx": 0.0,
    "dy": 0.0,
    "angle": 0.0,
    "scale": 1.0,
    "thickness": 0.0,
    "contrast": 1.0,
}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class NuisanceConfig:
    """Canvas size, the seed of the draws, the active nuisances and each one's (low, high)."""

    canvas: int = 40
    seed: int = 0
    active: tuple[str, ...] = ("translate", "rotate", "scale", "thickness")
    translate: tuple[float, float] = (-6.0, 6.0)  # dx and dy, each, in pixels
    rotate: tuple[float, float] = (-30.0, 30.0)  # degrees
    scale: tuple[float, float] = (0.8, 1.2)
    thickness: tuple[float, float] = (-1.0, 1.0)
    contrast: tuple[float, float] = (0.4, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", tuple(self.active))
        unknown = [name for name in self.active if name not in GROUPS]
        if unknown:
            raise ValueError(
                f"Unknown nuisance(s) {unknown} in nuisances.active; valid: {', '.join(GROUPS)}."
            )
        if self.canvas < 28:
            raise ValueError(f"nuisances.canvas={self.canvas} must be at least 28 (MNIST's size).")
        for name in GROUPS:
            low, high = (float(v) for v in getattr(self, name))
            if not low <= high:
                raise ValueError(f"nuisances.{name}=[{low}, {high}]: low must not exceed high.")
            object.__setattr__(self, name, (low, high))
        if not -1.0 <= self.thickness[0] <= self.thickness[1] <= 1.0:
            raise ValueError(f"nuisances.thickness={list(self.thickness)} must lie in [-1, 1].")

    @classmethod
    def of(cls, value: NuisanceConfig | Any) -> NuisanceConfig:
        """A NuisanceConfig from itself or a mapping of its fields (a config's data.nuisances)."""
        if isinstance(value, NuisanceConfig):
            return value
        known = {f.name for f in fields(cls)}
        extra = sorted(set(value) - known)
        if extra:
            raise ValueError(f"Unknown setting(s) nuisances.{extra}; valid: {sorted(known)}.")
        kwargs: dict[str, Any] = {
            k: tuple(v) if not isinstance(v, int | str) else v for k, v in value.items()
        }
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as checkpoints and probe.json store them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables that vary, in NEUTRAL's order (the others are constant)."""
        return tuple(v for v in NEUTRAL if any(v in GROUPS[n] for n in self.active))

    def range_of(self, variable: str) -> tuple[float, float]:
        """The (low, high) a variable is drawn from."""
        group = next(n for n, variables in GROUPS.items() if variable in variables)
        return getattr(self, group)


def draw(config: NuisanceConfig, count: int, split: str) -> dict[str, Tensor]:
    """The nuisance values of `count` images of `split`, reproducible from config.seed."""
    generator = torch.Generator().manual_seed(2 * config.seed + SPLITS.index(split))
    values = {}
    for variable, neutral in NEUTRAL.items():
        low, high = config.range_of(variable)
        drawn = low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)
        values[variable] = (
            drawn if variable in config.variables else torch.full_like(drawn, neutral)
        )
    return {k: v.float() for k, v in values.items()}


def thicken(x: Tensor, amount: Tensor) -> Tensor:
    """Strokes of float images (N, C, H, W) moved towards their 3x3 dilation (amount > 0) or
    erosion (amount < 0) by |amount|."""
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    t = amount.view(-1, 1, 1, 1)
    return x + t.clamp(min=0) * (dilated - x) + (-t).clamp(min=0) * (eroded - x)


def affine_theta(values: dict[str, Tensor], size: int) -> Tensor:
    """(N, 2, 3) matrices for F.affine_grid that map each output pixel to where it is read in the
    input: the inverse of torchvision's affine (rotate by angle and scale about the centre, then
    translate by (dx, dy) pixels), in the normalised coordinates of a size x size image."""
    angle = torch.deg2rad(values["angle"].double())
    cos, sin = torch.cos(angle) / values["scale"], torch.sin(angle) / values["scale"]
    tx, ty = 2 * values["dx"] / size, 2 * values["dy"] / size
    rows = [
        torch.stack([cos, sin, -(cos * tx + sin * ty)], -1),
        torch.stack([-sin, cos, -(-sin * tx + cos * ty)], -1),
    ]
    return torch.stack(rows, 1).float()


def apply(images: Tensor, values: dict[str, Tensor], canvas: int) -> Tensor:
    """uint8 images (N, C, h, w) with the nuisance `values` applied, on a canvas x canvas.

    The geometry is torchvision's affine (bilinear, zero fill; tests check it against
    torchvision.transforms.v2.functional.affine), computed for the whole batch at once: calling
    torchvision once per image, each with its own values, took 11 ms an image here."""
    x = thicken(images.float(), values["thickness"])
    top, left = (canvas - x.shape[-2]) // 2, (canvas - x.shape[-1]) // 2
    x = F.pad(x, (left, canvas - x.shape[-1] - left, top, canvas - x.shape[-2] - top))
    out = torch.empty_like(x)
    for rows in torch.arange(len(x)).split(2000):  # bounds the memory of the sampling grid
        grid = F.affine_grid(
            affine_theta(values_at(values, rows), canvas),
            [len(rows), *x.shape[1:]],
            align_corners=False,
        )
        out[rows] = F.grid_sample(x[rows], grid, mode="bilinear", align_corners=False)
    out = out * values["contrast"].view(-1, 1, 1, 1)
    return out.round().clamp(0, 255).to(torch.uint8)


def values_at(values: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """The values of the images `rows`."""
    return {k: v[rows] for k, v in values.items()}


def with_nuisances(data: ImageData, config: NuisanceConfig, split: str) -> ImageData:
    """`data` (one split) with its nuisances drawn and applied; the values ride along."""
    values = draw(config, len(data), split)
    images = apply(data.images, values, config.canvas)
    return ImageData(images, data.labels, data.class_names, nuisances=values)


def canvas_stats(
    stats: tuple[tuple[float, ...], tuple[float, ...]], size: int, canvas: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pixel mean and std of size x size images centred on a larger, black canvas (the digit's
    moments spread over more pixels; the nuisances' small effect on them is ignored)."""
    share = (size / canvas) ** 2
    means = tuple(m * share for m in stats[0])
    stds = tuple(float(((s**2 + m**2) * share - (m * share) ** 2) ** 0.5) for m, s in zip(*stats))
    return means, stds

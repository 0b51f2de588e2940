"""drmm-render: pictures of what a trained DRMM stores and generates, as PNG grids.

    drmm-render ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
    drmm-render ckpt_path=last what=samples classes=[3,5] per_class=16

what: reconstructions (test images above their renderings), templates (closed-form class
appearance, Eq. 46, above gradient-ascent activity maximisation, both at the mean norm of the
test images), samples (one row per class, Eqs. 5-7), filters (first layer), layers
(intermediate rendered templates z^(l), one file per layer), classes (up to 8 test images, each
rendered from every class through its own switches). Files go to <run>/renders/ (renders-2/,
... on later calls, so nothing is overwritten) unless out_dir is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from ..data import DRMMDataModule
from ..viz import grids
from .checkpoints import find_checkpoint, load_run
from .config import CONF_DIR, check_overrides

KINDS = ("reconstructions", "templates", "samples", "filters", "layers", "classes")


SPLITS = ("test", "unlabeled")


def eval_images(
    datamodule: DRMMDataModule, count: int, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images of a run's data set, preprocessed as in training, and their
    labels: from the test set, or (split="unlabeled") from the training images outside the
    run's labeled subset, for choosing among variants without looking at the test set."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid: {SPLITS}.")
    data = datamodule.test_data if split == "test" else datamodule.train_data
    rows = torch.arange(len(data.labels))
    if split == "unlabeled":
        keep = torch.ones(len(rows), dtype=torch.bool)
        keep[datamodule.labeled_indices] = False
        rows = rows[keep]
    rows = rows[:count]
    return datamodule.transform(data.images[rows], train=False), data.labels[rows]


def check_arguments(cfg: DictConfig) -> list[str]:
    """The requested kinds; a ValueError naming the first bad argument, before any work."""
    what = [cfg.what] if isinstance(cfg.what, str) else list(cfg.what)
    unknown = [w for w in what if w not in KINDS]
    if unknown or not what:
        raise ValueError(f"Unknown or empty what={what}; valid: {', '.join(KINDS)}.")
    for key in ("num_images", "per_class", "scale", "seed"):
        value = cfg.get(key)
        low = 0 if key == "seed" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key}={value!r} must be a whole number >= {low}.")
    classes = cfg.get("classes")
    if classes is not None and (isinstance(classes, (str, int)) or len(classes) == 0):
        raise ValueError(
            f"classes={classes!r} must be a non-empty list like [3,5], or null for all."
        )
    return what


def fresh_dir(base: Path) -> Path:
    """`base`, or base-2, base-3, ... : the first that does not exist yet (renders never
    overwrite an earlier call's pictures)."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def render(cfg: DictConfig) -> list[Path]:
    """Write the requested grids; returns their paths."""
    what = check_arguments(cfg)
    ckpt = find_checkpoint(cfg.ckpt_path, cfg.paths.log_dir, "train")
    if ckpt is None:
        raise ValueError("drmm-render needs ckpt_path=<checkpoint file>, or ckpt_path=last.")
    print(f"[drmm] rendering {ckpt}")
    module, datamodule = load_run(ckpt, cfg.get("data"))
    model = module.net
    classes = list(range(model.num_classes)) if cfg.classes is None else list(cfg.classes)
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad:
        raise ValueError(
            f"Class index {bad} out of range: the model has {model.num_classes} classes "
            f"(0..{model.num_classes - 1})."
        )
    out = Path(cfg.out_dir) if cfg.out_dir else fresh_dir(ckpt.parent.parent / "renders")
    out.mkdir(parents=True, exist_ok=True)
    images = torch.empty(0)  # the test images, loaded only for the kinds that show them
    if {"reconstructions", "layers", "templates", "classes"} & set(what):
        images = eval_images(datamodule, cfg.num_images)[0]
    generator = torch.Generator().manual_seed(cfg.seed)
    pictures: dict[str, torch.Tensor] = {}
    for kind in what:
        if kind == "reconstructions":
            pictures[kind] = grids.reconstructions(model, images, nrow=min(8, len(images)))
        elif kind == "templates":  # at the norm of real images: scores carry biases
            norm = images.flatten(1).norm(dim=1).mean().item()
            pictures[kind] = grids.class_appearances(model, classes, norm)
        elif kind == "samples":
            pictures[kind] = grids.samples(model, classes, cfg.per_class, generator)
        elif kind == "filters":
            pictures[kind] = grids.filters(model)
        elif kind == "classes":
            pictures[kind] = grids.every_class(model, images[:8])
        else:
            for i, picture in enumerate(grids.layer_templates(model, images[:8])):
                pictures[f"layer_{len(model.layers) - i}"] = picture
    paths = []
    for name, picture in pictures.items():
        paths.append(out / f"{name}.png")
        if cfg.scale > 1:  # nearest-neighbour enlargement for viewing
            picture = picture.repeat_interleave(cfg.scale, 1).repeat_interleave(cfg.scale, 2)
        save_image(picture, paths[-1])
        print(paths[-1])
    return paths


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="render")
def _hydra_main(cfg: DictConfig) -> None:
    render(cfg)


def main() -> None:
    """Console entry point."""
    check_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()

"""Seeded, class-balanced labeled subsets, the unlabeled pool and the validation split,
saved for resume."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

INDEX_FILE = "labeled_indices.json"


@dataclass(frozen=True)
class SplitConfig:
    """What a split is drawn from;
    a saved split is reused only if it was drawn for the same values."""

    dataset: str
    num_labeled: int
    seed: int
    val_size: int = 0
    num_unlabeled: int | None = None  # None: every training image outside the validation split


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted indices into the training set:
    `labeled` and `unlabeled` are drawn from the images outside `val`."""

    labeled: Tensor
    unlabeled: Tensor
    val: Tensor


def check_num_labeled(num_labeled: int, num_classes: int, dataset: str) -> None:
    """A ValueError unless `num_labeled` is a positive multiple of the class count."""
    if num_labeled < 1 or num_labeled % num_classes:
        raise ValueError(
            f"num_labeled={num_labeled} is not a positive multiple of the {num_classes} classes of "
            f"'{dataset}': the labeled subset is class-balanced, num_labeled / {num_classes} "
            f"images per class. Use a multiple of {num_classes}."
        )


def draw_split(config: SplitConfig, labels: Tensor, class_names: tuple[str, ...]) -> Split:
    """Carve out the validation images,
    then draw the labeled subset and the unlabeled pool, all from `seed`."""
    check_num_labeled(config.num_labeled, len(class_names), config.dataset)
    generator = torch.Generator().manual_seed(config.seed)
    val, pool = _carve_val(config, len(labels), generator)
    labeled = _draw_labeled(config, pool, labels, class_names, generator)
    return Split(labeled, _draw_unlabeled(config, pool, generator), val)


def _carve_val(config: SplitConfig, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The validation indices and the rest of the training set (the pool), both sorted."""
    if not 0 <= config.val_size < size:
        raise ValueError(
            f"val_size={config.val_size} must be at least 0 and below the {size} training images "
            f"of '{config.dataset}' (the validation split comes out of the training set)."
        )
    order = torch.randperm(size, generator=generator)
    return order[: config.val_size].sort().values, order[config.val_size :].sort().values


def _draw_labeled(
    config: SplitConfig,
    pool: Tensor,
    labels: Tensor,
    class_names: tuple[str, ...],
    generator: torch.Generator,
) -> Tensor:
    """num_labeled / C images of each class from the pool;
    the whole pool if num_labeled is its size."""
    if config.num_labeled > len(pool):
        raise ValueError(
            f"num_labeled={config.num_labeled} is larger than the {len(pool)} training images of "
            f"'{config.dataset}' left after the val_size={config.val_size} validation images."
        )
    if config.num_labeled == len(pool):
        return pool  # every image labeled: the class counts are what they are
    per_class = config.num_labeled // len(class_names)
    chosen = []
    for label, name in enumerate(class_names):
        members = pool[labels[pool] == label]
        if len(members) < per_class:
            raise ValueError(
                f"num_labeled={config.num_labeled} asks for {per_class} labeled images per class, "
                f"but class '{name}' of '{config.dataset}' has only {len(members)} training images "
                f"outside the validation split. Lower num_labeled, or set it to all {len(pool)} "
                f"images, which labels every image without balancing the classes."
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def _draw_unlabeled(config: SplitConfig, pool: Tensor, generator: torch.Generator) -> Tensor:
    """The whole pool (the labeled images included, as in the paper),
    or num_unlabeled images of it."""
    if config.num_unlabeled is None:
        return pool
    if not 1 <= config.num_unlabeled <= len(pool):
        raise ValueError(
            f"num_unlabeled={config.num_unlabeled} must lie between 1 and the {len(pool)} "
            f"training images of '{config.dataset}' outside the validation split."
        )
    return (
        pool[torch.randperm(len(pool), generator=generator)[: config.num_unlabeled]].sort().values
    )


def split_to_record(config: SplitConfig, split: Split) -> dict:
    """The split as plain JSON values: the config it was drawn for plus its indices."""
    unlabeled = None if config.num_unlabeled is None else split.unlabeled.tolist()
    indices = {"labeled": split.labeled.tolist(), "val": split.val.tolist(), "unlabeled": unlabeled}
    return asdict(config) | indices


def split_from_record(record: dict, config: SplitConfig, train_size: int, source: str) -> Split:
    """The split saved in `record` (from `source`), if it was drawn for `config`;
    else a ValueError."""
    keys = ("dataset", "num_labeled", "val_size", "num_unlabeled")
    wanted = asdict(config)
    differ = [
        f"{key}={record.get(key)!r} there, {wanted[key]!r} here"
        for key in keys
        if record.get(key) != wanted[key]
    ]
    if differ:
        raise ValueError(
            f"The labeled split in {source} was drawn for another setting ({'; '.join(differ)}), "
            f"so it cannot be reused. Use a fresh run directory, or the settings of that run."
        )
    if record.get("seed") != config.seed:
        warnings.warn(
            f"Reusing the labeled split in {source}, drawn with seed={record.get('seed')}, not the "
            f"seed={config.seed} given now: a run keeps its split for life.",
            stacklevel=2,
        )
    parts = {
        key: torch.tensor(record[key] or [], dtype=torch.long)
        for key in ("labeled", "unlabeled", "val")
    }
    every = torch.cat(list(parts.values()))
    if len(parts["labeled"]) != config.num_labeled or every.min() < 0 or every.max() >= train_size:
        raise ValueError(
            f"The labeled split in {source} is damaged: it needs {config.num_labeled} labeled "
            f"indices, all indices in [0, {train_size}). Delete it to draw a new split."
        )
    unlabeled = parts["unlabeled"]
    if record["unlabeled"] is None:  # every training image outside the validation split
        outside = torch.ones(train_size, dtype=torch.bool)
        outside[parts["val"]] = False
        unlabeled = outside.nonzero().squeeze(1)
    return Split(parts["labeled"], unlabeled, parts["val"])


def save_record(directory: Path, record: dict) -> None:
    """Write `record` to `directory`/labeled_indices.json atomically (write, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / INDEX_FILE
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(record))
    partial.replace(path)


def read_record(directory: Path) -> dict | None:
    """The record saved in `directory`, or None if there is none."""
    path = directory / INDEX_FILE
    return json.loads(path.read_text()) if path.is_file() else None

"""Finding, reading and checking checkpoints before any work starts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..data import DRMMDataModule
from ..training import DRMMLitModule
from ..training.objective import upgrade_config
from .config import as_dict

IDENTITY = ("arch", "in_channels", "num_classes", "image_size")
# What makes two runs the same experiment: everything in these sections of the run config
# but the keys below, which only say where things are or how fast they run. The budget
# (trainer.max_epochs / max_steps) may differ: extending a run is resuming it.
EXPERIMENT = ("model", "objective", "regime", "data", "seed")
NOT_EXPERIMENT = (
    "data.root",
    "data.download",
    "data.num_workers",
    "data.index_dir",
    "data.on_device",
    "model.check_every",
    "model.channels_last",
    "model.compile",
)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': value} of a nested mapping (lists are values)."""
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def objective_of(objective: Any) -> Any:
    """An objective config as the experiment it defines: in today's layout (a checkpoint's may
    predate issue 30), a term at weight 0 the same as no term."""
    if not isinstance(objective, dict):
        return objective
    objective = upgrade_config(objective)
    terms = {
        name: options
        for name, options in (objective.get("terms") or {}).items()
        if options is not None and options.get("weight", 1.0) != 0
    }
    return {**objective, "terms": terms}


def experiment_of(run_config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a run config that define the experiment (EXPERIMENT minus NOT_EXPERIMENT)."""
    sections = {k: run_config.get(k) for k in EXPERIMENT}
    sections["objective"] = objective_of(sections["objective"])
    return {k: v for k, v in flatten(sections).items() if not k.startswith(NOT_EXPERIMENT)}


def experiment_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """'key: checkpoint X, now Y' for every experiment key that differs (at most 5 listed)."""
    a, b = experiment_of(saved), experiment_of(wanted)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    shown = [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in keys[:5]]
    return shown + ([f"... and {len(keys) - 5} more"] if len(keys) > 5 else [])


def find_checkpoint(
    ckpt_path: str | None,
    log_dir: str | Path,
    task_name: str,
    run_config: dict[str, Any] | None = None,
) -> Path | None:
    """A checkpoint path, or for 'last' the newest last.ckpt under <log_dir>/<task_name>/
    (phase-one checkpoints/pretrain/ included) of the same experiment as `run_config`; any
    experiment's when no run config is given (drmm-eval, drmm-render)."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path != "last":
        path = Path(ckpt_path)
        check_exists(path, "ckpt_path")
        return path
    root = Path(log_dir) / task_name
    found = [p for p in root.rglob("last.ckpt") if "checkpoints" in p.parent.parts]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoints/last.ckpt under {root.resolve()}; pass a path."
        )
    if run_config is None:
        return found[0]
    newest_differences: list[str] = []
    for path in found:
        differences = experiment_differences(
            read_checkpoint(path).get("run_config") or {}, run_config
        )
        if not differences:
            return path
        newest_differences = newest_differences or differences
    newest, differences = found[0], newest_differences
    raise ValueError(
        f"ckpt_path=last: none of the {len(found)} last.ckpt under {root.resolve()} is of this "
        f"experiment; the newest, {newest}, differs in: {'; '.join(differences)}. Pass "
        "ckpt_path=<that file> to resume it anyway, or drop ckpt_path to start afresh."
    )


def check_exists(path: Path, option: str) -> None:
    """A FileNotFoundError naming `option` (the setting that gave `path`) unless `path` is a
    file: a missing file is not a corrupt one, and a directory is not a checkpoint."""
    if path.is_file():
        return
    what = "is a directory, not a checkpoint file" if path.is_dir() else "does not exist"
    raise FileNotFoundError(
        f"{option}={path}: {path.resolve()} {what}. Pass {option}=<a .ckpt file> (e.g. "
        "<run>/checkpoints/last.ckpt)."
    )


def read_checkpoint(path: Path, option: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's dict on the CPU (trusted: our own files); a FileNotFoundError naming
    `option` (the setting that gave the path) if there is no such file, a ValueError naming the
    file if it is not a readable checkpoint."""
    check_exists(path, option)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # garbage bytes can fail anywhere in the unpickler (even MemoryError)
        raise ValueError(
            f"Checkpoint {path} is not a readable checkpoint (truncated or corrupt: {err}). "
            f"Delete it, or pass another with {option}=<file>."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(
            f"Checkpoint {path} holds no model state_dict: not a drmm-train checkpoint."
        )
    return checkpoint


def check_same_model(checkpoint: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Raise a ValueError if the checkpoint holds another architecture or data shape."""
    saved = checkpoint.get("hyper_parameters", {})
    diff = {k: (saved.get(k), expected[k]) for k in IDENTITY if saved.get(k) != expected[k]}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"Checkpoint {path} holds another model than the one configured ({detail}). "
            f"Use model={saved.get('arch')} (and the same data set) to resume from it."
        )


def progress(checkpoint: dict[str, Any]) -> tuple[int, int]:
    """(optimizer steps, whole epochs) the checkpoint had trained."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = loop.get("epoch_progress", {}).get("current", {}).get("processed")
    return int(checkpoint.get("global_step", 0)), int(
        checkpoint.get("epoch", 0) if epochs is None else epochs
    )


def load_run(
    ckpt: Path,
    data_overrides: Mapping[str, Any] | None = None,
    index_dir: str | None = None,
    option: str = "ckpt_path",
) -> tuple[DRMMLitModule, DRMMDataModule]:
    """The trained module (in evaluation mode) and the DataModule it was trained with, from one
    read of the checkpoint, `data_overrides` (e.g. root= on another machine; a config's `data`
    block) applied to the data's settings, the split saved into `index_dir` (None: nowhere).
    The DataModule comes from the hyperparameters Lightning saved with it; checkpoints written
    before it saved them describe their data in the run config that drmm-train stores."""
    saved = read_checkpoint(ckpt, option)
    # Lightning's own loader; checkpoints written before the optimizer and scheduler were kept
    # as plain configs hold callables in their hyperparameters, so they need weights_only=False
    legacy = any(callable(saved["hyper_parameters"].get(k)) for k in ("optimizer", "scheduler"))
    module = DRMMLitModule.load_from_checkpoint(
        ckpt, map_location="cpu", weights_only=False if legacy else None
    )
    module.run_config = saved.get("run_config")
    module.trained_steps = progress(saved)[0]
    data = saved.get("datamodule_hyper_parameters")
    if data is None:
        data = dict((saved.get("run_config") or {}).get("data") or {})
        data.pop("_target_", None)
    if not data:
        raise ValueError(
            f"Checkpoint {ckpt} records no data settings; was it written by drmm-train?"
        )
    if isinstance(data_overrides, DictConfig):
        data_overrides = as_dict(data_overrides)
    datamodule = DRMMDataModule(**{**data, **(data_overrides or {}), "index_dir": index_dir})
    return module.eval(), datamodule


def describe_run(saved: dict[str, Any]) -> str:
    """What a checkpoint holds, in a few words: architecture, regime, labels, steps, tags."""
    run = saved.get("run_config") or {}
    arch = saved.get("hyper_parameters", {}).get("arch", "model of unknown architecture")
    regime = (run.get("regime") or {}).get("name", "?")
    labels = (run.get("data") or {}).get("num_labeled", "?")
    tags = ", ".join(map(str, run.get("tags") or [])) or "none"
    steps = saved.get("global_step", "?")
    return f"a {arch} trained {steps} steps in regime {regime} on {labels} labels (tags: {tags})"

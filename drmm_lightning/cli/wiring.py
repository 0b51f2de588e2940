"""Config-to-object helpers shared by drmm-train and drmm-eval."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("drmm_lightning")


@rank_zero_only
def say(message: str) -> None:
    """Tell the user (terminal and the run's log file, through logging), rank zero only."""
    log.info(message)


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """The composed config as YAML, to the terminal and the run's log file (rank zero only)."""
    log.info(OmegaConf.to_yaml(cfg, resolve=False))


def has_validation(datamodule: Any) -> bool:
    """Whether the data has a validation split (else checkpoints cannot monitor val/acc)."""
    return getattr(datamodule, "val_size", 0) > 0


def build_callbacks(
    cfg: DictConfig, datamodule: Any, checkpoint_dir: str, only: type | None = None
) -> list[L.Callback]:
    """Instantiate the callbacks of `cfg.callbacks` (or just those of type `only`). Every
    ModelCheckpoint writes to `checkpoint_dir` and, without a validation split, keeps the last."""
    callbacks = []
    for conf in (cfg.get("callbacks") or {}).values():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        kind = hydra.utils.get_class(conf._target_)
        if only is not None and not issubclass(kind, only):
            continue
        if issubclass(kind, ModelCheckpoint):
            conf = conf.copy()
            with open_dict(conf):
                conf.dirpath = checkpoint_dir
                if not has_validation(datamodule):
                    conf.monitor = None  # nothing to rank checkpoints by: keep the last one
        callbacks.append(hydra.utils.instantiate(conf))
    return callbacks


def build_loggers(cfg: DictConfig, logger_ids: dict[str, str]) -> list[Logger]:
    """Instantiate `cfg.logger`; a resumed W&B run continues under the id its checkpoint saved."""
    loggers = []
    for name, conf in (cfg.get("logger") or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        if name == "wandb" and logger_ids.get("wandb") and conf.get("id") is None:
            conf = conf.copy()
            conf.id = logger_ids["wandb"]
        loggers.append(hydra.utils.instantiate(conf))
    return loggers


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so the next job of a multirun starts its own (wandb issue #1314)."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Logged metrics (tensors) as plain floats."""
    return {k: float(v) for k, v in metrics.items()}


@rank_zero_only
def save_results(
    cfg: DictConfig, metrics: dict[str, float], seconds: float, trainer: L.Trainer
) -> None:
    """Write results.json into the run directory: what scripts/aggregate.py reads."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    record = {
        "metrics": metrics,
        "wall_time_s": round(seconds, 1),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "seed": cfg.get("seed"),
        "num_labeled": cfg.data.num_labeled,
        "choices": {k: v for k, v in choices.items() if not k.startswith("hydra")},
    }
    path = Path(cfg.paths.output_dir) / "results.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True))


@rank_zero_only
def summary(cfg: DictConfig, metrics: dict[str, float], seconds: float) -> None:
    """Print the run's headline numbers and where its files are."""
    keys = ["test/error", "test/acc", "test/reconstruction", "val/acc_best", "train/loss"]
    shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)
    out = cfg.paths.output_dir
    log.info(f"\n[drmm] {shown or 'no metrics'} | wall time {seconds / 60:.1f} min | run dir {out}")

"""Objects from the config: the callbacks and the experiment loggers of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from ..training.loggers import define_summaries, log_split


def has_validation(datamodule: Any) -> bool:
    """Whether the data has a validation split (else checkpoints cannot monitor val/acc)."""
    return getattr(datamodule, "val_size", 0) > 0


def build_callbacks(
    cfg: DictConfig,
    datamodule: Any,
    checkpoint_dir: str,
    only: type | None = None,
    has_logger: bool = True,
) -> list[L.Callback]:
    """Instantiate the callbacks of `cfg.callbacks` (or just those of type `only`). Every
    ModelCheckpoint writes to `checkpoint_dir` and, without a validation split, keeps the last;
    the learning-rate monitor is left out when there is no logger to log to."""
    callbacks = []
    for conf in (cfg.get("callbacks") or {}).values():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        kind = hydra.utils.get_class(conf._target_)
        if only is not None and not issubclass(kind, only):
            continue
        if issubclass(kind, LearningRateMonitor) and not has_logger:
            continue
        if issubclass(kind, ModelCheckpoint):
            conf = conf.copy()
            with open_dict(conf):
                conf.dirpath = checkpoint_dir
                if not has_validation(datamodule):
                    conf.monitor = None  # nothing to rank checkpoints by: keep the last one
        callbacks.append(hydra.utils.instantiate(conf))
    return callbacks


def preset() -> str:
    """The experiment preset a run composed (experiment=...), or "default"."""
    if not HydraConfig.initialized():
        return "default"
    return HydraConfig.get().runtime.choices.get("experiment") or "default"


def run_group() -> str:
    """The W&B group of a run: its sweep (every job of a multirun together), else its preset."""
    if HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
        return f"sweep/{Path(HydraConfig.get().sweep.dir).name}"
    return preset()


def build_loggers(cfg: DictConfig, logger_ids: dict[str, str]) -> list[Logger]:
    """Instantiate `cfg.logger`. W&B loggers (found by their target, whatever their key) are
    grouped by sweep or preset (tagged preset:<name>), typed by task and regime, continue the
    run id a resumed checkpoint saved, and declare the run summaries (training/loggers.py:
    SUMMARIES)."""
    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        wandb = "wandb" in conf._target_.lower()
        if wandb:
            conf = conf.copy()
            with open_dict(conf):
                if logger_ids.get("wandb") and conf.get("id") is None:
                    conf.id = logger_ids["wandb"]
                conf.group = conf.get("group") or run_group()
                conf.tags = [*(conf.get("tags") or []), f"preset:{preset()}"]
                regime = OmegaConf.select(cfg, "regime.name", default=None)
                conf.job_type = "/".join(str(p) for p in (cfg.task_name, regime) if p)
        logger = hydra.utils.instantiate(conf)
        if isinstance(logger, WandbLogger):
            define_summaries(logger)
        loggers.append(logger)
    return loggers


def log_artifacts(loggers: list[Logger], run_dir: Path) -> None:
    """What a run leaves to its experiment trackers: the labeled split (W&B artifact)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            log_split(logger, run_dir / "labeled_indices.json")


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so the next job of a multirun starts its own (wandb issue #1314)."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()

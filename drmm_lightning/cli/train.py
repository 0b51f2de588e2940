"""drmm-train: build data, model, callbacks, loggers and trainer from the config, fit, test.

drmm-train                                   # the default experiment
drmm-train model=drmm2 regime=sup data.num_labeled=600
drmm-train experiment=paper/mnist_drmm5_semi_sup_100 seed=1,2,3 -m
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from ..data import DRMMDataModule
from ..models import RENDER_PATHS
from ..training import DRMMLitModule, EGObjective
from ..training.checkpointing import AtomicCheckpointIO, StopOnSignal
from .build import (
    build_callbacks,
    build_loggers,
    finish_loggers,
    has_validation,
    log_artifacts,
)
from .checkpoints import check_same_model, find_checkpoint, progress, read_checkpoint
from .config import CONF_DIR, as_dict, check_overrides, check_types
from .precision import describe
from .report import as_floats, print_config, save_results, say, summary


def build_datamodule(cfg: DictConfig, regime: str) -> DRMMDataModule:
    """The DataModule of `cfg.data`, serving `regime`'s streams."""
    return hydra.utils.instantiate(cfg.data, regime=regime)


def build_module(cfg: DictConfig, datamodule: Any) -> DRMMLitModule:
    """The LightningModule of `cfg.model` for the data's shape, with `cfg.objective`."""
    return hydra.utils.instantiate(
        cfg.model,
        in_channels=datamodule.in_channels,
        num_classes=datamodule.num_classes,
        image_size=datamodule.image_size,
        objective=OmegaConf.to_container(cfg.objective, resolve=True),
        pixel_std=datamodule.transform.std,
        _convert_="partial",
    )


def phases(cfg: DictConfig) -> list[tuple[str, int]]:
    """(data regime, last epoch) of each fit: one phase, or two for unsupervised pre-training."""
    epochs = cfg.trainer.max_epochs
    if cfg.regime.name == "unsup_pretr":
        pre = cfg.regime.pretrain_epochs
        return [("unsup", pre), ("sup", pre + epochs)]
    return [(cfg.regime.name, epochs)]


def checkpoint_dir(cfg: DictConfig, regime: str) -> str:
    """Where a phase's checkpoints go: checkpoints/, or checkpoints/pretrain/ for phase 1."""
    base = f"{cfg.paths.output_dir}/checkpoints"
    return f"{base}/pretrain" if cfg.regime.name == "unsup_pretr" and regime == "unsup" else base


TRAINING_REGIMES = ("sup", "unsup_pretr", "semi_sup")  # cf. data.STREAMS: what each serves


def validate(cfg: DictConfig) -> None:
    """Reject bad settings before any data is loaded (one clear ValueError)."""
    check_types(cfg)
    if cfg.regime.name not in TRAINING_REGIMES:
        raise ValueError(
            f"Unknown regime {cfg.regime.name!r}; valid: {', '.join(TRAINING_REGIMES)}."
        )
    if cfg.regime.pretrain_epochs < 0 or cfg.trainer.max_epochs < 0:
        raise ValueError("regime.pretrain_epochs and trainer.max_epochs must be >= 0.")
    EGObjective.from_config(as_dict(cfg.objective, resolve=True))
    check_sweep_metric(cfg)
    path = (cfg.model.get("arch_kwargs") or {}).get("render_path", "adjoint")
    if path not in RENDER_PATHS:
        raise ValueError(
            f"Unknown model.arch_kwargs.render_path {path!r}; valid: {', '.join(RENDER_PATHS)}."
        )


def sweeper_optimizes() -> bool:
    """Whether this run is a trial of a sweeper that optimises what `train` returns (Optuna)."""
    if not HydraConfig.initialized():
        return False
    # HydraConfig.get() returns a DictConfig, though typed as its schema HydraConf
    hydra_config: DictConfig = HydraConfig.get()  # type: ignore[assignment]
    target = OmegaConf.select(hydra_config, "sweeper._target_", default="") or ""
    return "optuna" in target.lower()


def check_sweep_metric(cfg: DictConfig) -> None:
    """Refuse, before the first trial trains, a sweep whose optimised metric cannot be logged:
    val/* metrics need a validation split (the paper presets hold none out)."""
    metric = cfg.get("optimized_metric") or ""
    if sweeper_optimizes() and metric.startswith("val/") and not cfg.data.get("val_size"):
        raise ValueError(
            f"optimized_metric={metric} needs a validation split, but data.val_size is 0 (the "
            "paper presets hold none out), so every trial would return nothing to the sweeper. "
            "Set data.val_size (e.g. 1000) or optimize a metric that is logged."
        )


class Interrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint (not an error of the run)."""

    def __init__(self, signal_name: str, step: int, saved: object) -> None:
        super().__init__(
            f"{signal_name} at step {step}: saved {saved}; resume with the same command and "
            "ckpt_path=last."
        )
        self.signal_name = signal_name


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured experiment; returns every logged metric as a float."""
    start = time.time()
    validate(cfg)
    say(
        f"[drmm] trainer.precision={cfg.trainer.precision}, model.channels_last="
        f"{cfg.model.channels_last} ({describe(cfg.precision, cfg.trainer.accelerator)})"
    )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    run_config = as_dict(cfg, resolve=True)
    ckpt = find_checkpoint(cfg.get("ckpt_path"), cfg.paths.log_dir, cfg.task_name, run_config)
    saved = read_checkpoint(ckpt) if ckpt else {}
    steps, done = progress(saved) if saved else (0, 0)  # what the checkpoint had trained
    plan = [p for p in phases(cfg) if p[1] > done] or phases(cfg)[-1:]

    datamodule = build_datamodule(cfg, plan[0][0])
    model = build_module(cfg, datamodule)
    if ckpt:
        check_same_model(saved, dict(model.hparams), ckpt)
        say(f"[drmm] resuming from {ckpt}: step {steps}, {done} whole epoch(s) done")
    model.run_config = run_config
    loggers = build_loggers(cfg, saved.get("logger_ids", {}))
    stop = StopOnSignal()
    callbacks = [*build_callbacks(cfg, datamodule, checkpoint_dir(cfg, plan[0][0])), stop]
    no_val = {} if has_validation(datamodule) else {"limit_val_batches": 0}
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        **no_val,
    )
    for logger in loggers:
        logger.log_hyperparams(run_config)

    metrics: dict[str, float] = {}
    try:
        for i, (regime, last_epoch) in enumerate(plan if cfg.get("train", True) else []):
            if i > 0:  # phase 2 of unsup_pretr: same weights, new data regime and checkpoints
                # trainer.callbacks: set by Lightning's callback connector, undeclared in Trainer
                callbacks = trainer.callbacks  # type: ignore[attr-defined]
                kept = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
                new = build_callbacks(
                    cfg, datamodule, checkpoint_dir(cfg, regime), only=ModelCheckpoint
                )
                trainer.callbacks = kept + new  # type: ignore[attr-defined]
            datamodule.set_regime(regime)
            trainer.fit_loop.max_epochs = last_epoch
            resume = str(ckpt) if ckpt and i == 0 else None
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=False)
            metrics.update(as_floats(trainer.callback_metrics))
            if stop.stopped_by:
                raise Interrupted(stop.stopped_by, trainer.global_step, stop.saved)
        if cfg.get("test", True):
            checkpoint = trainer.checkpoint_callback
            best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
            use_best = cfg.get("test_ckpt", "best") == "best" and best and cfg.get("train", True)
            ckpt_path = best if use_best else None
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
            metrics.update(as_floats(trainer.callback_metrics))
        log_artifacts(loggers, Path(cfg.paths.output_dir))
    finally:
        finish_loggers(loggers)
    seconds = time.time() - start
    save_results(cfg, metrics, seconds, trainer)
    summary(cfg, metrics, seconds)
    return metrics


def discard_if_unused(run_dir: Path, task_name: str) -> None:
    """Remove the run directory of a call that failed before writing anything of its own (only
    Hydra's config copy, the log and the split are there), so failed calls leave no clutter."""
    setup_only = {".hydra", f"{task_name}.log", "labeled_indices.json"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= setup_only:
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    if cfg.get("print_config"):
        print_config(cfg)
    try:
        metrics = train(cfg)
    except Interrupted as stopped:
        say(f"[drmm] stopped by {stopped}")
        sys.exit(143 if stopped.signal_name == "SIGTERM" else 130)
    except Exception:
        discard_if_unused(Path(cfg.paths.output_dir), cfg.task_name)
        raise
    metric = cfg.get("optimized_metric")
    if metric and metric not in metrics:
        warnings.warn(
            f"optimized_metric {metric!r} was not logged; logged: {sorted(metrics)}.", stacklevel=1
        )
    return metrics.get(metric) if metric else None


def main() -> None:
    """Console entry point: check group overrides, then hand over to Hydra."""
    check_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()

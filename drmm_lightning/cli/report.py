"""What a run tells: messages and the config (terminal and log file), results.json, the summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("drmm_lightning")


@rank_zero_only
def say(message: str) -> None:
    """Tell the user (terminal and the run's log file, through logging), rank zero only."""
    log.info(message)


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """The composed config as YAML, to the terminal and the run's log file (rank zero only)."""
    log.info(OmegaConf.to_yaml(cfg, resolve=False))


def as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Logged metrics (tensors) as plain floats."""
    return {k: float(v) for k, v in metrics.items()}


@rank_zero_only
def save_results(
    cfg: DictConfig,
    metrics: dict[str, float],
    pieces: list[dict[str, float]],
    trainer: L.Trainer,
    tested: str | None = None,
) -> None:
    """Write results.json into the run directory: what scripts/aggregate.py reads; `pieces`
    are the run's processes (one, or more for a run killed and resumed: RunClock), whose
    seconds add up to its wall time; `tested` says which weights the test metrics are of."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    record = {
        "metrics": metrics,
        "wall_time_s": round(sum(piece["seconds"] for piece in pieces), 1),
        "pieces": [{**piece, "seconds": round(piece["seconds"], 1)} for piece in pieces],
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "seed": cfg.get("seed"),
        "num_labeled": cfg.data.num_labeled,
        "precision": str(cfg.trainer.precision),
        "tested": tested,
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

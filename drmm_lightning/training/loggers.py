"""Experiment loggers: W&B that goes offline by itself when no API key is configured, with the
run summaries a lab compares runs by and the labeled split as an artifact."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_api_key_configured() -> bool:
    """True when W&B can authenticate: WANDB_API_KEY, or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | str = "auto", id: str | None = None, **kwargs: Any) -> WandbLogger:
    """A WandbLogger; offline='auto' logs offline unless an API key is configured or WANDB_MODE
    says otherwise. Passing the id of an earlier run continues that run (resume)."""
    if offline not in (True, False, "auto"):
        raise ValueError(f"logger.wandb.offline={offline!r}; valid: true, false, auto.")
    if offline == "auto":
        mode = os.environ.get("WANDB_MODE")
        offline = mode in ("offline", "dryrun") if mode else not wandb_api_key_configured()
    if id is not None:
        kwargs.setdefault("resume", "allow")
    return WandbLogger(offline=bool(offline), id=id, **kwargs)


# W&B run summaries (wandb.define_metric): what a runs table shows for each run.
SUMMARIES = {
    "val/acc": "max",
    "val/acc_best": "max",
    "val/reconstruction": "min",
    "test/error": "last",
    "test/acc": "last",
    "test/reconstruction": "last",
    "test/render_argmin_acc": "last",
    "train/loss": "min",
}


def define_summaries(logger: WandbLogger) -> None:
    """Declare how each headline metric is summarised over a run (best, last)."""
    for name, summary in SUMMARIES.items():
        logger.experiment.define_metric(name, summary=summary)


def log_split(logger: WandbLogger, path: Path) -> None:
    """The run's labeled split (labeled_indices.json) as a W&B artifact, so a result can be
    traced to the exact N_L images it was trained with."""
    import wandb

    if not path.is_file():
        return
    artifact = wandb.Artifact(f"labeled-split-{logger.experiment.id}", type="labeled-split")
    artifact.add_file(str(path))
    logger.experiment.log_artifact(artifact)

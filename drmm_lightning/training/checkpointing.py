"""Checkpoints that survive: written atomically, and one more on SIGTERM/SIGINT before stopping.

A cluster preempts a job with SIGTERM and a user stops one with Ctrl-C; either way the run
finishes its current step, writes last.ckpt and stops, so `ckpt_path=last` loses nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, then an atomic rename: a kill at any
    moment leaves the previous checkpoint or the new one, never a truncated file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


class StepCheckpoint(ModelCheckpoint):
    """last.ckpt every `every_n_train_steps` training steps, mid-epoch included; the end of
    training is left to the epoch checkpoint (ModelCheckpoint would also save there)."""

    def __init__(self, every_n_train_steps: int = 200, **kwargs: Any) -> None:
        kwargs = {"save_top_k": 0, "save_last": True, "enable_version_counter": False, **kwargs}
        super().__init__(every_n_train_steps=every_n_train_steps, **kwargs)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass


class StopOnSignal(L.Callback):
    """On SIGTERM or SIGINT during training: finish the step, save `<dirpath>/last.ckpt` and stop
    the fit; `stopped_by` then names the signal. A second signal acts at once (the handlers that
    were there before are back in place after the first). Under DDP the ranks agree every
    `sync_every` steps (a collective each step would stall every step on the slowest rank)."""

    def __init__(self, sync_every: int = 10) -> None:
        self.sync_every = max(1, sync_every)
        self.stopped_by: str | None = None
        self.saved: Path | None = None
        self._received: int | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._received = None
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        except ValueError:  # not the main thread: leave signals to Lightning
            self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self._received = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        received = self._received is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            if trainer.global_step % self.sync_every:
                return
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        callback = trainer.checkpoint_callback
        dirpath = (
            getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
        )
        self.saved = Path(dirpath) / "last.ckpt"
        trainer.save_checkpoint(self.saved)
        self.stopped_by = signal.Signals(self._received or signal.SIGTERM).name
        trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()


def mark_unfinished_epoch(checkpoint: dict[str, Any]) -> None:
    """A run stopped inside an epoch (max_steps, a signal) is saved by Lightning as if the epoch
    had ended, so resuming it would start the next epoch and train nothing more of this one.
    Record it as saved mid-epoch instead: resuming (or extending max_steps) then continues with
    the epoch's next batch (the training loader's state says which)."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    batches, epochs = loop.get("epoch_loop.batch_progress"), loop.get("epoch_progress")
    if not batches or not epochs or batches.get("is_last_batch", True):
        return
    for counts in (epochs["total"], epochs["current"]):
        ended = counts["ready"] == counts["started"] == counts["processed"] > 0
        if not ended:  # saved mid-epoch already (processed = ready - 1)
            return
    for counts in (epochs["total"], epochs["current"]):
        counts["processed"] = counts["completed"] = counts["ready"] - 1
    checkpoint["epoch"] = epochs["current"]["ready"] - 1

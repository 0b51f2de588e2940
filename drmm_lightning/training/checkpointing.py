"""Checkpoints that survive: written atomically, and one more on SIGTERM/SIGINT before stopping
(the step checkpoint, last.ckpt every N steps, is a plain ModelCheckpoint: conf/callbacks).

A cluster preempts a job with SIGTERM and a user stops one with Ctrl-C; either way the run
finishes its current step, writes last.ckpt and stops, so `ckpt_path=last` loses nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, then an atomic rename: a kill at any
    moment leaves the previous checkpoint or the new one, never a truncated file.

    Kept rather than Lightning's own writer, which also goes through a temporary file but puts it
    where fsspec's temporary files go, possibly on another filesystem, where the final move is
    a copy that a kill can leave half done. A failed write (a full disk) names the file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(path.parent)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(checkpoint, partial)
        except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
            raise write_error(f"Could not write checkpoint {path}", path, err) from err
        else:
            try:
                os.replace(partial, path)
            except OSError as err:
                raise write_error(
                    f"Could not move the written checkpoint {partial.name} onto {path}", path, err
                ) from err
        finally:
            partial.unlink(missing_ok=True)


def write_error(what: str, path: Path, err: BaseException) -> OSError:
    """The OSError for a failed checkpoint write or rename, naming its real cause: a full disk
    only where the error says so (or torch's errno-less RuntimeError, with the space left)."""
    code = getattr(err, "errno", None)
    if code == errno.EXDEV:
        why = (
            f"the rename crosses filesystems (EXDEV): {path} is on another filesystem than its "
            f"directory {path.parent} (a bind mount or a mount point there?), and a rename "
            "cannot cross them; not a disk space problem. Write the run into a plain directory "
            "(hydra.run.dir=...) or remove the mount"
        )
    elif code in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(path.parent).free / 2**20
        why = f"the disk or quota is full ({free:.0f} MiB free on its filesystem)"
    elif code is None:  # torch.save's RuntimeError: a failed stream, most often a full disk
        free = shutil.disk_usage(path.parent).free / 2**20
        why = f"{free:.0f} MiB free on its filesystem; a full disk?"
    else:
        why = f"{errno.errorcode.get(code, code)}: {getattr(err, 'strerror', '') or err}"
    return OSError(f"{what} ({why}): {err}")


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files (.<name>.<pid>.tmp) that writers killed mid-write left in
    `folder`; a live process's are left alone. Returns what was deleted."""
    removed = []
    for partial in folder.glob(".*.*.tmp"):
        pid = partial.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        partial.unlink(missing_ok=True)
        removed.append(partial)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class StopOnSignal(L.Callback):
    """On SIGTERM or SIGINT during training: finish the step, save `<dirpath>/last.ckpt` and stop
    the fit; `stopped_by` then names the signal. A second signal acts at once (through the handler
    that was there before, or as a default handler would where there was none). Under DDP the
    ranks agree every `sync_every` steps (a collective each step would stall every step on the
    slowest rank).

    Why not Lightning's own SIGTERM handling (2.6): it stops after the step but saves nothing;
    on Ctrl-C it stops mid-step, saves nothing and exits 1; and under DDP it broadcasts the
    signal from inside the handler and raises on the signalled rank a step before the others,
    so there is no step at which every rank could save together. This callback replaces its
    SIGTERM handler during training (and so its per-step broadcast never fires)."""

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
        if self._received is None:  # the first: finish the step, save, stop
            self._received = signum
            return
        # the second acts at once, through the handler that was there before; where that was
        # none or "ignore" (a process started in the background ignores SIGINT), as a default
        # handler would: KeyboardInterrupt for SIGINT, the default action for SIGTERM
        previous = self._previous.get(signum)
        self._restore()
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    @property
    def received(self) -> str | None:
        """The signal received during training (SIGTERM or SIGINT), saved on or not."""
        return None if self._received is None else signal.Signals(self._received).name

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

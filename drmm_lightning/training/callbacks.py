"""Callbacks: pictures of what the generative model does, and learning curves on the test set."""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import save_image

from ..models import reconstruction_error
from ..viz import grids

if TYPE_CHECKING:
    from .module import DRMMLitModule


def datamodule_of(trainer: L.Trainer) -> L.LightningDataModule | None:
    """The DataModule the trainer runs on, if any."""
    # set by Lightning's data connector; the Trainer class does not declare the attribute
    return trainer.datamodule  # type: ignore[attr-defined]


def log_image_grid(trainer: L.Trainer, key: str, grid: torch.Tensor, caption: str) -> Path | None:
    """Log an image grid to every W&B logger, or save it as a PNG in the run directory."""
    wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    for logger in wandb_loggers:
        logger.log_image(key=key, images=[grid], caption=[caption], step=trainer.global_step)
    if wandb_loggers:
        return None
    name = f"{key.replace('/', '_')}_step{trainer.global_step:06d}.png"
    path = Path(trainer.default_root_dir) / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


class GenerativeImages(L.Callback):
    """Every N validation epochs: validation inputs above their renderings, samples of every
    class from the generative process and the first-layer filters (W&B images, else PNGs)."""

    CAPTIONS = {
        "reconstructions": "validation inputs (odd rows) above their renderings",
        "samples": "samples from the generative process, one row per class",
        "filters": "first-layer filters",
    }

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 16,
        what: tuple[str, ...] = ("reconstructions", "samples", "filters"),
    ) -> None:
        unknown = set(what) - set(self.CAPTIONS)
        if unknown:
            raise ValueError(
                f"Unknown image kinds {sorted(unknown)}; valid: {sorted(self.CAPTIONS)}."
            )
        self.every_n_epochs, self.num_images, self.what = every_n_epochs, num_images, tuple(what)

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = datamodule_of(trainer)
        if trainer.sanity_checking or not trainer.is_global_zero or datamodule is None:
            return
        if not self.every_n_epochs or (trainer.current_epoch + 1) % self.every_n_epochs:
            return  # every_n_epochs=0: off
        model = cast("DRMMLitModule", pl_module).net
        for kind in self.what:
            if kind == "reconstructions":
                x, y = next(iter(datamodule.val_dataloader()))
                batch = (x[: self.num_images].to(pl_module.device), y[: self.num_images])
                images = datamodule.on_after_batch_transfer(batch, 0)[0]
                picture = grids.reconstructions(model, images, nrow=min(8, len(images)))
            elif kind == "samples":
                generator = torch.Generator(pl_module.device).manual_seed(0)
                picture = grids.samples(model, list(range(model.num_classes)), 8, generator)
            else:
                picture = grids.filters(model)
            log_image_grid(trainer, f"images/{kind}", picture, self.CAPTIONS[kind])


class RunClock(L.Callback):
    """The run's wall time summed over its pieces: every checkpoint carries the pieces so far
    ({from_step, to_step, seconds}, each from its process start to that checkpoint), so a run
    killed and resumed reports the time of what it kept, not of the steps a kill threw away
    (those are counted again in the piece that redoes them)."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start
        self.previous: list[dict[str, float]] = []  # the pieces before this process
        self.from_step: int | None = None
        self.to_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.from_step is None:  # the first fit of this process (unsup_pretr has two)
            self.from_step = self.to_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.to_step = trainer.global_step

    def pieces(self) -> list[dict[str, float]]:
        """The earlier pieces and this one up to now."""
        step = self.to_step if self.from_step is None else self.from_step
        now = {"from_step": step, "to_step": self.to_step, "seconds": time.time() - self.start}
        return [*self.previous, now]

    def elapsed(self) -> float:
        """Seconds of this run so far, every piece included."""
        return sum(piece["seconds"] for piece in self.pieces())

    def state_dict(self) -> dict[str, Any]:
        return {"pieces": self.pieces()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous = list(state_dict.get("pieces", []))


def run_clock(trainer: L.Trainer) -> RunClock | None:
    """The trainer's RunClock, if it has one."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    return next((cb for cb in callbacks if isinstance(cb, RunClock)), None)


def test_batches(trainer: L.Trainer, available: int) -> int:
    """How many test batches the trainer's limit_test_batches allows (a count or a fraction)."""
    limit = trainer.limit_test_batches
    if isinstance(limit, int):
        return min(limit, available)
    return max(1, int(available * limit)) if limit else 0


class TestCurve(L.Callback):
    """Every N training steps, the error on the official test split (the batches that
    limit_test_batches allows), appended to curve.jsonl in the run directory for learning-curve
    plots (paper Fig. 2), with the run's seconds so far (RunClock: summed over resumed pieces).
    It only records: nothing is selected or stopped on it. every_n_steps=0 turns it off.
    It runs outside the trainer's autocast (fp32 under bf16-mixed), so its last point can differ
    from the final test/error by a few hundredths of a point."""

    def __init__(self, every_n_steps: int = 0) -> None:
        self.every_n_steps = every_n_steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps and trainer.global_step == 0:
            self.record(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.record(trainer, pl_module)

    @torch.no_grad()
    def record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = datamodule_of(trainer)
        if not trainer.is_global_zero or datamodule is None:
            return
        module = cast("DRMMLitModule", pl_module)
        was_training = pl_module.training
        pl_module.eval()
        wrong = total = 0
        squared_error = 0.0
        loader = datamodule.test_dataloader()
        for x, y in itertools.islice(loader, test_batches(trainer, len(loader))):
            x, y = datamodule.on_after_batch_transfer(
                (x.to(pl_module.device), y.to(pl_module.device)), 0
            )
            inference = module.net.infer(x)
            rendered = module.net.render(inference).image
            wrong += (inference.logits.argmax(1) != y).sum().item()
            total += len(y)
            squared_error += len(y) * reconstruction_error(x, rendered, module.pixel_std).item()
        pl_module.train(was_training)
        steps_per_epoch = max(trainer.num_training_batches, 1)
        line = {
            "step": trainer.global_step,
            "epoch": trainer.global_step / steps_per_epoch,
            "test_error": 100.0 * wrong / total,
            "test_reconstruction": squared_error / total,
        }
        clock = run_clock(trainer)
        if clock is not None:
            line["elapsed_s"] = round(clock.elapsed(), 1)
        with open(Path(trainer.default_root_dir) / "curve.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


class ProgressLog(L.Callback):
    """Every N training steps, one line of progress (step, epoch, loss, accuracy) through Python
    logging, so the run's log file shows how far it got and how it went (rank zero only)."""

    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or not trainer.is_global_zero:
            return
        shown = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k in ("train/loss_step", "train/cross_entropy_step", "train/reconstruction_step")
        }
        total = trainer.num_training_batches
        logging.getLogger("drmm_lightning").info(
            f"[drmm] step {step}, epoch {trainer.current_epoch} "
            f"(batch {trainer.fit_loop.epoch_loop.batch_idx + 1}/{total}): "
            + ", ".join(
                f"{k.removeprefix('train/').removesuffix('_step')}={v:.4g}"
                for k, v in shown.items()
            )
        )


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, which on a run resumed mid-epoch also shows that epoch's name, its
    total and the batches already trained (Lightning skips `on_train_epoch_start` there, so its
    own bar reads "Training: 160/?" until the next epoch)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # sets the bar
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]
        if done:
            bar = self.train_progress_bar
            bar.reset(convert_inf(self.total_train_batches))
            bar.update(done)
            bar.set_description(f"Epoch {trainer.current_epoch}")


class ValidatedStep(L.Callback):
    """The global step of the last validation during fitting (-1: none yet): whether the final
    weights were validated (cli/train.py tests the best checkpoint only if they were)."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.step = trainer.global_step

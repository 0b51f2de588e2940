"""Callbacks that show what the generative model does: renderings beside their inputs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid, save_image


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Min-max scale each image to [0, 1] for display."""
    flat = images.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    return ((flat - lo[:, None]) / (hi - lo).clamp_min(1e-8)[:, None]).view_as(images)


def log_image_grid(trainer: L.Trainer, key: str, grid: torch.Tensor, caption: str) -> Path | None:
    """Log an image grid to every W&B logger, or save it as a PNG in the run directory."""
    wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    for logger in wandb_loggers:
        logger.log_image(key=key, images=[grid], caption=[caption], step=trainer.global_step)
    if wandb_loggers:
        return None
    path = (
        Path(trainer.default_root_dir)
        / "images"
        / f"{key.replace('/', '_')}_step{trainer.global_step:06d}.png"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


class RenderImages(L.Callback):
    """Every N validation epochs: validation inputs (odd rows) above their renderings (even
    rows) from the inferred class and switches."""

    def __init__(self, every_n_epochs: int = 1, num_images: int = 16) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        loader = trainer.datamodule.val_dataloader() if trainer.datamodule else None
        if not loader:
            return
        x, y = next(iter(loader))
        rows = min(8, self.num_images, len(x))
        n = min(self.num_images, len(x)) // rows * rows
        batch = (x[:n].to(pl_module.device), y[:n].to(pl_module.device))
        x = trainer.datamodule.on_after_batch_transfer(batch, 0)[0]
        rendered = pl_module.net.render(pl_module.net.infer(x)).image
        pairs = torch.cat([torch.stack(torch.split(t, rows)) for t in (x, rendered)], 1)
        grid = make_grid(to_unit_range(pairs.flatten(0, 1)), nrow=rows, padding=1)
        log_image_grid(trainer, "val/renderings", grid, "inputs above renderings")

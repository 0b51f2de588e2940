"""Data pipeline speed: one epoch of two-stream MNIST batches through the DataModule,
no model attached.

Usage: DRMM_DATA_DIR=<data root> python scripts/bench_data.py [--device cuda] [--num-workers 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_step import median_ms

from drmm_lightning.data import DRMMDataModule
from drmm_lightning.models import build_model
from drmm_lightning.training import EGObjective


def data_images_per_second(dm: DRMMDataModule, device: str | torch.device = "cpu") -> float:
    """Images per second (both streams counted) over one epoch of
    train_dataloader + on_after_batch_transfer."""
    dm.setup("fit")
    loader = dm.train_dataloader()
    device = torch.device(device)
    images = 0
    start = time.perf_counter()
    for batch in loader:
        batch = dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, device, 0), 0)
        assert isinstance(batch, dict)  # a training batch: one entry per stream
        images += sum(len(part[0] if isinstance(part, tuple) else part) for part in batch.values())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def drmm5_images_per_second(dm: DRMMDataModule, device: torch.device, steps: int = 10) -> float:
    """Images per second of a full drmm5 EG training step on batches from the same loader."""
    batch = dm.on_after_batch_transfer(
        dm.transfer_batch_to_device(next(iter(dm.train_dataloader())), device, 0), 0
    )
    assert isinstance(batch, dict)  # a training batch: one entry per stream
    model = build_model("drmm5", dm.in_channels, dm.num_classes, dm.image_size).to(device)
    objective, optimizer = EGObjective(), torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> None:
        loss = objective(model, batch["labeled"], batch["unlabeled"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = median_ms(step, device, steps, 3) / 1e3
    return (len(batch["unlabeled"]) + len(batch["labeled"][0])) / seconds


def main(argv: list[str] | None = None) -> None:
    """Time one semi-supervised MNIST epoch
    (N_L = 100, 600 steps of 100 labeled + 100 unlabeled)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    dm = DRMMDataModule("mnist", num_labeled=100, num_workers=args.num_workers, download=False)
    rate = data_images_per_second(dm, args.device)
    steps = len(dm.train_dataloader())
    print(
        f"data pipeline, MNIST semi_sup, {steps} steps of 100 labeled + 100 unlabeled images, "
        f"device {args.device}, num_workers {args.num_workers}:"
    )
    print(f"  DataLoader: {rate:,.0f} images/s ({rate / 200:,.0f} steps/s)")
    resident = DRMMDataModule("mnist", num_labeled=100, download=False, on_device=True)
    resident_rate = data_images_per_second(resident, "cpu")
    print(f"  DeviceLoader (data.on_device=true, on the CPU): {resident_rate:,.0f} images/s")
    model_rate = drmm5_images_per_second(dm, torch.device(args.device))
    print(f"  drmm5 EG training step on the same batches: {model_rate:,.0f} images/s")
    print(f"  data is {rate / model_rate:,.0f}x faster than the model step (target >= 20x)")


if __name__ == "__main__":
    main()

"""Time one full training step of a DRMM (EG) against the same architecture as a plain CNN.

DRMM step: bottom-up on 100 labeled + 100 unlabeled images, render, every loss term of the
default objective (nn_kl), backward, Adam step. CNN step: the same architecture as an ordinary
torch.nn CNN (models/cnn.py) with cross-entropy on the same 200 images. They alternate.

    python scripts/bench_step.py [--model drmm5] [--steps 30] [--cost-mode both] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy

import torch

from drmm_lightning.models import build_model
from drmm_lightning.models.cnn import plain_cnn
from drmm_lightning.training.objective import EGObjective
from drmm_lightning.training.speed import CNNStep, EGStep, median_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="drmm5")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="labeled and unlabeled batch size")
    parser.add_argument(
        "--cost-mode",
        default="both",
        choices=["both", "unsup"],
        help="which images are rendered: both streams (default) or unlabeled only",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    drmm = build_model(args.model, 1, 10, 28).to(device)
    cnn = plain_cnn(copy.deepcopy(drmm)).to(device)
    x = torch.rand(2 * args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (2 * args.batch,), device=device)
    eg = EGStep(drmm, EGObjective(cost_mode=args.cost_mode))
    ce = CNNStep(cnn)
    b = args.batch
    med = median_times(
        {"drmm": lambda: eg((x[:b], y[:b]), x[b:]), "cnn": lambda: ce(x, y)},
        args.steps,
        args.warmup,
        device,
    )
    images = 2 * b
    print(
        f"model={args.model} device={device} threads={torch.get_num_threads()} "
        f"batch={b}+{b} cost_mode={args.cost_mode} steps={args.steps} (median step time)"
    )
    print(f"  DRMM EG step : {med['drmm'] * 1e3:8.1f} ms  {images / med['drmm']:8.0f} images/s")
    print(f"  plain CNN    : {med['cnn'] * 1e3:8.1f} ms  {images / med['cnn']:8.0f} images/s")
    print(
        f"  ratio DRMM / CNN step time: {med['drmm'] / med['cnn']:.2f}x (target <= 2.0x, aim 1.5x)"
    )


if __name__ == "__main__":
    main()

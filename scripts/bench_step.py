"""Time one full training step of a DRMM (EG) against the same architecture as a plain CNN.

DRMM step: bottom-up on 100 labeled + 100 unlabeled images, render, every loss term, backward,
optimizer step. CNN step: the same architecture as an ordinary torch.nn CNN (shared weights)
with cross-entropy on the same 200 images. The two alternate in one process.

    python scripts/bench_step.py [--model drmm5] [--steps 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from drmm_lightning.models import build_model, cross_entropy
from drmm_lightning.models.cnn import plain_cnn
from drmm_lightning.training.objective import EGObjective, ObjectiveWeights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="drmm5")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="labeled and unlabeled batch size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    drmm = build_model(args.model, 1, 10, 28).to(device)
    cnn = plain_cnn(copy.deepcopy(drmm)).to(device)
    x = torch.rand(2 * args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (2 * args.batch,), device=device)
    objective = EGObjective(ObjectiveWeights())
    opt_drmm = torch.optim.Adam(drmm.parameters(), 1e-3)
    opt_cnn = torch.optim.Adam(cnn.parameters(), 1e-3)

    def drmm_step() -> None:
        out = objective(drmm, (x[: args.batch], y[: args.batch]), x[args.batch :])
        opt_drmm.zero_grad(set_to_none=True)
        out.loss.backward()
        opt_drmm.step()

    def cnn_step() -> None:
        loss = cross_entropy(cnn(x), y)
        opt_cnn.zero_grad(set_to_none=True)
        loss.backward()
        opt_cnn.step()

    def timed(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"drmm": [], "cnn": []}
    for i in range(args.warmup + args.steps):
        for name, step in (("drmm", drmm_step), ("cnn", cnn_step)):
            t = timed(step)
            if i >= args.warmup:
                times[name].append(t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    images = 2 * args.batch
    print(
        f"model={args.model} device={device} threads={torch.get_num_threads()} "
        f"batch={args.batch}+{args.batch} steps={args.steps} (median step time)"
    )
    print(f"  DRMM EG step : {med['drmm'] * 1e3:8.1f} ms  {images / med['drmm']:8.0f} images/s")
    print(f"  plain CNN    : {med['cnn'] * 1e3:8.1f} ms  {images / med['cnn']:8.0f} images/s")
    print(
        f"  ratio DRMM / CNN step time: {med['drmm'] / med['cnn']:.2f}x (target <= 2.0x, aim 1.5x)"
    )


if __name__ == "__main__":
    main()

"""Is a run's test error set by its weights or by its batch-norm running statistics?

python scripts/bn_statistics.py <ckpt> [<ckpt> ...] [--recalibrate-images 5000] [--json out.json]
    [--plot out.png]

For each checkpoint, the test error (all test images, fp32, as the TestCurve callback computes
it) three ways, with the same weights:
- `running`: evaluation mode with the running statistics the checkpoint holds (what the curve
  and drmm-test report);
- `recalibrated`: the running statistics recomputed as a plain average over the first
  `--recalibrate-images` unlabeled training images (batches of 100, no gradient), then
  evaluation mode: the statistics the weights would have if the running average kept up;
- `batch`: each test batch of 100 normalised by its own statistics (training-mode batch norm,
  as the EG step sees its batches; a diagnosis only, it is transductive).
If `running` is far above `recalibrated`, the error comes from the running averages lagging the
weights (a high learning rate moving the features faster than momentum 0.1 follows), not from
the weights. Also prints the largest shift between the held and the recomputed means, in units
of the recomputed standard deviation, over the network's batch-norm layers.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from drmm_lightning.cli.checkpoints import load_run
from drmm_lightning.cli.render import eval_images
from drmm_lightning.models.drmm import DRMM
from drmm_lightning.paper.campaign import EPOCH

BATCH = 100  # the EG step's batch of unlabeled images in every preset


def norms(net: DRMM) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def running(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch norm's running mean and variance (every layer of the presets tracks them)."""
    assert norm.running_mean is not None and norm.running_var is not None
    return norm.running_mean, norm.running_var


@torch.no_grad()
def classification_error(
    net: DRMM, images: torch.Tensor, labels: torch.Tensor, batch_stats: bool
) -> float:
    """Percent of `images` misclassified, batch norm in evaluation mode or on each batch's own
    statistics (the running averages are restored afterwards)."""
    saved = copy.deepcopy(net.state_dict()) if batch_stats else None  # train mode moves them
    net.eval()
    for norm in norms(net) if batch_stats else []:
        norm.train()
    wrong = 0.0
    for start in range(0, len(images), BATCH):
        logits = net.infer(images[start : start + BATCH]).logits
        wrong += float((logits.argmax(1) != labels[start : start + BATCH]).sum())
    if saved is not None:
        net.load_state_dict(saved)
    net.eval()
    return 100.0 * wrong / len(images)


@torch.no_grad()
def recalibrate(net: DRMM, images: torch.Tensor) -> None:
    """Replace every batch norm's running statistics by their plain average over `images`."""
    for norm in norms(net):
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average, not an exponential one
        norm.train()
    for start in range(0, len(images), BATCH):
        net.infer(images[start : start + BATCH])
    net.eval()


def mean_shift(held: list[tuple[torch.Tensor, torch.Tensor]], net: DRMM) -> float:
    """max over layers and channels of |held mean - recomputed mean| / recomputed std."""
    shifts = [
        ((mean - running(n)[0]).abs() / (running(n)[1] + n.eps).sqrt()).max().item()
        for (mean, _), n in zip(held, norms(net), strict=True)
    ]
    return max(shifts, default=0.0)


def diagnose(ckpt: Path, recalibrate_images: int) -> dict[str, float | int | str]:
    model, datamodule = load_run(ckpt)
    net = model.net.float()
    images, labels = eval_images(datamodule, len(datamodule.test_data.labels), "test")
    unlabeled, _ = eval_images(datamodule, recalibrate_images, "unlabeled")
    row: dict[str, float | int | str] = {"checkpoint": str(ckpt), "step": model.trained_steps}
    row["running"] = classification_error(net, images, labels, batch_stats=False)
    row["batch"] = classification_error(net, images, labels, batch_stats=True)
    held = [(mean.clone(), var.clone()) for mean, var in map(running, norms(net))]
    recalibrate(net, unlabeled)
    row["recalibrated"] = classification_error(net, images, labels, batch_stats=False)
    row["mean_shift"] = mean_shift(held, net)
    return row


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", nargs="+", type=Path, help="drmm-train checkpoints")
    parser.add_argument("--recalibrate-images", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--plot", type=Path, help="also draw the three errors against epoch here")
    args = parser.parse_args(argv)
    for path in args.ckpt:
        if "=" in path.name or not path.name.endswith(".ckpt"):
            parser.error(f"unrecognized argument {path} (checkpoints end in .ckpt)")
    rows = []
    for i, path in enumerate(args.ckpt, 1):
        print(f"[{i}/{len(args.ckpt)}] {path}", file=sys.stderr, flush=True)
        rows.append(diagnose(path, args.recalibrate_images))
    rows.sort(key=lambda r: int(r["step"]))
    print("| step | epoch | running % | recalibrated % | batch % | max mean shift (std) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['step']} | {int(r['step']) / EPOCH:.2f} | {r['running']:.2f} | "
            f"{r['recalibrated']:.2f} | {r['batch']:.2f} | {r['mean_shift']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.plot:
        print(plot(rows, args.plot))


def plot(rows: list[dict[str, float | int | str]], path: Path) -> Path:
    """The test error of the same weights three ways, against epoch (log scale)."""
    from drmm_lightning.viz.plots import plot_curves

    curves = {
        key: [[{"epoch": int(r["step"]) / EPOCH, "test_error": float(r[key])} for r in rows]]
        for key in ("running", "recalibrated", "batch")
    }
    return plot_curves(curves, path, "the same weights, three batch-norm statistics")


if __name__ == "__main__":
    main(sys.argv[1:])

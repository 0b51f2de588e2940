"""How a trained classifier uses its classes: wrong labels, or classes it never predicts?

python scripts/class_usage.py <ckpt> [<ckpt> ...] [--json out.json]

For each checkpoint, on all its test images (fp32, evaluation mode):
- `error`: percent misclassified, as drmm-train's test reports it;
- `relabelled`: percent misclassified after the best one-to-one renaming of the predicted
  classes (the Hungarian assignment on the confusion matrix, scipy): low against a high `error`
  means the network found the clusters but names them wrongly;
- `largest`: the share of test images given its most predicted class;
- `used`: how many classes are predicted for more than 1% of the test images.
A diagnosis of why a run at few labels barely trains; it selects nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from drmm_lightning.cli.checkpoints import load_run
from drmm_lightning.cli.render import eval_images

BATCH = 250


@torch.no_grad()
def predictions(ckpt: Path) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The predicted and true classes of every test image, the class count and the step."""
    model, datamodule = load_run(ckpt)
    net = model.net.float().eval()
    images, labels = eval_images(datamodule, len(datamodule.test_data.labels), "test")
    predicted = torch.cat([net.infer(x).logits.argmax(1) for x in images.split(BATCH)])
    return predicted, labels, net.num_classes, model.trained_steps


def usage(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """The four numbers above from predicted and true classes."""
    from scipy.optimize import linear_sum_assignment

    pairs = labels * num_classes + predicted
    confusion = torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes)
    rows, cols = linear_sum_assignment(confusion.numpy(), maximize=True)
    matched = float(confusion[rows, cols].sum())
    shares = torch.bincount(predicted, minlength=num_classes).double() / len(labels)
    return {
        "error": 100.0 * float((predicted != labels).double().mean()),
        "relabelled": 100.0 * (1.0 - matched / len(labels)),
        "largest": float(shares.max()),
        "used": int((shares > 0.01).sum()),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", nargs="+", type=Path, help="drmm-train checkpoints")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    for path in args.ckpt:
        if "=" in path.name or not path.name.endswith(".ckpt"):
            parser.error(
                f"unrecognized argument {path} (checkpoints end in .ckpt; --json takes a file)"
            )
    rows = []
    print("| checkpoint | step | error % | relabelled % | largest class share | classes used |")
    print("|---|---|---|---|---|---|")
    for i, path in enumerate(args.ckpt, 1):
        print(f"[{i}/{len(args.ckpt)}] {path}", file=sys.stderr, flush=True)
        predicted, labels, num_classes, step = predictions(path)
        row = {"checkpoint": str(path), "step": step, **usage(predicted, labels, num_classes)}
        rows.append(row)
        print(
            f"| {path} | {step} | {row['error']:.2f} | {row['relabelled']:.2f} | "
            f"{row['largest']:.3f} | {row['used']} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

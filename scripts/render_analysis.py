"""Does a trained DRMM classify by rendering? Numbers for one checkpoint on its test images.

python scripts/render_analysis.py <run>/checkpoints/last.ckpt [--num-images 1000]
    [--split test|unlabeled] [--prior-layers 0] [--estep-steps 0]

Prints the classifier's accuracy, render-argmin accuracy (the class whose rendering, through
the image's own switches, fits best), their agreement, the true class's rendering error against
the mean over all classes, and the Euler-identity gap <I_hat_c, I> / sigma^2 against logit_c
(relative mean absolute difference and correlation; zero and one for the exact adjoint path of
a network without biases or batch-norm shifts).

--split unlabeled takes the training images outside the run's labeled subset instead of the test
set (for choosing among variants without the test set). --prior-layers and --estep-steps render
each class through the prior mean switches of the lowest layers, or re-infer the switches per
class (models/posterior.py: class_estep), on the trained model as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from drmm_lightning.cli.checkpoints import load_run
from drmm_lightning.cli.render import SPLITS, eval_images
from drmm_lightning.models import class_render_errors
from drmm_lightning.models.posterior import euler_gap


@torch.no_grad()
def analyse(
    ckpt: str,
    num_images: int = 1000,
    split: str = "test",
    prior_layers: int | None = None,
    estep_steps: int = 0,
    batch: int = 250,
) -> dict[str, float | str]:
    """The numbers above for the first `num_images` images of the checkpoint's data."""
    model, datamodule = load_run(Path(ckpt))
    net = model.net
    if prior_layers is not None:
        net.prior_layers = prior_layers
    images, labels = eval_images(datamodule, num_images, split)
    sums = dict.fromkeys(["acc", "argmin", "agree", "true_err", "mean_err"], 0.0)
    inner_all, logit_all = [], []
    for start in range(0, len(images), batch):
        x, y = images[start : start + batch], labels[start : start + batch]
        inference = net.infer(x)
        errors = class_render_errors(net, inference, x, estep_steps)
        predicted, best = inference.logits.argmax(1), errors.argmin(1)
        sums["acc"] += (predicted == y).sum().item()
        sums["argmin"] += (best == y).sum().item()
        sums["agree"] += (best == predicted).sum().item()
        sums["true_err"] += errors.gather(1, y[:, None]).sum().item()
        sums["mean_err"] += errors.mean(1).sum().item()
        inner, logits = euler_gap(net, inference, x)
        inner_all.append(inner.flatten())
        logit_all.append(logits.flatten())
    n = len(images)
    inner, logits = torch.cat(inner_all), torch.cat(logit_all)
    scale = model.pixel_std.pow(2).mean().item() if model.pixel_std is not None else 1.0
    return {
        "images": n,
        "split": split,
        "render_path": net.render_path,
        "prior_layers": net.prior_layers,
        "estep_steps": estep_steps,
        "classifier_acc": sums["acc"] / n,
        "render_argmin_acc": sums["argmin"] / n,
        "render_argmin_agree": sums["agree"] / n,
        "true_class_render_error": scale * sums["true_err"] / n,
        "mean_class_render_error": scale * sums["mean_err"] / n,
        "euler_relative_gap": ((inner - logits).abs().mean() / logits.abs().mean()).item(),
        "euler_correlation": torch.corrcoef(torch.stack([inner, logits]))[0, 1].item(),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a drmm-train checkpoint")
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--prior-layers", type=int, help="render the lowest k layers' priors")
    parser.add_argument("--estep-steps", type=int, default=0, help="per-class E-step steps")
    args = parser.parse_args(argv)
    result = analyse(args.ckpt, args.num_images, args.split, args.prior_layers, args.estep_steps)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

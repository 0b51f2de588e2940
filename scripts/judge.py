"""Score images with the judge (issue 22): an independent classifier, `experiment=judge`.

python scripts/judge.py <judge run>/checkpoints/last.ckpt [--images test|<file.pt>]

--images test (the default) scores the official test split of the judge's own data: its test
accuracy, the figure every judge accuracy of generated images stands beside. --images <file.pt>
scores a file holding {"images": (N, C, H, W) pixels in [0, 1], "classes": (N,) intended
classes}, as `drmm-render save_samples=true` writes it. Prints judge accuracy, test error
(for the test split), judge confidence and the accuracy per class as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from drmm_lightning import generation
from drmm_lightning.cli.checkpoints import load_run


def score(judge_ckpt: str, images: str = "test") -> dict[str, object]:
    """The judge's figures for the test split or for the images of a .pt file."""
    module, datamodule = load_run(Path(judge_ckpt))
    transform = datamodule.transform
    judge = generation.Judge(module.net, transform.normalize)
    if images == "test":
        pixels = datamodule.test_data.images.float() / 255
        classes = datamodule.test_data.labels
    else:
        saved = torch.load(images, map_location="cpu")
        pixels, classes = saved["images"].float(), saved["classes"].long()
    probs = judge.probabilities(pixels)
    accuracy = generation.judge_accuracy(probs, classes)
    per_class = [
        generation.judge_accuracy(probs[classes == c], classes[classes == c])
        for c in classes.unique().tolist()
    ]
    return {
        "judge": judge_ckpt,
        "images": images,
        "count": len(classes),
        "judge_accuracy": accuracy,
        "error_percent": 100.0 * (1.0 - accuracy),
        "judge_confidence": generation.judge_confidence(probs, classes),
        "judge_accuracy_per_class": per_class,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("judge", help="an experiment=judge checkpoint")
    parser.add_argument("--images", default="test", help="test, or a .pt file of samples")
    args = parser.parse_args(argv)
    print(json.dumps(score(args.judge, args.images), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

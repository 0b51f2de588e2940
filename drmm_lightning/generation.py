"""Metrics of generated images, scored by an independent classifier (the judge; issue 22).

Every image here is in [0, 1] pixel units (what a picture shows), whatever the units a model
renders in; distances are root-mean-square pixel differences, ||x - y||_2 / sqrt(D), so a blank
image is 0.33 from an average MNIST digit. One function per metric:

- judge_accuracy: the share of class-c images the judge calls c.
- judge_confidence: the judge's mean probability of the intended class.
- diversity: mean pairwise distance of a class's samples against the same figure for real images
  of that class (1: as varied as real digits, 0: every sample the same).
- novelty: distance from each sample to its nearest training image against the same figure for
  test images (a copy of a training image is at 0).
- pose_correlation: for a class rendered through another image's switches (a transfer), the
  correlation with that image's own rendering, against the same for another image's.

Plain PyTorch: the judge is any module mapping normalised images to logits (drmm-render loads a
`experiment=judge` checkpoint into it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


class Judge:
    """An independent classifier that scores images given in [0, 1] pixel units: `normalize`
    maps them to the units it was trained on (its data's BatchTransform.normalize; None: the
    pixels themselves), and it returns class probabilities."""

    def __init__(
        self,
        net: nn.Module,
        normalize: Callable[[Tensor], Tensor] | None = None,
        batch_size: int = 500,
    ) -> None:
        self.net = net.eval()
        self.normalize = normalize or (lambda pixels: pixels)
        self.batch_size = batch_size

    @torch.no_grad()
    def probabilities(self, pixels: Tensor) -> Tensor:
        """p_judge(c | x) for every image (B, C)."""
        device = next(self.net.parameters()).device
        out = [
            torch.softmax(self.net(self.normalize(chunk.float().to(device))).float(), dim=1).cpu()
            for chunk in pixels.split(self.batch_size)
        ]
        return torch.cat(out)


def judge_accuracy(probs: Tensor, classes: Tensor) -> float:
    """The share of images whose judge's most probable class is the intended one."""
    return (probs.argmax(1) == classes.to(probs.device)).float().mean().item()


def judge_confidence(probs: Tensor, classes: Tensor) -> float:
    """The judge's mean probability of the intended class, p_judge(c | x) averaged."""
    return probs.gather(1, classes.to(probs.device).view(-1, 1)).mean().item()


def rms_distances(a: Tensor, b: Tensor) -> Tensor:
    """Root-mean-square pixel distance between every row of a (N, ...) and of b (M, ...)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return torch.cdist(a, b) / a.shape[1] ** 0.5


def mean_pairwise_distance(images: Tensor) -> float:
    """The mean RMS distance over all pairs of distinct images (0 for fewer than two)."""
    if len(images) < 2:
        return 0.0
    d = rms_distances(images, images)
    n = len(images)
    return (d.sum() / (n * (n - 1))).item()


def diversity(
    samples: Tensor, sample_classes: Tensor, real: Tensor, real_classes: Tensor
) -> dict[str, Any]:
    """Within-class diversity of the samples against real images of the same classes: for each
    class the mean pairwise distance of its samples over that of its real images; `ratio` is
    the mean over the classes (1: as varied as real digits, 0: one image repeated)."""
    per_class, sample_div, real_div = [], [], []
    for c in sample_classes.unique().tolist():
        s = mean_pairwise_distance(samples[sample_classes == c])
        r = mean_pairwise_distance(real[real_classes == c])
        sample_div.append(s)
        real_div.append(r)
        per_class.append(s / r if r > 0 else float("nan"))
    mean = torch.tensor(per_class).nanmean().item()
    return {
        "ratio": mean,
        "samples": sum(sample_div) / len(sample_div),
        "real": sum(real_div) / len(real_div),
        "per_class": per_class,
    }


@torch.no_grad()
def nearest_distances(images: Tensor, reference: Tensor, chunk: int = 500) -> Tensor:
    """RMS distance from each image to its nearest image of `reference` (N,): candidates by one
    matrix product per chunk, the nearest few then measured exactly (a copy gives 0)."""
    ref = reference.flatten(1).float()
    ref_sq = ref.pow(2).sum(1)
    out = []
    for block in images.flatten(1).float().split(chunk):
        approx = block.pow(2).sum(1, keepdim=True) + ref_sq - 2 * block @ ref.T
        near = approx.topk(min(5, len(ref)), dim=1, largest=False).indices  # (n, 5)
        exact = (block[:, None].double() - ref[near].double()).pow(2).mean(2).sqrt()
        out.append(exact.min(1).values)
    return torch.cat(out).float()


def novelty(samples: Tensor, train: Tensor, test: Tensor) -> dict[str, Any]:
    """Nearest-training-image distance of the samples against that of test images (images the
    model never saw): medians, their ratio, the share of samples farther from the training set
    than the median test image, and the share nearer than every test image (copies)."""
    d_samples, d_test = nearest_distances(samples, train), nearest_distances(test, train)
    test_median = d_test.median().item()
    return {
        "samples_median": d_samples.median().item(),
        "test_median": test_median,
        "ratio": d_samples.median().item() / test_median if test_median > 0 else float("nan"),
        "share_above_test_median": (d_samples > test_median).float().mean().item(),
        "share_below_test_min": (d_samples < d_test.min()).float().mean().item(),
        "samples_min": d_samples.min().item(),
        "test_min": d_test.min().item(),
    }


def correlations(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation over the pixels of each pair (a[i], b[i]) (N,)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).float()


def pose_correlation(transfers: Tensor, own: Tensor, other: Tensor) -> dict[str, float]:
    """How much of a source image's pose survives in its transfers: the mean correlation of each
    transfer (a class rendered through the source's switches) with the source's own rendering,
    against its correlation with another source's own rendering (what the class alone gives)."""
    return {
        "own": correlations(transfers, own).mean().item(),
        "other": correlations(transfers, other).mean().item(),
    }

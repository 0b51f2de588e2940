"""Pseudo-label (Lee 2013): the unlabeled images' cross-entropy against the classifier's own
argmax, its weight ramped up as in the paper's Eq. 16 (alpha_f = 3; T1, T2 in steps here).

Option (later work, FixMatch: Sohn et al. 2020): `threshold`, a confidence below which an image
contributes nothing (it still counts in the mean, as there).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import StepContext, Term, linear_ramp


def pseudo_labels(logits: Tensor, threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    """The detached argmax of `logits` and a mask of the images confident enough to use."""
    probabilities = F.softmax(logits.detach().float(), dim=1)
    confidence, labels = probabilities.max(dim=1)
    return labels, (confidence >= threshold).float()


class PseudoLabel(Term):
    name = "pseudo_label"
    streams = frozenset({"labeled", "unlabeled"})  # labels train what labels the rest

    def __init__(
        self,
        weight: float = 3.0,
        ramp_start: int = 200,
        ramp_end: int = 1200,
        threshold: float = 0.0,
    ) -> None:
        super().__init__(weight)
        if not 0 <= ramp_start <= ramp_end:
            raise ValueError(
                f"objective.terms.pseudo_label needs 0 <= ramp_start <= ramp_end, got "
                f"{ramp_start}, {ramp_end}."
            )
        if not 0 <= threshold < 1:
            raise ValueError(
                f"objective.terms.pseudo_label.threshold must be in [0, 1), got {threshold}."
            )
        self.ramp_start, self.ramp_end, self.threshold = ramp_start, ramp_end, threshold

    def scale(self, step: int) -> float:
        """alpha(t) of Lee's Eq. 16: 0 until T1, linear to alpha_f at T2, then alpha_f."""
        return self.weight * linear_ramp(step, self.ramp_start, self.ramp_end)

    def forward(self, ctx: StepContext) -> Tensor:
        logits = ctx.logits[ctx.unlabeled]
        if len(logits) == 0:
            return ctx.logits.new_zeros(())
        labels, keep = pseudo_labels(logits, self.threshold)
        loss = F.cross_entropy(logits, labels, reduction="none")
        return (loss * keep.to(loss)).mean()

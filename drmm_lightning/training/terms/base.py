"""What a plug-in loss term sees and offers: the step's context, the Term base class, ramps.

A term is one small unit of the objective (one file under training/terms/, one config of the
`objective` group): it reads the step's context (the model, the joint batch, the bottom-up
E-step's logits, the global step) and returns one unweighted scalar; the step adds
weight x value. Terms that keep state between steps (the mean teacher's EMA network) are
nn.Modules of the objective, so checkpoints save and restore them with the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ...models import DRMM


@dataclass
class StepContext:
    """One training step as the plug-in terms see it."""

    model: DRMM
    x: Tensor  # the joint batch: labeled images first, then unlabeled ones (clean)
    labels: Tensor | None  # labels of the first `num_labeled` images
    logits: Tensor  # the bottom-up E-step on the step's input (with gradient)
    step: int  # the global step (ramps and schedules read it)
    pixel_std: Tensor | None  # per-channel std of the input standardisation (None: [0, 1])

    @property
    def num_labeled(self) -> int:
        return 0 if self.labels is None else len(self.labels)

    @property
    def unlabeled(self) -> slice:
        return slice(self.num_labeled, len(self.x))


class Term(nn.Module):
    """One plug-in term of the EG objective. `streams`: the image streams a step must hold for
    the term to mean anything (a regime that never serves them is refused by name)."""

    name = "term"
    streams: frozenset[str] = frozenset()

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"objective.terms.{self.name}.weight must be >= 0, got {weight}.")
        self.weight = float(weight)

    def bind(self, model: DRMM) -> None:
        """Called once with the network being trained (before any step or checkpoint load)."""

    def forward(self, ctx: StepContext) -> Tensor:  # the unweighted term
        raise NotImplementedError

    def scale(self, step: int) -> float:
        """The term's weight at `step` (ramps override it)."""
        return self.weight

    def after_step(self, model: DRMM, step: int) -> None:
        """Called after each optimizer step (e.g. an EMA update)."""

    def evaluation_net(self) -> nn.Module | None:
        """A network this term offers for evaluation instead of the trained one (or None)."""
        return None


def linear_ramp(step: int, start: int, end: int) -> float:
    """0 before `start`, rising linearly to 1 at `end`, 1 after (Lee 2013, Eq. 16)."""
    if step < start:
        return 0.0
    if step >= end:
        return 1.0
    return (step - start) / (end - start)


def sigmoid_ramp(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2) for t = step / length in [0, 1], then 1 (Laine and Aila 2017; the
    mean teacher's ramp-up)."""
    if length <= 0 or step >= length:
        return 1.0
    t = max(step, 0) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)

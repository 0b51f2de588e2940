"""What a loss term sees and offers: the step's context, the Term base class, ramps.

A term is one small unit of the EG objective (one file under training/terms/, one entry of
`objective.terms`): it reads the step's context (the model, the joint batch, the bottom-up
E-step, the global step, and what the top-down E-step renders from them) and returns one
unweighted scalar; the step adds weight x value. A Term subclass registers itself by its `name`,
so a config can name it. Terms that keep state between steps (the mean teacher's EMA network)
are nn.Modules of the objective, so checkpoints save and restore them with the model.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...models import DRMM, Inference, Rendering, reconstruction_error
from ...models.posterior import class_render_errors

COST_MODES = ("both", "unsup", "sup")
ESTEPS = ("hard", "soft")


class StepContext:
    """One EG step as the terms see it. The top-down E-step (the rendering of each image from its
    class) and the rendering of every class run on first use and are shared by every term, so a
    step whose terms never ask renders nothing.

    estep: render unlabeled images from the argmax class (hard) or the posterior-weighted
    template mixture (soft; posterior_grad: with gradient into p(c|I)). cost_mode: which images
    the generative terms see (the authors' BuildCost): both streams, unsup or sup only."""

    def __init__(
        self,
        model: DRMM,
        x: Tensor,
        labels: Tensor | None,
        logits: Tensor,
        step: int = 0,
        pixel_std: Tensor | None = None,
        inference: Inference | None = None,
        estep: str = "hard",
        cost_mode: str = "both",
        posterior_grad: bool = False,
    ) -> None:
        self.model, self.x, self.labels, self.logits = model, x, labels, logits
        self.step, self.pixel_std = step, pixel_std
        self.inference = inference  # the switches the top-down pass renders through
        self.estep, self.cost_mode, self.posterior_grad = estep, cost_mode, posterior_grad
        self._class_log_lik: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    @property
    def num_labeled(self) -> int:
        return 0 if self.labels is None else len(self.labels)

    @property
    def labeled(self) -> slice:
        return slice(0, self.num_labeled)

    @property
    def unlabeled(self) -> slice:
        return slice(self.num_labeled, len(self.x))

    @property
    def generative(self) -> slice:
        """The rows the generative terms see (cost_mode)."""
        n, total = self.num_labeled, len(self.x)
        if self.cost_mode == "unsup" and n < total:
            return slice(n, total)
        if self.cost_mode == "sup" and n > 0:
            return slice(0, n)
        return slice(0, total)

    def render_classes(self) -> Tensor:
        """Classes to render from: labels where known, else the E-step's class estimate."""
        n, logits = self.num_labeled, self.logits
        guess = logits[n:] if self.posterior_grad else logits[n:].detach()
        if self.estep == "soft":
            guess = F.softmax(guess, dim=1)
            known = guess[:0] if self.labels is None else F.one_hot(self.labels, logits.shape[1])
        else:
            guess = guess.argmax(dim=1)
            known = guess[:0] if self.labels is None else self.labels
        return torch.cat([known.to(guess), guess])

    @property
    def rendered(self) -> bool:
        """Whether a term has asked for the rendering."""
        return "rendering" in self.__dict__

    @cached_property
    def seen(self) -> Inference:
        """The bottom-up E-step of the generative rows."""
        assert self.inference is not None, "the rendering needs the step's Inference"
        return self.inference.select(self.generative)

    @cached_property
    def rendering(self) -> Rendering:
        """The top-down E-step (Eqs. 35-36) of the generative rows, each from its class."""
        return self.model.reconstruct(self.seen, self.render_classes()[self.generative])

    @cached_property
    def reconstruction(self) -> Tensor:
        """||I - I_hat||^2 per pixel of the generative rows, in [0, 1] pixel units (Eq. 7)."""
        return reconstruction_error(self.x[self.generative], self.rendering.image, self.pixel_std)

    def class_log_likelihood(self, rows: slice) -> tuple[Tensor, Tensor]:
        """(log p(I | c, g) + const of every class c for the images `rows`, as (n, C), and the
        scale D / 2 sigma^2 it carries): every class rendered through each image's switches,
        sigma^2 the M-step estimate (the batch's per-pixel reconstruction error, held fixed)."""
        key = (rows.start, rows.stop)
        if key not in self._class_log_lik:
            assert self.inference is not None
            sigma2 = self.reconstruction.detach().clamp_min(1e-8)
            scale = self.x[0].numel() / (2 * sigma2)
            images = self.x[rows]
            errors = class_render_errors(
                self.model, self.inference.select(rows), images, 0, self.pixel_std
            )
            self._class_log_lik[key] = (-scale * errors, scale)
        return self._class_log_lik[key]


class Term(nn.Module):
    """One term of the EG objective. `streams`: the image streams a step must hold for the term
    to mean anything (a regime that never serves them is refused by name). Subclasses register
    by `name` (REGISTRY), so `objective.terms.<name>` builds them."""

    name: ClassVar[str] = "term"
    streams: ClassVar[frozenset[str]] = frozenset()
    REGISTRY: ClassVar[dict[str, type[Term]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls):  # a base class of several terms names none
            Term.REGISTRY[cls.name] = cls

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not weight >= 0:  # also rejects NaN
            raise ValueError(f"objective.terms.{self.name}.weight must be >= 0, got {weight}.")
        self.weight = float(weight)

    def bind(self, model: DRMM) -> None:
        """Called once with the network being trained (before any step or checkpoint load)."""

    def forward(self, ctx: StepContext) -> Tensor | None:
        """The unweighted term, or None where this step holds nothing for it (not logged)."""
        raise NotImplementedError

    def scale(self, step: int) -> float:
        """The term's weight at `step` (ramps override it); 0: not evaluated."""
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

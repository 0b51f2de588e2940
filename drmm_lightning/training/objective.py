"""The EG objective of one training step (paper Algorithm 1 with the G-step, Section 4).

E-step: the bottom-up pass infers classes and switches for the labeled and unlabeled images;
the top-down pass renders each image from its class (the true label for labeled images, the
inferred class or posterior for unlabeled ones). G-step: one gradient step on

    loss = w_ce * CE(labeled) + w_rc * ||I - I_hat||^2 + w_kl * kl_term + w_cb * class_balance_kl
           + w_nn * nonneg_penalty(z^(1..L))

Which images the generative terms see follows the authors' `cost_mode` (drmm-tensorflow
model.py BuildCost): 'both' (labeled and unlabeled), 'unsup' (unlabeled only) or 'sup'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import (
    DRMM,
    Inference,
    class_balance_kl,
    cross_entropy,
    kl_term,
    nonneg_penalty,
    reconstruction_error,
)

COST_MODES = ("both", "unsup", "sup")
ESTEPS = ("hard", "soft")


@dataclass(frozen=True)
class ObjectiveWeights:
    """Weights of the EG objective terms; all zero but CE is the same-architecture CNN."""

    cross_entropy: float = 1.0
    reconstruction: float = 1.0
    kl: float = 0.5
    class_balance: float = 0.0
    nonneg: float = 0.5

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"Objective weight {name!r} must be >= 0, got {value}.")

    @property
    def renders(self) -> bool:
        """Whether the step needs the top-down pass at all."""
        return self.reconstruction > 0 or self.nonneg > 0


@dataclass
class StepOutput:
    """What one objective evaluation produced, for logging and image callbacks."""

    loss: Tensor
    terms: dict[str, Tensor]  # every term, unweighted, detached
    inference: Inference
    num_labeled: int
    rendered: Tensor | None  # renderings of the images the generative terms saw
    generative_images: Tensor | None  # those images


class EGObjective:
    """Evaluate the EG loss of a labeled and/or unlabeled batch for a DRMM-family model."""

    def __init__(
        self,
        weights: ObjectiveWeights | None = None,
        estep: str = "hard",
        cost_mode: str = "both",
    ) -> None:
        if estep not in ESTEPS:
            raise ValueError(f"Unknown estep {estep!r}; valid: {ESTEPS}.")
        if cost_mode not in COST_MODES:
            raise ValueError(f"Unknown cost_mode {cost_mode!r}; valid: {COST_MODES}.")
        self.weights = weights or ObjectiveWeights()
        self.estep = estep
        self.cost_mode = cost_mode

    @classmethod
    def from_config(cls, config: dict | None) -> EGObjective:
        """From a config mapping {weights: {...}, estep: ..., cost_mode: ...}."""
        config = dict(config or {})
        return cls(ObjectiveWeights(**config.pop("weights", {})), **config)

    def render_classes(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """Classes to render from: labels where known, else the E-step's class estimate."""
        n_lab = 0 if labels is None else len(labels)
        guess = logits[n_lab:].detach()
        if self.estep == "soft":
            guess = F.softmax(guess, dim=1)
            known = F.one_hot(labels, logits.shape[1]).to(guess) if n_lab else guess[:0]
        else:
            guess = guess.argmax(dim=1)
            known = labels if n_lab else guess[:0]
        return torch.cat([known, guess])

    def generative_slice(self, num_labeled: int, total: int) -> slice:
        """Which rows of the joint batch feed the generative terms (the authors' cost_mode)."""
        if self.cost_mode == "unsup" and num_labeled < total:
            return slice(num_labeled, total)
        if self.cost_mode == "sup" and num_labeled > 0:
            return slice(0, num_labeled)
        return slice(0, total)

    def __call__(
        self,
        model: DRMM,
        labeled: tuple[Tensor, Tensor] | None = None,
        unlabeled: Tensor | None = None,
    ) -> StepOutput:
        """One E-step on the joint batch and the weighted loss for the G-step."""
        if labeled is None and unlabeled is None:
            raise ValueError("EGObjective needs a labeled or an unlabeled batch.")
        images = [b for b in (labeled[0] if labeled else None, unlabeled) if b is not None]
        x = torch.cat(images) if len(images) > 1 else images[0]
        labels = labeled[1] if labeled else None
        n_lab = 0 if labels is None else len(labels)
        w = self.weights
        inference = model.infer(x)  # bottom-up E-step on both streams at once
        logits = inference.logits
        terms: dict[str, Tensor] = {}
        loss = logits.new_zeros(())
        if n_lab and w.cross_entropy > 0:
            terms["cross_entropy"] = cross_entropy(logits[:n_lab], labels)
            loss = loss + w.cross_entropy * terms["cross_entropy"]
        part = self.generative_slice(n_lab, len(x))
        if w.kl > 0:
            terms["kl"] = kl_term(logits[part])
            loss = loss + w.kl * terms["kl"]
        if w.class_balance > 0:
            terms["class_balance"] = class_balance_kl(logits[part])
            loss = loss + w.class_balance * terms["class_balance"]
        rendered = None
        if w.renders:
            classes = self.render_classes(logits, labels)[part]
            rendering = model.reconstruct(inference.select(part), classes)  # top-down E-step
            rendered = rendering.image
            terms["reconstruction"] = reconstruction_error(x[part], rendered)
            terms["nonneg"] = nonneg_penalty(rendering.templates)
            loss = loss + w.reconstruction * terms["reconstruction"] + w.nonneg * terms["nonneg"]
        return StepOutput(
            loss,
            {k: v.detach() for k, v in terms.items()},
            inference,
            n_lab,
            None if rendered is None else rendered.detach(),
            None if rendered is None else x[part],
        )

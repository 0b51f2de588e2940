"""The EG objective of one training step (paper Algorithm 1 with the G-step, Section 4).

E-step: the bottom-up pass infers classes and switches for the labeled and unlabeled images;
the top-down pass renders each image from its class (the true label for labeled images, the
inferred class or posterior for unlabeled ones). G-step: one gradient step on

    loss = w_ce * CE(labeled) + w_rc * ||I - I_hat||^2 + w_kl * kl_term + w_cb * class_balance_kl
           + w_nn * nonneg_penalty(z^(1..L)) + w_layer * sum_l ||z^(l) - norm(I^(l))||^2

Which images the generative terms see follows the authors' `cost_mode` (drmm-tensorflow
model.py BuildCost): 'both' (labeled and unlabeled), 'unsup' (unlabeled only) or 'sup'.
The reconstruction error is measured in [0, 1] pixel units whatever the input standardisation,
so a weight means the same in every run.

Two options let an unlabeled image's rendering reach what the classifier believes about it (both
off by default and in the paper presets):
- posterior_grad (with estep=soft): render the posterior-weighted template mixture
  sum_c p(c|I) mu_c *with* gradient into p(c|I): the soft E-step's reconstruction then tells
  the classifier which classes' templates explain the image.
- denoise_std: the bottom-up pass (classification and switches) sees the images with Gaussian
  noise of this std (input units); the rendering must reproduce the clean image (the Ladder
  network's denoising cost).
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
    layer_reconstruction_error,
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
    layer_reconstruction: float = 0.0  # per-layer costs (Ladder / what-where autoencoders)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"Objective weight {name!r} must be >= 0, got {value}.")

    @property
    def renders(self) -> bool:
        """Whether the step needs the top-down pass at all."""
        return self.reconstruction > 0 or self.nonneg > 0 or self.layer_reconstruction > 0


@dataclass
class StepOutput:
    """What one objective evaluation produced, for logging and image callbacks."""

    loss: Tensor
    terms: dict[str, Tensor]  # every term, unweighted, detached
    inference: Inference
    num_labeled: int
    rendered: Tensor | None  # renderings of the images the generative terms saw
    generative_images: Tensor | None  # those (clean) images
    templates: list[Tensor] | None  # their intermediate rendered templates z^(L), ..., z^(1)


class EGObjective:
    """Evaluate the EG loss of a labeled and/or unlabeled batch for a DRMM-family model."""

    def __init__(
        self,
        weights: ObjectiveWeights | None = None,
        estep: str = "hard",
        cost_mode: str = "both",
        posterior_grad: bool = False,
        denoise_std: float = 0.0,
        pixel_std: tuple[float, ...] | None = None,
    ) -> None:
        if estep not in ESTEPS:
            raise ValueError(f"Unknown estep {estep!r}; valid: {ESTEPS}.")
        if cost_mode not in COST_MODES:
            raise ValueError(f"Unknown cost_mode {cost_mode!r}; valid: {COST_MODES}.")
        if posterior_grad and estep != "soft":
            raise ValueError("posterior_grad needs estep=soft (a hard argmax has no gradient).")
        if not denoise_std >= 0:
            raise ValueError(f"denoise_std must be >= 0, got {denoise_std}.")
        self.weights = weights or ObjectiveWeights()
        self.estep = estep
        self.cost_mode = cost_mode
        self.posterior_grad = posterior_grad
        self.denoise_std = denoise_std
        self.pixel_std = None if pixel_std is None else torch.tensor(pixel_std)

    @classmethod
    def from_config(
        cls, config: dict | None, pixel_std: tuple[float, ...] | None = None
    ) -> EGObjective:
        """From a config mapping {weights: {...}, estep: ..., cost_mode: ..., ...}; unknown
        keys are refused with the valid names."""
        config = dict(config or {})
        weights = config.pop("weights", {}) or {}
        valid = {"estep", "cost_mode", "posterior_grad", "denoise_std"}
        for given, names in (
            (set(config), valid),
            (set(weights), set(ObjectiveWeights.__annotations__)),
        ):
            if given - names:
                raise ValueError(
                    f"Unknown objective option(s) {sorted(given - names)}; valid: {sorted(names)}."
                )
        return cls(ObjectiveWeights(**weights), pixel_std=pixel_std, **config)

    def render_classes(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """Classes to render from: labels where known, else the E-step's class estimate."""
        n_lab = 0 if labels is None else len(labels)
        guess = logits[n_lab:] if self.posterior_grad else logits[n_lab:].detach()
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
        noisy = x + self.denoise_std * torch.randn_like(x) if self.denoise_std else x
        inference = model.infer(noisy)  # bottom-up E-step on both streams at once
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
        rendering = None
        if w.renders:
            classes = self.render_classes(logits, labels)[part]
            seen = inference.select(part)
            rendering = model.reconstruct(seen, classes)  # top-down E-step
            terms["reconstruction"] = reconstruction_error(x[part], rendering.image, self.pixel_std)
            terms["nonneg"] = nonneg_penalty(rendering.templates)
            loss = loss + w.reconstruction * terms["reconstruction"] + w.nonneg * terms["nonneg"]
            if w.layer_reconstruction > 0 and seen.hidden is not None:
                terms["layer_reconstruction"] = layer_reconstruction_error(
                    rendering.templates, seen.hidden
                )
                loss = loss + w.layer_reconstruction * terms["layer_reconstruction"]
        return StepOutput(
            loss,
            {k: v.detach() for k, v in terms.items()},
            inference,
            n_lab,
            None if rendering is None else rendering.image.detach(),
            None if rendering is None else x[part],
            None if rendering is None else [z.detach() for z in rendering.templates],
        )

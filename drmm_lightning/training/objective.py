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

Three weights use the rendering-based class posterior of the generative model (Eqs. 5-7),
    p(c | I, g) = softmax_c(log pi_c - ||I - I_hat_c||^2 / 2 sigma^2),
computed by rendering every class for `posterior_batch` images of each stream (not in the
paper; zero by default and in the paper presets):
- render_ce: its cross-entropy against the class each image is rendered from (the label, or for
  an unlabeled image the hard E-step's estimate), so the rendering itself must tell the classes
  apart; in per-pixel error units (times 2 sigma^2 / D): that class's rendering error above the
  soft minimum over the classes' errors, so its weight compares with the reconstruction's.
- marginal: -log sum_c pi_c p(I | c, g) of unlabeled images (in per-pixel error units, a soft
  minimum over the classes' rendering errors) instead of rendering only the argmax class.
- render_consistency: the classifier's cross-entropy against p(c | I, g) (held fixed) on unlabeled
  images: what the rendering says of an unlabeled image's class reaches the classifier.
sigma^2 is the M-step estimate, the batch's per-pixel reconstruction error (held fixed), and the
class prior pi uniform. switch_dropout replaces each inferred switch by a draw from its prior
with that probability before rendering (training only), so the class template has to carry
what the dropped switches no longer do.

Plug-in terms (`terms`: training/terms/, one file each: pseudo-label, VAT, mean teacher) are
summed after these, each weight x value at the step's weight (ramps included); the objective is
an nn.Module so that a term's state (the mean teacher's network) is saved with the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
from ..models.posterior import class_render_errors
from .terms import StepContext, Term, build_terms

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
    render_ce: float = 0.0  # cross-entropy of p(c | I, g) against the rendered class
    marginal: float = 0.0  # -log sum_c pi_c p(I | c, g) on unlabeled images
    render_consistency: float = 0.0  # classifier against p(c | I, g) on unlabeled images

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"Objective weight {name!r} must be >= 0, got {value}.")

    @property
    def renders(self) -> bool:
        """Whether the step needs the top-down pass at all."""
        return (
            self.reconstruction > 0
            or self.nonneg > 0
            or self.layer_reconstruction > 0
            or self.uses_posterior
        )

    @property
    def uses_posterior(self) -> bool:
        """Whether the step renders every class for the rendering-based posterior."""
        return self.render_ce > 0 or self.marginal > 0 or self.render_consistency > 0


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


class EGObjective(nn.Module):
    """Evaluate the EG loss of a labeled and/or unlabeled batch for a DRMM-family model."""

    def __init__(
        self,
        weights: ObjectiveWeights | None = None,
        estep: str = "hard",
        cost_mode: str = "both",
        posterior_grad: bool = False,
        denoise_std: float = 0.0,
        switch_dropout: float = 0.0,
        posterior_batch: int = 32,
        pixel_std: tuple[float, ...] | None = None,
        terms: dict[str, Term] | None = None,
        evaluate_teacher: bool = False,
    ) -> None:
        super().__init__()
        if estep not in ESTEPS:
            raise ValueError(f"Unknown estep {estep!r}; valid: {ESTEPS}.")
        if cost_mode not in COST_MODES:
            raise ValueError(f"Unknown cost_mode {cost_mode!r}; valid: {COST_MODES}.")
        if posterior_grad and estep != "soft":
            raise ValueError("posterior_grad needs estep=soft (a hard argmax has no gradient).")
        if not denoise_std >= 0:
            raise ValueError(f"denoise_std must be >= 0, got {denoise_std}.")
        if not 0 <= switch_dropout < 1:
            raise ValueError(f"switch_dropout must be in [0, 1), got {switch_dropout}.")
        if posterior_batch < 1:
            raise ValueError(f"posterior_batch must be >= 1, got {posterior_batch}.")
        self.weights = weights or ObjectiveWeights()
        self.estep = estep
        self.cost_mode = cost_mode
        self.posterior_grad = posterior_grad
        self.denoise_std = denoise_std
        self.switch_dropout = switch_dropout
        self.posterior_batch = posterior_batch
        self.pixel_std = None if pixel_std is None else torch.tensor(pixel_std)
        self.terms = nn.ModuleDict(terms or {})
        if evaluate_teacher and not any(t.name == "mean_teacher" for t in self.plugins()):
            raise ValueError(
                "objective.evaluate_teacher=true needs a term with a teacher network "
                "(objective.terms.mean_teacher); none is configured."
            )
        self.evaluate_teacher = evaluate_teacher

    @classmethod
    def from_config(
        cls, config: dict | None, pixel_std: tuple[float, ...] | None = None
    ) -> EGObjective:
        """From a config mapping {weights: {...}, estep: ..., cost_mode: ..., ...}; unknown
        keys are refused with the valid names."""
        config = dict(config or {})
        weights = config.pop("weights", {}) or {}
        terms = build_terms(config.pop("terms", None))
        valid = {
            "estep",
            "cost_mode",
            "posterior_grad",
            "denoise_std",
            "switch_dropout",
            "posterior_batch",
            "evaluate_teacher",
        }
        for given, names in (
            (set(config), valid),
            (set(weights), set(ObjectiveWeights.__annotations__)),
        ):
            if given - names:
                raise ValueError(
                    f"Unknown objective option(s) {sorted(given - names)}; valid: {sorted(names)}."
                )
        return cls(ObjectiveWeights(**weights), pixel_std=pixel_std, terms=terms, **config)

    # ----- plug-in terms -----------------------------------------------------------------------
    def plugins(self) -> list[Term]:
        return [t for t in self.terms.values() if isinstance(t, Term)]

    def bind(self, model: DRMM) -> None:
        """Hand the trained network to the terms that keep a copy of it (the mean teacher)."""
        for term in self.plugins():
            term.bind(model)

    def after_step(self, model: DRMM, step: int) -> None:
        """After each optimizer step (the mean teacher's EMA update)."""
        for term in self.plugins():
            term.after_step(model, step)

    def evaluation_net(self, model: DRMM) -> nn.Module:
        """The network evaluation uses: the teacher with evaluate_teacher, else `model`."""
        if self.evaluate_teacher:
            for term in self.plugins():
                if (net := term.evaluation_net()) is not None:
                    return net
        return model

    def check_streams(self, regime: str, streams: tuple[str, ...]) -> None:
        """A ValueError naming each term that a regime serving only `streams` cannot feed."""
        for term in self.plugins():
            if missing := sorted(term.streams - set(streams)):
                needs = " and ".join(sorted(term.streams))
                raise ValueError(
                    f"objective.terms.{term.name} needs {needs} images in every step, but "
                    f"regime {regime!r} serves {' or '.join(streams)} only "
                    f"(no {', '.join(missing)}). Use regime=semi_sup or drop the term."
                )

    def render_classes(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """Classes to render from: labels where known, else the E-step's class estimate."""
        n_lab = 0 if labels is None else len(labels)
        guess = logits[n_lab:] if self.posterior_grad else logits[n_lab:].detach()
        if self.estep == "soft":
            guess = F.softmax(guess, dim=1)
            known = guess[:0] if labels is None else F.one_hot(labels, logits.shape[1]).to(guess)
        else:
            guess = guess.argmax(dim=1)
            known = guess[:0] if labels is None else labels
        return torch.cat([known, guess])

    def generative_slice(self, num_labeled: int, total: int) -> slice:
        """Which rows of the joint batch feed the generative terms (the authors' cost_mode)."""
        if self.cost_mode == "unsup" and num_labeled < total:
            return slice(num_labeled, total)
        if self.cost_mode == "sup" and num_labeled > 0:
            return slice(0, num_labeled)
        return slice(0, total)

    def posterior_terms(
        self, model: DRMM, x: Tensor, inference: Inference, labels: Tensor | None, sigma2: Tensor
    ) -> dict[str, Tensor]:
        """render_ce, marginal and render_consistency on the first `posterior_batch` images of
        each stream, from log p(I | c, g) = -D e_c / 2 sigma^2 (e_c: per-pixel error of class
        c's rendering in pixel units, D pixels) and the uniform class prior."""
        w, k = self.weights, self.posterior_batch
        n_lab = 0 if labels is None else len(labels)
        scale = x[0].numel() / (2 * sigma2)
        terms: dict[str, Tensor] = {}
        labeled = slice(0, min(k, n_lab) if w.render_ce > 0 else 0)
        unlabeled = slice(n_lab, n_lab + k)
        ce = []
        for stream, rows in (("labeled", labeled), ("unlabeled", unlabeled)):
            images = x[rows]
            if len(images) == 0:
                continue
            errors = class_render_errors(model, inference.select(rows), images, 0, self.pixel_std)
            log_lik = -scale * errors  # (n, C): log p(I | c, g) + const
            if w.render_ce > 0:
                if stream == "labeled":
                    assert labels is not None  # the labeled rows are empty without labels
                    target = labels[rows]
                else:  # the class the hard E-step renders an unlabeled image from
                    target = inference.logits[rows].detach().argmax(1)
                ce.append(F.cross_entropy(log_lik, target, reduction="none") / scale)
            if stream == "unlabeled" and w.marginal > 0:
                log_marginal = torch.logsumexp(log_lik, dim=1) - math.log(log_lik.shape[1])
                terms["marginal"] = -(log_marginal / scale).mean()
            if stream == "unlabeled" and w.render_consistency > 0:
                target = F.softmax(log_lik.detach(), dim=1)
                log_q = F.log_softmax(inference.logits[rows], dim=1)
                terms["render_consistency"] = -(target * log_q).sum(1).mean()
        if ce:
            terms["render_ce"] = torch.cat(ce).mean()
        return terms

    def __call__(
        self,
        model: DRMM,
        labeled: tuple[Tensor, Tensor] | None = None,
        unlabeled: Tensor | None = None,
        step: int = 0,
    ) -> StepOutput:
        """One E-step on the joint batch and the weighted loss for the G-step (`step`: the
        global step, for the plug-in terms' ramps)."""
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
        if labels is not None and n_lab and w.cross_entropy > 0:
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
        if self.switch_dropout > 0:
            inference = model.drop_switches(inference, self.switch_dropout)
        if w.renders:
            classes = self.render_classes(logits, labels)[part]
            seen = inference.select(part)
            rendering = model.reconstruct(seen, classes)  # top-down E-step
            terms["reconstruction"] = reconstruction_error(x[part], rendering.image, self.pixel_std)
            loss = loss + w.reconstruction * terms["reconstruction"]
            if w.nonneg > 0:  # a zero weight would still pay its backward over every z^(l)
                terms["nonneg"] = nonneg_penalty(rendering.templates)
                loss = loss + w.nonneg * terms["nonneg"]
            if w.layer_reconstruction > 0 and seen.hidden is not None:
                terms["layer_reconstruction"] = layer_reconstruction_error(
                    rendering.templates, seen.hidden
                )
                loss = loss + w.layer_reconstruction * terms["layer_reconstruction"]
        if w.uses_posterior:
            sigma2 = terms["reconstruction"].detach().clamp_min(1e-8)
            for name, value in self.posterior_terms(model, x, inference, labels, sigma2).items():
                terms[name] = value
                loss = loss + getattr(w, name) * value
        context = StepContext(model, x, labels, logits, step, self.pixel_std)
        for term in self.plugins():
            weight = term.scale(step)
            if weight > 0:
                terms[term.name] = term(context)
                loss = loss + weight * terms[term.name]
        return StepOutput(
            loss,
            {k: v.detach() for k, v in terms.items()},
            inference,
            n_lab,
            None if rendering is None else rendering.image.detach(),
            None if rendering is None else x[part],
            None if rendering is None else [z.detach() for z in rendering.templates],
        )

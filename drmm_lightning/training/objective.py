"""The EG objective of one training step (paper Algorithm 1 with the G-step, Section 4).

E-step: the bottom-up pass infers classes and switches for the labeled and unlabeled images at
once; the top-down pass renders each image from its class (the true label for labeled images,
the inferred class or posterior for unlabeled ones), where a term asks for it. G-step: one
gradient step on the sum of the configured terms (training/terms/), each weight x value:

    loss = sum_t w_t(step) * term_t(context)

e.g. the paper's NN+KL objective: CE(labeled) + w_rc ||I - I_hat||^2 + w_kl kl_term
+ w_nn nonneg_penalty(z^(1..L)). The E-step's own settings are the objective's: `estep`
(hard: render the argmax class; soft: the posterior-weighted template mixture, with
`posterior_grad` its gradient into p(c|I)), `cost_mode` (which images the generative terms
see: both streams, unsup or sup, as the authors' BuildCost), `denoise_std` (the bottom-up pass
sees Gaussian noise of this std; the rendering must reproduce the clean image, the Ladder
network's denoising cost) and `switch_dropout` (training renders replace each inferred switch by
a draw from its prior with this probability). The objective is an nn.Module so that a term's
state (the mean teacher's network) is saved with the model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..models import DRMM, Inference
from .terms import COST_MODES, ESTEPS, StepContext, Term, build_terms

# The paper's NN+KL objective (conf/objective/nn_kl.yaml): what an objective without terms gets.
DEFAULT_TERMS = {
    "cross_entropy": {"weight": 1.0},
    "reconstruction": {"weight": 1.0},
    "kl": {"weight": 0.5},
    "nonneg": {"weight": 0.5},
}


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


def upgrade_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """An objective config in the layout before issue 30 ({weights: {name: w}, posterior_batch,
    terms: peers only}) in today's ({terms: {name: {weight: w, ...}}}); others unchanged. The old
    weights' defaults were the NN+KL objective's, every other weight zero."""
    config = dict(config or {})
    if "weights" not in config and "posterior_batch" not in config:
        return config
    weights = {
        "cross_entropy": 1.0,
        "reconstruction": 1.0,
        "kl": 0.5,
        "class_balance": 0.0,
        "nonneg": 0.5,
        "layer_reconstruction": 0.0,
        "render_ce": 0.0,
        "marginal": 0.0,
        "render_consistency": 0.0,
        **(config.pop("weights", None) or {}),
    }
    batch = config.pop("posterior_batch", 32)
    terms: dict[str, Any] = {name: {"weight": weight} for name, weight in weights.items()}
    for name in ("render_ce", "marginal", "render_consistency"):
        if name in terms:
            terms[name]["posterior_batch"] = batch
    config["terms"] = {**terms, **(config.get("terms") or {})}
    return config


class EGObjective(nn.Module):
    """Evaluate the EG loss of a labeled and/or unlabeled batch for a DRMM-family model: the
    bottom-up E-step once, then each term's weighted value."""

    def __init__(
        self,
        terms: dict[str, Term] | None = None,
        estep: str = "hard",
        cost_mode: str = "both",
        posterior_grad: bool = False,
        denoise_std: float = 0.0,
        switch_dropout: float = 0.0,
        evaluate_teacher: bool = False,
        pixel_std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        if estep not in ESTEPS:
            raise ValueError(f"Unknown objective.estep {estep!r}; valid: {', '.join(ESTEPS)}.")
        if cost_mode not in COST_MODES:
            raise ValueError(
                f"Unknown objective.cost_mode {cost_mode!r}; valid: {', '.join(COST_MODES)}."
            )
        if posterior_grad and estep != "soft":
            raise ValueError("posterior_grad needs estep=soft (a hard argmax has no gradient).")
        if not denoise_std >= 0:
            raise ValueError(f"denoise_std must be >= 0, got {denoise_std}.")
        if not 0 <= switch_dropout < 1:
            raise ValueError(f"switch_dropout must be in [0, 1), got {switch_dropout}.")
        self.terms = nn.ModuleDict(terms if terms is not None else build_terms(DEFAULT_TERMS))
        self.estep, self.cost_mode, self.posterior_grad = estep, cost_mode, posterior_grad
        self.denoise_std, self.switch_dropout = denoise_std, switch_dropout
        self.pixel_std = None if pixel_std is None else torch.tensor(pixel_std)
        offers = [type(t).evaluation_net is not Term.evaluation_net for t in self.plugins()]
        if evaluate_teacher and not any(offers):
            raise ValueError(
                "objective.evaluate_teacher=true needs a term with a teacher network "
                "(objective.terms.mean_teacher); none is configured."
            )
        self.evaluate_teacher = evaluate_teacher

    @classmethod
    def from_config(
        cls, config: dict | None, pixel_std: tuple[float, ...] | None = None
    ) -> EGObjective:
        """From a config mapping {terms: {name: {weight: ..., options}}, estep: ..., ...} (the old
        layout translated, upgrade_config); no `terms` key: the NN+KL objective's."""
        config = upgrade_config(config)
        valid = set(inspect.signature(cls).parameters) - {"pixel_std"}
        if unknown := sorted(set(config) - valid):
            raise ValueError(f"Unknown objective option(s) {unknown}; valid: {sorted(valid)}.")
        terms = build_terms(config.pop("terms")) if "terms" in config else None
        return cls(terms, pixel_std=pixel_std, **config)

    # ----- the terms ---------------------------------------------------------------------------
    def plugins(self) -> list[Term]:
        """Every configured term, in the order they are summed."""
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

    def __call__(
        self,
        model: DRMM,
        labeled: tuple[Tensor, Tensor] | None = None,
        unlabeled: Tensor | None = None,
        step: int = 0,
    ) -> StepOutput:
        """One E-step on the joint batch and the weighted loss for the G-step (`step`: the
        global step, for the terms' ramps)."""
        if labeled is None and unlabeled is None:
            raise ValueError("EGObjective needs a labeled or an unlabeled batch.")
        images = [b for b in (labeled[0] if labeled else None, unlabeled) if b is not None]
        x = torch.cat(images) if len(images) > 1 else images[0]
        labels = labeled[1] if labeled else None
        noisy = x + self.denoise_std * torch.randn_like(x) if self.denoise_std else x
        inference = model.infer(noisy)  # bottom-up E-step on both streams at once
        logits = inference.logits
        if self.switch_dropout > 0:
            inference = model.drop_switches(inference, self.switch_dropout)
        ctx = StepContext(
            model, x, labels, logits, step, self.pixel_std,
            inference, self.estep, self.cost_mode, self.posterior_grad,
        )  # fmt: skip
        terms: dict[str, Tensor] = {}
        loss = logits.new_zeros(())
        for term in self.plugins():
            weight = term.scale(step)
            if weight > 0 and (value := term(ctx)) is not None:
                terms[term.name] = value
                loss = loss + weight * value
        if ctx.rendered and "reconstruction" not in terms:  # sigma^2's estimate, always logged
            terms["reconstruction"] = ctx.reconstruction
        rendering = ctx.rendering if ctx.rendered else None
        return StepOutput(
            loss,
            {k: v.detach() for k, v in terms.items()},
            inference,
            ctx.num_labeled,
            None if rendering is None else rendering.image.detach(),
            None if rendering is None else x[ctx.generative],
            None if rendering is None else [z.detach() for z in rendering.templates],
        )

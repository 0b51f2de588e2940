"""The DRMM's terms on the rendering-based class posterior (not in the paper):

    p(c | I, g) = softmax_c(log pi_c - ||I - I_hat_c||^2 / 2 sigma^2)       (Eqs. 5-7, 12)

computed by rendering every class through each image's switches, for the first
`posterior_batch` images of each stream (the step's context renders each set of rows once).
sigma^2 is the M-step estimate, the batch's per-pixel reconstruction error (held fixed), and
the class prior pi uniform.

- render_ce: its cross-entropy against the class each image is rendered from (the label, or
  for an unlabeled image the hard E-step's estimate), so the rendering itself must tell the
  classes apart; in per-pixel error units (times 2 sigma^2 / D), so that its weight compares
  with the reconstruction's.
- marginal: -log sum_c pi_c p(I | c, g) of unlabeled images, in per-pixel error units (a soft
  minimum over the classes' rendering errors).
- render_consistency: the classifier's cross-entropy against p(c | I, g) (held fixed) on
  unlabeled images: what the rendering says of an image's class reaches the classifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import StepContext, Term


class PosteriorTerm(Term):
    """A term on p(c | I, g) of the first `posterior_batch` images of each stream."""

    def __init__(self, weight: float = 0.0, posterior_batch: int = 32) -> None:
        super().__init__(weight)
        if posterior_batch < 1:
            raise ValueError(
                f"objective.terms.{self.name}.posterior_batch must be >= 1, got {posterior_batch}."
            )
        self.posterior_batch = posterior_batch

    def unlabeled_rows(self, ctx: StepContext) -> slice:
        n = ctx.num_labeled
        return slice(n, min(n + self.posterior_batch, len(ctx.x)))


class RenderCE(PosteriorTerm):
    name = "render_ce"

    def forward(self, ctx: StepContext) -> Tensor | None:
        costs = []
        labeled = slice(0, min(self.posterior_batch, ctx.num_labeled))
        for rows in (labeled, self.unlabeled_rows(ctx)):
            if rows.stop <= rows.start:
                continue
            log_lik, scale = ctx.class_log_likelihood(rows)
            if rows is labeled:
                assert ctx.labels is not None
                target = ctx.labels[rows]
            else:  # the class the hard E-step renders an unlabeled image from
                target = ctx.logits[rows].detach().argmax(1)
            costs.append(F.cross_entropy(log_lik, target, reduction="none") / scale)
        return torch.cat(costs).mean() if costs else None


class Marginal(PosteriorTerm):
    name = "marginal"

    def forward(self, ctx: StepContext) -> Tensor | None:
        rows = self.unlabeled_rows(ctx)
        if rows.stop <= rows.start:
            return None
        log_lik, scale = ctx.class_log_likelihood(rows)
        log_marginal = torch.logsumexp(log_lik, dim=1) - math.log(log_lik.shape[1])
        return -(log_marginal / scale).mean()


class RenderConsistency(PosteriorTerm):
    name = "render_consistency"

    def forward(self, ctx: StepContext) -> Tensor | None:
        rows = self.unlabeled_rows(ctx)
        if rows.stop <= rows.start:
            return None
        log_lik, _ = ctx.class_log_likelihood(rows)
        target = F.softmax(log_lik.detach(), dim=1)
        return -(target * F.log_softmax(ctx.logits[rows], dim=1)).sum(1).mean()

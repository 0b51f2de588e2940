"""Rendering Factor Models (RFM, DRFM): the DRMM with a Gaussian top latent (Section 3.2).

Generation: z ~ N(0, I_d), I^(L) = Lambda_top z + N(0, sigma_top^2), then rendered down as in
the DRMM. Inference keeps the DRMM's bottom-up pass for the switches and replaces the argmax over
classes by the exact Gaussian posterior of z given the top features (the factor-analysis E-step):

    S = (I + Lambda^T Lambda / sigma^2)^-1,   m = S Lambda^T f / sigma^2
      = (sigma^2 I + Lambda^T Lambda)^-1 Lambda^T f          (a d x d solve)

Classification is a softmax on m; reconstruction (in the EG step and in evaluation alike) renders
Lambda_top m, and sampling renders Lambda_top z. Rendering given a class (`render(inference, c)`)
uses the class's template instead, so that it stays the input gradient of logit c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .drmm import DRMM, Inference, Rendering
from .layer import LayerSpec


class DRFM(DRMM):
    """Deep Rendering Factor Model; with one rendering layer it is the shallow RFM."""

    def __init__(
        self,
        specs: Sequence[LayerSpec],
        num_classes: int,
        image_size: int,
        factor_dim: int = 64,
        nonneg_render: bool = False,
        render_path: str = "adjoint",
        leak: float = 0.0,
        prior_layers: int = 0,
    ) -> None:
        if factor_dim < 1:
            raise ValueError(f"factor_dim must be >= 1, got {factor_dim}.")
        self.factor_dim = factor_dim
        super().__init__(
            specs, num_classes, image_size, nonneg_render, render_path, leak, prior_layers
        )
        self.loadings = nn.Parameter(
            torch.randn(self.top_dim, factor_dim) / math.sqrt(self.top_dim)
        )
        self.log_sigma2_top = nn.Parameter(torch.zeros(()))

    def make_top(self, num_classes: int) -> nn.Linear:
        """Softmax regression on the posterior mean of z."""
        return nn.Linear(self.factor_dim, num_classes)

    def solve_precision(self, rhs: Tensor) -> Tensor:
        """Solve (sigma^2 I + Lambda^T Lambda) x = rhs for each row of rhs (B, d)."""
        lam = self.loadings
        eye = torch.eye(self.factor_dim, dtype=lam.dtype, device=lam.device)
        chol = torch.linalg.cholesky(self.log_sigma2_top.exp() * eye + lam.T @ lam)
        return torch.cholesky_solve(rhs.T, chol).T

    def posterior_mean(self, features: Tensor) -> Tensor:
        """E[z | I^(L)]: the factor-analysis E-step for flattened top features (B, D)."""
        return self.solve_precision(features @ self.loadings)

    def infer(self, x: Tensor) -> Inference:
        """Bottom-up switches as in the DRMM, then the Gaussian posterior mean of z and logits."""
        hidden, switches = self.bottom_up(x)
        code = self.posterior_mean(hidden[-1].flatten(1))
        return Inference(self.classifier(code), hidden[-1], switches, code, hidden)

    @torch.no_grad()
    def sample(self, classes: Tensor, generator: torch.Generator | None = None) -> Rendering:
        """Draw from the generative process: z ~ N(0, I_d), rendered through switches drawn from
        the priors. The factor model has no class variable: `classes` only sets the count."""
        inference = self.sampled_inference(len(classes), generator)
        inference.code = torch.randn(
            len(classes), self.factor_dim, generator=generator, device=self.loadings.device
        )
        return self.render(inference)

    def render_code(self, code: Tensor) -> Tensor:
        """Lambda_top z, shaped like the top feature map."""
        return (code @ self.loadings.T).view(-1, *self.feature_shape)

    def templates(self, classes: Tensor) -> Tensor:
        """What the class-c logit matches against in the top map: Lambda (sigma^2 I +
        Lambda^T Lambda)^-1 v_c, the rendering of the latent code that class c reads."""
        return self.render_code(self.solve_precision(self.class_rows(classes)))

    def reconstruct(self, inference: Inference, classes: Tensor) -> Rendering:
        """The top latent is z, not c: the EG step renders from E[z | I] whatever the class."""
        return self.render(inference)

    def top_template(self, inference: Inference, classes: Tensor | None) -> Tensor:
        """z^(L): the class template when classes are given, else Lambda_top E[z | I]."""
        if classes is None:
            assert inference.code is not None  # set by DRFM.infer and DRFM.sample
            return self.render_code(inference.code)
        return self.templates(classes)

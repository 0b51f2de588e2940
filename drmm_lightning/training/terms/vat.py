"""Virtual adversarial training (Miyato et al. 2018): the KL between p(y|x) and p(y|x + r_adv),
r_adv the direction that raises it most, found by power iteration on the KL's Hessian (the
paper's finite-difference approximation), on every image of the step (labeled and unlabeled,
as in their semi-supervised runs).

Hyperparameters: one power iteration, xi = 1e-6 (the paper), eps = 0.3 in [0, 1] pixel units,
L2 (the authors' semi-supervised MNIST command, takerum/vat README), alpha = 1. "VAT + EntMin" is
`objective=vat_entmin`: the same plus the entropy of p(y|x), which is this project's KL term
(`objective.terms.kl`; losses.kl_term is entropy - log C).

The power iteration runs in float32 whatever the autocast: a perturbation of norm xi = 1e-6
vanishes in bf16. Even in float32, xi = 1e-6 is near the rounding floor: on the default run's
checkpoint and 100 MNIST test images, r_adv raised the KL to 0.027 at xi = 1e-6 and to 0.069 at
xi = 1e-4 (a random direction of the same norm: 0.0001), so `xi` is one override away. The
extra forward passes leave the batch-norm running statistics alone (as the authors' code does,
update_batch_stats=False).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import StepContext, Term


@contextmanager
def frozen_batch_norm(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every batch norm's running statistics unchanged."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def unit_l2(d: Tensor) -> Tensor:
    """Each image's perturbation scaled to L2 norm 1."""
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (d.dim() - 1))


def to_input_units(r: Tensor, pixel_std: Tensor | None) -> Tensor:
    """A perturbation in [0, 1] pixel units as it adds to standardised inputs."""
    if pixel_std is None:
        return r
    return r / pixel_std.to(r).view(1, -1, 1, 1)


def kl_divergence(clean_logits: Tensor, logits: Tensor) -> Tensor:
    """Mean KL(p(y|x) || p(y|x + r)) over the batch, p(y|x) held fixed."""
    p = F.softmax(clean_logits.detach().float(), dim=1)
    log_p = F.log_softmax(clean_logits.detach().float(), dim=1)
    return (p * (log_p - F.log_softmax(logits.float(), dim=1))).sum(1).mean()


def adversarial_perturbation(
    model: nn.Module,
    x: Tensor,
    clean_logits: Tensor,
    eps: float,
    xi: float = 1e-6,
    iterations: int = 1,
    pixel_std: Tensor | None = None,
) -> Tensor:
    """r_adv (input units, no gradient): eps times the unit direction that power iteration on
    the KL's Hessian finds from a random start (pixel-unit L2 norms)."""
    start = d = torch.randn_like(x, dtype=torch.float32)
    with frozen_batch_norm(model), torch.autocast(x.device.type, enabled=False):
        for _ in range(iterations):
            d = (xi * unit_l2(d)).requires_grad_()
            distance = kl_divergence(clean_logits, model(x.float() + to_input_units(d, pixel_std)))
            (d,) = torch.autograd.grad(distance, d)
    # an image whose finite difference rounded to nothing keeps its random start (rare in
    # float32 at xi = 1e-6; without this its perturbation would silently be zero)
    flat = d.flatten(1).abs().amax(dim=1).view(-1, *[1] * (d.dim() - 1)) == 0
    d = torch.where(flat, start, d)
    return to_input_units(eps * unit_l2(d.detach()), pixel_std).to(x.dtype)


class VAT(Term):
    name = "vat"

    def __init__(
        self, weight: float = 1.0, eps: float = 0.3, xi: float = 1e-6, iterations: int = 1
    ) -> None:
        super().__init__(weight)
        if not (eps >= 0 and xi > 0 and iterations >= 1):
            raise ValueError(
                f"objective.terms.vat needs eps >= 0, xi > 0, iterations >= 1; got {eps}, {xi}, "
                f"{iterations}."
            )
        self.eps, self.xi, self.iterations = eps, xi, iterations

    def forward(self, ctx: StepContext) -> Tensor:
        if self.eps == 0:
            return ctx.logits.new_zeros(())
        r_adv = adversarial_perturbation(
            ctx.model, ctx.x, ctx.logits, self.eps, self.xi, self.iterations, ctx.pixel_std
        )
        with frozen_batch_norm(ctx.model):
            return kl_divergence(ctx.logits, ctx.model(ctx.x + r_adv))

"""The terms of the EG objective (Section 4): each a scalar the training step can weigh and log.

    loss = CE(labeled) + w_rc * reconstruction + w_kl * kl_term + w_nn * nonneg_penalty

The weights and which images each term sees are the training step's business.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of the labeled images: -log p(c_n | I_n)."""
    return F.cross_entropy(logits, targets)


def pixel_squared_error(diff: Tensor, pixel_std: Tensor | None = None) -> Tensor:
    """The elementwise squared error of image differences (channels at dim -3), in the original
    [0, 1] pixel units when pixel_std, the per-channel std the inputs were standardised with, is
    given; so a reconstruction error means the same for every run."""
    if pixel_std is not None:
        shape = [1] * diff.dim()
        shape[-3] = -1
        diff = diff * pixel_std.to(diff).view(shape)
    return diff.pow(2)


def reconstruction_error(
    images: Tensor, rendered: Tensor, pixel_std: Tensor | None = None
) -> Tensor:
    """Mean squared error per pixel between the images and their renderings ||I - I_hat||^2 / D.

    Under the Gaussian pixel noise of Eq. 7 this is -log p(I | c, g) up to scale and constant;
    in [0, 1] pixel units given pixel_std (see pixel_squared_error).
    """
    return pixel_squared_error(images - rendered, pixel_std).mean()


def layer_reconstruction_error(templates: Sequence[Tensor], hidden: Sequence[Tensor]) -> Tensor:
    """Per-layer costs (Ladder network; what-where autoencoders): each intermediate rendered
    template z^(l), l = L-1 ... 1, against the bottom-up activation I^(l), which is normalised per
    channel with its own batch statistics as the Ladder network's clean encoder targets are (this
    keeps the decoder from shrinking its activations to win the cost). Mean over layers."""
    pairs = list(zip(templates[1:], reversed(hidden[:-1])))
    if not pairs:
        return templates[0].new_zeros(())
    costs = []
    for z, h in pairs:
        mean = h.detach().mean(dim=(0, 2, 3), keepdim=True)
        std = h.detach().std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
        costs.append((z - (h - mean) / std).pow(2).mean())
    return torch.stack(costs).mean()


def _log_prior(logits: Tensor, prior: Tensor | None) -> Tensor:
    """log p(c): uniform unless a prior vector is given."""
    if prior is None:
        return logits.new_full((logits.shape[1],), -math.log(logits.shape[1]))
    return prior.to(logits).clamp_min(1e-12).log()


def kl_term(logits: Tensor, prior: Tensor | None = None) -> Tensor:
    """The per-sample "KL" term of the authors' code: -mean_n KL(p(c|I_n) || p(c)).

    With the uniform prior this is mean entropy - log C. The authors add it to the loss with a
    positive weight (drmm-tensorflow model.py BuildCost), so minimising the loss sharpens each
    posterior: entropy minimisation, not the ELBO's KL (whose sign would flatten posteriors).
    """
    log_q = F.log_softmax(logits, dim=1)
    kl = (log_q.exp() * (log_q - _log_prior(logits, prior))).sum(dim=1)
    return -kl.mean()


def class_balance_kl(logits: Tensor, prior: Tensor | None = None) -> Tensor:
    """Batch-marginal variant: KL(mean_n p(c|I_n) || p(c)) >= 0.

    Minimising it keeps the batch's class usage close to the prior (no collapse onto a few
    classes); it does not sharpen individual posteriors. Not in the paper or the authors' code.
    """
    log_q = F.log_softmax(logits, dim=1)
    log_marginal = torch.logsumexp(log_q, dim=0) - math.log(len(logits))
    return (log_marginal.exp() * (log_marginal - _log_prior(logits, prior))).sum()


def nonneg_penalty(templates: Sequence[Tensor]) -> Tensor:
    """NN-DRMM penalty: sum over layers of mean(ReLU(-z^(l))^2) on the intermediate rendered
    templates (the authors' "sign cost"); zero exactly when every z^(l) >= 0."""
    return sum((z.clamp(max=0).square().mean() for z in templates), templates[0].new_zeros(()))

"""The DRMM's terms on the bottom-up E-step alone: the discriminative cross-entropy and the two
class-posterior priors. None of them renders.

- cross_entropy: -log p(c_n | I_n) of the labeled images, the discriminative relaxation
  L_dis of the DRMM (Appendix D, Eq. 44), the CNN's loss.
- kl: the authors' per-sample "KL" term, -mean_n KL(p(c|I_n) || p(c)) (= mean entropy - log C
  under the uniform prior: entropy minimisation; losses.kl_term).
- class_balance: the batch-marginal KL(mean_n p(c|I_n) || p(c)) (not in the paper).

The two priors see the generative rows of the step (the objective's cost_mode).
"""

from __future__ import annotations

from torch import Tensor

from ...models import class_balance_kl, cross_entropy, kl_term
from .base import StepContext, Term


class CrossEntropy(Term):
    name = "cross_entropy"

    def forward(self, ctx: StepContext) -> Tensor | None:
        if ctx.labels is None or ctx.num_labeled == 0:
            return None
        return cross_entropy(ctx.logits[ctx.labeled], ctx.labels)


class KL(Term):
    name = "kl"

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__(weight)

    def forward(self, ctx: StepContext) -> Tensor:
        return kl_term(ctx.logits[ctx.generative])


class ClassBalance(Term):
    name = "class_balance"

    def __init__(self, weight: float = 0.0) -> None:
        super().__init__(weight)

    def forward(self, ctx: StepContext) -> Tensor:
        return class_balance_kl(ctx.logits[ctx.generative])

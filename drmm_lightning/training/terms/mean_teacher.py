"""Mean teacher (Tarvainen and Valpola 2017): an exponential moving average of the network's
weights is the teacher; the consistency cost is the squared difference between the student's
and the teacher's class probabilities (mean over classes), each seeing its own input noise.

Hyperparameters are the authors' defaults (mean-teacher tensorflow/mean_teacher/model.py):
maximum consistency weight 100, sigmoid ramp-up exp(-5 (1 - t)^2), EMA decay 0.99 during the
ramp-up and 0.999 after it, Gaussian input noise 0.15 (input units), the cost on every image of
the step. Their ramp-up spans 40000 of 180000 steps (22%); here 400 of the protocol's 1800. The
student's noise is the objective's `denoise_std` (the step's bottom-up pass sees it; the
mean_teacher config sets 0.15), the teacher's is drawn here, so no extra student pass is needed.

The teacher's parameters are the EMA of the student's; its buffers (batch-norm running
statistics) are its own, updated by its forward passes in training mode, as in the authors'
PyTorch code. It is a submodule of the objective: checkpoints save it and a resumed run
continues it. `objective.evaluate_teacher=true` evaluates the teacher instead of the student.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...models import DRMM
from .base import StepContext, Term, sigmoid_ramp


def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, parameter by parameter."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.lerp_(s.detach(), 1.0 - decay)


class MeanTeacher(Term):
    name = "mean_teacher"

    def __init__(
        self,
        weight: float = 100.0,
        rampup_steps: int = 400,
        decay_during_rampup: float = 0.99,
        decay_after_rampup: float = 0.999,
        input_noise: float = 0.15,
    ) -> None:
        super().__init__(weight)
        for name, decay in (
            ("decay_during_rampup", decay_during_rampup),
            ("decay_after_rampup", decay_after_rampup),
        ):
            if not 0 <= decay < 1:
                raise ValueError(
                    f"objective.terms.mean_teacher.{name} must be in [0, 1), got {decay}."
                )
        if rampup_steps < 0 or input_noise < 0:
            raise ValueError(
                "objective.terms.mean_teacher: rampup_steps and input_noise must be >= 0."
            )
        self.rampup_steps = rampup_steps
        self.decays = (decay_during_rampup, decay_after_rampup)
        self.input_noise = input_noise
        self.teacher: DRMM | None = None

    def bind(self, model: DRMM) -> None:
        """The teacher starts as a copy of the student, outside the optimizer's reach."""
        self.teacher = copy.deepcopy(model)
        self.teacher.requires_grad_(False)

    def decay(self, step: int) -> float:
        return self.decays[0] if step < self.rampup_steps else self.decays[1]

    def scale(self, step: int) -> float:
        return self.weight * sigmoid_ramp(step, self.rampup_steps)

    def forward(self, ctx: StepContext) -> Tensor:
        assert self.teacher is not None, "MeanTeacher.bind(model) comes before the first step"
        noisy = ctx.x + self.input_noise * torch.randn_like(ctx.x) if self.input_noise else ctx.x
        self.teacher.train(ctx.model.training)
        with torch.no_grad():
            target = F.softmax(self.teacher(noisy).float(), dim=1)
        return (F.softmax(ctx.logits.float(), dim=1) - target).pow(2).mean()

    def after_step(self, model: DRMM, step: int) -> None:
        assert self.teacher is not None
        ema_update(self.teacher, model, self.decay(step))

    def evaluation_net(self) -> nn.Module | None:
        return self.teacher

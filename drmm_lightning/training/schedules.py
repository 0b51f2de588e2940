"""Learning-rate schedules for the configs (schedulers are partials called with the optimizer,
and with `total_steps` when they take it)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def exponential_to(optimizer: torch.optim.Optimizer, final_lr: float, total_steps: int) -> LambdaLR:
    """Decay every learning rate exponentially to `final_lr` over `total_steps` optimizer steps:
    the authors' schedule (drmm-tensorflow main.py: --lr_init 1e-3, --lr_final 1e-6) stretched
    over whatever budget the run has."""
    base = optimizer.param_groups[0]["lr"]
    ratio = final_lr / base
    steps = max(int(total_steps), 1)
    return LambdaLR(optimizer, lambda step: ratio ** min(step / steps, 1.0))

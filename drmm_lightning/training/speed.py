"""Timing helpers for the benchmarks in scripts/: one EG or CNN training step, median timings."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..models import DRMM, cross_entropy
from .objective import EGObjective


class EGStep:
    """One full EG training step: E-step, every loss term, backward, Adam step."""

    def __init__(self, model: DRMM, objective: EGObjective | None = None, lr: float = 1e-3) -> None:
        self.model, self.objective = model, objective or EGObjective()
        self.optimizer = torch.optim.Adam(model.parameters(), lr)

    def __call__(self, labeled: tuple[Tensor, Tensor] | None, unlabeled: Tensor | None) -> float:
        out = self.objective(self.model, labeled, unlabeled)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        return out.loss.item()


class CNNStep:
    """One cross-entropy training step of an ordinary CNN on labeled images."""

    def __init__(self, model: nn.Module, lr: float = 1e-3) -> None:
        self.model, self.optimizer = model, torch.optim.Adam(model.parameters(), lr)

    def __call__(self, images: Tensor, labels: Tensor) -> float:
        loss = cross_entropy(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def seconds(step: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, synchronising the GPU when there is one."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median_times(
    steps: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each step, the steps alternating so load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            t = seconds(step, device)
            if i >= warmup:
                times[name].append(t)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}

"""A callback for the resume tests: the training process sends itself a signal at a given step
(SIGKILL: a crash with no chance to save; SIGTERM: a preemption)."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    def __init__(self, step: int, signal_name: str = "SIGKILL") -> None:
        self.step, self.signum = step, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)

"""A callback for the resume tests: the training process sends itself a signal at a given step
(SIGKILL: a crash with no chance to save; SIGTERM: a preemption)."""

from __future__ import annotations

import os
import signal
import time

import lightning as L


class SignalAt(L.Callback):
    def __init__(
        self,
        step: int = -1,
        signal_name: str = "SIGKILL",
        times: int = 1,
        env: str = "",
        when: object = None,
        equals: object = None,
    ) -> None:
        """`env`: read the step from that environment variable instead (unset: never), so one
        command line kills in one call and runs through in the next. `when`, `equals`: signal
        only if they are equal, so one job of a sweep is hit (`when=${seed}`, `equals=2`)."""
        if env:
            step = int(os.environ.get(env, -1))
        if str(when) != str(equals):
            step = -1
        self.step, self.signum, self.times = step, getattr(signal, signal_name), times

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            for _ in range(self.times):  # times=2: a user pressing Ctrl-C twice
                os.kill(os.getpid(), self.signum)
                # a sleep interrupted by the signal runs its Python handler now; two kills back to
                # back could otherwise reach the handler as one pending signal
                time.sleep(0.05)

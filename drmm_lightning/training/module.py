"""DRMMLitModule: a DRMM-family model trained by the EG algorithm; one training step serves
every regime.

A training batch is a dict with a "labeled" (images, labels) entry, an "unlabeled" images entry,
or both (sup, unsupervised pre-training and semi-supervised regimes). The step runs the E-step
on both streams and takes the G-step on the EG objective (training/objective.py).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hydra
import lightning as L
import torch
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ..models import build_model, cross_entropy, reconstruction_error
from ..models.posterior import class_render_errors
from .checkpointing import mark_unfinished_epoch
from .diagnostics import render_diagnostics
from .objective import EGObjective


def to_channels_last(images: Tensor) -> Tensor:
    """A batch of images in channels-last memory (what a channels-last model computes fastest)."""
    return images.contiguous(memory_format=torch.channels_last)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the term."""


class DivergenceError(RuntimeError):
    """The loss left its bound or grew by a large factor; the message names the step and term."""


# The divergence guard is ours rather than Lightning's EarlyStopping(divergence_threshold=...,
# check_finite=True), which checks one logged metric at epoch or validation ends: this one checks
# every step's loss and names the step and the term that blew up.
DIVERGENCE = {"max_loss": 1.0e4, "growth": 1.0e3, "window": 50, "spike": 100.0}


def describe(terms: dict[str, float]) -> str:
    """'name=value, ...' of the loss terms, for the messages that stop a run."""
    return ", ".join(f"{k}={v:.4g}" for k, v in terms.items())


@dataclass
class Watched:
    """One training step's loss and terms, kept on the device until the next check."""

    step: int
    epoch: int
    names: tuple[str, ...]
    values: Tensor  # (1 + len(names),): the loss, then each term


DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def factory(spec: Mapping[str, Any] | Callable[..., Any]) -> Callable[..., Any]:
    """The callable an optimizer or scheduler spec names: its `_target_`, or itself."""
    return hydra.utils.get_object(spec["_target_"]) if isinstance(spec, Mapping) else spec


def build(spec: Mapping[str, Any] | Callable[..., Any], **kwargs: Any) -> Any:
    """An optimizer or scheduler from its spec: a config ({_target_: ..., arguments}, as the YAML
    files give it; plain data, so checkpoints load with Lightning's load_from_checkpoint and
    torch.load(weights_only=True)) or a callable (a partial, as older checkpoints hold)."""
    if not isinstance(spec, Mapping):
        return spec(**kwargs)
    arguments = {k: v for k, v in spec.items() if not k.startswith("_")}
    return factory(spec)(**arguments, **kwargs)


class DRMMLitModule(L.LightningModule):
    """EG training of a DRMM, DRFM or the same-architecture CNN (objective weights all zero)."""

    def __init__(
        self,
        arch: str = "drmm5",
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        arch_kwargs: dict[str, Any] | None = None,
        objective: dict[str, Any] | None = None,
        optimizer: Mapping[str, Any] | Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Mapping[str, Any] | Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        pixel_std: Sequence[float] | None = None,
        diagnostics_every: int = 50,
        render_argmin: bool = True,
        render_argmin_estep: int = 0,
        divergence: dict[str, float] | None = DIVERGENCE,
        check_every: int = 10,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        """pixel_std: the per-channel std the data standardised its inputs with (None: inputs
        in [0, 1]); reconstruction errors are logged in [0, 1] pixel units with it.
        diagnostics_every: log the render diagnostics (render/*) every N training steps (0: off).
        render_argmin: in validation and test, also classify by rendering every class.
        render_argmin_estep: render each class through switches re-inferred for that class by
        this many steps of the per-class E-step (models/posterior.py: class_estep); 0: the
        image's own switches.
        divergence: stop when |loss| exceeds max_loss, or when its mean over a window of steps
        exceeds `growth` times the smallest window mean so far (None: no guard).
        check_every: run those checks and the non-finite check every N steps, on the losses of
        each step (one host synchronisation per N steps; the error names the first bad step).
        channels_last: weights and images in channels-last memory (faster convolutions on CPU).
        compile: torch.compile the EG objective's computation (first steps slower)."""
        super().__init__()
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}.")
        if render_argmin_estep < 0:
            raise ValueError(f"render_argmin_estep must be >= 0, got {render_argmin_estep}.")
        self.save_hyperparameters(logger=False)
        self.net = build_model(arch, in_channels, num_classes, image_size, **(arch_kwargs or {}))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        std = None if pixel_std is None else tuple(float(v) for v in pixel_std)
        self.objective = EGObjective.from_config(objective, pixel_std=std)
        self.objective.bind(self.net)  # terms that copy the network (mean teacher) copy it now
        self.pixel_std = None if std is None else torch.tensor(std)
        # validate_args would synchronise with the device every step
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_rec = MeanMetric()
        self.test_rec = MeanMetric()
        self.val_argmin = MeanMetric()
        self.test_argmin = MeanMetric()
        self.val_agree = MeanMetric()
        self.test_agree = MeanMetric()
        # the resolved run config, kept in checkpoints (drmm-eval and drmm-render read it)
        self.run_config: dict[str, Any] | None = None
        # the optimizer steps a loaded checkpoint had trained (load_run sets it; 0 when fresh)
        self.trained_steps = 0
        self._window: list[float] = []
        self._best_window = float("inf")
        self._first_loss: float | None = None
        self._watched: list[Watched] = []
        step = self.objective.__call__
        self._step = torch.compile(step) if compile else step

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (the bottom-up E-step)."""
        return self.net(x)

    # ----- training ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """EG step: E-step on the labeled and unlabeled images, G-step on the weighted terms."""
        labeled, unlabeled = batch.get("labeled"), batch.get("unlabeled")
        if self.hparams["channels_last"]:
            labeled = None if labeled is None else (to_channels_last(labeled[0]), labeled[1])
            unlabeled = None if unlabeled is None else to_channels_last(unlabeled)
        out = self._step(self.net, labeled, unlabeled, step=self.global_step)
        self.watch(out.loss, out.terms)
        n = out.num_labeled + (0 if unlabeled is None else len(unlabeled))
        logged = {f"train/{name}": value for name, value in out.terms.items()}
        logged["train/sigma2"] = self.net.log_sigma2.detach().exp()
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        self.log(
            "train/loss",
            out.loss.detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,
        )
        every = self.hparams["diagnostics_every"]
        if every and out.rendered is not None and self.global_step % every == 0:
            # the step renders its generative images and their templates together
            assert out.generative_images is not None and out.templates is not None
            self.log_dict(
                render_diagnostics(out.generative_images, out.rendered, out.templates),
                on_step=True,
                on_epoch=False,
                batch_size=n,
            )
        if labeled is not None:
            self.train_acc(out.inference.logits[: out.num_labeled], labeled[1])
            self.log(
                "train/acc",
                self.train_acc,
                prog_bar=True,
                on_step=False,
                on_epoch=True,
                batch_size=out.num_labeled,
            )
        return out.loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the objective's terms update what they keep (the mean
        teacher's EMA), before any callback, so a step checkpoint holds both updates."""
        step = self.global_step
        super().optimizer_step(*args, **kwargs)
        self.objective.after_step(self.net, step)

    @property
    def eval_net(self) -> Any:
        """The network evaluation uses: the trained one, or the mean teacher when
        objective.evaluate_teacher is set."""
        return self.objective.evaluation_net(self.net)

    def watch(self, loss: Tensor, terms: dict[str, Tensor]) -> None:
        """Keep this step's loss and terms on the device; check them every `check_every` steps
        (and before any checkpoint is written, so none holds an unchecked step)."""
        values = torch.stack([loss.detach().float(), *(v.float() for v in terms.values())])
        watched = Watched(self.global_step, self.current_epoch, tuple(terms), values)
        self._watched.append(watched)
        if len(self._watched) >= self.hparams["check_every"]:
            self.run_checks()

    def run_checks(self) -> None:
        """The non-finite and divergence checks over the watched steps, in order: one copy to
        the host for all of them."""
        watched, self._watched = self._watched, []
        if not watched:
            return
        host = torch.cat([w.values for w in watched]).cpu()
        for w, values in zip(watched, host.split([len(w.values) for w in watched])):
            loss, *rest = values.tolist()
            terms = dict(zip(w.names, rest))
            self.check_finite(loss, terms, w.step, w.epoch)
            self.check_divergence(loss, terms, w.step, w.epoch)

    def check_divergence(
        self, loss: float, terms: dict[str, float], step: int = 0, epoch: int = 0
    ) -> None:
        """Stop a run whose loss explodes without becoming NaN (e.g. a learning rate far too
        high), naming the step and the largest term (see `divergence`)."""
        guard = self.hparams["divergence"]
        if not guard:
            return
        value = abs(loss)
        self._window.append(value)
        # a run shorter than a window is guarded by its first step: one step that leaves it
        # `spike` times behind has wrecked the weights, even if the loss comes back down. The
        # floor of 1 keeps a signed objective whose first loss happens to sit near 0 (terms
        # cancelling, e.g. unsupervised pre-training) from being stopped for reaching -1
        self._first_loss = value if self._first_loss is None else self._first_loss
        spike = guard.get("spike")
        reason = None
        if value > guard["max_loss"]:
            reason = f"|loss| = {value:.3g} exceeds divergence.max_loss = {guard['max_loss']:.3g}"
        elif spike and value > spike * max(self._first_loss, 1.0):
            reason = (
                f"|loss| = {value:.3g} is more than divergence.spike = {spike:.3g} times the "
                f"first step's, {self._first_loss:.3g}"
            )
        elif len(self._window) >= guard["window"]:
            mean = sum(self._window) / len(self._window)
            self._window = []
            if mean > guard["growth"] * max(self._best_window, 1e-2):
                reason = (
                    f"the mean |loss| over the last {guard['window']} steps, {mean:.3g}, is more "
                    f"than divergence.growth = {guard['growth']:.3g} times its smallest, "
                    f"{self._best_window:.3g}"
                )
            self._best_window = min(self._best_window, mean)
        if reason is None:
            return
        worst = max(terms, key=lambda k: abs(terms[k]), default="(weighted sum)")
        raise DivergenceError(
            f"Training diverged at global step {step} (epoch {epoch}): {reason}; largest term: "
            f"{worst}. Terms: {describe(terms)}. Lower the learning rate or that term's weight "
            "(model.divergence=null: no guard)."
        )

    def check_finite(
        self, loss: float, terms: dict[str, float], step: int = 0, epoch: int = 0
    ) -> None:
        """Stop at the first non-finite loss, naming the step and the offending terms."""
        if math.isfinite(loss):
            return
        bad = [k for k, v in terms.items() if not math.isfinite(v)] or ["(weighted sum)"]
        raise NonFiniteLossError(
            f"Non-finite loss {loss} at global step {step} (epoch {epoch}); non-finite term(s): "
            f"{', '.join(bad)}. Terms: {describe(terms)}. Lower the learning rate or the weight "
            "of that term."
        )

    def on_train_epoch_end(self) -> None:
        self.run_checks()

    def on_train_end(self) -> None:
        self.run_checks()

    # ----- evaluation --------------------------------------------------------------------------
    def evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """Log the loss, the reconstruction error (the model's own rendering of each image, in
        [0, 1] pixel units) and, if asked, render-argmin accuracy; returns the logits."""
        x, y = batch
        if self.hparams["channels_last"]:
            x = to_channels_last(x)
        n = len(y)
        net = self.eval_net
        inference = net.infer(x)
        predicted = inference.logits.argmax(1)
        estep = self.hparams["render_argmin_estep"]
        errors = None  # ||I - I_hat_c||^2 per pixel of every image and class (B, C)
        if self.hparams["render_argmin"] and net.num_classes > 1:
            errors = class_render_errors(net, inference, x, estep, self.pixel_std)
        # What the EG step reconstructs: the inferred class's template for a mixture top, the
        # code E[z | I] for a factor top (which no class rendering equals, so none is reused).
        reconstruction = reconstruction_error(x, net.render(inference).image, self.pixel_std)
        rec_metric = self.val_rec if stage == "val" else self.test_rec
        rec_metric(reconstruction)
        self.log(f"{stage}/loss", cross_entropy(inference.logits, y), on_epoch=True, batch_size=n)
        self.log(f"{stage}/reconstruction", rec_metric, on_epoch=True, batch_size=n)
        if errors is not None:
            best = errors.argmin(1)
            argmin, agree = (
                (self.val_argmin, self.val_agree)
                if stage == "val"
                else (self.test_argmin, self.test_agree)
            )
            argmin((best == y).float())
            agree((best == predicted).float())
            self.log(f"{stage}/render_argmin_acc", argmin, on_epoch=True, batch_size=n)
            self.log(f"{stage}/render_argmin_agree", agree, on_epoch=True, batch_size=n)
        return inference.logits

    def on_train_start(self) -> None:
        self.val_acc.reset()  # forget the sanity-check batches
        self.val_acc_best.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits = self.evaluate(batch, "val")
        self.val_acc(logits, batch[1])
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True, batch_size=len(logits))

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits = self.evaluate(batch, "test")
        self.test_acc(logits, batch[1])
        self.log("test/acc", self.test_acc, on_epoch=True, batch_size=len(logits))

    def on_test_epoch_end(self) -> None:
        self.log("test/error", 100.0 * (1.0 - self.test_acc.compute()), sync_dist=True)

    # ----- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the run config, the experiment loggers' run ids and the CPU and CUDA random
        states, so a resume continues them and draws what the uninterrupted run would (noise of
        denoise_std, switch dropout, augmentation); mark an epoch that a stop cut short as
        unfinished."""
        self.run_checks()
        checkpoint["run_config"] = self.run_config
        checkpoint["rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state_all()
        mark_unfinished_epoch(checkpoint)
        ids = {type(lg).__name__.removesuffix("Logger").lower(): lg.version for lg in self.loggers}
        checkpoint["logger_ids"] = {k: v for k, v in ids.items() if isinstance(v, str)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Continue the CPU and CUDA random states the checkpoint saved (CUDA: where this machine
        has as many devices as the one that saved it; else the devices keep their own)."""
        if "rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["rng_state"])
        cuda_states = checkpoint.get("cuda_rng_state")
        if cuda_states and torch.cuda.is_available():
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)

    # ----- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return self.build_optimizers(lambda: int(self.trainer.estimated_stepping_batches))

    def build_optimizers(self, total_steps: Callable[[], int]) -> Any:
        """The configured optimizer (default Adam 1e-3) and scheduler; schedulers that take
        `total_steps` get the run's number of optimizer steps (asked for only then)."""
        optimizer = build(self.hparams["optimizer"] or DEFAULT_OPTIMIZER, params=self.parameters())
        make_scheduler = self.hparams["scheduler"]
        if make_scheduler is None:
            return optimizer
        wants_steps = "total_steps" in inspect.signature(factory(make_scheduler)).parameters
        scheduler = build(
            make_scheduler,
            optimizer=optimizer,
            **({"total_steps": total_steps()} if wants_steps else {}),
        )
        interval = self.hparams["scheduler_interval"]
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }

"""drmm-train: build data, model, callbacks, loggers and trainer from the config, fit, test.

drmm-train                                   # the default experiment
drmm-train model=drmm2 regime=sup data.num_labeled=600
drmm-train experiment=paper/mnist_drmm5_semi_sup_100 seed=1,2,3 -m
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from ..data import STREAMS, DRMMDataModule
from ..models import RENDER_PATHS
from ..training import DRMMLitModule, EGObjective
from ..training.callbacks import RunClock, ValidatedStep
from ..training.checkpointing import AtomicCheckpointIO, StopOnSignal, remove_partial_writes
from .build import (
    build_callbacks,
    build_loggers,
    finish_loggers,
    has_validation,
    log_artifacts,
)
from .checkpoints import check_same_model, find_checkpoint, progress, read_checkpoint
from .config import CONF_DIR, as_dict, check_overrides, check_types
from .precision import describe, warn_emulated_bf16
from .report import as_floats, print_config, save_results, say, summary
from .rundir import LOCK_FILE, RunDirError, check_fresh, check_writable, lock_run_dir


def build_datamodule(cfg: DictConfig, regime: str) -> DRMMDataModule:
    """The DataModule of `cfg.data`, serving `regime`'s streams."""
    return hydra.utils.instantiate(cfg.data, regime=regime, _convert_="partial")  # plain lists


def build_module(cfg: DictConfig, datamodule: Any) -> DRMMLitModule:
    """The LightningModule of `cfg.model` for the data's shape, with `cfg.objective`."""
    return hydra.utils.instantiate(
        cfg.model,
        in_channels=datamodule.in_channels,
        num_classes=datamodule.num_classes,
        image_size=datamodule.image_size,
        objective=OmegaConf.to_container(cfg.objective, resolve=True),
        pixel_std=datamodule.transform.std,
        # the optimizer and scheduler stay configs (plain dicts): the module builds them, and
        # its checkpoints load with load_from_checkpoint's defaults (weights_only)
        _recursive_=False,
        _convert_="partial",
    )


def phases(cfg: DictConfig) -> list[tuple[str, int]]:
    """(data regime, last epoch) of each fit: one phase, or two for unsupervised pre-training."""
    epochs = cfg.trainer.max_epochs
    if cfg.regime.name == "unsup_pretr":
        pre = cfg.regime.pretrain_epochs
        return [("unsup", pre), ("sup", pre + epochs)]
    return [(cfg.regime.name, epochs)]


def checkpoint_dir(cfg: DictConfig, regime: str) -> str:
    """Where a phase's checkpoints go: checkpoints/, or checkpoints/pretrain/ for phase 1."""
    base = f"{cfg.paths.output_dir}/checkpoints"
    return f"{base}/pretrain" if cfg.regime.name == "unsup_pretr" and regime == "unsup" else base


TRAINING_REGIMES = ("sup", "unsup_pretr", "semi_sup")  # cf. data.STREAMS: what each serves


def validate(cfg: DictConfig) -> None:
    """Reject bad settings before any data is loaded (one clear ValueError)."""
    check_types(cfg)
    check_checkpoint_callbacks(cfg)
    if cfg.regime.name not in TRAINING_REGIMES:
        raise ValueError(
            f"Unknown regime {cfg.regime.name!r}; valid: {', '.join(TRAINING_REGIMES)}."
        )
    if cfg.regime.pretrain_epochs < 0 or cfg.trainer.max_epochs < 0:
        raise ValueError("regime.pretrain_epochs and trainer.max_epochs must be >= 0.")
    objective = EGObjective.from_config(as_dict(cfg.objective, resolve=True))
    for data_regime, _ in phases(cfg):  # e.g. pseudo-labels need labeled and unlabeled images
        objective.check_streams(cfg.regime.name, STREAMS[data_regime])
    check_sweep_metric(cfg)
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="auto")
    warn_emulated_bf16(cfg.precision, cfg.trainer.precision, accelerator)
    path = (cfg.model.get("arch_kwargs") or {}).get("render_path", "adjoint")
    if path not in RENDER_PATHS:
        raise ValueError(
            f"Unknown model.arch_kwargs.render_path {path!r}; valid: {', '.join(RENDER_PATHS)}."
        )


def global_rank() -> int:
    """This process's rank in a distributed run (0 alone), known from the launcher's
    environment before the Trainer exists."""
    return int(getattr(rank_zero_only, "rank", 0))


def sweeper_optimizes() -> bool:
    """Whether this run is a trial of a sweeper that optimises what `train` returns (Optuna)."""
    if not HydraConfig.initialized():
        return False
    # HydraConfig.get() returns a DictConfig, though typed as its schema HydraConf
    hydra_config: DictConfig = HydraConfig.get()  # type: ignore[assignment]
    target = OmegaConf.select(hydra_config, "sweeper._target_", default="") or ""
    return "optuna" in target.lower()


def check_sweep_metric(cfg: DictConfig) -> None:
    """Refuse, before the first trial trains, a sweep whose optimised metric cannot be logged.
    val/* metrics need a validation split (the paper presets hold none out) and a budget that
    trains; a run that stops mid-epoch validates its final weights, so any such budget does."""
    metric = cfg.get("optimized_metric") or ""
    if not (sweeper_optimizes() and metric.startswith("val/")):
        return
    why = None
    if not cfg.data.get("val_size"):
        why = "needs a validation split, but data.val_size is 0 (the paper presets hold none out)"
    elif cfg.trainer.get("limit_val_batches") == 0:
        why = "needs validation, but trainer.limit_val_batches is 0"
    elif not cfg.get("train", True) or 0 in (cfg.trainer.max_epochs, cfg.trainer.max_steps):
        why = "needs training, but the budget trains nothing (train, max_epochs or max_steps)"
    if why:
        raise ValueError(
            f"optimized_metric={metric} {why}, so every trial would return nothing to the "
            "sweeper. Set data.val_size (e.g. 1000) and a budget, or optimize a metric that "
            "is logged."
        )


def check_checkpoint_callbacks(cfg: DictConfig) -> None:
    """Checkpoint settings that would silently save nothing: refused, or warned of, by name."""
    ranked = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None)
    if ranked and OmegaConf.select(cfg, "callbacks.model_checkpoint.every_n_train_steps"):
        raise ValueError(
            "callbacks.model_checkpoint.every_n_train_steps: this checkpoint ranks by "
            f"{ranked}, which exists only after a validation, so it would save nothing before "
            "the first one. For checkpoints every N steps, mid-epoch too, set "
            "callbacks.step_checkpoint.every_n_train_steps=N."
        )
    step = OmegaConf.select(cfg, "callbacks.step_checkpoint", default=None)
    if step is not None and not step.get("every_n_train_steps"):
        warnings.warn(
            "callbacks.step_checkpoint.every_n_train_steps=0: no checkpoint inside an epoch, so "
            "a kill loses the epoch so far (checkpoints are still written at epoch ends).",
            stacklevel=2,
        )


class Interrupted(Exception):
    """Training stopped on SIGTERM/SIGINT (not an error of the run)."""

    def __init__(self, signal_name: str, step: int, saved: object) -> None:
        what = f"saved {saved}" if saved else "stopped at once, nothing saved"
        super().__init__(
            f"{signal_name} at step {step}: {what}; resume with the same command and "
            "ckpt_path=last."
        )
        self.signal_name = signal_name


class SetupError(ValueError):
    """A setting, file or directory refused before any work: told in one paragraph."""


def prepare(cfg: DictConfig, run_config: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """Everything refused before any data is read: the settings, the checkpoint to resume (and
    what it holds) and the run directory (held by this run from here on)."""
    validate(cfg)
    ckpt = find_checkpoint(cfg.get("ckpt_path"), cfg.paths.log_dir, cfg.task_name, run_config)
    saved = read_checkpoint(ckpt) if ckpt else {}
    if global_rank() == 0:
        lock_run_dir(cfg.paths.output_dir)
        check_fresh(cfg.paths.output_dir, resuming=ckpt is not None)
        if ckpt:
            remove_partial_writes(ckpt.parent)  # left there if the run was killed mid-write
    return ckpt, saved


def validate_final_weights(
    trainer: L.Trainer, model: DRMMLitModule, datamodule: Any, validated: int
) -> Any:
    """Validate the final weights if the last validation was before the last training step (a
    run that stopped mid-epoch: max_steps, a signal, a resume), so val/* describe them (and a
    sweep's val/* metric is logged at any budget); their val/acc, or None."""
    if not has_validation(datamodule) or validated == trainer.global_step:
        return None
    say(f"[drmm] validating the final weights (step {trainer.global_step}): not validated yet")
    trainer.validate(model, datamodule=datamodule, verbose=False)
    return trainer.callback_metrics.get("val/acc")


def weights_to_test(
    cfg: DictConfig, trainer: L.Trainer, datamodule: Any, final_score: Any
) -> tuple[str | None, str]:
    """(checkpoint to test or None for the final weights, what that is, for the log).

    test_ckpt=best tests the checkpoint with the best val/acc, but never one older than the last
    training step unless the final weights were validated too (validate_final_weights), and the
    final weights when they are at least as good. A best checkpoint in another run's directory
    (the run this one resumed) is named as such."""
    final = f"the final weights (step {trainer.global_step})"
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    score = checkpoint.best_model_score if isinstance(checkpoint, ModelCheckpoint) else None
    if cfg.get("test_ckpt", "best") != "best" or not has_validation(datamodule):
        return None, final
    if final_score is not None and (not best or score is None or final_score >= score):
        return None, f"{final}, val/acc {float(final_score):.4f}"
    if not best or not Path(best).is_file():
        return None, final
    step = read_checkpoint(Path(best)).get("global_step")
    where = ""
    if Path(cfg.paths.output_dir).resolve() not in Path(best).resolve().parents:
        where = ", from the run this one resumed"
    return best, f"{best} (best val/acc {float(score or 0):.4f}, step {step}{where})"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured experiment; returns every logged metric as a float."""
    start = time.time()
    run_config = as_dict(cfg, resolve=True)
    try:
        ckpt, saved = prepare(cfg, run_config)
    except (ValueError, FileNotFoundError) as err:
        raise SetupError(str(err)) from err
    say(
        f"[drmm] trainer.precision={cfg.trainer.precision}, model.channels_last="
        f"{cfg.model.channels_last} ({describe(cfg.precision, cfg.trainer.accelerator)})"
    )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    steps, done = progress(saved) if saved else (0, 0)  # what the checkpoint had trained
    plan = [p for p in phases(cfg) if p[1] > done] or phases(cfg)[-1:]

    datamodule = build_datamodule(cfg, plan[0][0])
    model = build_module(cfg, datamodule)
    if ckpt:
        check_same_model(saved, dict(model.hparams), ckpt)
        say(f"[drmm] resuming from {ckpt}: step {steps}, {done} whole epoch(s) done")
        # Lightning cannot see that the samplers skip the batches already trained on
        # (data/samplers.py), so it would warn that a mid-epoch resume is unreliable: it is exact
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    model.run_config = run_config
    loggers = build_loggers(cfg, saved.get("logger_ids", {}))
    stop, validated, clock = StopOnSignal(), ValidatedStep(), RunClock(start)
    callbacks = [
        *build_callbacks(
            cfg, datamodule, checkpoint_dir(cfg, plan[0][0]), has_logger=bool(loggers)
        ),
        stop,
        validated,
        clock,
    ]
    no_val = {} if has_validation(datamodule) else {"limit_val_batches": 0}
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        **no_val,
    )
    for logger in loggers:
        logger.log_hyperparams(run_config)

    metrics: dict[str, float] = {}
    what = None  # the weights tested
    try:
        for i, (regime, last_epoch) in enumerate(plan if cfg.get("train", True) else []):
            if i > 0:  # phase 2 of unsup_pretr: same weights, new data regime and checkpoints
                # trainer.callbacks: set by Lightning's callback connector, undeclared in Trainer
                callbacks = trainer.callbacks  # type: ignore[attr-defined]
                kept = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
                new = build_callbacks(
                    cfg, datamodule, checkpoint_dir(cfg, regime), only=ModelCheckpoint
                )
                trainer.callbacks = kept + new  # type: ignore[attr-defined]
            datamodule.set_regime(regime)
            trainer.fit_loop.max_epochs = last_epoch
            resume = str(ckpt) if ckpt and i == 0 else None
            try:
                trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=False)
            except SystemExit:  # Lightning's exit on a second Ctrl-C: stop at once, as asked
                if stop.received != "SIGINT":
                    raise
                raise Interrupted("SIGINT", trainer.global_step, None) from None
            metrics.update(as_floats(trainer.callback_metrics))
            if stop.stopped_by:
                raise Interrupted(stop.stopped_by, trainer.global_step, stop.saved)
        final_score = None
        if cfg.get("train", True):
            final_score = validate_final_weights(trainer, model, datamodule, validated.step)
            metrics.update(as_floats(trainer.callback_metrics))
        if cfg.get("test", True):
            if cfg.get("train", True):
                tested, what = weights_to_test(cfg, trainer, datamodule, final_score)
            else:  # test only: the checkpoint given, else the weights as built
                tested = str(ckpt) if ckpt else None
                what = tested or "untrained weights (train=false and no ckpt_path)"
            say(f"[drmm] testing {what}")
            trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=False)
            metrics.update(as_floats(trainer.callback_metrics))
        log_artifacts(loggers, Path(cfg.paths.output_dir))
    finally:
        finish_loggers(loggers)
    save_results(cfg, metrics, clock.pieces(), trainer, tested=what)
    summary(cfg, metrics, clock.elapsed())
    return metrics


def discard_if_unused(run_dir: Path, task_name: str) -> None:
    """Remove the run directory of a call that failed before writing anything of its own (only
    Hydra's config copy, the log and the split are there), so failed calls leave no clutter."""
    setup_only = {".hydra", f"{task_name}.log", "labeled_indices.json", LOCK_FILE}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= setup_only:
        shutil.rmtree(run_dir, ignore_errors=True)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@dataclass
class SweepRecord:
    """The jobs of this process's multirun so far, and why each failed one failed."""

    jobs: int = 0
    failed: list[str] = field(default_factory=list)
    sweep_dir: str = ""


SWEEP = SweepRecord()


def sweep_job() -> str | None:
    """'job N (its overrides)' when this run is a job of a multirun, else None."""
    if not HydraConfig.initialized():
        return None
    hydra_config: DictConfig = HydraConfig.get()  # type: ignore[assignment]
    if hydra_config.get("mode") != RunMode.MULTIRUN:
        return None
    overrides = " ".join(hydra_config.overrides.task) or "no overrides"
    return f"job {hydra_config.job.num} ({overrides})"


def sweep_goes_on() -> bool:
    """Whether a failed job is recorded here and the sweep goes on: Hydra's basic sweeper and
    launcher run every job in this process, in turn. Other launchers run jobs elsewhere, and
    other sweepers (Optuna) count failures themselves, so there the failure is raised to them."""
    hydra_config: DictConfig = HydraConfig.get()  # type: ignore[assignment]
    sweeper = OmegaConf.select(hydra_config, "sweeper._target_", default="")
    launcher = OmegaConf.select(hydra_config, "launcher._target_", default="")
    return sweeper == BASIC_SWEEPER and launcher == BASIC_LAUNCHER


def job_failed(job: str, why: str) -> None:
    """Tell and record a failed sweep job: the sweep goes on with the next, and main() ends
    with a summary of the failed ones and status 1."""
    SWEEP.failed.append(f"{job}: {why}")
    print(f"Error in {job}: {why}\n[drmm] the sweep goes on with its other jobs", file=sys.stderr)


def sweep_summary() -> str:
    """The closing message of a sweep with failed jobs: each, and why."""
    ran = f"{SWEEP.jobs - len(SWEEP.failed)} of {SWEEP.jobs} jobs finished"
    lines = "\n".join(f"  {failure}" for failure in SWEEP.failed)
    return (
        f"Error: {len(SWEEP.failed)} job(s) of the sweep failed ({ran}; results under "
        f"{SWEEP.sweep_dir}):\n{lines}"
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    if cfg.get("print_config"):
        print_config(cfg)
    job = sweep_job()
    if job and not sweep_goes_on():
        job = None  # a failure is the sweeper's or launcher's to handle, as in a single run
    if job:
        SWEEP.jobs += 1
        SWEEP.sweep_dir = str(HydraConfig.get().sweep.dir)
    try:
        metrics = train(cfg)
    except Interrupted as stopped:  # a signal stops a sweep too
        say(f"[drmm] stopped by {stopped}")
        sys.exit(143 if stopped.signal_name == "SIGTERM" else 130)
    except SetupError as err:  # a bad setting or file, named: no traceback to read through
        if not isinstance(err.__cause__, RunDirError):  # never clear another run's directory
            discard_if_unused(Path(cfg.paths.output_dir), cfg.task_name)
        if job:
            job_failed(job, str(err))
            return None
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:
        discard_if_unused(Path(cfg.paths.output_dir), cfg.task_name)
        if not job:
            raise
        traceback.print_exc()
        job_failed(job, f"{type(err).__name__}: {err}")
        return None
    metric = cfg.get("optimized_metric")
    if metric and metric not in metrics:
        warnings.warn(
            f"optimized_metric {metric!r} was not logged; logged: {sorted(metrics)}.", stacklevel=1
        )
    return metrics.get(metric) if metric else None


def main() -> None:
    """Console entry point: check group overrides and a run directory given on the command line
    (writable, and held by no other run: taken now, before Hydra writes its config and log
    there), then hand over to Hydra."""
    args = sys.argv[1:]
    check_overrides(args)
    try:
        check_writable(args)
        run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), "")
        multirun = "-m" in args or "--multirun" in args
        if run_dir and "${" not in run_dir and not multirun and global_rank() == 0:
            lock_run_dir(run_dir)
    except RunDirError as err:
        sys.exit(f"Error: {err}")
    check_sweep(args)
    _hydra_main()
    if SWEEP.failed:
        sys.exit(sweep_summary())


def sweep_jobs(args: list[str]) -> list[list[str]] | None:
    """The overrides of every job of a multirun that Hydra's basic sweeper runs (the cross
    product of the sweep's values), or None when that is not known ahead (another sweeper,
    Hydra's own flags, or overrides Hydra itself will refuse)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if a not in ("-m", "--multirun")]
    if len(overrides) == len(args) or any(a.startswith("-") for a in overrides):
        return None
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        base = compose("train", [line for line in fixed if line], return_hydra_config=True)
        if base.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return None
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
        batches = BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)
    except Exception:  # Hydra names what it cannot compose when it gets there
        return None
    return batches[0]


def check_sweep(args: list[str]) -> None:
    """Before the first job of a multirun starts, compose and validate every job's config; exit,
    naming each job that would be refused and why, so that no sweep stops half way on a
    setting it could have refused at once. (Jobs failing later are recorded: job_failed.)"""
    if "-m" not in args and "--multirun" not in args:
        return
    GlobalHydra.instance().clear()
    refused = []
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            jobs = sweep_jobs(args) or []
            for num, job in enumerate(jobs):
                try:
                    cfg = compose("train", job, return_hydra_config=True)
                    with open_dict(cfg):  # as the job will see it (paths.output_dir reads it)
                        cfg.hydra.job.num = num
                        cfg.hydra.runtime.output_dir = f"{cfg.hydra.sweep.dir}/{num}"
                    HydraConfig.instance().set_config(cfg)
                except Exception:  # Hydra names what it cannot compose when it gets there
                    continue
                try:
                    validate(cfg)
                except ValueError as err:
                    shown = " ".join(o for o in job if not o.startswith("hydra.")) or "-"
                    refused.append(f"  job {num} ({shown}): {err}")
    finally:
        GlobalHydra.instance().clear()
    if refused:
        sys.exit(
            f"Error: {len(refused)} of the {len(jobs)} jobs of this sweep would be refused, so "
            "none was started; fix or drop them:\n" + "\n".join(refused)
        )


if __name__ == "__main__":
    main()

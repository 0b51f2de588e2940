"""Wall time of one training epoch of the default experiment, and where it goes.

Builds the data, model and trainer from drmm-train's config (conf/train.yaml plus the overrides
given), trains one epoch and tests, timing: setup (loading the data), the training loop, the
steps inside it (so the rest, the loop's overhead: fetching batches, logging, callbacks),
validation and test. Writes a JSON and a markdown line (docs/benchmarks.md).

    python scripts/bench_epoch.py [--name fp32] [--out outputs/bench] [override ...]
    python scripts/bench_epoch.py --name bf16+cl trainer.precision=bf16-mixed
        model.channels_last=true
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from bench_step import device_name
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from drmm_lightning.cli.config import CONF_DIR, check_train_overrides
from drmm_lightning.cli.train import build_datamodule, build_module


class Clock(L.Callback):
    """Seconds spent in each stage and, on CPU, in each training step."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.steps: list[float] = []
        self._start: dict[str, float] = {}

    def now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def begin(self, trainer: L.Trainer, name: str) -> None:
        self._start[name] = self.now(trainer)

    def end(self, trainer: L.Trainer, name: str) -> None:
        elapsed = self.now(trainer) - self._start.pop(name)
        self.stages[name] = self.stages.get(name, 0.0) + elapsed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.begin(trainer, "train_loop")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.end(trainer, "train_loop")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.strategy.root_device.type == "cpu":
            self._start["step"] = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "step" in self._start:
            self.steps.append(time.perf_counter() - self._start.pop("step"))

    def on_validation_start(self, trainer, pl_module) -> None:
        self.begin(trainer, "validation")

    def on_validation_end(self, trainer, pl_module) -> None:
        self.end(trainer, "validation")

    def on_test_start(self, trainer, pl_module) -> None:
        self.begin(trainer, "test")

    def on_test_end(self, trainer, pl_module) -> None:
        self.end(trainer, "test")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="default", help="a name for this setting")
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("overrides", nargs="*", help="drmm-train overrides")
    args = parser.parse_args(argv)
    check_train_overrides(args.overrides, None, parser.format_usage())
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        overrides = ["trainer.max_epochs=1", *args.overrides]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    run_dir = tempfile.mkdtemp(prefix="bench_epoch_")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = run_dir
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    L.seed_everything(cfg.seed)
    start = time.perf_counter()
    datamodule = build_datamodule(cfg, cfg.regime.name)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    clock = Clock()
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=run_dir,
        **({} if datamodule.val_size else {"limit_val_batches": 0}),
    )
    setup = time.perf_counter() - start
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit = time.perf_counter() - fit_start
    trainer.test(module, datamodule=datamodule, verbose=False)
    steps = int(trainer.global_step)
    loop = clock.stages["train_loop"]
    step_sum = sum(clock.steps)
    validation = clock.stages.get("validation", 0.0)
    result = {
        "name": args.name,
        "device": device_name(trainer.strategy.root_device),
        "overrides": args.overrides,
        "steps": steps,
        "setup_s": setup,
        "epoch_s": fit,  # fit: the training loop with its validation
        "train_loop_s": loop,  # validation included (it runs at the end of the epoch)
        "steps_s": step_sum or None,
        "median_step_ms": 1e3 * sorted(clock.steps)[len(clock.steps) // 2] if clock.steps else None,
        # the loop beyond its steps and its validation: fetching batches, logging, callbacks
        "loop_overhead_s": loop - step_sum - validation if clock.steps else None,
        "validation_s": validation,
        "test_s": clock.stages.get("test", 0.0),
        "test_error": float(trainer.callback_metrics.get("test/error", float("nan"))),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"epoch_{args.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    overhead = result["loop_overhead_s"]
    print(
        f"| {args.name} | {result['device']} | {fit:.1f} | {loop:.1f} | {steps} | "
        f"{result['median_step_ms'] or float('nan'):.1f} | "
        f"{overhead if overhead is not None else float('nan'):.1f} | "
        f"{result['validation_s']:.1f} | {result['test_s']:.1f} | {setup:.1f} |"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""drmm-eval: test a checkpoint on the official test split of the data it was trained on.

drmm-eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
drmm-eval ckpt_path=last                      # the newest last.ckpt of any drmm-train run
drmm-eval ckpt_path=... evaluate_teacher=true  # a mean-teacher run's EMA teacher instead
"""

from __future__ import annotations

import sys

import hydra
import lightning as L
from omegaconf import DictConfig

from .build import build_loggers, finish_loggers
from .checkpoints import find_checkpoint, load_run
from .config import CONF_DIR, check_overrides, check_types
from .report import as_floats, print_config, say, summary
from .schema import EvalConfig


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint `cfg.ckpt_path`; returns the test metrics."""
    check_types(cfg, EvalConfig)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    ckpt = find_checkpoint(cfg.ckpt_path, cfg.paths.log_dir, "train")
    if ckpt is None:
        raise ValueError("drmm-eval needs ckpt_path=<checkpoint file>, or ckpt_path=last.")
    say(f"[drmm] evaluating {ckpt}")
    model, datamodule = load_run(ckpt, cfg.get("data"), index_dir=cfg.paths.output_dir)
    if cfg.get("evaluate_teacher") is not None:
        model.objective.evaluate_teacher = bool(cfg.evaluate_teacher)
        if cfg.evaluate_teacher and model.objective.evaluation_net(model.net) is model.net:
            raise ValueError(
                "evaluate_teacher=true: this checkpoint's objective has no teacher network "
                "(objective=mean_teacher has one)."
            )
    loggers = build_loggers(cfg, {})
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False)
    try:
        trainer.test(model, datamodule=datamodule)
    finally:
        finish_loggers(loggers)
    metrics = as_floats(trainer.callback_metrics)
    summary(cfg, metrics, 0.0)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> float | None:
    if cfg.get("print_config"):
        print_config(cfg)
    return evaluate(cfg).get("test/acc")


def main() -> None:
    """Console entry point."""
    check_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()

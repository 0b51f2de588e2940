"""Where the configs live, the resolvers they use, and a check of group overrides that names
the valid choices before Hydra (whose own message lists none for nested presets) gets them."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from .precision import PRECISIONS, channels_last, trainer_precision

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = (
    "data",
    "model",
    "objective",
    "render",
    "regime",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "hparams_search",
    "debug",
)

# One random suffix per process keeps run directories of jobs started in the same second apart.
_UID = secrets.token_hex(3)
# uid: that suffix; drmm_precision / drmm_channels_last: what the top-level `precision` means on
# the trainer's accelerator (cli/precision.py).
for _name, _resolver in (
    ("uid", lambda: _UID),
    ("drmm_precision", trainer_precision),
    ("drmm_channels_last", channels_last),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def options(group: str) -> list[str]:
    """The choices of a config group, nested presets as 'paper/name'; '_'-files are bases."""
    root = CONF_DIR / group
    return sorted(
        str(p.relative_to(root).with_suffix(""))
        for p in root.rglob("*.yaml")
        if not p.name.startswith("_")
    )


def as_dict(cfg: DictConfig, resolve: bool = False) -> dict[str, Any]:
    """A config mapping as a plain dict (OmegaConf types the result as any container)."""
    return cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=resolve))


def check_overrides(args: list[str]) -> None:
    """Exit with a clear message if a `group=choice` override names no config of that group."""
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        key = key.removeprefix("override ").strip()
        if not sep or key not in GROUPS or "(" in value or value in ("null", ""):
            continue  # not a group choice, or a sweep expression like glob(...)
        valid = options(key)
        unknown = [v for v in value.split(",") if v not in valid]
        if unknown:
            sys.exit(
                f"Unknown {key} {', '.join(map(repr, unknown))}. Valid {key} choices: "
                f"{', '.join(valid) or '(none)'}. Configs live in {CONF_DIR / key}."
            )


# Settings that must be numbers (int: whole numbers), checked before any work so that a typo
# like data.num_labeled=abc is named instead of failing deep inside as a comparison of types.
NUMBERS: dict[str, type] = {
    "seed": int,
    "data.num_labeled": int,
    "data.num_unlabeled": int,
    "data.val_size": int,
    "data.labeled_batch_size": int,
    "data.unlabeled_batch_size": int,
    "data.eval_batch_size": int,
    "data.epoch_size": int,
    "data.num_workers": int,
    "trainer.max_epochs": int,
    "trainer.max_steps": int,
    "regime.pretrain_epochs": int,
    "model.optimizer.lr": float,
    "model.optimizer.weight_decay": float,
    "objective.denoise_std": float,
    "objective.switch_dropout": float,
    "objective.posterior_batch": int,
    "model.check_every": int,
    "model.render_argmin_estep": int,
}
CHOICES: dict[str, tuple] = {
    "precision": PRECISIONS,
    "test_ckpt": ("best", "last"),
    "data.on_device": (True, False, "auto"),
    "model.channels_last": (True, False),
    "model.compile": (True, False),
}


def check_types(cfg: DictConfig) -> None:
    """A ValueError naming the first setting of the wrong type or choice (see NUMBERS)."""
    weights = {f"objective.weights.{k}": float for k in cfg.get("objective", {}).get("weights", {})}
    for key, kind in {**NUMBERS, **weights}.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not (whole or (kind is float and isinstance(value, float))):
            wanted = "a whole number" if kind is int else "a number"
            raise ValueError(f"{key}={value!r} must be {wanted}.")
    for key, valid in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in valid:
            names = ", ".join(str(v).lower() if isinstance(v, bool) else v for v in valid)
            raise ValueError(f"{key}={value!r}; valid: {names}.")

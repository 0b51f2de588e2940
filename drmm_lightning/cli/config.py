"""Where the configs live, the resolvers they use, and a check of group overrides that names
the valid choices before Hydra (whose own message lists none for nested presets) gets them."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from .precision import PRECISIONS, channels_last, trainer_precision
from .schema import TrainConfig, check_config

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


def check_train_overrides(overrides: list[str], experiment: str | None, usage: str) -> None:
    """Exit naming an override that drmm-train would refuse (a typo like tabel=3), checked by
    composing its config once with the experiment a script passes the overrides on with;
    `usage`: the script's own options, listed with the refusal."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not overrides:
        return
    check_overrides(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            chosen = [f"experiment={experiment}"] if experiment else []
            compose("train", [*chosen, *overrides], return_hydra_config=True)
    except Exception as err:
        sys.exit(
            f"{usage}error: {' '.join(overrides)}: not an option of this script and not a "
            f"drmm-train setting ({str(err).splitlines()[0]})"
        )
    finally:
        GlobalHydra.instance().clear()


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


# Settings with a fixed set of values (their types are the schemas' business: cli/schema.py).
CHOICES: dict[str, tuple] = {
    "precision": PRECISIONS,
    "test_ckpt": ("best", "last"),
    "data.on_device": (True, False, "auto"),
}


def check_types(cfg: DictConfig, top: type = TrainConfig) -> None:
    """A ValueError naming the first setting of the wrong type (cli/schema.py: every key of
    every group) or outside its choices (CHOICES), before any data is read."""
    for key, valid in CHOICES.items():  # first: `precision` is read by resolvers
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in valid:
            names = ", ".join(str(v).lower() if isinstance(v, bool) else v for v in valid)
            raise ValueError(f"{key}={value!r}; valid: {names}.")
    check_config(cfg, top)

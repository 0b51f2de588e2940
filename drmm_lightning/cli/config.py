"""Where the configs live, the resolvers they use, and a check of group overrides that names
the valid choices before Hydra (whose own message lists none for nested presets) gets them."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from omegaconf import OmegaConf

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
if not OmegaConf.has_resolver("uid"):
    OmegaConf.register_new_resolver("uid", lambda: _UID)


def options(group: str) -> list[str]:
    """The choices of a config group, nested presets as 'paper/name'; '_'-files are bases."""
    root = CONF_DIR / group
    return sorted(
        str(p.relative_to(root).with_suffix(""))
        for p in root.rglob("*.yaml")
        if not p.name.startswith("_")
    )


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

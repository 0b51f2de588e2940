"""Finding, reading and checking checkpoints before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

IDENTITY = ("arch", "in_channels", "num_classes", "image_size")


def find_checkpoint(ckpt_path: str | None, log_dir: str | Path, task_name: str) -> Path | None:
    """A checkpoint path, or for 'last' the newest last.ckpt under <log_dir>/<task_name>/."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        root = Path(log_dir) / task_name
        found = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(
                f"ckpt_path=last: no checkpoints/last.ckpt under {root.resolve()}; pass a path."
            )
        return found[-1]
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path.resolve()} does not exist.")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's dict on the CPU (trusted: our own files)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def check_same_model(checkpoint: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Raise a ValueError if the checkpoint holds another architecture or data shape."""
    saved = checkpoint.get("hyper_parameters", {})
    diff = {k: (saved.get(k), expected[k]) for k in IDENTITY if saved.get(k) != expected[k]}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"Checkpoint {path} holds another model than the one configured ({detail}). "
            f"Use model={saved.get('arch')} (and the same data set) to resume from it."
        )

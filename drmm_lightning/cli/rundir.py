"""A run directory belongs to one run: locked while it trains, refused when another run holds
it or has finished in it, and checked for writing before Hydra puts its log file there."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".drmm.lock"
_held: dict[Path, int] = {}  # directories this process holds: their lock file descriptors


class RunDirError(ValueError):
    """The run directory is taken or cannot be written; the message names it."""


def lock_run_dir(run_dir: str | Path) -> None:
    """Hold `run_dir` for this process until it exits (an flock, released by the system even
    on kill -9); a RunDirError naming the holder if another process holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunDirError(
            f"Run directory {run_dir} is in use by another run (process {holder}). Give each "
            "run its own directory: drop hydra.run.dir (every run then gets a fresh one) or "
            "pick another."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held[run_dir] = fd


def check_fresh(run_dir: str | Path, resuming: bool) -> None:
    """Refuse a directory where another run finished (its results.json would be overwritten
    and its files mixed with this run's), unless this run resumes it."""
    results = Path(run_dir) / "results.json"
    if results.exists() and not resuming:
        raise RunDirError(
            f"Run directory {Path(run_dir).resolve()} holds a finished run ({results.name}); "
            "starting another there would mix their files. Drop hydra.run.dir (a fresh "
            "directory per run) or pick another; ckpt_path=<its checkpoint> extends that run."
        )


def check_writable(args: list[str]) -> None:
    """A RunDirError if a run directory given on the command line (hydra.run.dir=...) exists
    but cannot be written (a read-only mount): said before Hydra fails to open its log there."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir") or "${" in value:
            continue
        path = Path(value)
        while not path.exists() and path != path.parent:
            path = path.parent
        if not os.access(path, os.W_OK):
            raise RunDirError(
                f"{key}={value}: {path.resolve()} cannot be written (a read-only mount, or no "
                "permission); give a directory this process can write."
            )


def fresh_dir(base: Path) -> Path:
    """`base`, or base-2, base-3, ... : the first that does not exist yet (renders never
    overwrite an earlier call's pictures)."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate

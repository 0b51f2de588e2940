"""Where the data live, and a fast, clear failure when they are absent and cannot be downloaded."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path


class DataNotFoundError(FileNotFoundError, ValueError):
    """A data set's files are absent and could not be downloaded."""


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else $DRMM_DATA_DIR,
    else `data/` under the working directory."""
    return Path(root or os.environ.get("DRMM_DATA_DIR") or "data").expanduser().absolute()


def network_available(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether `host` accepts a TCP connection within `timeout` seconds (name lookup included)."""
    reachable = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reachable.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)  # a thread bounds a slow DNS lookup too
    probe.start()
    probe.join(timeout)
    return bool(reachable)


def missing_files(directory: Path, names: Sequence[str]) -> list[str]:
    """The names in `names` that are not files in `directory`."""
    return [name for name in names if not (directory / name).is_file()]


def not_found_error(
    dataset: str, directory: Path, names: Sequence[str], reason: str
) -> DataNotFoundError:
    """The one-paragraph error for a data set whose files are absent from `directory`."""
    return DataNotFoundError(
        f"Data set '{dataset}' not found: expected the files {', '.join(names)} in the "
        f"directory {directory}, and {reason}. Put the files there, or point the data root "
        f"at a copy with data.root=... or the DRMM_DATA_DIR environment variable."
    )

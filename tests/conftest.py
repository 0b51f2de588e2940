"""Shared test helpers: real-data guards and Hydra configs shrunk to a few batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from drmm_lightning.cli import precision
from drmm_lightning.cli.config import CONF_DIR
from drmm_lightning.data import resolve_data_root

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# A few small batches of real MNIST: enough to exercise every code path in seconds.
TINY = [
    "data.num_unlabeled=300",
    "data.val_size=100",
    "data.labeled_batch_size=20",
    "data.unlabeled_batch_size=20",
    "data.eval_batch_size=200",
    "data.download=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "print_config=false",
    "tags=[test]",
]


def pytest_report_header() -> str:
    """Say what precision=auto trains the suite's runs in (DRMM_NATIVE_BF16=0 forces fp32)."""
    chosen = precision.effective("auto", "cpu")
    return f"drmm: precision=auto resolves to {chosen} on this CPU ({precision.describe('auto', 'cpu')})"


def require_data(relative: str) -> Path:
    """Skip the test unless `relative` exists under the data root; return its path."""
    path = resolve_data_root(None) / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: set DRMM_DATA_DIR to a folder holding {relative}")
    return path


@pytest.fixture
def mnist() -> Path:
    """The real MNIST files (the test is skipped, saying why, without them)."""
    return require_data("MNIST/raw/train-images-idx3-ubyte")


def make_config(output_dir: Path, *overrides: str, name: str = "train") -> DictConfig:
    """Compose a config as drmm-train would, with its run directory at `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def tiny_config(output_dir: Path, *overrides: str, name: str = "train") -> DictConfig:
    """`make_config` shrunk to a few small batches of real MNIST."""
    return make_config(output_dir, *TINY, *overrides, name=name)


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m drmm_lightning.<args[0]> args[1:]` in a subprocess; output captured."""
    command = [sys.executable, "-m", f"drmm_lightning.{args[0]}", *args[1:]]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)

"""Shared test helpers: real-data guards and Hydra configs shrunk to a few batches."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from drmm_lightning.cli import precision
from drmm_lightning.cli.config import CONF_DIR
from drmm_lightning.data import resolve_data_root

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: one process per core, one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the runs the tests start inherit it
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A few small batches of real MNIST: enough to exercise every code path in seconds. Evaluation
# is most of such a run's cost (each image is rendered from every class for render-argmin), so
# validation and test see one batch of 50 images each.
TINY = [
    "data.num_unlabeled=300",
    "data.val_size=100",
    "data.labeled_batch_size=20",
    "data.unlabeled_batch_size=20",
    "data.eval_batch_size=50",
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
    why = precision.describe("auto", "cpu")
    return f"drmm: precision=auto is {precision.effective('auto', 'cpu')} on this CPU ({why})"


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


@functools.cache
def composed(name: str, overrides: tuple[str, ...]) -> DictConfig:
    """`name` composed with `overrides` as drmm-train would, once per test session: the suite
    composes each preset in several modules (a refused composition raises and is not kept).
    Interpolations stay unresolved, so what they read (the precision detection, the
    environment) is read when a test reads them. Callers get copies (make_config)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=True)


def compose_preset(preset: str) -> DictConfig:
    """A copy of `experiment=<preset>` composed (once per session: `composed`)."""
    return copy.deepcopy(composed("train", (f"experiment={preset}",)))


def make_config(output_dir: Path, *overrides: str, name: str = "train") -> DictConfig:
    """Compose a config as drmm-train would, with its run directory at `output_dir`."""
    cfg = copy.deepcopy(composed(name, tuple(overrides)))
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def tiny_config(output_dir: Path, *overrides: str, name: str = "train") -> DictConfig:
    """`make_config` shrunk to a few small batches of real MNIST."""
    return make_config(output_dir, *TINY, *overrides, name=name)


class TrainedRun(NamedTuple):
    """A run trained once per session by `train`: its directory and the metrics it returned.
    Tests that share it only read it (they write their own outputs elsewhere)."""

    path: Path
    metrics: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.ckpt"


def train_once(tmp_path_factory: pytest.TempPathFactory, name: str, *overrides: str) -> TrainedRun:
    require_data("MNIST/raw/train-images-idx3-ubyte")
    from drmm_lightning.cli.train import train

    run = tmp_path_factory.mktemp(name) / "run"
    return TrainedRun(run, dict(train(tiny_config(run, *overrides))))


@pytest.fixture(scope="session")
def tiny_drmm2_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """drmm2 trained on TINY's 3 batches and tested on its last weights (csv logger, seed 0):
    the checkpoint, metrics and images that test_train, test_generative and test_generation
    read, trained once for all of them instead of once in each test."""
    return train_once(tmp_path_factory, "tiny_drmm2", "model=drmm2", "test_ckpt=last")


@pytest.fixture(scope="session")
def tiny_wandb_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """As tiny_drmm2_run but logged to an offline W&B run (seed 1), its file flushed: what
    test_wandb and test_train read back, and the run test_train resumes."""
    import wandb

    run = train_once(
        tmp_path_factory,
        "tiny_wandb",
        "model=drmm2",
        "logger=wandb",
        "logger.wandb.offline=true",
        "seed=1",
    )
    wandb.teardown()  # the W&B service writes the run file after finish() returns: flush it
    return run


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m drmm_lightning.<args[0]> args[1:]` in a subprocess; output captured."""
    command = [sys.executable, "-m", f"drmm_lightning.{args[0]}", *args[1:]]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)

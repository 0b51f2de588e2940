"""The Hydra submitit launcher (issue 31): a two-job sweep through `hydra/launcher=submitit_local`
runs both jobs as submitit jobs, and a SIGTERM to one of them (what a cluster sends before it
preempts a job) leaves a last.ckpt that `ckpt_path=last`, launched the same way, resumes to the
end. `submitit_slurm` runs the same jobs through sbatch; only the executor differs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from drmm_lightning.cli.checkpoints import read_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

ROOT = Path(__file__).resolve().parent.parent
# 10 steps of 20 + 20 images, last.ckpt every 5 steps, one test batch.
SMALL = [
    "model=drmm2",
    "data.num_unlabeled=200",
    "data.val_size=0",
    "data.labeled_batch_size=20",
    "data.unlabeled_batch_size=20",
    "data.eval_batch_size=50",
    "data.download=false",
    "trainer.max_epochs=1",
    "trainer.limit_test_batches=1",
    "callbacks.step_checkpoint.every_n_train_steps=5",
    "callbacks.generative_images.every_n_epochs=0",
    "callbacks.test_curve.every_n_steps=0",
    "logger=csv",
    "print_config=false",
]
# seed 2's job sends itself SIGTERM after step 7 (tests/stop_at.py); seed 1's runs through
PREEMPT = [
    "+callbacks.kill._target_=tests.stop_at.SignalAt",
    "+callbacks.kill.step=7",
    "+callbacks.kill.signal_name=SIGTERM",
    "+callbacks.kill.when=${seed}",
    "+callbacks.kill.equals=2",
]
LAUNCHER = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"]


def sweep(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """drmm-train -m through submitit_local; the jobs import tests.stop_at from ROOT."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "drmm_lightning.train", *LAUNCHER, *SMALL, *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def job_dirs(cwd: Path) -> dict[int, list[Path]]:
    """Every job directory of every sweep under cwd (oldest sweep first), by its seed."""
    found: dict[int, list[Path]] = {}
    for config in sorted((cwd / "outputs" / "train" / "multiruns").glob("*/*/.hydra/config.yaml")):
        seed = OmegaConf.load(config).seed
        found.setdefault(seed, []).append(config.parent.parent)
    return found


def test_submitit_sweep_runs_both_jobs_and_a_preempted_one_resumes(tmp_path: Path, mnist) -> None:
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("the submitit extra is not installed (pip install drmm-lightning[submitit])")
    first = sweep(tmp_path, "seed=1,2", *PREEMPT)
    # the preempted job stops with 143 and no result, which submitit reports for the sweep
    assert first.returncode != 0
    jobs = job_dirs(tmp_path)
    (done,), (preempted,) = jobs[1], jobs[2]
    assert list((done.parent / ".submitit").rglob("*_result.pkl"))  # submitit ran the jobs
    record = json.loads((done / "results.json").read_text())
    assert record["global_step"] == 10 and "test/error" in record["metrics"]
    assert not (preempted / "results.json").exists()
    assert "stopped by SIGTERM at step 7" in (preempted / "train.log").read_text()
    assert read_checkpoint(preempted / "checkpoints" / "last.ckpt")["global_step"] == 7

    resumed = sweep(tmp_path, "seed=2", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (_, again) = job_dirs(tmp_path)[2]
    log = (again / "train.log").read_text()
    assert f"resuming from {preempted.relative_to(tmp_path)}/checkpoints/last.ckpt: step 7" in log
    assert json.loads((again / "results.json").read_text())["global_step"] == 10

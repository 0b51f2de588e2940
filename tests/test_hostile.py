"""What a hostile new user found (issue 23, point 5): each case ends in a refusal naming the
key, file or directory, or in the right behaviour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

import drmm_lightning.cli.train as train_module
import drmm_lightning.training.checkpointing as checkpointing
from drmm_lightning.cli import rundir
from drmm_lightning.cli.rundir import RunDirError, check_fresh, check_writable, lock_run_dir
from drmm_lightning.cli.train import validate
from drmm_lightning.data.image_folder import load_image_folder
from drmm_lightning.training.module import DivergenceError, DRMMLitModule

from .conftest import make_config
from .test_resume import drmm_train, runs

ROOT = Path(__file__).resolve().parent.parent


def cli(cwd: Path, *args: str, data: Path | None = None) -> subprocess.CompletedProcess:
    """drmm-train in a subprocess (one thread), optionally with another data root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if data is not None:
        env["DRMM_DATA_DIR"] = str(data)
    command = [sys.executable, "-m", "drmm_lightning.train", "logger=csv", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# ---- a resumed run tests its own final weights ------------------------------------------------


@pytest.mark.slow
def test_a_resumed_run_validates_and_tests_its_own_final_weights(
    tmp_path: Path, mnist: Path
) -> None:
    """SIGTERM at step 7 (epochs of 5 steps, validated at their ends), resumed to step 12: the
    final weights were never validated, so the run validates them before choosing what to test,
    says what it tested, and names a checkpoint of the interrupted run as such."""
    budget = ["data.val_size=100", "data.epoch_size=100", "trainer.max_epochs=5"]
    budget += ["trainer.max_steps=12"]
    stop = ["+callbacks.stop._target_=tests.stop_at.SignalAt", "+callbacks.stop.step=7"]
    stopped = drmm_train(tmp_path, *budget, *stop, "+callbacks.stop.signal_name=SIGTERM")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    resumed = drmm_train(tmp_path, *budget, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[drmm] validating the final weights (step 12): not validated yet" in resumed.stdout
    first, final = runs(tmp_path)
    tested = json.loads((final / "results.json").read_text())["tested"]
    assert f"[drmm] testing {tested}" in resumed.stdout
    if tested.startswith("the final weights"):
        assert tested.startswith("the final weights (step 12")
    else:  # the best validated checkpoint; named as the other run's if it is
        assert ("from the run this one resumed" in tested) == (str(first) in tested)


# ---- two runs in one directory ----------------------------------------------------------------


def test_a_run_directory_in_use_is_refused_before_hydra_writes_there(tmp_path: Path) -> None:
    run_dir = tmp_path / "shared_run"
    lock_run_dir(run_dir)  # this process is the first run
    result = cli(tmp_path, f"hydra.run.dir={run_dir}", data=tmp_path / "no_data")
    assert result.returncode != 0
    assert f"Run directory {run_dir.resolve()} is in use by another run" in result.stderr
    assert f"process {os.getpid()}" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [rundir.LOCK_FILE]  # nothing written


def test_a_directory_holding_a_finished_run_is_refused_unless_resumed(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunDirError, match="holds a finished run"):
        check_fresh(tmp_path, resuming=False)
    check_fresh(tmp_path, resuming=True)


def test_a_read_only_run_directory_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rundir.os, "access", lambda path, mode: False)  # root writes anywhere
    with pytest.raises(RunDirError, match=f"{tmp_path.resolve()} cannot be written"):
        check_writable([f"hydra.run.dir={tmp_path}"])


# ---- divergence of a short run ----------------------------------------------------------------


def test_one_step_far_above_the_first_is_divergence() -> None:
    module = DRMMLitModule(arch="drmm2")  # the default guard: spike 100
    module.check_divergence(2.5, {"cross_entropy": 2.3})
    module.check_divergence(40.0, {"cross_entropy": 40.0})
    with pytest.raises(DivergenceError, match=r"step 2 .*spike = 100 times the first"):
        module.check_divergence(2567.0, {"cross_entropy": 2566.0}, step=2)


@pytest.mark.slow
def test_a_signed_objective_starting_near_zero_is_not_a_spike() -> None:
    """Terms that cancel at the first step (|loss| 0.001) must not make -1.5 a divergence."""
    module = DRMMLitModule(arch="drmm2")
    module.check_divergence(0.001, {"reconstruction": 0.5})
    module.check_divergence(-1.5, {"reconstruction": 0.1})
    with pytest.raises(DivergenceError, match="spike"):
        module.check_divergence(150.0, {"reconstruction": 150.0})


def test_a_30_step_run_at_lr_10_stops_naming_the_divergence(tmp_path: Path, mnist: Path) -> None:
    result = cli(
        tmp_path,
        "model.optimizer.lr=10",
        "trainer.max_steps=30",
        "data.download=false",
        "callbacks.generative_images.every_n_epochs=0",
        "test=false",
    )
    assert result.returncode != 0
    assert "Training diverged at global step" in result.stderr
    assert "largest term: cross_entropy" in result.stderr


# ---- checkpoints --------------------------------------------------------------------------------


def test_a_full_disk_names_the_checkpoint_file(tmp_path: Path, monkeypatch) -> None:
    def disk_full(obj, path):
        Path(path).write_bytes(b"PK")
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(checkpointing.torch, "save", disk_full)
    target = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(OSError, match=rf"Could not write checkpoint {target} .*MiB free"):
        checkpointing.AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, target)
    assert list(target.parent.iterdir()) == []  # the partial file is gone


def test_partial_writes_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    )
    dead = tmp_path / f".epoch_000.ckpt.{int(finished.stdout)}.tmp"
    live = tmp_path / f".last.ckpt.{os.getppid()}.tmp"  # a writer still running
    for path in (dead, live):
        path.write_bytes(b"half a checkpoint")
    checkpointing.AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1)}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "last.ckpt"])


def test_checkpoint_settings_that_save_nothing_are_refused_or_warned(tmp_path: Path) -> None:
    ranked = make_config(tmp_path / "a", "+callbacks.model_checkpoint.every_n_train_steps=50")
    with pytest.raises(ValueError, match="callbacks.model_checkpoint.every_n_train_steps"):
        validate(ranked)
    off = make_config(tmp_path / "b", "callbacks.step_checkpoint.every_n_train_steps=0")
    with pytest.warns(UserWarning, match="callbacks.step_checkpoint.every_n_train_steps=0"):
        validate(off)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(make_config(tmp_path / "c"))


def test_cuda_random_states_are_saved_and_restored(monkeypatch) -> None:
    """Faked on a machine without a GPU: the calls a GPU run makes, with what they carry."""
    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)]
    restored: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    module = DRMMLitModule(arch="drmm2")
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["cuda_rng_state"] is states
    module.on_load_checkpoint(checkpoint)
    assert restored == [states]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # another machine: left alone
    module.on_load_checkpoint(checkpoint)
    assert restored == [states]


# ---- unclear errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["empty", "text"])
def test_an_image_folder_without_images_names_the_folder(tmp_path: Path, content: str) -> None:
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    write_png(torch.zeros(1, 8, 8, dtype=torch.uint8), str(tmp_path / "cat" / "a.png"))
    if content == "text":
        (tmp_path / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=rf"class folder\(s\) dog of {tmp_path.resolve()}"):
        load_image_folder(tmp_path)


def test_a_bad_value_is_one_message_without_a_traceback(tmp_path: Path) -> None:
    result = cli(tmp_path, "data.num_labeled=100.5", data=tmp_path / "no_data")
    assert result.returncode == 1
    assert "Error: data.num_labeled=100.5" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_twice_stops_at_once_with_status_130(tmp_path: Path, mnist: Path) -> None:
    twice = ["+callbacks.stop._target_=tests.stop_at.SignalAt", "+callbacks.stop.step=3"]
    result = drmm_train(
        tmp_path, *twice, "+callbacks.stop.signal_name=SIGINT", "+callbacks.stop.times=2"
    )
    assert result.returncode == 130, result.stderr[-2000:]
    assert "SIGINT at step 3: stopped at once, nothing saved" in result.stdout


def test_a_second_sigint_stops_at_once_where_sigint_was_ignored() -> None:
    """A process started in the background ignores SIGINT; the second signal must still act (the
    first handler used to hand it back to "ignore", so the run saved and stopped a step later)."""
    ours = signal.getsignal(signal.SIGINT)
    stop = checkpointing.StopOnSignal()
    stop._previous = {signal.SIGINT: signal.SIG_IGN}
    try:
        stop._handle(signal.SIGINT, None)
        assert stop.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)
        assert stop._previous == {}
    finally:
        signal.signal(signal.SIGINT, ours)  # _handle put "ignore" back, as it found it


def test_debug_presets_keep_the_chosen_accelerator(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "debug=fdr", "trainer=gpu")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.fast_dev_run


def test_stop_signal_names_what_it_received() -> None:
    stop = checkpointing.StopOnSignal()
    assert stop.received is None
    stop._handle(signal.SIGINT, None)
    assert stop.received == "SIGINT"


def test_a_sweep_is_refused_only_where_its_metric_cannot_be_logged(
    tmp_path: Path, monkeypatch
) -> None:
    """A paper preset under the Optuna search (which carves out a validation split) logs
    val/acc_best at any budget that trains: a run that stops mid-epoch validates its final
    weights. A budget that trains nothing is refused."""
    monkeypatch.setattr(train_module, "sweeper_optimizes", lambda: True)
    preset = ["experiment=paper/mnist_drmm5_semi_sup_100", "optimized_metric=val/acc_best"]
    short = make_config(tmp_path / "a", *preset, "data.val_size=1000", "trainer.max_steps=50")
    train_module.check_sweep_metric(short)
    for bad, why in (("data.val_size=0", "validation split"), ("trainer.max_steps=0", "budget")):
        cfg = make_config(tmp_path / "b", *preset, "data.val_size=1000", bad)
        with pytest.raises(ValueError, match=why):
            train_module.check_sweep_metric(cfg)


def test_grids_scale_each_image_to_the_unit_range() -> None:
    """viz/grids.grid is torchvision's make_grid with per-image min-max scaling."""
    from drmm_lightning.viz.grids import grid

    images = torch.stack([torch.full((1, 2, 2), 5.0), torch.arange(4.0).view(1, 2, 2) * 3])
    picture = grid(images, nrow=2)
    assert picture.shape == (3, 4, 7)
    assert picture[0, 1:3, 1:3].eq(0).all()  # a constant image shows black
    torch.testing.assert_close(picture[0, 1:3, 4:6].flatten(), torch.tensor([0, 1 / 3, 2 / 3, 1]))
    assert picture[:, 0].eq(1).all()  # the white border

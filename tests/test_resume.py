"""Runs that survive: kill -9 and resume, preemption, extending a run, atomic checkpoints, the
divergence guard, and every bad file or value named (subprocess runs on real MNIST)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.io import write_png

import drmm_lightning.training.checkpointing as checkpointing
from drmm_lightning.cli.checkpoints import find_checkpoint, read_checkpoint
from drmm_lightning.cli.render import check_arguments
from drmm_lightning.cli.rundir import fresh_dir
from drmm_lightning.cli.train import train
from drmm_lightning.data.datasets import load_dataset
from drmm_lightning.data.image_folder import load_image_folder
from drmm_lightning.training.module import DivergenceError, DRMMLitModule

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
# 30 steps of 20 + 20 images per epoch, two epochs, last.ckpt every 5 steps, evaluation in
# batches of 50 (one test batch); one thread so that two runs of the same command give the same
# weights.
SMALL = [
    "model=drmm2",
    "data.num_unlabeled=600",
    "data.val_size=0",
    "data.labeled_batch_size=20",
    "data.unlabeled_batch_size=20",
    "data.eval_batch_size=50",
    "data.download=false",
    "trainer.max_epochs=2",
    "trainer.limit_test_batches=1",
    "callbacks.step_checkpoint.every_n_train_steps=5",
    "callbacks.progress_log.every_n_steps=10",
    "callbacks.generative_images.every_n_epochs=0",
    "logger=csv",
    "print_config=true",
    "seed=3",
]


def drmm_train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "drmm_lightning.train", *SMALL, *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def runs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "train" / "runs").iterdir())


def weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped_and_ends_as_if_uninterrupted(
    tmp_path: Path, mnist: Path
) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir()
    cut.mkdir()
    assert drmm_train(whole).returncode == 0
    killer = ["+callbacks.kill._target_=tests.stop_at.SignalAt", "+callbacks.kill.step=43"]
    killed = drmm_train(cut, *killer)
    assert killed.returncode == -9  # died at step 43 of 60, in the second epoch
    (crashed,) = runs(cut)
    assert read_checkpoint(crashed / "checkpoints" / "last.ckpt")["global_step"] == 40
    resumed = drmm_train(cut, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (
        f"resuming from {crashed.relative_to(cut)}/checkpoints/last.ckpt: step 40" in resumed.stdout
    )
    assert "not resumable" not in resumed.stderr  # Lightning's warning: the samplers resume
    # the bar names the resumed epoch and counts from the 10 batches already trained (Lightning's
    # own bar read "Training: 20/?" here)
    assert "Epoch 1:  33%" in resumed.stdout
    assert not re.search(r" [1-9][0-9]*/\? \[", resumed.stdout)
    (reference,), final = runs(whole), runs(cut)[-1]
    assert json.loads((final / "results.json").read_text())["global_step"] == 60
    a, b = weights(reference), weights(final)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    # the run's log file holds the config, the progress and the summary
    log = (final / "train.log").read_text()
    assert "model:" in log and "[drmm] step 50" in log and "[drmm] test/error" in log


@pytest.mark.slow
def test_last_of_another_experiment_is_refused_and_extending_max_steps_trains_more(
    tmp_path: Path, mnist: Path
) -> None:
    assert drmm_train(tmp_path, "trainer.max_steps=12").returncode == 0
    (first,) = runs(tmp_path)
    other = drmm_train(tmp_path, "seed=4", "ckpt_path=last")
    assert other.returncode != 0
    assert (
        str(first.relative_to(tmp_path)) in other.stderr
        and "seed: checkpoint 3, now 4" in other.stderr
    )
    assert len(runs(tmp_path)) == 1  # the refused call left no run directory behind
    longer = drmm_train(tmp_path, "trainer.max_steps=17", "ckpt_path=last")
    assert longer.returncode == 0, longer.stderr[-2000:]
    record = json.loads((runs(tmp_path)[-1] / "results.json").read_text())
    assert record["global_step"] == 17


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_stops(tmp_path: Path, mnist: Path) -> None:
    stop = ["+callbacks.stop._target_=tests.stop_at.SignalAt", "+callbacks.stop.step=7"]
    result = drmm_train(tmp_path, *stop, "+callbacks.stop.signal_name=SIGTERM")
    assert result.returncode == 143, result.stderr[-2000:]
    assert "stopped by SIGTERM at step 7" in result.stdout
    (run,) = runs(tmp_path)
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 7
    assert not (run / "results.json").exists()  # an interrupted run has no results


def test_ddp_ranks_agree_on_a_stop_signal_every_few_steps_only(tmp_path: Path) -> None:
    """Under DDP the stop decision is a collective: taken every sync_every steps, not each step,
    and a signal seen by any rank stops all of them at the same step."""
    agreed: list[int] = []

    def reduce(received: bool, all: bool = True) -> bool:
        agreed.append(trainer.global_step)
        return True  # another rank received the signal

    strategy = SimpleNamespace(reduce_boolean_decision=reduce)
    trainer = SimpleNamespace(
        world_size=2,
        global_step=0,
        strategy=strategy,
        checkpoint_callback=None,
        default_root_dir=str(tmp_path),
        should_stop=False,
        save_checkpoint=lambda path: None,
    )
    stop = checkpointing.StopOnSignal(sync_every=4)
    for step in range(1, 5):
        trainer.global_step = step
        stop.on_train_batch_end(trainer)  # type: ignore[arg-type]
        assert trainer.should_stop == (step == 4)
    assert agreed == [4] and stop.stopped_by == "SIGTERM"


def test_last_finds_the_pretraining_phase_of_the_same_experiment(tmp_path: Path) -> None:
    config = {"model": {"arch": "drmm2"}, "seed": 1, "data": {"root": "/a"}, "paths": {"x": 1}}
    phase_one = tmp_path / "train" / "runs" / "r1" / "checkpoints" / "pretrain" / "last.ckpt"
    other = tmp_path / "train" / "runs" / "r2" / "checkpoints" / "last.ckpt"
    for path, seed in ((phase_one, 1), (other, 2)):
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": {}, "run_config": {**config, "seed": seed}}, path)
    os.utime(phase_one, (1, 1))  # older than the other experiment's checkpoint
    wanted = {**config, "data": {"root": "/elsewhere"}, "paths": {"x": 2}}
    assert find_checkpoint("last", tmp_path, "train", wanted) == phase_one
    with pytest.raises(ValueError, match="seed: checkpoint 2, now 3"):
        find_checkpoint("last", tmp_path, "train", {**config, "seed": 3})


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    io = checkpointing.AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)

    def dies_halfway(obj, path):  # writes part of the file, then the process "dies"
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert read_checkpoint(target)["state_dict"]["w"].eq(1).all()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left
    (tmp_path / ".last.ckpt.999.tmp").write_bytes(b"left by a kill -9")
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_divergence_without_nan_stops_naming_step_and_term() -> None:
    module = DRMMLitModule(
        arch="drmm2", divergence={"max_loss": 100.0, "growth": 10.0, "window": 3}
    )
    terms = {"cross_entropy": 5e4, "reconstruction": 0.1}
    with pytest.raises(
        DivergenceError, match=r"global step 7 .*max_loss.*largest term: cross_entropy"
    ):
        module.check_divergence(5e4, terms, step=7)
    module = DRMMLitModule(arch="drmm2", divergence={"max_loss": 1e9, "growth": 10.0, "window": 3})
    for _ in range(3):
        module.check_divergence(1.0, {"kl": 1.0})
    for value in (50.0, 60.0):
        module.check_divergence(value, {"kl": value})
    with pytest.raises(DivergenceError, match="growth.*largest term: kl"):
        module.check_divergence(70.0, {"kl": 70.0})
    DRMMLitModule(arch="drmm2", divergence=None).check_divergence(1e30, {"kl": 1.0})


@pytest.mark.parametrize(
    "key,value",
    [
        ("per_class", 0),
        ("num_images", 0),
        ("num_images", -3),
        ("scale", 0),
        ("classes", []),
        ("what", []),
        ("seed", "x"),
    ],
)
def test_render_arguments_are_checked(key: str, value: object) -> None:
    cfg = OmegaConf.create(
        {
            "what": ["samples"],
            "num_images": 16,
            "per_class": 8,
            "scale": 1,
            "seed": 0,
            "classes": None,
        }
    )
    assert check_arguments(cfg) == ["samples"]
    cfg[key] = value
    with pytest.raises(ValueError, match=key):
        check_arguments(cfg)


def test_renders_never_overwrite_an_earlier_call(tmp_path: Path) -> None:
    first = fresh_dir(tmp_path / "renders")
    first.mkdir()
    second = fresh_dir(tmp_path / "renders")
    assert (first.name, second.name) == ("renders", "renders-2")


def test_corrupt_checkpoints_are_named(tmp_path: Path) -> None:
    garbage, truncated = tmp_path / "garbage.ckpt", tmp_path / "truncated.ckpt"
    garbage.write_bytes(os.urandom(1000))  # a new draw each run: no garbage may escape as other
    torch.save({"state_dict": {"w": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:700])
    for path in (garbage, truncated):
        with pytest.raises(ValueError, match=f"Checkpoint {path} is not a readable checkpoint"):
            read_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_mnist_file_is_named(tmp_path: Path, mnist: Path, damage: str) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in mnist.parent.glob("*-ubyte"):
        (raw / source.name).symlink_to(source)
    target = raw / "t10k-labels-idx1-ubyte"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[:5000] if damage == "truncated" else b"\xff\xfe" + data[2:])
    with pytest.raises(ValueError, match=str(target)):
        load_dataset("mnist", tmp_path, download=False)


def test_an_undecodable_image_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DRMM_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "train" / "cat"
    folder.mkdir(parents=True)
    write_png(torch.zeros(1, 8, 8, dtype=torch.uint8), str(folder / "good.png"))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="Cannot decode image .*broken.png"):
        load_image_folder(tmp_path / "train")


@pytest.mark.slow
def test_a_learning_rate_far_too_high_is_stopped_by_the_guard(tmp_path: Path, mnist: Path) -> None:
    result = drmm_train(tmp_path, "model.optimizer.lr=10", "trainer.max_steps=30")
    assert result.returncode != 0
    assert "Training diverged at global step" in result.stderr
    assert "largest term" in result.stderr


def test_drmm_render_refuses_a_bad_count_before_making_any_directory(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "drmm_lightning.render", "ckpt_path=x.ckpt", "per_class=0"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "per_class=0 must be a whole number >= 1" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_scheduled_preset_killed_mid_first_epoch_resumes_exactly(
    tmp_path: Path, mnist: Path
) -> None:
    """The ablation presets' exponential_to schedule asks for the run's total steps, which makes
    Lightning build the training loader before the checkpoint is restored: the place in the
    epoch must come back all the same (here mid-way through the first epoch, with a validation
    split carved out of the training images)."""
    preset = [
        "experiment=ablation/normalized",
        "model=drmm2",
        "data.val_size=100",
        "data.epoch_size=600",  # 30 steps per epoch: the run stops in its first
        "trainer.max_steps=16",
        "callbacks.test_curve.every_n_steps=0",
    ]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir()
    cut.mkdir()
    assert drmm_train(whole, *preset).returncode == 0
    killer = ["+callbacks.kill._target_=tests.stop_at.SignalAt", "+callbacks.kill.step=12"]
    assert drmm_train(cut, *preset, *killer).returncode == -9
    resumed = drmm_train(cut, *preset, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "step 10, 0 whole epoch(s) done" in resumed.stdout
    (reference,), final = runs(whole), runs(cut)[-1]
    a, b = weights(reference), weights(final)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_fresh_checkpoint_loads_with_lightnings_defaults(tmp_path: Path, mnist: Path) -> None:
    """The hyperparameters are plain data (the optimizer and scheduler as configs), so
    DRMMLitModule.load_from_checkpoint(path) needs no weights_only=False; the scheduled preset's
    optimizer and schedule are rebuilt from them."""
    run = tmp_path / "run"
    preset = ["experiment=ablation/normalized", "model=drmm2", "trainer.max_steps=2", "test=false"]
    train(tiny_config(run, *preset, "callbacks.test_curve.every_n_steps=0"))
    module = DRMMLitModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert module.hparams["optimizer"]["_target_"] == "torch.optim.Adam"
    saved = read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, saved[name], msg=name)
    optimizers = module.build_optimizers(lambda: 10)
    assert optimizers["lr_scheduler"]["interval"] == "step"

"""End-to-end runs of drmm-train / drmm-eval on a few batches of real MNIST."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
import yaml

from drmm_lightning.cli.checkpoints import load_run, read_checkpoint
from drmm_lightning.cli.config import options
from drmm_lightning.cli.eval import evaluate
from drmm_lightning.cli.train import train
from drmm_lightning.training import DRMMLitModule

from .conftest import (
    TINY,
    TrainedRun,
    compose_preset,
    make_config,
    require_data,
    run_cli,
    tiny_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def last_checkpoint(run: Path) -> dict:
    return read_checkpoint(run / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("model", ["rfm", "drfm2", "drmm2", "drmm5", "drmm5_nrm", "drmm9"])
def test_every_model_trains_semi_supervised(model: str, tmp_path: Path, request) -> None:
    if model == "drmm2":  # trained once for the session (conftest.py), as the others here
        run = request.getfixturevalue("tiny_drmm2_run")
    else:
        require_data("MNIST/raw/train-images-idx3-ubyte")
        run = TrainedRun(tmp_path / "run", train(tiny_config(tmp_path / "run", f"model={model}")))
    metrics = run.metrics
    assert math.isfinite(metrics["train/loss"]) and "train/reconstruction" in metrics
    assert math.isfinite(metrics["test/reconstruction"]) and metrics["test/reconstruction"] > 0
    # the test error is the test accuracy's complement, measured on the test batches served
    assert metrics["test/error"] == pytest.approx(100 * (1 - metrics["test/acc"]), abs=1e-3)
    saved = last_checkpoint(run.path)
    assert saved["global_step"] == 3 and saved["hyper_parameters"]["arch"] == model


@pytest.mark.parametrize("objective", ["drmm", "dcn", "entropy_only"])
def test_objectives_log_their_terms(objective: str, tmp_path: Path, mnist: Path) -> None:
    metrics = train(tiny_config(tmp_path / "run", "model=drmm2", f"objective={objective}"))
    renders = objective == "drmm"
    assert ("train/reconstruction" in metrics) == renders
    assert ("train/kl" in metrics) == (objective == "entropy_only")
    assert "train/cross_entropy" in metrics and "test/reconstruction" in metrics


def test_sup_regime_sees_only_labeled_images(tmp_path: Path, mnist: Path) -> None:
    seen: list[dict] = []
    original = DRMMLitModule.training_step

    def record(self, batch, batch_idx):
        seen.append(batch)
        return original(self, batch, batch_idx)

    with patch.object(DRMMLitModule, "training_step", record):
        metrics = train(
            tiny_config(tmp_path / "run", "model=drmm2", "regime=sup", "data.epoch_size=60")
        )
    assert seen and all(set(batch) == {"labeled"} for batch in seen)
    labeled = json.loads((tmp_path / "run" / "labeled_indices.json").read_text())["labeled"]
    assert len(labeled) == 100 and "train/acc" in metrics


def test_unsup_pretraining_runs_two_phases(tmp_path: Path, mnist: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_config(
        run, "model=drmm2", "regime=unsup_pretr", "regime.pretrain_epochs=1", "trainer.max_epochs=1"
    )
    metrics = train(cfg)
    pretrain, final = (
        read_checkpoint(run / "checkpoints" / "pretrain" / "last.ckpt"),
        last_checkpoint(run),
    )
    assert pretrain["epoch"] == 0 and final["epoch"] == 1
    assert "train/acc" in metrics  # phase 2 trained on labeled images
    assert not torch.equal(
        pretrain["state_dict"]["net.classifier.weight"],
        final["state_dict"]["net.classifier.weight"],
    )


def test_train_then_eval_gives_the_same_test_accuracy(
    tmp_path: Path, tiny_drmm2_run: TrainedRun
) -> None:
    trained, ckpt = tiny_drmm2_run.metrics, tiny_drmm2_run.checkpoint  # tested on last.ckpt
    cfg = make_config(
        tmp_path / "eval", f"ckpt_path={ckpt}", "trainer.limit_test_batches=1", name="eval"
    )
    evaluated = evaluate(cfg)
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert evaluated["test/reconstruction"] == pytest.approx(
        trained["test/reconstruction"], rel=1e-5
    )
    # the DataModule is rebuilt from the hyperparameters Lightning saved with it, and from the
    # run config for checkpoints written before it saved them
    saved = read_checkpoint(ckpt)
    assert saved["datamodule_hyper_parameters"]["num_unlabeled"] == 300
    loaded, datamodule = load_run(ckpt)
    assert loaded.trained_steps == saved["global_step"] > 0  # what bn_statistics reports
    del saved["datamodule_hyper_parameters"]
    torch.save(saved, tmp_path / "old.ckpt")
    _, old = load_run(tmp_path / "old.ckpt")
    for dm in (datamodule, old):
        assert (dm.num_unlabeled, dm.val_size, dm.eval_batch_size) == (300, 100, 50)


def test_resume_carries_indices_epochs_and_wandb_run(
    tmp_path: Path, tiny_wandb_run: TrainedRun
) -> None:
    first, second = tiny_wandb_run.path, tmp_path / "second"  # first: seed 1, one epoch
    ckpt = tiny_wandb_run.checkpoint
    # Another seed would draw other labels: the checkpoint's must win.
    train(
        tiny_config(
            second,
            "model=drmm2",
            "logger=wandb",
            "seed=2",
            f"ckpt_path={ckpt}",
            "trainer.max_epochs=2",
        )
    )
    indices = [
        json.loads((run / "labeled_indices.json").read_text())["labeled"] for run in (first, second)
    ]
    assert indices[0] == indices[1]
    old, new = last_checkpoint(first), last_checkpoint(second)
    assert (old["epoch"], new["epoch"]) == (0, 1)
    assert new["global_step"] == 2 * old["global_step"]
    assert old["logger_ids"]["wandb"] == new["logger_ids"]["wandb"]
    run_dirs = [next((run / "wandb").glob("offline-run-*")).name for run in (first, second)]
    assert all(name.endswith(old["logger_ids"]["wandb"]) for name in run_dirs)


def test_offline_wandb_run_holds_metrics_and_renderings(tiny_wandb_run: TrainedRun) -> None:
    (run_dir,) = (tiny_wandb_run.path / "wandb").glob("offline-run-*")
    records = next(run_dir.glob("*.wandb")).read_bytes()
    for metric in (
        b"train/loss",
        b"val/acc",
        b"val/acc_best",
        b"test/error",
        b"train/reconstruction",
    ):
        assert metric in records
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert images, "no rendering image was logged"


def test_renderings_are_saved_as_png_without_wandb(tiny_drmm2_run: TrainedRun) -> None:
    assert list((tiny_drmm2_run.path / "images").glob("images_reconstructions_*.png"))


def test_resume_from_another_architecture_is_refused(
    tmp_path: Path, tiny_drmm2_run: TrainedRun
) -> None:
    ckpt = tiny_drmm2_run.checkpoint
    with pytest.raises(ValueError, match="arch: checkpoint 'drmm2', config 'drmm5'"):
        train(tiny_config(tmp_path / "b", "model=drmm5", f"ckpt_path={ckpt}"))
    assert not (tmp_path / "b" / "labeled_indices.json").exists()


def test_ddp_cpu_two_processes_from_the_cli(tmp_path: Path, mnist: Path) -> None:
    result = run_cli("train", "trainer=ddp_cpu", "model=drmm2", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert "test/error" in result.stdout
    assert (run / "checkpoints" / "last.ckpt").is_file() and (
        run / "labeled_indices.json"
    ).is_file()
    assert (run / "train_ddp_process_1.log").is_file()  # the second rank ran in the same run dir


# What a one-batch run of a preset exercises: the code paths its config groups choose.
COMBINATION = ("model", "objective", "regime", "render", "data")


def combination(preset: str) -> tuple[str, ...]:
    """The preset's choice in each COMBINATION group, read off its composed config."""
    choices = compose_preset(preset).hydra.runtime.choices
    return tuple(str(choices[group]) for group in COMBINATION)


def one_batch_presets(data: str) -> list[str]:
    """One preset (the first by name) for each distinct combination of the `data` presets."""
    chosen: dict[tuple[str, ...], str] = {}
    for preset in options("experiment"):
        key = combination(preset)
        if key[-1] == data:
            chosen.setdefault(key, preset)
    return sorted(chosen.values())


# (data set, part, parts): MNIST's presets in two multiruns, which make test's workers share
@pytest.mark.parametrize("data,part,parts", [("mnist", 0, 2), ("mnist", 1, 2), ("cifar10", 0, 1)])
def test_one_preset_of_each_combination_runs_one_batch(
    data: str, part: int, parts: int, tmp_path: Path, mnist: Path
) -> None:
    """One multirun with fast_dev_run over one preset of each distinct combination of model,
    objective, regime, render path and data set, not over every preset: two presets that agree
    on all five run the same code for one batch and differ only in values (N_L, budgets, term
    weights and options), which every preset's composition and schema check
    (test_configs.py, test_tables.py) and the unit tests of each term cover. The combinations
    are read off the composed presets, so a new preset with a new combination runs here
    without an edit. CIFAR-10 presets run on the JPEG copy."""
    presets = one_batch_presets(data)[part::parts]
    assert presets, f"no {data} preset"
    extra = ["data=image_folder", "data.path=cifar10-jpeg"] if data == "cifar10" else []
    if extra:
        require_data("cifar10-jpeg/train")
    overrides = [
        f"experiment={','.join(presets)}",
        "debug=fdr",
        "callbacks.test_curve.every_n_steps=0",
    ]
    # the presets' own val_size=0 (N_L up to 60000); batches of 10: one batch runs each code path
    tiny = [o for o in TINY if "val" not in o and "batch_size" not in o]
    tiny += [f"data.{stream}_batch_size=10" for stream in ("labeled", "unlabeled", "eval")]
    result = run_cli("train", "-m", *overrides, *tiny, *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("[drmm] test/error") == len(presets)


def test_every_combination_of_the_presets_has_a_one_batch_run() -> None:
    """The one-batch runs above cover every combination some preset composes to: a preset on
    a data set other than MNIST and CIFAR-10 fails here until the test above runs its data."""
    every = {combination(preset) for preset in options("experiment")}
    chosen = {combination(p) for data in ("mnist", "cifar10") for p in one_batch_presets(data)}
    assert chosen == every
    assert {key[-1] for key in every} == {"mnist", "cifar10"}


def optuna_sweep(tmp_path: Path, *overrides: str):
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        pytest.skip("the optuna extra is not installed (pip install drmm-lightning[optuna])")
    tiny = [o for o in TINY if not o.startswith("data.val_size")]
    return run_cli(
        "train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "model=drmm2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *tiny,
        *overrides,
        cwd=tmp_path,
    )


def test_optuna_sweep_without_validation_split_is_refused_before_any_trial(
    tmp_path: Path, mnist: Path
) -> None:
    result = optuna_sweep(tmp_path, "data.val_size=0")
    assert result.returncode != 0
    assert "optimized_metric=val/acc_best needs a validation split" in result.stderr
    assert "Epoch" not in result.stderr + result.stdout  # no trial trained


def test_two_trial_optuna_sweep_returns_a_number(tmp_path: Path, mnist: Path) -> None:
    result = optuna_sweep(tmp_path, "data.val_size=100")
    assert result.returncode == 0, result.stderr[-3000:]
    found = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert isinstance(found["best_value"], float) and 0.0 <= found["best_value"] <= 1.0
    assert set(found["best_params"]) >= {"model.optimizer.lr", "objective.terms.kl.weight"}

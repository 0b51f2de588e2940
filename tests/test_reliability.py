"""Issue 31, points 1-3: what went wrong silently or was told the wrong way. Each case ends in a
refusal naming the key, job or file and the real cause, or in the right behaviour."""

from __future__ import annotations

import errno
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

import drmm_lightning.cli.train as train_module
import drmm_lightning.training.checkpointing as checkpointing
from drmm_lightning.cli import precision
from drmm_lightning.cli.config import check_types
from drmm_lightning.cli.render import check_judge, load_judge, render
from drmm_lightning.cli.train import SetupError, SweepRecord, validate
from drmm_lightning.data.datasets import ensure_files
from drmm_lightning.data.image_folder import load_image_folder
from drmm_lightning.data.root import DataNotFoundError

from .conftest import make_config

ROOT = Path(__file__).resolve().parent.parent


# ---- a sweep loses no job -----------------------------------------------------------------------


def sweep(monkeypatch, tmp_path: Path, ran: list[int], *overrides: str) -> None:
    """Run drmm-train -m in this process, `train` replaced by a recorder of the seeds it ran
    into `ran` that fails the jobs of seeds 1 and 2."""

    def fake_train(cfg):
        ran.append(cfg.seed)
        if cfg.seed == 1:  # refused when it starts, like a missing checkpoint
            raise SetupError(f"ckpt_path={tmp_path}/gone.ckpt: it does not exist.")
        if cfg.seed == 2:  # fails later, as inside the DataModule
            raise RuntimeError("decoding failed inside the DataModule")
        return {"val/acc_best": 1.0}

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(train_module, "SWEEP", SweepRecord())
    argv = ["drmm-train", "-m", *overrides, "logger=csv", "print_config=false"]
    monkeypatch.setattr(sys, "argv", [*argv, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    train_module.main()


def test_a_sweep_with_a_refused_job_is_refused_whole_before_any_job_starts(
    monkeypatch, tmp_path: Path
) -> None:
    """The issue's sweep: pseudo-labels cannot run in regime sup, so job 0 is named, job 1 (a
    valid run) is not, and nothing starts; before, job 0 stopped the sweep and job 1 never ran."""
    ran: list[int] = []
    with pytest.raises(SystemExit) as stopped:
        sweep(monkeypatch, tmp_path, ran, "objective=pseudo_label,vat", "regime=sup", "debug=fdr")
    assert ran == []
    message = str(stopped.value.code)
    assert "1 of the 2 jobs of this sweep would be refused, so none was started" in message
    assert "job 0 (objective=pseudo_label regime=sup debug=fdr" in message
    assert "pseudo_label needs labeled and unlabeled images" in message
    assert "job 1" not in message


def test_jobs_failing_as_they_run_do_not_stop_the_sweep_and_are_summed_up(
    monkeypatch, tmp_path: Path
) -> None:
    ran: list[int] = []
    with pytest.raises(SystemExit) as stopped:
        sweep(monkeypatch, tmp_path, ran, "seed=1,2,3")
    assert ran == [1, 2, 3]
    message = str(stopped.value.code)
    assert "2 job(s) of the sweep failed (1 of 3 jobs finished" in message
    assert re.search(r"job 0 \(seed=1 .*\): ckpt_path=.*gone.ckpt: it does not exist", message)
    assert re.search(r"job 1 \(seed=2 .*\): RuntimeError: decoding failed inside", message)
    assert "job 2" not in message


# ---- the judge ----------------------------------------------------------------------------------


def fake_checkpoint(path: Path, tags: list[str], test_error: float | None = None) -> Path:
    """A checkpoint file with what check_judge reads (a drmm5 of 10 steps); results.json of
    its run beside its checkpoints/ folder when `test_error` is given."""
    path.parent.mkdir(parents=True)
    run_config = {"tags": tags, "regime": {"name": "semi_sup"}, "data": {"num_labeled": 100}}
    checkpoint = {
        "state_dict": {},
        "hyper_parameters": {"arch": "drmm5"},
        "global_step": 10,
        "run_config": run_config,
    }
    torch.save(checkpoint, path)
    if test_error is not None:
        results = {"metrics": {"test/error": test_error}}
        (path.parent.parent / "results.json").write_text(json.dumps(results))
    return path


def render_config(tmp: Path, *overrides: str):
    cfg = make_config(tmp / "render", *overrides, name="render")
    with open_dict(cfg):
        cfg.out_dir = str(tmp / "pictures")
    return cfg


def test_a_checkpoint_that_is_not_a_judge_is_refused_as_judge(tmp_path: Path) -> None:
    drmm = fake_checkpoint(tmp_path / "drmm" / "checkpoints" / "last.ckpt", ["test"], 90.0)
    with pytest.raises(
        ValueError,
        match=rf"judge={re.escape(str(drmm))} is not a judge: it holds a drmm5 trained 10",
    ):
        render(render_config(tmp_path, f"ckpt_path={drmm}", f"judge={drmm}"))
    poor = fake_checkpoint(tmp_path / "poor" / "checkpoints" / "last.ckpt", ["judge"], 90.0)
    with pytest.raises(ValueError, match=r"too poor a judge: its run's test error is 90.00%"):
        check_judge(poor)
    good = fake_checkpoint(tmp_path / "good" / "checkpoints" / "last.ckpt", ["judge"], 0.69)
    check_judge(good)


def test_a_missing_judge_file_is_said_to_be_missing_under_its_option(tmp_path: Path) -> None:
    """Before: "not a readable checkpoint (truncated or corrupt: No such file ...). Delete it,
    or pass another with ckpt_path=<file>"."""
    missing = tmp_path / "judge" / "last.ckpt"
    for attempt in (
        lambda: load_judge(str(missing)),
        lambda: render(render_config(tmp_path, f"ckpt_path={missing}", f"judge={missing}")),
    ):
        with pytest.raises(FileNotFoundError) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith(f"judge={missing}: ") and "does not exist" in message
        assert "corrupt" not in message and "ckpt_path" not in message


# ---- images of every mode -----------------------------------------------------------------------


def write_folder(root: Path, images: dict[str, Image.Image]) -> None:
    """train/ and test/ with one class folder holding `images` (name: PIL image) as PNGs."""
    for split in ("train", "test"):
        folder = root / split / "a"
        folder.mkdir(parents=True)
        for name, image in images.items():
            image.save(folder / f"{name}.png")


def test_pngs_of_mixed_modes_and_16_bits_decode_to_the_data_sets_channels(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("DRMM_CACHE_DIR", str(tmp_path / "cache"))
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    base = Image.fromarray(grey, "L")
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # I;16, the same values at 16 bits
    assert sixteen.mode == "I;16"
    grey_modes = {"L": base, "I16": sixteen, "1": base.convert("1"), "LA": base.convert("LA")}
    write_folder(tmp_path / "grey", grey_modes)
    data = load_image_folder(tmp_path / "grey" / "train")
    assert data.images.dtype == torch.uint8 and data.images.shape == (4, 1, 8, 8)
    by_name = dict(zip(("1", "I16", "L", "LA"), data.images, strict=True))  # sorted file names
    assert torch.equal(by_name["I16"][0], torch.from_numpy(grey))  # 16 bits scaled to 8
    assert torch.equal(by_name["LA"][0], torch.from_numpy(grey))
    colour = {**grey_modes, "RGB": base.convert("RGB"), "P": base.convert("RGB").convert("P")}
    colour["P"] = base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    colour["RGBA"] = base.convert("RGBA")
    write_folder(tmp_path / "colour", colour)
    data = load_image_folder(tmp_path / "colour" / "train")
    assert data.images.shape == (7, 3, 8, 8)
    assert all(torch.equal(image[1], torch.from_numpy(grey)) for image in data.images[1:])


# ---- messages that point the right way ----------------------------------------------------------


def test_a_rename_across_filesystems_is_named_as_such(tmp_path: Path, monkeypatch) -> None:
    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(source), None, str(target))

    monkeypatch.setattr(checkpointing.os, "replace", cross_device)
    target = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(OSError) as failed:
        checkpointing.AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, target)
    message = str(failed.value)
    assert f"onto {target}" in message and "crosses filesystems (EXDEV)" in message
    assert "full disk" not in message and "MiB free" not in message
    assert list(target.parent.iterdir()) == []  # the written file is gone


def test_cifar10_missing_names_the_jpeg_copy_beside_it(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / "cifar10-jpeg" / split / "cat").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # not a copy of CIFAR-10
    with pytest.raises(DataNotFoundError) as missing:
        ensure_files("cifar10", tmp_path, download=False)
    message = str(missing.value)
    assert "cifar-10-batches-py" in message
    assert f"{tmp_path} holds an image-folder copy of it (cifar10-jpeg" in message
    assert "data=image_folder data.path=cifar10-jpeg" in message and "MNIST" not in message


def test_the_readmes_examples_of_a_wrong_type_are_refused_as_wrong_types(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    sentence = re.search(r"a wrong type\s+\(([^)]*)\)", readme)
    assert sentence, "README: the sentence on wrong types is gone"
    examples = re.findall(r"`([^`]+=abc)`", sentence.group(1))
    assert len(examples) >= 2
    for example in examples:
        cfg = make_config(tmp_path / example.strip("+"), example)
        with pytest.raises(ValueError) as refused:
            check_types(cfg)
        key = example.lstrip("+").split("=")[0]
        assert str(refused.value).startswith(f"{key}='abc': "), example  # its type, not its name


def test_an_explicit_bf16_without_native_bf16_is_warned_of_once(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv(precision.NATIVE_BF16_ENV, raising=False)  # the detection, not the override
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "_warned", set())
    cfg = make_config(tmp_path / "a", "precision=bf16")
    with pytest.warns(UserWarning, match=r"precision=bf16 .*emulated.*Use precision=auto"):
        validate(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(cfg)  # once
        validate(make_config(tmp_path / "b", "precision=auto"))  # auto: fp32 here, no word
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
        monkeypatch.setattr(precision, "_warned", set())
        validate(make_config(tmp_path / "c", "precision=bf16"))  # native: no word

"""Every config value is checked by a schema (cli/schema.py) before any data is read: a wrong
type names the key and the type expected, in every group; an unknown key is named with the
valid ones; the schemas come from the constructors' signatures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drmm_lightning.cli.config import check_types
from drmm_lightning.cli.schema import EvalConfig, config_type, target_schema

from .conftest import make_config

ROOT = Path(__file__).resolve().parent.parent

# One wrong-typed value per group (render: the render group's keys are model.arch_kwargs).
WRONG = [
    ("data", "+data.max_shift=abc", "data.max_shift='abc'", "Integer"),
    ("data", "data.standardize=abc", "data.standardize='abc'", "bool"),
    ("data", "+data.hflip=abc", "data.hflip='abc'", "bool"),
    ("data", "data.num_labeled=100.5", "data.num_labeled=100.5", "Integer"),
    ("model", "model.check_every=often", "model.check_every='often'", "Integer"),
    ("model", "model.optimizer.lr=fast", "model.optimizer.lr='fast'", "Float"),
    ("objective", "objective.terms.kl.weight=high", "objective.terms.kl.weight='high'", "Float"),
    ("objective", "+objective.terms.vat.eps=far", "objective.terms.vat.eps='far'", "Float"),
    ("objective", "objective.posterior_grad=maybe", "objective.posterior_grad='maybe'", "bool"),
    ("trainer", "trainer.max_steps=1.5", "trainer.max_steps=1.5", "Integer"),
    (
        "callbacks",
        "callbacks.step_checkpoint.every_n_train_steps=abc",
        "callbacks.step_checkpoint.every_n_train_steps='abc'",
        "Integer",
    ),
    ("render", "model.arch_kwargs.leak=abc", "model.arch_kwargs.leak='abc'", "Float"),
    ("regime", "regime.pretrain_epochs=two", "regime.pretrain_epochs='two'", "Integer"),
    ("top", "seed=abc", "seed='abc'", "Integer"),
    ("top", "test_ckpt=worst", "test_ckpt='worst'", "valid: best, last"),
]


@pytest.mark.parametrize("group,override,named,expected", WRONG, ids=[w[1] for w in WRONG])
def test_a_wrong_type_names_its_key_and_the_type(
    group: str, override: str, named: str, expected: str, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path / "run", override)
    with pytest.raises(ValueError) as error:
        check_types(cfg)
    assert named in str(error.value) and expected in str(error.value)


def test_the_default_config_passes(tmp_path: Path) -> None:
    check_types(make_config(tmp_path / "run"))


@pytest.mark.parametrize("override", ["+data.foo=1", "+trainer.bogus=1", "+objective.wieghts=1"])
def test_an_unknown_key_is_named_with_the_valid_ones(override: str, tmp_path: Path) -> None:
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ValueError, match=rf"Unknown setting {key}; valid keys here: .*\w"):
        check_types(make_config(tmp_path / "run", override))


def test_schemas_follow_the_constructors_signatures() -> None:
    """Nothing to keep in step by hand: a new constructor argument is in the schema."""
    data = target_schema("drmm_lightning.data.DRMMDataModule")
    fields = data.__dataclass_fields__  # type: ignore[union-attr]
    assert fields["max_shift"].type is int and fields["mean"].type == list[float] | None
    images = target_schema("drmm_lightning.training.callbacks.GenerativeImages")
    assert images.__dataclass_fields__["what"].type == list[str]  # type: ignore[union-attr]
    assert config_type(float | None) == float | None
    assert config_type(Any) is Any and config_type(bool | str) == bool | str


@pytest.mark.slow
def test_a_wrong_type_stops_the_cli_before_any_data_is_read(tmp_path: Path) -> None:
    empty = tmp_path / "no_data"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DRMM_DATA_DIR": str(empty)}
    command = [sys.executable, "-m", "drmm_lightning.train", "+data.max_shift=abc", "logger=csv"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "data.max_shift='abc'" in result.stderr and "Integer" in result.stderr
    assert list(empty.iterdir()) == []  # nothing downloaded or read
    assert not (tmp_path / "outputs" / "train" / "runs").exists() or not list(
        (tmp_path / "outputs" / "train" / "runs").iterdir()
    )


def test_the_eval_config_is_checked_too(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "run", "ckpt_path=x.ckpt", "trainer.max_steps=1.5", name="eval")
    with pytest.raises(ValueError, match="trainer.max_steps=1.5"):
        check_types(cfg, EvalConfig)
    check_types(make_config(tmp_path / "run", "ckpt_path=x.ckpt", name="eval"), EvalConfig)


def test_a_choice_the_schema_cannot_type_is_checked_where_it_is_used() -> None:
    """logger.wandb.offline is true, false or auto: a string the schema lets through is refused
    by the logger's factory (a string was taken as true)."""
    from drmm_lightning.training.loggers import wandb_logger

    with pytest.raises(ValueError, match="logger.wandb.offline='maybe'; valid: true, false, auto"):
        wandb_logger(offline="maybe")

"""Every config group option and experiment preset composes and instantiates; bad names fail."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from drmm_lightning.cli.config import GROUPS, check_overrides, options
from drmm_lightning.training import DRMMLitModule

from .conftest import make_config, run_cli

NEEDS_GPU = {("trainer", "gpu"), ("trainer", "ddp")}
CHOICES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    for group in ("data", "model", "objective", "regime", "trainer", "logger", "debug"):
        assert options(group), group
    assert {"rfm", "drfm2", "drmm2", "drmm5", "drmm9"} <= set(options("model"))
    assert {"drmm", "nn_kl", "dcn", "entropy_only"} <= set(options("objective"))
    assert {"sup", "unsup_pretr", "semi_sup"} == set(options("regime"))
    assert {"cpu", "gpu", "ddp", "ddp_cpu"} <= set(options("trainer"))
    assert {"wandb", "csv", "tensorboard", "none"} <= set(options("logger"))


@pytest.mark.parametrize("group,option", CHOICES, ids=[f"{g}={o}" for g, o in CHOICES])
def test_option_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    if (
        group == "hparams_search"
        and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None
    ):
        pytest.skip("the optuna extra is not installed (pip install drmm-lightning[optuna])")
    cfg = make_config(tmp_path / "run", f"{group}={option}")
    hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(
        cfg.model,
        in_channels=3 if cfg.data.name in ("cifar10", "image_folder") else 1,
        num_classes=10,
        image_size=32 if cfg.data.name in ("cifar10", "image_folder") else 28,
        objective=OmegaConf.to_container(cfg.objective),
        _convert_="partial",
    )
    assert isinstance(module, DRMMLitModule)
    module.build_optimizers(total_steps=10)
    for conf in (cfg.get("callbacks") or {}).values():
        hydra.utils.instantiate(conf)
    for conf in (cfg.get("logger") or {}).values():
        if "_target_" in conf and "Wandb" not in conf._target_ and "wandb" not in conf._target_:
            hydra.utils.instantiate(conf)
    if (group, option) not in NEEDS_GPU or torch.cuda.is_available():
        hydra.utils.instantiate(cfg.trainer)


def test_eval_config_composes(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "run", "ckpt_path=x.ckpt", name="eval")
    assert cfg.ckpt_path == "x.ckpt" and cfg.data == {}


@pytest.mark.parametrize(
    "override,names",
    [
        ("model=resnet", ["drmm5", "drmm9", "rfm"]),
        ("regime=supervised", ["sup", "semi_sup", "unsup_pretr"]),
        ("experiment=paper/table9", ["paper/"]),
        ("objective=drmm,bogus", ["nn_kl", "dcn"]),
    ],
)
def test_unknown_group_choice_lists_valid_names(override: str, names: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        check_overrides([override, "seed=1"])
    message = str(info.value)
    assert "Unknown" in message and all(name in message for name in names)


def test_valid_and_sweep_overrides_pass() -> None:
    check_overrides(
        ["model=drmm5,drmm2", "seed=1,2,3", "data.num_labeled=600", "experiment=glob(*)"]
    )


@pytest.mark.slow
def test_cli_rejects_unknown_model_before_any_work(tmp_path: Path) -> None:
    result = run_cli("train", "model=resnet", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "Unknown model 'resnet'" in result.stderr and "drmm5" in result.stderr
    assert not (tmp_path / "outputs").exists()

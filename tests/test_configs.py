"""Every config group option and experiment preset composes and instantiates; bad names fail."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from drmm_lightning.cli.config import GROUPS, check_overrides, check_types, options
from drmm_lightning.cli.eval import evaluate
from drmm_lightning.cli.train import train
from drmm_lightning.training import DRMMLitModule

from .conftest import make_config, run_cli, tiny_config

NEEDS_GPU = {("trainer", "gpu"), ("trainer", "ddp")}
CHOICES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    for group in ("data", "model", "objective", "render", "regime", "trainer", "logger", "debug"):
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
    check_types(cfg)  # every shipped config passes the schemas
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
    module.build_optimizers(lambda: 10)
    for conf in (cfg.get("callbacks") or {}).values():
        hydra.utils.instantiate(conf)
    for conf in (cfg.get("logger") or {}).values():
        if "_target_" in conf and "Wandb" not in conf._target_ and "wandb" not in conf._target_:
            hydra.utils.instantiate(conf)
    if (group, option) not in NEEDS_GPU or torch.cuda.is_available():
        hydra.utils.instantiate(cfg.trainer)


def test_eval_config_composes_and_names_a_missing_checkpoint(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "run", f"ckpt_path={tmp_path / 'x.ckpt'}", name="eval")
    assert cfg.data == {}  # the checkpoint's own data config is used
    hydra.utils.instantiate(cfg.trainer)
    with pytest.raises((FileNotFoundError, ValueError), match="x.ckpt"):
        evaluate(cfg)


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


def test_exponential_schedule_reaches_final_lr() -> None:
    from drmm_lightning.training.schedules import exponential_to

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    scheduler = exponential_to(optimizer, final_lr=1e-6, total_steps=10)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3) and rates[5] == pytest.approx(1e-3 * 1e-3**0.5)
    assert rates[10] == pytest.approx(1e-6) and rates[11] == pytest.approx(1e-6)


def test_run_directories_of_simultaneous_jobs_differ(tmp_path: Path) -> None:
    """Two processes started in the same second resolve different run directories."""
    code = (
        "from drmm_lightning.cli.config import CONF_DIR; from omegaconf import OmegaConf; "
        "from hydra.core.utils import setup_globals; setup_globals(); "
        "print(OmegaConf.create({'d': '${now:%S}_${uid:}'}).d)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    names = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert names[0] != names[1] and all(len(n.split("_")[1]) == 6 for n in names)
    cfg = make_config(tmp_path / "run")
    assert re.search(r"_[0-9a-f]{6}$", cfg.hydra.run.dir), cfg.hydra.run.dir


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(root), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("drmm_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for group in ("train", "eval", "render"):
        assert f"drmm_lightning/conf/{group}.yaml" in names
    presets = [n for n in names if n.startswith("drmm_lightning/conf/experiment/paper/")]
    assert len(presets) == len(list((root / "conf" / "experiment" / "paper").glob("*.yaml")))


def test_negative_objective_weight_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="objective.terms.kl.weight must be >= 0"):
        train(tiny_config(tmp_path / "run", "objective.terms.kl.weight=-0.5"))
    assert not (tmp_path / "run" / "labeled_indices.json").exists()

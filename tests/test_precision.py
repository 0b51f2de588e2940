"""The default precision (issue 20): precision=auto resolves to bf16 autocast + channels-last where
the device computes bf16 natively and to fp32 where it does not; both train an EG step to finite
losses of the same magnitude."""

from __future__ import annotations

import math

import pytest
import torch

from drmm_lightning.cli import precision
from drmm_lightning.data import DRMMDataModule
from drmm_lightning.training import DRMMLitModule

from .conftest import make_config
from .test_data import quiet_trainer, synthetic


@pytest.fixture(autouse=True)
def detect(monkeypatch) -> None:
    """These tests check the detection itself: a suite run with DRMM_NATIVE_BF16 set (README,
    "Tests") must not answer for it."""
    monkeypatch.delenv(precision.NATIVE_BF16_ENV, raising=False)


@pytest.mark.parametrize("native", [True, False])
def test_default_config_resolves_precision_by_what_the_cpu_supports(
    tmp_path, monkeypatch, native: bool
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    cfg = make_config(tmp_path)
    assert cfg.precision == "auto"
    assert cfg.trainer.precision == ("bf16-mixed" if native else "32-true")
    assert cfg.model.channels_last is native


def test_fp32_and_bf16_are_one_override_away(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    cfg = make_config(tmp_path, "precision=fp32")
    assert (cfg.trainer.precision, cfg.model.channels_last) == ("32-true", False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    cfg = make_config(tmp_path, "precision=bf16")  # asked for by name: honoured, if emulated
    assert (cfg.trainer.precision, cfg.model.channels_last) == ("bf16-mixed", True)


@pytest.mark.parametrize("native", [True, False])
def test_native_bf16_env_variable_overrides_the_detection(
    tmp_path, monkeypatch, native: bool
) -> None:
    """DRMM_NATIVE_BF16=0 makes precision=auto fp32 on a bf16 CPU (how the suite is timed as on
    an fp32-only machine), =1 the reverse; precisions named explicitly are unaffected."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: not native)
    monkeypatch.setenv(precision.NATIVE_BF16_ENV, "1" if native else "0")
    cfg = make_config(tmp_path)
    assert cfg.trainer.precision == ("bf16-mixed" if native else "32-true")
    assert cfg.model.channels_last is native
    assert precision.NATIVE_BF16_ENV in precision.describe("auto", "cpu")
    assert precision.trainer_precision("bf16", "cpu") == "bf16-mixed"
    assert precision.trainer_precision("fp32", "cpu") == "32-true"
    monkeypatch.setenv(precision.NATIVE_BF16_ENV, "no")
    with pytest.raises(ValueError, match="DRMM_NATIVE_BF16='no'; valid: 0"):
        precision.trainer_precision("auto", "cpu")


def test_gpu_precision_follows_cuda_bf16_support(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.trainer_precision("auto", "gpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.trainer_precision("auto", "gpu") == "bf16-mixed"


def test_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="precision='half'; valid: auto, bf16, fp32"):
        precision.trainer_precision("half", "cpu")


def synthetic_dm() -> DRMMDataModule:
    """40 random 28x28 training images of 4 classes (20 labeled), batches of 8 + 8."""
    train, test = synthetic(per_class=10, size=28), synthetic(per_class=5, size=28, seed=1)
    return DRMMDataModule(
        "mnist", data=(train, test), num_labeled=20, labeled_batch_size=8, unlabeled_batch_size=8
    )


def eg_step_loss(tmp_path, native: bool, monkeypatch) -> float:
    """One EG training step through Lightning at what precision=auto resolves to."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    cfg = make_config(tmp_path)
    torch.manual_seed(0)
    module = DRMMLitModule(
        arch="drmm2",
        num_classes=4,
        arch_kwargs={"render_path": "normalized", "leak": 0.1},
        channels_last=cfg.model.channels_last,
    )
    trainer = quiet_trainer(tmp_path, max_steps=1, precision=cfg.trainer.precision)
    trainer.fit(module, datamodule=synthetic_dm())
    return float(trainer.callback_metrics["train/loss"])


def test_one_eg_step_in_each_precision_gives_finite_losses_of_one_magnitude(
    tmp_path, monkeypatch
) -> None:
    bf16 = eg_step_loss(tmp_path / "bf16", True, monkeypatch)
    fp32 = eg_step_loss(tmp_path / "fp32", False, monkeypatch)
    assert math.isfinite(bf16) and math.isfinite(fp32)
    assert 0.5 < bf16 / fp32 < 2.0

"""The speed settings (issue 10) change how fast, never what: device-resident batches equal the
DataLoader's, channels-last and the scatter unpooling give the same numbers, bf16 autocast runs
the render path, the checks every N steps still name the first bad step, compile runs a step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from drmm_lightning.data import DRMMDataModule
from drmm_lightning.data.loaders import DeviceLoader
from drmm_lightning.data.samplers import StreamSampler
from drmm_lightning.models import build_model
from drmm_lightning.models.layer import unpool
from drmm_lightning.training import DRMMLitModule, NonFiniteLossError
from drmm_lightning.training.objective import EGObjective

from .test_data import make_dm, quiet_trainer, synthetic, trainer_stub


def raw_batches(dm, epoch: int) -> list:
    """One epoch of training batches as served (before on_after_batch_transfer)."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a.equal(b)


@pytest.mark.parametrize("regime", ["semi_sup", "sup", "unsup"])
def test_device_loader_yields_the_dataloaders_batches(regime: str) -> None:
    loader_dm, device_dm = (make_dm(regime=regime, on_device=flag) for flag in (False, True))
    assert isinstance(device_dm.train_dataloader(), DeviceLoader)
    assert not isinstance(loader_dm.train_dataloader(), DeviceLoader)
    for epoch in (0, 1):
        expected, served = raw_batches(loader_dm, epoch), raw_batches(device_dm, epoch)
        assert len(served) == len(expected) == len(device_dm.train_dataloader()) > 1
        assert_same(served, expected)
    assert_same(list(device_dm.test_dataloader()), list(loader_dm.test_dataloader()))


def test_device_loader_resumes_mid_epoch_like_the_dataloader() -> None:
    """The place in the epoch comes back through the DataModule's state, whichever loader."""
    loaders = []
    for flag in (False, True):
        dm = make_dm(on_device=flag)
        dm.load_state_dict(
            {"split": dm.state_dict()["split"], "position": {"epoch": 1, "batches": 3}}
        )
        loaders.append(dm.train_dataloader())
        assert isinstance(loaders[-1].sampler, StreamSampler)
        loaders[-1].sampler.set_epoch(1)
    expected, served = (list(loader) for loader in loaders)
    assert len(served) == len(loaders[0]) - 3
    assert_same(served, expected)


def test_on_device_auto_uses_the_dataloader_on_cpu_and_bad_values_are_refused() -> None:
    dm = make_dm()  # on_device="auto"
    dm.trainer = trainer_stub()
    assert not isinstance(dm.train_dataloader(), DeviceLoader)
    with pytest.raises(ValueError, match="on_device must be true, false or auto"):
        make_dm(on_device="gpu")


def test_unpool_equals_max_unpool_in_both_layouts_and_keeps_dtype() -> None:
    for size in (8, 9):
        x = torch.randn(2, 3, size, size)
        pooled, t = F.max_pool2d(x, 2, return_indices=True)
        expected = F.max_unpool2d(pooled, t, (2, 2), output_size=(size, size))
        assert unpool(pooled, t, (size, size)).equal(expected)
        last = pooled.contiguous(memory_format=torch.channels_last)
        assert unpool(last, t, (size, size)).equal(expected)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert unpool(last.bfloat16(), t, (size, size)).dtype == torch.bfloat16


@pytest.mark.parametrize("path", ["adjoint", "normalized"])
def test_channels_last_gives_the_same_step(path: str) -> None:
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    results = []
    for channels_last in (False, True):
        torch.manual_seed(1)
        module = DRMMLitModule(
            arch="drmm5_nrm", arch_kwargs={"render_path": path}, channels_last=channels_last
        )
        loss = module.training_step({"labeled": (x[:4], y[:4]), "unlabeled": x[4:]}, 0)
        loss.backward()
        grad = module.net.rendering_layers[0].conv.weight.grad
        assert grad is not None
        results.append((loss.detach(), grad))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", ["adjoint", "normalized", "rms"])
def test_bf16_autocast_runs_an_eg_step_through_the_render_path(path: str) -> None:
    torch.manual_seed(0)
    model = build_model("drmm5_nrm", render_path=path).to(memory_format=torch.channels_last)
    x = torch.rand(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = EGObjective()(model, (x[:4], y), x[4:])
        rendered = model.render(model.infer(x)).image
    out.loss.backward()
    assert rendered.shape == x.shape and rendered.dtype == torch.bfloat16
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


class PoisonBatch(L.Callback):
    """Puts a NaN into the labeled images of one training step."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.checked_at: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            batch["labeled"][0][0, 0, 0, 0] = float("nan")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.checked_at = trainer.global_step


def test_nan_is_caught_naming_its_step_when_checked_every_n_steps(tmp_path) -> None:
    train, test = synthetic(per_class=30, size=28), synthetic(per_class=5, size=28, seed=1)
    dm = DRMMDataModule(
        "mnist", data=(train, test), num_labeled=20, labeled_batch_size=8, unlabeled_batch_size=8
    )
    module = DRMMLitModule(arch="drmm2", num_classes=4, check_every=5)
    poison = PoisonBatch(step=6)
    trainer = quiet_trainer(tmp_path, max_steps=12, limit_train_batches=None, callbacks=[poison])
    with pytest.raises(NonFiniteLossError, match=r"global step 6 \(epoch 0\).*cross_entropy"):
        trainer.fit(module, datamodule=dm)
    assert poison.checked_at == 9  # the check of steps 5-9 found it: one host sync per 5 steps


def test_nan_loss_stops_at_once_with_check_every_1() -> None:
    module = DRMMLitModule(arch="drmm2", check_every=1)
    x = torch.rand(4, 1, 28, 28)
    x[0, 0, 0, 0] = float("nan")
    batch = {"labeled": (x, torch.tensor([0, 1, 2, 3])), "unlabeled": torch.rand(4, 1, 28, 28)}
    with pytest.raises(NonFiniteLossError, match=r"global step 0.*cross_entropy"):
        module.training_step(batch, 0)


def test_check_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="check_every must be >= 1"):
        DRMMLitModule(arch="drmm2", check_every=0)


@pytest.mark.slow
def test_compiled_objective_runs_a_step_on_cpu() -> None:
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (4,))
    batch = {"labeled": (x[:4], y), "unlabeled": x[4:]}
    eager = DRMMLitModule(arch="drmm2")
    compiled = DRMMLitModule(arch="drmm2", compile=True)
    compiled.load_state_dict(eager.state_dict())
    expected = eager.training_step(batch, 0)
    loss = compiled.training_step(batch, 0)
    loss.backward()
    assert torch.allclose(loss, expected, rtol=1e-4)
    assert compiled.net.classifier.weight.grad is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged

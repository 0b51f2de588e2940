"""The generative side: samples from the priors, class appearance models, drmm-render."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from drmm_lightning.cli.render import render
from drmm_lightning.data import DRMMDataModule
from drmm_lightning.models import DRMM, build_model, class_appearance
from drmm_lightning.training import EGObjective

from .conftest import TrainedRun, make_config, require_data


def trained_priors_model(name: str = "drmm5") -> DRMM:
    """A model whose switch priors moved away from their start (a few training-mode passes)."""
    torch.manual_seed(0)
    model = build_model(name)
    for _ in range(5):
        model.infer(torch.rand(16, 1, 28, 28))
    return model.eval()


@pytest.mark.parametrize("name", ["drmm5", "drmm2", "rfm"])
def test_samples_shape_and_determinism(name: str) -> None:
    model = trained_priors_model(name)
    classes = torch.tensor([0, 1, 2, 3])
    first = model.sample(classes, torch.Generator().manual_seed(7)).image
    again = model.sample(classes, torch.Generator().manual_seed(7)).image
    other = model.sample(classes, torch.Generator().manual_seed(8)).image
    assert first.shape == (4, 1, 28, 28)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_samples_differ_between_classes() -> None:
    model = trained_priors_model()
    generator = torch.Generator().manual_seed(0)
    image = model.sample(torch.tensor([0, 1]), generator).image
    # the same switches for both rows isolate the class: render one draw with both templates
    inference = model.sampled_inference(1, torch.Generator().manual_seed(0))
    both = [model.render(inference, torch.tensor([c])).image for c in (0, 1)]
    assert not torch.allclose(both[0], both[1]) and not torch.allclose(image[0], image[1])


def test_sampled_switches_respect_the_priors() -> None:
    model = trained_priors_model()
    layer = model.rendering_layers[0]  # 32 5x5 full + 2x2 max-pool
    layer.prior_a[:8] = 0.0  # channels 0-7 never on
    layer.prior_a[8:16] = 1.0  # channels 8-15 always on
    layer.prior_t.zero_()
    layer.prior_t[..., 3] = 1.0  # always the bottom-right position of each window
    switches = layer.sample_switches(6, torch.Generator().manual_seed(0))
    assert not switches.a[:, :8].any() and switches.a[:, 8:16].all()
    assert switches.t is not None  # a max-pooling layer
    rows = switches.t.div(layer.conv_size, rounding_mode="floor")
    cols = switches.t % layer.conv_size
    assert ((rows % 2 == 1) & (cols % 2 == 1)).all()
    # and the positions are inside their own windows
    h = torch.arange(rows.shape[2]).view(1, 1, -1, 1)
    assert (rows.div(2, rounding_mode="floor") == h).all()


def test_priors_track_the_inferred_switches() -> None:
    layer = build_model("drmm2").train().rendering_layers[0]
    before_a, before_t = layer.prior_a.clone(), layer.prior_t.clone()
    _, switches = layer.bottom_up(torch.rand(32, 1, 28, 28))
    assert torch.allclose(
        layer.prior_a, before_a.lerp(switches.a.float().mean(0), layer.prior_momentum)
    )
    assert not torch.allclose(layer.prior_t, before_t)
    assert torch.allclose(layer.prior_t.sum(-1), torch.ones(()))
    layer.eval()
    layer.bottom_up(torch.rand(4, 1, 28, 28))  # evaluation never moves the priors
    assert torch.allclose(
        layer.prior_a, before_a.lerp(switches.a.float().mean(0), layer.prior_momentum)
    )


@pytest.fixture(scope="module")
def mnist_model():
    """drmm2 trained for 300 EG steps on labeled MNIST batches, and the test images."""
    require_data("MNIST/raw/train-images-idx3-ubyte")
    torch.manual_seed(0)
    dm = DRMMDataModule(
        "mnist", num_labeled=60000, regime="sup", labeled_batch_size=64, download=False
    )
    dm.setup()
    model = build_model("drmm2")
    objective, optimizer = EGObjective(), torch.optim.Adam(model.parameters(), 1e-3)
    for i, batch in enumerate(dm.train_dataloader()):
        loss = objective(model, dm.on_after_batch_transfer(batch, 0)["labeled"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i == 300:
            break
    return model.eval(), dm.transform(dm.test_data.images, train=False), dm.test_data.labels


@pytest.mark.slow
@pytest.mark.real_data
def test_class_appearance_is_classified_and_beats_the_mean_image(mnist_model) -> None:
    model, images, labels = mnist_model
    for c in range(10):
        mean_image = images[labels == c].mean(0)
        appearance = class_appearance(model, c, norm=mean_image.norm().item())
        assert appearance.norm().item() == pytest.approx(mean_image.norm().item(), rel=1e-4)
        with torch.no_grad():
            scores = model(torch.stack([appearance, mean_image]))
        assert scores[0].argmax().item() == c
        assert scores[0, c] >= scores[1, c]


@pytest.fixture
def short_run(tiny_drmm2_run: TrainedRun) -> Path:
    """The checkpoint of drmm2 trained for 3 steps (shared with other modules: conftest.py)."""
    return tiny_drmm2_run.checkpoint


def render_config(tmp: Path, *overrides: str):
    cfg = make_config(tmp / "render", *overrides, name="render")
    with open_dict(cfg):
        cfg.out_dir = str(tmp / "pictures")
    return cfg


@pytest.mark.slow
@pytest.mark.real_data
def test_render_command_writes_every_kind(short_run: Path, tmp_path: Path) -> None:
    paths = render(
        render_config(tmp_path, f"ckpt_path={short_run}", "num_images=16", "per_class=4")
    )
    names = {p.stem for p in paths}
    kinds = {"reconstructions", "templates", "samples", "filters", "classes"}
    assert kinds | {"layer_1", "layer_2"} == names
    cell = 28 + 1  # a 28x28 tile and its one-pixel border
    expected = {
        "reconstructions": (8 * cell + 1, 4 * cell + 1),  # 16 inputs above 16 renderings
        "templates": (10 * cell + 1, 2 * cell + 1),  # closed form above gradient ascent
        "samples": (4 * cell + 1, 10 * cell + 1),  # a row per class
        "filters": (16 * (5 + 1) + 1, 2 * (5 + 1) + 1),  # 32 5x5 filters
        "classes": (11 * cell + 1, 8 * cell + 1),  # 8 images, each then its 10 class renders
    }
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            if path.stem in expected:
                assert image.size == expected[path.stem], path.stem


@pytest.mark.slow
@pytest.mark.real_data
def test_render_command_bad_input(short_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render(render_config(tmp_path, f"ckpt_path={tmp_path / 'missing.ckpt'}"))
    with pytest.raises(ValueError, match="Unknown or empty what.*valid: reconstructions"):
        render(render_config(tmp_path, f"ckpt_path={short_run}", "what=portraits"))
    with pytest.raises(ValueError, match=r"Class index \[10\] out of range.*10 classes"):
        render(render_config(tmp_path, f"ckpt_path={short_run}", "what=samples", "classes=[3,10]"))

"""drmm-probe (issue 29, part 2): the linear probes report what a feature set holds (a planted
linear nuisance R^2 near 1, noise near 0; separable classes near 1, noise near chance), every
layer's features come out with the right shapes, and the command end to end writes probe.json
with a value for every layer and variable, or refuses a missing or corrupt checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from drmm_lightning.data.nuisances import NuisanceConfig
from drmm_lightning.models import build_model
from drmm_lightning.probing import ProbeSettings, feature_names, layer_features, probe_features

from .conftest import TrainedRun, make_config, train_once

FAST = ProbeSettings(components=64, max_iter=300)


def planted(n: int, dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, dim): a nuisance y in [-1, 1] mixed linearly with 7 other latents into
    `dim` units, plus unit noise; and y."""
    latents = torch.rand(n, 8, generator=generator) * 2 - 1
    mixing = torch.randn(8, dim, generator=generator) * 3
    return latents @ mixing + torch.randn(n, dim, generator=generator), latents[:, 0]


def labels_of(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=generator)


@pytest.mark.parametrize("dim", [40, 300])  # below and above `components` (PCA reduces it)
def test_a_planted_linear_nuisance_is_decoded_and_noise_is_not(dim: int) -> None:
    g = torch.Generator().manual_seed(0)
    both, y = planted(1200, dim, g)  # one mixing for both sets: drawn as one, then split
    train, test, y_train, y_test = both[:800], both[800:], y[:800], y[800:]
    noise = torch.randn(1200, 1, generator=g).squeeze(1)
    nuisances = ({"y": y_train, "noise": noise[:800]}, {"y": y_test, "noise": noise[800:]})
    labels = (labels_of(800, g), labels_of(400, g))
    scores = probe_features(train, test, labels, nuisances, FAST)
    assert scores["y"] > 0.95
    assert abs(scores["noise"]) < 0.05  # held out: no overfitting its way to a high R^2
    assert scores["class"] < 0.2  # labels independent of the features: chance is 0.1


def test_separable_classes_are_decoded_and_noise_classes_are_not() -> None:
    g = torch.Generator().manual_seed(2)
    means = torch.randn(10, 50, generator=g) * 4
    labels = labels_of(1000, g)
    features = means[labels] + torch.randn(1000, 50, generator=g)
    split = (labels[:700], labels[700:])
    separable = probe_features(features[:700], features[700:], split, ({}, {}), FAST)
    assert separable == {"class": pytest.approx(separable["class"])}  # no nuisances asked for
    assert separable["class"] > 0.95
    noise = torch.randn(1000, 50, generator=g)
    chance = probe_features(noise[:700], noise[700:], split, ({}, {}), FAST)
    assert chance["class"] < 0.2


def test_layer_features_hold_the_image_every_layer_and_its_switches() -> None:
    model = build_model("drmm2", image_size=40).eval()
    names = feature_names(model)
    assert names == ["image", "layer1", "a1", "t1", "layer2", "a2", "t2"]
    images = torch.randn(7, 1, 40, 40)
    features = layer_features(model, images, batch_size=3)
    assert list(features) == names
    hidden, switches = model.bottom_up(images)
    assert torch.equal(features["image"], images.flatten(1))
    assert torch.allclose(features["layer2"], hidden[1].flatten(1))
    assert torch.equal(features["a1"], switches[0].a.flatten(1).float())
    one_hot = features["t1"].view(7, -1, 4)  # one 1 among the 4 positions of every window
    assert torch.equal(one_hot.sum(-1), torch.ones(7, one_hot.shape[1]))
    assert feature_names(model, ["a"]) == ["a1", "a2"]
    with pytest.raises(ValueError, match="pick one or more of"):
        feature_names(model, ["switches"])


def probe_config(tmp_path: Path, ckpt: Path, *overrides: str):
    return make_config(
        tmp_path / "unused",
        f"ckpt_path={ckpt}",
        "train_size=150",
        "test_size=100",
        "components=32",
        "class_C=[0.1]",
        f"out_dir={tmp_path / 'probe'}",
        *overrides,
        name="probe",
    )


@pytest.fixture(scope="session")
def tiny_nuisance_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """drmm2 trained on 3 batches of data=mnist_nuisance with translate and rotate active."""
    return train_once(
        tmp_path_factory,
        "tiny_nuisance",
        "model=drmm2",
        "data=mnist_nuisance",
        "data.nuisances.active=[translate,rotate]",
    )


@pytest.mark.slow
@pytest.mark.real_data
def test_drmm_probe_writes_a_value_for_every_layer_and_variable(
    tiny_nuisance_run: TrainedRun, tmp_path: Path
) -> None:
    from drmm_lightning.cli.probe import probe

    cfg = probe_config(tmp_path, tiny_nuisance_run.checkpoint, "logger=wandb")
    record = probe(cfg)
    written = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert written["variables"] == ["class", "dx", "dy", "angle"]
    assert list(written["features"]) == ["image", "layer1", "a1", "t1", "layer2", "a2", "t2"]
    for name, scores in written["features"].items():
        assert set(scores) == {"dim", *written["variables"]}, name
        assert all(isinstance(scores[v], float) for v in written["variables"])
    assert written["data"].endswith("; the set it was trained on")
    assert (tmp_path / "probe" / "probe.png").stat().st_size > 0
    assert list((tmp_path / "probe" / "wandb").glob("offline-run-*"))  # W&B run beside it


@pytest.mark.slow
@pytest.mark.real_data
def test_drmm_probe_of_a_model_without_nuisance_labels_probes_the_class(
    tiny_drmm2_run: TrainedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drmm_lightning.cli.probe import probe

    record = probe(probe_config(tmp_path, tiny_drmm2_run.checkpoint, "sources=[hidden]"))
    assert record["variables"] == ["class"] and record["nuisances"] is None
    assert list(record["features"]) == ["image", "layer1", "layer2"]
    assert "has no nuisance labels: probing the class only" in capsys.readouterr().out


def test_drmm_probe_says_which_nuisance_set_it_probes_on() -> None:
    """The set is named, and told apart from the one the checkpoint was trained on (a data
    override like +data.nuisances.active=[scale] changes it); no data is read for this."""
    from drmm_lightning.cli.probe import nuisance_set
    from drmm_lightning.data import DRMMDataModule

    config = NuisanceConfig(active=("scale",))
    probed = DRMMDataModule("mnist_nuisance", nuisances=config, download=False)
    trained = {**config.as_dict(), "active": ["translate", "rotate"]}
    said = nuisance_set(probed, trained)
    assert "varying: scale [0.8, 1.2]" in said and "NOT the set it was trained on" in said
    assert nuisance_set(probed, config.as_dict()).endswith("; the set it was trained on")
    plain = DRMMDataModule("mnist", download=False)
    assert "has no nuisance labels: probing the class only" in nuisance_set(plain, None)


def test_drmm_probe_refuses_a_missing_or_corrupt_checkpoint(tmp_path: Path) -> None:
    from drmm_lightning.cli.probe import probe

    missing = tmp_path / "nowhere" / "last.ckpt"
    with pytest.raises(FileNotFoundError, match=f"ckpt_path={missing}.*does not exist"):
        probe(probe_config(tmp_path, missing))
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"Checkpoint {corrupt} is not a readable checkpoint"):
        probe(probe_config(tmp_path, corrupt))
    assert not (tmp_path / "probe").exists()  # refused before any work


def test_drmm_probe_refuses_a_bad_setting_before_reading_anything(tmp_path: Path) -> None:
    from drmm_lightning.cli.probe import probe

    with pytest.raises(ValueError, match="train_size"):
        probe(probe_config(tmp_path, tmp_path / "x.ckpt", "train_size=many"))


@pytest.mark.parametrize("arch", ["rfm", "drfm2", "drmm2", "drmm5", "drmm5_nrm"])
def test_every_mnist_architecture_takes_the_nuisance_canvas(arch: str) -> None:
    """data=mnist_nuisance's 40x40 images: classified and rendered back at their size."""
    model = build_model(arch, image_size=40, render_path="normalized").eval()
    images = torch.randn(2, 1, 40, 40)
    inference = model.infer(images)
    assert inference.logits.shape == (2, 10)
    assert model.render(inference).image.shape == images.shape

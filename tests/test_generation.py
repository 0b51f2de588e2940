"""Issue 22: generated images judged by an independent classifier; samples with shape.

The metrics on constructed inputs, the class-conditional switch priors (M-step) against brute
force, sampling from them, the self-consistent sampler, refusals, and drmm-render's
generation.json. Synthetic data and tiny models: seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from drmm_lightning import generation
from drmm_lightning.cli.render import render
from drmm_lightning.cli.train import train
from drmm_lightning.data import DRMMDataModule
from drmm_lightning.data.images import ImageData
from drmm_lightning.models import DRMM, build_model
from drmm_lightning.models.sampling import (
    ClassSwitchPriors,
    bernoulli_mixture,
    check_sampler,
    draw_switches,
    estimate_class_priors,
    generate,
    self_consistent,
)
from drmm_lightning.training import DRMMLitModule

from .conftest import TrainedRun, make_config, tiny_config

CLASSES = 10


def digits(count: int, seed: int) -> ImageData:
    """Synthetic 28x28 'digits': class c is a bright bar in row band c, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat(count // CLASSES)
    images = torch.randint(0, 60, (len(labels), 1, 28, 28), generator=generator)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 2 * c + 3 : 2 * c + 6, 4:24] = 255
    return ImageData(images.to(torch.uint8), labels, tuple(str(c) for c in range(CLASSES)))


def eval_model(name: str = "drmm2", **kwargs) -> DRMM:
    """A small model whose batch-norm statistics and priors moved off their start."""
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    for _ in range(3):
        model.infer(torch.randn(16, 1, 28, 28))
    return model.eval()


# ----- the metrics on constructed inputs ----------------------------------------------------------
def test_judge_accuracy_of_real_test_images_is_the_judges_test_accuracy() -> None:
    """Scoring the test images in [0, 1] pixels through Judge gives exactly the test accuracy
    that the trainer measures on the same network (which normalises its inputs itself)."""
    torch.manual_seed(0)
    train_data, test_data = digits(200, 0), digits(100, 1)
    dm = DRMMDataModule(
        "mnist",
        data=(train_data, test_data),
        num_labeled=200,
        regime="sup",
        labeled_batch_size=20,
        eval_batch_size=30,
        mean=[0.2],
        std=[0.4],
    )
    module = DRMMLitModule("drmm2", render_argmin=False)
    optimizer = torch.optim.Adam(module.parameters(), 1e-3)
    dm.setup("fit")
    for i, batch in enumerate(dm.train_dataloader()):  # a few steps: neither chance nor perfect
        x, y = dict(dm.on_after_batch_transfer(batch, 0))["labeled"]
        loss = torch.nn.functional.cross_entropy(module(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i == 2:
            break
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    trainer.test(module.eval(), datamodule=dm, verbose=False)
    test_acc = float(trainer.callback_metrics["test/acc"])
    judge = generation.Judge(module.net, dm.transform.normalize)
    probs = judge.probabilities(test_data.images.float() / 255)
    assert generation.judge_accuracy(probs, test_data.labels) == pytest.approx(test_acc, abs=1e-6)
    assert 0 < probs.sum(1).min() and torch.allclose(probs.sum(1), torch.ones(len(probs)))


def test_judge_confidence_is_the_mean_probability_of_the_intended_class() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]])
    classes = torch.tensor([0, 0, 1])
    assert generation.judge_accuracy(probs, classes) == pytest.approx(2 / 3)
    assert generation.judge_confidence(probs, classes) == pytest.approx((0.9 + 0.4 + 0.7) / 3)


def test_diversity_of_identical_images_is_zero() -> None:
    real = digits(40, 0).images.float() / 255
    real_labels = digits(40, 0).labels
    same = real[:1].repeat(30, 1, 1, 1)
    labels = torch.zeros(30, dtype=torch.long)
    assert generation.mean_pairwise_distance(same) == 0.0
    result = generation.diversity(same, labels, real, real_labels)
    assert result["ratio"] == 0.0 and result["real"] > 0
    # real images against themselves: ratio 1; two distinct images: their RMS distance
    assert generation.diversity(real, real_labels, real, real_labels)["ratio"] == pytest.approx(1)
    pair = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    assert generation.mean_pairwise_distance(pair) == pytest.approx(1.0)


def test_novelty_of_a_training_image_is_zero() -> None:
    train = digits(200, 0).images.float() / 255
    test = digits(50, 1).images.float() / 255
    assert torch.equal(generation.nearest_distances(train[:7], train), torch.zeros(7))
    copies = generation.novelty(train[:20], train, test)
    assert copies["samples_min"] == 0.0 and copies["share_below_test_min"] == 1.0
    assert copies["test_median"] > 0 and copies["ratio"] == 0.0
    # a brute-force nearest distance for images that are not copies
    brute = torch.stack([((train - x).pow(2).mean((1, 2, 3)).sqrt()).min() for x in test[:5]])
    torch.testing.assert_close(generation.nearest_distances(test[:5], train), brute)


def test_pose_correlation_prefers_the_own_rendering() -> None:
    torch.manual_seed(0)
    own = torch.rand(6, 1, 5, 5)
    transfers = own + 0.1 * torch.rand(6, 1, 5, 5)
    result = generation.pose_correlation(transfers, own, own.roll(1, 0))
    assert result["own"] > 0.9 > result["other"]
    assert generation.correlations(own, own) == pytest.approx(torch.ones(6))


# ----- class-conditional switch priors ------------------------------------------------------------
@pytest.mark.parametrize("name", ["drmm2", "drmm5_nrm"])
def test_class_priors_are_the_per_class_mean_of_the_inferred_switches(name: str) -> None:
    model = eval_model(name)
    torch.manual_seed(1)
    images, classes = torch.randn(12, 1, 28, 28), torch.tensor([0, 1, 2] * 4)
    model.num_classes = 3  # the class count only sizes the priors here
    priors = estimate_class_priors(model, images, classes, first_layer=0, batch_size=5)
    for i, layer in enumerate(model.rendering_layers):
        for c in range(3):
            a_mean = torch.zeros_like(layer.prior_a)
            t_mean = torch.zeros(*layer.prior_a.shape, 4)
            members = [n for n in range(12) if classes[n] == c]
            for n in members:  # one image at a time
                switches = model.infer(images[n : n + 1]).switches[i]
                a_mean += switches.a[0].float() / len(members)
                if switches.t is not None:
                    k, h, w = layer.prior_a.shape
                    rows = switches.t[0] // layer.conv_size  # absolute row and column ...
                    cols = switches.t[0] % layer.conv_size
                    i_win = torch.arange(h).view(1, h, 1)  # ... minus the window's corner
                    j_win = torch.arange(w).view(1, 1, w)
                    position = 2 * (rows - 2 * i_win) + (cols - 2 * j_win)
                    assert position.min() >= 0 and position.max() <= 3
                    t_mean += torch.nn.functional.one_hot(position, 4).float() / len(members)
            prior_a, prior_t = priors.a[i], priors.t[i]
            assert prior_a is not None
            torch.testing.assert_close(prior_a[c, 0], a_mean)
            if layer.spec.pool == "max":
                assert prior_t is not None
                torch.testing.assert_close(prior_t[c, 0], t_mean)
            else:
                assert prior_t is None
    assert priors.counts.tolist() == [4, 4, 4]
    upper = estimate_class_priors(model, images, classes, first_layer=1)
    assert upper.a[0] is None and upper.t[0] is None and upper.a[1] is not None


def test_sampling_with_class_priors_draws_each_switch_with_its_class_probability() -> None:
    model = eval_model("drmm2")
    layers = model.rendering_layers
    p_a = torch.tensor([0.2, 0.7])  # P(a = ON | c) for classes 0 and 1
    p_t = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.1, 0.2, 0.3, 0.4]])
    a = [p_a.view(2, 1, 1, 1, 1).expand(2, 1, *layer.prior_a.shape).clone() for layer in layers]
    t = [p_t.view(2, 1, 1, 1, 1, 4).expand(2, 1, *layer.prior_a.shape, 4) for layer in layers]
    weights = torch.ones(2, 1)
    priors = ClassSwitchPriors(list(a), [x.clone() for x in t], weights, torch.tensor([1, 1]), 0)
    draws = 400
    classes = torch.tensor([0, 1]).repeat(draws // 2)
    inference = draw_switches(model, classes, priors, torch.Generator().manual_seed(0))
    for layer, switches in zip(layers, inference.switches):
        units = math.prod(layer.prior_a.shape) * draws // 2
        for c in (0, 1):
            freq = switches.a[classes == c].float().mean().item()
            sd = math.sqrt(p_a[c] * (1 - p_a[c]) / units)
            assert abs(freq - p_a[c].item()) < 5 * sd, (c, freq)
            assert switches.t is not None
            t_c = switches.t[classes == c]
            k, h, w = layer.prior_a.shape
            rows, cols = t_c // layer.conv_size, t_c % layer.conv_size
            position = 2 * (rows - 2 * torch.arange(h).view(1, 1, h, 1))
            position = position + cols - 2 * torch.arange(w).view(1, 1, 1, w)
            counts = torch.bincount(position.flatten(), minlength=4).float() / position.numel()
            for j in range(4):
                p = p_t[c, j].item()
                sd = math.sqrt(p * (1 - p) / position.numel())
                assert abs(counts[j].item() - p) <= 5 * sd + 1e-9, (c, j, counts)


def test_pose_clusters_are_recovered_and_drawn_with_their_weights() -> None:
    """The mixture option: EM separates two switch patterns of one class (a quarter and three
    quarters of the images), and sampling picks each cluster with its weight."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.rand(2, 300, generator=generator) < 0.5
    members = torch.tensor([0] * 40 + [1] * 120)
    flips = torch.rand(160, 300, generator=generator) < 0.05  # 5% of the switches flipped
    a = {0: patterns[members] ^ flips}
    pos = {0: (patterns[members].to(torch.uint8) * 3)}  # t at window position 0 or 3
    weights, p_a, p_t = bernoulli_mixture(a, pos, 2, generator=torch.Generator().manual_seed(1))
    order = p_a[0][:, patterns[1]].mean(1).argsort()  # cluster of pattern 0 first
    torch.testing.assert_close(weights[order], torch.tensor([0.25, 0.75]))
    assert (p_a[0][order] - patterns.float()).abs().mean() < 0.06
    assert torch.allclose(p_t[0][order].sum(-1), torch.ones(2, 300))
    one, p_one, _ = bernoulli_mixture(a, pos, 1)
    torch.testing.assert_close(p_one[0][0], a[0].float().mean(0))  # M = 1: the frequencies
    # draws: cluster 0 all off, cluster 1 all on, p(m = 1 | c) = 0.7 for both classes
    model = eval_model("drmm2")
    layers = model.rendering_layers
    prior_a = [
        torch.stack([torch.zeros(x.prior_a.shape), torch.ones(x.prior_a.shape)]) for x in layers
    ]
    priors = ClassSwitchPriors(
        [x.expand(2, -1, -1, -1, -1).clone() for x in prior_a],
        [None, None],
        torch.tensor([[0.3, 0.7], [0.3, 0.7]]),
        torch.tensor([1, 1]),
        0,
    )
    inference = draw_switches(model, torch.tensor([0, 1] * 500), priors, generator)
    on = inference.switches[1].a.flatten(1)
    assert (on.all(1) | ~on.any(1)).all()  # every image draws one cluster for all its units
    assert abs(on.all(1).float().mean().item() - 0.7) < 5 * math.sqrt(0.21 / 1000)


def test_class_prior_samples_render_the_drawn_switches() -> None:
    """generate(class_prior) is the class rendered through draw_switches' switches, the lower
    prior_layers through their prior means; the model's own prior_layers is left as it was."""
    model = eval_model("drmm5_nrm")
    classes = torch.tensor([0, 1, 2, 3])
    priors = estimate_class_priors(model, torch.randn(20, 1, 28, 28), torch.arange(10).repeat(2), 2)
    images = generate(
        model, classes, "class_prior", priors, 2, generator=torch.Generator().manual_seed(3)
    )
    inference = draw_switches(model, classes, priors, torch.Generator().manual_seed(3))
    model.prior_layers = 2
    torch.testing.assert_close(images, model.render(inference, classes).image)
    model.prior_layers = 0


# ----- the self-consistent sampler and refusals ---------------------------------------------------
@pytest.mark.parametrize("start", ["independent", "class_prior"])
def test_self_consistent_sampler_at_zero_steps_is_the_plain_sample(start: str) -> None:
    model = eval_model("drmm5_nrm")
    classes = torch.tensor([0, 1, 2, 3, 4])
    priors = estimate_class_priors(model, torch.randn(20, 1, 28, 28), torch.arange(10).repeat(2), 1)

    def draw(sampler: str, steps: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(5)
        return generate(model, classes, sampler, priors, 1, steps, start, generator)

    plain = draw(start)
    assert torch.equal(draw("self_consistent", 0), plain)
    assert not torch.allclose(draw("self_consistent", 2), plain)
    # damped: x <- d x + (1 - d) render(c, g(x)); at 0 steps the plain sample too
    generator = torch.Generator().manual_seed(5)
    damped = generate(model, classes, "self_consistent", priors, 1, 0, start, generator, 0.5)
    assert torch.equal(damped, plain)
    inference = draw_switches(model, classes, priors if start == "class_prior" else None)
    model.prior_layers = 1
    x0 = model.render(inference, classes).image
    expected = 0.5 * x0 + 0.5 * model.render(model.infer(x0), classes).image
    torch.testing.assert_close(self_consistent(model, inference, classes, 1, 0.5), expected)
    model.prior_layers = 0
    # the independent sampler at the model's own prior_layers is the paper's DRMM.sample
    generator = torch.Generator().manual_seed(5)
    own = generate(model, classes, "independent", generator=generator)
    assert torch.equal(own, model.sample(classes, torch.Generator().manual_seed(5)).image)


def test_each_option_is_refused_by_name_for_a_model_it_cannot_serve() -> None:
    rfm = eval_model("rfm")  # a factor model: no class variable at the top
    for sampler in ("class_prior", "self_consistent"):
        with pytest.raises(ValueError, match=f"sampler={sampler}.*DRFM.*factor model"):
            check_sampler(rfm, sampler)
    assert check_sampler(rfm, "independent") == 0
    with pytest.raises(ValueError, match=r"prior_layers=1 must be in \[0, 0\]"):
        check_sampler(rfm, "independent", prior_layers=1)
    model = eval_model("drmm2")
    with pytest.raises(ValueError, match="Unknown sampler 'gan'; valid: independent"):
        check_sampler(model, "gan")
    with pytest.raises(ValueError, match=r"prior_layers=2 must be in \[0, 1\]"):
        check_sampler(model, "class_prior", prior_layers=2)
    images, classes = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"No image of class \[3, 4, 5, 6, 7, 8, 9\]"):
        estimate_class_priors(model, images, classes, 0)
    with pytest.raises(ValueError, match=r"components=3 must be in \[1, 1\]: each pose cluster"):
        estimate_class_priors(model, torch.randn(10, 1, 28, 28), torch.arange(10), 0, components=3)
    with pytest.raises(ValueError, match="eval mode"):
        estimate_class_priors(model.train(), images, classes, 0)
    model.eval()
    with pytest.raises(ValueError, match="needs the class priors"):
        generate(model, classes, "class_prior")
    with pytest.raises(ValueError, match="Unknown start 'noise'"):
        generate(model, classes, "self_consistent", start="noise")


def test_render_refuses_bad_sampling_options_before_any_work(tmp_path: Path) -> None:
    cases = [
        ("sampling.sampler=gan", "Unknown sampling.sampler='gan'; valid: independent"),
        ("sampling.source=test", "Unknown sampling.source='test'; valid: labeled, unlabeled"),
        ("sampling.steps=-1", "sampling.steps=-1 must be a whole number >= 0"),
        ("judge_per_class=0", "judge_per_class=0 must be a whole number >= 1"),
        ("sampling.prior_layers=-2", "sampling.prior_layers=-2 must be null"),
    ]
    for override, message in cases:
        cfg = make_config(tmp_path / "render", "ckpt_path=nowhere.ckpt", override, name="render")
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
            render(cfg)


# ----- drmm-render end to end (real MNIST, a tiny model and a tiny judge) -------------------------
@pytest.mark.slow
@pytest.mark.real_data
def test_render_writes_generation_json(tmp_path: Path, tiny_drmm2_run: TrainedRun) -> None:
    train(
        tiny_config(
            tmp_path / "judge",
            "experiment=judge",
            "tags=[judge,test]",
            "test=false",
            "data.num_labeled=1000",
        )
    )  # the tag experiment=judge writes (tiny_config's tags=[test] would drop it)
    cfg = make_config(
        tmp_path / "render",
        f"ckpt_path={tiny_drmm2_run.checkpoint}",
        f"judge={tmp_path / 'judge' / 'checkpoints' / 'last.ckpt'}",
        "what=[samples,classes]",
        "per_class=3",
        "judge_per_class=5",
        "transfer_images=6",
        "sampling.sampler=self_consistent",
        "sampling.prior_layers=1",
        "sampling.steps=2",
        "+data.download=false",
        name="render",
    )
    with open_dict(cfg):
        cfg.out_dir = str(tmp_path / "pictures")
    paths = render(cfg)
    assert {p.name for p in paths} == {"generation.json", "samples.png", "classes.png"}
    record = json.loads((tmp_path / "pictures" / "generation.json").read_text())
    samples, transfers = record["samples"], record["transfers"]
    assert samples["count"] == 50 and len(samples["judge_accuracy_per_class"]) == 10
    for key in ("judge_accuracy", "judge_confidence", "real_judge_accuracy"):
        assert 0.0 <= samples[key] <= 1.0
    assert samples["diversity"]["ratio"] >= 0 and samples["novelty"]["test_median"] > 0
    assert transfers["images"] == 6 and 0.0 <= transfers["judge_accuracy"] <= 1.0
    assert set(transfers["pose_correlation"]) == {"own", "other"}
    assert record["sampling"]["sampler"] == "self_consistent"
    assert record["sampling"]["prior_layers_used"] == 1

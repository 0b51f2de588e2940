"""drmm-render: pictures of what a trained DRMM stores and generates, as PNG grids.

    drmm-render ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
    drmm-render ckpt_path=last what=samples classes=[3,5] per_class=16

what: reconstructions (test images above their renderings), templates (closed-form class
appearance, Eq. 46, above gradient-ascent activity maximisation, both at the mean norm of the
test images), samples (one row per class, Eqs. 5-7), filters (first layer), layers
(intermediate rendered templates z^(l), one file per layer), classes (up to 8 test images, each
rendered from every class through its own switches). Files go to <run>/renders/ (renders-2/,
... on later calls, so nothing is overwritten) unless out_dir is given.

sampling.sampler chooses how samples are drawn (models/sampling.py): independent (Eq. 5),
class_prior (class-conditional switch priors of the upper layers) or self_consistent. With
judge=<an experiment=judge checkpoint>, generation.json beside the pictures scores the samples
and the transfers (drmm_lightning/generation.py):

    drmm-render ckpt_path=<run> judge=<judge run>/checkpoints/last.ckpt what=[samples,classes] \
        sampling.sampler=self_consistent sampling.prior_layers=2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from .. import generation
from ..data import DRMMDataModule
from ..models import DRMM, render_every_class
from ..models.sampling import (
    SAMPLERS,
    STARTS,
    ClassSwitchPriors,
    check_sampler,
    estimate_class_priors,
    generate,
    prior_mean_layers,
)
from ..viz import grids
from .checkpoints import describe_run, find_checkpoint, load_run, read_checkpoint
from .config import CONF_DIR, as_dict, check_overrides
from .rundir import fresh_dir

KINDS = ("reconstructions", "templates", "samples", "filters", "layers", "classes")


SPLITS = ("test", "unlabeled")
SOURCES = ("labeled", "unlabeled")


def eval_images(
    datamodule: DRMMDataModule, count: int, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images of a run's data set, preprocessed as in training, and their
    labels: from the test set, or (split="unlabeled") from the training images outside the
    run's labeled subset, for choosing among variants without looking at the test set."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid: {SPLITS}.")
    data = datamodule.test_data if split == "test" else datamodule.train_data
    rows = torch.arange(len(data.labels))
    if split == "unlabeled":
        keep = torch.ones(len(rows), dtype=torch.bool)
        keep[datamodule.labeled_indices] = False
        rows = rows[keep]
    rows = rows[:count]
    return datamodule.transform(data.images[rows], train=False), data.labels[rows]


def check_arguments(cfg: DictConfig) -> list[str]:
    """The requested kinds; a ValueError naming the first bad argument, before any work."""
    what = [cfg.what] if isinstance(cfg.what, str) else list(cfg.what)
    unknown = [w for w in what if w not in KINDS]
    if unknown or not what:
        raise ValueError(f"Unknown or empty what={what}; valid: {', '.join(KINDS)}.")
    for key in ("num_images", "per_class", "scale", "seed"):
        value = cfg.get(key)
        low = 0 if key == "seed" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key}={value!r} must be a whole number >= {low}.")
    classes = cfg.get("classes")
    if classes is not None and (isinstance(classes, (str, int)) or len(classes) == 0):
        raise ValueError(
            f"classes={classes!r} must be a non-empty list like [3,5], or null for all."
        )
    opts = cfg.get("sampling") or {}
    checks = {
        "sampling.sampler": (opts.get("sampler", "independent"), SAMPLERS),
        "sampling.source": (opts.get("source", "labeled"), SOURCES),
        "sampling.start": (opts.get("start", "class_prior"), STARTS),
    }
    for key, (value, valid) in checks.items():
        if value not in valid:
            raise ValueError(f"Unknown {key}={value!r}; valid: {', '.join(valid)}.")
    for key, value, low in (
        ("sampling.steps", opts.get("steps", 0), 0),
        ("sampling.transfer_steps", opts.get("transfer_steps", 0), 0),
        ("sampling.num_unlabeled", opts.get("num_unlabeled", 1), 1),
        ("sampling.components", opts.get("components", 1), 1),
        ("judge_per_class", cfg.get("judge_per_class", 1), 1),
        ("transfer_images", cfg.get("transfer_images", 1), 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key}={value!r} must be a whole number >= {low}.")
    damping = opts.get("damping", 0.0)
    if not isinstance(damping, (int, float)) or isinstance(damping, bool) or not 0 <= damping < 1:
        raise ValueError(f"sampling.damping={damping!r} must be a number in [0, 1).")
    k = opts.get("prior_layers")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 0):
        raise ValueError(f"sampling.prior_layers={k!r} must be null or a whole number >= 0.")
    return what


def to_pixels(datamodule: DRMMDataModule, images: torch.Tensor) -> torch.Tensor:
    """Images in a model's input units as [0, 1] pixels (what a picture shows, what the judge
    scores): the data's normalisation undone, then clamped."""
    return datamodule.transform.denormalize(images.float().cpu()).clamp(0.0, 1.0)


def class_priors(
    model: DRMM, datamodule: DRMMDataModule, opts: DictConfig | dict, first_layer: int
) -> ClassSwitchPriors:
    """p(g^(l) | c) of the layers from `first_layer` up, from the switches inferred on the run's
    labeled images under their labels, or (source=unlabeled) on training images outside the
    labeled subset under the classifier's label (no label read)."""
    data = datamodule.train_data
    if opts.get("source", "labeled") == "labeled":
        rows = datamodule.labeled_indices
        images = datamodule.transform(data.images[rows], train=False)
        classes = data.labels[rows]
    else:
        images = eval_images(datamodule, opts.get("num_unlabeled", 5000), "unlabeled")[0]
        with torch.no_grad():
            classes = torch.cat([model(x).argmax(1) for x in images.split(500)])
    components = opts.get("components", 1)
    return estimate_class_priors(model, images, classes, first_layer, components)


def draw_samples(
    model: DRMM,
    datamodule: DRMMDataModule,
    classes: list[int],
    per_class: int,
    opts: DictConfig | dict,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` samples of each class by the configured sampler, in the model's units, and
    their classes (class by class)."""
    sampler = opts.get("sampler", "independent")
    k = check_sampler(model, sampler, opts.get("prior_layers"))
    start = opts.get("start", "class_prior")
    priors = None
    if sampler == "class_prior" or (sampler == "self_consistent" and start == "class_prior"):
        priors = class_priors(model, datamodule, opts, k)
    labels = torch.tensor(classes, device=model.log_sigma2.device).repeat_interleave(per_class)
    steps, damping = opts.get("steps", 0), opts.get("damping", 0.0)
    images = generate(model, labels, sampler, priors, k, steps, start, generator, damping)
    return images, labels.cpu()


def class_examples(data: Any, classes: list[int], per_class: int) -> tuple[torch.Tensor, ...]:
    """The first `per_class` images of each class of a split (uint8) and their labels."""
    rows = torch.cat([(data.labels == c).nonzero().flatten()[:per_class] for c in classes])
    return data.images[rows], data.labels[rows]


def sample_metrics(
    judge: generation.Judge,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    datamodule: DRMMDataModule,
    classes: list[int],
) -> dict[str, Any]:
    """Judge accuracy and confidence, diversity and novelty of samples in [0, 1] pixels."""
    probs = judge.probabilities(pixels)
    real, real_labels = class_examples(datamodule.test_data, classes, len(labels) // len(classes))
    real = real.float() / 255
    train = datamodule.train_data.images.float() / 255
    per_class = [
        generation.judge_accuracy(probs[labels == c], labels[labels == c]) for c in classes
    ]
    real_probs = judge.probabilities(real)
    return {
        "count": len(labels),
        "judge_accuracy": generation.judge_accuracy(probs, labels),
        "judge_confidence": generation.judge_confidence(probs, labels),
        "judge_accuracy_per_class": per_class,
        "diversity": generation.diversity(pixels, labels, real, real_labels),
        "novelty": generation.novelty(pixels, train, real),
        "real_judge_accuracy": generation.judge_accuracy(real_probs, real_labels),
    }


@torch.no_grad()
def transfer_metrics(
    model: DRMM,
    judge: generation.Judge,
    datamodule: DRMMDataModule,
    count: int,
    estep_steps: int = 0,
) -> dict[str, Any]:
    """Every class rendered through the switches of `count` test images (what=classes), judged:
    how often the judge sees the rendered class (over classes other than the image's own
    label, and over all) or the image's own label instead, and the pose correlation with the
    image's own rendering (from its inferred class) against another image's own rendering.
    estep_steps > 0 renders each class through switches re-inferred for it from the image's
    (models/posterior.py: class_estep)."""
    images, labels = eval_images(datamodule, count)
    images = images.to(model.log_sigma2.device)
    inference = model.infer(images)
    every = render_every_class(model, inference, images, estep_steps)  # (B, C, ...)
    renders = to_pixels(datamodule, every)
    own = to_pixels(datamodule, model.render(inference).image)
    batch, num_classes = renders.shape[:2]
    target = torch.arange(num_classes).repeat(batch)
    source = labels.repeat_interleave(num_classes)
    predicted = inference.logits.argmax(1).cpu().repeat_interleave(num_classes)
    probs = judge.probabilities(renders.flatten(0, 1))
    other = target != source
    moved = target != predicted  # a class other than the one the image's rendering shows
    own_rep = own.repeat_interleave(num_classes, 0)
    other_rep = own.roll(1, 0).repeat_interleave(num_classes, 0)  # another image's rendering
    flat = renders.flatten(0, 1)
    return {
        "images": batch,
        "judge_accuracy": generation.judge_accuracy(probs[other], target[other]),
        "judge_accuracy_all": generation.judge_accuracy(probs, target),
        "judge_confidence": generation.judge_confidence(probs[other], target[other]),
        "judge_sees_source": generation.judge_accuracy(probs[other], source[other]),
        "pose_correlation": generation.pose_correlation(
            flat[moved], own_rep[moved], other_rep[moved]
        ),
        "own_rendering_judge_accuracy": generation.judge_accuracy(judge.probabilities(own), labels),
    }


JUDGE_TAG = "judge"  # in the run config's tags of what experiment=judge writes
JUDGE_MAX_TEST_ERROR = 2.0  # percent; the judge preset reaches 0.69% on MNIST


def check_judge(path: Path) -> None:
    """Refuse a judge= checkpoint that is not a judge, before any work: one that experiment=judge
    did not write (its run config is tagged judge), or whose recorded test error (results.json
    of its run) is above JUDGE_MAX_TEST_ERROR; any other model's accuracies would mean nothing."""
    saved = read_checkpoint(path, "judge")
    train_judge = (
        "A judge is what `drmm-train experiment=judge` writes (a plain CNN on all the labels); "
        "train one and pass judge=<its run>/checkpoints/last.ckpt."
    )
    if JUDGE_TAG not in ((saved.get("run_config") or {}).get("tags") or []):
        raise ValueError(
            f"judge={path} is not a judge: it holds {describe_run(saved)}, not written by "
            f"experiment=judge (no '{JUDGE_TAG}' tag). {train_judge}"
        )
    results = path.parent.parent / "results.json"
    error = None
    if results.is_file():
        error = json.loads(results.read_text()).get("metrics", {}).get("test/error")
    if error is not None and error > JUDGE_MAX_TEST_ERROR:
        raise ValueError(
            f"judge={path} is too poor a judge: its run's test error is {error:.2f}% "
            f"({results}), above the {JUDGE_MAX_TEST_ERROR}% a judge may have; it holds "
            f"{describe_run(saved)}. {train_judge}"
        )


def load_judge(path: str) -> generation.Judge:
    """An experiment=judge checkpoint as a Judge (its network and its input normalisation)."""
    module, datamodule = load_run(Path(path), option="judge")
    transform = datamodule.transform
    return generation.Judge(module.net, transform.normalize)


def render(cfg: DictConfig) -> list[Path]:
    """Write the requested grids; returns their paths."""
    what = check_arguments(cfg)
    if cfg.get("judge"):
        check_judge(Path(cfg.judge))
    ckpt = find_checkpoint(cfg.ckpt_path, cfg.paths.log_dir, "train")
    if ckpt is None:
        raise ValueError("drmm-render needs ckpt_path=<checkpoint file>, or ckpt_path=last.")
    print(f"[drmm] rendering {ckpt}")
    module, datamodule = load_run(ckpt, cfg.get("data"))
    model = module.net
    classes = list(range(model.num_classes)) if cfg.classes is None else list(cfg.classes)
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad:
        raise ValueError(
            f"Class index {bad} out of range: the model has {model.num_classes} classes "
            f"(0..{model.num_classes - 1})."
        )
    opts = cfg.get("sampling") or {}
    k = check_sampler(model, opts.get("sampler", "independent"), opts.get("prior_layers"))
    judge = load_judge(cfg.judge) if cfg.get("judge") else None
    out = Path(cfg.out_dir) if cfg.out_dir else fresh_dir(ckpt.parent.parent / "renders")
    out.mkdir(parents=True, exist_ok=True)
    images = torch.empty(0)  # the test images, loaded only for the kinds that show them
    if {"reconstructions", "layers", "templates", "classes"} & set(what):
        images = eval_images(datamodule, cfg.num_images)[0]
    generator = torch.Generator().manual_seed(cfg.seed)
    pictures: dict[str, torch.Tensor] = {}
    scores: dict[str, Any] = {}
    for kind in what:
        if kind == "reconstructions":
            pictures[kind] = grids.reconstructions(model, images, nrow=min(8, len(images)))
        elif kind == "templates":  # at the norm of real images: scores carry biases
            norm = images.flatten(1).norm(dim=1).mean().item()
            pictures[kind] = grids.class_appearances(model, classes, norm)
        elif kind == "samples":
            count = max(cfg.per_class, cfg.judge_per_class) if judge else cfg.per_class
            drawn, labels = draw_samples(model, datamodule, classes, count, opts, generator)
            pixels = to_pixels(datamodule, drawn)
            shown = pixels.unflatten(0, (len(classes), count))[:, : cfg.per_class]
            pictures[kind] = grids.grid(shown.flatten(0, 1), cfg.per_class)
            if cfg.get("save_samples"):
                torch.save({"images": pixels, "classes": labels}, out / "samples.pt")
            if judge is not None:
                scores["samples"] = sample_metrics(judge, pixels, labels, datamodule, classes)
        elif kind == "filters":
            pictures[kind] = grids.filters(model)
        elif kind == "classes":
            estep = opts.get("transfer_steps", 0)
            with prior_mean_layers(model, k):
                if estep:  # as grids.every_class, through switches re-inferred per class
                    shown = images[:8]
                    every = render_every_class(model, model.infer(shown), shown, estep)
                    rows = torch.cat([shown[:, None], every], dim=1)
                    pictures[kind] = grids.grid(rows.flatten(0, 1), every.shape[1] + 1)
                else:
                    pictures[kind] = grids.every_class(model, images[:8])
                if judge is not None:
                    scores["transfers"] = transfer_metrics(
                        model, judge, datamodule, cfg.transfer_images, estep
                    )
        else:
            for i, picture in enumerate(grids.layer_templates(model, images[:8])):
                pictures[f"layer_{len(model.layers) - i}"] = picture
    paths = []
    if judge is not None:
        record = {
            "checkpoint": str(ckpt),
            "judge": str(cfg.judge),
            "seed": cfg.seed,
            "sampling": {
                **(as_dict(opts) if isinstance(opts, DictConfig) else dict(opts)),
                "prior_layers_used": k,
            },
            **scores,
        }
        paths.append(out / "generation.json")
        paths[-1].write_text(json.dumps(record, indent=2) + "\n")
        print(paths[-1])
    for name, picture in pictures.items():
        paths.append(out / f"{name}.png")
        if cfg.scale > 1:  # nearest-neighbour enlargement for viewing
            picture = picture.repeat_interleave(cfg.scale, 1).repeat_interleave(cfg.scale, 2)
        save_image(picture, paths[-1])
        print(paths[-1])
    return paths


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="render")
def _hydra_main(cfg: DictConfig) -> None:
    render(cfg)


def main() -> None:
    """Console entry point."""
    check_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()

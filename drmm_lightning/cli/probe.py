"""drmm-probe: linear probes of every layer of a trained model (paper Section 4, Fig. 2 left).

    drmm-probe ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
    drmm-probe ckpt_path=<run> +data.nuisances.active=[translate]   # another nuisance set
    drmm-probe ckpt_path=<run> logger=wandb                          # also log to W&B

Freezes the model, collects its features (the image, every layer's activations, its switches
a and t) on probe-train images (the data's training split) and held-out probe-test images (its
test split), fits one linear probe per feature set and variable (drmm_lightning/probing) and
writes probe.json and probe.png to <run>/probe/ (probe-2, ... on later calls) or out_dir.
A model trained on data with known nuisances (data=mnist_nuisance) is probed for the class
and every nuisance that varies; any other for the class alone.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import hydra
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, open_dict
from tqdm import tqdm

from ..data import DRMMDataModule
from ..data.images import ImageData
from ..models import DRMM
from ..probing import ProbeSettings, feature_names, layer_features, probe_features
from .build import build_loggers, finish_loggers
from .checkpoints import describe_run, find_checkpoint, load_run, read_checkpoint
from .config import CONF_DIR, check_overrides, check_types
from .rundir import fresh_dir
from .schema import ProbeConfig


def probe_set(
    data: ImageData, size: int, generator: torch.Generator, split: str
) -> tuple[torch.Tensor, ...]:
    """Indices of `size` images of `data` drawn without replacement (a ValueError naming the
    option if it has fewer) and their labels."""
    if not 2 <= size <= len(data):
        raise ValueError(f"{split}_size={size}: the {split} split has {len(data)} images.")
    rows = torch.randperm(len(data), generator=generator)[:size].sort().values
    return rows, data.labels[rows]


def nuisance_set(datamodule: DRMMDataModule, trained: Any) -> str:
    """Which nuisance set the probe sees, in words (and whether it is the one trained on)."""
    config = datamodule.nuisances
    if config is None:
        return (
            f"data set {datamodule.name} has no nuisance labels: probing the class only "
            "(a model trained with data=mnist_nuisance can be probed for its nuisances)"
        )
    ranges = ", ".join(f"{v} {list(config.range_of(v))}" for v in config.variables) or "none"
    same = (
        "the set it was trained on"
        if trained == config.as_dict()
        else "NOT the set it was trained on (a data override changed it)"
    )
    return (
        f"{datamodule.name}, seed {config.seed}, canvas {config.canvas}, varying: {ranges}; {same}"
    )


def values_of(data: ImageData, rows: torch.Tensor, variables: list[str]) -> dict[str, torch.Tensor]:
    """The nuisance values of the images `rows` ({} when none vary)."""
    if not variables or data.nuisances is None:
        return {}
    return {v: data.nuisances[v][rows] for v in variables}


def collect(
    model: DRMM,
    datamodule: DRMMDataModule,
    data: ImageData,
    rows: torch.Tensor,
    cfg: DictConfig,
    split: str,
) -> dict[str, torch.Tensor]:
    """Every feature set of the images `rows` of `data`, preprocessed as at test time."""
    images = datamodule.transform(data.images[rows], train=False)
    total = -(-len(rows) // cfg.batch_size)

    def progress(batches: Any) -> Any:
        return tqdm(batches, total=total, desc=f"[drmm] features of probe-{split}", leave=False)

    return layer_features(model, images, cfg.sources, cfg.batch_size, progress)


def probe(cfg: DictConfig) -> dict[str, Any]:
    """Fit and score every probe of `cfg.ckpt_path`; writes probe.json and probe.png."""
    check_types(cfg, ProbeConfig)
    ckpt = find_checkpoint(cfg.ckpt_path, cfg.paths.log_dir, "train")
    if ckpt is None:
        raise ValueError("drmm-probe needs ckpt_path=<checkpoint file>, or ckpt_path=last.")
    saved = read_checkpoint(ckpt)
    print(f"[drmm] probing {ckpt}: {describe_run(saved)}")
    module, datamodule = load_run(ckpt, cfg.get("data"))
    model = cast(DRMM, module.objective.evaluation_net(module.net)).float().eval()
    trained = (saved.get("datamodule_hyper_parameters") or {}).get("nuisances")
    where = nuisance_set(datamodule, trained)
    print(f"[drmm] probe data: {where}")
    generator = torch.Generator().manual_seed(cfg.seed)
    splits = {"train": datamodule.train_data, "test": datamodule.test_data}
    drawn = {s: probe_set(d, cfg[f"{s}_size"], generator, s) for s, d in splits.items()}
    variables = [] if datamodule.nuisances is None else list(datamodule.nuisances.variables)
    nuisances = (
        values_of(splits["train"], drawn["train"][0], variables),
        values_of(splits["test"], drawn["test"][0], variables),
    )
    features = {s: collect(model, datamodule, splits[s], drawn[s][0], cfg, s) for s in splits}
    settings = ProbeSettings(
        components=cfg.components,
        class_C=tuple(cfg.class_C),
        ridge_alphas=tuple(cfg.ridge_alphas),
        seed=cfg.seed,
    )
    scores: dict[str, dict[str, float]] = {}
    for name in tqdm(feature_names(model, cfg.sources), desc="[drmm] probes", leave=False):
        train, test = features["train"].pop(name), features["test"].pop(name)
        labels = (drawn["train"][1], drawn["test"][1])
        scores[name] = {
            "dim": train.shape[1],
            **probe_features(train, test, labels, nuisances, settings),
        }
        shown = ", ".join(f"{k} {v:.3f}" for k, v in scores[name].items() if k != "dim")
        print(f"[drmm] {name} ({train.shape[1]} features): {shown}")
    test_labels = drawn["test"][1]
    record = {
        "checkpoint": str(ckpt),
        "model": describe_run(saved),
        "data": where,
        "nuisances": None if datamodule.nuisances is None else datamodule.nuisances.as_dict(),
        "trained_nuisances": trained,
        "variables": ["class", *variables],
        "scores": "class: held-out accuracy; each nuisance: held-out R^2",
        "chance": {"class": float(test_labels.bincount().max()) / len(test_labels)},
        "probe_train": cfg.train_size,
        "probe_test": cfg.test_size,
        "settings": {**asdict(settings), "sources": list(cfg.sources)},
        "features": scores,
    }
    out = Path(cfg.out_dir) if cfg.out_dir else fresh_dir(ckpt.parent.parent / "probe")
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(record, indent=2) + "\n")
    from ..viz.plots import plot_probe  # matplotlib: the probe extra, as scikit-learn

    figure = plot_probe(record, out / "probe.png")
    print(out / "probe.json")
    print(figure)
    log_to_trackers(cfg, out, record, figure)
    return record


def log_to_trackers(cfg: DictConfig, out: Path, record: dict[str, Any], figure: Path) -> None:
    """With logger=wandb: the scores as a table and summary values, the figure as an image."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)  # the W&B run directory goes beside probe.json
    loggers = build_loggers(cfg, {})
    try:
        for logger in (lg for lg in loggers if isinstance(lg, WandbLogger)):
            import wandb

            experiment = logger.experiment
            columns = ["features", "dim", *record["variables"]]
            rows = [
                [name, s["dim"], *(s[v] for v in record["variables"])]
                for name, s in record["features"].items()
            ]
            experiment.log(
                {
                    "probe/scores": wandb.Table(columns=columns, data=rows),
                    "probe/figure": wandb.Image(str(figure)),
                }
            )
            for name, s in record["features"].items():
                for v in record["variables"]:
                    experiment.summary[f"probe/{name}/{v}"] = s[v]
            experiment.save(str(out / "probe.json"), base_path=str(out), policy="now")
    finally:
        finish_loggers(loggers)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="probe")
def _hydra_main(cfg: DictConfig) -> None:
    probe(cfg)


def main() -> None:
    """Console entry point."""
    check_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()

"""The golden record of the EG objective: every preset's loss terms on one fixed step.

For every preset of conf/experiment/ (and every conf/objective/*.yaml on the default config) the
config is composed, the LightningModule built at a fixed seed, and one EG step's objective run on
a fixed synthetic batch (4 labeled + 4 unlabeled images at the preset's input shape; the regime's
streams only). The record (tests/fixtures/objective_golden.json) holds each step's logged term
names and values; test_objective_golden.py checks the code against it, so a refactor of the
objective is provably behaviour-free. Regenerate only when a change is meant to alter a loss:

    python -m tests.objective_golden            # rewrites the record
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from drmm_lightning.cli.config import CONF_DIR
from drmm_lightning.training import DRMMLitModule

RECORD = Path(__file__).parent / "fixtures" / "objective_golden.json"
SHAPES = {"mnist": (1, 28), "fashion_mnist": (1, 28), "cifar10": (3, 32)}  # (channels, size)
STEP = 700  # past the mean teacher's ramp-up, inside pseudo-label's ramp: every term is on
STREAMS: dict[str, list[tuple[str, ...]]] = {
    "sup": [("labeled",)],
    "semi_sup": [("labeled", "unlabeled")],
}
STREAMS["unsup_pretr"] = [("unlabeled",), ("labeled",)]  # phase 1, then phase 2


LEAF = re.compile(r"defaults: \[(paper/_\w+)\]\ndata: \{num_labeled: \d+\}\n")


def cases() -> dict[str, list[str]]:
    """{case name: drmm-train overrides}: every preset (the _* bases only through them), then
    every objective config. The paper leaves that only set N_L on a base
    (conf/experiment/paper/<base>_<N_L>.yaml) compose as the first leaf of that base: N_L does
    not enter one EG step."""
    out: dict[str, list[str]] = {}
    first: dict[str, str] = {}  # base -> its first leaf
    for path in sorted((CONF_DIR / "experiment").rglob("[!_]*.yaml")):
        preset = str(path.relative_to(CONF_DIR / "experiment").with_suffix(""))
        text = "".join(line for line in path.read_text().splitlines(True) if line[:1] != "#")
        same = (
            first.setdefault(match.group(1), preset) if (match := LEAF.fullmatch(text)) else preset
        )
        out[f"experiment={preset}"] = [f"experiment={same}"]
    for path in sorted((CONF_DIR / "objective").glob("*.yaml")):
        out[f"objective={path.stem}"] = [f"objective={path.stem}", "regime=semi_sup"]
    return out


def compose_case(overrides: list[str]) -> dict[str, Any]:
    """The parts of the composed config that decide one EG step (Hydra initialised)."""
    # precision=bf16 fixes the memory layout (model.channels_last) the record was made with on
    # every machine: precision=auto would pick it by the CPU, and the VAT term's finite
    # difference is sensitive to it. One EG step here runs without autocast either way.
    fixed = ["seed=0", "data.index_dir=null", "precision=bf16"]
    cfg = compose("train", overrides=[*overrides, *fixed])
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "objective": OmegaConf.to_container(cfg.objective, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "regime": cfg.regime.name,
    }


def step_terms(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """One EG step per phase of the regime: {streams, loss, terms} on the fixed batch."""
    data = hydra.utils.instantiate(parts["data"], download=False)
    channels, size = SHAPES[data.name]
    torch.manual_seed(0)
    model = dict(parts["model"])
    model.pop("_target_")
    module = DRMMLitModule(
        **model,
        in_channels=channels,
        num_classes=10,
        image_size=size,
        objective=parts["objective"],
        pixel_std=data.transform.std,
    )
    module.train()
    images = torch.randn(8, channels, size, size, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])
    out = []
    for streams in STREAMS[parts["regime"]]:
        labeled = (images[:4], labels) if "labeled" in streams else None
        unlabeled = images[4:] if "unlabeled" in streams else None
        torch.manual_seed(2)
        step = module.objective(module.net, labeled, unlabeled, step=STEP)
        out.append(
            {
                "streams": list(streams),
                "loss": step.loss.item(),
                "terms": {k: v.item() for k, v in step.terms.items()},
            }
        )
    return out


def record() -> dict[str, list[dict[str, Any]]]:
    """{case: steps} for every case; cases that compose to the same step are computed once."""
    torch.set_num_threads(1)
    steps: dict[str, list[dict[str, Any]]] = {}  # by the overrides, then by the composed step
    result = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for name, overrides in cases().items():
            if str(overrides) not in steps:
                parts = compose_case(overrides)
                data = {k: parts["data"].get(k) for k in ("name", "mean", "std", "standardize")}
                key = json.dumps({**parts, "data": data}, sort_keys=True)
                if key not in steps:
                    steps[key] = step_terms(parts)
                steps[str(overrides)] = steps[key]
            result[name] = steps[str(overrides)]
    GlobalHydra.instance().clear()
    return result


# An objective in the layout before issue 30 (weights: {...}, posterior_batch at the top, the
# peers under terms), as the checkpoints of that code hold it.
OLD_OBJECTIVE: dict[str, Any] = {
    "weights": {"cross_entropy": 1.0, "reconstruction": 1.0, "kl": 0.5, "nonneg": 0.5},
    "estep": "hard",
    "posterior_batch": 4,
    "terms": {"mean_teacher": {"weight": 10.0, "rampup_steps": 2}},
}
TINY_MODEL: dict[str, Any] = {"arch": "rfm", "in_channels": 1, "num_classes": 10, "image_size": 8}


def tiny_batches(n: int = 2) -> DataLoader:
    """`n` steps of 4 labeled + 4 unlabeled 8x8 images, as the DataModule serves them."""
    g = torch.Generator().manual_seed(3)
    batches = [
        {
            "labeled": (torch.rand(4, 1, 8, 8, generator=g), torch.arange(4)),
            "unlabeled": torch.rand(4, 1, 8, 8, generator=g),
        }
        for _ in range(n)
    ]
    return DataLoader(batches, batch_size=None)  # type: ignore[arg-type]


def quiet_trainer(**kwargs: Any) -> Any:
    """A one-device CPU Trainer that logs, checkpoints and prints nothing (for a few steps)."""
    import lightning as L

    flags: dict[str, Any] = dict(logger=False, enable_checkpointing=False, accelerator="cpu")
    flags |= dict(enable_progress_bar=False, enable_model_summary=False, devices=1)
    return L.Trainer(**(flags | kwargs))


def old_checkpoint(path: Path) -> None:
    """A Lightning checkpoint of a tiny model trained one step with OLD_OBJECTIVE (the fixture
    tests/fixtures/old_layout.ckpt was written by the code before issue 30)."""

    torch.manual_seed(0)
    module = DRMMLitModule(**TINY_MODEL, objective=OLD_OBJECTIVE, diagnostics_every=0)
    module.run_config = {"model": dict(TINY_MODEL), "objective": OLD_OBJECTIVE, "seed": 0}
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(module, train_dataloaders=tiny_batches(1))
    trainer.save_checkpoint(path)


def main() -> int:
    RECORD.parent.mkdir(exist_ok=True)
    if "--checkpoint" in sys.argv:
        old_checkpoint(RECORD.parent / "old_layout.ckpt")
    RECORD.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

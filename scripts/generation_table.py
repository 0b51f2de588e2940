"""Judge the samples and transfers of several checkpoints under several sampling options.

python scripts/generation_table.py --judge <judge ckpt> --runs <name>:<ckpt>,<name>:<ckpt>
    [--options independent,class_prior_k2,...] [--out outputs/issue22/table] [--seed 0]

For every run and option it calls drmm-render (what=[samples,classes], judge=..., 100 samples a
class, 100 test images for the transfers) into <out>/<run>/<option>/ and then prints, and writes
to <out>/table.md and table.json, one row per run and option: judge accuracy and confidence of
the samples, diversity (against real test digits of the same class), novelty (median distance
to the nearest training image against the test images'), the share of samples farther from the
training set than the median test image, and the transfers' judge accuracy and pose
correlation. `overrides` below turns an option's name into drmm-render overrides. Rows already
rendered (generation.json present) are read back, not redone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from drmm_lightning.cli.config import CONF_DIR
from drmm_lightning.cli.render import render

# The options measured by default (names: see `overrides`).
OPTIONS = [
    "independent",
    "independent_k2",
    "class_prior_k0",
    "class_prior_k2",
    "class_prior_k0_unlabeled",
    "class_prior_k2_unlabeled",
    "class_prior_k0_unlabeled_m10",
    "class_prior_k2_unlabeled_m10",
    "self_consistent_k0",
    "self_consistent_k2",
    "self_consistent_k2_independent",
]


KEYS = {
    "k": "prior_layers",
    "m": "components",
    "n": "num_unlabeled",
    "s": "steps",
    "t": "transfer_steps",
}


def overrides(option: str) -> list[str]:
    """drmm-render overrides of an option name: the sampler (independent, class_prior,
    self_consistent), then any of _k<prior_layers>, _unlabeled (p(g | c) from unlabeled images
    under the classifier's label), _n<how many of those>, _m<pose clusters>, _s<self-consistent
    steps, default 5>, _independent (the self-consistent sampler's start), _d<its damping in
    percent>, _t<per-class E-step steps of the transfers>, e.g. class_prior_k0_unlabeled_m10."""
    for sampler in ("independent", "class_prior", "self_consistent"):
        if option == sampler or option.startswith(sampler + "_"):
            break
    else:
        raise ValueError(f"Option {option!r} names no sampler (independent, class_prior, ...).")
    out = [f"sampling.sampler={sampler}"]
    if sampler == "self_consistent":
        out.append("sampling.steps=5")
    for token in filter(None, option[len(sampler) :].split("_")):
        if token == "unlabeled":
            out.append("sampling.source=unlabeled")
        elif token == "independent":
            out.append("sampling.start=independent")
        elif token[0] == "d" and token[1:].isdigit():  # damping in percent
            out.append(f"sampling.damping={int(token[1:]) / 100}")
        elif token[0] in KEYS and token[1:].isdigit():
            key = KEYS[token[0]]
            out.append(f"sampling.{key}={token[1:]}")
        else:
            raise ValueError(f"Option {option!r}: unknown part {token!r}.")
    return out


COLUMNS = (
    "run",
    "option",
    "judge acc",
    "judge conf",
    "diversity",
    "novelty (median NN / test's)",
    "farther than median test",
    "transfer judge acc",
    "pose corr own / other",
)


def render_one(ckpt: str, judge: str, option: str, out: Path, seed: int) -> dict[str, Any]:
    """drmm-render of one checkpoint and option into `out`; its generation.json as a dict."""
    record = out / "generation.json"
    if record.exists():
        return json.loads(record.read_text())
    settings = [
        f"ckpt_path={ckpt}",
        f"judge={judge}",
        "what=[samples,classes]",
        f"seed={seed}",
        "scale=2",
        *overrides(option),
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("render", overrides=settings)
    with open_dict(cfg):
        cfg.out_dir = str(out)
    render(cfg)
    return json.loads(record.read_text())


def row(run: str, option: str, record: dict[str, Any]) -> list[str]:
    """One table row from a generation.json."""
    s, t = record["samples"], record["transfers"]
    nov, pose = s["novelty"], t["pose_correlation"]
    return [
        run,
        option,
        f"{100 * s['judge_accuracy']:.1f}%",
        f"{s['judge_confidence']:.3f}",
        f"{s['diversity']['ratio']:.2f}",
        f"{nov['samples_median']:.3f} / {nov['test_median']:.3f}",
        f"{100 * nov['share_above_test_median']:.0f}%",
        f"{100 * t['judge_accuracy']:.1f}%",
        f"{pose['own']:.2f} / {pose['other']:.2f}",
    ]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", required=True, help="an experiment=judge checkpoint")
    parser.add_argument("--runs", required=True, help="name:checkpoint,name:checkpoint,...")
    parser.add_argument(
        "--options", default=",".join(OPTIONS), help="option names, comma-separated"
    )
    parser.add_argument("--out", default="outputs/issue22/table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    runs = [r.split(":", 1) for r in args.runs.split(",")]
    if any(len(r) != 2 for r in runs):
        parser.error(f"--runs {args.runs!r}: each run is name:checkpoint")
    options = args.options.split(",")
    for option in options:
        try:
            overrides(option)  # a bad name stops here, before any rendering
        except ValueError as err:
            parser.error(str(err))
    out = Path(args.out)
    rows, records = [], {}
    for name, ckpt in runs:
        for option in options:
            record = render_one(ckpt, args.judge, option, out / name / option, args.seed)
            records[f"{name}/{option}"] = record
            rows.append(row(name, option, record))
            print(" | ".join(rows[-1]), flush=True)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(records, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Is each run's rendering alive? Plot the render diagnostics its CSV log holds, by step.

python scripts/plot_render.py --runs outputs/ablation --seed 1 --out docs/img/render_diagnostics.png

One line per run (labelled by its experiment), one panel per quantity: the training
reconstruction error ([0, 1] pixel units), the cosine between images and renderings, the norm
ratio ||I_hat|| / ||I|| and sigma^2 (model.diagnostics_every sets how often they are logged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drmm_lightning.viz.plots import plot_logged

KEYS = ["train/reconstruction_step", "render/cosine", "render/norm_ratio", "train/sigma2_step"]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="outputs/ablation", help="folder of run directories")
    parser.add_argument("--seed", type=int, help="only the runs of this seed")
    parser.add_argument("--out", default="render_diagnostics.png", help="the figure's file")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    runs: dict[str, str | Path] = {}
    for results in sorted(Path(args.runs).rglob("results.json")):
        record = json.loads(results.read_text())
        if args.seed is not None and record.get("seed") != args.seed:
            continue
        if "train/reconstruction" in record.get("metrics", {}):  # rows that render
            label = record.get("choices", {}).get("experiment", results.parent.name)
            runs[f"{label} (seed {record.get('seed')})"] = results.parent
    if not runs:
        sys.exit("No rendering runs with results.json found.")
    print(plot_logged(runs, KEYS, args.out, args.title))


if __name__ == "__main__":
    main(sys.argv[1:])

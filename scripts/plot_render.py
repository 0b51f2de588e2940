"""Is each run's rendering alive? Plot the render diagnostics its CSV log holds, by step.

python scripts/plot_render.py runs=outputs/ablation seed=1 out=docs/img/render_diagnostics.png

One line per run (labelled by its experiment), one panel per quantity: the training
reconstruction error ([0, 1] pixel units), the cosine between images and renderings, the norm
ratio ||I_hat|| / ||I|| and sigma^2 (model.diagnostics_every sets how often they are logged).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from drmm_lightning.viz.plots import plot_logged

KEYS = ["train/reconstruction_step", "render/cosine", "render/norm_ratio", "train/sigma2_step"]


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    runs: dict[str, str | Path] = {}
    for results in sorted(Path(args.get("runs", "outputs/ablation")).rglob("results.json")):
        record = json.loads(results.read_text())
        if "seed" in args and str(record.get("seed")) != args["seed"]:
            continue
        if "train/reconstruction" in record.get("metrics", {}):  # rows that render
            label = record.get("choices", {}).get("experiment", results.parent.name)
            runs[f"{label} (seed {record.get('seed')})"] = results.parent
    if not runs:
        sys.exit("No rendering runs with results.json found.")
    out = args.get("out", "render_diagnostics.png")
    print(plot_logged(runs, KEYS, out, args.get("title", "")))


if __name__ == "__main__":
    main(sys.argv[1:])

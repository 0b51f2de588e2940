"""Plot test error against epoch for every run under a directory (curve.jsonl files).

python scripts/plot_curves.py --runs outputs/reproduce/table1 --out docs/img/curves.png
    [--only _100] [--title ...] [--below 1.5]
python scripts/plot_curves.py --runs outputs/ablation --metric test_reconstruction
    --only normalized,adjoint

--below E also prints, per run, the first epoch at which the test error was at most E %.
--metric: test_error (default) or test_reconstruction (drawn with the MNIST reference points).
--only: comma-separated substrings of the run labels.
"""

from __future__ import annotations

import argparse
import sys

from drmm_lightning.paper.aggregate import REFERENCES
from drmm_lightning.viz.plots import epochs_to, plot_curves, read_curves

METRICS = ("test_error", "test_reconstruction")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="outputs/reproduce", help="folder of run directories")
    parser.add_argument("--out", default="curves.png", help="the figure's file")
    parser.add_argument("--only", default="", help="comma-separated substrings of run labels")
    parser.add_argument("--title", default="")
    parser.add_argument("--metric", default="test_error", choices=METRICS)
    parser.add_argument("--below", type=float, help="print the first epoch at this test error %%")
    args = parser.parse_args(argv)
    groups = read_curves(args.runs)
    wanted = args.only.split(",")
    groups = {k: v for k, v in groups.items() if any(w in k for w in wanted)}
    if not groups:
        sys.exit("No runs with curve.jsonl and results.json found.")
    references = REFERENCES if args.metric == "test_reconstruction" else None
    print(plot_curves(groups, args.out, args.title, args.metric, references))
    if args.below is not None:
        error = args.below
        for label, runs in sorted(groups.items()):
            reached = [epochs_to(run, error) for run in runs]
            text = ", ".join("not reached" if e is None else f"{e:.2f}" for e in reached)
            print(f"{label}: epochs to {error}% test error: {text}")


if __name__ == "__main__":
    main(sys.argv[1:])

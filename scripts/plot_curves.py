"""Plot test error against epoch for every run under a directory (curve.jsonl files).

python scripts/plot_curves.py runs=outputs/reproduce/table1 out=docs/img/curves.png [only=_100]
    [title=...] [below=1.5]
python scripts/plot_curves.py runs=outputs/ablation metric=test_reconstruction
    only=normalized,adjoint

below=E also prints, per run, the first epoch at which the test error was at most E %.
metric: test_error (default) or test_reconstruction (drawn with the MNIST reference points).
only: comma-separated substrings of the run labels.
"""

from __future__ import annotations

import sys

from drmm_lightning.paper.aggregate import REFERENCES
from drmm_lightning.viz.plots import epochs_to, plot_curves, read_curves


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    groups = read_curves(args.get("runs", "outputs/reproduce"))
    wanted = args.get("only", "").split(",")
    groups = {k: v for k, v in groups.items() if any(w in k for w in wanted)}
    if not groups:
        sys.exit("No runs with curve.jsonl and results.json found.")
    metric = args.get("metric", "test_error")
    references = REFERENCES if metric == "test_reconstruction" else None
    out = args.get("out", "curves.png")
    print(plot_curves(groups, out, args.get("title", ""), metric, references))
    if "below" in args:
        error = float(args["below"])
        for label, runs in sorted(groups.items()):
            reached = [epochs_to(run, error) for run in runs]
            text = ", ".join("not reached" if e is None else f"{e:.2f}" for e in reached)
            print(f"{label}: epochs to {error}% test error: {text}")


if __name__ == "__main__":
    main(sys.argv[1:])

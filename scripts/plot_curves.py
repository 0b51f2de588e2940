"""Plot test error against epoch for every run under a directory (curve.jsonl files).

python scripts/plot_curves.py runs=outputs/reproduce/table1 out=docs/img/curves.png [only=_100] [title=...] [below=1.5]

below=E also prints, per run, the first epoch at which the test error was at most E %.
"""

from __future__ import annotations

import sys

from drmm_lightning.viz.plots import epochs_to, plot_curves, read_curves


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    groups = read_curves(args.get("runs", "outputs/reproduce"))
    groups = {k: v for k, v in groups.items() if args.get("only", "") in k}
    if not groups:
        sys.exit("No runs with curve.jsonl and results.json found.")
    print(plot_curves(groups, args.get("out", "curves.png"), args.get("title", "")))
    if "below" in args:
        error = float(args["below"])
        for label, runs in sorted(groups.items()):
            reached = [epochs_to(run, error) for run in runs]
            text = ", ".join("not reached" if e is None else f"{e:.2f}" for e in reached)
            print(f"{label}: epochs to {error}% test error: {text}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Plot test error against epoch for every run under a directory (curve.jsonl files).

python scripts/plot_curves.py runs=outputs/reproduce/table1 out=docs/img/curves.png [only=_100] [title=...]
"""

from __future__ import annotations

import sys

from drmm_lightning.viz.plots import plot_curves, read_curves


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    groups = read_curves(args.get("runs", "outputs/reproduce"))
    groups = {k: v for k, v in groups.items() if args.get("only", "") in k}
    if not groups:
        sys.exit("No runs with curve.jsonl and results.json found.")
    print(plot_curves(groups, args.get("out", "curves.png"), args.get("title", "")))


if __name__ == "__main__":
    main(sys.argv[1:])

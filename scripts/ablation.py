"""The render-path ablation: every row of conf/experiment/ablation/ over seeds, then its table.

    python scripts/ablation.py                      # run every row over seeds 1, 2, 3, then report
    python scripts/ablation.py --only 'normalized*,entropy_only' --seeds 1
    python scripts/ablation.py --report [--out outputs/ablation] [--save docs/ablation_table.md]

Every row shares the protocol of conf/experiment/ablation/_protocol.yaml (MNIST, N_L = 100,
drmm5_nrm, 3 epochs) and differs from it in one named way. The table pairs each row with the
entropy_only control seed by seed. The key=value arguments go to drmm-train; one it would refuse
stops the script before any run.
"""

from __future__ import annotations

import argparse
import sys
from fnmatch import fnmatch
from pathlib import Path

from reproduce import run_presets

from drmm_lightning.cli.config import check_train_overrides, options
from drmm_lightning.paper.aggregate import ablation_markdown, collect

CONTROL = "entropy_only"


def rows() -> list[str]:
    """The ablation's rows, controls first (conf/experiment/ablation/*.yaml)."""
    names = [
        o.removeprefix("ablation/") for o in options("experiment") if o.startswith("ablation/")
    ]
    first = ["dcn", CONTROL, "adjoint"]
    return [n for n in first if n in names] + sorted(n for n in names if n not in first)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--only", default="*", help="comma-separated rows or patterns")
    parser.add_argument("--out", default="outputs/ablation", help="folder of the runs")
    parser.add_argument("--save", type=Path, help="also write the markdown table here")
    parser.add_argument("overrides", nargs="*", help="drmm-train overrides (key=value)")
    args = parser.parse_args(argv)
    patterns = args.only.split(",")
    chosen = [r for r in rows() if any(fnmatch(r, pattern) for pattern in patterns)]
    if not chosen:
        sys.exit(f"No ablation row matches --only {args.only}; rows: {', '.join(rows())}.")
    failed = []
    if not args.report:
        overrides = ["logger=csv", *args.overrides]
        check_train_overrides(overrides, f"ablation/{chosen[0]}", parser.format_usage())
        failed = run_presets("ablation", chosen, args.seeds, args.out, overrides)
    markdown = ablation_markdown(collect(args.out, group="ablation"), rows(), CONTROL)
    print(markdown)
    if args.save:
        args.save.write_text(markdown + "\n")
    if failed:
        print(f"Failed rows: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

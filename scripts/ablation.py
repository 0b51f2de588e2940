"""The render-path ablation: every row of conf/experiment/ablation/ over seeds, then its table.

    python scripts/ablation.py                      # run every row over seeds 1, 2, 3, then report
    python scripts/ablation.py only=normalized*,entropy_only seeds=1
    python scripts/ablation.py report [out=outputs/ablation] [save=docs/ablation_table.md]

Every row shares the protocol of conf/experiment/ablation/_protocol.yaml (MNIST, N_L = 100,
drmm5_nrm, 3 epochs) and differs from it in one named way. The table pairs each row with the
entropy_only control seed by seed. Other key=value arguments go to drmm-train unchanged.
"""

from __future__ import annotations

import sys
from fnmatch import fnmatch
from pathlib import Path

from reproduce import run_presets

from drmm_lightning.cli.config import options
from drmm_lightning.paper.aggregate import ablation_markdown, collect

OWN = ("seeds", "only", "out", "save")
CONTROL = "entropy_only"


def rows() -> list[str]:
    """The ablation's rows, controls first (conf/experiment/ablation/*.yaml)."""
    names = [
        o.removeprefix("ablation/") for o in options("experiment") if o.startswith("ablation/")
    ]
    first = ["dcn", CONTROL, "adjoint"]
    return [n for n in first if n in names] + sorted(n for n in names if n not in first)


def main(argv: list[str]) -> int:
    report_only = "report" in argv
    argv = [a for a in argv if a != "report"]
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in OWN)
    passthrough = [a for a in argv if a.split("=", 1)[0] not in OWN]
    out = args.get("out", "outputs/ablation")
    patterns = args.get("only", "*").split(",")
    chosen = [r for r in rows() if any(fnmatch(r, pattern) for pattern in patterns)]
    if not chosen:
        sys.exit(f"No ablation row matches only={args['only']}; rows: {', '.join(rows())}.")
    failed = []
    if not report_only:
        overrides = ["logger=csv", *passthrough]
        failed = run_presets("ablation", chosen, args.get("seeds", "1,2,3"), out, overrides)
    markdown = ablation_markdown(collect(out, group="ablation"), rows(), CONTROL)
    print(markdown)
    if "save" in args:
        Path(args["save"]).write_text(markdown + "\n")
    if failed:
        print(f"Failed rows: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

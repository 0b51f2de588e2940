"""Run the presets of one of the paper's tables over seeds, one Hydra multirun per cell.

    python scripts/reproduce.py --table 1 [--seeds 1,2,3] [--budget 1] [--only PATTERNS]
        [--out outputs/reproduce] [drmm-train overrides...]
    make table TABLE=1 ARGS="--budget 1 --only '*_100'"

--budget: epochs per run (and per phase of unsup-pretr), replacing the paper schedule's 500;
--only: comma-separated preset names or shell patterns (mnist_drmm5_*_100); default: every cell.
The key=value arguments go to drmm-train (e.g. logger=csv, data=image_folder
data.path=cifar10-jpeg for Table 4 on the JPEG copy); one it would refuse stops the script before
any run. A failed cell is reported and the others go on. Then: scripts/aggregate.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from fnmatch import fnmatch

from drmm_lightning.cli.config import check_train_overrides
from drmm_lightning.paper.tables import TABLES


def run_presets(
    group: str, presets: list[str], seeds: str, out: str, overrides: list[str]
) -> list[str]:
    """One drmm-train multirun over `seeds` per preset of conf/experiment/<group>/, into
    <out>/<preset>/<time>_<uid>/<job>; returns the presets whose run failed."""
    failed = []
    for i, preset in enumerate(presets, 1):
        command = [
            sys.executable,
            "-m",
            "drmm_lightning.train",
            "-m",
            f"experiment={group}/{preset}",
            f"seed={seeds}",
            f"hydra.sweep.dir={out}/{preset}/${{now:%Y-%m-%d_%H-%M-%S}}_${{uid:}}",
            *overrides,
        ]
        print(f"[{i}/{len(presets)}] {' '.join(command[2:])}", flush=True)
        start = time.time()
        if subprocess.run(command).returncode != 0:
            failed.append(preset)
        print(f"[{i}/{len(presets)}] {preset}: {(time.time() - start) / 60:.1f} min", flush=True)
    return failed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="1", choices=sorted(TABLES), help="the paper's table")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--budget", type=int, help="epochs per run (default: the presets' 500)")
    parser.add_argument("--only", default="*", help="comma-separated preset names or patterns")
    parser.add_argument("--out", default="outputs/reproduce", help="folder of the runs")
    parser.add_argument("overrides", nargs="*", help="drmm-train overrides (key=value)")
    args = parser.parse_args(argv)
    patterns = args.only.split(",")
    cells = list(dict.fromkeys(c.preset for c in TABLES[args.table].cells))
    presets = [p for p in cells if any(fnmatch(p, pattern) for pattern in patterns)]
    if not presets:
        sys.exit(
            f"No preset of table {args.table} matches --only {args.only}; presets: "
            f"{', '.join(cells)}."
        )
    out = f"{args.out}/table{args.table}"
    budget = (
        [f"trainer.max_epochs={args.budget}", f"regime.pretrain_epochs={args.budget}"]
        if args.budget is not None
        else []
    )
    overrides = budget + args.overrides
    check_train_overrides(overrides, f"paper/{presets[0]}", parser.format_usage())
    failed = run_presets("paper", presets, args.seeds, out, overrides)
    print(f"Done. Aggregate with: python scripts/aggregate.py --table {args.table} --runs {out}")
    if failed:
        print(f"Failed cells: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

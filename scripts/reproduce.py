"""Run the presets of one of the paper's tables over seeds, one Hydra multirun per cell.

    python scripts/reproduce.py table=1 [seeds=1,2,3] [budget=1] [only=PATTERNS]
        [out=outputs/reproduce] [hydra overrides...]
    make table TABLE=1 ARGS="budget=1 only=*_100"

budget: epochs per run (and per phase of unsup-pretr), replacing the paper schedule's 500;
only: comma-separated preset names or shell patterns (mnist_drmm5_*_100); default: every cell.
Other key=value arguments go to drmm-train unchanged (e.g. logger=csv, data=image_folder
data.path=cifar10-jpeg for Table 4 on the JPEG copy). A failed cell is reported and the others go
on. Then: scripts/aggregate.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from fnmatch import fnmatch

from drmm_lightning.paper.tables import TABLES

OWN = ("table", "seeds", "budget", "only", "out")


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
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in OWN)
    passthrough = [a for a in argv if a.split("=", 1)[0] not in OWN]
    table = args.get("table", "1")
    if table not in TABLES:
        sys.exit(f"Unknown table {table!r}; valid: {', '.join(TABLES)}.")
    patterns = args.get("only", "*").split(",")
    cells = list(dict.fromkeys(c.preset for c in TABLES[table].cells))
    presets = [p for p in cells if any(fnmatch(p, pattern) for pattern in patterns)]
    if not presets:
        sys.exit(
            f"No preset of table {table} matches only={args['only']}; presets: {', '.join(cells)}."
        )
    out = f"{args.get('out', 'outputs/reproduce')}/table{table}"
    budget = (
        [f"trainer.max_epochs={args['budget']}", f"regime.pretrain_epochs={args['budget']}"]
        if "budget" in args
        else []
    )
    failed = run_presets("paper", presets, args.get("seeds", "1,2,3"), out, budget + passthrough)
    print(f"Done. Aggregate with: python scripts/aggregate.py table={table} runs={out}")
    if failed:
        print(f"Failed cells: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Print a paper table from run directories: measured mean +- std over seeds beside the paper.

    python scripts/aggregate.py --table 1 [--runs outputs/reproduce/table1]
        [--out docs/results_table1.md]

Reads only the results.json files the runs wrote; works on partial results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drmm_lightning.paper.aggregate import collect, table_markdown
from drmm_lightning.paper.tables import TABLES


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="1", choices=sorted(TABLES), help="the paper's table")
    parser.add_argument("--runs", help="run directories (default: outputs/reproduce/table<N>)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    runs = args.runs or f"outputs/reproduce/table{args.table}"
    markdown = table_markdown(args.table, collect(runs))
    print(markdown)
    if args.out:
        args.out.write_text(markdown + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Print a paper table from run directories: measured mean +- std over seeds beside the paper.

    python scripts/aggregate.py table=1 [runs=outputs/reproduce/table1] [out=docs/results_table1.md]

Reads only the results.json files the runs wrote; works on partial results.
"""

from __future__ import annotations

import sys
from pathlib import Path

from drmm_lightning.paper.aggregate import collect, table_markdown


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    table = args.get("table", "1")
    markdown = table_markdown(table, collect(args.get("runs", f"outputs/reproduce/table{table}")))
    print(markdown)
    if "out" in args:
        Path(args["out"]).write_text(markdown + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

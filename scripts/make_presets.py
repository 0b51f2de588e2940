"""Write the leaf paper presets conf/experiment/paper/<preset>.yaml from the table definitions
in drmm_lightning/paper/tables.py, the one place that holds the paper's cells and numbers.

    python scripts/make_presets.py [--check]    # --check: exit 1 if a file differs
"""

from __future__ import annotations

import argparse
import sys

from drmm_lightning.cli.config import CONF_DIR
from drmm_lightning.paper.tables import preset_files


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs")
    check = parser.parse_args(argv).check
    folder = CONF_DIR / "experiment" / "paper"
    stale = []
    for preset, text in preset_files().items():
        path = folder / f"{preset}.yaml"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not check:
            path.write_text(text)
    leaves = {p.stem for p in folder.glob("[!_]*.yaml")}
    orphans = sorted(leaves - set(preset_files()))
    for name in orphans:
        print(f"not in any table (remove it or add its cell): {folder / name}.yaml")
    verb = "differ from the tables" if check else "written"
    print(f"{len(stale)} preset file(s) {verb}: {', '.join(stale) or 'none'}")
    return 1 if check and (stale or orphans) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Issue 29's report of part N (nuisance probing): the probes' held-out scores per layer, read off
each run's probe.json, and what the rendering keeps beside the CNN and entropy minimisation,
paired by seed (docs/results.md, "Nuisance probing"; the thresholds are fixed there first)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ..viz.plots import Series, probe_panels, probe_series
from .campaign import (
    ALL_LABELS,
    CONTROL,
    DRMM,
    METRIC,
    N2_ROWS,
    NUISANCE_RUNS,
    Run,
    read_results,
)

MARGIN = 0.02  # a difference of scores counts when every seed's exceeds it in one direction
NEAR_BEST = 0.9  # N1: the class is decodable from the first layer reaching 90% of its best


def read_probe(run: Run, out: Path) -> dict[str, Any] | None:
    """The probe.json of a run (None if not probed yet), with the run's test error beside it
    ("test_error", from its results.json; None where that is missing)."""
    path = run.probe_file(out)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    results = read_results(out, [run]).get(run)
    record["test_error"] = results["metrics"].get(METRIC) if results else None
    return record


def error_text(record: dict[str, Any]) -> str:
    """'test error 4.90%' of a probed run, as the report names it."""
    error = record.get("test_error")
    return "test error unknown" if error is None else f"test error {error:.2f}%"


def activations(record: dict[str, Any]) -> list[str]:
    """The activation feature sets, bottom up (the image first)."""
    return [n for n in record["features"] if n == "image" or n.startswith("layer")]


def first_near_best(record: dict[str, Any], variable: str = "class") -> str:
    """The lowest layer whose score reaches NEAR_BEST of the best layer's."""
    names = activations(record)
    best = max(record["features"][n][variable] for n in names)
    return next(n for n in names if record["features"][n][variable] >= NEAR_BEST * best)


def score_table(record: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """A markdown table: a row per feature set, a column per variable."""
    variables = record["variables"]
    lines = [
        "| features | dim | " + " | ".join(variables) + " |",
        "|---" * (len(variables) + 2) + "|",
    ]
    for name in names or list(record["features"]):
        scores = record["features"][name]
        lines.append(
            f"| {name} | {scores['dim']} | "
            + " | ".join(f"{scores[v]:.3f}" for v in variables)
            + " |"
        )
    return lines


def difference(
    treated: dict[int, dict[str, Any]], control: dict[int, dict[str, Any]], name: str, variable: str
) -> tuple[float, str]:
    """The mean over seeds of treated - control, and 'more' / 'less' when every seed's
    difference passes MARGIN in that direction, else 'same'."""
    seeds = sorted(treated.keys() & control.keys())
    diffs = [
        treated[s]["features"][name][variable] - control[s]["features"][name][variable]
        for s in seeds
    ]
    verdict = (
        "more"
        if all(d > MARGIN for d in diffs)
        else "less"
        if all(d < -MARGIN for d in diffs)
        else "same"
    )
    return sum(diffs) / len(diffs), verdict


def tally(cells: dict[tuple[str, str], tuple[float, str]], activation_names: list[str]) -> str:
    """How many (feature set, variable) cells are more / less / same, naming the first two kinds;
    then the same count over the switches alone (the feature sets not in `activation_names`)."""

    def count(chosen: dict[tuple[str, str], tuple[float, str]]) -> str:
        parts = []
        for verdict in ("more", "less"):
            named = [f"{n} {v} {d:+.3f}" for (n, v), (d, x) in chosen.items() if x == verdict]
            parts.append(f"{verdict} {len(named)}" + (f" ({', '.join(named)})" if named else ""))
        same = sum(x == "same" for _, x in chosen.values())
        return f"of {len(chosen)} cells, " + ", ".join(parts) + f", same {same}"

    switches = {k: c for k, c in cells.items() if k[0] not in activation_names}
    text = f"In all, {count(cells)}."
    return text + (f" The switches alone: {count(switches)}." if switches else "")


def n1_runs() -> list[Run]:
    """The CNN supervised on all labels with the nuisance sets 1, 2 and all, seed 1."""
    return [
        r
        for r in NUISANCE_RUNS
        if r.row.startswith("dcn") and r.num_labeled == ALL_LABELS and r.seed == 1
    ]


def n1_markdown(out: Path) -> list[str]:
    """The paper's claim: the CNN with 1, 2 and all nuisances, seed 1."""
    lines = ["#### Part N1: the CNN (dcn, all labels) with 1, 2 and all nuisances, seed 1"]
    for run in n1_runs():
        record = read_probe(run, out)
        if record is None:
            lines += ["", f"{run.row}: not probed yet"]
            continue
        top = activations(record)[-1]
        kept = ", ".join(
            f"{v} {record['features'][top][v]:.2f} of best "
            f"{max(record['features'][n][v] for n in activations(record)):.2f}"
            for v in record["variables"][1:]
        )
        lines += [
            "",
            f"{run.row} ({', '.join(record['variables'][1:])}; {error_text(record)}): the class "
            "reaches "
            f"{NEAR_BEST:.0%} of its best accuracy at {first_near_best(record)}; at the top "
            f"({top}): {kept}",
            "",
            *score_table(record),
        ]
    return lines


def n2_probes(out: Path, n: int) -> dict[str, dict[int, dict[str, Any]]]:
    """Part N2's probes at N_L = n: row -> seed -> probe.json, the probed runs only."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for run in NUISANCE_RUNS:
        if run.num_labeled == n and run.row in N2_ROWS[n] and (record := read_probe(run, out)):
            found.setdefault(run.row, {})[run.seed] = record
    return found


def regime_name(n: int) -> str:
    """How the report names the regime of N_L = n."""
    return "supervised, all labels" if n == ALL_LABELS else f"semi-supervised, N_L = {n}"


def n2_markdown(out: Path) -> list[str]:
    """What the rendering keeps: every row's scores (a table per seed), and normalized against
    each other row, paired by seed."""
    lines = []
    for n, rows in N2_ROWS.items():
        regime = regime_name(n)
        found = n2_probes(out, n)
        lines += ["", f"#### Part N2: {regime}, all nuisances"]
        missing = [
            f"{r.row} seed {r.seed}"
            for r in NUISANCE_RUNS
            if r.num_labeled == n and r.row in rows and r.seed not in found.get(r.row, {})
        ]
        if missing:
            lines += ["", "Not probed yet: " + ", ".join(missing)]
        for row, records in found.items():
            for seed, record in sorted(records.items()):
                lines += [
                    "",
                    f"{row} seed {seed} ({error_text(record)}):",
                    "",
                    *score_table(record),
                ]
        if DRMM not in found:
            continue
        record = next(iter(found[DRMM].values()))
        variables = record["variables"]
        for other in (r for r in (CONTROL, "dcn") if r in found):
            seeds = sorted(found[DRMM].keys() & found[other].keys())
            cells = {
                (name, v): difference(found[DRMM], found[other], name, v)
                for name in record["features"]
                for v in variables
            }
            lines += [
                "",
                f"{DRMM} - {other}, mean over seeds {seeds} (more / less: every seed beyond "
                f"{MARGIN}):",
                "",
                "| features | " + " | ".join(variables) + " |",
                "|---" * (len(variables) + 1) + "|",
                *[
                    f"| {name} | "
                    + " | ".join(f"{d:+.3f} ({x})" for d, x in (cells[name, v] for v in variables))
                    + " |"
                    for name in record["features"]
                ],
                "",
                tally(cells, activations(record)),
            ]
    return lines


def nuisance_markdown(out: Path) -> str:
    """Part N's report: N1, then N2 per regime."""
    return "\n".join(n1_markdown(out) + n2_markdown(out))


def n1_panels(out: Path) -> dict[str, Series]:
    """Fig. 2 left per nuisance set (N1): the CNN's every variable against its activation layer."""
    panels = {}
    for run in n1_runs():
        if record := read_probe(run, out):
            names = probe_panels(record)["activations"]
            panels[f"{run.row}: {', '.join(record['variables'][1:])}"] = probe_series(record, names)
    return panels


def n2_panels(out: Path, n: int) -> dict[str, Series]:
    """N2 at N_L = n: a panel per variable and feature kind (activations, switches a), a line per
    row, its score at each layer averaged over the row's probed seeds."""
    found = n2_probes(out, n)
    panels: dict[str, Series] = {}
    for row, records in found.items():
        first = next(iter(records.values()))
        kinds = probe_panels(first)
        for kind in ("activations", "switches a"):
            names = kinds.get(kind, [])
            for variable in first["variables"]:
                mean = [
                    (
                        layer,
                        statistics.fmean(r["features"][name][variable] for r in records.values()),
                    )
                    for layer, name in names
                ]
                panels.setdefault(f"{variable}: {kind}", {})[f"{row} ({len(records)} seeds)"] = mean
    return panels

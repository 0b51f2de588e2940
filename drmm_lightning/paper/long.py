"""Issue 28's report of part L (the long budgets): test error read off each run's curve at fixed
epochs, epochs (and minutes) to a test error, minutes summed over a resumed run's pieces, and the
rendering's effect paired by seed, beside the paper's numbers and the 3-epoch campaign's."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..viz.plots import epochs_to
from .campaign import (
    COLLAPSE,
    CONTROL,
    DRMM,
    EPOCH,
    GPU_RUNS,
    LONG_EPOCHS,
    LONG_READ_AT,
    LONG_RUNS,
    LONG_THRESHOLDS,
    METRIC,
    Run,
    mean,
    paired,
    paper_value,
)

# The 3-epoch campaign's test error (%) of the same row and seed (docs/results.md: part 1 and
# part 2 at precision=auto; `adjoint` at N_L = 100 from the fp32 render-path ablation, the only
# 3-epoch runs of that row there). The long runs are read against them.
THREE_EPOCH: dict[tuple[str, int, int], float] = {
    **{(CONTROL, 100, s): e for s, e in ((1, 2.29), (2, 11.94), (3, 2.61))},
    **{(DRMM, 100, s): e for s, e in ((1, 2.41), (2, 2.23), (3, 2.45))},
    **{("adjoint", 100, s): e for s, e in ((1, 2.47), (2, 11.21), (3, 2.66))},
    **{(CONTROL, 3000, s): e for s, e in ((1, 1.59), (2, 1.59))},
    **{(DRMM, 3000, s): e for s, e in ((1, 1.58), (2, 1.59))},
}
# The paper's Table 3 numbers of the supervised presets, and Section 4's epochs to 1.5% (Fig. 2
# middle: the RFM by EG in 18 epochs, the 1-layer Convnet by backprop in 40).
PAPER_SUP = {"drmm5_sup": 0.89, "convnet5_sup": 0.81, "rfm_sup": 1.21, "convnet1_sup": 1.30}
PAPER_EPOCHS_TO_1_5 = {"rfm_sup": 18, "convnet1_sup": 40}
EVERY_RUN = LONG_RUNS + GPU_RUNS  # the CPU queue's runs and the GPU rows (LG), reported alike


def read_curve(path: Path) -> list[dict[str, Any]]:
    """The points of a curve.jsonl by step; a step recorded twice (by a piece killed after the
    point and before its checkpoint, then by the piece that redid it) keeps the later record."""
    points: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            point = json.loads(line)
            points[point["step"]] = point
    return [points[step] for step in sorted(points)]


def error_at(curve: list[dict[str, Any]], epoch: int) -> float | None:
    """The test error (%) recorded after `epoch` whole epochs (None if not recorded)."""
    return next((p["test_error"] for p in curve if p["step"] == epoch * EPOCH), None)


def minutes_to(curve: list[dict[str, Any]], error: float) -> float | None:
    """The run's minutes (summed over pieces) when its test error first reached `error`."""
    point = next((p for p in curve if p["test_error"] <= error), None)
    return None if point is None or "elapsed_s" not in point else point["elapsed_s"] / 60


def minutes_per_epoch(curve: list[dict[str, Any]]) -> float | None:
    """The median over consecutive curve points of minutes per epoch (robust to the few epochs
    that shared the CPU with other work)."""
    timed = [p for p in curve if "elapsed_s" in p]
    rates = [
        (b["elapsed_s"] - a["elapsed_s"]) / 60 / (b["epoch"] - a["epoch"])
        for a, b in zip(timed, timed[1:])
        if b["epoch"] > a["epoch"]
    ]
    return statistics.median(rates) if rates else None


def total_minutes(record: dict[str, Any]) -> tuple[float, int]:
    """(minutes, pieces): the run's wall time summed over the pieces it ran in."""
    pieces = record.get("pieces") or [{"seconds": record["wall_time_s"]}]
    return sum(p["seconds"] for p in pieces) / 60, len(pieces)


def collect(out: Path, runs: list[Run]) -> dict[Run, dict[str, Any]]:
    """Per run that has started: its curve, and its results.json record once finished."""
    found: dict[Run, dict[str, Any]] = {}
    for run in runs:
        curves = sorted(run.directory(out).rglob("curve.jsonl"))
        if not curves:
            continue
        results = curves[-1].parent / "results.json"
        found[run] = {
            "curve": read_curve(curves[-1]),
            "record": json.loads(results.read_text()) if results.is_file() else None,
        }
    return found


def _f(value: float | None, digits: int = 2) -> str:
    """A number for the tables; "-" for none."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def paper_of(run: Run) -> float | None:
    """The paper's test error (%) for the run's row: Table 3 (L3, L4) or Table 1 (L1, L2)."""
    return (
        PAPER_SUP.get(run.row)
        if run.part in ("L3", "L4")
        else paper_value(run.row, run.num_labeled)
    )


def run_row(run: Run, found: dict[str, Any]) -> str:
    """One table line: errors at the read-off epochs, the final numbers, the references, cost."""
    curve, record = found["curve"], found["record"]
    at = " / ".join(_f(error_at(curve, e)) for e in LONG_READ_AT[run.part])
    if record is None:
        state = f"cut off at epoch {curve[-1]['epoch']:.1f}"
        final, rec, argmin, minutes = state, "-", "-", "-"
    else:
        m = record["metrics"]
        final = _f(m.get(METRIC))
        rec = _f(m.get("test/reconstruction"), 4)
        argmin = _f(100 * m["test/render_argmin_acc"], 1) if "test/render_argmin_acc" in m else "-"
        spent, pieces = total_minutes(record)
        minutes = f"{spent:.1f} ({pieces} piece{'s' * (pieces > 1)})"
    three = THREE_EPOCH.get((run.row, run.num_labeled, run.seed))
    return (
        f"| {run.row} | {run.seed} | {at} | {final} | {_f(paper_of(run))} | {_f(three)} "
        f"| {rec} | {argmin} | {minutes} | {_f(minutes_per_epoch(curve))} |"
    )


def rendering_effect(runs: list[Run], found: dict[Run, dict[str, Any]], part: str) -> list[str]:
    """`normalized` minus `entropy_only`, paired by seed, at each read-off epoch (L1, L2)."""
    lines = [
        "",
        f"The rendering's effect: `{DRMM}` minus `{CONTROL}` per seed (pp), at each epoch read off"
        + (f"; collapse: test error above {COLLAPSE:g}%" if part == "L1" else "")
        + ".",
        "",
        "| epoch | difference per seed (pp) | DRMM better | mean (pp) | sign p | collapsed: "
        "control / DRMM |",
        "|---|---|---|---|---|---|",
    ]
    for epoch in LONG_READ_AT[part]:
        errors = {}
        for row in (CONTROL, DRMM):
            errors[row] = {
                r.seed: e
                for r in runs
                if r.row == row
                and r in found
                and (e := error_at(found[r]["curve"], epoch)) is not None
            }
        pair = paired(errors[CONTROL], errors[DRMM])
        if not pair.n:
            lines.append(f"| {epoch} | no pairs yet | | | | |")
            continue
        per_seed = ", ".join(f"{s}: {d:+.2f}" for s, d in sorted(pair.differences.items()))
        collapsed = " / ".join(
            str(sum(e > COLLAPSE for e in errors[row].values())) if part == "L1" else "-"
            for row in (CONTROL, DRMM)
        )
        lines.append(
            f"| {epoch} | {per_seed} | {pair.negative} of {pair.n} "
            f"| {mean(list(pair.differences.values())):+.2f} | {pair.sign_p:.3g} | {collapsed} |"
        )
    return lines


def thresholds(runs: list[Run], found: dict[Run, dict[str, Any]]) -> list[str]:
    """L4: epochs (and minutes) to each threshold, against the paper's epochs to 1.5%."""
    names = " | ".join(f"epochs (minutes) to {t:g}%" for t in LONG_THRESHOLDS)
    lines = ["", f"| row | seed | {names} | paper: epochs to 1.5% |", "|---|---|---|---|---|"]
    for run in runs:
        if run not in found:
            continue
        curve = found[run]["curve"]
        cells = []
        for t in LONG_THRESHOLDS:
            epoch = epochs_to(curve, t)
            cells.append(
                "not reached" if epoch is None else f"{epoch:g} ({_f(minutes_to(curve, t), 1)})"
            )
        lines.append(
            f"| {run.row} | {run.seed} | {' | '.join(cells)} "
            f"| {PAPER_EPOCHS_TO_1_5.get(run.row, '-')} |"
        )
    return lines


TITLES = {
    "L1": "MNIST, N_L = 100",
    "L2": "MNIST, N_L = 3000",
    "L3": "Table 3, supervised on all 60,000 labels",
    "L4": "Fig. 2 middle: the RFM by EG against the 1-layer Convnet by backprop, 60,000 labels",
    "LG": "MNIST, N_L = 100, on a lent GPU (scripts/gpu_long.sh)",
}


def long_markdown(out: Path) -> str:
    """Every part of L: a table per part (runs in the queue's order), what is still to run; the
    GPU rows (LG) once a device has run any of them."""
    found = collect(out, EVERY_RUN)
    sections = []
    for part in ("L1", "L2", "L3", "L4", "LG"):
        runs = [r for r in EVERY_RUN if r.part == part]
        if part == "LG" and not any(r in found for r in runs):
            continue
        epochs = " / ".join(map(str, LONG_READ_AT[part]))
        lines = [
            f"#### Part {part}: {TITLES[part]}, {LONG_EPOCHS[part]} epochs",
            "",
            f"| row | seed | test error % at {epochs} epochs | final | paper | 3-epoch campaign "
            "| test reconstruction | render-argmin % | minutes (pieces) | minutes / epoch |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *[run_row(r, found[r]) for r in runs if r in found],
        ]
        if part in ("L1", "L2"):
            lines += rendering_effect(runs, found, part)
        if part == "L4":
            lines += thresholds(runs, found)
        to_go = [r for r in runs if r not in found or found[r]["record"] is None]
        if to_go:
            lines += ["", "Still to run: " + ", ".join(f"{r.row} seed {r.seed}" for r in to_go)]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def long_curves(out: Path, part: str) -> tuple[dict[str, list[list[dict]]], dict[str, float]]:
    """({row: [curve of each seed]}, {paper label: value}) of one part, for plot_curves."""
    found = collect(out, [r for r in EVERY_RUN if r.part == part])
    groups: dict[str, list[list[dict]]] = {}
    references: dict[str, float] = {}
    for run, item in found.items():
        groups.setdefault(run.row, []).append(item["curve"])
        if (paper := paper_of(run)) is not None:
            references[f"paper {run.row}: {paper:g}%"] = paper
    return groups, references

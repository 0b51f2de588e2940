"""Turn run directories into the paper's tables: mean +- std over seeds next to the paper's value.

Reads only what the runs wrote (results.json, one per run); cells without runs say so.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..cli.config import CONF_DIR
from .tables import TABLES, Cell

METRIC = "test/error"
RECONSTRUCTION = "test/reconstruction"  # per-pixel squared error of the rendered test images


# Rows of the 3-epoch ablation protocol that measure a Table-1 cell on drmm5_nrm (the campaign of
# issue 20 runs them at N_L = 100 ... 3000): the paper table shows them beside its own rows. A row
# joins the first of its cells the paper has at that N_L (NN+KL is given at N_L = 100 only; at the
# other budgets `adjoint` is held against the paper's 5-layer DRMM, as `normalized` is).
ABLATION_CELLS = {
    "dcn": ("mnist_convnet5_sup",),
    "entropy_only": ("mnist_drmm5_entropy_only_semi_sup",),
    "normalized": ("mnist_drmm5_semi_sup",),
    "adjoint": ("mnist_drmm5_nn_kl_semi_sup", "mnist_drmm5_semi_sup"),
}


def ablation_cell(row: str, num_labeled: Any) -> str:
    """The Table-1 preset an ablation row joins at N_L (its first cell if the paper has none)."""
    presets = {cell.preset for cell in TABLES["1"].cells}
    names = [f"{cell}_{num_labeled}" for cell in ABLATION_CELLS[row]]
    return next((name for name in names if name in presets), names[0])


def collect(root: str | Path, group: str = "paper") -> dict[tuple[str, str], list[dict[str, Any]]]:
    """results.json records under `root` of the presets in experiment/<group>/, grouped by
    (preset, model): a run with a model override (e.g. model=drmm5_nrm) is kept apart. For the
    paper's tables, ablation rows that measure a cell (ABLATION_CELLS) join it as
    (cell preset, "<model>, ablation/<row>")."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(Path(root).rglob("results.json")):
        record = json.loads(path.read_text())
        choices = record.get("choices") or {}
        experiment = choices.get("experiment") or ""
        if METRIC not in record.get("metrics", {}):
            continue
        record["path"] = str(path.parent)
        row = experiment.removeprefix("ablation/")
        if experiment.startswith(f"{group}/"):
            runs[experiment.removeprefix(f"{group}/"), choices.get("model", "")].append(record)
        elif group == "paper" and experiment.startswith("ablation/") and row in ABLATION_CELLS:
            preset = ablation_cell(row, record.get("num_labeled"))
            runs[preset, f"{choices.get('model', '')}, {experiment}"].append(record)
    return runs


def cell_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of the test error over a cell's runs, and the budget used."""
    errors = [r["metrics"][METRIC] for r in records]
    return {
        "n": len(errors),
        "mean": statistics.fmean(errors),
        "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
        "seeds": sorted(r.get("seed") for r in records),
        "epochs": max(r.get("epochs", 0) for r in records),
        "steps": max(r.get("global_step", 0) for r in records),
        "minutes": statistics.fmean(r.get("wall_time_s", 0.0) for r in records) / 60,
        "per_seed": sorted((r.get("seed"), r["metrics"][METRIC]) for r in records),
        "reconstruction": [r["metrics"].get(RECONSTRUCTION) for r in records],
    }


def mean_std(stats: dict[str, Any]) -> str:
    """'mean ± std (n=k)' of a cell's test errors; a single run has no spread to show."""
    if stats["n"] == 1:
        return f"{stats['mean']:.2f} (n=1)"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f} (n={stats['n']})"


def format_cell(cell: Cell, stats: dict[str, Any] | None) -> str:
    """One markdown row: measured, paper, difference and budget (or 'no runs')."""
    paper = "-" if cell.paper is None else f"{cell.paper:.2f}"
    if stats is None:
        return f"| {cell.row} | {cell.column} | no runs | {paper} | | | | | |"
    measured = mean_std(stats)
    delta = "" if cell.paper is None else f"{stats['mean'] - cell.paper:+.2f}"
    budget = f"{stats['epochs']} ep / {stats['steps']} steps"
    per_seed = ", ".join(f"{seed}: {error:.2f}" for seed, error in stats["per_seed"])
    recon = [r for r in stats["reconstruction"] if r is not None]
    recon_text = f"{statistics.fmean(recon):.3f}" if recon else "-"
    return (
        f"| {cell.row} | {cell.column} | {measured} | {paper} | {delta} | {budget} "
        f"| {stats['minutes']:.1f} | {per_seed} | {recon_text} |"
    )


def preset_model(preset: str) -> str:
    """The architecture a preset selects (conf/experiment/paper/_<row>.yaml)."""
    base = OmegaConf.load(CONF_DIR / "experiment" / "paper" / f"_{preset.rsplit('_', 1)[0]}.yaml")
    assert isinstance(base, DictConfig)  # a preset is a mapping
    entries = [e for e in base.get("defaults", []) if isinstance(e, DictConfig)]
    return next((e["override /model"] for e in entries if "override /model" in e), "")


def table_markdown(table_id: str, runs: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    """A markdown table of every cell of table `table_id`, measured beside the paper."""
    if table_id not in TABLES:
        raise ValueError(f"Unknown table {table_id!r}; valid: {', '.join(TABLES)}.")
    table = TABLES[table_id]
    lines = [
        f"### {table.title}",
        "",
        "| model | N_L | measured test error % (mean ± std over seeds) | paper % | difference (pp) "
        "| budget | minutes per run | error per seed | test reconstruction |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    missing = 0
    for cell in table.cells:
        models = sorted(model for preset, model in runs if preset == cell.preset)
        if not models:
            missing += 1
            lines.append(format_cell(cell, None))
        for model in models:
            default = model == preset_model(cell.preset)
            shown = cell if default else replace(cell, row=f"{cell.row} [model={model}]")
            lines.append(format_cell(shown, cell_stats(runs[cell.preset, model])))
    lines += ["", f"{len(table.cells) - missing} of {len(table.cells)} cells have runs."]
    return "\n".join(lines)


# Reconstruction references on the MNIST test set, pixels in [0, 1] (docs/results.md).
REFERENCES = {"blank image": 0.112, "uniform grey": 0.095, "mean image": 0.067, "class mean": 0.053}
RENDER_ARGMIN = "test/render_argmin_acc"


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "-"


def ablation_markdown(
    runs: dict[tuple[str, str], list[dict[str, Any]]], rows: list[str], control: str
) -> str:
    """The ablation as a markdown table: test error per seed and its mean, the paired
    difference to `control` on each seed, test reconstruction (only where the row renders)
    and render-argmin accuracy."""
    by_row = {row: [r for (p, _), rs in runs.items() if p == row for r in rs] for row in rows}
    control_error = {r.get("seed"): r["metrics"][METRIC] for r in by_row.get(control, [])}
    lines = [
        "| row | test error % (mean ± std) | per seed | paired vs "
        f"{control} (pp, per seed) | test reconstruction | render-argmin acc % | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        records = by_row[row]
        if not records:
            lines.append(f"| {row} | no runs | | | | | |")
            continue
        stats = cell_stats(records)
        paired = [
            f"{seed}: {error - control_error[seed]:+.2f}"
            for seed, error in stats["per_seed"]
            if seed in control_error and row != control
        ]
        renders = [r for r in records if "train/reconstruction" in r["metrics"]]
        recon = [r["metrics"][RECONSTRUCTION] for r in renders if RECONSTRUCTION in r["metrics"]]
        argmin = [
            100 * r["metrics"][RENDER_ARGMIN] for r in renders if RENDER_ARGMIN in r["metrics"]
        ]
        per_seed = ", ".join(f"{seed}: {error:.2f}" for seed, error in stats["per_seed"])
        argmin_text = f"{statistics.fmean(argmin):.1f}" if argmin else "-"
        lines.append(
            f"| {row} | {mean_std(stats)} | {per_seed} "
            f"| {', '.join(paired) or '-'} | {_mean(recon)} | {argmin_text} "
            f"| {stats['minutes']:.1f} |"
        )
    refs = ", ".join(f"{name} {value}" for name, value in REFERENCES.items())
    lines += ["", f"Reconstruction references (MNIST test set, [0, 1] pixels): {refs}."]
    return "\n".join(lines)

"""Paper Fig. 2: learning curves (test error against epochs, from the runs' curve.jsonl files)
and nuisance probes (decodability against layer, from drmm-probe's probe.json)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curves(root: str | Path) -> dict[str, list[list[dict]]]:
    """Curves under `root`, grouped by "preset [model]" as recorded in each run's results.json."""
    groups: dict[str, list[list[dict]]] = defaultdict(list)
    for curve in sorted(Path(root).rglob("curve.jsonl")):
        results = curve.parent / "results.json"
        if not results.is_file():
            continue
        choices = json.loads(results.read_text()).get("choices", {})
        label = (
            f"{choices.get('experiment', '?').removeprefix('paper/')} [{choices.get('model', '?')}]"
        )
        groups[label].append([json.loads(line) for line in curve.read_text().splitlines() if line])
    return groups


def epochs_to(run: list[dict], error: float) -> float | None:
    """The first recorded epoch at which a run's test error is at most `error` (%), or None
    (paper Section 4: epochs to 1.5% for EG against backprop)."""
    return next((p["epoch"] for p in run if p["test_error"] <= error), None)


LABELS = {"test_error": "test error (%)", "test_reconstruction": "test reconstruction (per pixel)"}


def plot_curves(
    groups: dict[str, list[list[dict]]],
    path: str | Path,
    title: str = "",
    key: str = "test_error",
    references: dict[str, float] | None = None,
    x: str = "epoch",
) -> Path:
    """One line per run (same colour per group), `key` (test_error or test_reconstruction)
    against `x` (epoch or step), log scale; optional horizontal reference lines (name -> value)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, runs) in enumerate(sorted(groups.items())):
        for j, run in enumerate(runs):
            ax.plot(
                [p[x] for p in run],
                [p[key] for p in run],
                color=f"C{i}",
                alpha=0.8,
                label=f"{label} ({len(runs)} runs)" if j == 0 else None,
            )
    for name, value in (references or {}).items():
        ax.axhline(value, color="grey", linestyle=":", linewidth=1)
        ax.annotate(name, (0, value), fontsize=7, color="grey", va="bottom")
    ax.set(xlabel=x, ylabel=LABELS.get(key, key), yscale="log", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def read_logged(run: str | Path, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series of `keys` from a run's CSV logs (csv/version_*/metrics.csv)."""
    series: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    for table in sorted(Path(run).glob("csv/version_*/metrics.csv")):
        with open(table) as f:
            for row in csv.DictReader(f):
                for k in keys:
                    if row.get(k):
                        series[k].append((int(row["step"]), float(row[k])))
    return series


def plot_logged(
    runs: dict[str, str | Path], keys: list[str], path: str | Path, title: str = ""
) -> Path:
    """One panel per logged key (e.g. render/cosine), one line per labelled run, by step."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    for i, (label, run) in enumerate(sorted(runs.items())):
        for ax, points in zip(axes[0], read_logged(run, keys).values()):
            if points:
                ax.plot(*zip(*points), color=f"C{i}", alpha=0.8, label=label)
    for ax, key in zip(axes[0], keys):
        ax.set(xlabel="step", title=key)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def probe_panels(record: dict) -> dict[str, list[tuple[int, str]]]:
    """The probe's feature sets by panel, each as (layer number, name): activations (the image
    as layer 0), ReLU switches a, max-pool switches t; panels with no feature set are left out."""
    panels: dict[str, list[tuple[int, str]]] = {
        "activations": [],
        "switches a": [],
        "switches t": [],
    }
    for name in record["features"]:
        if name == "image":
            panels["activations"].append((0, name))
        elif name.startswith("layer"):
            panels["activations"].append((int(name.removeprefix("layer")), name))
        else:
            panels[f"switches {name[0]}"].append((int(name[1:]), name))
    return {k: v for k, v in panels.items() if v}


Series = dict[str, list[tuple[int, float]]]  # line label -> (layer, held-out score) points


def probe_series(record: dict, names: list[tuple[int, str]]) -> Series:
    """One probe's score of every variable at the feature sets `names` (a probe_panels panel)."""
    return {
        f"{v} ({'accuracy' if v == 'class' else 'R^2'})": [
            (layer, record["features"][name][v]) for layer, name in names
        ]
        for v in record["variables"]
    }


def plot_decodability(
    panels: dict[str, Series],
    path: str | Path,
    title: str = "",
    ncols: int = 3,
    chance: float | None = None,
) -> Path:
    """Fig. 2 left: how linearly decodable a variable is from each layer (class: held-out
    accuracy, nuisances: held-out R^2, shown down to -0.1), a panel per entry, a line per label
    (the same colour in every panel), `chance` as a dotted line."""
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        for label, points in series.items():
            ax.plot(
                [layer for layer, _ in points],
                [max(score, -0.1) for _, score in points],
                marker="o",
                color=f"C{labels.index(label)}",
                label=label,
            )
            ax.set_xticks([layer for layer, _ in points])
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="layer", ylabel="held-out decodability", title=panel, ylim=(-0.1, 1.02))
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    # one legend, from the first panel with the most lines (colours are shared across panels),
    # outside the last panel's right edge so that it covers no line
    sizes = [len(series) for series in panels.values()]
    handles, names = axes.flat[sizes.index(max(sizes))].get_legend_handles_labels()
    axes.flat[len(panels) - 1].legend(
        handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def plot_probe(record: dict, path: str | Path, title: str | None = None) -> Path:
    """One probe.json: a line per variable, a panel per feature kind (activations, switches)."""
    panels = {kind: probe_series(record, names) for kind, names in probe_panels(record).items()}
    return plot_decodability(
        panels,
        path,
        title if title is not None else record.get("model", ""),
        chance=record.get("chance", {}).get("class"),
    )


def _save(fig: plt.Figure, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

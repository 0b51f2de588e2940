"""Learning curves (paper Fig. 2): test error against epochs, from the runs' curve.jsonl files."""

from __future__ import annotations

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


def plot_curves(groups: dict[str, list[list[dict]]], path: str | Path, title: str = "") -> Path:
    """One line per run (same colour per group), test error (%) against epoch, log scale."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, runs) in enumerate(sorted(groups.items())):
        for j, run in enumerate(runs):
            ax.plot(
                [p["epoch"] for p in run],
                [p["test_error"] for p in run],
                color=f"C{i}",
                alpha=0.8,
                label=f"{label} ({len(runs)} runs)" if j == 0 else None,
            )
    ax.set(xlabel="epoch", ylabel="test error (%)", yscale="log", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

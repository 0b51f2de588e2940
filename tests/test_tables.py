"""Paper presets match their table cells; aggregation of run directories into tables."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from drmm_lightning.cli.config import CONF_DIR, options
from drmm_lightning.paper.aggregate import collect, table_markdown
from drmm_lightning.paper.tables import TABLES, all_presets, preset_files

from .conftest import make_config

ROW_MODELS = {"convnet5": "drmm5", "convnet1": "rfm", "convnet9": "drmm9"}


def test_every_cell_has_a_preset_and_every_paper_preset_a_cell() -> None:
    presets = {p.removeprefix("paper/") for p in options("experiment") if p.startswith("paper/")}
    assert presets == set(all_presets())


@pytest.mark.parametrize("preset", sorted(all_presets()))
def test_preset_matches_its_cell(preset: str, tmp_path: Path) -> None:
    cell = all_presets()[preset]
    cfg = make_config(tmp_path / "run", f"experiment=paper/{preset}")
    data, arch, *rest = preset.split("_")
    assert cfg.data.name == data and cfg.data.num_labeled == int(cell.column)
    assert cfg.model.arch == ROW_MODELS.get(arch, arch)
    regime = (
        "unsup_pretr" if "unsup_pretr" in preset else "semi_sup" if "semi_sup" in preset else "sup"
    )
    assert cfg.regime.name == regime
    generative = cfg.objective.terms.reconstruction.weight > 0
    assert generative == (not arch.startswith("convnet") and "entropy_only" not in preset)
    assert (cfg.objective.terms.kl.weight > 0) == ("nn_kl" in preset or "entropy_only" in preset)
    assert cfg.data.val_size == 0 and cfg.test_ckpt == "last"  # no selection on any held-out set


def fake_run(root: Path, preset: str, seed: int, error: float, model: str = "drmm5") -> None:
    run = root / f"{preset}_{model}_{seed}"
    run.mkdir(parents=True)
    record = {
        "metrics": {"test/error": error, "test/acc": 1 - error / 100},
        "seed": seed,
        "epochs": 2,
        "global_step": 1200,
        "wall_time_s": 600.0,
        "choices": {"experiment": f"paper/{preset}", "model": model},
    }
    (run / "results.json").write_text(json.dumps(record))


def test_aggregate_means_stds_and_paper_deltas(tmp_path: Path) -> None:
    errors = [3.0, 4.0, 6.5]
    for seed, error in enumerate(errors, 1):
        fake_run(tmp_path, "mnist_drmm5_semi_sup_100", seed, error)
    fake_run(tmp_path, "mnist_convnet5_sup_600", 1, 9.0)
    (tmp_path / "not_a_paper_run").mkdir()
    (tmp_path / "not_a_paper_run" / "results.json").write_text(
        json.dumps({"metrics": {"test/error": 1.0}, "choices": {}})
    )
    markdown = table_markdown("1", collect(tmp_path))
    mean, std = statistics.fmean(errors), statistics.stdev(errors)
    drmm_line = next(
        line for line in markdown.splitlines() if line.startswith("| DRMM 5-layer semi-sup | 100 |")
    )
    assert f"{mean:.2f} ± {std:.2f} (n=3)" in drmm_line
    assert "| 3.50 |" in drmm_line and f"{mean - 3.50:+.2f}" in drmm_line
    assert "2 ep / 1200 steps" in drmm_line
    convnet_line = next(
        line for line in markdown.splitlines() if "Convnet" in line and "| 600 |" in line
    )
    assert "9.00 (n=1)" in convnet_line and "±" not in convnet_line and "+1.14" in convnet_line
    no_runs = [line for line in markdown.splitlines() if "no runs" in line]
    assert len(no_runs) == len(TABLES["1"].cells) - 2
    assert f"2 of {len(TABLES['1'].cells)} cells have runs." in markdown


def test_aggregate_keeps_model_overrides_apart(tmp_path: Path) -> None:
    fake_run(tmp_path, "mnist_drmm5_semi_sup_100", 1, 40.0)
    fake_run(tmp_path, "mnist_drmm5_semi_sup_100", 1, 4.0, model="drmm5_nrm")
    lines = table_markdown("1", collect(tmp_path)).splitlines()
    assert any(line.startswith("| DRMM 5-layer semi-sup | 100 | 40.00") for line in lines)
    assert any(
        line.startswith("| DRMM 5-layer semi-sup [model=drmm5_nrm] | 100 | 4.00") for line in lines
    )


def test_aggregate_unknown_table() -> None:
    with pytest.raises(ValueError, match="valid: 1, 3, 4, 5"):
        table_markdown("2", {})


def test_learning_curve_plot(tmp_path: Path) -> None:
    from drmm_lightning.viz.plots import epochs_to, plot_curves, read_curves

    for seed in (1, 2):
        fake_run(tmp_path, "mnist_drmm5_semi_sup_100", seed, 5.0)
        run = tmp_path / f"mnist_drmm5_semi_sup_100_drmm5_{seed}"
        points = [
            {"step": s, "epoch": s / 600, "test_error": 90.0 / (1 + s)} for s in (0, 100, 200)
        ]
        (run / "curve.jsonl").write_text("\n".join(json.dumps(p) for p in points))
    groups = read_curves(tmp_path)
    assert (
        list(groups) == ["mnist_drmm5_semi_sup_100 [drmm5]"]
        and len(groups[next(iter(groups))]) == 2
    )
    path = plot_curves(groups, tmp_path / "curves.png")
    assert path.stat().st_size > 1000
    curve = groups[next(iter(groups))][0]  # errors 90, 0.89, 0.45 at epochs 0, 1/6, 1/3
    assert epochs_to(curve, 1.0) == pytest.approx(1 / 6) and epochs_to(curve, 0.1) is None


def test_paper_presets_are_what_the_tables_generate() -> None:
    """The leaf presets hold no numbers of their own: scripts/make_presets.py writes them from
    paper/tables.py, and a hand edit or a new cell without its file fails here."""
    folder = CONF_DIR / "experiment" / "paper"
    on_disk = {p.stem: p.read_text() for p in folder.glob("[!_]*.yaml")}
    assert on_disk == preset_files(), "run: python scripts/make_presets.py"

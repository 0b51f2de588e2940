"""Issue 28's long runs: a part killed mid-run resumes from its checkpoint through
`campaign.py run` and ends as an uninterrupted run would, the schedule stretches over the whole
budget, and the part-L report reads curves and summed pieces as a hand computation does."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from drmm_lightning.cli.checkpoints import read_checkpoint
from drmm_lightning.paper.campaign import PARTS, Run

ROOT = Path(__file__).resolve().parent.parent

# A tiny part of the ablation protocol: 20 steps of 20 + 20 images an epoch, three epochs, a
# test-curve point every 10 steps and last.ckpt every 5; killed at step KILL_AT when it is set.
TINY = Run(
    "T",
    "normalized",
    "ablation/normalized",
    100,
    3,
    (
        "data.num_labeled=100",
        "model=drmm2",
        "data.epoch_size=400",
        "data.labeled_batch_size=20",
        "data.unlabeled_batch_size=20",
        "data.eval_batch_size=1000",
        "data.download=false",
        "trainer.max_epochs=3",
        "trainer.limit_test_batches=1",
        "callbacks.test_curve.every_n_steps=10",
        "callbacks.step_checkpoint.every_n_train_steps=5",
        "callbacks.generative_images.every_n_epochs=0",
        "+callbacks.kill._target_=tests.stop_at.SignalAt",
        "+callbacks.kill.env=KILL_AT",
    ),
)


def campaign_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module("campaign")
    finally:
        sys.path.remove(str(ROOT / "scripts"))


@pytest.fixture
def tiny_part(monkeypatch):
    monkeypatch.setitem(PARTS, "T", [TINY])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two runs of one command: the same weights
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # tests.stop_at for the training process
    monkeypatch.delenv("KILL_AT", raising=False)
    return campaign_script()


def final(out: Path) -> tuple[dict, dict[str, torch.Tensor], list[dict]]:
    run = TINY.directory(out) / "0"
    results = json.loads((run / "results.json").read_text())
    curve = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    return results, read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"], curve


@pytest.mark.slow
def test_a_killed_long_run_resumes_from_its_checkpoint_and_ends_as_if_uninterrupted(
    tiny_part, tmp_path, monkeypatch, capfd, mnist
) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert tiny_part.main(["run", "--part", "T", "--out", str(whole)]) == 0

    monkeypatch.setenv("KILL_AT", "33")  # kill -9 in the second epoch, last.ckpt at step 30
    assert tiny_part.main(["run", "--part", "T", "--out", str(cut)]) == 1
    ckpt = TINY.directory(cut) / "0" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(ckpt)["global_step"] == 30
    monkeypatch.delenv("KILL_AT")
    capfd.readouterr()
    assert tiny_part.main(["run", "--part", "T", "--out", str(cut)]) == 0
    said = capfd.readouterr().out
    assert f"resuming {TINY.directory(cut)} from {ckpt}: step 30 (1 whole epochs done)" in said
    assert f"ckpt_path={ckpt}" in said

    (a, weights_a, curve_a), (b, weights_b, curve_b) = final(whole), final(cut)
    assert b["global_step"] == a["global_step"] == 60
    assert b["metrics"]["test/error"] == a["metrics"]["test/error"]
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], rtol=1e-5, atol=1e-6)
    # the curve: the same points, the kill's step-30 point recorded once (no step is redone)
    assert (
        [p["step"] for p in curve_b] == [p["step"] for p in curve_a] == [0, 10, 20, 30, 40, 50, 60]
    )
    assert [p["test_error"] for p in curve_b] == [p["test_error"] for p in curve_a]
    # two pieces, the first up to its checkpoint at step 30; minutes add them up
    pieces = b["pieces"]
    assert [(p["from_step"], p["to_step"]) for p in pieces] == [(0, 30), (30, 60)]
    assert b["wall_time_s"] == pytest.approx(sum(p["seconds"] for p in pieces), abs=0.2)
    assert len(a["pieces"]) == 1

    # a finished run is not run again
    capfd.readouterr()
    before = (TINY.directory(cut) / "0" / "results.json").stat().st_mtime
    assert tiny_part.main(["run", "--part", "T", "--out", str(cut)]) == 0
    assert "1 of 1 runs done; 0 to run" in capfd.readouterr().out
    assert (TINY.directory(cut) / "0" / "results.json").stat().st_mtime == before


def test_the_schedule_stretches_over_a_30_epoch_budget(tmp_path, mnist) -> None:
    """L1's own overrides (30 epochs) on epochs of 2 steps: the learning rate falls as 1e-3 *
    1e-3^(step / 60) and reaches 1e-6 at the last step, not at the 3-epoch protocol's end."""
    from drmm_lightning.cli.train import train

    from .conftest import tiny_config

    run = next(r for r in PARTS["L"] if r.part == "L1" and r.row == "normalized")
    assert "trainer.max_epochs=30" in run.train_overrides()
    cfg = tiny_config(
        tmp_path,
        *run.train_overrides(),
        "model=drmm2",
        "data.epoch_size=40",  # 2 steps of 20 + 20 an epoch: 60 steps in 30 epochs
        "data.val_size=0",  # the protocol's (TINY carves a validation split)
        "trainer.limit_train_batches=1.0",
        "callbacks.test_curve.every_n_steps=0",
        "callbacks.generative_images.every_n_epochs=0",
        "test=false",
    )
    train(cfg)
    (metrics,) = tmp_path.rglob("metrics.csv")
    lines = [line.split(",") for line in metrics.read_text().splitlines()]
    step, lr = lines[0].index("step"), lines[0].index("lr-Adam")
    rates = {int(r[step]): float(r[lr]) for r in lines[1:] if r[lr]}
    assert max(rates) == 59  # the lr each of the 60 optimizer steps used
    for s in (0, 6, 30, 59):
        assert rates[s] == pytest.approx(1e-3 * 1e-3 ** (s / 60), rel=1e-4)
    assert rates[6] > 100 * 1e-6  # 3 epochs in: far from the end of the decay
    saved = read_checkpoint(next(tmp_path.rglob("last.ckpt")))
    assert saved["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(1e-6)


def fake_run(out: Path, run: Run, curve: list[dict], record: dict | None) -> None:
    folder = run.directory(out) / "0"
    folder.mkdir(parents=True)
    (folder / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in curve))
    if record is not None:
        (folder / "results.json").write_text(json.dumps(record))


def long_run(part: str, row: str, seed: int) -> Run:
    return next(r for r in PARTS["L"] if (r.part, r.row, r.seed) == (part, row, seed))


def test_the_part_l_report_equals_a_hand_computation(tmp_path) -> None:
    from drmm_lightning.paper.long import long_markdown

    every_epoch = [{"step": 600 * e, "epoch": float(e)} for e in range(31)]
    control = [
        {**p, "test_error": 10 - 0.2 * p["epoch"], "elapsed_s": 90.0 * p["epoch"]}
        for p in every_epoch
    ]
    # step 1800 recorded twice (a kill between the point and its checkpoint): the later counts
    control.insert(4, {"step": 1800, "epoch": 3.0, "test_error": 9.3, "elapsed_s": 270.0})
    drmm = [
        {**p, "test_error": 5 - 0.1 * p["epoch"], "elapsed_s": 120.0 * p["epoch"]}
        for p in every_epoch
    ]
    for p in drmm[6:]:  # epoch 5 -> 6 shared the CPU: 10 minutes instead of 2
        p["elapsed_s"] += 480.0
    pieces = [
        {"from_step": 0, "to_step": 9000, "seconds": 1000.0},
        {"from_step": 9000, "to_step": 18000, "seconds": 1400.0},
    ]
    fake_run(
        tmp_path,
        long_run("L1", "entropy_only", 1),
        control,
        {"metrics": {"test/error": 4.0}, "wall_time_s": 1800.0},
    )
    fake_run(
        tmp_path,
        long_run("L1", "normalized", 1),
        drmm,
        {
            "metrics": {
                "test/error": 2.0,
                "test/reconstruction": 0.0123,
                "test/render_argmin_acc": 0.8,
            },
            "wall_time_s": 2400.0,
            "pieces": pieces,
        },
    )
    fake_run(tmp_path, long_run("L1", "adjoint", 1), drmm[:13], None)  # cut off at epoch 12
    half_epochs = [{"step": 300 * k, "epoch": k / 2} for k in range(81)]
    rfm = [
        {**p, "test_error": 3.0 - 0.1 * p["epoch"], "elapsed_s": 60.0 * p["epoch"]}
        for p in half_epochs
    ]
    fake_run(
        tmp_path,
        long_run("L4", "rfm_sup", 1),
        rfm,
        {"metrics": {"test/error": 1.0}, "wall_time_s": 2400.0},
    )

    report = long_markdown(tmp_path)
    lines = report.splitlines()
    # at 3 / 10 / 30 epochs, final, paper (none for the control), the 3-epoch campaign, cost
    assert (
        "| entropy_only | 1 | 9.30 / 8.00 / 4.00 | 4.00 | - | 2.29 | - | - | 30.0 (1 piece) "
        "| 1.50 |" in lines
    )
    # minutes summed over the two pieces (1000 + 1400 s), the median epoch 2 minutes
    assert (
        "| normalized | 1 | 4.70 / 4.00 / 2.00 | 2.00 | 3.50 | 2.41 | 0.0123 | 80.0 "
        "| 40.0 (2 pieces) | 2.00 |" in lines
    )
    assert any(
        line.startswith("| adjoint | 1 | 4.70 / 4.00 / - | cut off at epoch 12.0 |")
        for line in lines
    )
    # paired at each epoch: 4.70 - 9.30, 4.00 - 8.00, 2.00 - 4.00
    assert "| 3 | 1: -4.60 | 1 of 1 | -4.60 | 1 | 1 / 0 |" in lines
    assert "| 30 | 1: -2.00 | 1 of 1 | -2.00 | 1 | 0 / 0 |" in lines
    # L4: epochs (minutes) to 2.0% and 1.5%, against the paper's 18
    assert "| rfm_sup | 1 | 10 (10.0) | 15 (15.0) | 18 |" in lines
    assert "Still to run: " in report and "adjoint seed 1" in report


def test_the_gpu_rows_run_only_when_named_and_report_beside_the_cpu_runs(tmp_path) -> None:
    """Part LG (scripts/gpu_long.sh): L1's DRMM rows at 100 epochs with trainer=gpu, never in a
    default campaign call on this CPU, reported as their own table once a device ran them."""
    from drmm_lightning.paper.long import long_markdown

    gpu = PARTS["LG"]
    assert {r.row for r in gpu} == {"normalized", "adjoint"} and {r.seed for r in gpu} == {1}
    for run in gpu:
        assert {"trainer=gpu", "trainer.max_epochs=100"} <= set(run.train_overrides())
    assert not any("trainer=gpu" in o for r in PARTS["L"] for o in r.overrides)
    assert "#### Part LG" not in long_markdown(tmp_path)
    curve = [{"step": 600 * e, "epoch": float(e), "test_error": 5.0 - 0.04 * e} for e in range(41)]
    fake_run(tmp_path, gpu[0], curve, None)  # cut off by the device call's cap at epoch 40
    report = long_markdown(tmp_path)
    assert "#### Part LG: MNIST, N_L = 100, on a lent GPU" in report
    assert "| normalized | 1 | 4.88 / 4.60 / 3.80 / - | cut off at epoch 40.0 |" in report
    assert "Still to run: normalized seed 1, adjoint seed 1" in report.split("#### Part LG")[1]


def test_where_prints_each_runs_job_directory(tmp_path, capsys) -> None:
    """scripts/gpu_long.sh reads a row's directory from `campaign.py where`, not its own copy."""
    assert campaign_script().main(["where", "--part", "LG", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(run.directory(tmp_path) / "0") for run in PARTS["LG"]]


def test_last_ckpt_holds_the_final_step_with_a_validation_split(tmp_path, mnist) -> None:
    """Lightning writes save_last only beside a new best checkpoint: without epoch_checkpoint a
    run whose best validation epoch was not its last left last.ckpt behind (and resumed from
    there). Whatever the ranking, last.ckpt is the final state."""
    from drmm_lightning.cli.train import train

    from .conftest import tiny_config

    cfg = tiny_config(
        tmp_path,
        "model=drmm2",
        "trainer.max_epochs=4",
        "callbacks.model_checkpoint.monitor=train/loss",  # ranks by a loss: max keeps the worst
        "callbacks.generative_images.every_n_epochs=0",
        "test=false",
    )
    train(cfg)
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 12


def test_a_trained_run_of_part_n_is_probed_not_retrained(tmp_path, tiny_part, monkeypatch) -> None:
    """Part N (issue 29): a run is done once probed; a trained but unprobed run is found with its
    checkpoint and `campaign.py run` only probes it, from its last.ckpt."""
    run = PARTS["N"][0]
    folder = run.directory(tmp_path) / "0"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (folder / "results.json").write_text("{}")
    assert run.probe and tiny_part.trained(run, tmp_path) and not tiny_part.done(run, tmp_path)
    assert tiny_part.checkpoint(run, tmp_path) == folder / "checkpoints" / "last.ckpt"
    calls = []

    def fake_run(call, **kwargs):
        calls.append(call)
        run.probe_file(tmp_path).parent.mkdir(parents=True)
        run.probe_file(tmp_path).write_text("{}")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setitem(PARTS, "N", [run])
    monkeypatch.setattr(tiny_part.subprocess, "run", fake_run)
    assert tiny_part.main(["run", "--part", "N", "--out", str(tmp_path)]) == 0
    assert [c[2] for c in calls] == ["drmm_lightning.probe"]  # no drmm_lightning.train
    assert f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}" in calls[0]
    assert tiny_part.done(run, tmp_path)


def fake_probe(run: Run, out: Path, scores: dict[str, dict[str, float]]) -> None:
    path = run.directory(out) / "0" / "probe" / "probe.json"
    path.parent.mkdir(parents=True)
    variables = list(next(iter(scores.values())))
    features = {name: {"dim": 4, **s} for name, s in scores.items()}
    path.write_text(json.dumps({"variables": variables, "features": features}))


def test_the_part_n_report_equals_a_hand_computation(tmp_path) -> None:
    from drmm_lightning.paper import nuisance

    def runs(row, n):
        return {r.seed: r for r in PARTS["N"] if r.row == row and r.num_labeled == n}

    one = runs("dcn_1", 60000)[1]
    fake_probe(one, tmp_path, {
        "image": {"class": 0.2, "dx": 0.5},
        "layer1": {"class": 0.8, "dx": 0.9},  # 0.8 < 0.9 * 0.95: not yet near the best
        "layer2": {"class": 0.9, "dx": 0.4},
        "layer3": {"class": 0.95, "dx": 0.3},
    })  # fmt: skip
    (one.job_directory(tmp_path) / "results.json").write_text('{"metrics": {"test/error": 1.5}}')
    for seed, (drmm, control) in {1: (0.60, 0.50), 2: (0.55, 0.54)}.items():
        for row, dx in (("normalized", drmm), ("entropy_only", control)):
            lift = 0.3 if row == "normalized" else 0.0  # a1: more dx, less class in both seeds
            fake_probe(runs(row, 100)[seed], tmp_path, {
                "layer1": {"class": 0.9, "dx": dx}, "a1": {"class": 0.5 - lift, "dx": dx + lift},
            })  # fmt: skip
    text = nuisance.nuisance_markdown(tmp_path)
    assert (
        "dcn_1 (dx; test error 1.50%): the class reaches 90% of its best accuracy at layer2" in text
    )
    assert "normalized seed 1 (test error unknown):" in text  # no results.json beside its probe
    assert "at the top (layer3): dx 0.30 of best 0.90" in text
    assert "dcn_2: not probed yet" in text
    # dx: seed 1 +0.10, seed 2 +0.01 (within the margin): mean +0.055, not "more"
    assert "| layer1 | +0.000 (same) | +0.055 (same) |" in text
    assert "| a1 | -0.300 (less) | +0.355 (more) |" in text
    assert (
        "In all, of 4 cells, more 1 (a1 dx +0.355), less 1 (a1 class -0.300), same 2. "
        "The switches alone: of 2 cells, more 1 (a1 dx +0.355), less 1 (a1 class -0.300), same 0."
    ) in text
    assert "Not probed yet: dcn seed 1, dcn seed 2" in text


def test_report_into_rewrites_only_the_text_between_its_markers(tmp_path, tiny_part) -> None:
    """`report --into docs/results.md`: the part's tables land between its two marker lines, the
    prose around them untouched; a file without the markers is refused, not appended to."""
    from drmm_lightning.paper.long import long_markdown

    page = tmp_path / "results.md"
    start, end = "<!-- campaign report --part L -->", "<!-- /campaign report --part L -->"
    page.write_text(f"# prose\n\n{start}\nold tables\n{end}\n\nmore prose\n")
    tiny_part.main(["report", "--part", "L", "--out", str(tmp_path), "--into", str(page)])
    assert (
        page.read_text() == f"# prose\n\n{start}\n{long_markdown(tmp_path)}\n{end}\n\nmore prose\n"
    )
    page.write_text("# prose without markers\n")
    with pytest.raises(SystemExit, match="needs the lines"):
        tiny_part.main(["report", "--part", "L", "--out", str(tmp_path), "--into", str(page)])
    assert page.read_text() == "# prose without markers\n"


def test_the_part_n_figures_plot_what_the_probes_hold(tmp_path, tiny_part) -> None:
    """`curves --part N`: N1's panels are the CNN's scores per nuisance set, N2's a line per row
    averaged over its probed seeds; a figure is written only where some run was probed."""
    from drmm_lightning.paper import nuisance

    def runs(row, n):
        return {r.seed: r for r in PARTS["N"] if r.row == row and r.num_labeled == n}

    fake_probe(runs("dcn_1", 60000)[1], tmp_path, {
        "image": {"class": 0.2, "dx": 0.5}, "layer1": {"class": 0.8, "dx": 0.9},
    })  # fmt: skip
    for seed, dx in {1: 0.6, 2: 0.4}.items():
        fake_probe(runs("normalized", 100)[seed], tmp_path, {
            "layer1": {"class": 0.9, "dx": dx}, "a1": {"class": 0.7, "dx": 2 * dx},
        })  # fmt: skip
    assert nuisance.n1_panels(tmp_path) == {
        "dcn_1: dx": {"class (accuracy)": [(0, 0.2), (1, 0.8)], "dx (R^2)": [(0, 0.5), (1, 0.9)]}
    }
    n2 = nuisance.n2_panels(tmp_path, 100)
    assert n2["dx: activations"] == {"normalized (2 seeds)": [(1, pytest.approx(0.5))]}
    assert n2["dx: switches a"] == {"normalized (2 seeds)": [(1, pytest.approx(1.0))]}
    assert nuisance.n2_panels(tmp_path, 60000) == {}
    tiny_part.main(
        ["curves", "--part", "N", "--out", str(tmp_path), "--save", str(tmp_path / "img")]
    )
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == [
        "probe_N1.png",
        "probe_N2_n100.png",
    ]


def test_list_says_where_each_run_stands(tmp_path, tiny_part, capsys) -> None:
    """`list`: done, cut off (with the step it resumes from), trained but not probed, to do."""
    finished, cut, probed, fresh = PARTS["L"][0], PARTS["L"][1], PARTS["N"][0], PARTS["L"][2]
    for run in (finished, probed):
        (run.directory(tmp_path) / "0").mkdir(parents=True)
        (run.directory(tmp_path) / "0" / "results.json").write_text("{}")
    folder = cut.directory(tmp_path) / "0" / "checkpoints"
    folder.mkdir(parents=True)
    loops = {"fit_loop": {"epoch_progress": {"current": {"processed": 2}}}}
    torch.save({"state_dict": {}, "global_step": 1400, "loops": loops}, folder / "last.ckpt")
    tiny_part.main(["list", "--part", "L", "N", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    mark = {run: lines[i].split("  -m ")[0] for i, run in enumerate(PARTS["L"] + PARTS["N"])}
    assert mark[finished] == "done" and mark[cut] == "part (step 1400, 2 whole epochs)"
    assert mark[probed] == "trained (not probed yet)" and mark[fresh] == "todo"

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

"""Every script takes its options one way (argparse), answers --help, and refuses what it does
not understand, naming what it takes (issue 23, point 3)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# script: (arguments besides the typo, an option its refusal must list)
NAMES = {
    "aggregate": ([], "--table"),
    "plot_curves": ([], "--runs"),
    "plot_render": ([], "--seed"),
    "render_analysis": (["x.ckpt"], "--num-images"),
    "make_presets": ([], "--check"),
    "reproduce": (["--only", "mnist_drmm5_semi_sup_100"], "--budget"),
    "ablation": (["--only", "normalized"], "--seeds"),
    "bench_step": ([], "--steps"),
    "bench_epoch": ([], "--name"),
    "bench_data": ([], "--device"),
    "bench_argmin": (["x.ckpt"], "--images"),
    "bn_statistics": (["x.ckpt"], "--recalibrate-images"),
    "class_usage": (["x.ckpt"], "--json"),
    "campaign": (["list"], "--part"),
    "judge": (["x.ckpt"], "--images"),
    "generation_table": (["--judge", "j.ckpt", "--runs", "a:b.ckpt"], "--options"),
}


def script(name: str):
    """The script as a module (scripts/ on the path, as `python scripts/<name>.py` has it)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


def test_every_script_is_listed() -> None:
    assert set(NAMES) == {p.stem for p in SCRIPTS.glob("*.py")}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_script_answers_help(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        script(name).main(["--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_script_refuses_an_unknown_key_naming_its_options(name: str, capsys) -> None:
    """A typo like tabel=3 used to be ignored (aggregate printed Table 1) or, for the scripts
    that pass key=value on to drmm-train, to fail in the first run."""
    arguments, option = NAMES[name]
    with pytest.raises(SystemExit) as refused:
        script(name).main([*arguments, "tabel=3"])
    message = str(refused.value.code) + capsys.readouterr().err
    assert refused.value.code != 0 and "tabel=3" in message and option in message


def test_bn_statistics_recalibration_is_the_plain_average_and_keeps_the_weights() -> None:
    """bn_statistics.recalibrate replaces the running statistics by their average over the
    images (equal batches: the mean of the batch means), and the batch-statistics error leaves
    the held running averages untouched."""
    import torch

    from drmm_lightning.models import build_model

    bn = script("bn_statistics")
    torch.manual_seed(0)
    net = build_model("drmm2").eval()
    images, labels = torch.randn(200, 1, 28, 28), torch.randint(0, 10, (200,))
    first = bn.norms(net)[0]
    held = first.running_mean.clone()
    bn.classification_error(net, images, labels, batch_stats=True)
    assert torch.equal(first.running_mean, held) and not first.training
    seen: list[torch.Tensor] = []
    conv = next(m.conv for m in net.modules() if getattr(m, "norm", None) is first)  # its input
    assert isinstance(conv, torch.nn.Module)
    conv.register_forward_hook(lambda module, inputs, out: seen.append(out.mean((0, 2, 3))))
    bn.recalibrate(net, images)
    assert len(seen) == 2 and not net.training
    torch.testing.assert_close(first.running_mean, (seen[0] + seen[1]) / 2)


def test_bn_statistics_plots_its_rows(tmp_path) -> None:
    """--plot: the three errors against epoch, one figure written where asked."""
    rows = [
        {"step": 600 * e, "running": 9.0 / e, "recalibrated": 2.0, "batch": 2.1} for e in (1, 2)
    ]
    path = script("bn_statistics").plot(rows, tmp_path / "bn" / "plot.png")
    assert path == tmp_path / "bn" / "plot.png" and path.stat().st_size > 1000


def test_class_usage_tells_wrong_names_from_unused_classes() -> None:
    """A network that swaps two classes' names is wrong on them but right after relabelling; one
    that predicts a single class uses one class whatever the names."""
    import torch

    usage = script("class_usage").usage
    labels = torch.arange(4).repeat(25)
    swapped = labels.clone()
    swapped[labels == 0], swapped[labels == 1] = 1, 0
    named = usage(swapped, labels, 4)
    assert named["error"] == pytest.approx(50.0) and named["relabelled"] == pytest.approx(0.0)
    assert named["used"] == 4 and named["largest"] == pytest.approx(0.25)
    single = usage(torch.zeros_like(labels), labels, 4)
    assert single["used"] == 1 and single["largest"] == 1.0
    assert single["error"] == pytest.approx(75.0) and single["relabelled"] == pytest.approx(75.0)

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

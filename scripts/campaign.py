"""The campaign of issue 20: does the rendering help beyond entropy minimisation? (docs/results.md)

    python scripts/campaign.py run --part 1        # seeds 1-10, entropy_only vs normalized
    python scripts/campaign.py run --part 1 2 5 3  # every part, in the issue's order
    python scripts/campaign.py run --part P        # issue 21: the peers on the same protocol
    python scripts/campaign.py run --part P --seed 1  # seed 1 of every row first
    python scripts/campaign.py list --part 2       # what a part runs, and which runs are done
    python scripts/campaign.py where --part LG     # each run's directory, one per line
    python scripts/campaign.py report [--partial]  # the tables and statistics
    python scripts/campaign.py curves --part 1 --num-labeled 100 --save docs/img/campaign_curves.png
    python scripts/campaign.py run --part L        # issue 28: the long budgets, resumed
    python scripts/campaign.py report --part L --partial --into docs/results.md  # its tables
    python scripts/campaign.py run --part LG       # on a lent GPU only: scripts/gpu_long.sh
    python scripts/campaign.py run --part N        # issue 29: nuisance data, each run probed
    python scripts/campaign.py report --part N     # its probes, paired by seed
    python scripts/campaign.py curves --part N     # their figures (Fig. 2 left) in docs/img

Every run is one drmm-train call with a fixed directory,
outputs/campaign/part<k>/<row>/n<N_L>/s<seed>; a run whose results.json exists is skipped, and
one that was cut off (a kill, the end of a session) resumes from its newest last.ckpt, so the
same command finishes an interrupted campaign exactly as an uninterrupted one would have.
outputs/ is never committed: a cut run resumes where its directory is (copy outputs/campaign to
carry a campaign to another machine), and the reports regenerate from the runs.
Every run uses precision=auto (bf16 + channels-last on this project's CPU). Rows, seeds, budgets
and the collapse threshold are fixed here, before the runs (docs/results.md, "The campaign").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from drmm_lightning.cli.checkpoints import find_checkpoint, progress, read_checkpoint
from drmm_lightning.paper import campaign, long, nuisance
from drmm_lightning.paper.campaign import PARTS, Run
from drmm_lightning.viz.plots import plot_curves, plot_decodability

OUT = Path("outputs/campaign")


def command(run: Run, out: Path, resume: Path | None = None) -> list[str]:
    """The drmm-train call of one run (a one-job multirun, so Hydra writes into <dir>/0), from
    the checkpoint `resume` if given."""
    return [
        sys.executable,
        "-m",
        "drmm_lightning.train",
        "-m",
        *run.train_overrides(),
        f"hydra.sweep.dir={run.directory(out)}",
        *([f"ckpt_path={resume}"] if resume else []),
    ]


def trained(run: Run, out: Path) -> bool:
    return any(run.directory(out).rglob("results.json"))


def done(run: Run, out: Path) -> bool:
    """Trained, and probed if the run is to be (a trained run is probed, not retrained)."""
    return trained(run, out) and (not run.probe or run.probe_file(out).is_file())


def probe_command(run: Run, out: Path) -> list[str]:
    """The drmm-probe call of a finished run (its final weights, default probe settings)."""
    ckpt = run.job_directory(out) / "checkpoints" / "last.ckpt"
    out_dir = run.probe_file(out).parent
    return [sys.executable, "-m", "drmm_lightning.probe", f"ckpt_path={ckpt}", f"out_dir={out_dir}"]


def probe(run: Run, out: Path, step: str) -> bool:
    """Probe a finished run (drmm-probe in its own process); whether it succeeded."""
    call = probe_command(run, out)
    print(f"{step} probing: {' '.join(call[3:])}", flush=True)
    return subprocess.run(call).returncode == 0


def status(run: Run, out: Path) -> str:
    """Where a run stands: done, trained (not probed yet), part (the step it resumes from), todo."""
    if done(run, out):
        return "done"
    if trained(run, out):
        return "trained (not probed yet)"
    resume = checkpoint(run, out)
    if resume is None:
        return "todo"
    try:
        steps, epochs = progress(read_checkpoint(resume))
    except ValueError as unreadable:
        return f"part ({unreadable})"
    return f"part (step {steps}, {epochs} whole epochs)"


def checkpoint(run: Run, out: Path) -> Path | None:
    """The newest last.ckpt an unfinished run left (None: it has not started, or saved nothing)."""
    try:
        return find_checkpoint("last", run.directory(out), "0")
    except FileNotFoundError:
        return None


def splice(path: Path, name: str, markdown: str) -> None:
    """Replace what lies between the lines `<!-- name -->` and `<!-- /name -->` of `path`."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text()
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        sys.exit(f"{path} needs the lines {start} and {end}, once each and in that order.")
    head, rest = text.split(start)
    tail = rest.split(end)[1]
    path.write_text(f"{head}{start}\n{markdown}\n{end}{tail}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("run", "list", "where", "report", "curves"))
    default = [p for p in sorted(PARTS) if p not in campaign.ON_REQUEST]
    parser.add_argument("--part", nargs="+", choices=sorted(PARTS), default=default)
    parser.add_argument("--out", type=Path, default=OUT, help="campaign directory")
    parser.add_argument(
        "--partial", action="store_true", help="report rows with missing seeds (named)"
    )
    parser.add_argument(
        "--save", type=Path, help="report: also write the markdown here; curves: the PNG"
    )
    parser.add_argument(
        "--into",
        type=Path,
        help="report: write it between this file's lines <!-- campaign report --part P --> and "
        "<!-- /campaign report --part P --> (docs/results.md has them)",
    )
    parser.add_argument("--num-labeled", type=int, default=100, help="curves: the budget drawn")
    parser.add_argument("--seed", type=int, nargs="+", help="run/list: only these seeds")
    parser.add_argument("--row", nargs="+", help="run/list: only these rows (e.g. pseudo_label)")
    args = parser.parse_args(argv)

    runs = [run for part in args.part for run in PARTS[part]]
    if args.seed:
        runs = [run for run in runs if run.seed in args.seed]
    if args.row:
        runs = [run for run in runs if run.row in args.row]
    if args.action == "list":
        for run in runs:
            mark = status(run, args.out)
            print(f"{mark}  {' '.join(command(run, args.out)[3:])}")
        return 0
    if args.action == "where":  # each run's job directory (scripts/gpu_long.sh reads it)
        for run in runs:
            print(run.job_directory(args.out))
        return 0
    reports = list(dict.fromkeys(campaign.REPORTED_IN.get(p, p) for p in args.part))
    if args.action == "curves" and reports == ["L"]:  # a figure per sub-part, to --save
        folder = args.save or Path("docs/img")
        for sub, title in long.TITLES.items():
            groups, references = long.long_curves(args.out, sub)
            if groups:
                path = folder / f"long_{sub}.png"
                print(
                    plot_curves(
                        groups, path, f"part {sub}: {title.split(': ')[0]}", references=references
                    )
                )
        return 0
    if args.action == "curves" and args.part == ["N"]:  # Fig. 2 left: N1, then N2 per regime
        folder = args.save or Path("docs/img")
        figures = {
            "probe_N1": ("N1: the CNN with 1, 2 and all nuisances", nuisance.n1_panels(args.out))
        }
        for n in campaign.N2_ROWS:
            title = f"N2, {nuisance.regime_name(n)}, all nuisances: mean over seeds"
            figures[f"probe_N2_n{n}"] = (title, nuisance.n2_panels(args.out, n))
        for name, (title, panels) in figures.items():
            if panels:
                print(plot_decodability(panels, folder / f"{name}.png", f"part {title}", ncols=4))
        return 0
    if args.action == "curves":
        part = args.part[0]
        groups = campaign.curve_groups(args.out, part, args.num_labeled)
        if not groups:
            sys.exit(f"No curve.jsonl under {args.out}/part{part} at N_L = {args.num_labeled}.")
        title = f"part {part}, N_L = {args.num_labeled}: test error of every seed"
        print(plot_curves(groups, args.save or "campaign_curves.png", title, x="step"))
        return 0
    if args.action == "report":
        try:
            markdown = "\n\n".join(
                long.long_markdown(args.out)
                if part == "L"
                else nuisance.nuisance_markdown(args.out)
                if part == "N"
                else campaign.report_markdown(args.out, [part], partial=args.partial)
                for part in reports
            )
        except ValueError as incomplete:
            sys.exit(str(incomplete))
        print(markdown)
        if args.save:
            args.save.write_text(markdown + "\n")
        if args.into:
            splice(args.into, f"campaign report --part {' '.join(reports)}", markdown)
        return 0
    todo = [run for run in runs if not done(run, args.out)]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to run", flush=True)
    failed = []
    for i, run in enumerate(todo, 1):
        step = f"[{i}/{len(todo)}]"
        if trained(run, args.out):  # only its probe is missing
            if not probe(run, args.out, step):
                failed.append(str(run.directory(args.out)))
            continue
        resume = checkpoint(run, args.out)
        if resume:
            steps, epochs = progress(read_checkpoint(resume))
            print(
                f"{step} resuming {run.directory(args.out)} from {resume}: step "
                f"{steps} ({epochs} whole epochs done)",
                flush=True,
            )
        call = command(run, args.out, resume)
        print(f"{step} {' '.join(call[3:])}", flush=True)
        start = time.time()
        ok = subprocess.run(call).returncode == 0
        if ok and run.probe:
            ok = probe(run, args.out, step)
        if not ok:
            failed.append(str(run.directory(args.out)))
        print(f"{step} {(time.time() - start) / 60:.1f} min", flush=True)
    for directory in failed:
        print(f"failed: {directory}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

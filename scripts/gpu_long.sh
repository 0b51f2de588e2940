#!/usr/bin/env bash
# Issue 28's GPU rows (campaign part LG): L1's `normalized` and `adjoint` rows, seed 1, 100 epochs,
# side by side on one lent GPU, in one prepared call of the device tool. Three steps:
#   bash scripts/gpu_long.sh pack                # here: MNIST and the packages the device lacks
#   device run  carry=[".gpu", "outputs/campaign/partLG"]  command="bash scripts/gpu_long.sh run 480"
#   bash scripts/gpu_long.sh unpack <files_at>   # here: the curves, results and checkpoints back
# `run` trains for at most CAP seconds, then SIGTERMs both runs (each saves its last.ckpt), so a
# pair cut off by the cap resumes on the next call exactly where it stopped (campaign.py run
# resumes from last.ckpt; the minutes add up over the pieces). The device's image has torch,
# lightning, torchvision, matplotlib and scipy but not hydra-core or omegaconf (the device
# README's KINDS.md): `pack` copies those pure-Python packages from this venv, with MNIST gzipped
# (scripts/gpu_env.sh sets them up there; scripts/gpu_check.sh uses the same pack); logger=csv
# needs no wandb. What comes back: each row's curve.jsonl, results.json (once finished), last.ckpt
# and log (8 files at most return from a call).
set -euo pipefail
mode=${1:?usage: gpu_long.sh pack | run [CAP_SECONDS] | unpack FILES_AT}
ROWS=(normalized adjoint)
# a row's job directory, as campaign.py lays it out (PY: python3 on the device, the venv here)
run_dir() { PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} ${PY:-python3} scripts/campaign.py where --part LG --row "$1"; }

case $mode in
pack)
  PY=${PY:-.venv/bin/python}
  site=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  data=${DRMM_DATA_DIR:-../shared/data}
  rm -rf .gpu && mkdir -p .gpu/site .gpu/MNIST/raw
  for pkg in hydra omegaconf antlr4; do cp -r "$site/$pkg" .gpu/site/; done
  for f in "$data"/MNIST/raw/*-ubyte; do gzip -c "$f" > ".gpu/MNIST/raw/$(basename "$f").gz"; done
  du -sh .gpu
  ;;
run)
  cap=${2:-480}
  out=${OUT:-outputs/gpu_long}
  mkdir -p "$out"
  # shellcheck source=scripts/gpu_env.sh
  source scripts/gpu_env.sh
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)'
  pids=()
  for row in "${ROWS[@]}"; do
    python3 scripts/campaign.py run --part LG --row "$row" > "$out/$row.log" 2>&1 &
    pids+=($!)
  done
  (sleep "$cap"; echo "cap of ${cap}s reached: SIGTERM"; pkill -TERM -f drmm_lightning.train) &
  timer=$!
  wait "${pids[@]}" || true
  kill "$timer" 2>/dev/null || true
  for row in "${ROWS[@]}"; do
    d=$(run_dir "$row")
    for f in curve.jsonl results.json checkpoints/last.ckpt; do
      [ -f "$d/$f" ] && cp "$d/$f" "$out/${row}_$(basename "$f")"
    done
    tail -n 3 "$d/curve.jsonl" 2>/dev/null || echo "$row: no curve"
    grep -a "test/error=\|resuming\|Error" "$out/$row.log" | tail -n 3 || true
  done
  ;;
unpack)
  PY=${PY:-.venv/bin/python}
  from=${2:?usage: gpu_long.sh unpack FILES_AT}
  for row in "${ROWS[@]}"; do
    d=$(run_dir "$row")
    if ! ls "$from/${row}_"* > /dev/null 2>&1; then echo "$row: nothing came back"; continue; fi
    mkdir -p "$d/checkpoints"
    for f in curve.jsonl results.json; do
      [ -f "$from/${row}_$f" ] && cp "$from/${row}_$f" "$d/$f"
    done
    [ -f "$from/${row}_last.ckpt" ] && cp "$from/${row}_last.ckpt" "$d/checkpoints/last.ckpt"
    [ -f "$d/results.json" ] && echo "$row: finished" || echo "$row: resumes from $d/checkpoints"
  done
  ;;
*)
  echo "unknown mode $mode (pack, run or unpack)" >&2
  exit 2
  ;;
esac

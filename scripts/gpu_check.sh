#!/usr/bin/env bash
# The GPU checks of docs/benchmarks.md in one go, under 8 minutes on one H100-class GPU:
# the step benchmark (every setting, compile included), one epoch of the default experiment
# at fp32, bf16 and compiled, a 3-epoch run of the default experiment with trainer=gpu, the
# render-argmin cost on its checkpoint (issue 13: 10k test images), and a trainer=ddp smoke
# run on the GPUs present. Everything lands under one folder:
#   make gpu-check [OUT=outputs/gpu_check/<stamp>]
set -uo pipefail
if [ -d .gpu ]; then  # the carried pack of `bash scripts/gpu_long.sh pack` (scripts/gpu_env.sh)
  # shellcheck source=scripts/gpu_env.sh
  source scripts/gpu_env.sh
  PY=${PY:-python3}
fi
OUT=${OUT:-outputs/gpu_check/$(date +%Y%m%d-%H%M%S)}
PY=${PY:-python}
mkdir -p "$OUT"
export WANDB_MODE=${WANDB_MODE:-offline}
step() {  # step <name> <command...>: run, log, and record the exit status and wall time
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"
step bench_step "$PY" scripts/bench_step.py --compile --out "$OUT"
step epoch_fp32 "$PY" scripts/bench_epoch.py --name gpu-fp32 --out "$OUT" trainer=gpu
step epoch_bf16 "$PY" scripts/bench_epoch.py --name gpu-bf16 --out "$OUT" trainer=gpu \
  trainer.precision=bf16-mixed
step epoch_compile "$PY" scripts/bench_epoch.py --name gpu-compile --out "$OUT" trainer=gpu \
  model.compile=true
step train_3_epochs "$PY" -m drmm_lightning.train trainer=gpu trainer.max_epochs=3 logger=csv \
  hydra.run.dir="$OUT/train_3_epochs"
step bench_argmin "$PY" scripts/bench_argmin.py "$OUT/train_3_epochs/checkpoints/last.ckpt" \
  --images 10000 --device cuda
step ddp_smoke "$PY" -m drmm_lightning.train trainer=ddp trainer.max_epochs=1 \
  trainer.limit_train_batches=50 logger=csv hydra.run.dir="$OUT/ddp_smoke"
cat "$OUT"/epoch_*.json > "$OUT/epochs.json" 2>/dev/null
echo "wrote $OUT"

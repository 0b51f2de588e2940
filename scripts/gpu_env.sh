# Sourced on a lent GPU machine (scripts/gpu_long.sh run, scripts/gpu_check.sh) when the carried
# pack .gpu/ is there (`bash scripts/gpu_long.sh pack` builds it here): the pure-Python packages
# the device image lacks (hydra-core, omegaconf, antlr4) on PYTHONPATH beside this checkout, and
# MNIST unpacked to /tmp/drmm_data. The image's python3 holds torch and lightning.
export PYTHONPATH=$PWD/.gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export DRMM_DATA_DIR=/tmp/drmm_data WANDB_MODE=${WANDB_MODE:-offline} PYTHONUNBUFFERED=1
mkdir -p "$DRMM_DATA_DIR/MNIST/raw"
for f in .gpu/MNIST/raw/*.gz; do
  gunzip -c "$f" > "$DRMM_DATA_DIR/MNIST/raw/$(basename "$f" .gz)"
done

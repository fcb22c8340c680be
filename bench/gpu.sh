#!/usr/bin/env bash
# GPU benchmarks for the lent device machine (not run by tests), every number of issue 11's bar:
#   1. the training step vs a bare timm loop (overhead), lite0 and b3, bf16 + channels_last, eager and compiled;
#   2. train.py end to end on a real cache (CACHE=...) vs the bare step, lite0 and b3 at the recipe's batch;
#   3. the submission job: 12,600 images x 5 folds x hflip with b3 at 384x288;
#   4. the CPU loader with 16 workers (what feeds the GPU when the images are not held on it).
# Usage, from the repo root:  CACHE=cache_384x288 DATA=/path/to/raw bash bench/gpu.sh [step|e2e|infer|loader ...]
# (on the lent device machine, whose Python has no .venv: PY=python3; see ../shared/gpu/README.md)
# (no argument: all four). DATA holds eval/ for step 3 (default: synthetic data); REPEATS=2 COMPILE=1: the
# second repeat reuses the first one's compiled graphs (compile time outside the count).
# INFER_ARGS: more bench/infer.py flags for step 3 (e.g. "--fold-bn off").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
H=${H:-384}; W=${W:-288}
BATCH=${BATCH:-$(sed -n 's/^batch_size: *\([0-9]*\).*/\1/p' configs/competition.yaml)}
STEPS=${*:-step e2e infer loader}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

for what in $STEPS; do case $what in
step)
  for spec in "tf_efficientnet_lite0 32" "tf_efficientnet_lite0 $BATCH" "tf_efficientnet_b3 $BATCH"; do
    set -- $spec
    echo "== training step: $1 ${H}x${W} batch $2 bf16 channels_last (eager, then compiled)"
    $PY bench/train_step.py --device cuda --precision bf16 --channels-last --model "$1" --size $H $W --batch "$2" --steps 40 --repeats 2
    $PY bench/train_step.py --device cuda --precision bf16 --channels-last --compile --model "$1" --size $H $W --batch "$2" --steps 40 --repeats 2
  done ;;
e2e)
  : "${CACHE:?set CACHE to an arrow cache built at ${H}x${W} (maskds build DATA CACHE --size $H $W --folds 5)}"
  for model in tf_efficientnet_lite0 tf_efficientnet_b3; do
    echo "== train.py end to end: $model, configs/competition.yaml, batch $BATCH"
    $PY bench/train_e2e.py --cache "$CACHE" --model $model --batch "$BATCH" --epochs ${EPOCHS:-3}
  done ;;
infer)
  DATA_ARG=${DATA:+--data $DATA}
  echo "== submission job: infer.py, tf_efficientnet_b3 ${H}x${W}, 12,600 images x 5 folds x hflip, bf16"
  $PY bench/infer.py --ours-only --model tf_efficientnet_b3 --size $H $W --cache-size $H $W $DATA_ARG --persons 400 \
      --folds 5 --tta hflip --images 12600 --batch 256 --workers 16 --precision bf16 --repeats ${REPEATS:-1} ${COMPILE:+--compile} ${INFER_ARGS:-} ;;
loader)
  echo "== CPU loader with 16 workers at ${H}x${W} (the path without images_on_device)"
  $PY bench/loader.py --config configs/competition.yaml --persons 400 --cache-size $H $W --workers 16 --images 4000 ;;
*) echo "unknown step $what (step, e2e, infer, loader)"; exit 2 ;;
esac; done

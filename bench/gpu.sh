#!/usr/bin/env bash
# GPU benchmarks for the lent device machine (not run by tests): the training step and inference
# with mixed precision and channels_last, and whether the data loader keeps up with the model
# (loader images/s with 16 workers vs the training step's images/s), at the competition recipe's
# model and size. Usage, from the repo root with the .venv installed:  bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-$(sed -n 's/^model: *\([^ #]*\).*/\1/p' configs/competition.yaml)}
H=${H:-384}; W=${W:-288}; BATCH=${BATCH:-64}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== training step: $MODEL ${H}x${W} batch $BATCH bf16 channels_last"
$PY bench/train_step.py --device cuda --precision bf16 --channels-last --model "$MODEL" --size $H $W --batch $BATCH --steps 30 --repeats 2
echo "== training step, fp32 for reference"
$PY bench/train_step.py --device cuda --precision no --model "$MODEL" --size $H $W --batch $BATCH --steps 20 --repeats 1
echo "== inference: infer.py vs a bare eval loop, both bf16"
$PY bench/infer.py --precision bf16 --model "$MODEL" --size $H $W --persons 400 --batch 128 --workers 16
echo "== loader with 16 workers at the competition size (compare with the training step's images/s above)"
$PY bench/loader.py --config configs/competition.yaml --persons 400 --cache-size $H $W --workers 16 --images 4000

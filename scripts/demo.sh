#!/usr/bin/env bash
# The main job end to end on built-in synthetic data, offline, on this machine's CPU:
# synth -> build -> eda -> train (2 folds, offline ImageNet backbone) -> infer (hflip TTA) -> score.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DEMO=${DEMO_DIR:-demo}
PERSONS=${DEMO_PERSONS:-100}
EVAL_PERSONS=${DEMO_EVAL_PERSONS:-40}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
START=$SECONDS

stage() { printf '\n\033[1m== %s\033[0m (%ss elapsed)\n' "$1" "$((SECONDS - START))"; }

rm -rf "$DEMO"   # the demo's own folder: every run starts clean
stage "1/6 synthetic data: $PERSONS train persons, $EVAL_PERSONS eval persons -> $DEMO/data"
$BIN/maskds synth "$DEMO/data" --persons "$PERSONS" --eval-persons "$EVAL_PERSONS" --seed 0

stage "2/6 arrow cache with 5 person-level folds, the face's box of each photo -> $DEMO/cache"
$BIN/maskds build "$DEMO/data" "$DEMO/cache" --size 160 120 --folds 5 --face-crop fixed

stage "3/6 EDA plots -> $DEMO/eda"
$BIN/maskds eda "$DEMO/data" "$DEMO/eda"

stage "4/6 training configs/demo.yaml on folds 0 and 1 (CPU) -> $DEMO/runs/demo"
$BIN/accelerate launch -q --config_file accelerate_configs/cpu.yaml train.py \
    --config configs/demo.yaml cache="$DEMO/cache" output_dir="$DEMO/runs" name=demo "folds=[0,1]"

stage "5/6 soft-voting inference over both folds with hflip TTA -> $DEMO/submission.csv"
$BIN/python infer.py --run "$DEMO/runs/demo" --data "$DEMO/data/eval" --out "$DEMO/submission.csv" --tta hflip

stage "6/6 score against the synthetic answers"
$BIN/maskds score "$DEMO/submission.csv" "$DEMO/data/eval/answers.csv" --plot "$DEMO/confusion.png"
$BIN/maskds score "$DEMO/submission.csv" "$DEMO/data/eval/answers.csv" --json
printf '\nDemo finished in %ss. Plots: %s/eda/summary.md, %s/confusion.png\n' "$((SECONDS - START))" "$DEMO" "$DEMO"

#!/usr/bin/env bash
# Trains the demo model shipped in data/models/demo/ on a 2-core CPU, from nothing but this repo:
#   1. synthetic data (adiff build-dataset synthetic): a training split, a validation split and
#      a held-out test split with their own seeds;
#   2. the HTSAT embedding cache of all clips (HTSAT stays frozen from here on);
#   3. stage 2 (GPT-2 frozen) then stage 3 (GPT-2 unfrozen) with configs/train/demo_stage*.json
#      on configs/tiny.json, starting from the tiny test model in tests/fixtures/;
#   4. the model into data/models/demo/, then `adiff infer` + `adiff eval --synthetic` on the
#      test split, whose accuracies (vs chance) are printed and saved next to the model.
# The demo knows only the synthetic sound world (tones, buzzes, chords, noise, clicks, chirps).
#   usage: scripts/train_demo.sh [WORK_DIR]     env: TRAIN_PAIRS (800), TEST_PAIRS (200)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/demo-run}
TRAIN_PAIRS=${TRAIN_PAIRS:-800}
VAL_PAIRS=${VAL_PAIRS:-40}
TEST_PAIRS=${TEST_PAIRS:-200}
cargo build --release -q
A=./target/release/adiff
init=(-c tests/fixtures/htsat/htsat_tiny.ckpt -c tests/fixtures/gpt2/adiff_tiny.safetensors
      -c tests/fixtures/adiff/adiff_tiny_rest.ckpt --config configs/tiny.json)
start=$(date +%s)
mkdir -p "$work"
$A build-dataset synthetic -o "$work/data" --count "$TRAIN_PAIRS" --seed 1 --split train
$A build-dataset synthetic -o "$work/data" --count "$VAL_PAIRS" --seed 3 --split val
$A build-dataset synthetic -o "$work/data" --count "$TEST_PAIRS" --seed 2 --split test
d="$work/data"
$A build-dataset embed-cache "$d"/train_sentence_answer.csv "$d"/val_sentence_answer.csv \
  "$d"/test_sentence_answer.csv --audio-root "$d" "${init[@]}" -o "$d/cache" --batch-size 16
train=("$d"/train_fewwords_answer.csv "$d"/train_sentence_answer.csv)
val=("$d"/val_sentence_answer.csv)
resume=()
[ -d "$work/stage2/checkpoints" ] && resume=(--resume)
$A train-stage2 --train "${train[@]}" --val "${val[@]}" --embed-cache "$d/cache" "${init[@]}" \
  --train-config configs/train/demo_stage2.json -o "$work/stage2" "${resume[@]}"
resume=()
[ -d "$work/stage3/checkpoints" ] && resume=(--resume)
$A train-stage3 --train "${train[@]}" --val "${val[@]}" --embed-cache "$d/cache" \
  -c "$work/stage2/model.safetensors" --config "$work/stage2/config.json" \
  --train-config configs/train/demo_stage3.json -o "$work/stage3" "${resume[@]}"
out=data/models/demo
mkdir -p "$out"
cp "$work/stage3/model.safetensors" "$out/model.safetensors"
cp "$work/stage3/config.json" "$out/config.json"
$A infer "$d/test_sentence_answer.csv" --audio-root "$d" --model demo --max-tokens 40 \
  -o "$work/test_preds.csv"
$A eval --synthetic "$d/truth.jsonl" "$work/test_preds.csv" --json "$out/eval_synthetic.json"
echo "demo trained and evaluated in $(( $(date +%s) - start )) s; model in $out"

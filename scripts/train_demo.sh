#!/usr/bin/env bash
# Trains the demo model shipped in data/models/demo/ on a 2-core CPU, from nothing but this repo:
#   1. synthetic data (adiff build-dataset synthetic): a training split, a validation split and
#      a held-out test split with their own seeds;
#   2. stage 1 on configs/tiny.json, starting from the tiny test model in tests/fixtures/: the
#      tiny HTSAT tags the training clips' attributes, then GPT-2 learns the training answers;
#   3. the HTSAT embedding cache of all clips (HTSAT stays frozen from here on);
#   4. stage 2 (GPT-2 frozen) then stage 3 (GPT-2 unfrozen), configs/train/demo_*.json;
#   5. the model into data/models/demo/, then `adiff infer` + `adiff eval --synthetic` on the
#      test split, whose accuracies (vs chance) are printed and saved next to the model.
# The demo knows only the synthetic sound world (tones, buzzes, chords, noise, clicks, chirps).
#   usage: scripts/train_demo.sh [WORK_DIR]     env: TRAIN_PAIRS (300), TEST_PAIRS (200)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/demo-run}
TRAIN_PAIRS=${TRAIN_PAIRS:-300}
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
train=("$d"/train_fewwords_answer.csv "$d"/train_sentence_answer.csv)
val=("$d"/val_sentence_answer.csv)
# --resume where a stage already has checkpoints (a killed script continues where it stopped).
resume() { if [ -d "$1/checkpoints" ]; then echo --resume; fi; }
[ -f "$work/enc/model.safetensors" ] || $A train-stage1 --part encoder --labels "$d/truth.jsonl" \
  --split train --val-split val "${init[@]}" --train-config configs/train/demo_stage1_encoder.json \
  -o "$work/enc" $(resume "$work/enc")
model=(-c "$work/enc/model.safetensors" --config configs/tiny.json)
[ -f "$work/dec/model.safetensors" ] || $A train-stage1 --part decoder --text-from-csv "${train[@]}" \
  --val-text-from-csv "${val[@]}" "${model[@]}" \
  --train-config configs/train/demo_stage1_decoder.json -o "$work/dec" $(resume "$work/dec")
model=(-c "$work/dec/model.safetensors" --config configs/tiny.json)
[ -f "$d/cache/index.json" ] && [ -f "$work/cache.done" ] || { rm -rf "$d/cache";
  $A build-dataset embed-cache "$d"/train_sentence_answer.csv "$d"/val_sentence_answer.csv \
    "$d"/test_sentence_answer.csv --audio-root "$d" "${model[@]}" -o "$d/cache" --batch-size 16;
  touch "$work/cache.done"; }
[ -f "$work/stage2/model.safetensors" ] || $A train-stage2 --train "${train[@]}" --val "${val[@]}" \
  --embed-cache "$d/cache" "${model[@]}" --train-config configs/train/demo_stage2.json \
  -o "$work/stage2" $(resume "$work/stage2")
[ -f "$work/stage3/model.safetensors" ] || $A train-stage3 --train "${train[@]}" --val "${val[@]}" \
  --embed-cache "$d/cache" -c "$work/stage2/model.safetensors" --config "$work/stage2/config.json" \
  --train-config configs/train/demo_stage3.json -o "$work/stage3" $(resume "$work/stage3")
out=data/models/demo
mkdir -p "$out"
cp "$work/stage3/model.safetensors" "$out/model.safetensors"
cp "$work/stage3/config.json" "$out/config.json"
$A infer "$d/test_sentence_answer.csv" --audio-root "$d" --model demo --max-tokens 40 \
  -o "$work/test_preds.csv"
$A eval --synthetic "$d/truth.jsonl" "$work/test_preds.csv" --json "$out/eval_synthetic.json"
echo "demo trained and evaluated in $(( $(date +%s) - start )) s; model in $out"

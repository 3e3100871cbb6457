#!/usr/bin/env bash
# Trains the demo model shipped in data/models/demo/ on a 2-core CPU, from nothing but this repo:
#   1. synthetic data (adiff build-dataset synthetic), each split with its own seed: the training
#      and validation splits first; beside stage 1, the "lesson" splits whose pairs differ in
#      exactly one attribute (--differ-in: source kind, 1000 and 200 pairs; pitch; loudness) and
#      the held-out test split;
#   2. stage 1 with configs/demo.json (a tiny HTSAT over a coarser log-mel: 2048-point window,
#      hop 1280, 251 frames in a 128x128 image, 7x cheaper than the paper's front end; a 64-wide,
#      4-layer GPT-2): HTSAT from scratch (--init-missing; bn0 gets the clips' log-mel
#      statistics) learns to tag the training clips' attributes while GPT-2 learns the training
#      answers from scratch, side by side;
#   3. the HTSAT embedding cache of all clips (HTSAT stays frozen from here on);
#   4. stage 2 (GPT-2 frozen), then stage 3 (GPT-2 unfrozen) as a curriculum
#      (configs/train/demo_*.json): source kind on the few-words answers, kind on both tiers,
#      kind + pitch, kind + pitch + loudness, then the training pairs. On mixed pairs alone the
#      model never learned the comparisons nor named the kinds; one-attribute lessons teach
#      them, and lessons accumulated keep what earlier ones taught (chained, they erase it);
#   5. the model into data/models/demo/, then `adiff infer` + `adiff eval --synthetic` on the
#      held-out test split for tiers 1 and 2; the accuracies (vs chance) are printed and saved
#      next to the model.
# The demo knows only the synthetic sound world (tones, buzzes, chords, noise, clicks, chirps).
# A killed run continues where it stopped when started again with the same WORK_DIR.
#   usage: scripts/train_demo.sh [WORK_DIR]
#   env:   TRAIN_PAIRS (2000), LESSON_PAIRS (200), KIND_PAIRS (1000), VAL_PAIRS (40), TEST_PAIRS (200)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/demo-run}
TRAIN_PAIRS=${TRAIN_PAIRS:-2000}
VAL_PAIRS=${VAL_PAIRS:-40}
TEST_PAIRS=${TEST_PAIRS:-200}
LESSON_PAIRS=${LESSON_PAIRS:-200}
KIND_PAIRS=${KIND_PAIRS:-1000}
cargo build --release -q
A=./target/release/adiff
cfg=configs/demo.json
start=$(date +%s)
lap() { echo "[train_demo] $1 done at $(( $(date +%s) - start )) s"; }
mkdir -p "$work"
d="$work/data"
# Stage 1 needs only the training and validation splits; the lessons and the test split are
# generated beside it, on the core the stage-1 decoder leaves idle most of the time.
if [ ! -f "$work/data.done" ]; then
  $A build-dataset synthetic -o "$d" --count "$TRAIN_PAIRS" --seed 1 --split train
  $A build-dataset synthetic -o "$d" --count "$VAL_PAIRS" --seed 3 --split val
  touch "$work/data.done"
fi
more_data() {
  [ -f "$work/lessons.done" ] && return 0
  $A build-dataset synthetic -o "$d" --count "$KIND_PAIRS" --seed 7 --split kindbig --differ-in kind
  $A build-dataset synthetic -o "$d" --count "$LESSON_PAIRS" --seed 4 --split pitch --differ-in pitch
  $A build-dataset synthetic -o "$d" --count "$LESSON_PAIRS" --seed 5 --split loudness --differ-in loudness
  $A build-dataset synthetic -o "$d" --count "$LESSON_PAIRS" --seed 6 --split kind --differ-in kind
  $A build-dataset synthetic -o "$d" --count "$TEST_PAIRS" --seed 2 --split test
  touch "$work/lessons.done"
}
lap data
train=("$d"/train_fewwords_answer.csv "$d"/train_sentence_answer.csv)
pitch=("$d"/pitch_fewwords_answer.csv "$d"/pitch_sentence_answer.csv)
loudness=("$d"/loudness_fewwords_answer.csv "$d"/loudness_sentence_answer.csv)
kind=("$d"/kind_fewwords_answer.csv "$d"/kind_sentence_answer.csv)
kindbig=("$d"/kindbig_fewwords_answer.csv "$d"/kindbig_sentence_answer.csv)
val=("$d"/val_sentence_answer.csv)
# --resume where a stage already has checkpoints (a killed script continues where it stopped).
resume() { if [ -d "$1/checkpoints" ]; then echo --resume; fi; }
# The two halves of stage 1 are independent: run them side by side, one thread each (the tiny
# models gain nothing from a second thread, measured: 28 clips/s either way).
enc=0; dec=0
[ -f "$work/enc/model.safetensors" ] || { RAYON_NUM_THREADS=1 $A train-stage1 --part encoder \
  --labels "$d/truth.jsonl" --split train --val-split val --init-missing --config "$cfg" \
  --train-config configs/train/demo_stage1_encoder.json -o "$work/enc" $(resume "$work/enc") \
  --quiet > "$work/enc.log" 2>&1 & enc=$!; }
[ -f "$work/dec/model.safetensors" ] || { RAYON_NUM_THREADS=1 nice -n 5 $A train-stage1 --part decoder \
  --text-from-csv "${train[@]}" --val-text-from-csv "${val[@]}" --config "$cfg" --init-missing \
  --train-config configs/train/demo_stage1_decoder.json -o "$work/dec" $(resume "$work/dec") \
  --quiet > "$work/dec.log" 2>&1 & dec=$!; }
status=0
# (niced: the encoder is the critical path)
RAYON_NUM_THREADS=1 nice -n 10 bash -c "$(declare -f more_data); A=$A d=$d work=$work \
  KIND_PAIRS=$KIND_PAIRS LESSON_PAIRS=$LESSON_PAIRS TEST_PAIRS=$TEST_PAIRS; set -e; more_data" \
  > "$work/data.log" 2>&1 || status=1
if [ "$enc" != 0 ]; then wait "$enc" || status=1; tail -2 "$work/enc.log"; fi
if [ "$dec" != 0 ]; then wait "$dec" || status=1; tail -1 "$work/dec.log"; fi
[ "$status" = 0 ] || { echo "stage 1 failed: see $work/enc.log, $work/dec.log and $work/data.log" >&2; exit 1; }
lap "stage 1 (encoder and decoder)"
model=(-c "$work/enc/model.safetensors" -c "$work/dec/model.safetensors" --config "$cfg")
[ -f "$d/cache/index.json" ] && [ -f "$work/cache.done" ] || { rm -rf "$d/cache";
  $A build-dataset embed-cache "$d"/train_sentence_answer.csv "$d"/kindbig_sentence_answer.csv \
    "$d"/pitch_sentence_answer.csv \
    "$d"/loudness_sentence_answer.csv "$d"/kind_sentence_answer.csv \
    "$d"/val_sentence_answer.csv "$d"/test_sentence_answer.csv --audio-root "$d" "${model[@]}" -o "$d/cache" --batch-size 16;
  touch "$work/cache.done"; }
lap "embedding cache"
[ -f "$work/stage2/model.safetensors" ] || $A train-stage2 --train "${train[@]}" --val "${val[@]}" \
  --embed-cache "$d/cache" "${model[@]}" --init-missing \
  --train-config configs/train/demo_stage2.json -o "$work/stage2" $(resume "$work/stage2")
lap "stage 2"
# stage3 STEP_DIR FROM_DIR TRAIN_CONFIG CSV...: one stage-3 step of the curriculum (skipped when done).
stage3() {
  local dir=$1 from=$2 tc=$3; shift 3
  [ -f "$work/$dir/model.safetensors" ] || $A train-stage3 --train "$@" --val "${val[@]}" \
    --embed-cache "$d/cache" -c "$work/$from/model.safetensors" --config "$work/$from/config.json" \
    --train-config "configs/train/$tc.json" -o "$work/$dir" $(resume "$work/$dir")
  lap "stage 3 ($dir)"
}
# Source kind first, on the few-words answers, whose first token is the kind: the cleanest
# signal (from the stage-2 model, 3 epochs over 1000 pairs teach it; the same lesson after
# the ordinal ones, or on both tiers, taught much less). Then both tiers, so the sentence
# answers use it too; then pitch and loudness accumulated with kind; then the training mix.
stage3 stage3-kind-first stage2 demo_stage3_kind_first "$d"/kindbig_fewwords_answer.csv
stage3 stage3-kind stage3-kind-first demo_stage3_kind_review "${kindbig[@]}"
stage3 stage3-pitch stage3-kind demo_stage3_lesson "${kind[@]}" "${pitch[@]}"
stage3 stage3-lessons stage3-pitch demo_stage3_lesson "${kind[@]}" "${pitch[@]}" "${loudness[@]}"
stage3 stage3 stage3-lessons demo_stage3 "${train[@]}"
out=data/models/demo
mkdir -p "$out"
cp "$work/stage3/model.safetensors" "$out/model.safetensors"
cp "$work/stage3/config.json" "$out/config.json"
cp "$work/enc/labels.json" "$out/labels.json"
preds=()
for tier in fewwords sentence; do
  rm -f "$work/test_preds_$tier.csv"
  $A infer "$d/test_${tier}_answer.csv" --audio-root "$d" --model demo --max-tokens 40 \
    -o "$work/test_preds_$tier.csv"
  preds+=("$work/test_preds_$tier.csv")
done
$A eval --synthetic "$d/truth.jsonl" "${preds[@]}" --json "$out/eval_synthetic.json"
echo "demo trained and evaluated in $(( $(date +%s) - start )) s; model in $out"

#!/usr/bin/env bash
# Trains the demo model shipped in data/models/demo/ on a 2-core CPU, from nothing but this repo:
#   1. synthetic data (adiff build-dataset synthetic), each split with its own seed: the training
#      pairs, a validation and a held-out test split, and three "lesson" splits whose pairs differ
#      only in pitch, only in loudness or only in source kind (--differ-in; built beside stage 1);
#   2. stage 1 with configs/demo.json (a tiny HTSAT over a coarser log-mel: 2048-point window,
#      hop 1280, 251 frames in a 128x128 image, 7x cheaper than the paper's front end; a 64-wide,
#      4-layer GPT-2): HTSAT from scratch (--init-missing; bn0 gets the clips' log-mel
#      statistics) learns to tag the training clips' attributes while GPT-2 learns the training
#      answers from scratch, side by side;
#   3. the HTSAT embedding cache of all clips (HTSAT stays frozen from here on);
#   4. stage 2 (GPT-2 frozen), then stage 3 (GPT-2 unfrozen): the pitch lesson, then pitch and
#      loudness, then the (larger) kind lesson with pitch and loudness, then the training pairs
#      (configs/train/demo_*.json). Measured: on mixed pairs alone the model never learned the
#      comparisons; pitch is learned only before the source kind (learned together from stage 2,
#      the kind wins and pitch direction stays at chance, even after 2000 steps), and lessons
#      chained one after another erase each other, so they accumulate;
#   5. the model into data/models/demo/, then `adiff infer` + `adiff eval --synthetic` on the
#      held-out test split for tiers 1 and 2; the accuracies (vs chance) are printed and saved
#      next to the model.
# The demo knows only the synthetic sound world (tones, buzzes, chords, noise, clicks, chirps).
# A killed run continues where it stopped when started again with the same WORK_DIR.
#   usage: scripts/train_demo.sh [WORK_DIR]
#   env:   TRAIN_PAIRS (2000), LESSON_PAIRS (200), KIND_LESSON_PAIRS (1000), VAL_PAIRS (40),
#          TEST_PAIRS (200);
#          SEED (0): the seed of every training stage (written into WORK_DIR/train-configs);
#          DEVICE (cpu): cpu, or cuda / cuda:N with a CUDA build;
#          ADIFF: the adiff binary (default: cargo build --release, ./target/release/adiff);
#          MODEL_OUT (data/models/demo): where the model goes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/demo-run}
SEED=${SEED:-0}
DEVICE=${DEVICE:-cpu}
out=${MODEL_OUT:-data/models/demo}
TRAIN_PAIRS=${TRAIN_PAIRS:-2000}
VAL_PAIRS=${VAL_PAIRS:-40}
TEST_PAIRS=${TEST_PAIRS:-200}
LESSON_PAIRS=${LESSON_PAIRS:-200}
KIND_LESSON_PAIRS=${KIND_LESSON_PAIRS:-1000}
if [ -z "${ADIFF:-}" ]; then cargo build --release -q; ADIFF=./target/release/adiff; fi
A=$ADIFF
dev=(--device "$DEVICE")
cfg=configs/demo.json
# The training configs with this run's seed.
tc=$work/train-configs
mkdir -p "$tc"
for f in configs/train/demo_*.json; do
  sed -E "s/\"seed\": *[0-9]+/\"seed\": $SEED/" "$f" > "$tc/$(basename "$f")"
done
start=$(date +%s)
lap() { echo "[train_demo] $1 done at $(( $(date +%s) - start )) s"; }
mkdir -p "$work"
d="$work/data"
if [ ! -f "$work/data.done" ]; then
  $A build-dataset synthetic -o "$d" --count "$TRAIN_PAIRS" --seed 1 --split train
  $A build-dataset synthetic -o "$d" --count "$VAL_PAIRS" --seed 3 --split val
  touch "$work/data.done"
fi
lap data
# The lessons and the test split are built on the core the decoder leaves idle (after it ends:
# truth.jsonl is appended to by one build at a time).
lessons() {
  $A build-dataset synthetic -o "$d" --count "$LESSON_PAIRS" --seed 4 --split pitch --differ-in pitch
  $A build-dataset synthetic -o "$d" --count "$LESSON_PAIRS" --seed 5 --split loudness --differ-in loudness
  $A build-dataset synthetic -o "$d" --count "$KIND_LESSON_PAIRS" --seed 6 --split kind --differ-in kind
  $A build-dataset synthetic -o "$d" --count "$TEST_PAIRS" --seed 2 --split test
  touch "$work/lessons.done"
}
train=("$d"/train_fewwords_answer.csv "$d"/train_sentence_answer.csv)
pitch=("$d"/pitch_fewwords_answer.csv "$d"/pitch_sentence_answer.csv)
loudness=("$d"/loudness_fewwords_answer.csv "$d"/loudness_sentence_answer.csv)
kind=("$d"/kind_fewwords_answer.csv "$d"/kind_sentence_answer.csv)
val=("$d"/val_sentence_answer.csv)
# --resume where a stage already has checkpoints (a killed script continues where it stopped).
resume() { if [ -d "$1/checkpoints" ]; then echo --resume; fi; }
# The two halves of stage 1 are independent: run them side by side, one thread each (the tiny
# models gain nothing from a second thread, measured: 28 clips/s either way); the decoder ends
# long before the encoder, and its core then builds the lessons and the test split.
enc=0; dec=0
[ -f "$work/enc/model.safetensors" ] || { RAYON_NUM_THREADS=1 $A train-stage1 --part encoder "${dev[@]}" \
  --labels "$d/truth.jsonl" --split train --val-split val --init-missing --config "$cfg" \
  --train-config "$tc"/demo_stage1_encoder.json -o "$work/enc" $(resume "$work/enc") \
  --quiet > "$work/enc.log" 2>&1 & enc=$!; }
{ export RAYON_NUM_THREADS=1
  [ -f "$work/dec/model.safetensors" ] || $A train-stage1 --part decoder "${dev[@]}" \
  --text-from-csv "${train[@]}" --val-text-from-csv "${val[@]}" --config "$cfg" --init-missing \
  --train-config "$tc"/demo_stage1_decoder.json -o "$work/dec" $(resume "$work/dec") \
  --quiet > "$work/dec.log" 2>&1
  [ -f "$work/lessons.done" ] || lessons > "$work/lessons.log" 2>&1; } & dec=$!
status=0
if [ "$enc" != 0 ]; then wait "$enc" || status=1; tail -2 "$work/enc.log"; fi
wait "$dec" || status=1
[ "$status" = 0 ] || { echo "stage 1 failed: see $work/enc.log, $work/dec.log and $work/lessons.log" >&2; exit 1; }
lap "stage 1 (encoder and decoder)"
model=(-c "$work/enc/model.safetensors" -c "$work/dec/model.safetensors" --config "$cfg")
[ -f "$d/cache/index.json" ] && [ -f "$work/cache.done" ] || { rm -rf "$d/cache";
  $A build-dataset embed-cache "${dev[@]}" "$d"/train_sentence_answer.csv "$d"/pitch_sentence_answer.csv \
    "$d"/loudness_sentence_answer.csv "$d"/kind_sentence_answer.csv \
    "$d"/val_sentence_answer.csv "$d"/test_sentence_answer.csv --audio-root "$d" "${model[@]}" -o "$d/cache" --batch-size 16;
  touch "$work/cache.done"; }
lap "embedding cache"
[ -f "$work/stage2/model.safetensors" ] || $A train-stage2 "${dev[@]}" --train "${train[@]}" --val "${val[@]}" \
  --embed-cache "$d/cache" "${model[@]}" --init-missing \
  --train-config "$tc"/demo_stage2.json -o "$work/stage2" $(resume "$work/stage2")
lap "stage 2"
[ -f "$work/stage3-pitch/model.safetensors" ] || $A train-stage3 "${dev[@]}" --train "${pitch[@]}" \
  --val "${val[@]}" --embed-cache "$d/cache" -c "$work/stage2/model.safetensors" \
  --config "$work/stage2/config.json" --train-config "$tc"/demo_stage3_lesson.json \
  -o "$work/stage3-pitch" $(resume "$work/stage3-pitch")
lap "stage 3 (pitch lesson)"
[ -f "$work/stage3-lessons/model.safetensors" ] || $A train-stage3 "${dev[@]}" --train "${pitch[@]}" \
  "${loudness[@]}" --val "${val[@]}" --embed-cache "$d/cache" \
  -c "$work/stage3-pitch/model.safetensors" --config "$work/stage3-pitch/config.json" \
  --train-config "$tc"/demo_stage3_lesson.json \
  -o "$work/stage3-lessons" $(resume "$work/stage3-lessons")
lap "stage 3 (pitch and loudness lessons)"
[ -f "$work/stage3-kind/model.safetensors" ] || $A train-stage3 "${dev[@]}" --train "${pitch[@]}" \
  "${loudness[@]}" "${kind[@]}" --val "${val[@]}" --embed-cache "$d/cache" \
  -c "$work/stage3-lessons/model.safetensors" --config "$work/stage3-lessons/config.json" \
  --train-config "$tc"/demo_stage3_kind.json \
  -o "$work/stage3-kind" $(resume "$work/stage3-kind")
lap "stage 3 (pitch, loudness and kind lessons)"
[ -f "$work/stage3/model.safetensors" ] || $A train-stage3 "${dev[@]}" --train "${train[@]}" --val "${val[@]}" \
  --embed-cache "$d/cache" -c "$work/stage3-kind/model.safetensors" \
  --config "$work/stage3-kind/config.json" --train-config "$tc"/demo_stage3.json \
  -o "$work/stage3" $(resume "$work/stage3")
lap "stage 3"
mkdir -p "$out"
cp "$work/stage3/model.safetensors" "$out/model.safetensors"
cp "$work/stage3/config.json" "$out/config.json"
cp "$work/enc/labels.json" "$out/labels.json"
preds=()
for tier in fewwords sentence; do
  rm -f "$work/test_preds_$tier.csv"
  ADIFF_MODELS=$(dirname "$out") $A infer "$d/test_${tier}_answer.csv" --audio-root "$d" \
    --model "$(basename "$out")" --max-tokens 40 "${dev[@]}" \
    -o "$work/test_preds_$tier.csv"
  preds+=("$work/test_preds_$tier.csv")
done
$A eval --synthetic "$d/truth.jsonl" "${preds[@]}" --json "$out/eval_synthetic.json"
echo "demo trained and evaluated in $(( $(date +%s) - start )) s; model in $out"

#!/usr/bin/env bash
# Trains the demo model shipped in data/models/demo/ on a 2-core CPU, from nothing but this repo:
#   1. synthetic data (adiff build-dataset synthetic), each split with its own seed: the training
#      pairs, a validation and a held-out test split, and a "pool" split whose clips the encoder
#      never trains on (built beside stage 1);
#   2. stage 1 with configs/demo.json (a tiny HTSAT, one block per stage and no patch norm, so
#      it hears loudness, over a coarser log-mel: 4096-point window, hop 640, 32 mel bins from
#      50 Hz to 4 kHz, 501 frames folded 4 times into a 128x128 image, so that HTSAT's final
#      token grid has one frequency row and its pooled embedding keeps pitch; a 64-wide,
#      4-layer GPT-2): HTSAT from scratch (--init-missing; bn0 gets the clips' log-mel
#      statistics) learns to tag the training clips' attributes while GPT-2 learns the training
#      answers from scratch, side by side;
#   3. the HTSAT embedding cache of all clips (HTSAT stays frozen from here on);
#   4. stage 2 (GPT-2 frozen) on the training pairs, then stage 3 (GPT-2 unfrozen) on
#      fresh pairs of the training and pool clips (build-dataset synthetic-remix; no pair is
#      seen twice), in one long phase of interleaved pairs that differ in one attribute (30%
#      kind, 10% loudness, 35% pitch, 10% pattern, 10% background) or at random (5%)
#      (configs/train/demo_stage3.json). Measured: on mixed pairs alone the model never learned
#      the comparisons; lessons chained one after another erase each other; interleaved in one
#      phase they are learned side by side; without pattern and background lessons the model
#      says "X instead of X" of the kind when only those differ;
#   5. the model into data/models/demo/, then `adiff infer` + `adiff eval --synthetic` on the
#      held-out test split for tiers 1 and 2; the accuracies (vs chance) are printed and saved
#      next to the model.
# The demo knows only the synthetic sound world (tones, buzzes, chords, noise, clicks, chirps).
# A killed run continues where it stopped when started again with the same WORK_DIR.
#   usage: scripts/train_demo.sh [WORK_DIR]
#   env:   TRAIN_PAIRS (2000), POOL_PAIRS (1400), VAL_PAIRS (40), TEST_PAIRS (200);
#          REMIX_PAIRS (7200): R sizes stage 3: 9R/4 interleaved pairs (shares as in step 4);
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
POOL_PAIRS=${POOL_PAIRS:-1400}
REMIX_PAIRS=${REMIX_PAIRS:-7200}
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
# The pool and the test split are built on the core the decoder leaves idle (after it ends:
# truth.jsonl is appended to by one build at a time).
lessons() {
  $A build-dataset synthetic -o "$d" --count "$POOL_PAIRS" --seed 4 --split pool
  $A build-dataset synthetic -o "$d" --count "$TEST_PAIRS" --seed 2 --split test
  touch "$work/lessons.done"
}
train=("$d"/train_fewwords_answer.csv "$d"/train_sentence_answer.csv)
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
  $A build-dataset embed-cache "${dev[@]}" "$d"/train_sentence_answer.csv "$d"/pool_sentence_answer.csv \
    "$d"/val_sentence_answer.csv "$d"/test_sentence_answer.csv --audio-root "$d" "${model[@]}" \
    -o "$d/cache" --batch-size 16;
  touch "$work/cache.done"; }
lap "embedding cache"
[ -f "$work/stage2/model.safetensors" ] || $A train-stage2 "${dev[@]}" --train "${train[@]}" --val "${val[@]}" \
  --embed-cache "$d/cache" "${model[@]}" --init-missing \
  --train-config "$tc"/demo_stage2.json -o "$work/stage2" $(resume "$work/stage2")
lap "stage 2"
# Fresh pairs of the training and pool clips for every stage-3 phase (deterministic, < 1 s).
R=$REMIX_PAIRS
remix() { $A build-dataset synthetic-remix -o "$d" --from train,pool --seed "$1" --count "$2" \
  --split "$3" ${4:+--differ-in "$4"} 2> /dev/null; }
I=$((R * 9 / 4))
remix 71 $((I * 30 / 100)) s3-kind kind; remix 72 $((I * 10 / 100)) s3-loudness loudness
remix 73 $((I * 35 / 100)) s3-pitch pitch; remix 75 $((I * 10 / 100)) s3-pattern pattern
remix 76 $((I * 10 / 100)) s3-background background; remix 74 $((I * 5 / 100)) s3-mixed
csvs() { for s in "$@"; do echo "$d/${s}_fewwords_answer.csv" "$d/${s}_sentence_answer.csv"; done; }
prev=$work/stage2
# phase NAME TRAIN_CONFIG SPLIT...: one stage-3 phase from the previous phase's model.
phase() {
  local name=$1 cfg=$2; shift 2
  [ -f "$work/$name/model.safetensors" ] || $A train-stage3 "${dev[@]}" --train $(csvs "$@") \
    --val "${val[@]}" --embed-cache "$d/cache" -c "$prev/model.safetensors" \
    --config "$prev/config.json" --train-config "$tc/$cfg" -o "$work/$name" $(resume "$work/$name")
  prev=$work/$name
  lap "stage 3 ($name)"
}
phase stage3 demo_stage3.json s3-kind s3-loudness s3-pitch s3-pattern s3-background s3-mixed
mkdir -p "$out"
cp "$prev/model.safetensors" "$out/model.safetensors"
cp "$prev/config.json" "$out/config.json"
cp "$work/enc/labels.json" "$out/labels.json"
preds=()
for tier in fewwords sentence; do
  rm -f "$work/test_preds_$tier.csv"
  ADIFF_MODELS=$(dirname "$out") $A infer "$d/test_${tier}_answer.csv" --audio-root "$d" \
    --model "$(basename "$out")" --max-tokens 40 "${dev[@]}" \
    -o "$work/test_preds_$tier.csv"
  preds+=("$work/test_preds_$tier.csv")
done
$A eval --synthetic "$d/truth.jsonl" "${preds[@]}" --json "$out/eval_synthetic.json" --force
echo "demo trained and evaluated in $(( $(date +%s) - start )) s; model in $out"

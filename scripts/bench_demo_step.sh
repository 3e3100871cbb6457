#!/usr/bin/env bash
# Benchmark (not a test): a demo-model training step, two adiff binaries against each other
# (e.g. before and after a change), in one run with rounds alternating. Each round runs STEPS
# steps, startup included, and prints the wall time; the summary gives each binary's median
# seconds a step (startup subtracted: a run of 1 step) and the ratio. PART says which step:
#   stage3:  `train-stage3` from a `scripts/train_demo.sh` work folder's stage-2 model on its
#            stage-3 lessons (the s3-* splits), on all cores;
#   encoder: stage 1's encoder (`train-stage1 --part encoder`, HTSAT from scratch on the work
#            folder's training clips) on one thread, as the script runs it.
# With NEW_WORK_DIR the new side runs on another work folder's stage-2 model and lessons (e.g.
# the same binary on a run whose GPT-2 has its own vocabulary, `build-dataset vocabulary`,
# against one with all 50257 tokens; stage3 only).
#   usage: scripts/bench_demo_step.sh OLD_ADIFF NEW_ADIFF [WORK_DIR (target/demo-run)] [NEW_WORK_DIR]
#   env:   PART (stage3), STEPS (150), ROUNDS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: scripts/bench_demo_step.sh OLD_ADIFF NEW_ADIFF [WORK_DIR]}
new=${2:?usage: scripts/bench_demo_step.sh OLD_ADIFF NEW_ADIFF [WORK_DIR]}
work=${3:-target/demo-run}
work_new=${4:-$work}
STEPS=${STEPS:-150}
PART=${PART:-stage3}
case $PART in stage3|encoder) ;; *) echo "PART must be stage3 or encoder, not '$PART'" >&2; exit 2 ;; esac
ROUNDS=${ROUNDS:-2}
for w in "$work" "$work_new"; do
  [ -f "$w/stage2/model.safetensors" ] || { echo "no stage-2 model in $w: run scripts/train_demo.sh $w first" >&2; exit 2; }
done
# lessons WORK_DIR: the stage-3 lesson CSVs of a work folder.
lessons() {
  for s in kind loudness pitch pattern background mixed; do
    echo "$1/data/s3-${s}_fewwords_answer.csv" "$1/data/s3-${s}_sentence_answer.csv"
  done
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# run BINARY STEPS WORK_DIR: seconds of one train-stage3 run of STEPS steps.
run() {
  rm -rf "$out/run"
  local s e w=$3 d=$3/data
  s=$(date +%s.%N)
  case $PART in
    stage3) "$1" train-stage3 --train $(lessons "$w") --val "$d/val_sentence_answer.csv" \
      --embed-cache "$d/cache" -c "$w/stage2/model.safetensors" --config "$w/stage2/config.json" \
      --train-config "$w/train-configs/demo_stage3.json" -o "$out/run" --stop-after-steps "$2" \
      > /dev/null 2>&1 ;;
    encoder) RAYON_NUM_THREADS=1 "$1" train-stage1 --part encoder --labels "$d/truth.jsonl" \
      --split train --val-split val --init-missing --config configs/demo.json \
      --train-config "$w/train-configs/demo_stage1_encoder.json" -o "$out/run" \
      --stop-after-steps "$2" --quiet > /dev/null 2>&1 ;;
  esac
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD); old: $old on $work; new: $new on $work_new; $PART, $STEPS steps a round"
start_old=$(run "$old" 1 "$work")
start_new=$(run "$new" 1 "$work_new")
echo "startup (a 1-step run): old $start_old s, new $start_new s"
t_old=()
t_new=()
for r in $(seq "$ROUNDS"); do
  a=$(run "$old" "$STEPS" "$work")
  b=$(run "$new" "$STEPS" "$work_new")
  echo "round $r: old $a s, new $b s"
  t_old+=("$a")
  t_new+=("$b")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mo=$(median "${t_old[@]}")
mn=$(median "${t_new[@]}")
awk -v mo="$mo" -v mn="$mn" -v so="$start_old" -v sn="$start_new" -v n="$STEPS" 'BEGIN {
  po = (mo - so) / (n - 1); pn = (mn - sn) / (n - 1);
  printf "median: old %.1f s (%.1f ms a step), new %.1f s (%.1f ms a step); new is %.2fx as fast\n",
    mo, po * 1000, mn, pn * 1000, po / pn }'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

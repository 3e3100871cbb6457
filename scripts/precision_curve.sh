#!/usr/bin/env bash
# Mixed precision on the demo recipe (a measurement, not a test): stages 2 and 3 with the demo
# recipe's training configs (configs/train/demo_stage{2,3}.json, batch 16), started from the
# shipped demo model, once in f32 and once with "precision": "bf16", on the same fresh synthetic
# pairs (seed 5, which no demo split uses). Prints each step's loss side by side, the worst and
# the mean relative difference, and the last-10-step mean loss of each run.
# Runs wherever DEVICE says (cpu: bf16 goes through candle's generic kernels, slowly).
#   usage: scripts/precision_curve.sh [WORK_DIR]
#   env:   STEPS (60) per stage, DEVICE (cpu), ADIFF (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
STEPS=${STEPS:-60}
DEVICE=${DEVICE:-cpu}
if [ -z "${ADIFF:-}" ]; then cargo build --release -q; ADIFF=./target/release/adiff; fi
A=$ADIFF
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD); device $DEVICE"
d=$work/data
if [ ! -d "$d/cache" ]; then
  $A build-dataset synthetic --count $((16 * STEPS)) --seed 5 --split train -o "$d" > /dev/null 2>&1
  $A build-dataset embed-cache "$d/train_sentence_answer.csv" --audio-root "$d" --model demo \
    --device "$DEVICE" -o "$d/cache" > /dev/null 2>&1
fi
for stage in 2 3; do
  for p in f32 bf16; do
    cfg=$work/stage${stage}_$p.json
    python3 - "configs/train/demo_stage$stage.json" "$cfg" "$p" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(epochs=1, save_every=0, num_samples=0, eval_every=0, val_fraction=0.0)
if sys.argv[3] == "bf16":
    c["precision"] = "bf16"
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
    rm -rf "$work/run${stage}_$p"
    /usr/bin/time -f "%e" -o "$work/time" $A train-stage$stage --train "$d/train_sentence_answer.csv" \
      --embed-cache "$d/cache" --model demo --train-config "$cfg" --device "$DEVICE" \
      --stop-after-steps "$STEPS" -o "$work/run${stage}_$p" --quiet > /dev/null
    echo "stage $stage $p: $STEPS steps in $(cat "$work/time") s"
  done
  python3 - "$work/run${stage}_f32" "$work/run${stage}_bf16" "$stage" <<'PY'
import json, sys
def losses(d):
    return [r["loss"] for r in map(json.loads, open(d + "/log.jsonl")) if r.get("event") == "step"]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == len(b) and a, (len(a), len(b))
rel = [abs(x - y) / abs(x) for x, y in zip(a, b)]
for i in range(0, len(a), max(1, len(a) // 12)):
    print(f"  step {i + 1:4d}: f32 {a[i]:.4f}  bf16 {b[i]:.4f}  rel {rel[i]:.2e}")
tail = min(10, len(a))
print(f"stage {sys.argv[3]}: worst relative difference {max(rel):.2e}, mean {sum(rel) / len(rel):.2e}; "
      f"last-{tail}-step mean loss f32 {sum(a[-tail:]) / tail:.4f}, bf16 {sum(b[-tail:]) / tail:.4f}")
PY
done

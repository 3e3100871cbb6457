#!/usr/bin/env bash
# Benchmark (not a test): stage-2 training throughput of the full-size ADIFF (random weights) on
# this machine, in one run:
#   1. adiff with the HTSAT embedding cache vs adiff encoding the audio at every step (ratio);
#   2. adiff with the cache vs the same stage-2 step in PyTorch (same batch size, same answers).
#   usage: PYTHON=/work/venv/bin/python scripts/bench_train.sh   (env: BATCH 4, STEPS 4, BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BATCH=${BATCH:-4}
STEPS=${STEPS:-4}
work=${BENCH_DIR:-$(mktemp -d)}
cargo build --release -q
A=./target/release/adiff
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ! -f "$work/adiff_full.ckpt" ]; then
  "$PY" -c "import sys, json; sys.path.insert(0, 'scripts'); import bench_explain as b, fixtures_adiff as fx; from pathlib import Path; b.build_checkpoint(json.loads((fx.REPO / 'configs/base.json').read_text()), Path('$work/adiff_full.ckpt'))"
fi
[ -d "$work/data" ] || $A build-dataset synthetic -o "$work/data" --count 24 --seed 1 >/dev/null
csv="$work/data/train_sentence_answer.csv"
t0=$(date +%s.%N)
$A build-dataset embed-cache "$csv" --audio-root "$work/data" -c "$work/adiff_full.ckpt" -o "$work/cache" >/dev/null
t1=$(date +%s.%N)
"$PY" - "$BATCH" "$work/bench.json" <<'PY'
import json, sys
d = json.load(open("configs/train/stage2.json"))
d.update({"batch_size": int(sys.argv[1]), "epochs": 1, "save_every": 0, "val_fraction": 0.0,
          "warmup_steps": 1})
json.dump(d, open(sys.argv[2], "w"))
PY
run() { # $1 = out dir, rest = data source args
  out=$1; shift
  rm -rf "$out"
  $A train-stage2 --train "$csv" "$@" -c "$work/adiff_full.ckpt" --train-config "$work/bench.json" \
    -o "$out" --stop-after-steps $((STEPS + 1)) --quiet >/dev/null 2>&1
}
run "$work/run_cache" --embed-cache "$work/cache"
run "$work/run_audio" --audio-root "$work/data"
"$PY" scripts/bench_train.py --ckpt "$work/adiff_full.ckpt" --csv "$csv" --batch "$BATCH" --steps "$STEPS" > "$work/torch.json"
"$PY" - "$work" "$BATCH" "$t0" "$t1" <<'PY'
import json, sys
work, batch, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def sps(run):
    steps = [json.loads(l) for l in open(f"{work}/{run}/log.jsonl") if '"event":"step"' in l]
    # samples/s between the end of the first step and the end of the last (first step warms up)
    t = [s for s in steps]
    return t[-1]["samples_per_s"], len(steps)
cache, n1 = sps("run_cache"); audio, n2 = sps("run_audio")
torch = json.load(open(f"{work}/torch.json"))["samples_per_s"]
print(f"embedding cache built in {t1 - t0:.1f} s")
print(f"adiff stage 2, embedding cache:   {cache:.2f} samples/s (batch {batch}, {n1} steps)")
print(f"adiff stage 2, audio every step:  {audio:.2f} samples/s (batch {batch}, {n2} steps)")
print(f"PyTorch stage 2, same batch:      {torch:.2f} samples/s")
print(f"RESULT cache/audio = {cache / audio:.1f}x; adiff/PyTorch = {cache / torch:.2f}x")
PY
[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"

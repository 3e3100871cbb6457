#!/usr/bin/env bash
# Benchmark (not a test): training throughput of the full-size ADIFF (random weights), adiff vs
# PyTorch on this machine, in one run with rounds alternating between the two:
#   stage 2 (GPT-2 frozen) and stage 3 (GPT-2 trained), batch 4 and 8, HTSAT embeddings from the
#   embedding cache (adiff) or random (PyTorch: the reference has no cache; HTSAT is frozen in
#   both stages, so it is not part of the step), same answers, AdamW + clipping on both sides.
# samples/s are steady-state: the first step of each run (warm-up) is left out, the rest are
# whole optimizer steps (adiff: batch assembly included; PyTorch: tokenization excluded).
# Peak RSS is each process's maximum resident set (/usr/bin/time), model loading included.
#   usage: PYTHON=.venv/bin/python scripts/bench_train.sh
#   env: STAGES ("2 3"), BATCHES ("4 8"), STEPS (3 timed steps), ROUNDS (2), AUDIO (1: also
#        stage 2 at the first batch size encoding the audio at every step, for the cache's gain),
#        ADIFF (a binary to use instead of building target/release/adiff), BENCH_DIR (kept)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STAGES=${STAGES:-2 3}
BATCHES=${BATCHES:-4 8}
STEPS=${STEPS:-3}
ROUNDS=${ROUNDS:-2}
work=${BENCH_DIR:-$(mktemp -d)}
if [ -z "${ADIFF:-}" ]; then
  cargo build --release -q
  ADIFF=./target/release/adiff
fi
A=$ADIFF
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo ' (with local changes)'), adiff binary: $A"
if [ ! -f "$work/adiff_full.ckpt" ]; then
  "$PY" -c "import sys, json; sys.path.insert(0, 'scripts'); import bench_explain as b, fixtures_adiff as fx; from pathlib import Path; b.build_checkpoint(json.loads((fx.REPO / 'configs/base.json').read_text()), Path('$work/adiff_full.ckpt'))"
fi
max_batch=$(printf '%s\n' $BATCHES | sort -n | tail -1)
count=$(( max_batch * (STEPS + 2) ))
data="$work/data$count"
[ -d "$data" ] || $A build-dataset synthetic -o "$data" --count "$count" --seed 1 >/dev/null 2>&1
csv="$data/train_sentence_answer.csv"
[ -d "$data.cache" ] || $A build-dataset embed-cache "$csv" --audio-root "$data" \
  -c "$work/adiff_full.ckpt" -o "$data.cache" >/dev/null 2>&1
for s in $STAGES; do for b in $BATCHES; do
  "$PY" - "$s" "$b" "$work/stage$s-b$b.json" <<'PY'
import json, sys
d = json.load(open(f"configs/train/stage{sys.argv[1]}.json"))
d.update({"batch_size": int(sys.argv[2]), "epochs": 1, "save_every": 0, "val_fraction": 0.0,
          "warmup_steps": 1})
json.dump(d, open(sys.argv[3], "w"))
PY
done; done

# adiff: one run; appends "stage batch source samples/s rss_kb" to results.txt.
run_adiff() { # $1 stage, $2 batch, $3 source (cache|audio)
  local out="$work/run" src
  rm -rf "$out"
  if [ "$3" = cache ]; then src=(--embed-cache "$data.cache"); else src=(--audio-root "$data"); fi
  /usr/bin/time -f "%M" -o "$work/rss" $A train-stage"$1" --train "$csv" "${src[@]}" \
    -c "$work/adiff_full.ckpt" --train-config "$work/stage$1-b$2.json" -o "$out" \
    --stop-after-steps $((STEPS + 1)) --quiet >/dev/null 2>&1
  "$PY" - "$out/log.jsonl" "$2" "$1" "$3" "$(cat "$work/rss")" >> "$work/results.txt" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"event":"step"' in l]
b = int(sys.argv[2])
# samples_per_s of step k is k*b over the wall time from the start of the run's first step to
# the end of step k, so steps 2..N took N*b/sps_N - b/sps_1 seconds (every part of a step).
elapsed = lambda k: k * b / steps[k - 1]["samples_per_s"]
n = len(steps)
# The trainer's own split of each step (forward includes batch assembly), median of steps 2..N.
split = [sorted(s["seconds"][k] for s in steps[1:])[(n - 1) // 2] for k in ("forward", "backward", "optimizer")]
print("adiff", sys.argv[3], sys.argv[2], sys.argv[4], (n - 1) * b / (elapsed(n) - elapsed(1)), sys.argv[5],
      *(f"{x:.3f}" for x in split))
PY
}
run_torch() { # $1 stage, $2 batch
  /usr/bin/time -f "%M" -o "$work/rss" "$PY" scripts/bench_train.py --ckpt "$work/adiff_full.ckpt" \
    --csv "$csv" --stage "$1" --batch "$2" --steps "$STEPS" > "$work/torch.json"
  "$PY" -c "import json,sys; print('torch', sys.argv[1], sys.argv[2], 'random', json.load(open(sys.argv[3]))['samples_per_s'], open(sys.argv[4]).read().strip())" \
    "$1" "$2" "$work/torch.json" "$work/rss" >> "$work/results.txt"
}
rm -f "$work/results.txt"
for r in $(seq "$ROUNDS"); do
  for s in $STAGES; do for b in $BATCHES; do
    if [ $((r % 2)) = 1 ]; then run_adiff "$s" "$b" cache; run_torch "$s" "$b";
    else run_torch "$s" "$b"; run_adiff "$s" "$b" cache; fi
  done; done
  if [ "${AUDIO:-0}" = 1 ]; then run_adiff 2 "$(echo $BATCHES | cut -d' ' -f1)" audio; fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$work/results.txt" "$ROUNDS" "$STEPS" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
splits = defaultdict(list)
for line in open(sys.argv[1]):
    who, stage, batch, src, sps, rss, *split = line.split()
    runs[(who, stage, int(batch), src)].append((float(sps), int(rss)))
    if split:
        splits[(stage, int(batch), src)].append([float(x) for x in split])
print(f"rounds {sys.argv[2]}, {sys.argv[3]} timed steps per run; samples/s median over rounds "
      "(min-max), peak RSS max over rounds")
print(f"{'stage':>5} {'batch':>5} {'adiff samples/s':>22} {'PyTorch samples/s':>22} {'ratio':>6} "
      f"{'adiff RSS':>10} {'PyTorch RSS':>12}")
def cell(v):
    s = [x[0] for x in v]
    return f"{statistics.median(s):.2f} ({min(s):.2f}-{max(s):.2f})", max(x[1] for x in v)
for (who, stage, batch, src), v in sorted(runs.items()):
    if who != "adiff" or src != "cache":
        continue
    a, a_rss = cell(v)
    t, t_rss = cell(runs[("torch", stage, batch, "random")])
    ratio = statistics.median(x[0] for x in v) / statistics.median(x[0] for x in runs[("torch", stage, batch, "random")])
    print(f"{stage:>5} {batch:>5} {a:>22} {t:>22} {ratio:>5.2f}x {a_rss / 1024:>8.0f} MB "
          f"{t_rss / 1024:>9.0f} MB")
    print(f"RESULT stage {stage} batch {batch}: adiff/PyTorch = {ratio:.2f}x, peak RSS "
          f"{a_rss / 1024:.0f} MB vs {t_rss / 1024:.0f} MB")
print("adiff's own split of a step (median over rounds, seconds): forward (with batch assembly) / "
      "backward / optimizer")
for (stage, batch, src), v in sorted(splits.items()):
    med = [statistics.median(x[i] for x in v) for i in range(3)]
    print(f"  stage {stage} batch {batch} {src}: " + " / ".join(f"{x:.3f}" for x in med))
for (who, stage, batch, src), v in sorted(runs.items()):
    if src == "audio":
        c = statistics.median(x[0] for x in runs[("adiff", stage, batch, "cache")])
        a = statistics.median(x[0] for x in v)
        print(f"stage {stage} batch {batch}: embedding cache {c:.2f} vs audio every step {a:.2f} "
              f"samples/s: cache/audio = {c / a:.2f}x")
PY
[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"

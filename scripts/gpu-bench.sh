#!/usr/bin/env bash
# The prepared benchmark for the GPU machine: adiff against the PyTorch reference on the same GPU,
# in the same call, with the full-size model (random weights, built there). Run it there with the
# device tool after scripts/build-cuda.sh and `scripts/gpu-bench.sh --prepare` here, carrying
# target/cuda/adiff.xz and target/gpu-py (see docs/gpu.md). Needs no Rust and no network there:
# adiff runs through scripts/gpu-run.sh, the PyTorch side in the machine's python3 (torch,
# transformers, safetensors, numpy, scipy) with msclap's and torchlibrosa's sources from
# target/gpu-py and stand-ins for librosa and soundfile (scripts/torch_compat.py).
#   usage: scripts/gpu-bench.sh              DEVICE=cuda: configs/base.json, at most ~8 min on an H100
#          scripts/gpu-bench.sh --dry-run    = DEVICE=cpu: configs/tiny.json, tiny sizes (~2-3 min on
#                                            2 cores), the same code paths; keeps the script from rotting
#          scripts/gpu-bench.sh --prepare    only copy msclap + torchlibrosa into target/gpu-py (needs
#                                            PYTHON = the fixtures venv, scripts/requirements-fixtures.txt)
#   env:   DEVICE (cuda), PYTHON (default /opt/torch/.venv/bin/python, else python3), OUT (where
#          gpu-bench.txt and results.txt go; default target/gpu-bench), BENCH_DIR (work folder, kept
#          between runs: the checkpoint is built once; default /tmp/adiff-gpu-bench-DEVICE),
#          ADIFF (DEVICE=cpu: the binary, default target/release/adiff), DEADLINE_S (450 on cuda),
#          ROUNDS (explain rounds, alternating which side goes first: 2 on cuda, 1 on cpu),
#          EXPLAIN_TOKENS (200), INFER_BATCHES ("32 64"), INFER_RUN_BATCHES (2: pairs = batch x 2),
#          INFER_TOKENS (100), INFER_DTYPE (bf16 on cuda, f32 on cpu), TRAIN_BATCH (16),
#          TRAIN_STEPS (5 timed steps after 1 warm-up).
# What it times; every figure on both sides, each measurement a fresh process:
#   explain  `adiff explain A B --tier 3 --max-tokens 200 --no-stop --json --dtype f32|bf16` (two
#            10 s clips, batch 1): its seconds.audio + seconds.generate (load excluded), against
#            PyTorch's first encode + prefix after loading plus KV-cache decoding of 200 tokens
#            (load excluded; scripts/bench_explain.py; bf16 = torch.autocast). Also reported: adiff's
#            load and whole-process time, PyTorch's warm encode (best of 3 further calls).
#   infer    `adiff infer` of N pairs of distinct clips at --batch-size 32 and 64 (N = 2 batches),
#            --tier 3, 100 tokens each, --no-stop: pairs/s = N / wall time of the whole process
#            (start, load, WAV reading, HTSAT, prefix, decoding, CSV) on both sides
#            (scripts/bench_infer.py for PyTorch, which also reports its rate with the load excluded).
#   stage 2, stage 3  samples/s at batch 16, f32 and bf16 AMP (adiff: "precision": "bf16" in the
#            train config; PyTorch: torch.autocast for forward + loss, f32 master weights, AdamW):
#            adiff from its log.jsonl, steps 2..N (as scripts/bench_train.sh), embeddings from its
#            embedding cache; PyTorch steps 2..N of scripts/bench_train.py, embeddings random (HTSAT
#            is frozen in both stages, so it is no part of a step).
#   nccl     stage 2 f32 again with WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 (one rank over NCCL): its
#            samples/s and the overhead against the plain run, (plain / nccl - 1) x 100 %.
# Peak memory: on the GPU, nvidia-smi's used_memory of the process, polled about every 0.3 s, for
# both sides (CUDA context included; a peak shorter than a poll can be missed; where nvidia-smi
# lists no process, the rise of the GPU's total used memory); PyTorch also gives
# torch.cuda.max_memory_allocated (tensors only: peak_alloc). On the CPU: peak RSS (/usr/bin/time).
# Output: the machine (load average, GPU, commit), a table, then one `RESULT name=value` line per
# figure: seconds (_s), pairs or samples per second, MiB (_mb), ratio = adiff / PyTorch of the
# figure (a time: below 1 is adiff faster; a rate: above 1). Rounds: the best of each side. A
# figure the binary cannot produce yet is `not-supported`, one that failed `failed` (its error is
# printed), one not started before the deadline (DEADLINE_S, counted from the start; a process
# still running 30 s past it is killed) `skipped-time`; exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=run
case "${1:-}" in
  "") ;;
  --dry-run) DEVICE=cpu ;;
  --prepare) mode=prepare ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
DEVICE=${DEVICE:-cuda}
cpu=0; [ "$DEVICE" = cpu ] && cpu=1
py=${PYTHON:-/opt/torch/.venv/bin/python}; [ -x "$py" ] || py=python3
compat=${ADIFF_TORCH_COMPAT:-target/gpu-py}

prepare_compat() {
  "$py" - "$compat" <<'PY'
import importlib.util, shutil, sys
from pathlib import Path
dst = Path(sys.argv[1])
for name in ("msclap", "torchlibrosa"):
    spec = importlib.util.find_spec(name)  # finds the package without running its __init__
    if spec is None:
        sys.exit(f"gpu-bench --prepare: {name} is not installed for {sys.executable} "
                 "(use PYTHON=<the fixtures venv>/bin/python, see scripts/requirements-fixtures.txt)")
    shutil.rmtree(dst / name, ignore_errors=True)
    shutil.copytree(Path(spec.origin).parent, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
print(f"copied msclap and torchlibrosa into {dst}")
PY
}
if [ "$mode" = prepare ]; then prepare_compat; exit; fi
if [ ! -d "$compat/msclap/models" ] || [ ! -d "$compat/torchlibrosa" ]; then
  prepare_compat || { echo "gpu-bench: $compat is missing: run scripts/gpu-bench.sh --prepare where the fixtures venv is, and carry $compat" >&2; exit 2; }
fi
export ADIFF_TORCH_COMPAT=$(cd "$compat" && pwd)
export PYTHONUNBUFFERED=1

if [ $cpu = 1 ]; then
  CFG=configs/tiny.json; TRAIN_CFG=configs/train/tiny_stage
  : "${DEADLINE_S:=600}" "${ROUNDS:=1}" "${EXPLAIN_TOKENS:=20}" "${INFER_BATCHES:=2 4}" "${INFER_RUN_BATCHES:=2}"
  : "${INFER_TOKENS:=8}" "${INFER_DTYPE:=f32}" "${TRAIN_BATCH:=2}" "${TRAIN_STEPS:=2}" "${EXPLAIN_REPEATS:=1}"
  A=("${ADIFF:-target/release/adiff}")
  [ -x "${A[0]}" ] || { echo "gpu-bench: ${A[0]} not found (nice -n 10 cargo build --release)" >&2; exit 2; }
  bin=${A[0]}
else
  CFG=configs/base.json; TRAIN_CFG=configs/train/stage
  : "${DEADLINE_S:=450}" "${ROUNDS:=2}" "${EXPLAIN_TOKENS:=200}" "${INFER_BATCHES:=32 64}" "${INFER_RUN_BATCHES:=2}"
  : "${INFER_TOKENS:=100}" "${INFER_DTYPE:=bf16}" "${TRAIN_BATCH:=16}" "${TRAIN_STEPS:=5}" "${EXPLAIN_REPEATS:=3}"
  A=(scripts/gpu-run.sh)
  bin=target/cuda/gpu/adiff  # where gpu-run.sh unpacks target/cuda/adiff.xz
fi
out=${OUT:-target/gpu-bench}
work=${BENCH_DIR:-/tmp/adiff-gpu-bench-$DEVICE}
mkdir -p "$out" "$work"
log=$out/gpu-bench.txt
raw=$work/raw.tsv
: > "$raw"
exec > >(tee "$log") 2>&1
fail=0
ckpt=$work/adiff_random_$(basename "$CFG" .json).ckpt

rec() { printf '%s\t%s\n' "$1" "$2" >> "$raw"; }  # figure name, value (a number or a status word)
late() { [ "$SECONDS" -ge "$DEADLINE_S" ]; }
now() { echo "${EPOCHREALTIME/,/.}"; }
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -dc 0-9; }
# Runs "$@" in the background with stdout in $work/$1.out and stderr in $work/$1.err and sets
# RC, WALL (seconds) and MEM (peak MiB: nvidia-smi on the GPU, RSS on the CPU; "n/a" if unknown).
# A process still running 30 s past the deadline is killed (KILLED=1; its figures: skipped-time).
measure() {
  local tag=$1; shift
  local t0 pid v base=0 peak_pid=0 peak_tot=0 limit=$(( DEADLINE_S - SECONDS + 30 ))
  [ $limit -lt 30 ] && limit=30
  KILLED=0
  rm -f "$work/$tag.rss"
  t0=$(now)
  if [ $cpu = 1 ] && [ -x /usr/bin/time ]; then
    /usr/bin/time -f %M -o "$work/$tag.rss" "$@" > "$work/$tag.out" 2> "$work/$tag.err" &
  else
    [ $cpu = 0 ] && base=$(gpu_used)
    "$@" > "$work/$tag.out" 2> "$work/$tag.err" &
  fi
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ $cpu = 0 ]; then
      v=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null \
          | awk -F', *' -v p="$pid" '$1 == p { s += $2 } END { print s + 0 }')
      [ "${v:-0}" -gt "$peak_pid" ] && peak_pid=$v
      v=$(gpu_used); v=$(( ${v:-0} - ${base:-0} ))
      [ "$v" -gt "$peak_tot" ] && peak_tot=$v
    fi
    if awk -v a="$(now)" -v b="$t0" -v l="$limit" 'BEGIN { exit !(a - b > l) }'; then
      echo "gpu-bench: killed after ${limit} s (past the deadline)" >> "$work/$tag.err"
      kill $(pgrep -P "$pid" 2>/dev/null) "$pid" 2>/dev/null
      KILLED=1
    fi
    sleep 0.2
  done
  wait "$pid"; RC=$?
  WALL=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
  if [ $cpu = 1 ]; then
    MEM=n/a
    [ -s "$work/$tag.rss" ] && MEM=$(tail -1 "$work/$tag.rss" | awk '$1 ~ /^[0-9]+$/ { printf "%.0f", $1 / 1024 }')
    [ -n "$MEM" ] || MEM=n/a
  elif [ "$peak_pid" -gt 0 ]; then MEM=$peak_pid
  elif [ "$peak_tot" -gt 0 ]; then MEM=$peak_tot
  else MEM=n/a
  fi
  return 0
}
failed() { # figure names...: record `failed` (or skipped-time if killed at the deadline), show the error
  if [ "$KILLED" = 1 ]; then
    echo "  $TAG: killed, past the deadline"; status_all skipped-time "$@"; return
  fi
  echo "  FAILED ($TAG, exit $RC): $(tail -c 1500 "$work/$TAG.err" | tail -n 8)"
  status_all failed "$@"
  fail=1
}
status_all() { local s=$1; shift; for f in "$@"; do rec "$f" "$s"; done; }
jget() { # file expressions...: evaluates each over the JSON object in file (its last line if not all JSON)
  "$py" -c 'import json, sys
text = open(sys.argv[1]).read().strip()
try:
    d = json.loads(text)
except ValueError:
    d = json.loads(text.splitlines()[-1])
for k in sys.argv[2:]:
    v = eval(k, {}, d)
    print("n/a" if v is None else (round(v, 4) if isinstance(v, float) else v))' "$@"; }

echo "== gpu-bench: DEVICE=$DEVICE, config $CFG, deadline ${DEADLINE_S} s, work folder $work"
echo "date: $(date -u +%FT%TZ); host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml scripts \
  2>/dev/null || echo ' (with local changes)')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c 'import sys, torch, transformers
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, transformers {transformers.__version__}")'
"${A[@]}" --version || { echo "gpu-bench: cannot run ${A[*]}" >&2; exit 2; }
echo "adiff binary: $bin ($(stat -c '%s bytes, %y' "$bin" 2>/dev/null | cut -c1-40))"

# What the binary accepts (flags being added: a figure it cannot do is `not-supported`).
explain_bf16=0; "${A[@]}" explain --help 2>/dev/null | grep -q -- bf16 && explain_bf16=1
infer_bf16=0; "${A[@]}" infer --help 2>/dev/null | grep -q -- bf16 && infer_bf16=1
explain_dtype=0; "${A[@]}" explain --help 2>/dev/null | grep -q -- --dtype && explain_dtype=1
infer_dtype_flag=0; "${A[@]}" infer --help 2>/dev/null | grep -q -- --dtype && infer_dtype_flag=1
nccl=0; [ $cpu = 0 ] && grep -q libnccl "$bin" 2>/dev/null && nccl=1
infer_dtype=$INFER_DTYPE
if [ "$infer_dtype" = bf16 ] && [ $infer_bf16 = 0 ]; then
  echo "note: adiff infer has no --dtype bf16 yet: infer is measured in f32 on both sides"
  infer_dtype=f32
fi
yn() { [ "$1" = 1 ] && echo yes || echo no; }
echo "binary: explain --dtype bf16 $(yn $explain_bf16), infer --dtype bf16 $(yn $infer_bf16)$([ $cpu = 0 ] && echo ", NCCL $(yn $nccl)")"

echo "== preparing (untimed): random checkpoint, clips, pairs, synthetic dataset, embedding cache"
t_prep=$SECONDS
"$py" scripts/bench_explain.py --prepare-only --ckpt "$ckpt" --wav-dir "$work/wavs" --config "$CFG" || {
  echo "gpu-bench: the PyTorch side could not build the checkpoint: nothing to measure" >&2; exit 1; }
max_batch=$(printf '%s\n' $INFER_BATCHES | sort -n | tail -1)
npairs=$(( max_batch * INFER_RUN_BATCHES ))
if [ "$(cat "$work/pairs/pairs.csv" 2>/dev/null | wc -l)" -ne $(( npairs + 1 )) ]; then
  rm -rf "$work/pairs"
  "$py" scripts/bench_infer.py --write-pairs "$npairs" --audio-root "$work/pairs" --csv "$work/pairs/pairs.csv" --config "$CFG" || fail=1
fi
count=$(( TRAIN_BATCH * (TRAIN_STEPS + 2) ))
data=$work/synth$count
csv=$data/train_sentence_answer.csv
[ -f "$csv" ] || "${A[@]}" build-dataset synthetic -o "$data" --count "$count" --seed 1 > /dev/null || fail=1
cache=$data.cache.$(basename "$CFG" .json)
[ -d "$cache" ] || "${A[@]}" build-dataset embed-cache "$csv" --audio-root "$data" -c "$ckpt" --config "$CFG" \
  --device "$DEVICE" -o "$cache" > /dev/null || fail=1
# Warm-up, untimed: the first CUDA command of a machine may compile kernels (PTX JIT).
for dt in f32 $([ $explain_bf16 = 1 ] && echo bf16); do
  "${A[@]}" explain "$work/wavs/explain_a.wav" "$work/wavs/explain_b.wav" -c "$ckpt" --config "$CFG" --device "$DEVICE" \
    $([ $explain_dtype = 1 ] && echo "--dtype $dt") --tier 3 --max-tokens 2 --no-stop --json > /dev/null || fail=1
done
echo "prepared in $(( SECONDS - t_prep )) s"

# --- explain -----------------------------------------------------------------------------------
explain_adiff() { # dtype round
  local dt=$1 f=explain_$1
  local figs=("${f}_adiff_s" "${f}_peak_mem_mb_adiff" "${f}_adiff_load_s" "${f}_adiff_wall_s")
  if [ "$dt" = bf16 ] && [ $explain_bf16 = 0 ]; then status_all not-supported "${figs[@]}"; return; fi
  if late; then status_all skipped-time "${figs[@]}"; return; fi
  TAG=${f}_adiff_r$2
  measure "$TAG" "${A[@]}" explain "$work/wavs/explain_a.wav" "$work/wavs/explain_b.wav" -c "$ckpt" --config "$CFG" \
    --device "$DEVICE" $([ $explain_dtype = 1 ] && echo "--dtype $dt") --tier 3 --max-tokens "$EXPLAIN_TOKENS" --no-stop --json
  local v
  if [ $RC = 0 ] && v=$(jget "$work/$TAG.out" 'seconds["audio"] + seconds["generate"]' 'seconds["load"]' 'answers[0]["tokens"]'); then
    set -- $v
    [ "$3" = "$EXPLAIN_TOKENS" ] || echo "  warning: adiff made $3 tokens, not $EXPLAIN_TOKENS"
    rec "${f}_adiff_s" "$1"; rec "${f}_peak_mem_mb_adiff" "$MEM"; rec "${f}_adiff_load_s" "$2"; rec "${f}_adiff_wall_s" "$WALL"
    echo "  adiff   $dt: audio + generate $1 s (load $2 s, whole process $WALL s), peak $MEM MiB"
  else failed "${figs[@]}"; fi
}
explain_torch() { # dtype round
  local dt=$1 f=explain_$1 amp=()
  local figs=("${f}_torch_s" "${f}_peak_mem_mb_torch" "${f}_peak_alloc_mb_torch" "${f}_torch_warm_s")
  [ "$dt" = bf16 ] && amp=(--amp bf16)
  if late; then status_all skipped-time "${figs[@]}"; return; fi
  TAG=${f}_torch_r$2
  measure "$TAG" "$py" scripts/bench_explain.py --timing-only --ckpt "$ckpt" --wav-dir "$work/wavs" --config "$CFG" \
    --tokens "$EXPLAIN_TOKENS" --no-reference-loop --device "$DEVICE" --repeats "$EXPLAIN_REPEATS" "${amp[@]}"
  local v
  if [ $RC = 0 ] && v=$(jget "$work/$TAG.out" 'encode_prefix_first_s + kv_cache_s' 'encode_prefix_s + kv_cache_s' 'peak_gpu_mb'); then
    set -- $v
    rec "${f}_torch_s" "$1"; rec "${f}_peak_mem_mb_torch" "$MEM"; rec "${f}_peak_alloc_mb_torch" "$3"; rec "${f}_torch_warm_s" "$2"
    echo "  PyTorch $dt: encode + prefix + decode $1 s (warm encode: $2 s), peak $MEM MiB (allocated $3)"
  else failed "${figs[@]}"; fi
}
explain_round() { # round: adiff first in odd rounds, PyTorch first in even ones
  echo "-- explain round $1 of $ROUNDS (load average $(cut -d' ' -f1 /proc/loadavg))"
  for dt in f32 bf16; do
    if [ $(($1 % 2)) = 1 ]; then explain_adiff "$dt" "$1"; explain_torch "$dt" "$1"
    else explain_torch "$dt" "$1"; explain_adiff "$dt" "$1"; fi
  done
}
echo "== explain: 2 clips, tier 3, $EXPLAIN_TOKENS new tokens, batch 1$([ "$ROUNDS" -gt 1 ] && echo " (rounds 2..$ROUNDS after the rest, time permitting)")"
explain_round 1

# --- infer -------------------------------------------------------------------------------------
echo "== infer: $INFER_RUN_BATCHES batches of distinct pairs, tier 3, $INFER_TOKENS tokens each, --no-stop, $infer_dtype"
rec infer_dtype "$infer_dtype"
for b in $INFER_BATCHES; do
  n=$(( b * INFER_RUN_BATCHES ))
  head -n $(( n + 1 )) "$work/pairs/pairs.csv" > "$work/pairs/pairs_b$b.csv"
  f=infer_b$b
  sides=(adiff torch); [ "$b" != "$(echo $INFER_BATCHES | cut -d' ' -f1)" ] && sides=(torch adiff)
  for side in "${sides[@]}"; do
    if [ $side = adiff ]; then
      figs=("${f}_pairs_per_s_adiff" "${f}_peak_mem_mb_adiff")
      if late; then status_all skipped-time "${figs[@]}"; continue; fi
      rm -f "$work/$f.adiff.csv" "$work/$f.adiff.csv.settings.json"
      TAG=${f}_adiff
      measure "$TAG" "${A[@]}" infer "$work/pairs/pairs_b$b.csv" --audio-root "$work/pairs" -c "$ckpt" --config "$CFG" \
        --device "$DEVICE" $([ $infer_dtype_flag = 1 ] && echo "--dtype $infer_dtype") --batch-size "$b" --tier 3 \
        --max-tokens "$INFER_TOKENS" --no-stop -o "$work/$f.adiff.csv"
      rows=$("$py" -c 'import csv, sys; print(len(list(csv.DictReader(open(sys.argv[1])))))' "$work/$f.adiff.csv" 2>/dev/null)
      if [ $RC = 0 ] && [ "${rows:-0}" = "$n" ]; then
        v=$(awk -v n="$n" -v w="$WALL" 'BEGIN { printf "%.3f", n / w }')
        rec "${f}_pairs_per_s_adiff" "$v"; rec "${f}_peak_mem_mb_adiff" "$MEM"
        echo "  adiff   batch $b: $n pairs in $WALL s (whole process) = $v pairs/s, peak $MEM MiB"
      else failed "${figs[@]}"; fi
    else
      figs=("${f}_pairs_per_s_torch" "${f}_peak_mem_mb_torch" "${f}_peak_alloc_mb_torch" "${f}_pairs_per_s_torch_excl_load")
      if late; then status_all skipped-time "${figs[@]}"; continue; fi
      amp=(); [ "$infer_dtype" = bf16 ] && amp=(--amp bf16)
      TAG=${f}_torch
      measure "$TAG" "$py" scripts/bench_infer.py --ckpt "$ckpt" --csv "$work/pairs/pairs_b$b.csv" --audio-root "$work/pairs" \
        --config "$CFG" --batch "$b" --tokens "$INFER_TOKENS" --device "$DEVICE" "${amp[@]}"
      if [ $RC = 0 ] && v=$(jget "$work/$TAG.out" pairs pairs_per_s peak_gpu_mb) && [ "$(echo $v | cut -d' ' -f1)" = "$n" ]; then
        set -- $v
        w=$(awk -v n="$n" -v w="$WALL" 'BEGIN { printf "%.3f", n / w }')
        rec "${f}_pairs_per_s_torch" "$w"; rec "${f}_peak_mem_mb_torch" "$MEM"; rec "${f}_peak_alloc_mb_torch" "$3"
        rec "${f}_pairs_per_s_torch_excl_load" "$2"
        echo "  PyTorch batch $b: $n pairs in $WALL s (whole process) = $w pairs/s ($2 without start and load), peak $MEM MiB (allocated $3)"
      else failed "${figs[@]}"; fi
    fi
  done
done

# --- stage 2 / stage 3 training ----------------------------------------------------------------
train_config() { # stage precision -> path
  local p=$work/stage$1_$2_b$TRAIN_BATCH.json
  "$py" - "$TRAIN_CFG$1.json" "$2" "$TRAIN_BATCH" "$p" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d.update({"batch_size": int(sys.argv[3]), "grad_accum": 1, "epochs": 1, "save_every": 0, "eval_every": 0,
          "val_fraction": 0.0, "warmup_steps": 1, "num_samples": 0})
if sys.argv[2] == "bf16":
    d["precision"] = "bf16"
json.dump(d, open(sys.argv[4], "w"), indent=1)
PY
  echo "$p"
}
adiff_sps() { # log.jsonl batch: samples/s of steps 2..N (the trainer's samples_per_s is cumulative)
  "$py" - "$1" "$2" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"event":"step"' in l.replace(" ", "")]
b = int(sys.argv[2])
assert len(steps) >= 2, f"{len(steps)} steps logged"
elapsed = lambda k: k * b / steps[k - 1]["samples_per_s"]
print(round((len(steps) - 1) * b / (elapsed(len(steps)) - elapsed(1)), 3))
PY
}
train_adiff() { # stage precision [nccl]
  local s=$1 p=$2 f=stage$1_$2 cfgj figs v
  [ "${3:-}" = nccl ] && f=nccl_world1
  figs=("${f}_samples_per_s_adiff" "${f}_peak_mem_mb_adiff")
  if late; then status_all skipped-time "${figs[@]}"; return; fi
  cfgj=$(train_config "$s" "$p")
  TAG=${f}_adiff
  rm -rf "$work/$TAG.run"
  local envs=()
  [ "${3:-}" = nccl ] && envs=(env WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_PORT="${MASTER_PORT:-29511}")
  measure "$TAG" "${envs[@]}" "${A[@]}" train-stage"$s" --train "$csv" --embed-cache "$cache" -c "$ckpt" --config "$CFG" \
    --train-config "$cfgj" --device "$DEVICE" -o "$work/$TAG.run" --stop-after-steps $(( TRAIN_STEPS + 1 )) --quiet
  if [ $RC = 0 ] && v=$(adiff_sps "$work/$TAG.run/log.jsonl" "$TRAIN_BATCH" 2>> "$work/$TAG.err"); then
    cp "$work/$TAG.run/log.jsonl" "$work/$TAG.log.jsonl"; rm -rf "$work/$TAG.run"  # its checkpoint can be GBs
    rec "${f}_samples_per_s_adiff" "$v"; rec "${f}_peak_mem_mb_adiff" "$MEM"
    echo "  adiff   $f: $v samples/s, peak $MEM MiB"
  elif [ "$p" = bf16 ] && grep -qE 'unknown field.{0,3}precision' "$work/$TAG.err"; then
    echo "  adiff   $f: not supported by this binary: $(grep -oE -m1 'unknown field.{0,3}precision.{0,3}' "$work/$TAG.err")"
    status_all not-supported "${figs[@]}"
  else failed "${figs[@]}"; fi
}
train_torch() { # stage precision
  local s=$1 p=$2 f=stage$1_$2 amp=() figs v
  figs=("${f}_samples_per_s_torch" "${f}_peak_mem_mb_torch" "${f}_peak_alloc_mb_torch")
  if late; then status_all skipped-time "${figs[@]}"; return; fi
  [ "$p" = bf16 ] && amp=(--amp bf16)
  TAG=${f}_torch
  measure "$TAG" "$py" scripts/bench_train.py --ckpt "$ckpt" --csv "$csv" --config "$CFG" --stage "$s" \
    --batch "$TRAIN_BATCH" --steps "$TRAIN_STEPS" --device "$DEVICE" "${amp[@]}"
  if [ $RC = 0 ] && v=$(jget "$work/$TAG.out" samples_per_s peak_gpu_mb); then
    set -- $v
    rec "${f}_samples_per_s_torch" "$1"; rec "${f}_peak_mem_mb_torch" "$MEM"; rec "${f}_peak_alloc_mb_torch" "$2"
    echo "  PyTorch $f: $1 samples/s, peak $MEM MiB (allocated $2)"
  else failed "${figs[@]}"; fi
}
echo "== stage 2 and stage 3: batch $TRAIN_BATCH, $TRAIN_STEPS timed steps after 1 warm-up"
rec train_batch "$TRAIN_BATCH"
i=0
for s in 2 3; do for p in f32 bf16; do
  if [ $((i % 2)) = 0 ]; then train_adiff $s $p; train_torch $s $p; else train_torch $s $p; train_adiff $s $p; fi
  i=$((i + 1))
done; done

# --- NCCL at world size 1 ----------------------------------------------------------------------
echo "== stage 2 f32 over NCCL at world size 1 against the plain run"
if [ $cpu = 1 ]; then
  status_all skipped-cpu nccl_world1_samples_per_s_adiff nccl_world1_peak_mem_mb_adiff nccl_world1_overhead_pct
  echo "  skipped on the CPU"
elif [ $nccl = 0 ]; then
  status_all not-supported nccl_world1_samples_per_s_adiff nccl_world1_peak_mem_mb_adiff nccl_world1_overhead_pct
  echo "  $bin does not link NCCL: not supported"
else
  train_adiff 2 f32 nccl
fi
for r in $(seq 2 "$ROUNDS"); do
  if late; then echo "-- explain round $r skipped: past the deadline (round 1 stands)"; break; fi
  explain_round "$r"
done
rec bench_seconds "$SECONDS"

# --- summary -----------------------------------------------------------------------------------
echo "== summary ($DEVICE; load average now $(cut -d' ' -f1-3 /proc/loadavg); $SECONDS s in all)"
"$py" scripts/gpu_bench_summary.py "$raw" --results "$out/results.txt" || fail=1
echo "gpu-bench: $([ $fail = 0 ] && echo done || echo 'done, with failures') (log: $log, RESULT lines: $out/results.txt)"
exit $fail

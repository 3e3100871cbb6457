#!/usr/bin/env bash
# Benchmark (not a test): `adiff explain` with the full-size model (random weights), two 10 s clips,
# tier 3, exactly 200 new tokens, CPU, against PyTorch with a KV cache on the same machine in the
# same run, rounds alternating (PyTorch, then adiff in each --dtype), best round of each reported.
#
# adiff is timed as a whole process (start, model load, audio, prefix, decoding: what a user
# waits for), from files written by `adiff convert --dtype` (f32, f16, i8); PyTorch's time is
# encode + prefix + KV-cache decoding, its model load excluded. Peak RSS of both sides.
#
#   PYTHON=/work/venv/bin/python scripts/bench_explain.sh [TOKENS]
# Env: PYTHON (a venv made as the header of scripts/requirements-fixtures.txt says),
#      BENCH_DIR (kept between runs: the 1.2 GB checkpoint is built once), ROUNDS (3),
#      DTYPES (f32,f16,i8), REFERENCE=1 also times the reference loop (no KV cache, ~1 min).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TOKENS=${1:-200}
ROUNDS=${ROUNDS:-3}
DTYPES=${DTYPES:-f32,f16,i8}
work=${BENCH_DIR:-$(mktemp -d)}
cargo build --release -q
bin=./target/release/adiff
# Checkpoint and clips (built by the PyTorch side once), then one converted file per dtype.
"$PY" scripts/bench_explain.py --ckpt "$work/adiff_full.ckpt" --wav-dir "$work/wavs" --tokens 1 --no-reference-loop > /dev/null
for d in ${DTYPES//,/ }; do
    f="$work/adiff_full.$d.safetensors"
    [ -f "$f" ] || "$bin" convert -c "$work/adiff_full.ckpt" --dtype "$d" -o "$f" 2> /dev/null
done
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
results="$work/explain_rounds.txt"
: > "$results"
for round in $(seq 1 "$ROUNDS"); do
    echo "--- round $round (load $(cut -d' ' -f1 /proc/loadavg))"
    t=$("$PY" scripts/bench_explain.py --ckpt "$work/adiff_full.ckpt" --wav-dir "$work/wavs" --tokens "$TOKENS" --no-reference-loop)
    echo "torch $t" | tee -a "$results"
    for d in ${DTYPES//,/ }; do
        /usr/bin/time -f "%e %M" -o "$work/time" "$bin" explain "$work/wavs/"*.wav \
            -c "$work/adiff_full.$d.safetensors" --config "$work/adiff_full.$d.json" \
            --tier 3 --max-tokens "$TOKENS" --no-stop --json > "$work/ours.json"
        read -r wall rss < <(tail -1 "$work/time")
        line="adiff $d $wall $rss $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["seconds"]; print(d["answers"][0]["tokens"], s["load"], s["audio"], s["generate"])' "$work/ours.json")"
        echo "$line" | tee -a "$results"
    done
done
python3 - "$results" "$TOKENS" <<'PY'
import json, sys
torch, ours = [], {}
for line in open(sys.argv[1]):
    kind, rest = line.split(" ", 1)
    if kind == "torch":
        torch.append(json.loads(rest))
    else:
        d, wall, rss, tokens, load, audio, gen = rest.split()
        assert int(tokens) == int(sys.argv[2]), tokens
        ours.setdefault(d, []).append((float(wall), int(rss) / 1024, float(load), float(audio), float(gen)))
kv = min(t["encode_prefix_s"] + t["kv_cache_s"] for t in torch)
rss_t = max(t["peak_rss_mb"] for t in torch)
print(f"=== best of {len(torch)} rounds, {sys.argv[2]} new tokens")
print(f"PyTorch, KV cache (encode + prefix + decode, load excluded): {kv:.2f} s, peak RSS {rss_t:.0f} MB")
for d, runs in ours.items():
    wall, rss, load, audio, gen = min(runs)
    print(f"adiff --dtype {d:<4} whole process {wall:.2f} s (load {load:.2f}, audio {audio:.2f}, prefix+decode {gen:.2f}), "
          f"peak RSS {rss:.0f} MB; adiff / PyTorch = {wall / kv:.2f}")
PY
if [ "${REFERENCE:-0}" = 1 ]; then
    "$PY" scripts/bench_explain.py --ckpt "$work/adiff_full.ckpt" --wav-dir "$work/wavs" --tokens "$TOKENS"
fi
[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"

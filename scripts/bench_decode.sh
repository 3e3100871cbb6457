#!/usr/bin/env bash
# Batch-1 decoding benchmark on the CPU: Hugging Face `generate` (PyTorch, KV cache, f32, 2 threads)
# against adiff (candle), same random full-size GPT-2 weights, same 121-token prefix, 200 new
# greedy tokens, in one run on one machine. Prints tokens/s of both and the ratio per weight format.
#
#   PYTHON=/work/venv/bin/python scripts/bench_decode.sh
# Env: PYTHON (default python3), BENCH_DIR (default /tmp/adiff_bench_gpt2), TOKENS (200),
#      FORMATS (Rust weight formats, default f32,f16,i8,q8_0), REPEATS (2: best of N on each side).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DIR=${BENCH_DIR:-/tmp/adiff_bench_gpt2}
TOKENS=${TOKENS:-200}
REPEATS=${REPEATS:-2}
FORMATS=${FORMATS:-f32,f16,i8,q8_0}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
torch_out=$("$PY" scripts/bench_decode.py --out "$DIR" --tokens "$TOKENS" --repeats "$REPEATS")
echo "$torch_out" | grep -v '^IDS'
cargo bench --bench decode --no-run >/dev/null 2>&1 || cargo bench --bench decode --no-run
rust_out=$(cargo bench --bench decode -- --weights "$DIR" --tokens "$TOKENS" --repeats "$REPEATS" --formats "$FORMATS" 2>/dev/null)
echo "$rust_out" | grep -v '^IDS'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

torch_rate=$(echo "$torch_out" | sed -n 's/^RESULT torch_tok_s=//p')
torch_ids=$(echo "$torch_out" | sed -n 's/^IDS //p')
rust_ids=$(echo "$rust_out" | sed -n 's/^IDS //p')
same=$(awk -v a="$torch_ids" -v b="$rust_ids" 'BEGIN { n = split(a, x, ","); split(b, y, ","); for (i = 1; i <= n && x[i] == y[i]; i++); print i - 1 "/" n }')
echo "greedy ids, PyTorch vs adiff f32: first $same equal"
echo "$rust_out" | sed -n 's/^RESULT rust_\(.*\)_tok_s=\(.*\)$/\1 \2/p' | while read -r fmt rate; do
    awk -v f="$fmt" -v r="$rate" -v t="$torch_rate" \
        'BEGIN { printf "ratio %-5s adiff %.1f tok/s / PyTorch f32 %.1f tok/s = %.2fx\n", f, r, t, r / t }'
done

#!/usr/bin/env bash
# Batch-1 decoding benchmark on the CPU: Hugging Face `generate` (PyTorch, KV cache, f32, 2 threads)
# against adiff (candle), same random full-size GPT-2 weights, same 121-token prefix, 200 new
# greedy tokens, on one machine in one run. The two sides alternate for ROUNDS rounds and each
# reports its best round, so a load change on a shared machine does not favour either side.
# Prints tokens/s of both and the ratio for each adiff weight format.
#
#   PYTHON=/work/venv/bin/python scripts/bench_decode.sh
# Env: PYTHON (default python3), BENCH_DIR (default /tmp/adiff_bench_gpt2), TOKENS (200),
#      FORMATS (adiff weight formats, default f32,f16,i8,q8_0), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DIR=${BENCH_DIR:-/tmp/adiff_bench_gpt2}
TOKENS=${TOKENS:-200}
ROUNDS=${ROUNDS:-3}
FORMATS=${FORMATS:-f32,f16,i8,q8_0}

cargo bench --bench decode --no-run >/dev/null 2>&1 || cargo bench --bench decode --no-run
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
all_torch=""
all_rust=""
for round in $(seq 1 "$ROUNDS"); do
    save=$([ "$round" = 1 ] || echo --no-save)
    torch_out=$("$PY" scripts/bench_decode.py --out "$DIR" --tokens "$TOKENS" $save)
    rust_out=$(cargo bench --bench decode -- --weights "$DIR" --tokens "$TOKENS" --repeats 1 --formats "$FORMATS" 2>/dev/null)
    echo "--- round $round (load $(cut -d' ' -f1 /proc/loadavg))"
    echo "$torch_out" | grep -v -e '^IDS' -e '^RESULT'
    echo "$rust_out" | grep -v -e '^IDS' -e '^RESULT' -e '^loaded'
    t_rate=$(echo "$torch_out" | sed -n 's/^RESULT torch_tok_s=//p')
    r_rate=$(echo "$rust_out" | sed -n 's/^RESULT rust_f32_tok_s=//p')
    [ -n "$r_rate" ] && awk -v r="$r_rate" -v t="$t_rate" 'BEGIN { printf "round ratio f32: %.2fx\n", r / t }'
    all_torch+="$torch_out"$'\n'
    all_rust+="$rust_out"$'\n'
done

best() { sed -n "s/^RESULT $1=//p" | sort -g | tail -1; }
torch_rate=$(echo "$all_torch" | best torch_tok_s)
torch_ids=$(echo "$all_torch" | sed -n 's/^IDS //p' | head -1)
rust_ids=$(echo "$all_rust" | sed -n 's/^IDS //p' | head -1)
same=$(awk -v a="$torch_ids" -v b="$rust_ids" 'BEGIN { n = split(a, x, ","); split(b, y, ","); for (i = 1; i <= n && x[i] == y[i]; i++); print i - 1 "/" n }')
echo "=== best of $ROUNDS rounds, $TOKENS new tokens after a 121-token prefix, batch 1"
echo "greedy ids, PyTorch vs adiff f32: first $same equal"
for fmt in ${FORMATS//,/ }; do
    rate=$(echo "$all_rust" | best "rust_${fmt}_tok_s")
    awk -v f="$fmt" -v r="$rate" -v t="$torch_rate" \
        'BEGIN { printf "ratio %-5s adiff %.1f tok/s / PyTorch f32 %.1f tok/s = %.2fx\n", f, r, t, r / t }'
done

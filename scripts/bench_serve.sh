#!/usr/bin/env bash
# `adiff serve` throughput: the same /v1/explain request sequentially and at concurrency 16,
# rounds alternating (scripts/bench_serve.py), against a server on this machine; prints the
# load average, req/s, p50/p99 latency, the ratio, and the server's peak RSS.
#
#   scripts/bench_serve.sh                       # demo model, the shipped example clips
#   MODEL_ARGS="-c adiff_base.ckpt" TIER=3 MAX_TOKENS=32 REQUESTS=16 scripts/bench_serve.sh
#   SERVE_ARGS="--workers 1" scripts/bench_serve.sh   # more `adiff serve` options
#
# Run it on an idle machine (load average < 0.5): the client's threads share the CPU with the
# server, as a co-located client would.
set -euo pipefail
cd "$(dirname "$0")/.."
ADIFF=${ADIFF:-target/release/adiff}
PYTHON=${PYTHON:-python3}
MODEL_ARGS=${MODEL_ARGS:---model demo}
A=${A:-data/examples/demo_first.wav}
B=${B:-data/examples/demo_second.wav}
REQUESTS=${REQUESTS:-64}
CONCURRENCY=${CONCURRENCY:-16}
ROUNDS=${ROUNDS:-3}
TIER=${TIER:-2}
MAX_TOKENS=${MAX_TOKENS:-}
SERVE_ARGS=${SERVE_ARGS:-}
[ -x "$ADIFF" ] || cargo build --release
out=$(mktemp)
# shellcheck disable=SC2086
"$ADIFF" serve $MODEL_ARGS $SERVE_ARGS --port 0 --max-batch "${MAX_BATCH:-$CONCURRENCY}" >"$out" 2>/dev/null &
pid=$!
# (`|| true`: after the server's clean exit kill fails, and set -e in the trap made a finished
# benchmark exit 1.)
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 600); do
    grep -q listening "$out" && break
    kill -0 $pid 2>/dev/null || { echo "adiff serve did not start" >&2; exit 1; }
    sleep 0.1
done
url=$(grep -o 'http://[^ ]*' "$out")
echo "adiff $(git rev-parse --short HEAD 2>/dev/null || echo '?'), server $url, $MODEL_ARGS $SERVE_ARGS, tier $TIER${MAX_TOKENS:+, max_tokens $MAX_TOKENS}"
"$PYTHON" scripts/bench_serve.py --url "$url" --audio1 "$A" --audio2 "$B" --tier "$TIER" \
    --requests "$REQUESTS" --concurrency "$CONCURRENCY" --rounds "$ROUNDS" ${MAX_TOKENS:+--max-tokens "$MAX_TOKENS"}
echo "server peak RSS: $(awk '/VmHWM/ {printf "%.1f MB", $2 / 1024}' /proc/$pid/status)"
kill -TERM $pid
wait $pid || true

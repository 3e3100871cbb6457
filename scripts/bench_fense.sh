#!/usr/bin/env bash
# `adiff eval --metrics fense` vs aac-metrics 0.6's fense (PTB tokenization, Sentence-BERT,
# fluency error detector) on 500 items on the CPU, in the same run; prints both corpus FENSE
# values (they must agree within 1e-4), each round's times, the best-of times and the ratio
# aac-metrics / adiff (issue 32). The models are full-size random-weight models of the real
# architectures (paraphrase-TinyBERT-L6-v2, fense's echecker on bert-medium), built once into
# MODELS by scripts/bench_fense.py and reused.
#
#   scripts/bench_fense.sh
# Env: PYTHON (default /work/venv/bin/python), PYTHONPATH (default /tmp/fxpy: aac-metrics 0.6,
# pycocoevalcap 1.2), DATA (default ../shared/data), MODELS (default target/bench-fense-models),
# ITEMS (500), ROUNDS (3), THREADS (2: torch's and adiff's RAYON_NUM_THREADS), ADIFF (an adiff
# binary to use instead of building target/release/adiff). Extra arguments go to the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/work/venv/bin/python}
export PYTHONPATH=${PYTHONPATH:-/tmp/fxpy}
if [ -n "${ADIFF:-}" ]; then
    BIN=$ADIFF
else
    cargo build --release --bin adiff >/dev/null 2>&1 || cargo build --release --bin adiff
    BIN="${CARGO_TARGET_DIR:-target}/release/adiff"
fi
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" scripts/bench_fense.py --adiff "$BIN" --models "${MODELS:-${CARGO_TARGET_DIR:-target}/bench-fense-models}" \
    --data "${DATA:-../shared/data}" --items "${ITEMS:-500}" --rounds "${ROUNDS:-3}" \
    --threads "${THREADS:-2}" "$@"

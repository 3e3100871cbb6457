#!/usr/bin/env bash
# `adiff eval` vs pycocoevalcap 1.2 (Java PTBTokenizer, Bleu, Rouge, Cider) on 500 items in the
# same run; prints both scores, their largest difference, both times and the ratio.
#
#   PYTHON=/work/venv/bin/python scripts/bench_eval.sh
# Env: PYTHON (default python3), DATA (default ../shared/data), ITEMS (500), ROUNDS (3),
# METEOR_DATA (meteor-1.5.jar; default target/meteor-data/meteor-1.5.jar when
# scripts/fetch-meteor-data.sh put it there) adds METEOR to both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
cargo build --release --bin adiff >/dev/null 2>&1 || cargo build --release --bin adiff
BIN="${CARGO_TARGET_DIR:-target}/release/adiff"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
METEOR_DATA=${METEOR_DATA:-target/meteor-data/meteor-1.5.jar}
EXTRA=()
[ -f "$METEOR_DATA" ] && EXTRA=(--meteor-data "$METEOR_DATA")
"$PY" scripts/bench_eval.py --adiff "$BIN" --data "${DATA:-../shared/data}" \
    --items "${ITEMS:-500}" --rounds "${ROUNDS:-3}" "${EXTRA[@]}"

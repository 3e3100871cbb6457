#!/usr/bin/env bash
# Benchmark (not a test): `adiff embed` with the full-size HTSAT (random weights) on ten 10 s clips,
# against the PyTorch reference (torchlibrosa + msclap HTSAT) on the same machine, in the same run.
# Both sides are timed over the same work: read 10 WAVs + log-mel + HTSAT forward (batch of 10),
# best of 3; model loading is reported separately. Prints both and the ratio, and peak RSS.
#   usage: scripts/bench_htsat.sh            (PYTHON=path/to/python of a venv made as the header of scripts/requirements-fixtures.txt says)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q
"$PY" scripts/bench_htsat.py --ckpt "$work/htsat_full.ckpt" --wav-dir "$work/wavs" > "$work/torch.json"
best=""
for i in 1 2 3; do
  /usr/bin/time -f "%M" -o "$work/rss" ./target/release/adiff embed "$work"/wavs/*.wav \
    -c "$work/htsat_full.ckpt" --batch-size 10 -o "$work/out.safetensors" 2> "$work/log"
  t=$(grep -o 'audio + encode [0-9.]*' "$work/log" | awk '{print $4}')
  if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
done
rss_kb=$(cat "$work/rss")
"$PY" - "$work/torch.json" "$best" "$rss_kb" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1])); ours = float(sys.argv[2]); rss = int(sys.argv[3]) / 1024
print(f"PyTorch (batch of 10): {ref['pytorch_batch_s']:.3f} s, one by one {ref['pytorch_single_s']:.3f} s, peak RSS {ref['peak_rss_mb']:.0f} MB")
print(f"adiff   (batch of 10): {ours:.3f} s, peak RSS {rss:.0f} MB")
print(f"speed ratio (PyTorch time / adiff time): {ref['pytorch_batch_s'] / ours:.2f}x")
PY

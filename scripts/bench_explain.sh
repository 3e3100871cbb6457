#!/usr/bin/env bash
# Benchmark (not a test): `adiff explain` with the full-size model (random weights), two 10 s clips,
# tier 3, exactly 200 new tokens, CPU, against the PyTorch reference method (no KV cache) and
# PyTorch with a KV cache, on the same machine in the same run. Prints times, ratios, peak RSS.
#   usage: scripts/bench_explain.sh [TOKENS]   (PYTHON=path/to/python of a venv made as the header of scripts/requirements-fixtures.txt says)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TOKENS=${1:-200}
work=${BENCH_DIR:-$(mktemp -d)}
cargo build --release -q
"$PY" scripts/bench_explain.py --ckpt "$work/adiff_full.ckpt" --wav-dir "$work/wavs" --tokens "$TOKENS" > "$work/torch.json"
/usr/bin/time -f "%M" -o "$work/rss" ./target/release/adiff explain "$work/wavs/"*.wav \
  -c "$work/adiff_full.ckpt" --tier 3 --max-tokens "$TOKENS" --no-stop --json > "$work/ours.json"
"$PY" - "$work/torch.json" "$work/ours.json" "$work/rss" "$TOKENS" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1])); ours = json.load(open(sys.argv[2]))
rss = int(open(sys.argv[3]).read().split()[-1]) / 1024; n = int(sys.argv[4])
s = ours["seconds"]; t_ours = s["audio"] + s["generate"]
assert ours["answers"][0]["tokens"] == n, ours["answers"][0]["tokens"]
t_ref = ref["encode_prefix_s"] + ref["reference_nocache_s"]; t_kv = ref["encode_prefix_s"] + ref["kv_cache_s"]
print(f"PyTorch reference loop (no KV cache): {t_ref:.2f} s  ({n} tokens, encode+prefix included)")
print(f"PyTorch with KV cache:                {t_kv:.2f} s  (peak RSS {ref['peak_rss_mb']:.0f} MB)")
print(f"adiff explain:                        {t_ours:.2f} s  (audio {s['audio']:.2f} s, prefix+generate {s['generate']:.2f} s; model load {s['load']:.2f} s; peak RSS {rss:.0f} MB)")
print(f"adiff / reference loop: {t_ours / t_ref:.3f}   adiff / PyTorch KV cache: {t_ours / t_kv:.3f}")
PY
[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"

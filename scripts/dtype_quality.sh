#!/usr/bin/env bash
# Quality of the reduced weight formats (issue 29), not a test: the shipped demo model on 200
# held-out synthetic pairs (seed 2, which no training split uses), tiers 1 and 2, explained with
# each --dtype; prints `eval --synthetic`'s accuracy per attribute for each, and how many
# explanations are identical to f32's. tests/demo_model.rs asserts the same comparison.
#   scripts/dtype_quality.sh [OUT_DIR]
# Env: COUNT (200) held-out pairs; DTYPES ("f32 f16 i8"; f32 first: the others are compared with it,
# bf16 runs on the CPU through candle's generic kernels, slowly).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
cargo build --release -q
bin=./target/release/adiff
"$bin" build-dataset synthetic --count "${COUNT:-200}" --seed 2 --split test -o "$out" > /dev/null 2>&1
preds=()
for dtype in ${DTYPES:-f32 f16 i8}; do
    for tier in fewwords sentence; do
        p="$out/preds_${tier}_${dtype}.csv"
        rm -f "$p" "$p.settings.json"
        "$bin" infer "$out/test_${tier}_answer.csv" --audio-root "$out" --model demo \
            --max-tokens 40 --dtype "$dtype" -o "$p" 2> /dev/null
        preds+=("$p")
    done
done
"$bin" eval --synthetic "$out/truth.jsonl" "${preds[@]}" --json "$out/eval.json" --force > /dev/null
python3 - "$out/eval.json" <<'PY'
import csv, json, sys
files = json.load(open(sys.argv[1]))["files"]
attrs = [a["attribute"] for a in files[0]["attributes"]]
print("file".ljust(24) + "".join(a[:11].rjust(12) for a in attrs) + "  same as f32")
for i, f in enumerate(files):
    name = f["file"].rsplit("/", 1)[-1].removeprefix("preds_").removesuffix(".csv")
    acc = {a["attribute"]: a["accuracy"] for a in f["attributes"]}
    rows = list(csv.reader(open(f["file"])))
    base = list(csv.reader(open(files[i % 2]["file"])))
    same = sum(a == b for a, b in zip(rows[1:], base[1:]))
    cells = "".join(("-" if acc[a] is None else f"{100 * acc[a]:.1f}").rjust(12) for a in attrs)
    print(name.ljust(24) + cells + f"  {same}/{len(rows) - 1}")
PY

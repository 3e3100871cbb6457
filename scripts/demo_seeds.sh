#!/usr/bin/env bash
# Trains the demo recipe (scripts/train_demo.sh) once per seed, side by side, and prints the
# held-out accuracies of every run in one table: how much of a result is the recipe and how much
# the draw. The data splits are the same for every seed; only the training seeds differ.
#   usage: scripts/demo_seeds.sh OUT_DIR SEED [SEED ...]
#   env:   DEVICE (cpu): cpu, or cuda / cuda:N with a CUDA build (see scripts/gpu-run.sh);
#          ADIFF: the adiff binary (default: cargo build --release); the sizes of train_demo.sh
#          (TRAIN_PAIRS, ...) pass through.
# Each run goes to OUT_DIR/seed-N (log in OUT_DIR/seed-N.log, model and eval_synthetic.json in
# OUT_DIR/seed-N/model); a killed run resumes when started again with the same OUT_DIR.
# On a 2-core CPU one run takes ~25 minutes and runs compete for the cores: use a GPU machine
# for several seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/demo_seeds.sh OUT_DIR SEED [SEED ...]" >&2; exit 2; }
out=$1; shift
if [ -z "${ADIFF:-}" ]; then cargo build --release -q; ADIFF=./target/release/adiff; fi
export ADIFF
mkdir -p "$out"
pids=()
for s in "$@"; do
  SEED=$s MODEL_OUT="$out/seed-$s/model" bash scripts/train_demo.sh "$out/seed-$s" \
    > "$out/seed-$s.log" 2>&1 & pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
py=python3; command -v "$py" >/dev/null || py=/opt/torch/.venv/bin/python
"$py" - "$out" "$@" <<'PY'
import json, os, sys
out, seeds = sys.argv[1], sys.argv[2:]
attrs = ["loudness", "pitch", "source kind", "pattern", "background"]
print("seed  tier  " + "".join(f"{a:>17s}" for a in attrs) + "   (accuracy, claims made)")
for s in seeds:
    f = os.path.join(out, f"seed-{s}", "model", "eval_synthetic.json")
    if not os.path.exists(f):
        print(f"{s:>4s}  -     run did not finish (see {out}/seed-{s}.log)")
        continue
    for tier, rep in zip(("1", "2"), json.load(open(f))["files"]):
        by = {a["attribute"]: a for a in rep["attributes"]}
        cells = []
        for a in attrs:
            acc = by[a]["accuracy"]
            cells.append(f"{'-' if acc is None else f'{100 * acc:5.1f}%'} ({by[a]['asserted']:3d})".rjust(11 + 6))
        print(f"{s:>4s}  {tier:>4s}  " + "".join(cells))
PY
exit $status

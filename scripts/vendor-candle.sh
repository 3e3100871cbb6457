#!/usr/bin/env bash
# Rebuilds vendor/candle-core from the published candle-core crate plus vendor/candle-core.patch,
# or, with --check, verifies that the committed copy is exactly that (no other local edits).
#   usage: scripts/vendor-candle.sh [--check]
# The crate comes from cargo's registry cache (`cargo fetch` downloads it if needed). Only src/,
# Cargo.toml (its example/test/bench targets removed: their files are not vendored), LICENSE and
# README.md are kept. See vendor/README.md for what the patch changes and why.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.11.1
check=0
[ "${1:-}" = --check ] && check=1
# Find the registry copy of the published crate (fetch it through a throwaway manifest).
# (`|| true`: without a copy, ls fails, and pipefail + set -e would end the script silently.)
find_src() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-$VERSION 2>/dev/null | head -1 || true; }
src=$(find_src)
if [ -z "$src" ]; then
  tmp=$(mktemp -d)
  mkdir -p "$tmp/src" && touch "$tmp/src/lib.rs"
  printf '[package]\nname = "fetch-candle"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ncandle-core = "=%s"\n' \
    "$VERSION" > "$tmp/Cargo.toml"
  (cd "$tmp" && cargo fetch -q)
  rm -rf "$tmp"
  src=$(find_src)
fi
[ -n "$src" ] || { echo "error: candle-core $VERSION not found in cargo's registry" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/candle-core"
cp -a "$src/src" "$src/Cargo.toml" "$src/LICENSE" "$src/README.md" "$work/candle-core/"
python3 - "$work/candle-core/Cargo.toml" <<'PY'
import re, sys
p = sys.argv[1]
parts = re.split(r'(?m)^(?=\[)', open(p).read())
open(p, "w").write("".join(s for s in parts if not re.match(r'\[\[(example|test|bench)\]\]', s)))
PY
(cd "$work" && patch -s -p1 < "$OLDPWD/vendor/candle-core.patch")
if [ "$check" = 1 ]; then
  if diff -r "$work/candle-core" vendor/candle-core >/dev/null; then
    echo "vendor/candle-core = candle-core $VERSION + vendor/candle-core.patch"
  else
    diff -r "$work/candle-core" vendor/candle-core | head -20 >&2
    echo "error: vendor/candle-core differs from candle-core $VERSION + the patch" >&2
    exit 1
  fi
else
  rm -rf vendor/candle-core
  cp -a "$work/candle-core" vendor/candle-core
  echo "vendor/candle-core rebuilt from candle-core $VERSION + vendor/candle-core.patch"
fi

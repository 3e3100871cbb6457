#!/usr/bin/env bash
# Puts Meteor 1.5's jar and English paraphrase table (as pycocoevalcap 1.2 ships them) into DIR:
#   DIR/meteor-1.5.jar  DIR/data/paraphrase-en.gz
# then `adiff eval --meteor-data DIR/meteor-1.5.jar` (or ADIFF_METEOR_DATA) computes METEOR.
# Needs python3 with pip and access to PyPI. Usage: scripts/fetch-meteor-data.sh DIR
set -euo pipefail
dir="${1:?usage: $0 DIR}"
if [ -f "$dir/meteor-1.5.jar" ] && [ -f "$dir/data/paraphrase-en.gz" ]; then
  exit 0
fi
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download pycocoevalcap==1.2 --no-deps --quiet -d "$tmp"
python3 - "$tmp"/pycocoevalcap-1.2-*.whl "$dir" <<'PY'
import os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for name, dest in (("pycocoevalcap/meteor/meteor-1.5.jar", "meteor-1.5.jar"),
                       ("pycocoevalcap/meteor/data/paraphrase-en.gz", "data/paraphrase-en.gz")):
        path = os.path.join(out, dest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(name) as src, open(path + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(path + ".part", path)
PY
echo "METEOR data in $dir"

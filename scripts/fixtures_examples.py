#!/usr/bin/env python3
"""The demo's example clips in data/examples/ (tests/demo_model.rs, tests/cli_dtype.rs,
tests/hostile.rs), made with adiff's own synthetic generator.

Runs `adiff build-dataset synthetic --count 10 --seed 9 --split example` into a temporary folder
(seed 9 is used by no training or test split of scripts/train_demo.sh) and takes the first of the
ten pairs whose clips differ in loudness or pitch and in source kind (pair 5). Writes:
  data/examples/demo_first.wav, demo_second.wav   the pair's two clips, as generated
  data/examples/truth.jsonl                       the generator's two truth lines, with `path`
                                                  renamed to the file names above
data/examples/README.md (the clips' attributes, the demo model's answers) is written by hand.
Byte-identical on every run; needs no Python package, only the adiff binary.

    python3 scripts/fixtures_examples.py [--adiff PATH]
PATH defaults to $ADIFF, else target/release/adiff (built with `cargo build --release` if
missing). Also run by scripts/make_fixtures.py examples.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "data" / "examples"
COUNT, SEED, SPLIT = 10, 9, "example"
NAMES = ("demo_first.wav", "demo_second.wav")


def adiff_binary(path):
    if path:
        return Path(path)
    default = REPO / "target" / "release" / "adiff"
    if not default.exists():
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=REPO, check=True)
    return default


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adiff", default=os.environ.get("ADIFF"), help="the adiff binary")
    args = ap.parse_args()
    adiff = adiff_binary(args.adiff)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(adiff), "build-dataset", "synthetic", "-o", tmp, "--count", str(COUNT),
                        "--seed", str(SEED), "--split", SPLIT], check=True)
        lines = Path(tmp, "truth.jsonl").read_text().splitlines()
        truth = {json.loads(line)["path"]: line for line in lines}
        for pair in range(COUNT):
            paths = [f"audio/{SPLIT}_{pair:06d}_{side}.wav" for side in (1, 2)]
            a, b = (json.loads(truth[p]) for p in paths)
            differs = lambda key: a[key] != b[key]  # noqa: E731
            if (differs("loudness") or differs("pitch")) and differs("kind"):
                break
        else:
            sys.exit("no pair differs in loudness or pitch and in kind")
        OUT.mkdir(parents=True, exist_ok=True)
        out_lines = []
        for src, name in zip(paths, NAMES):
            shutil.copyfile(Path(tmp, src), OUT / name)
            # Only the path changes; the rest of the line stays as the generator wrote it.
            old = f'"path":{json.dumps(src)}'
            assert truth[src].count(old) == 1, truth[src]
            out_lines.append(truth[src].replace(old, f'"path":{json.dumps(name)}'))
        (OUT / "truth.jsonl").write_text("".join(line + "\n" for line in out_lines))
    print(f"wrote pair {pair} of seed {SEED} to {OUT}")


if __name__ == "__main__":
    main()

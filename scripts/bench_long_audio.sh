#!/usr/bin/env bash
# Benchmark (not a test): memory and time of `explain` and `tag` on a long recording (issue 30),
# against the same commands on a 10 s file. Writes a 60-minute 32 kHz mono PCM16 WAV of noise
# (230 MB, kept in BENCH_DIR), then runs, with the shipped demo model, each command once under
# /usr/bin/time and prints wall time and peak RSS:
#   explain (10 s clip)           explain (60 min, --crop start)   explain (60 min, --crop center)
#   tag (10 s clip)               tag (60 min, --crop center)      tag (60 min, --window 10)
# The reference implementation has no counterpart (it decodes the whole file, then crops).
#
#   scripts/bench_long_audio.sh            Env: BENCH_DIR (default: a fresh temp dir), MINUTES (60)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=./target/release/adiff
dir=${BENCH_DIR:-$(mktemp -d)}
minutes=${MINUTES:-60}
long="$dir/long_${minutes}min.wav"
[ -f "$long" ] || python3 - "$long" "$minutes" <<'PY'
import array, random, struct, sys
path, minutes = sys.argv[1], int(sys.argv[2])
n = minutes * 60 * 32000
random.seed(2)
block = array.array("h", (int(random.uniform(-3000, 3000)) for _ in range(32000 * 10)))
with open(path, "wb") as f:
    f.write(b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, 32000, 64000, 2, 16)
            + b"data" + struct.pack("<I", 2 * n))
    for _ in range(n // len(block)):
        block.tofile(f)
PY
short=data/examples/demo_first.wav
other=data/examples/demo_second.wav
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD)"
run() {
    local what=$1
    shift
    /usr/bin/time -f "%e %M" -o "$dir/time" "$bin" "$@" --model demo > /dev/null 2> "$dir/err" || {
        cat "$dir/err"
        exit 1
    }
    read -r wall rss < <(tail -1 "$dir/time")
    printf '%-42s %6.2f s %7.1f MB\n' "$what" "$wall" "$(echo "$rss / 1024" | bc -l)"
}
run "explain, 10 s files" explain "$short" "$other"
run "explain, ${minutes} min file, --crop start" explain "$long" "$other"
run "explain, ${minutes} min file, --crop center" explain "$long" "$other" --crop center
run "tag, 10 s file" tag "$short"
run "tag, ${minutes} min file, --crop center" tag "$long" --crop center
run "tag, ${minutes} min file, --window 10" tag "$long" --window 10

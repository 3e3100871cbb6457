#!/usr/bin/env python3
"""Times the PyTorch reference HTSAT (full size, configs/base.json) on ten 10 s clips.

    /work/venv/bin/python scripts/bench_htsat.py --ckpt out.ckpt --wav-dir wavs/

1. Builds the full-size HTSAT with random weights (same recipe as scripts/fixtures_audio.py) and
   saves it to --ckpt with the official key names (`module.audio_encoder.base.htsat.<name>`).
2. Writes ten different 10 s, 32 kHz, 16-bit mono WAVs into --wav-dir (bench_00.wav .. bench_09.wav).
3. In a fresh child process (so peak RSS covers only loading and inference, not the random
   initialisation and checkpoint writing), loads the checkpoint and times audio read + front end +
   HTSAT forward, as one batch of ten and one clip at a time, with torch.set_num_threads(2) and
   torch.inference_mode(): 1 warm-up, then the best of 3.
Prints one JSON line: {"pytorch_batch_s": ..., "pytorch_single_s": ..., "peak_rss_mb": ...}
where pytorch_single_s is the total for the ten clips processed one by one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_audio as fa  # noqa: E402

NUM_CLIPS = 10
THREADS = 2
REPEATS = 3
SEED_BENCH = 4242
BENCH_PEAK = 0.5


def synth_bench_clip(sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A random log chirp, a handful of gated tones at random times, and low-level noise."""
    t = np.arange(int(round(seconds * sr))) / sr
    f0, f1 = rng.uniform(60.0, 400.0), rng.uniform(2000.0, 14000.0)
    x = rng.uniform(0.05, 0.2) * fa._log_chirp(t, f0, f1, seconds)
    for _ in range(int(rng.integers(3, 8))):
        on = rng.uniform(0.0, seconds - 0.5)
        off = on + rng.uniform(0.2, 3.0)
        x += rng.uniform(0.03, 0.15) * fa._gate(t, on, off) * np.sin(2 * np.pi * rng.uniform(80.0, 8000.0) * t)
    x += rng.uniform(0.001, 0.01) * rng.standard_normal(t.shape)
    return fa._normalise(x, BENCH_PEAK)


def prepare(ckpt: Path, wav_dir: Path) -> list[Path]:
    cfg = fa.load_config(fa.REPO / "configs" / "base.json")
    model, _ = fa.make_model(cfg, calib_waves=None)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fa.official_state_dict(model), ckpt)
    wav_dir.mkdir(parents=True, exist_ok=True)
    a = cfg["audio"]
    rng = np.random.default_rng(SEED_BENCH)
    paths = []
    for i in range(NUM_CLIPS):
        p = wav_dir / f"bench_{i:02d}.wav"
        fa.write_wav16(p, synth_bench_clip(a["sample_rate"], a["duration_s"], rng), a["sample_rate"])
        paths.append(p)
    return paths


def best_of(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_reference(ckpt: Path, paths: list[Path]) -> dict:
    torch.set_num_threads(THREADS)
    cfg = fa.load_config(fa.REPO / "configs" / "base.json")
    a = cfg["audio"]
    n = int(round(a["duration_s"] * a["sample_rate"]))
    model = fa.build_htsat(cfg)
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict({k[len(fa.KEY_PREFIX) :]: v for k, v in sd.items()}, strict=True)
    del sd

    def load(p: Path) -> np.ndarray:
        return fa.tile_to(fa.read_wav16(p, a["sample_rate"]), n)

    def batch():
        with torch.inference_mode():
            waves = torch.from_numpy(np.stack([load(p) for p in paths]))  # [10, 320000]
            out = model(waves)
        assert torch.isfinite(out["latent_output"]).all()

    def single():
        with torch.inference_mode():
            for p in paths:
                out = model(torch.from_numpy(load(p))[None])  # [1, 320000]
                assert torch.isfinite(out["latent_output"]).all()

    batch_s = best_of(batch)
    single_s = best_of(single)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    return {
        "pytorch_batch_s": round(batch_s, 4),
        "pytorch_single_s": round(single_s, 4),
        "peak_rss_mb": round(peak_kb / 1024.0, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="where to write the random full-size checkpoint")
    ap.add_argument("--wav-dir", type=Path, required=True, help="folder for the ten benchmark WAVs")
    ap.add_argument("--timing-only", action="store_true", help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()

    if args.timing_only:
        paths = sorted(args.wav_dir.glob("bench_*.wav"))
        if len(paths) != NUM_CLIPS:
            print(f"error: expected {NUM_CLIPS} bench_*.wav in {args.wav_dir}, found {len(paths)}", file=sys.stderr)
            return 2
        print(json.dumps(time_reference(args.ckpt, paths)))
        return 0

    prepare(args.ckpt, args.wav_dir)
    child = subprocess.run(
        [sys.executable, __file__, "--ckpt", str(args.ckpt), "--wav-dir", str(args.wav_dir), "--timing-only"],
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        sys.stderr.write(child.stderr)
        return child.returncode
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""PyTorch side of `adiff infer` for scripts/gpu-bench.sh: the reference ADIFF explains every pair
of a CSV (filepath1, filepath2) in batches, greedy with a KV cache, a fixed number of new tokens.

    python3 scripts/bench_infer.py --write-pairs 128 --audio-root DIR --csv DIR/pairs.csv [--config C]
    python3 scripts/bench_infer.py --ckpt CKPT --csv DIR/pairs.csv --audio-root DIR --batch 32 \\
        --tokens 100 [--device cuda] [--amp bf16] [--config configs/base.json]

--write-pairs N writes N pairs of distinct 10 s, 32 kHz, 16-bit WAVs (pair_XXXX_a/b.wav, made like
scripts/bench_explain.py's clips) and the CSV (no `input` column: both sides use the tier-3 prompt).

Otherwise (the timed run) it loads --ckpt (official layout, strict), then per batch of --batch rows,
as `adiff infer --tier 3 --no-stop` does: reads both WAVs of each row, runs HTSAT on the batch's
first and second clips, builds the prefix, decodes --tokens tokens for every row together with
Hugging Face's past_key_values (the wrapper's top-p filter + argmax, row by row) and decodes the
text. --device cuda synchronises before the clock stops; --amp bf16 runs the batch under
torch.autocast(bfloat16) (weights stay f32). Prints one JSON line:
  {"pairs": N, "load_s": .., "run_s": .., "pairs_per_s": N / run_s (load excluded), "tokens": T,
   "batch": B, "device": .., "amp": .., "peak_gpu_mb": .., "peak_gpu_reserved_mb": .., "peak_rss_mb": ..}
gpu-bench.sh also times the whole process from outside (python start, imports and load included),
the figure it compares with the whole `adiff infer` process.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_compat  # noqa: E402

torch_compat.install()  # no-op unless ADIFF_TORCH_COMPAT is set (scripts/gpu-bench.sh)
import bench_explain as be  # noqa: E402
import bench_htsat  # noqa: E402
import fixtures_adiff as fx  # noqa: E402
import fixtures_audio as fa  # noqa: E402

SEED_PAIRS = 6161


def write_pairs(cfg: dict, count: int, root: Path, csv_path: Path) -> None:
    a = cfg["audio"]
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED_PAIRS)
    rows = []
    for i in range(count):
        names = [f"pair_{i:04d}_a.wav", f"pair_{i:04d}_b.wav"]
        for name in names:
            fa.write_wav16(root / name, bench_htsat.synth_bench_clip(a["sample_rate"], a["duration_s"], rng), a["sample_rate"])
        rows.append(names)
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath1", "filepath2"])
        w.writerows(rows)


def top_p_then_argmax_rows(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """fixtures_adiff.top_p_then_argmax for each row of [B, V] (its masking mixes rows) -> [B, 1]."""
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    masked = sorted_logits.masked_fill(remove, -float("inf"))
    logits = torch.empty_like(logits).scatter_(-1, sorted_indices, masked)
    return torch.argmax(logits, -1, keepdim=True)


@torch.inference_mode()
def decode_kv_batch(gpt, prefix: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy (top-p then argmax) for every row, KV cache, never stopping -> ids [B, steps]."""
    out = gpt(inputs_embeds=prefix, use_cache=True)  # logits [B, L, V]
    ids = []
    for k in range(steps):
        nxt = top_p_then_argmax_rows(out.logits[:, -1, :], fx.TOP_P)  # [B, 1]
        ids.append(nxt)
        if k + 1 < steps:
            out = gpt(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)  # [B, 1, V]
    return torch.cat(ids, dim=1)


def run(args) -> dict:
    dev = torch.device(args.device)
    cfg = fa.load_config(args.config)
    a, t = cfg["audio"], cfg["text"]
    n = int(round(a["duration_s"] * a["sample_rate"]))
    prefix_len = 3 * cfg["mapper"]["prefix_length"] + 1
    if prefix_len + args.tokens > cfg["gpt2"]["n_positions"]:
        raise SystemExit(f"--tokens {args.tokens}: prefix {prefix_len} + tokens exceeds {cfg['gpt2']['n_positions']}")
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    start = time.perf_counter()
    model = be.load_model(cfg, args.ckpt).to(dev)
    gpt = model.caption_decoder.gpt
    tok = fx.load_tokenizer()
    be.sync(dev)
    load_s = time.perf_counter() - start

    def wave(p: str) -> torch.Tensor:
        return torch.from_numpy(fa.tile_to(fa.read_wav16(args.audio_root / p, a["sample_rate"]), n))

    start = time.perf_counter()
    texts = []
    for lo in range(0, len(rows), args.batch):
        batch = rows[lo : lo + args.batch]
        with torch.inference_mode(), be.autocast(dev, args.amp):
            w1 = torch.stack([wave(r["filepath1"]) for r in batch]).to(dev)  # [B, 320000]
            w2 = torch.stack([wave(r["filepath2"]) for r in batch]).to(dev)
            ids = fx.prompt_ids(tok, [args.prompt] * len(batch), t["prompt_length"]).to(dev)  # [B, 40]
            prefix = model.forward_prefix(w1, w2, ids)["prefix"]  # [B, 3P+1, C]
            out = decode_kv_batch(gpt, prefix, args.tokens).tolist()  # [B, T]
        texts += [tok.decode(r) for r in out]
    be.sync(dev)
    run_s = time.perf_counter() - start
    assert len(texts) == len(rows)
    return {
        "pairs": len(rows),
        "load_s": round(load_s, 3),
        "run_s": round(run_s, 3),
        "pairs_per_s": round(len(rows) / run_s, 3),
        "tokens": args.tokens,
        "batch": args.batch,
        "device": args.device,
        "amp": args.amp,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        **be.peak_gpu(dev),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, required=True, help="pairs CSV (filepath1, filepath2)")
    ap.add_argument("--audio-root", type=Path, required=True, help="folder the CSV's paths are relative to")
    ap.add_argument("--config", type=Path, default=be.CONFIG, help="model config (default configs/base.json)")
    ap.add_argument("--write-pairs", type=int, metavar="N", help="write N pairs of WAVs and the CSV, then exit")
    ap.add_argument("--ckpt", type=Path, help="official-layout checkpoint (scripts/bench_explain.py builds one)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=100, help="new tokens per pair (never stopping early)")
    ap.add_argument("--prompt", default=be.DEFAULT_PROMPT)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--amp", choices=("bf16",), default=None, help="torch.autocast(bfloat16) around each batch")
    args = ap.parse_args()
    if args.write_pairs is not None:
        write_pairs(fa.load_config(args.config), args.write_pairs, args.audio_root, args.csv)
        return 0
    if args.ckpt is None:
        ap.error("--ckpt is needed (or --write-pairs)")
    if args.device == "cpu":
        torch.set_num_threads(be.THREADS)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

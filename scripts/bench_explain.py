#!/usr/bin/env python3
"""Times the PyTorch reference ADIFF (full size, configs/base.json) explaining one pair of clips.

    /work/venv/bin/python scripts/bench_explain.py --ckpt out/adiff_full.ckpt --wav-dir out/wavs [--tokens 200]
        [--device cpu|cuda] [--amp bf16] [--config configs/base.json]

1. Unless --ckpt exists: builds the full model (HTSAT base, projection 768->1024, audio/text
   mappers, cross_project, GPT-2 124M) with random weights (the recipe of scripts/fixtures_adiff.py;
   GPT-2 keeps Hugging Face's init) and saves it in the official layout: a plain dict, every key
   with `module.`, lm_head tied to wte, GPT-2 attn.bias/masked_bias buffers included (576 entries,
   checked against tests/fixtures/htsat/source/adiff_checkpoint_keys.txt; ~1.2 GB).
2. Unless both exist: writes two 10 s, 32 kHz, 16-bit mono WAVs, explain_a.wav and explain_b.wav,
   into --wav-dir.
3. In a fresh child process (peak RSS then covers loading and inference only), with
   torch.set_num_threads(2) and torch.inference_mode(), loads the checkpoint (strict) and times:
   encode_prefix_s      read both WAVs, tokenize the prompt, encode both audios, build the prefix
                        (1 warm-up, best of 3)
   reference_nocache_s  the reference decoding loop: re-run GPT-2 on the whole sequence every step,
                        the wrapper's top-p filter + argmax, --tokens steps, never stopping early
   kv_cache_s           the same selection with Hugging Face past_key_values (KV cache)
   Both loops run once (they are long). Prints one JSON line:
   {"encode_prefix_s":..,"reference_nocache_s":..,"kv_cache_s":..,"tokens":N,"peak_rss_mb":..,"same_ids":..}
   where same_ids says whether the two loops produced the same token ids.
   Also: encode_prefix_first_s (the warm-up call, timed: the first pass after loading, as in a
   fresh process), device, amp, and peak_gpu_mb / peak_gpu_reserved_mb
   (torch.cuda.max_memory_allocated / max_memory_reserved over the child process, weights
   included; null on the CPU).
--device cuda moves the model and inputs to the GPU and synchronises around every timing;
--amp bf16 runs encode + prefix + decoding under torch.autocast(bfloat16) (weights stay f32;
one autocast context per timed call, so each weight is cast once per call). --config picks
another model size (the key check against the official list is made for configs/base.json
only). Defaults (cpu, no amp, base.json) are the CPU benchmark of scripts/bench_explain.sh.
scripts/gpu-bench.sh runs step 1-2 with --prepare-only, then step 3 itself with --timing-only
(no child process: nvidia-smi then lists the timed process under the pid it started).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_compat  # noqa: E402

torch_compat.install()  # no-op unless ADIFF_TORCH_COMPAT is set (scripts/gpu-bench.sh)
import bench_htsat  # noqa: E402
import fixtures_adiff as fx  # noqa: E402
import fixtures_audio as fa  # noqa: E402

THREADS = 2
REPEATS = 3
DEFAULT_TOKENS = 200
DEFAULT_PROMPT = "Explain the difference between the two audios in detail."  # tier 3 (/work/shared/gpt2/README.md)
SEED_BENCH = 5151
WAV_NAMES = ("explain_a.wav", "explain_b.wav")
CONFIG = fa.REPO / "configs" / "base.json"


def build_checkpoint(cfg: dict, ckpt: Path) -> None:
    """Random weights in the official layout; the key list is checked for the full-size config."""
    torch.manual_seed(fx.SEED_REST)
    htsat, _ = fa.make_model(cfg, calib_waves=None)
    model = fx.Adiff(cfg, htsat).eval()
    fx.randomize_rest(model, torch.Generator().manual_seed(fx.SEED_REST))
    g = cfg["gpt2"]
    sd = fx.official_state_dict(model)
    sd.update(fx.gpt2_buffers(g["n_layer"], g["n_positions"]))
    problems = fx.compare_keys(sd, fx.read_keys_file(fx.KEYS_FILE)) if cfg == fa.load_config(CONFIG) else []
    if problems:
        raise SystemExit(f"full-size checkpoint differs from the official key list: {problems[:10]}")
    wte, lm = sd[f"{fx.DDP}{fx.GPT_PREFIX}transformer.wte.weight"], sd[f"{fx.DDP}{fx.GPT_PREFIX}lm_head.weight"]
    assert wte.data_ptr() == lm.data_ptr(), "lm_head must share wte's storage (stored once)"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, ckpt)
    print(f"wrote {ckpt} ({ckpt.stat().st_size / 1e9:.2f} GB, {len(sd)} entries)", file=sys.stderr)


def write_wavs(cfg: dict, wav_dir: Path) -> None:
    a = cfg["audio"]
    wav_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED_BENCH)
    for name in WAV_NAMES:
        clip = bench_htsat.synth_bench_clip(a["sample_rate"], a["duration_s"], rng)
        fa.write_wav16(wav_dir / name, clip, a["sample_rate"])


def load_model(cfg: dict, ckpt: Path) -> fx.Adiff:
    """Strict load of an official-layout checkpoint; the GPT-2 buffers (non-persistent in
    transformers 4.46) must be present and are the only keys dropped."""
    model = fx.Adiff(cfg, fa.build_htsat(cfg)).eval()
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    buffers = [k for k in sd if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias")]
    assert len(buffers) == 2 * cfg["gpt2"]["n_layer"], buffers
    assert all(k.startswith(fx.DDP) for k in sd), "every key must carry the module. prefix"
    model.load_state_dict({k[len(fx.DDP) :]: v for k, v in sd.items() if k not in buffers}, strict=True)
    return model


@torch.inference_mode()
def decode_nocache(gpt, prefix: torch.Tensor, steps: int) -> list[int]:
    """The reference loop (wrapper `_generate_greedy` without its stop): whole sequence every step."""
    wte = gpt.transformer.wte
    seq, ids = prefix, []
    for _ in range(steps):
        logits = gpt(inputs_embeds=seq).logits[:, -1, :]  # [1, V]
        nxt = fx.top_p_then_argmax(logits, fx.TOP_P)  # [1, 1]
        ids.append(int(nxt.item()))
        seq = torch.cat((seq, wte(nxt)), dim=1)  # [1, L+1, C]
    return ids


@torch.inference_mode()
def decode_kv(gpt, prefix: torch.Tensor, steps: int) -> list[int]:
    """Same selection, one new position per step with Hugging Face's past_key_values."""
    out = gpt(inputs_embeds=prefix, use_cache=True)  # logits [1, L, V]
    ids = []
    for _ in range(steps):
        nxt = fx.top_p_then_argmax(out.logits[:, -1, :], fx.TOP_P)  # [1, 1]
        ids.append(int(nxt.item()))
        out = gpt(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)  # logits [1, 1, V]
    return ids


def autocast(device: torch.device, amp: str | None):
    """torch.autocast(bfloat16) for --amp bf16, else nothing."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gpu(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_gpu_mb": None, "peak_gpu_reserved_mb": None}
    return {
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
        "peak_gpu_reserved_mb": round(torch.cuda.max_memory_reserved(device) / 2**20, 1),
    }


def time_reference(
    ckpt: Path,
    wav_dir: Path,
    tokens: int,
    prompt: str,
    reference_loop: bool = True,
    device: str = "cpu",
    amp: str | None = None,
    config: Path = CONFIG,
    repeats: int = REPEATS,
) -> dict:
    torch.set_num_threads(THREADS)
    dev = torch.device(device)
    cfg = fa.load_config(config)
    a, t = cfg["audio"], cfg["text"]
    n = int(round(a["duration_s"] * a["sample_rate"]))
    prefix_len = 3 * cfg["mapper"]["prefix_length"] + 1
    if prefix_len + tokens > cfg["gpt2"]["n_positions"]:
        raise SystemExit(
            f"--tokens {tokens}: prefix {prefix_len} + tokens exceeds {cfg['gpt2']['n_positions']} positions"
        )
    model = load_model(cfg, ckpt).to(dev)
    gpt = model.caption_decoder.gpt
    tok = fx.load_tokenizer()

    def encode_prefix() -> torch.Tensor:
        with torch.inference_mode(), autocast(dev, amp):
            w1, w2 = (
                torch.from_numpy(fa.tile_to(fa.read_wav16(wav_dir / name, a["sample_rate"]), n))[None].to(dev)
                for name in WAV_NAMES
            )  # [1, 320000] each
            ids = fx.prompt_ids(tok, [prompt], t["prompt_length"]).to(dev)  # [1, 40]
            return model.forward_prefix(w1, w2, ids)["prefix"]  # [1, 121, 768]

    def timed(fn):
        sync(dev)
        start = time.perf_counter()
        out = fn()
        sync(dev)
        return out, time.perf_counter() - start

    _, first_s = timed(encode_prefix)  # warm-up (timed: the first pass after loading)
    times = []
    for _ in range(repeats):
        prefix, s = timed(encode_prefix)
        times.append(s)
    assert torch.isfinite(prefix).all()

    ref_ids, nocache_s = None, None
    if reference_loop:
        with autocast(dev, amp):
            ref_ids, nocache_s = timed(lambda: decode_nocache(gpt, prefix, tokens))
    with autocast(dev, amp):
        kv_ids, kv_s = timed(lambda: decode_kv(gpt, prefix, tokens))

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    return {
        "encode_prefix_s": round(min(times), 4),
        "reference_nocache_s": None if nocache_s is None else round(nocache_s, 3),
        "kv_cache_s": round(kv_s, 3),
        "tokens": tokens,
        "peak_rss_mb": round(peak_kb / 1024.0, 1),
        "same_ids": None if ref_ids is None else ref_ids == kv_ids,
        "encode_prefix_first_s": round(first_s, 4),
        "device": device,
        "amp": amp,
        **peak_gpu(dev),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="full-size checkpoint (written if missing, ~1.2 GB)")
    ap.add_argument("--wav-dir", type=Path, required=True, help="folder for explain_a.wav / explain_b.wav")
    ap.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="new tokens per decoding loop")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--no-reference-loop", action="store_true", help="time the KV-cache loop only")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--amp", choices=("bf16",), default=None, help="torch.autocast(bfloat16) around the timed work")
    ap.add_argument("--config", type=Path, default=CONFIG, help="model config (default configs/base.json)")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="timed encode + prefix calls after the first (best taken)")
    ap.add_argument("--prepare-only", action="store_true", help="write the checkpoint and WAVs if missing, time nothing")
    ap.add_argument("--timing-only", action="store_true", help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if args.tokens < 1:
        ap.error("--tokens must be at least 1")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    if args.timing_only:
        timing = time_reference(
            args.ckpt, args.wav_dir, args.tokens, args.prompt, not args.no_reference_loop, args.device, args.amp,
            args.config, args.repeats,
        )
        print(json.dumps(timing))
        return 0

    cfg = fa.load_config(args.config)
    if not args.ckpt.exists():
        build_checkpoint(cfg, args.ckpt)
    if not all((args.wav_dir / name).exists() for name in WAV_NAMES):
        write_wavs(cfg, args.wav_dir)
    if args.prepare_only:
        return 0
    cmd = [sys.executable, __file__, "--ckpt", str(args.ckpt), "--wav-dir", str(args.wav_dir)]
    cmd += ["--tokens", str(args.tokens), "--prompt", args.prompt, "--timing-only"]
    cmd += ["--device", args.device, "--config", str(args.config), "--repeats", str(args.repeats)]
    cmd += ["--amp", args.amp] if args.amp else []
    cmd += ["--no-reference-loop"] if args.no_reference_loop else []
    child = subprocess.run(cmd, capture_output=True, text=True)
    if child.returncode != 0:
        sys.stderr.write(child.stderr)
        return child.returncode
    print(child.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

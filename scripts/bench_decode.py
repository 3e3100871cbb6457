#!/usr/bin/env python3
"""PyTorch side of the decoding benchmark (see scripts/bench_decode.sh).

Full-size GPT-2 (124M, random weights, seed 0), batch 1, a 121-token random prefix given as
inputs_embeds, then NEW_TOKENS greedy tokens with Hugging Face `generate` (KV cache on), f32, 2
threads. Saves the weights (hub layout, `save_pretrained`) and the prefix to OUT_DIR so the Rust
benchmark decodes with exactly the same model and input.

Prints `RESULT torch_tok_s=<new tokens / seconds of the generate call>` and the generated ids.
"""
import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

PREFIX_TOKENS = 121  # ADIFF: audio1 40 | separator 1 | audio2 40 | text 40
THREADS = 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/adiff_bench_gpt2"))
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs; the best is reported")
    ap.add_argument("--no-save", action="store_true", help="do not (re)write the weights and prefix")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()  # gpt2 base: 12 layers, 768 wide, 50257 vocab
    prefix = torch.randn(1, PREFIX_TOKENS, model.config.n_embd, generator=torch.Generator().manual_seed(1))
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out, safe_serialization=True)
        save_file({"prefix": prefix.contiguous()}, args.out / "prefix.safetensors")

    def run(n):
        return model.generate(
            inputs_embeds=prefix,
            attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long),
            do_sample=False,
            use_cache=True,
            max_new_tokens=n,
            min_new_tokens=n,
            eos_token_id=None,
            pad_token_id=0,
        )

    with torch.inference_mode():
        run(4)  # warm-up
        best = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            ids = run(args.tokens)
            secs = time.perf_counter() - t
            best = secs if best is None else min(best, secs)
    n = ids.shape[1]
    print(f"torch {torch.__version__} f32, {THREADS} threads: {n} new tokens in {best:.2f} s "
          f"(incl. the {PREFIX_TOKENS}-token prefix) = {n / best:.1f} tok/s")
    print("IDS " + ",".join(str(i) for i in ids[0].tolist()))
    print(f"RESULT torch_tok_s={n / best:.3f}")


if __name__ == "__main__":
    main()

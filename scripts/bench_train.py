#!/usr/bin/env python3
"""PyTorch side of scripts/bench_train.sh: one stage-2 or stage-3 optimizer step of the full-size
ADIFF (random weights from --ckpt; HTSAT frozen; projection + mappers + cross-projection trained
with AdamW, and GPT-2 too in stage 3), timed over --steps steps on batches of --batch examples whose answers are the
given CSV's (tokenized with " <|endoftext|>"), embeddings random. Prints JSON: samples/s.

--device cuda trains on the GPU (batches moved there before the clock starts; synchronised
around every step); --amp bf16 runs forward + loss under torch.autocast(bfloat16) with f32
master weights, f32 gradients and the same AdamW (no loss scaling: bf16 needs none). --config
picks another model size. The JSON also has peak_gpu_mb / peak_gpu_reserved_mb
(torch.cuda.max_memory_allocated / max_memory_reserved over the process: weights, AdamW state,
activations; null on the CPU) and peak_rss_mb. Defaults are the CPU benchmark of bench_train.sh.
"""
import argparse
import csv
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_compat  # noqa: E402

torch_compat.install()  # no-op unless ADIFF_TORCH_COMPAT is set (scripts/gpu-bench.sh)
import bench_explain as be  # noqa: E402
import fixtures_adiff as fx  # noqa: E402
import fixtures_train as ft  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--csv", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--stage", type=int, default=2, choices=(2, 3))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--amp", choices=("bf16",), default=None, help="torch.autocast(bfloat16) for forward + loss")
    ap.add_argument("--config", type=Path, default=fx.REPO / "configs" / "base.json")
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    dev = torch.device(a.device)
    cfg = json.loads(a.config.read_text())
    model = be.load_model(cfg, a.ckpt).to(dev)
    named = dict(model.named_parameters())
    params = []
    for k, p in named.items():
        train = ft.trains(k, a.stage)
        p.requires_grad_(train)
        if train:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    tok = fx.load_tokenizer()
    with open(a.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    g = torch.Generator().manual_seed(0)
    e = cfg["projection"]["in_dim"]
    times = []
    for s in range(a.steps + 1):
        batch = [rows[(s * a.batch + i) % len(rows)] for i in range(a.batch)]
        ids = [tok(r["answer"] + " <|endoftext|>")["input_ids"] for r in batch]
        lengths = [len(x) for x in ids]
        l = max(lengths)
        answers = torch.tensor([x + [0] * (l - len(x)) for x in ids])
        prompts = fx.prompt_ids(tok, [r["input"] for r in batch], cfg["text"]["prompt_length"])
        emb1 = torch.randn(a.batch, e, generator=g)
        emb2 = torch.randn(a.batch, e, generator=g)
        answers, prompts, emb1, emb2 = (x.to(dev) for x in (answers, prompts, emb1, emb2))
        be.sync(dev)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with be.autocast(dev, a.amp):
            loss = ft.loss_fn(model, emb1, emb2, prompts, answers, lengths)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        be.sync(dev)
        times.append(time.perf_counter() - t0)
        assert torch.isfinite(loss).item(), f"step {s}: loss {loss.item()}"
    # The first step warms up allocators; report the rest.
    steady = times[1:]
    print(json.dumps({"samples_per_s": a.batch * len(steady) / sum(steady), "step_s": steady,
                      "threads": torch.get_num_threads(), "device": a.device, "amp": a.amp,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
                      **be.peak_gpu(dev)}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch side of the training-step profile (`benches/train_step.rs` is adiff's): one stage-2 or
stage-3 step of the full-size ADIFF (weights from --ckpt), cut into the same segments the same
way: each segment's input is a fresh leaf tensor holding the previous segment's output, the
forward of each is timed alone, then the backward runs segment by segment from the loss down,
each fed its output's gradient. The head+loss segment is the reference's (`bench_train.py`,
`fixtures_train.loss_fn`): GPT-2's logits at every position, then the answer positions' loss.

usage: .venv/bin/python scripts/profile_train_step.py --ckpt F [--stage 2] [--batch 4]
           [--answer-tokens 32] [--steps 3]
Prints a table (median ms over --steps steps after one warm-up) and a JSON line.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_explain as be  # noqa: E402
import fixtures_adiff as fx  # noqa: E402
import fixtures_train as ft  # noqa: E402

GROUP = 4  # GPT-2 blocks per profiled group, as in benches/train_step.rs


def leaf(t):
    return t.detach().requires_grad_(True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--stage", type=int, default=2, choices=(2, 3))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    cfg = json.loads((fx.REPO / "configs" / "base.json").read_text())
    model = be.load_model(cfg, a.ckpt)
    params = []
    for k, p in model.named_parameters():
        train = ft.trains(k, a.stage)
        p.requires_grad_(train)
        if train:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.01)
    gpt = model.caption_decoder.gpt
    tr = gpt.transformer
    b, l = a.batch, a.answer_tokens
    v = cfg["gpt2"]["vocab_size"]
    e = cfg["projection"]["in_dim"]
    pl = cfg["text"]["prompt_length"]
    g = torch.Generator().manual_seed(0)
    emb1 = torch.randn(b, e, generator=g)
    emb2 = torch.randn(b, e, generator=g)
    # The same ids as benches/train_step.rs.
    prompt = torch.tensor([(i * 7919) % v for i in range(b * pl)]).reshape(b, pl)
    answers = torch.tensor([(i * 104729 + 13) % v for i in range(b * l)]).reshape(b, l)
    nb = len(tr.h)
    groups = [(s, min(s + GROUP, nb) - 1) for s in range(0, nb, GROUP)]
    names = ["mappers", "cross-proj", "input"] + [f"blocks {s}-{t}" for s, t in groups] + ["head+loss"]
    fwd, bwd, optim, totals = [], [], [], []
    for _ in range(a.steps + 1):
        started = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        f, ins, outs = [], [], []
        t = time.perf_counter()
        joint = ft.joint_prefix(model, emb1, emb2, prompt)  # [B, 121, C]
        f.append(time.perf_counter() - t)
        outs.append(joint)
        t = time.perf_counter()
        j_in = leaf(joint)
        prefix = model.caption_decoder.cross_project(j_in)  # [B, 121, C]
        f.append(time.perf_counter() - t)
        ins.append(j_in)
        outs.append(prefix)
        t = time.perf_counter()
        p_in = leaf(prefix)
        embeds = torch.cat((p_in, tr.wte(answers[:, : l - 1])), dim=1)
        x = tr.drop(embeds + tr.wpe(torch.arange(embeds.shape[1]).unsqueeze(0)))
        f.append(time.perf_counter() - t)
        ins.append(p_in)
        outs.append(x)
        for s, e2 in groups:
            t = time.perf_counter()
            x_in = leaf(outs[-1])
            x = x_in
            for i in range(s, e2 + 1):
                x = tr.h[i](x)[0]
            f.append(time.perf_counter() - t)
            ins.append(x_in)
            outs.append(x)
        t = time.perf_counter()
        h_in = leaf(outs[-1])
        p = prefix.shape[1]
        logits = gpt.lm_head(tr.ln_f(h_in))[:, p - 1 : p - 1 + l]  # [B, L, V]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), answers.reshape(-1))
        loss.item()
        f.append(time.perf_counter() - t)
        ins.append(h_in)
        bk = [0.0] * len(f)
        t = time.perf_counter()
        loss.backward()
        bk[-1] = time.perf_counter() - t
        for seg in range(len(f) - 2, -1, -1):
            t = time.perf_counter()
            outs[seg].backward(ins[seg].grad)  # ins[seg] is segment seg+1's input
            bk[seg] = time.perf_counter() - t
        t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        clip = time.perf_counter() - t
        t = time.perf_counter()
        opt.step()
        optim.append((clip, time.perf_counter() - t))
        fwd.append(f)
        bwd.append(bk)
        totals.append(time.perf_counter() - started)

    def col(rows, i):
        return 1e3 * statistics.median(r[i] for r in rows[1:])

    print(f"PyTorch {torch.__version__} stage {a.stage} batch {b}, answer {l} tokens, "
          f"{torch.get_num_threads()} threads, median of {a.steps} steps (ms)")
    print(f"{'segment':<12} {'forward':>10} {'backward':>10}")
    out = {}
    for i, n in enumerate(names):
        out[n] = {"forward": col(fwd, i), "backward": col(bwd, i)}
        print(f"{n:<12} {out[n]['forward']:>10.1f} {out[n]['backward']:>10.1f}")
    out["clip"] = 1e3 * statistics.median(o[0] for o in optim[1:])
    out["adamw"] = 1e3 * statistics.median(o[1] for o in optim[1:])
    out["step"] = 1e3 * statistics.median(totals[1:])
    print(f"{'clip':<12} {out['clip']:>10.1f}")
    print(f"{'adamw':<12} {out['adamw']:>10.1f}")
    print(f"{'step':<12} {out['step']:>10.1f}")
    print("JSON " + json.dumps(out))


if __name__ == "__main__":
    main()

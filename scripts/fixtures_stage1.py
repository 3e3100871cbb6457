#!/usr/bin/env python3
"""PyTorch reference for stage 1 (tests/train_stage1.rs): the tagging loss of the tiny HTSAT and
the language-model loss of the tiny GPT-2, with gradients.

Encoder: msclap's HTSAT (scripts/fixtures_audio.py, weights tests/fixtures/htsat/htsat_tiny.ckpt)
in eval mode (bn0 on running statistics, no SpecAugment/mixup/drop-path, as adiff trains it) on
clip_a / clip_b (read and tiled as in fixtures_audio.py). The clip logits are the time mean of the
tscam_conv logits (what msclap's sigmoid is applied to); the loss is BCE-with-logits of their
first K = 19 outputs against fixed multi-hot targets (the synthetic label layout). Every HTSAT
parameter but bn0 (and the fixed STFT/mel buffers) requires a gradient.

Decoder: the tiny GPT-2 (tests/fixtures/gpt2/adiff_tiny.safetensors) as Hugging Face
GPT2LMHeadModel; two lines + " <|endoftext|>", right-padded, labels -100 on padding; the loss is
HF's (shifted next-token cross-entropy, mean over all real target tokens).

Saved: losses, the global gradient norm over all trainable tensors, every encoder gradient (121
tensors) and a few decoder gradients (wte: the rows of the used ids and row 1). An encoder gradient
of at most FULL_MAX elements is stored whole (`encoder.grad.<name>`); a larger one as a summary, to
keep the file small:
  encoder.gradsum.<name>  f64 [2 + PROJECTIONS]: L2 norm, max |g|, then PROJECTIONS fixed random
                          +-1 projections sum_i s_j(i) * g[i] over the flattened gradient, with
                          s_j(i) = +1 if the top bit of splitmix64((j << 40) | i) is 0, else -1
  encoder.gradidx.<name>  i64 [SAMPLES + 1]: flat indices (seeded draw, then the argmax of |g|)
  encoder.gradval.<name>  f32 [SAMPLES + 1]: the gradient there
plus `encoder.grad.tscam_conv.weight.first_k` (the rows of the K labels, the only non-zero ones).

    /work/venv/bin/python scripts/fixtures_stage1.py
Writes tests/fixtures/train/stage1.safetensors.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_adiff as fx  # noqa: E402
import fixtures_audio as fa  # noqa: E402

OUT = fx.REPO / "tests" / "fixtures" / "train"
NUM_LABELS = 19
# Positive labels per clip (indices into the synthetic layout: kind 0-6, pitch 7-9, loudness
# 10-12, pattern 13-15, background 16-18).
POSITIVES = [[5, 9, 11, 13, 18], [0, 7, 12, 14, 17]]
# Encoder gradients up to this many elements are stored whole, larger ones summarised.
FULL_MAX = 4096
PROJECTIONS = 4
SAMPLES = 16
SAMPLE_SEED = 20240531
FROZEN = ("bn0.", "spectrogram_extractor.", "logmel_extractor.")
LINES = [
    "The second audio is louder and higher in pitch.",
    "A quiet low-pitched tone sounding once over a hum.",
]
DECODER_GRADS = [
    "transformer.h.0.attn.c_attn.weight",
    "transformer.h.1.mlp.c_proj.bias",
    "transformer.ln_f.weight",
]


def splitmix64(x):
    """splitmix64 of a uint64 array (wrapping arithmetic)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def signs(j, n):
    """The +-1 projection vector j of length n (see the module docstring)."""
    h = splitmix64(np.arange(n, dtype=np.uint64) | np.uint64(j << 40))
    return np.where(h >> np.uint64(63) == 0, 1.0, -1.0)


def summarise(key, g, gen, out):
    """Norm, max |g|, projections and sampled elements of a large gradient (`key` has a {})."""
    flat = g.flatten().double().numpy()
    proj = [float(signs(j, flat.size) @ flat) for j in range(PROJECTIONS)]
    out[key.format("gradsum")] = torch.tensor(
        [float(np.sqrt(flat @ flat)), float(np.abs(flat).max())] + proj, dtype=torch.float64)
    idx = torch.randperm(flat.size, generator=gen)[:SAMPLES]
    idx = torch.cat([idx, g.flatten().abs().argmax().reshape(1)])
    out[key.format("gradidx")] = idx
    out[key.format("gradval")] = g.flatten()[idx].clone()


def encoder_fixture(cfg, out):
    model = fa.build_htsat(cfg)
    sd = torch.load(fa.OUT_DIR / "htsat_tiny.ckpt", map_location="cpu", weights_only=True)
    prefix = fa.KEY_PREFIX
    model.load_state_dict({k[len(prefix):]: v for k, v in sd.items()}, strict=True)
    model.eval()
    sr = cfg["audio"]["sample_rate"]
    n = int(round(cfg["audio"]["duration_s"] * sr))
    clips = [fa.read_wav16(fa.OUT_DIR / name, sr) for name in ("clip_a.wav", "clip_b.wav")]
    waves = torch.from_numpy(np.stack([fa.tile_to(c, n) for c in clips]))
    target = torch.zeros(2, NUM_LABELS)
    for r, pos in enumerate(POSITIVES):
        target[r, pos] = 1.0
    named = dict(model.named_parameters())
    for k, p in named.items():
        p.requires_grad_(not k.startswith(FROZEN))
    cap = {}
    hook = model.tscam_conv.register_forward_hook(lambda m, i, o: cap.__setitem__("tscam", o))
    try:
        model(waves)
    finally:
        hook.remove()
    logits = torch.flatten(cap["tscam"], 2).mean(-1)  # [B, 527]
    loss = F.binary_cross_entropy_with_logits(logits[:, :NUM_LABELS], target)
    loss.backward()
    grads = {k: p.grad for k, p in named.items() if p.grad is not None}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
    print(f"encoder: loss {float(loss):.6f}, {len(grads)} gradients, norm {float(norm):.6f}")
    out["encoder.target"] = target
    out["encoder.loss"] = loss.detach().reshape(1)
    out["encoder.grad_norm"] = norm.float().reshape(1)
    out["encoder.num_grads"] = torch.tensor([len(grads)])
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    for k in sorted(grads):
        g = grads[k].detach()
        if g.numel() <= FULL_MAX:
            out[f"encoder.grad.{k}"] = g.clone()
        else:
            summarise(f"encoder.{{}}.{k}", g, gen, out)
    out["encoder.grad.tscam_conv.weight.first_k"] = grads["tscam_conv.weight"][:NUM_LABELS].clone()


def decoder_fixture(cfg, out):
    model = fx.load_tiny_model(cfg)
    gpt = model.caption_decoder.gpt
    tok = fx.load_tokenizer()
    ids = [tok(line + " <|endoftext|>")["input_ids"] for line in LINES]
    l = max(len(x) for x in ids)
    pad = cfg["text"]["pad_token_id"]
    input_ids = torch.tensor([x + [pad] * (l - len(x)) for x in ids])
    labels = torch.tensor([x + [-100] * (l - len(x)) for x in ids])
    named = dict(gpt.named_parameters())
    for p in named.values():
        p.requires_grad_(True)
    loss = gpt(input_ids=input_ids, labels=labels).loss
    loss.backward()
    grads = {k: p.grad for k, p in named.items() if p.grad is not None}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
    print(f"decoder: loss {float(loss):.6f}, {len(grads)} gradients, norm {float(norm):.6f}")
    out["decoder.ids"] = input_ids
    out["decoder.lengths"] = torch.tensor([len(x) for x in ids])
    out["decoder.loss"] = loss.detach().reshape(1)
    out["decoder.grad_norm"] = norm.float().reshape(1)
    for k in DECODER_GRADS:
        out[f"decoder.grad.{k}"] = grads[k].detach().clone()
    # wte (tied to the head) is 50257 rows: keep the rows of the ids the lines use, plus row 1
    # (a token that gets gradient through the head only).
    rows = torch.tensor(sorted(set(sum(ids, [])) | {1}))
    out["decoder.wte_rows"] = rows
    out["decoder.grad.wte_rows"] = grads["transformer.wte.weight"][rows].detach().clone()


def main():
    torch.set_num_threads(2)
    cfg = fa.load_config(fx.REPO / "configs" / "tiny.json")
    out = {}
    encoder_fixture(cfg, out)
    decoder_fixture(cfg, out)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT / "stage1.safetensors"),
              metadata={"generator": "scripts/fixtures_stage1.py"})


if __name__ == "__main__":
    main()

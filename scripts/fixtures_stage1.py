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

Saved: losses, a few gradients (wte: the rows of the used ids and row 1), and the global gradient norm over all trainable tensors.

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
ENCODER_GRADS = [
    "patch_embed.proj.weight",
    "patch_embed.norm.bias",
    "layers.0.blocks.1.attn.relative_position_bias_table",
    "layers.1.blocks.0.mlp.fc1.weight",
    "layers.2.downsample.reduction.weight",
    "layers.3.blocks.1.attn.qkv.weight",
    "norm.weight",
    "tscam_conv.bias",
]
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
    for k in ENCODER_GRADS:
        out[f"encoder.grad.{k}"] = grads[k].detach().clone()
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

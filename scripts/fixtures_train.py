#!/usr/bin/env python3
"""PyTorch reference for the training loss and its gradients (tiny ADIFF, tests/train_loss.rs).

The tiny model of scripts/fixtures_adiff.py (HTSAT and GPT-2 from the committed fixtures, the rest
from tests/fixtures/adiff/adiff_tiny_rest.ckpt) gets a batch of three examples: HTSAT embeddings
(random, seeded), prompts (padded to 40 as at inference) and answers of different lengths
(answer + " <|endoftext|>", right-padded). The loss is next-token cross-entropy over the answer
tokens only: GPT-2 reads [prefix (3P+1) | answer tokens 0..L-2], positions P'-1..P'+L-2 predict
answer tokens 0..L-1, padding is ignored (mean over real tokens). Gradients are taken twice:
stage 2 (projection, mappers, cross-projection trainable; GPT-2 and HTSAT frozen) and stage 3
(GPT-2 trainable too).

    /work/venv/bin/python scripts/fixtures_train.py
Writes tests/fixtures/train/loss_grads.safetensors (+ .json with the texts).
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_adiff as fx  # noqa: E402

OUT = fx.REPO / "tests" / "fixtures" / "train"
SEED = 7
PROMPTS = [
    "Explain the difference in few words",
    "What sets the two audios apart? Answer in one sentence",
    "Describe in detail how the second recording differs from the first",
]
ANSWERS = [
    "Audio 1 is louder.",
    "The first audio has a dog barking while the second has rain on a roof.",
    "Both clips contain speech, but the second adds traffic noise, a horn and a distant siren.",
]
STAGE2 = ("audio_encoder.projection.", "caption_decoder.audio_project1.",
          "caption_decoder.audio_project2.", "caption_decoder.text_project.",
          "caption_decoder.cross_project.")


def trains(name, stage):
    """Whether parameter `name` trains in `stage` (2: projection, mappers, cross-projection;
    3: those and GPT-2)."""
    return name.startswith(STAGE2) or (stage == 3 and name.startswith("caption_decoder.gpt."))


def prefix_from_embeddings(model, emb1, emb2, prompt_ids):
    """fixtures_adiff.Adiff.forward_prefix from the HTSAT embeddings on, with gradients."""
    return model.caption_decoder.cross_project(joint_prefix(model, emb1, emb2, prompt_ids))


def joint_prefix(model, emb1, emb2, prompt_ids):
    """The prefix before the cross-projection: [mapped audio 1, separator, mapped audio 2,
    mapped prompt], [B, 3P+1, C]."""
    enc, dec, cfg = model.audio_encoder, model.caption_decoder, model.cfg
    p, c = cfg["mapper"]["prefix_length"], cfg["gpt2"]["n_embd"]
    n1 = enc.projection(emb1)
    n2 = enc.projection(emb2)
    n1 = n1 / n1.norm(2, -1).reshape(-1, 1)
    n2 = n2 / n2.norm(2, -1).reshape(-1, 1)
    a1 = dec.audio_project1(n1).contiguous().view(-1, p, c)
    a2 = dec.audio_project2(n2).contiguous().view(-1, p, c)
    wte = dec.gpt.transformer.wte
    t = dec.text_project(wte(prompt_ids)).contiguous().view(-1, p, c)
    b = prompt_ids.shape[0]
    sep = wte(torch.tensor([cfg["text"]["separator_token_id"]], device=prompt_ids.device)).unsqueeze(0).repeat(b, 1, 1)
    return torch.cat((a1, sep, a2, t), dim=1)


def loss_fn(model, emb1, emb2, prompt_ids, answers, lengths):
    prefix = prefix_from_embeddings(model, emb1, emb2, prompt_ids)  # [B, P', C]
    gpt = model.caption_decoder.gpt
    p = prefix.shape[1]
    l = answers.shape[1]
    ans = gpt.transformer.wte(answers[:, : l - 1])  # [B, L-1, C]
    logits = gpt(inputs_embeds=torch.cat((prefix, ans), dim=1)).logits  # [B, P'+L-1, V]
    logits = logits[:, p - 1 : p - 1 + l]  # [B, L, V]
    target = answers.clone()
    for r, n in enumerate(lengths):
        target[r, n:] = -100
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


def main():
    cfg = json.loads((fx.REPO / "configs" / "tiny.json").read_text())
    model = fx.load_tiny_model(cfg)
    rest = torch.load(fx.OUT_DIR / "adiff_tiny_rest.ckpt", map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict({k[len(fx.DDP):]: v for k, v in rest.items()}, strict=False)
    assert not unexpected, unexpected
    model.eval()  # no dropout anywhere (all rates are 0 or eval-only)
    tok = fx.load_tokenizer()
    g = torch.Generator().manual_seed(SEED)
    e = cfg["projection"]["in_dim"]
    emb1 = torch.randn(3, e, generator=g)
    emb2 = torch.randn(3, e, generator=g)
    prompt_ids = fx.prompt_ids(tok, PROMPTS, cfg["text"]["prompt_length"])
    ids = [tok(a + " <|endoftext|>")["input_ids"] for a in ANSWERS]
    lengths = [len(x) for x in ids]
    l = max(lengths)
    answers = torch.tensor([x + [cfg["text"]["pad_token_id"]] * (l - len(x)) for x in ids])

    out = {"emb1": emb1, "emb2": emb2, "prompt_ids": prompt_ids.to(torch.int64),
           "answer_ids": answers.to(torch.int64), "answer_lengths": torch.tensor(lengths)}
    named = dict(model.named_parameters())
    for stage, trainable in (("stage2", lambda k: trains(k, 2)), ("stage3", lambda k: trains(k, 3))):
        model.zero_grad(set_to_none=True)
        for k, prm in named.items():
            prm.requires_grad_(trainable(k))
        loss = loss_fn(model, emb1, emb2, prompt_ids, answers, lengths)
        loss.backward()
        out[f"{stage}.loss"] = loss.detach().reshape(1)
        n = 0
        for k, prm in named.items():
            if prm.grad is not None:
                out[f"{stage}.grad.{k}"] = prm.grad.detach().clone().contiguous()
                n += 1
        print(stage, float(loss), n, "gradients")
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT / "loss_grads.safetensors"))
    (OUT / "loss_grads.json").write_text(json.dumps({
        "generator": "scripts/fixtures_train.py (torch 2.5.1, transformers 4.46.3)",
        "prompts": PROMPTS, "answers": ANSWERS, "answer_ids": ids}, indent=1) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fixtures for the GPT-2 decoder and tokenizer parity tests (tests/gpt2_parity.rs,
tests/tokenizer_parity.rs), made with Hugging Face transformers as the independent implementation.

Deterministic (fixed seeds). Writes into tests/fixtures/gpt2/:
  adiff_tiny.safetensors   random GPT-2, full 50257 vocab, n_embd 12, 2 layers, 3 heads, ADIFF
                           names (caption_decoder.gpt.transformer.*, lm_head tied, so absent), plus
                           small attn.bias / masked_bias buffers that the loader must ignore.
  adiff_tiny_expected.safetensors   inputs and HF outputs for it (logits on a vocab stride of
                           LOGIT_STRIDE at every position, full last-position logits of row 0,
                           greedy ids and per-step logits on a stride of STEP_LOGIT_STRIDE, a right-padded batch).
  hub_lmhead.safetensors   GPT2LMHeadModel.save_pretrained(safe_serialization=True) of a small
                           model (vocab 1000): keys `transformer.*`, no lm_head (tied).
  hub_base.safetensors     GPT2Model.save_pretrained of the same weights: bare keys (`wte.weight`,
                           `h.0.*`), the hub `gpt2` layout.
  adiff_untied.safetensors the small model with a separate lm_head, ADIFF names.
  small_expected.safetensors  inputs and HF logits for the small models.
  configs.json             the Gpt2Config of each model (adiff's serde format).
  tokenizer_cases.json     texts (200 ACD answers, prompts, edge cases) with HF GPT2TokenizerFast
                           ids (+ pad '!' as in ADIFF's wrapper), prompt ids, and decodings.

Reads only the repository: data/gpt2/tokenizer.json and, for the answers and prompts,
tests/fixtures/gpt2/source/acd_val_adiff_{detail,sentence,fewwords}_answer.csv (the first 60/70/70
rows of ADIFF's ACD validation CSVs, byte for byte; see scripts/FIXTURES.md).

Run: /work/venv/bin/python scripts/fixtures_gpt2.py [--csv-dir DIR]
(DIR: a folder with those three CSVs; ADIFF's full data/ACD gives the same fixtures), or
/work/venv/bin/python scripts/make_fixtures.py gpt2.
"""
import argparse
import csv
import json
import os
import random
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, GPT2Tokenizer, GPT2TokenizerFast

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "gpt2"
TOKENIZER = REPO / "data" / "gpt2" / "tokenizer.json"
CSV_DIR = OUT / "source"  # the first rows of ADIFF's ACD validation CSVs (ANSWERS below)

# Every LOGIT_STRIDE-th vocabulary entry is stored for all positions (full logits would be MBs).
LOGIT_STRIDE = 13
# The greedy run stores its per-step logits on a coarser stride (30 steps).
STEP_LOGIT_STRIDE = 101
GREEDY_NEW_TOKENS = 30
PROMPT_LENGTH = 40  # ADIFF's ip_text_len
ANSWERS = {  # file -> how many answers (200 in all)
    "acd_val_adiff_detail_answer.csv": 60,
    "acd_val_adiff_sentence_answer.csv": 70,
    "acd_val_adiff_fewwords_answer.csv": 70,
}

# n_embd 12 keeps the full-vocab wte at 2.4 MB (the committed fixtures stay under ~4 MB).
TINY = dict(vocab_size=50257, n_positions=1024, n_embd=12, n_layer=2, n_head=3)
SMALL = dict(vocab_size=1000, n_positions=64, n_embd=16, n_layer=2, n_head=2)


def hf_config(c, tie=True):
    return GPT2Config(
        **c,
        layer_norm_epsilon=1e-5,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=tie,
        attn_implementation="eager",
    )


def randomize(model, seed):
    """Spread-out random weights (the default 0.02 init makes all logits nearly equal, so greedy
    ids would hinge on rounding)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if ".ln_" in name or "ln_f" in name:
                p.copy_(1.0 + 0.1 * r if name.endswith("weight") else 0.1 * r)
            elif "wte" in name or "lm_head" in name:
                p.copy_(0.5 * r)
            elif "wpe" in name:
                p.copy_(0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.05 * r)
            else:
                p.copy_(0.2 * r)
    return model.eval()


def adiff_state(model, with_buffers):
    """state_dict under ADIFF's names, tied lm_head dropped like save_pretrained does."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue
        if k == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        sd["caption_decoder.gpt." + k] = v.detach().clone().contiguous()
    if with_buffers:
        # The official checkpoint also holds these buffers; the loader must not read them.
        for i in range(model.config.n_layer):
            sd[f"caption_decoder.gpt.transformer.h.{i}.attn.bias"] = torch.tril(
                torch.ones(1, 1, 8, 8, dtype=torch.bool)
            )
            sd[f"caption_decoder.gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return sd


def greedy(model, embeds, n):
    """HF greedy continuation (no stop token) and the raw logits of every step."""
    out = model.generate(
        inputs_embeds=embeds,
        attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    ids = out.sequences[0]
    assert ids.shape[0] == n, ids.shape
    return ids, torch.stack([s[0] for s in out.logits])  # [n], [n, V]


def tiny_fixtures():
    torch.manual_seed(0)
    model = randomize(GPT2LMHeadModel(hf_config(TINY)), seed=0)
    save_file(adiff_state(model, with_buffers=True), OUT / "adiff_tiny.safetensors")
    g = torch.Generator().manual_seed(1)
    exp = {}
    with torch.no_grad():
        embeds = torch.randn(2, 7, TINY["n_embd"], generator=g)
        logits = model(inputs_embeds=embeds).logits  # [2, 7, V]
        exp["forward.embeds"] = embeds
        exp["forward.logits_strided"] = logits[:, :, ::LOGIT_STRIDE].contiguous()
        exp["forward.logits_last_row0"] = logits[0, -1].contiguous()

        prefix = torch.randn(1, 9, TINY["n_embd"], generator=g)
        ids, scores = greedy(model, prefix, GREEDY_NEW_TOKENS)
        exp["greedy.embeds"] = prefix
        exp["greedy.ids"] = ids.to(torch.int64)
        exp["greedy.logits_strided"] = scores[:, ::STEP_LOGIT_STRIDE].contiguous()

        # A right-padded batch with per-row lengths; HF runs each row on its own.
        lengths = [9, 4, 6]
        batch = torch.randn(len(lengths), max(lengths), TINY["n_embd"], generator=g)
        for r, n in enumerate(lengths):
            batch[r, n:] = 0.0
        rows_ids, rows_last = [], []
        for r, n in enumerate(lengths):
            row = batch[r : r + 1, :n]
            rows_last.append(model(inputs_embeds=row).logits[0, -1, ::LOGIT_STRIDE])
            rows_ids.append(greedy(model, row, GREEDY_NEW_TOKENS)[0])
        exp["padded.embeds"] = batch
        exp["padded.lengths"] = torch.tensor(lengths, dtype=torch.int64)
        exp["padded.logits_last_strided"] = torch.stack(rows_last).contiguous()
        exp["padded.ids"] = torch.stack(rows_ids).to(torch.int64)
    save_file({k: v.contiguous() for k, v in exp.items()}, OUT / "adiff_tiny_expected.safetensors")


def small_fixtures():
    model = randomize(GPT2LMHeadModel(hf_config(SMALL)), seed=4)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        os.replace(Path(d) / "model.safetensors", OUT / "hub_lmhead.safetensors")
        base = GPT2Model(hf_config(SMALL))
        base.load_state_dict(model.transformer.state_dict())
        base.save_pretrained(d, safe_serialization=True)
        os.replace(Path(d) / "model.safetensors", OUT / "hub_base.safetensors")
    untied = randomize(GPT2LMHeadModel(hf_config(SMALL, tie=False)), seed=5)
    save_file(adiff_state(untied, with_buffers=False), OUT / "adiff_untied.safetensors")
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        embeds = torch.randn(2, 6, SMALL["n_embd"], generator=g)
        exp = {
            "embeds": embeds,
            "logits_tied": model(inputs_embeds=embeds).logits.contiguous(),
            "logits_untied": untied(inputs_embeds=embeds).logits.contiguous(),
        }
    save_file(exp, OUT / "small_expected.safetensors")


def hf_tokenizers():
    """ADIFF's tokenizer (fast) and the pure-Python slow GPT2Tokenizer on the same vocab/merges."""
    fast = GPT2TokenizerFast(tokenizer_file=str(TOKENIZER))
    fast.add_special_tokens({"pad_token": "!"})
    spec = json.loads(TOKENIZER.read_text())
    d = tempfile.mkdtemp()
    (Path(d) / "vocab.json").write_text(json.dumps(spec["model"]["vocab"]))
    merges = spec["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (Path(d) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    slow = GPT2Tokenizer(vocab_file=str(Path(d) / "vocab.json"), merges_file=str(Path(d) / "merges.txt"))
    slow.add_special_tokens({"pad_token": "!"})
    return fast, slow


def tokenizer_fixtures(csv_dir):
    fast, slow = hf_tokenizers()
    answers = []
    for name, n in ANSWERS.items():
        with open(csv_dir / name, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) >= n, f"{csv_dir / name} has {len(rows)} rows, {n} needed"
        answers += [r["answer"] for r in rows[:n]]
    # Each CSV has one prompt (its `input` column), so the excerpt gives the same list as the
    # full CSVs.
    prompts = []
    for name in ANSWERS:
        with open(csv_dir / name, newline="") as f:
            for r in csv.DictReader(f):
                if r["input"] not in prompts:
                    prompts.append(r["input"])
    edge = [
        "",
        "wow!!",
        "Hello! How are you?! Fine !",
        "Explain the difference between the two audios in detail.",
        " leading space and trailing space ",
        "  double  spaces\n\nand newlines\tand tabs",
        "Ça va? naïve café, 日本語の音, emoji 🎵🔊",
        "contractions: don't it's I'm we've they're ' quoted '",
        "text with <|endoftext|> inside",
        "describe " * 30 + "the sounds",
        "!",
        "!!!",
        " ! ",
    ]
    cases = []
    for kind, texts in (("answer", answers), ("prompt", prompts), ("edge", edge)):
        for text in texts:
            ids = fast.encode(text)
            assert ids == slow.encode(text), f"fast and slow GPT-2 tokenizers disagree on {text!r}"
            prompt = fast.encode_plus(
                text=text + " <|endoftext|>",
                add_special_tokens=True,
                max_length=PROMPT_LENGTH,
                padding="max_length",
                truncation=True,
            )["input_ids"]
            cases.append(
                {
                    "kind": kind,
                    "text": text,
                    "ids": ids,
                    "prompt_ids": prompt,
                    "decoded": fast.decode(ids, clean_up_tokenization_spaces=False),
                    "decoded_clean": fast.decode(ids, clean_up_tokenization_spaces=True),
                }
            )
    # Arbitrary "generated" id sequences, including the pad, stop and eos ids.
    rng = random.Random(0)
    generated = []
    for _ in range(20):
        ids = [rng.randrange(50257) for _ in range(30)] + [0, 220, 50256, 13, 220]
        rng.shuffle(ids)
        generated.append(
            {
                "ids": ids,
                "decoded": fast.decode(ids, clean_up_tokenization_spaces=False),
                "decoded_clean": fast.decode(ids, clean_up_tokenization_spaces=True),
            }
        )
    doc = {
        "source": "transformers GPT2TokenizerFast(tokenizer_file=data/gpt2/tokenizer.json) "
        "+ add_special_tokens({'pad_token': '!'}); ids also equal the slow GPT2Tokenizer",
        "prompt_length": PROMPT_LENGTH,
        "cases": cases,
        "generated": generated,
    }
    (OUT / "tokenizer_cases.json").write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    return len(cases)


def make(csv_dir=None):
    """Writes every fixture; `csv_dir` holds the ACD CSVs of ANSWERS (default: CSV_DIR)."""
    csv_dir = Path(csv_dir) if csv_dir is not None else CSV_DIR
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    tiny_fixtures()
    small_fixtures()
    (OUT / "configs.json").write_text(
        json.dumps(
            {name: dict(c, layer_norm_epsilon=1e-5) for name, c in (("tiny", TINY), ("small", SMALL))},
            indent=2,
        )
        + "\n"
    )
    n = tokenizer_fixtures(csv_dir)
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    print(f"wrote {OUT} ({n} tokenizer cases, {total / 1e6:.2f} MB)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv-dir", type=Path, default=CSV_DIR,
                    help="folder holding the ACD validation CSVs "
                    "(default: tests/fixtures/gpt2/source, their first rows)")
    make(ap.parse_args().csv_dir)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Fixtures for tests/fense_parity.rs: FENSE, SBERT-sim, the fluency error detector and SPIDEr-FL
as aac-metrics 0.6.0 computes them, with TINY random-weight models of the reference
architectures (no pretrained weights can be downloaded here).

Writes tests/fixtures/metrics/fense/:
  sbert/     a tiny BertModel + mean pooling saved by sentence-transformers (SentenceTransformer
             .save: config.json, model.safetensors, tokenizer.json, vocab.txt, modules.json,
             sentence_bert_config.json, 1_Pooling/config.json), as the hub repo
             sentence-transformers/paraphrase-TinyBERT-L6-v2 is laid out;
  echecker/  echecker_tiny.ckpt in the layout of fense's released checkpoints (torch.save of
             {"model_type", "num_classes", "state_dict"}, state dict of aac-metrics'
             BERTFlatClassifier: encoder.* + clf.*, with the encoder.embeddings.position_ids
             buffer that checkpoints written by transformers < 4.31 hold), beside config.json and
             vocab.txt as the hub repo prajjwal1/bert-medium provides them (no tokenizer.json:
             AutoTokenizer builds BertTokenizerFast from vocab.txt);
  fense.json the candidates, references and aac-metrics' per-item and corpus scores.

The error-class bias of the classifier is set so that the 0.9 threshold falls in a wide gap of
the candidates' error logits (about 40% flagged), so the penalty is exercised and no probability
sits within float noise of the threshold (checked).

Usage: PYTHONPATH=<aac-metrics 0.6.0> /work/venv/bin/python scripts/fixtures_fense.py [--out DIR]
(torch 2.5.1, transformers 4.46.3, sentence-transformers 3.3.1). Also run by
scripts/make_fixtures.py fense.
"""
import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, models
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

REPO = Path(__file__).resolve().parent.parent
SEED = 0
ERROR_THRESHOLD = 0.9
PENALTY = 0.9


def _load_aac(names):
    """aac-metrics modules loaded from their files: the package __init__ imports every metric and
    their heavy dependencies (torchmetrics, ...), which FENSE does not need."""
    spec = importlib.util.find_spec("aac_metrics")
    root = os.path.dirname(spec.origin)
    for pkg in ("aac_metrics", "aac_metrics.utils", "aac_metrics.functional"):
        sys.modules.setdefault(pkg, types.ModuleType(pkg))
    out = {}
    for name in names:
        rel = name.removeprefix("aac_metrics.").replace(".", "/") + ".py"
        s = importlib.util.spec_from_file_location(name, os.path.join(root, rel))
        m = importlib.util.module_from_spec(s)
        sys.modules[name] = m
        s.loader.exec_module(m)
        out[name.rsplit(".", 1)[1]] = m
    return out


AAC = _load_aac(
    [
        "aac_metrics.utils.checks",
        "aac_metrics.utils.globals",
        "aac_metrics.functional.fer",
        "aac_metrics.functional.sbert_sim",
        "aac_metrics.functional.fense",
        "aac_metrics.functional.cider_d",
        "aac_metrics.functional.spice",
        "aac_metrics.functional.spider",
        "aac_metrics.functional.spider_fl",
    ]
)

LONG = " ".join(
    ["a dog barks while birds chirp and a car passes by on a wet road"] * 11
)  # ~150 words: truncated by SBERT (128 tokens) and by the echecker (64)

# (candidate, references): plain captions, fluency errors (repeated words, "a a", truncated
# endings, dropped verbs), punctuation and case, accents, unknown words, an empty candidate and
# very long texts. No apostrophes or hyphens, so that coco-caption's PTB tokenization equals
# lower-casing + dropping punctuation (tests/fense_parity.rs checks it).
ITEMS = [
    ("A dog barks loudly.", ["A dog is barking.", "Dog barking loudly nearby."]),
    ("a a dog barks", ["A dog barks."]),
    ("Rain falls on a tin roof", ["Heavy rain on a roof.", "Rain hits a metal roof.", "It is raining."]),
    ("rain rain falls on the roof roof", ["Rain falls on the roof."]),
    ("A man is speaking and", ["A man speaks to a crowd.", "Someone is talking."]),
    ("Birds chirp; wind blows!", ["Birds are chirping in the wind.", "Wind and birds."]),
    ("birds are chirping chirping chirping", ["Birds chirp in the trees."]),
    ("A car passes by on a wet road.", ["A vehicle drives on a wet street.", "A car goes by.", "Cars pass on a road in the rain.", "Traffic noise."]),
    ("a car passes by on a wet", ["A car passes by on a wet road."]),
    ("The engine of a truck idles", ["A truck engine is idling.", "An engine runs."]),
    ("The THE engine idles", ["An engine idles."]),
    ("Water flows in a stream", ["A stream of water flows.", "Water trickles over rocks."]),
    ("water water flows flows in a stream stream", ["Water flows in a stream."]),
    ("A woman sings while a guitar plays", ["A woman sings with a guitar.", "Music with singing."]),
    ("a woman sings while a", ["A woman sings while a guitar plays."]),
    ("People talk in a busy cafe", ["People chatting in a café.", "A crowd talks."]),
    ("People talk in a busy café, then leave.", ["People leave a café after talking."]),
    ("A bell rings three times", ["A bell rings.", "Church bells ring three times."]),
    ("a bell bell rings rings three times", ["A bell rings three times."]),
    ("Footsteps on a wooden floor", ["Someone walks on a wooden floor.", "Footsteps."]),
    ("footsteps on a wooden", ["Footsteps on a wooden floor."]),
    ("A baby cries and a woman", ["A baby is crying.", "A woman calms a crying baby."]),
    ("Thunder rumbles in the distance", ["Distant thunder rumbles.", "A storm approaches."]),
    ("thunder thunder thunder rumbles", ["Thunder rumbles."]),
    ("A clock ticks", ["A clock is ticking.", "Ticking of a clock."]),
    ("a a a clock ticks", ["A clock ticks."]),
    ("Waves crash on the shore", ["Ocean waves crash on a beach.", "Waves."]),
    ("waves crash on the shore and and", ["Waves crash on the shore."]),
    ("A door opens and closes", ["A door creaks open and shuts.", "Someone opens a door."]),
    ("a door opens and", ["A door opens and closes."]),
    ("A zyxqv wombles glorpily", ["A strange sound.", "Unknown noises."]),
    ("", ["A dog barks."]),
    ("Applause from a large audience", ["People clap.", "An audience applauds loudly.", "Clapping."]),
    ("applause applause from a large audience audience", ["Applause from an audience."]),
    ("A helicopter flies overhead", ["A helicopter passes over.", "Rotor blades chop the air."]),
    ("a helicopter flies flies overhead overhead", ["A helicopter flies overhead."]),
    ("Keys jingle in a pocket", ["Keys jingling.", "Someone shakes keys."]),
    ("A cat meows twice", ["A cat meows.", "A kitten is meowing twice."]),
    ("a cat cat meows twice", ["A cat meows twice."]),
    ("A siren wails as an ambulance passes", ["An ambulance siren.", "A siren passes by."]),
    ("a siren wails as an", ["A siren wails as an ambulance passes."]),
    ("Leaves rustle in the wind", ["Wind rustles the leaves.", "Leaves blowing."]),
    ("A phone rings then someone answers", ["A telephone rings.", "Someone answers a ringing phone."]),
    ("a phone rings then then someone answers", ["A phone rings then someone answers."]),
    ("A train horn blows as the train approaches", ["A train approaches.", "A horn blows.", "Train horn."]),
    ("a train horn blows as the train approaches approaches approaches", ["A train horn blows."]),
    (LONG, ["A dog barks while birds chirp.", "A car passes by on a wet road."]),
    ("a dog barks while birds chirp and " * 9 + "a", ["A dog barks while birds chirp."]),
    ("A crowd cheers at a stadium", ["A crowd cheers.", "Fans cheer at a game.", "Cheering.", "A stadium crowd.", "People shout."]),
    ("a crowd cheers at a", ["A crowd cheers at a stadium."]),
]


def simple_tokenize(s):
    """coco-caption's PTB tokenization for these texts: lower-case, punctuation dropped."""
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def build_vocab(texts):
    """A small WordPiece vocab: the special tokens, punctuation, most words whole, a few only as
    pieces (so that WordPiece splits them), and none of the nonsense words (-> [UNK])."""
    words = set()
    for t in texts:
        words.update(re.findall(r"\w+", t.lower()))
    pieces = {"##s", "##ing", "##ed", "##ly", "##er"}
    whole = set()
    for w in sorted(words):
        if w in {"zyxqv", "wombles", "glorpily"}:
            continue
        if w.endswith("ing") and len(w) > 5 and sum(map(ord, w)) % 2 == 0:
            whole.add(w[:-3])  # "barking" -> "bark" "##ing"
        elif w.endswith("s") and len(w) > 4 and sum(map(ord, w)) % 3 == 0:
            whole.add(w[:-1])  # "rustles" -> "rustle" "##s"
        else:
            whole.add(w)
    # Accents are stripped by the uncased BertNormalizer: "café" -> "cafe".
    whole = {w.replace("é", "e") for w in whole}
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punct = [".", ",", ";", "!", "?"]
    return special + punct + sorted(whole) + sorted(pieces)


def bert_config(vocab_size, hidden, layers, heads, inter, max_pos):
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=max_pos,
        hidden_act="gelu",
        initializer_range=0.1,
    )


def make_sbert(vocab, out_dir, tmp):
    """A tiny BertModel wrapped as sentence-transformers does (Transformer + mean Pooling)."""
    base = tmp / "sbert_base"
    base.mkdir()
    (base / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(base / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(base)
    model = BertModel(bert_config(len(vocab), 32, 2, 4, 64, 160), add_pooling_layer=False)
    model.save_pretrained(base, safe_serialization=True)
    word = models.Transformer(str(base), max_seq_length=128, do_lower_case=False)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool], device="cpu")
    st.save(str(out_dir))
    return SentenceTransformer(str(out_dir), device="cpu")


def make_echecker(vocab, out_dir, tmp, texts):
    """fense's BERTFlatClassifier on a tiny BERT, saved in the layout of the released checkpoints
    and loaded back as aac-metrics' `__load_pretrain_echecker` does."""
    fer = AAC["fer"]
    base = tmp / "echecker_base"
    base.mkdir()
    out_dir.mkdir(parents=True)
    cfg = bert_config(len(vocab), 32, 2, 2, 48, 80)
    BertModel(cfg).save_pretrained(base, safe_serialization=True)
    for d in (base, out_dir):
        (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # config.json without tokenizer files beside it, as prajjwal1/bert-medium.
    cfg.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    assert isinstance(tokenizer, BertTokenizerFast), type(tokenizer)

    clf = fer.BERTFlatClassifier(model_type=str(base), num_classes=6).eval()
    with torch.no_grad():
        torch.nn.init.normal_(clf.clf.weight, std=1.0)
        torch.nn.init.normal_(clf.clf.bias, std=0.5)
        # Error logits without the error bias, to place the 0.9 threshold in a wide gap.
        batch = getattr(fer, "__infer_preprocess")(tokenizer, texts, 64, "cpu", torch.long)
        z = (clf(**batch)[:, 5] - clf.clf.bias[5]).numpy().astype(np.float64)
        zs = np.sort(np.unique(z))
        lo, hi = int(len(zs) * 0.45), int(len(zs) * 0.75)
        gaps = zs[lo + 1 : hi + 1] - zs[lo:hi]
        k = lo + int(np.argmax(gaps))
        cut = (zs[k] + zs[k + 1]) / 2
        clf.clf.bias[5] = math.log(ERROR_THRESHOLD / (1 - ERROR_THRESHOLD)) - cut
        margin = float(gaps.max() / 2)
    assert margin > 1e-2, f"error logits too close to the threshold ({margin})"

    state = clf.state_dict()
    state["encoder.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[None]
    ckpt = out_dir / "echecker_tiny.ckpt"
    torch.save(
        {"model_type": "tiny-echecker-bert", "num_classes": 6, "state_dict": state},
        ckpt,
    )

    # Loaded back as __load_pretrain_echecker does (its AutoModel.from_pretrained(model_type)
    # reads the random base, whose weights load_state_dict then replaces).
    states = torch.load(ckpt, weights_only=False)
    echecker = fer.BERTFlatClassifier(model_type=str(base), num_classes=states["num_classes"])
    sd = states["state_dict"]
    if fer._use_new_echecker_loading():
        sd.pop("encoder.embeddings.position_ids")
    echecker.load_state_dict(sd)
    return echecker.eval(), tokenizer, margin


def score(cands, mrefs, sbert, echecker, tokenizer):
    """aac-metrics' fense (SBERT-sim, FER, per-class fluency probabilities) of one set."""
    corpus, sents = AAC["fense"].fense(
        cands,
        mrefs,
        sbert_model=sbert,
        echecker=echecker,
        echecker_tokenizer=tokenizer,
        error_threshold=ERROR_THRESHOLD,
        penalty=PENALTY,
        device="cpu",
        batch_size=32,
        return_probs=True,
    )
    f = lambda v: [float(x) for x in v.tolist()]
    names = AAC["fer"]._ERROR_NAMES
    return {
        "candidates": cands,
        "mult_references": mrefs,
        "items": {
            "sbert_sim": f(sents["sbert_sim"]),
            "fer": f(sents["fer"]),
            "fense": f(sents["fense"]),
            "probs": {n: f(sents[f"fluency_error.{n}_prob"]) for n in names},
        },
        "corpus": {
            "sbert_sim": float(corpus["sbert_sim"]),
            "fer": float(corpus["fer"]),
            "fense": float(corpus["fense"]),
            "probs": {n: float(corpus[f"fluency_error.{n}_prob"]) for n in names},
        },
    }


def spider_fl_case(cands, mrefs, echecker, tokenizer):
    """aac-metrics' SPIDEr-FL on tokenized text: its own CIDEr-D, a stand-in SPICE per item (the
    SPICE jar needs CoreNLP models that cannot be fetched here; the Rust test feeds the same
    values), its `fer` and `_spider_fl_from_outputs`."""
    rng = np.random.default_rng(SEED + 1)
    spice_items = torch.from_numpy(rng.uniform(0.0, 0.6, len(cands)))
    cider = AAC["cider_d"].cider_d(cands, mrefs, return_all_scores=True)
    spice_outs = ({"spice": spice_items.mean()}, {"spice": spice_items})
    spider_outs = AAC["spider"]._spider_from_outputs(cider, spice_outs)
    fer_outs = AAC["fer"].fer(
        cands,
        echecker=echecker,
        echecker_tokenizer=tokenizer,
        error_threshold=ERROR_THRESHOLD,
        device="cpu",
        batch_size=32,
        return_probs=True,
    )
    corpus, sents = AAC["spider_fl"]._spider_fl_from_outputs(spider_outs, fer_outs, PENALTY)
    f = lambda v: [float(x) for x in v.tolist()]
    keys = ("cider_d", "spice", "spider", "fer", "spider_fl")
    return {
        "items": {k: f(sents[k]) for k in keys},
        "corpus": {k: float(corpus[k]) for k in keys},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/metrics/fense"))
    out = Path(ap.parse_args().out)
    torch.manual_seed(SEED)
    cands = [c for c, _ in ITEMS]
    mrefs = [r for _, r in ITEMS]
    tok_cands = [simple_tokenize(c) for c in cands]
    tok_mrefs = [[simple_tokenize(r) for r in rs] for rs in mrefs]
    texts = cands + [r for rs in mrefs for r in rs]
    vocab = build_vocab(texts)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sbert = make_sbert(vocab, out / "sbert", tmp)
        echecker, tokenizer, margin = make_echecker(
            vocab, out / "echecker", tmp, cands + tok_cands
        )
        raw = score(cands, mrefs, sbert, echecker, tokenizer)
        tok = score(tok_cands, tok_mrefs, sbert, echecker, tokenizer)
        spider_fl = spider_fl_case(tok_cands, tok_mrefs, echecker, tokenizer)
        emb = sbert.encode(cands[:8], convert_to_numpy=True, normalize_embeddings=True)

    # Non-essential files sentence-transformers writes.
    for extra in ("README.md",):
        p = out / "sbert" / extra
        if p.exists():
            p.unlink()
    doc = {
        "about": "aac-metrics 0.6.0 fense / fer / sbert_sim / spider_fl with tiny random models "
        "(scripts/fixtures_fense.py)",
        "error_threshold": ERROR_THRESHOLD,
        "penalty": PENALTY,
        "threshold_logit_margin": margin,
        "raw": raw,
        "tokenized": tok,
        "spider_fl": spider_fl,
        "sbert_embeddings_first8": [[float(x) for x in row] for row in emb],
    }
    (out / "fense.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    flagged = sum(raw["items"]["fer"])
    print(
        f"fense {raw['corpus']['fense']:.6f} sbert_sim {raw['corpus']['sbert_sim']:.6f} "
        f"fer {raw['corpus']['fer']:.3f} ({flagged:.0f}/{len(cands)} flagged), "
        f"tokenized fense {tok['corpus']['fense']:.6f}, spider_fl {spider_fl['corpus']['spider_fl']:.6f}, "
        f"logit margin {margin:.4f}"
    )


if __name__ == "__main__":
    main()

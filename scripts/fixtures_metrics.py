#!/usr/bin/env python
"""Fixtures for tests/metrics_parity.rs: coco-caption metrics computed by the reference tools.

Independent implementations used:
  * pycocoevalcap 1.2: PTBTokenizer (Stanford CoreNLP 3.4.1 jar, needs Java), Bleu, Rouge, Cider
    (pycocoevalcap's "Cider" is CIDEr-D: sigma 6, clipping, Gaussian length penalty, x10).
  * aac-metrics 0.6.0 `cider_d` on the same tokenized text, as a cross-check of CIDEr-D.

Cases are built from ADIFF's validation CSVs (shorter tiers, so the fixture stays small): every
prediction is a real answer scored against *other* rows' answers (one or two references), so
scores are far from 0 and 1. The rows and sentences used are committed in
tests/fixtures/metrics/source/ (scripts/csv_excerpt.py), so nothing outside the repository is read.
Writes tests/fixtures/metrics/cases.json and tokenizer.json (scripts/fixtures_meteor.py reads
cases.json). Usage (Java 17 on PATH, for the PTB tokenizer):
    /work/venv/bin/python scripts/fixtures_metrics.py [--out DIR] [--data ADIFF_DATA]
--data names a folder with ACD/ and CLD/ holding the full CSVs: they are read instead of the
excerpt, and the rows read are added to it. Also run by scripts/make_fixtures.py metrics.
"""
import argparse
import csv
import json
import os
import random
import re
import sys
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import csv_excerpt  # noqa: E402


def _load_aac_cider_d():
    """aac-metrics' `cider_d`, loaded from its file: the package __init__ imports every metric
    (BERTScore, SBERT, ...) and their heavy dependencies, which CIDEr-D does not need."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("aac_metrics")
    root = os.path.dirname(spec.origin)

    def load(name, rel):
        s = importlib.util.spec_from_file_location(name, os.path.join(root, rel))
        m = importlib.util.module_from_spec(s)
        sys.modules[name] = m
        s.loader.exec_module(m)
        return m

    for pkg in ("aac_metrics", "aac_metrics.utils", "aac_metrics.functional"):
        sys.modules.setdefault(pkg, types.ModuleType(pkg))
    load("aac_metrics.utils.checks", "utils/checks.py")
    return load("aac_metrics.functional.cider_d", "functional/cider_d.py").cider_d


aac_cider_d = _load_aac_cider_d()

N_ITEMS = 300
SEED = 0


def tokenize(sentences):
    """Runs the Java PTBTokenizer once over a list of sentences (as pycocoevalcap does)."""
    out = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    return [out[i][0] for i in range(len(sentences))]


def score(preds_tok, refs_tok):
    gts = {i: r for i, r in enumerate(refs_tok)}
    res = {i: [p] for i, p in enumerate(preds_tok)}
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    cider, cider_items = Cider().compute_score(gts, res)
    aac = aac_cider_d(preds_tok, refs_tok, return_all_scores=False)
    return {
        "bleu": [float(b) for b in bleu],
        "rouge_l": float(rouge),
        "cider_d": float(cider),
        "cider_d_aac_metrics": float(aac),
        # Per-item scores (the scorers' second return value), in item order: BLEU-1..4 of each
        # item with its own brevity penalty, ROUGE-L, CIDEr-D (document frequencies of the case).
        "items": {
            "bleu": [[float(x) for x in b] for b in bleu_items],
            "rouge_l": [float(x) for x in rouge_items],
            "cider_d": [float(x) for x in cider_items],
        },
    }


def hard_sentences(data, used):
    """Every sentence of the shorter tiers and the captions that holds something other than words,
    spaces, commas and final periods (the cases the tokenizer can get wrong), in file order, once
    each, leaving out those already in `used`. Needs the full CSVs."""
    seen, hard = set(), []
    plain = re.compile(r"^[A-Za-z ,]*\.?$")
    for sub in ("ACD", "CLD"):
        for fn in sorted(os.listdir(f"{data}/{sub}")):
            if "detail" in fn:
                continue
            with open(f"{data}/{sub}/{fn}", newline="") as f:
                for r in csv.DictReader(f):
                    for c in ("answer", "caption1", "caption2"):
                        s = r[c]
                        if s not in seen and s not in used and not plain.match(s):
                            seen.add(s)
                            hard.append(s)
    return hard


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(csv_excerpt.REPO / "tests" / "fixtures" / "metrics"))
    ap.add_argument("--data", help="folder with ACD/ and CLD/ holding ADIFF's full validation CSVs "
                    "(default: the committed excerpt)")
    args = ap.parse_args()
    data, out_dir = args.data, args.out
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(SEED)
    acd_few = csv_excerpt.answers("acd_val_adiff_fewwords_answer.csv", data)
    cld_few = csv_excerpt.answers("cld_validation_adiff_fewwords_answer.csv", data)
    acd_sen = csv_excerpt.answers("acd_val_adiff_sentence_answer.csv", data)

    cases = []
    # Consecutive blocks of rows, each answer scored against the *next* rows' answers (other
    # pairs): references are mostly other items' predictions, which keeps the fixture small.
    def block(n_rows):
        start = rng.randrange(n_rows - N_ITEMS - 2)
        return range(start, start + N_ITEMS)

    # 1. ACD few words, one reference.
    idx = block(len(acd_few))
    cases.append(("acd_fewwords_1ref", [acd_few[i] for i in idx], [[acd_few[i + 1]] for i in idx]))
    # 2. CLD few words, two references; one empty prediction (scored as an empty string).
    idx = block(len(cld_few))
    preds = [cld_few[i] for i in idx]
    preds[7] = ""
    cases.append(("cld_fewwords_2ref", preds, [[cld_few[i + 1], cld_few[i + 2]] for i in idx]))
    # 3. ACD: the few-words answer against the sentence answers of the same pair and the next.
    idx = block(len(acd_few))
    cases.append(("acd_fewwords_vs_sentence_2ref", [acd_few[i] for i in idx],
                  [[acd_sen[i], acd_sen[i + 1]] for i in idx]))

    out_cases = []
    table, index = [], {}

    def sentence_id(raw, tok):
        if raw not in index:
            index[raw] = len(table)
            table.append([raw, tok])
        return index[raw]

    for name, preds, refs in cases:
        flat = preds + [r for rs in refs for r in rs]
        tok = tokenize(flat)
        preds_tok = tok[: len(preds)]
        it = iter(tok[len(preds):])
        refs_tok = [[next(it) for _ in rs] for rs in refs]
        s = score(preds_tok, refs_tok)
        print(name, {k: v for k, v in s.items() if k != "items"})
        ids = lambda sents, toks: [sentence_id(a, b) for a, b in zip(sents, toks)]
        out_cases.append({"name": name, "preds": ids(preds, preds_tok),
                          "refs": [ids(rs, ts) for rs, ts in zip(refs, refs_tok)], **s})
    with open(f"{out_dir}/cases.json", "w") as f:
        json.dump({"generator": "scripts/fixtures_metrics.py (pycocoevalcap 1.2, aac-metrics 0.6.0)",
                   "note": "preds/refs index `sentences`: [raw text, Java PTBTokenizer output]",
                   "sentences": table, "cases": out_cases}, f)

    # Tokenizer: the hard sentences (hard_sentences), sampled to keep the file small. The draw
    # depends only on how many there are, so the excerpt keeps just the sampled ones.
    population = csv_excerpt.sample_population(hard_sentences(data, index) if data else None)
    hard = [population[i] for i in rng.sample(range(len(population)), min(500, len(population)))]
    # Constructs rare in the data but common in generated text.
    edge = [
        "It can't be, they don't, won't and cannot agree.",
        "The dog's bark (loud) vs. the cats' meows [soft] {quiet}.",
        "He said \"hello\" and 'bye' ... then left!",
        "Frequencies of 0.1-0.5 kHz, 1,000-2,000 Hz and 20,000 Hz; 50% louder.",
        "Sounds like e.g. rain, i.e. water, etc.",
        "A high-pitched, on/off beep -- then silence - and a click: done?",
        "I'm sure they're here, we've seen it, you'll hear it, he'd know.",
        "Audio 1 (a man speaking) is louder than Audio 2.",
        "The U.S. army band plays at 3:30 p.m. today.",
        "A woman\u2019s voice \u2013 soft \u2014 and \u201cquiet\u201d.",
        "",
    ]
    # Abbreviations before lower/upper case words, sentence-finally and before numbers, and
    # assorted lexer rules (signed numbers, decades, apostrophe words, run-on sentences).
    abbrevs = ("etc vs approx mr mrs ms dr prof st jr sr inc ltd co corp jan feb mar apr jun "
               "jul aug sep sept oct nov dec rev gen col lt sgt capt mt ft ave est al fig no "
               "e.g i.e eg ie min max sec hz khz db ca").split()
    for a in abbrevs:
        for w in (a, a.capitalize()):
            edge += [f"the sound {w}. then a beep", f"the sound {w}. Then a beep",
                     f"the sound {w}.", f"the {w}. 5 beeps"]
    edge += ["Audio 1 is louder.Audio 2 is soft", "a 3.5kHz tone", "it's 5$ or $5 & 10% +3 dB",
             "a -5 dB drop", "the 1990s", "2nd and 3rd", "x/y/z/w", "a--b", "well...yes",
             "mid-2000s", "dogs' barks", "o'clock", "rock'n'roll", "'90s music", "the '' thing",
             "a:b", "Hz.", "a (b) c", "the [x]", "sound(s)", "speech-like,",
             "the car's engine's", "#1 and @home", "C++ code", "U.K. band", "A.B.C.", "3-4s",
             "5-10-20", "hi-fi/lo-fi", "a/b-c", "1/2 second", "it ain't", "Y'all", "gimme",
             "lemme", "wanna", "gotta", "gonna", "cannot", "d'ye", "'tis", "'twas",
             "can't won't shan't isn't"]
    tok = tokenize(hard + edge)
    with open(f"{out_dir}/tokenizer.json", "w") as f:
        json.dump({"generator": "scripts/fixtures_metrics.py (pycocoevalcap 1.2 PTBTokenizer)",
                   "data": [[s, t] for s, t in zip(hard, tok[: len(hard)])],
                   "edge": [[s, t] for s, t in zip(edge, tok[len(hard):])]}, f)
    if data:
        csv_excerpt.save([acd_few, cld_few, acd_sen, population])


if __name__ == "__main__":
    main()

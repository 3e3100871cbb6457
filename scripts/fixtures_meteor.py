#!/usr/bin/env python
"""Fixtures for tests/meteor_parity.rs: METEOR 1.5 exactly as pycocoevalcap 1.2 runs it.

pycocoevalcap's `Meteor` (java -jar meteor-1.5.jar - - -stdio -l en -norm) scores the
PTB-tokenized texts of the cases in tests/fixtures/metrics/cases.json (made by
scripts/fixtures_metrics.py) plus one case of longer sentence-tier answers. For every item the
jar's statistics line (SCORE) is kept as well as its item score; the corpus score is the jar's
last line. Usage (Java 17 on PATH):
    python scripts/fixtures_meteor.py /work/shared/data tests/fixtures/metrics
"""
import csv
import json
import random
import sys

from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

N_ITEMS = 300
SEED = 1


def run(meteor, hyps, refs):
    stats = []
    orig = meteor._stat

    def record(h, r):
        s = orig(h, r)
        stats.append(s)
        return s

    meteor._stat = record
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    corpus, items = meteor.compute_score(gts, res)
    meteor._stat = orig
    return float(corpus), [float(x) for x in items], stats


def main():
    data, out_dir = sys.argv[1], sys.argv[2]
    with open(f"{out_dir}/cases.json") as f:
        metrics = json.load(f)
    sents = metrics["sentences"]
    cases = []
    for c in metrics["cases"]:
        hyps = [sents[i][1] for i in c["preds"]]
        refs = [[sents[i][1] for i in rs] for rs in c["refs"]]
        raw = ([sents[i][0] for i in c["preds"]], [[sents[i][0] for i in rs] for rs in c["refs"]])
        cases.append((c["name"], hyps, refs, raw))

    # Longer text: ACD sentence-tier answers, each against the next row's (one reference), and
    # CLD sentence-tier against the next two rows' answers.
    rng = random.Random(SEED)
    for sub, fn, n_refs in (("ACD", "acd_val_adiff_sentence_answer.csv", 1),
                            ("CLD", "cld_validation_adiff_sentence_answer.csv", 2)):
        with open(f"{data}/{sub}/{fn}", newline="") as f:
            answers = [r["answer"] for r in csv.DictReader(f)]
        start = rng.randrange(len(answers) - N_ITEMS - n_refs)
        idx = range(start, start + N_ITEMS)
        flat = [answers[i] for i in idx] + [answers[i + k] for i in idx for k in range(1, n_refs + 1)]
        tok = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(flat)})
        tok = [tok[i][0] for i in range(len(flat))]
        hyps = tok[:N_ITEMS]
        it = iter(tok[N_ITEMS:])
        refs = [[next(it) for _ in range(n_refs)] for _ in idx]
        raw = ([answers[i] for i in idx], [[answers[i + k] for k in range(1, n_refs + 1)] for i in idx])
        cases.append((f"{sub.lower()}_sentence_{n_refs}ref", hyps, refs, raw))

    meteor = Meteor()
    out = []
    for name, hyps, refs, raw in cases:
        corpus, items, stats = run(meteor, hyps, refs)
        print(name, corpus)
        out.append({"name": name, "raw_hyps": raw[0], "raw_refs": raw[1], "hyps": hyps,
                    "refs": refs, "corpus": corpus, "items": items, "stats": stats})
    with open(f"{out_dir}/meteor.json", "w") as f:
        json.dump({"generator": "scripts/fixtures_meteor.py (pycocoevalcap 1.2 meteor-1.5.jar, "
                                "-l en -norm, Java 17)",
                   "note": "raw_hyps/raw_refs are the answers as written; hyps/refs the PTB-tokenized "
                           "texts pycocoevalcap gives the jar; "
                           "stats are the jar's SCORE lines",
                   "cases": out}, f)


if __name__ == "__main__":
    main()

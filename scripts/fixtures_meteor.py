#!/usr/bin/env python
"""Fixtures for tests/meteor_parity.rs: METEOR 1.5 exactly as pycocoevalcap 1.2 runs it.

pycocoevalcap's `Meteor` (java -jar meteor-1.5.jar - - -stdio -l en -norm) scores the
PTB-tokenized texts of the cases in tests/fixtures/metrics/cases.json (made by
scripts/fixtures_metrics.py) plus one case of longer sentence-tier answers. For every item the
jar's statistics line (SCORE) is kept as well as its item score; the corpus score is the jar's
last line. The sentence-tier rows come from the committed excerpt of ADIFF's validation CSVs in
tests/fixtures/metrics/source/ (scripts/csv_excerpt.py), so nothing outside the repository is
read. Writes tests/fixtures/metrics/meteor.json. Run scripts/fixtures_metrics.py first. Usage
(Java 17 on PATH):
    /work/venv/bin/python scripts/fixtures_meteor.py [--out DIR] [--data ADIFF_DATA]
--out: the folder holding cases.json, where meteor.json goes; --data: a folder with ACD/ and CLD/
holding the full CSVs, read instead of the excerpt (the rows read are added to it). Also run by
scripts/make_fixtures.py meteor.
"""
import argparse
import json
import random
import sys
from pathlib import Path

from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import csv_excerpt  # noqa: E402

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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(csv_excerpt.REPO / "tests" / "fixtures" / "metrics"))
    ap.add_argument("--data", help="folder with ACD/ and CLD/ holding ADIFF's full validation CSVs "
                    "(default: the committed excerpt)")
    args = ap.parse_args()
    data, out_dir = args.data, args.out
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
    read = []
    for sub, fn, n_refs in (("ACD", "acd_val_adiff_sentence_answer.csv", 1),
                            ("CLD", "cld_validation_adiff_sentence_answer.csv", 2)):
        answers = csv_excerpt.answers(fn, data)
        read.append(answers)
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
    if data:
        csv_excerpt.save(read)


if __name__ == "__main__":
    main()

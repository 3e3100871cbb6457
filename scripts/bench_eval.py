#!/usr/bin/env python
"""Times `adiff eval` against pycocoevalcap 1.2 (PTBTokenizer + Bleu + Rouge + Cider, and with
--meteor-data also Meteor) on the same N items in the same run, checks the scores agree, and
prints the ratios. Each side runs ROUNDS
times, alternating, and reports its best round (wall clock, process start included for adiff;
the Java tokenizer's start included for pycocoevalcap, as in real use).

    python scripts/bench_eval.py --adiff target/release/adiff --data /work/shared/data
"""
import argparse
import csv
import json
import os
import subprocess
import tempfile
import time

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer


def python_scores(preds, refs, meteor=False):
    gts = {i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)}
    res = {i: [{"caption": p}] for i, p in enumerate(preds)}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {"bleu": list(bleu), "rouge_l": float(rouge), "cider_d": float(cider)}
    if meteor:
        # A new Meteor() per round: the JVM start and data loading are part of real use.
        m = Meteor()
        out["meteor"], _ = m.compute_score(gts, res)
        del m
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adiff", required=True)
    ap.add_argument("--data", default="/work/shared/data")
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--meteor-data", help="meteor-1.5.jar for adiff (adds METEOR to both sides)")
    a = ap.parse_args()
    with open(f"{a.data}/ACD/acd_val_adiff_sentence_answer.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n = a.items
    # Prediction: another pair's answer; references: this row's answer and the one after.
    preds = [rows[i + 2]["answer"] for i in range(n)]
    refs = [[rows[i]["answer"], rows[i + 1]["answer"]] for i in range(n)]
    tmp = tempfile.mkdtemp(prefix="adiff_bench_eval_")
    path = os.path.join(tmp, "acd_sentence_preds.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["taskname", "answer", "answer_2", "prediction"])
        for p, rs in zip(preds, refs):
            w.writerow(["audiocaps", rs[0], rs[1], p])
    out_json = os.path.join(tmp, "scores.json")
    print(f"items: {n} (ACD sentence tier, 2 references each)")
    bench(a, preds, refs, path, out_json, meteor=False)
    if a.meteor_data:
        bench(a, preds, refs, path, out_json, meteor=True)


def bench(a, preds, refs, path, out_json, meteor):
    cmd = [a.adiff, "eval", path, "--json", out_json, "--force"]
    if meteor:
        cmd += ["--meteor-data", a.meteor_data]
    env = {k: v for k, v in os.environ.items() if k != "ADIFF_METEOR_DATA"}
    t_py, t_rs = [], []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        py = python_scores(preds, refs, meteor)
        t_py.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        t_rs.append(time.perf_counter() - t0)
    with open(out_json) as f:
        g = json.load(f)["groups"][0]
    rs = dict(g["scores"])
    diffs = [abs(x - y) for x, y in zip(rs["bleu"], py["bleu"])]
    diffs += [abs(rs["rouge_l"] - py["rouge_l"]), abs(rs["cider_d"] - py["cider_d"])]
    what = "BLEU+ROUGE-L+CIDEr-D"
    if meteor:
        rs["meteor"] = g["meteor"]
        diffs.append(abs(rs["meteor"] - py["meteor"]))
        what += "+METEOR"
    print(f"--- {what}")
    print(f"pycocoevalcap: {json.dumps(py)}")
    print(f"adiff eval:    {json.dumps(rs)}")
    print(f"max |score difference|: {max(diffs):.2e}")
    print(f"pycocoevalcap (Java tokenizer, {what}): best {min(t_py):.3f} s of {a.rounds}")
    print(f"adiff eval (same metrics, process start incl.): best {min(t_rs):.3f} s of {a.rounds}")
    print(f"RESULT {what} speedup={min(t_py) / min(t_rs):.1f}x")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Times `adiff eval --metrics fense` against aac-metrics 0.6's `fense` on the same N items (CPU)
in the same run, checks that the two corpus FENSE values agree (1e-4) and prints the ratio
aac-metrics / adiff (issue 32).

No pretrained weights can be downloaded here, so the models are FULL-SIZE RANDOM-WEIGHT models of
the real architectures (the speed depends on the shapes, not on the weights), built once into
MODELS (reused on later runs while MODELS/build.json matches), in the layout of
scripts/fixtures_fense.py's tiny ones (`adiff eval --fense-model MODELS` reads it):

  MODELS/sbert/          sentence-transformers/paraphrase-TinyBERT-L6-v2 as the hub repo is laid
                         out (its config.json: BertModel, 6 layers, hidden 768, 12 heads,
                         intermediate 3072, vocab 30522, 512 positions, type vocab 2, gelu,
                         layer_norm_eps 1e-12; modules.json Transformer -> Pooling, mean pooling,
                         max_seq_length 128, do_lower_case false; uncased WordPiece tokenizer);
  MODELS/echecker/       fense's echecker_clotho_audiocaps_base layout: echecker_bench.ckpt
                         (torch.save of {"model_type": "prajjwal1/bert-medium", "num_classes": 6,
                         "state_dict"}: BERTFlatClassifier's encoder.* + clf.* with the
                         encoder.embeddings.position_ids buffer) beside prajjwal1/bert-medium's
                         config.json (8 layers, hidden 512, 8 heads, intermediate 2048, vocab
                         30522, 512 positions) and vocab.txt;
  MODELS/echecker_base/  that BertModel's own weights (pytorch_model.bin, as the hub repo has
                         them): aac-metrics' loader builds BERTFlatClassifier from the
                         pretrained encoder (AutoModel.from_pretrained(model_type)) before
                         load_state_dict, so its load time includes reading them;
  MODELS/aac_cache/      aac-metrics' cache layout for the PTB tokenizer's jar (a link to
                         pycocoevalcap's stanford-corenlp-3.4.1.jar, the same jar).

The WordPiece vocabulary (30522 entries, as both real models) is scripts/fixtures_fense.py's
tiny vocabulary built over the fixture's and the benchmark data's texts, plus every
BasicTokenizer word of the data (raw and PTB-tokenized) whole, every character and "##"
character (so no word becomes [UNK]), then "[unusedN]" fillers. The error output's bias is set so
that the 0.9 threshold falls in a wide gap of the first --calibrate candidates' error logits
(about 40% flagged), so the penalty is exercised and no flag can flip on float noise.

Items: as scripts/bench_eval.py: the ACD sentence-tier answers, prediction = row i+2, references
= rows i and i+1. Each round runs both sides, alternating: aac-metrics as its evaluate
(preprocess=True) does FENSE: PTB tokenization (Java; candidates, then references, one call
each), loading both models, then fense() on the CPU with torch at --threads threads (time with
and without the loading; the Python imports are not timed); then `adiff eval --metrics fense
--fense-model MODELS` as a fresh process (process start, CSV reading, tokenization, model loading
all timed; RAYON_NUM_THREADS=--threads).

    scripts/bench_fense.sh     (or: PYTHONPATH=/tmp/fxpy /work/venv/bin/python
    scripts/bench_fense.py --adiff target/release/adiff --models target/bench-fense-models)
"""
import argparse
import os
import sys

# Thread counts must be fixed before torch / tokenizers start their pools.
def _threads_from_argv(default=2):
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


THREADS = _threads_from_argv()
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_v] = str(THREADS)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import csv  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)
try:
    torch.set_num_interop_threads(THREADS)
except RuntimeError:
    pass

import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer, models  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast  # noqa: E402
from transformers.models.bert.tokenization_bert import BasicTokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_fense as FX  # noqa: E402  (loads aac-metrics' fense modules from their files)


def _load_aac_tokenization():
    """aac_metrics.utils.tokenization from its file, beside the modules fixtures_fense loaded (the
    package __init__ is not run: it imports every metric's dependencies)."""
    name = "aac_metrics.utils.tokenization"
    path = Path(FX.AAC["fer"].__file__).parent.parent / "utils" / "tokenization.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


FER, FENSE, SBERT = FX.AAC["fer"], FX.AAC["fense"], FX.AAC["sbert_sim"]
TOK = _load_aac_tokenization()
# aac-metrics' sanity check rejects Java > 13 (for METEOR and SPICE); the PTB tokenizer runs on
# any Java (pycocoevalcap runs the same jar the same way on Java 17).
TOK.check_java_path = lambda java_path: shutil.which(str(java_path)) is not None

REPO = Path(__file__).resolve().parent.parent
BUILD_VERSION = 1
SEED = 0
VOCAB_SIZE = 30522
ERROR_THRESHOLD = 0.9
PENALTY = 0.9
TOLERANCE = 1e-4

# sentence-transformers/paraphrase-TinyBERT-L6-v2 (config.json of the hub repo).
SBERT_CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=768,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    pad_token_id=0,
    initializer_range=0.02,
)
SBERT_MAX_SEQ_LENGTH = 128
# prajjwal1/bert-medium (config.json of the hub repo; no layer_norm_eps / pad_token_id there,
# transformers' defaults 1e-12 / 0 apply).
ECHECKER_CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    intermediate_size=2048,
    max_position_embeddings=512,
    type_vocab_size=2,
    hidden_act="gelu",
    initializer_range=0.02,
)
ECHECKER_NUM_CLASSES = 6
ECHECKER_MAX_LEN = 64  # aac-metrics' fer max_len


def load_items(data, n):
    """bench_eval.py's items: prediction = answer of row i+2, references = rows i and i+1."""
    path = Path(data) / "ACD" / "acd_val_adiff_sentence_answer.csv"
    with open(path, newline="") as f:
        rows = [r["answer"] for r in csv.DictReader(f)]
    if n + 2 > len(rows):
        raise SystemExit(f"{path} has {len(rows)} rows: at most {len(rows) - 2} items")
    preds = [rows[i + 2] for i in range(n)]
    refs = [[rows[i], rows[i + 1]] for i in range(n)]
    return path, rows, preds, refs


def stanford_jar():
    spec = importlib.util.find_spec("pycocoevalcap.tokenizer.ptbtokenizer")
    if spec is None or spec.origin is None:
        raise SystemExit("pycocoevalcap 1.2 not found (PYTHONPATH=/tmp/fxpy?)")
    jar = Path(spec.origin).parent / "stanford-corenlp-3.4.1.jar"
    if not jar.is_file():
        raise SystemExit(f"no {jar} (pycocoevalcap 1.2 ships it)")
    return jar


def ptb(sents, models_dir, tmp):
    """aac-metrics' preprocess_mono_sents (Java PTBTokenizer -preserveLines -lowerCase, its
    punctuation list dropped), one Java call, as its evaluate(preprocess=True) runs it."""
    return TOK.preprocess_mono_sents(
        sents, cache_path=str(models_dir / "aac_cache"), tmp_path=str(tmp)
    )


def build_vocab(texts):
    """scripts/fixtures_fense.py's tiny vocabulary (over these texts), then every word of the
    texts whole, every character alone and as a "##" piece, then [unusedN] fillers."""
    vocab = list(FX.build_vocab([t for t in texts]))
    seen = set(vocab)

    def add(tok):
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)

    basic = BasicTokenizer(do_lower_case=True)
    words, chars = set(), set()
    for t in texts:
        for w in basic.tokenize(t):
            words.add(w)
            chars.update(w)
    for w in sorted(words):
        add(w)
    for c in sorted(chars):
        add(c)
        add("##" + c)
    if len(vocab) > VOCAB_SIZE:
        raise SystemExit(f"vocabulary of the data has {len(vocab)} > {VOCAB_SIZE} entries")
    i = 0
    while len(vocab) < VOCAB_SIZE:
        add(f"[unused{i}]")
        i += 1
    return vocab


def write_vocab(vocab, d):
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")


def make_sbert(vocab, out_dir, tmp):
    base = tmp / "sbert_base"
    base.mkdir()
    write_vocab(vocab, base)
    BertTokenizerFast(vocab_file=str(base / "vocab.txt"), do_lower_case=True).save_pretrained(base)
    BertModel(BertConfig(**SBERT_CONFIG), add_pooling_layer=False).save_pretrained(
        base, safe_serialization=True
    )
    word = models.Transformer(str(base), max_seq_length=SBERT_MAX_SEQ_LENGTH, do_lower_case=False)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool], device="cpu")
    st.save(str(out_dir))
    readme = out_dir / "README.md"
    if readme.exists():
        readme.unlink()
    del st, word, pool


def load_echecker(models_dir):
    """aac-metrics' __load_pretrain_echecker on the local files: the BERTFlatClassifier built on
    the pretrained encoder (here MODELS/echecker_base, the checkpoint's model_type being the hub
    name), the checkpoint's state dict loaded into it; tokenizer as
    AutoTokenizer.from_pretrained(model_type) (config.json + vocab.txt)."""
    ckpt = next((models_dir / "echecker").glob("*.ckpt"))
    states = torch.load(ckpt, weights_only=False)
    echecker = FER.BERTFlatClassifier(
        model_type=str(models_dir / "echecker_base"), num_classes=states["num_classes"]
    )
    sd = states["state_dict"]
    if FER._use_new_echecker_loading():
        sd.pop("encoder.embeddings.position_ids")
    echecker.load_state_dict(sd)
    echecker.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(models_dir / "echecker"))
    return echecker, tokenizer


def make_echecker(vocab, models_dir, calib_texts):
    out_dir = models_dir / "echecker"
    base = models_dir / "echecker_base"
    out_dir.mkdir()
    base.mkdir()
    cfg = BertConfig(**ECHECKER_CONFIG)
    # prajjwal1/bert-medium ships pytorch_model.bin (no safetensors).
    BertModel(cfg).save_pretrained(base, safe_serialization=False)
    for d in (base, out_dir):
        write_vocab(vocab, d)
        cfg.save_pretrained(d)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    assert isinstance(tokenizer, BertTokenizerFast), type(tokenizer)

    clf = FER.BERTFlatClassifier(model_type=str(base), num_classes=ECHECKER_NUM_CLASSES).eval()
    with torch.no_grad():
        torch.nn.init.normal_(clf.clf.weight, std=1.0)
        torch.nn.init.normal_(clf.clf.bias, std=0.5)
        infer = getattr(FER, "__infer_preprocess")
        z = []
        for i in range(0, len(calib_texts), 32):
            batch = infer(tokenizer, calib_texts[i : i + 32], ECHECKER_MAX_LEN, "cpu", torch.long)
            z.append((clf(**batch)[:, 5] - clf.clf.bias[5]).numpy().astype(np.float64))
        z = np.concatenate(z)
        zs = np.sort(np.unique(z))
        lo, hi = int(len(zs) * 0.45), int(len(zs) * 0.75)
        gaps = zs[lo + 1 : hi + 1] - zs[lo:hi]
        k = lo + int(np.argmax(gaps))
        cut = (zs[k] + zs[k + 1]) / 2
        clf.clf.bias[5] = math.log(ERROR_THRESHOLD / (1 - ERROR_THRESHOLD)) - cut
        margin = float(gaps.max() / 2)
        flagged = int((z > cut).sum())
    state = clf.state_dict()
    state["encoder.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[None]
    torch.save(
        {"model_type": "prajjwal1/bert-medium", "num_classes": ECHECKER_NUM_CLASSES, "state_dict": state},
        out_dir / "echecker_bench.ckpt",
    )
    del clf, state
    return margin, flagged


def build_models(models_dir, data_path, rows, calibrate):
    """Builds MODELS once; reuses it while build.json records the same settings."""
    want = {
        "version": BUILD_VERSION,
        "seed": SEED,
        "data": str(Path(data_path).resolve()),
        "calibrate": calibrate,
        "sbert": SBERT_CONFIG,
        "echecker": ECHECKER_CONFIG,
    }
    marker = models_dir / "build.json"
    if marker.is_file():
        have = json.loads(marker.read_text())
        if {k: have.get(k) for k in want} == want:
            print(f"models: reusing {models_dir} (built {have.get('built')})")
            return have
        print(f"models: {marker} records other settings: rebuilding")
    if models_dir.exists():
        shutil.rmtree(models_dir)
    models_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    jar_dir = models_dir / "aac_cache" / "aac-metrics" / "stanford_nlp"
    jar_dir.mkdir(parents=True)
    (jar_dir / "stanford-corenlp-3.4.1.jar").symlink_to(stanford_jar())
    torch.manual_seed(SEED)
    transformers.logging.set_verbosity_error()  # the pooler "newly initialized" notice
    with tempfile.TemporaryDirectory(prefix="adiff_bench_fense_build_") as tmp:
        tmp = Path(tmp)
        rows_tok = ptb(rows, models_dir, tmp)
        fixture_texts = [c for c, _ in FX.ITEMS] + [r for _, rs in FX.ITEMS for r in rs]
        vocab = build_vocab(fixture_texts + rows + rows_tok)
        print(f"models: vocabulary {len(vocab)} entries; building the Sentence-BERT ...", flush=True)
        make_sbert(vocab, models_dir / "sbert", tmp)
        gc.collect()
        # Calibrated on the candidates as both sides score them (PTB-tokenized), the first
        # `calibrate` items' predictions.
        calib = rows_tok[2 : 2 + calibrate]
        print(f"models: building the echecker, calibrating on {len(calib)} candidates ...", flush=True)
        margin, flagged = make_echecker(vocab, models_dir, calib)
    if margin < 1e-3:
        raise SystemExit(f"error logits too close to the threshold ({margin}); try another --calibrate")
    doc = dict(want)
    doc.update(
        built=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        build_seconds=round(time.perf_counter() - t0, 1),
        vocab_size=len(vocab),
        threshold_logit_margin=margin,
        calibration_flagged=f"{flagged}/{len(calib)}",
    )
    marker.write_text(json.dumps(doc, indent=1) + "\n")
    print(
        f"models: built in {doc['build_seconds']} s, error-logit margin {margin:.4f}, "
        f"{flagged}/{len(calib)} calibration candidates flagged"
    )
    return doc


def python_fense(preds, refs, models_dir, tmp):
    """aac-metrics' evaluate(preprocess=True, metrics="fense") on the CPU, in its steps."""
    t0 = time.perf_counter()
    cands = ptb(preds, models_dir, tmp)
    flat = [r for rs in refs for r in rs]
    flat_tok = ptb(flat, models_dir, tmp)
    mrefs, k = [], 0
    for rs in refs:
        mrefs.append(flat_tok[k : k + len(rs)])
        k += len(rs)
    t1 = time.perf_counter()
    sbert = SBERT._load_sbert(str(models_dir / "sbert"), device="cpu")
    echecker, tokenizer = load_echecker(models_dir)
    t2 = time.perf_counter()
    with torch.no_grad():
        corpus, sents = FENSE.fense(
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
    t3 = time.perf_counter()
    out = {k: float(corpus[k]) for k in ("sbert_sim", "fer", "fense")}
    p = sents["fluency_error.error_prob"].double().clamp(1e-12, 1 - 1e-12)
    logit = torch.log(p / (1 - p))
    out["min_logit_distance"] = float((logit - math.log(ERROR_THRESHOLD / (1 - ERROR_THRESHOLD))).abs().min())
    del sbert, echecker, tokenizer, corpus, sents
    gc.collect()
    times = {"tokenize": t1 - t0, "load": t2 - t1, "score": t3 - t2, "total": t3 - t0}
    return out, times


def loadavg():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adiff", required=True, help="the adiff binary")
    ap.add_argument("--models", required=True, help="folder for the full-size random models (built once)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=THREADS, help="torch and adiff (RAYON_NUM_THREADS) threads (2)")
    ap.add_argument("--calibrate", type=int, default=500, help="candidates the echecker bias is calibrated on (500)")
    a = ap.parse_args()

    models_dir = Path(a.models).resolve()
    data_path, rows, preds, refs = load_items(a.data, a.items)
    print(f"machine: {os.cpu_count()} cores; torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"adiff with RAYON_NUM_THREADS={a.threads}")
    print(f"load average before: {loadavg()}")
    build = build_models(models_dir, data_path, rows, max(a.calibrate, 1))
    print(
        "architectures: Sentence-BERT (paraphrase-TinyBERT-L6-v2 shape) BertModel "
        f"L{SBERT_CONFIG['num_hidden_layers']} H{SBERT_CONFIG['hidden_size']} A{SBERT_CONFIG['num_attention_heads']} "
        f"I{SBERT_CONFIG['intermediate_size']} vocab {SBERT_CONFIG['vocab_size']}, mean pooling, max_seq_length "
        f"{SBERT_MAX_SEQ_LENGTH}; echecker (prajjwal1/bert-medium shape) BertModel "
        f"L{ECHECKER_CONFIG['num_hidden_layers']} H{ECHECKER_CONFIG['hidden_size']} A{ECHECKER_CONFIG['num_attention_heads']} "
        f"I{ECHECKER_CONFIG['intermediate_size']} vocab {ECHECKER_CONFIG['vocab_size']} + Linear(512, 6), 64 tokens; "
        "random weights"
    )
    if a.items > build["calibrate"]:
        print(f"note: the echecker was calibrated on {build['calibrate']} candidates, fewer than --items")

    tmp = Path(tempfile.mkdtemp(prefix="adiff_bench_fense_"))
    try:
        csv_path = tmp / "acd_sentence_preds.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["taskname", "answer", "answer_2", "prediction"])
            for p, rs in zip(preds, refs):
                w.writerow(["audiocaps", rs[0], rs[1], p])
        out_json = tmp / "scores.json"
        cmd = [a.adiff, "eval", str(csv_path), "--metrics", "fense", "--fense-model", str(models_dir),
               "--json", str(out_json), "--force"]
        env = {k: v for k, v in os.environ.items() if k != "ADIFF_FENSE_MODEL"}
        env["RAYON_NUM_THREADS"] = str(a.threads)
        print(f"items: {a.items} (ACD sentence tier, 2 references each); rounds: {a.rounds}")
        print(f"adiff command: {' '.join(cmd)}")
        t_py, t_rs = [], []
        py = None
        for r in range(a.rounds):
            py, tp = python_fense(preds, refs, models_dir, tmp)
            t_py.append(tp)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
            t_rs.append(time.perf_counter() - t0)
            print(
                f"round {r + 1}: aac-metrics {tp['total']:.3f} s (PTB {tp['tokenize']:.3f} + load "
                f"{tp['load']:.3f} + fense {tp['score']:.3f}; without loading {tp['total'] - tp['load']:.3f}) | "
                f"adiff {t_rs[-1]:.3f} s | load average {loadavg()}",
                flush=True,
            )
        with open(out_json) as f:
            g = json.load(f)["groups"][0]
        rs = {k: float(g[k]) for k in ("sbert_sim", "fer", "fense")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"load average after: {loadavg()}")
    print(f"aac-metrics fense: fense {py['fense']:.8f} sbert_sim {py['sbert_sim']:.8f} fer {py['fer']:.4f} "
          f"(closest error logit to the threshold: {py['min_logit_distance']:.4f})")
    print(f"adiff eval fense:  fense {rs['fense']:.8f} sbert_sim {rs['sbert_sim']:.8f} fer {rs['fer']:.4f}")
    diff = abs(py["fense"] - rs["fense"])
    fer_equal = abs(py["fer"] - rs["fer"]) < 1e-6
    ok = diff <= TOLERANCE and fer_equal
    print(f"|FENSE difference| {diff:.2e} (tolerance {TOLERANCE:g}), |SBERT-sim difference| "
          f"{abs(py['sbert_sim'] - rs['sbert_sim']):.2e}, FER equal: {fer_equal} -> "
          f"{'AGREE' if ok else 'MISMATCH'}")
    best_py = min(t["total"] for t in t_py)
    best_py_noload = min(t["total"] - t["load"] for t in t_py)
    best_rs = min(t_rs)
    print(f"aac-metrics fense (PTB tokenization + model loading + fense, {a.threads} threads): "
          f"best {best_py:.3f} s of {a.rounds}")
    print(f"aac-metrics fense without model loading: best {best_py_noload:.3f} s of {a.rounds}")
    print(f"adiff eval --metrics fense (process start, tokenization, loading incl.): best {best_rs:.3f} s of {a.rounds}")
    print(f"RESULT FENSE {a.items} items CPU: aac-metrics/adiff = {best_py / best_rs:.2f}x "
          f"(without aac-metrics' loading: {best_py_noload / best_rs:.2f}x)")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Fixture for tests/ptb_tokenizer.rs: punctuation-heavy strings through pycocoevalcap's PTB tokenizer.

pycocoevalcap 1.2 tokenizes captions with Stanford CoreNLP 3.4.1's PTBTokenizer (the jar it ships,
run as `PTBTokenizer -preserveLines -lowerCase` on all captions of one call, one per line) and
then drops punctuation tokens. adiff reimplements that in src/metrics/tokenize.rs. This script
builds 4,000 seeded strings that mix words, numbers, abbreviations, contractions, URLs and runs of
punctuation (`static.,` `x..` `x.;` `x?.` `x.)` `x.'` `x."`, brackets, quotes, dashes, `&` `%` `$`,
Unicode punctuation and letters), plus template-style captions ("Audio 1 has more static., while
Audio 2 ..."), then appends a fixed list of probe strings (`probes`: rare Unicode such as soft
hyphens and zero-width spaces next to the rules it affects), and tokenizes them all by calling
pycocoevalcap's own PTBTokenizer class:

  * `lines`: every string, in order, in ONE call. The Java lexer's trailing context can read the
    next line (`plan b.` before a line `The dog ...` gives `b`, otherwise `b.`), so this column
    is what adiff's `coco_tokenize_lines` must give for the whole list.
  * an `alone` value where a string tokenizes differently when it is followed by a neutral line
    (each string followed by a line `~`, in a second call): that is what `coco_tokenize` (one
    caption, then a line break) must give. Most strings have none (same as in `lines`).
  * `scores`: a small corpus of punctuation-heavy caption pairs (`preds` and two `refs` each) with
    pycocoevalcap's Bleu(4), Rouge, Cider (CIDEr-D) computed the way COCOEvalCap does it (refs in
    one tokenizer call, predictions in another). The captions are drawn so that none depends on
    its neighbour (its tokens alone equal its tokens in the call), so scoring each caption on its
    own (adiff's `score_corpus`) must give the same numbers.

Left out of the generator on purpose: line breaks other than `\\n` inside a string (`\\r`, U+0085,
U+2028, U+2029, VT, FF). The Java tokenizer ends a line there, which shifts pycocoevalcap's pairing
of output lines with captions for every later caption, so no per-caption tokenizer can agree.
Characters outside the Basic Multilingual Plane are in (Java drops them, as adiff does).

Writes tests/fixtures/metrics/ptb_punct.json. Usage (Java 17 on PATH):
    /work/venv/bin/python scripts/fixtures_ptb.py [--out DIR] [--n 4000]
Also run by scripts/make_fixtures.py ptb.
"""
import argparse
import json
import os
import random
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

REPO = Path(__file__).resolve().parent.parent
SEED = 32
N_STRINGS = 4000
N_SCORE_ITEMS = 120

WORDS = ("audio sound dog bark static noise louder quieter while both has more less the a an is "
         "are was of in on at with clip first second speech music rain engine car bird chirp "
         "pitch tone hum buzz echo faint loud soft clear clearer distant background voice man "
         "woman child crowd applause wind water beep click siren it this that there than and "
         "or but not very").split()
CAPWORDS = ("Audio The A An It In This There He She They We You But Both Then However Here If "
            "At As After Now One Some Such When While What Yet So Our Many More").split()
UNICODE_WORDS = ["café", "naïve", "Zürich", "résumé", "façade", "东京", "Ελλάδα", "Москва",
                 "señor", "coöperate", "e\u0301t\u00e9", "ﬁne", "Ⅻ", "x\u00adray", "µs", "Σ"]
NUMBERS = ["1", "2", "3.5", "1,000", "20,000", ".5", "0.1", "-5", "+3", "10%", "50 %", "$5",
           "5$", "US$10", "3:30", "12:45:10", "1/2", "3/4", "1 1/2", "0.1-0.5", "5-10", "2nd",
           "3rd", "1990s", "'90s", "12/25/2020", "555-1234", "(555) 123-4567", "1.2.3", "4x",
           "100Hz", "2kHz", "3-4", "10-20-30", "#1", "No. 5", "½", "¾", "⅕", "2²", "٣", "１２",
           "1e5", "3.14159", "1.", "2.0.", "5th"]
ABBREVS = ["e.g.", "i.e.", "etc.", "vs.", "U.S.", "U.K.", "Mr.", "Mrs.", "Dr.", "Jan.", "Sept.",
           "ca.", "fig.", "no.", "nos.", "approx.", "a.m.", "p.m.", "Inc.", "Co.", "St.", "Ave.",
           "al.", "et al.", "Ph.D.", "a.k.a.", "cf.", "Calif.", "Ltd.", "Corp.", "Jr.", "est.",
           "A.", "b.", "x.", "I.", "Z.", "pty. ltd", "Co. Ltd", "op.", "art.", "Mt.", "Gen."]
CONTRACTIONS = ["don't", "can't", "won't", "isn't", "it's", "they're", "I'm", "we've", "you'll",
                "he'd", "o'clock", "rock'n'roll", "dogs'", "dog's", "'s", "n't", "ain't",
                "y'all", "Y'know", "'tis", "'twas", "cannot", "gonna", "wanna", "gotta", "gimme",
                "lemme", "don’t", "it’s", "‘quoted’", "l'eau", "d'Arc", "O'Brien", "'em",
                "'cause", "c'mon", "ma'am", "shouldn't've", "'90", "don`t"]
COMPOUNDS = ["high-pitched", "on/off", "hi-fi/lo-fi", "x-ray", "mid-2000s", "e-mail",
             "a/b-c", "speech-like", "well-known", "non-U.S.", "U.S.-U.K.", "pro-", "anti-",
             "-LRB-", "C.D.s", "S&P-500", "AT&T", "at&t", "R&B", "Q&A", "C++", "c#", "F#",
             "3-D", "A-B-C", "up-to-date", "co-ed", "well--known", "bird_song", "snake_case_x"]
URLS = ["www.example.com", "http://a.org/x", "https://x.y.com/a?b=c.", "foo@bar.com",
        "<foo@bar.com>", "clip.wav", "clip_01.mp3", "file.txt", "1.mp3", "example.org/path",
        "audio.Wav", "@user", "#tag", "<b>", "</i>", "<br/>", "&amp;", "&lt;", "&quot;",
        "&mdash;", "&eacute;t&eacute;", "a.b.c", "x.y", "v2.0", "node.js"]
SMILEYS = [":)", ":(", ";-)", ":D", ":-P", "=]", ":'(", "^_^", "(^_^)", "<3", ":p"]
PUNCT = list(".,;:?!'\"`()[]{}-/&%$#@*+=<>~^|\\_") + ["--", "...", "…", "–", "—", "“", "”", "‘",
                                                     "’", "«", "»", "°", "×", "€", "£", "¢", "¥",
                                                     "§", "•", "·", "¿", "¡", "\u00a0", "''", "``"]
RUN_CHARS = list(".,;:?!'\")]}-") + ["…", "”", "’", "--"]
SPACES = [" "] * 14 + ["", "", "  ", "\t", "\u00a0", "\u2009", "\u200b", "\u3000", "\u00ad"]
OTHER = ["😀", "🎵", "\x7f", "\x00", "\ufeff", "\u200e", "\x01", "\u00b7", "\uffff"]

TEMPLATES = [
    "Audio 1 has more {n}{r} while Audio 2 {v}{p}",
    "Audio 1 is {adj}{r} Audio 2 is {adj2}{p}",
    "The first audio ({x}) is {adj}{p} The second audio {v}{p}",
    "{Cap} audio has a {adj} {n}{r} the other has {q}{n2}{q2}{p}",
    "Audio 1: {n}{r} Audio 2: {n2}{p}",
    "Both audios contain {n}{r} but Audio 1 is {adj}{p}",
    "Audio 1 {v} {ab} {n}{p} Audio 2 {v2}{p}",
    "\"{n}\"{r} vs. \"{n2}\"{p}",
    "In Audio 1, the {n} is {adj} ({num} dB){r} in Audio 2 it's {adj2}{p}",
    "Audio 1 sounds like {ab} a {n}{p}{p2}",
    "{Cap} {n} -- {adj}{r} {n2} - {adj2}{p}",
    "The {n} in audio {letter}{p}",
    "Audio {letter}. {Cap} {n} {v}{p}",
    "{n}/{n2} mix at {num}{unit}{p}",
    "It's {adj}; {n} isn't{p}",
]
ADJ = ["louder", "quieter", "clearer", "noisier", "more static", "less muffled", "high-pitched",
       "low-pitched", "faint", "distant", "sharper", "softer", "busier", "calm"]
VERBS = ["is clearer", "has less static", "contains speech", "fades out", "is louder", "hums",
         "has a dog barking", "is quiet", "has more reverb", "ends abruptly"]
RUNS = [".", ",", ".,", "..", "...", "....", ".;", ".:", "?.", "!.", "?!", ".)", ".'", ".\"",
        ",.", ";", ":", "!", "?", " .", " ,", "--", ". .", ". . .", "…", "!!", "?!?", "),", ".”",
        ".’", "’.", "”.", ".-", ".--", "-.", "'.", "\".", ".\")", ".)\"", ",,", ";.", ":.", ".!"]
UNITS = ["Hz", " Hz", "kHz", " dB", "dB", "%", " %", "s", " sec.", " ms", "x"]


def tokenize(sentences):
    """One pycocoevalcap PTBTokenizer call over `sentences` (one caption per key, in order)."""
    out = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    return [out[i][0] for i in range(len(sentences))]


def piece(rng):
    """One random piece of text: a word, number, abbreviation, punctuation, ..."""
    kind = rng.choices(
        ["word", "cap", "uni", "num", "abbr", "contr", "comp", "url", "smiley", "punct", "run",
         "other"],
        weights=[22, 8, 3, 10, 8, 6, 6, 4, 2, 18, 10, 1])[0]
    if kind == "word":
        return rng.choice(WORDS)
    if kind == "cap":
        return rng.choice(CAPWORDS)
    if kind == "uni":
        return rng.choice(UNICODE_WORDS)
    if kind == "num":
        return rng.choice(NUMBERS)
    if kind == "abbr":
        return rng.choice(ABBREVS)
    if kind == "contr":
        return rng.choice(CONTRACTIONS)
    if kind == "comp":
        return rng.choice(COMPOUNDS)
    if kind == "url":
        return rng.choice(URLS)
    if kind == "smiley":
        return rng.choice(SMILEYS)
    if kind == "punct":
        return rng.choice(PUNCT)
    if kind == "run":
        return "".join(rng.choice(RUN_CHARS) for _ in range(rng.randint(1, 4)))
    return rng.choice(OTHER)


def soup(rng):
    """Random pieces joined by mostly spaces, sometimes nothing (punctuation sticks to words)."""
    parts = [piece(rng) for _ in range(rng.randint(1, 9))]
    out = parts[0]
    for p in parts[1:]:
        out += rng.choice(SPACES) + p
    return out


def word_run(rng):
    """A word, a punctuation run, then (mostly) a space and another word or a number."""
    w = rng.choice(WORDS + CAPWORDS + ABBREVS[:10] + NUMBERS[:12] + COMPOUNDS[:8])
    run = rng.choice(RUNS) if rng.random() < 0.7 else "".join(
        rng.choice(RUN_CHARS) for _ in range(rng.randint(1, 3)))
    after = rng.choice(["", " ", " ", " ", "  "]) + rng.choice(
        WORDS + CAPWORDS + NUMBERS[:10] + ["", "(", "\"", "'", "2", "A", "I", "i.e."])
    before = rng.choice(["", "", "", "the ", "(", "\"", "'", "a ", "Audio 1 is "])
    return before + w + run + after


def template(rng):
    t = rng.choice(TEMPLATES)
    return t.format(
        n=rng.choice(["static", "noise", "speech", "music", "hum", "bass", "echo", "rain"]),
        n2=rng.choice(["static", "noise", "birdsong", "traffic", "wind", "voices", "beeps"]),
        r=rng.choice(RUNS + [",", ",", "."]),
        p=rng.choice([".", ".", ".", "", "!", "..", "...", ".)", ".'", ".\"", "?", ". ", " ."]),
        p2=rng.choice(["", "", " ", "\"", ")", "'"]),
        v=rng.choice(VERBS), v2=rng.choice(VERBS),
        adj=rng.choice(ADJ), adj2=rng.choice(ADJ),
        x=rng.choice(["a man speaking", "rain", "e.g. wind", "approx. 5 s", "~3 s", "i.e., noise"]),
        Cap=rng.choice(CAPWORDS), q=rng.choice(["", "\"", "'", "“", "‘", "`"]),
        q2=rng.choice(["", "\"", "'", "”", "’"]),
        ab=rng.choice(ABBREVS), num=rng.choice(NUMBERS[:24]), unit=rng.choice(UNITS),
        letter=rng.choice(["A", "B", "a", "b", "1", "2", "X"]))


def strings(rng, n):
    makers = [(soup, 40), (word_run, 35), (template, 25)]
    out = []
    while len(out) < n:
        make = rng.choices([m for m, _ in makers], weights=[w for _, w in makers])[0]
        s = make(rng)
        if rng.random() < 0.1:
            s = s.upper() if rng.random() < 0.5 else s.capitalize()
        out.append(s)
    return out


# Probe strings (issue 32), appended after the generated ones: rare Unicode next to the rules
# the jar applies differently from adiff's ordinary ones. Format (Cf) characters, soft hyphens,
# thin, ideographic and zero-width spaces, U+00A0, U+FEFF, bidi marks and non-ASCII punctuation
# next to words, numbers, hyphenated compounds, dotted words, file names, e-mail addresses,
# `@user` and `.com`/`.net`/`.org`/`.edu` domain names (which the jar glues to the word before a
# thin or zero-width space), at the start and end of a line; ASCII punctuation inside e-mail
# addresses and domain names; `S&P-500`; `www.` paths.
PROBE_CHARS = ["\u00ad", "\u200b", "\u200c", "\u200d", "\u200e", "\u2060", "\ufeff", "\u2009",
               "\u2002", "\u200a", "\u202f", "\u3000", "\u00a0", "\u2009\u2009", " \u2009"]
# Non-ASCII punctuation, letters and digits: only next to addresses and domain names.
PROBE_URL_CHARS = ["\u00bb", "\u2022", "\u2019", "\u00e9", "\u0663", "\u4e1c"]
PROBE_URL_TEMPLATES = [
    "x{c}www.example.com", "the{c}example.org/path", "({c}example.org", "q {c}example.org",
    "<{c}www.example.com", "X{c}example.com", "{c}a.com", "a.k.a.{c}example.org",
    "2020a.k.a.{c}example.org/pathman", "x{c}example.org.uk", "x{c}example.comdon`t",
    "x{c}foo@bar.com", "foo@bar.com{c}x", "foo@bar.com{c}", "foo@bar.com{c}:(", "x{c}@user",
    "12/25/2020{c}@user", "{c}x@y", "x@{c}y",
]
PROBE_TEMPLATES = PROBE_URL_TEMPLATES + [
    "{c}", "x{c}", "{c}x", "x{c}y", "3{c}5", "x{c}5", "5{c}x", "x.{c}y", "x{c}Example.com",
    "3-D{c}\u0663", "3-D{c}5", "b-x{c}\u00e9", "b-\u00e9{c}x", "-{c}0.1-0.5", "+{c}5",
    "xray{c}a.b.c", "b.{c}a.b.c", "x-ray{c}a.b.c", "x-ray{c}a.b", "x{c}ray.wav", "x{c}ray.com",
    "s&p{c}-500", "C{c}++", "e.g.{c}x", "etc.{c}not", "don{c}'t",
]
PROBE_ASCII = "!#$%&*+,-./:;<=>?@[\\]^_`{|}~"
PROBE_ASCII_TEMPLATES = ["x{c}foo@bar.com", "foo@bar.com{c}x", "x{c}example.org",
                         "\u2009q{c}q.com", "({c}\u2009q.com", "www.example.com{c}x"]
PROBE_EXTRA = [
    "s&p-500", "S&P-500", "s&p-5000", "s&p-500x", "S&P-500-x", "s&p-5", "s&p-x", "at&t-500",
    "S&p-500", "x\u2009example.COM", "x\u2009example.net", "x\u2009example.edu",
    "x\u2009example.gov", "x\u2009example.io", "x\u2009example.org/", "x\u2009example.org/p",
    "x\u2009example.org.", "x\u2009ex-ample.com", "x\u2009q1example.org", "x\u2009q..example.org",
    "www.ab.cd/ef", "WWW.ab.cd/ef/g.h", "www.ab/ef", "www.ab.cd/e", "www.ab.cd/ef.",
    "ab.cd/ef", "Example.org/path", "ex1.org/path", "a.org/x/y.html", "example.org/path.",
    "x@y.", "x@y.,", "x@y,.", "x@y>z", "<x@y", "<x@y>z", "x@.y", ".x@y", "\u00e9x@y", "x@@user",
    "foo@bar.com.", "foo@bar.com, x", "foo@bar.com!!",
    "xray\u00ada.b.z", "xray\u00ada.b.c.d", "xray\u00ada.b.cd", "xray\u00ada.b.c.", "xray\u00adA.B.C",
    "a\u00adb.c.c", "a\u00adb.c.e", "xray\u00ada.b.txt", "xray\u00ada.b.js", "b.\u00ada.b",
    "xray\u00ada.1.c", "1\u00ada.b.c",
    "\u00a0 3-D\u00ad\u0663\u00ad\u200e", "-\u00ad\u00ad5", "-\u00ad.5",
]

# Dotted file names with numeric parts (`x.1.c`, `3.5.c`, `ab.1.txt`) and what follows or breaks
# them; appended after the probes above, so earlier entries keep their places.
PROBE_FILE_NAMES = [
    "3.5.c", "1.c", "1.5.wav", "version 2.0.c", "file.1.c.", "main.1.c,", "a-b.1.c", "a_b.1.c",
    "~x.1.c", "x.1.c.d", "x.1.C", "X.1.WAV", "x.1.cpp", "x..c", "x.1.c's", "x.12.c", "x.1a.c",
    "x.a1.c", "x1.1.c", "x.1.c)", "(x.1.c", "x-1.2.c", "x.1.2", "ab.1.txt", "ab.1.html",
    "ab.1.mp4", "1a.c", "1a.wav", "12.ab.c", "x.1.c.wav", "co\u00aded.1.c", "xraya.1.c",
    "xray.1.c", "xray\u00ada.1.wav", "12\u00adab.c", "1\u00ada.c", "A.B.C.", "U.S.A. is",
    "the file x.1.c; then", "see a.1.c: here", "a.1.c! yes", "a.1.c? no", "the song 1.mp3.",
    "1.c;", "1.c:", "1.c)", "1.c's", "1.mp3;", "1.c!", "1.c?", "x 1.c; y", "1.wav)", "12.WAV:",
    "1.c-", "1.c/", "1.c]", "1.c\"", "x.1.c-", "x.1.c/", "x.1.c\"", "x.1.c]", "ab.1.txt;",
    "3.5.c;",
]


def probes():
    out = [t.format(c=c) for c in PROBE_CHARS for t in PROBE_TEMPLATES]
    out += [t.format(c=c) for c in PROBE_URL_CHARS for t in PROBE_URL_TEMPLATES]
    out += [t.format(c=c) for c in PROBE_ASCII for t in PROBE_ASCII_TEMPLATES]
    out += PROBE_EXTRA
    out += PROBE_FILE_NAMES
    seen = set()
    return [x for x in out if not (x in seen or seen.add(x))]


def score(preds, refs):
    """COCOEvalCap's way: refs in one tokenizer call, predictions in another, then the scorers."""
    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu": [float(b) for b in bleu], "rouge_l": float(rouge), "cider_d": float(cider)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "metrics"))
    ap.add_argument("--n", type=int, default=N_STRINGS)
    args = ap.parse_args()
    rng = random.Random(SEED)
    texts = strings(rng, args.n)
    texts += [p for p in probes() if p not in texts]
    for t in texts:
        assert not any(c in t for c in "\n\r\x0b\x0c\x85\u2028\u2029"), repr(t)
    batch = tokenize(texts)
    alone = tokenize([x for t in texts for x in (t, "~")])[0::2]
    lines = [[t, b] if a == b else [t, b, a] for t, b, a in zip(texts, batch, alone)]
    print(f"{len(texts)} strings, {sum(len(x) == 3 for x in lines)} depend on the next line")

    # Scored corpus: template-style predictions against two punctuation-heavy references, kept
    # only where each caption's tokens do not depend on its neighbour in the call.
    preds, refs = [], []
    while len(preds) < N_SCORE_ITEMS:
        p = template(rng) if rng.random() < 0.7 else word_run(rng)
        rs = [template(rng), template(rng) if rng.random() < 0.5 else soup(rng)]
        preds.append(p)
        refs.append(rs)
    flat = preds + [r for rs in refs for r in rs]
    inline = tokenize(flat)
    alone_flat = tokenize([x for t in flat for x in (t, "~")])[0::2]
    keep = [i for i in range(len(preds))
            if all(inline[j] == alone_flat[j]
                   for j in [i] + [len(preds) + 2 * i, len(preds) + 2 * i + 1])]
    preds = [preds[i] for i in keep]
    refs = [refs[i] for i in keep]
    s = score(preds, refs)
    print(f"scores on {len(preds)} items:", s)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ptb_punct.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({
            "generator": "scripts/fixtures_ptb.py (pycocoevalcap 1.2 PTBTokenizer, "
                         "stanford-corenlp-3.4.1)",
            "note": "lines: [input, tokens when all inputs go through one call in this order "
                    "(, tokens when followed by a neutral line, where different)]",
            "lines": lines,
            "scores": {"preds": preds, "refs": refs, **s},
        }, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Generated METEOR 1.5 fixtures: the jar's per-item statistics on texts the CSVs lack.

Builds ~2,500 seeded items (hypothesis + 1-5 references) from templates and word lists, in
categories that exercise what scripts/fixtures_meteor.py's real answers rarely reach: long
multi-sentence detailed answers, several references, numbers ("2.5", "10-second", "3rd",
"1,000"), hyphenated words, punctuation runs and abbreviations, words matched only by stem, by a
WordNet synonym or by the paraphrase table (entries picked from the jar's own data, so those
modules really fire, including rare words), function words, repeated words, empty and one-word
hypotheses, mixed case and accented letters. The texts go through pycocoevalcap's PTBTokenizer
first (as COCOEvalCap does), then pycocoevalcap's Meteor (java -jar meteor-1.5.jar - - -stdio -l
en -norm) scores every item: its SCORE statistics line, its item score and the corpus score are
kept. Writes tests/fixtures/metrics/meteor_generated.json (compact: every distinct tokenized text
once, items refer to them by index). Usage (Java 17 on PATH; pycocoevalcap 1.2 with
data/paraphrase-en.gz beside its meteor-1.5.jar):
    /work/venv/bin/python scripts/fixtures_meteor_generated.py [--out DIR] [--per-category N]
        [--seed S]
"""
import argparse
import gzip
import json
import random
import re
import zipfile
from pathlib import Path

import pycocoevalcap.meteor.meteor as meteor_mod
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

import fixtures_meteor

SEED = 32
REPO = Path(__file__).resolve().parent.parent
JAR_DIR = Path(meteor_mod.__file__).resolve().parent

NOUNS = """dog cat bird car engine train rain water wind thunder music piano guitar drum man woman
child people crowd door bell phone clock siren truck motorcycle airplane helicopter baby horse
cow sheep frog insect bee river stream ocean wave fire machine drill hammer saw vacuum keyboard
voice speech applause laughter whistle horn alarm street kitchen forest room building storm
chicken rooster duck goose owl crow pigeon fan motor boat ship radio television computer printer
bicycle bus cart hall church market park beach city road""".split()
VERBS = """bark chirp sing talk speak shout laugh cry ring honk roar hum buzz crackle splash drip
flow blow knock slam walk run play whistle beep rumble squeak tap rustle scream yell chatter
clap growl howl purr moo quack tweet crash bang thump rattle clatter hiss whine creak""".split()
ADJS = """loud quiet soft faint distant nearby sharp deep high low constant intermittent rhythmic
sudden brief continuous muffled clear noisy calm heavy light gentle harsh steady small large
busy empty strong weak fast slow old young bright dull""".split()
ADVS = """loudly quietly softly rapidly slowly repeatedly briefly constantly gently suddenly
steadily occasionally clearly faintly""".split()
PLACES = """in the background|in the distance|nearby|outside|indoors|in a large room|on a busy
street|in the forest|at the beach|near a river|in a kitchen|in a park|on a train|in a church""".split("|")
CONNECT = ["while", "as", "and", "before", "after", "then", "whereas", "but"]
NUMBERS = ["3", "10", "2.5", "0.5", "1,000", "12,500", "10-second", "5-minute", "3rd", "1st",
           "2nd", "21st", "100", "1990s", "50-50", "3:45", "5%", "$20", "#1", "v2.0", "7.25",
           "-3", "+4", "2x", "24/7", "1/2", "30-40", "1.5-second", "99.9%", "4th", "three",
           "twenty", "No. 5", "2,5", "10,000,000", "3.14159", "007", "1e3", "10th-century"]
HYPHENATED = ["high-pitched", "low-pitched", "well-known", "x-ray", "t-shirt", "e-mail",
              "re-enter", "self-driving", "state-of-the-art", "non-stop", "mid-range",
              "pre-recorded", "two-tone", "hand-held", "ear-splitting", "fast-paced",
              "step-by-step", "long-term", "close-up", "back-and-forth", "co-operate",
              "sing-song", "one-on-one", "follow-up", "up-to-date", "half-hearted",
              "on-and-off", "bird-like", "machine-like", "metal-on-metal", "walkie-talkie",
              "a-", "-like", "--", "- -", "high -pitched", "low- pitched", "dog-", "-bark"]
PUNCT = ["!!!", "?!", "...", "....", "--", "---", ";;", "((", "))", "**", "~~", "&&", "##",
         "@@", "//", "\\\\", "<>", "=>", "++", "..!", ".,", "'", "''", "``", "‘", "’", "“", "”",
         "…", "–", "—", "%", "$", "&", "*", "/", "|", "||", "+", "=", "@", "#", "^", "_", "{", "}",
         "[", "]", "<", ">", "~", "!?", ",,", ":-)", ":", ";", ". .", "? ?", "'s", "s'", "|||",
         "a|||b", "||||", "| | |"]
ABBREV = ["Mr. Smith", "Dr. Who", "the U.S. army", "e.g. rain", "i.e. noise", "etc.", "vs.",
          "No. 5", "St. Paul", "a.m.", "p.m.", "Inc.", "Jr.", "don't", "can't", "won't",
          "it's", "dog's", "dogs'", "o'clock", "rock'n'roll", "'90s", "y'all", "ma'am",
          "I'm", "they're", "we've", "she'd", "you'll", "isn't", "ain't", "'tis", "goin'"]
CASED = ["Über", "ÉCOLE", "café", "naïve", "résumé", "Zoë", "jalapeño", "São Paulo", "façade",
         "Ångström", "Œuvre", "Ärger", "ÇA", "Straße", "McDonald", "iPhone", "YouTube",
         "NASA", "BBC", "DJ", "TV", "OK", "USA", "eBay", "PhD", "MacBook", "LOUD", "Dog", "BARKS"]
UNICODE = ["ΟΔΟΣ", "οδός", "Москва", "ёлка", "日本", "🐶", "🎵", "naïve café", "x\u00a0y",
           "a\u2009b", "c\u3000d", "ﬁne", "Ｆｕｌｌ", "①", "½", "²", "İstanbul", "ǅ", "ß", "ẞ",
           "Ωmega", "ΣΑΣ", "\u200bzero", "e\u0301", "ø", "Ł", "ı", "ꙮ", "ᴀ", "ℌ", "№5", "™", "°C",
           "µs", "×", "÷", "€5", "£3", "¥", "§2", "¶", "•", "·", "¿qué?", "¡sí!", "«x»", "‹y›"]
EMPTYISH = ["", ".", "!!!", "...", "-", "a", "the", "dog", "barking", "noise", "Loud", "it",
            ",", "?", "yes", "no", "silence", "the the", "a a a", "'", "(", ")", ":", "1", "--"]


def load_synonyms():
    """Word -> single-word synonyms (sharing a synset) and the synsets file's words, from the
    jar's own synonym/english.synsets."""
    with zipfile.ZipFile(JAR_DIR / "meteor-1.5.jar") as z:
        lines = z.read("synonym/english.synsets").decode().split("\n")
    word_sets, by_set = {}, {}
    for w, ids in zip(lines[0::2], lines[1::2]):
        if not re.fullmatch(r"[a-z]+", w):
            continue
        s = ids.split()
        word_sets[w] = s
        for i in s:
            by_set.setdefault(i, []).append(w)
    syn = {w: sorted({x for i in s for x in by_set[i]} - {w}) for w, s in word_sets.items()}
    return {w: v for w, v in syn.items() if v}, by_set


def load_exceptions():
    """Irregular forms of the jar's synonym/english.exceptions (e.g. "geese", "ran")."""
    with zipfile.ZipFile(JAR_DIR / "meteor-1.5.jar") as z:
        lines = z.read("synonym/english.exceptions").decode().split("\n")
    return sorted({f for forms in lines[1::2] for f in forms.split() if re.fullmatch(r"[a-z]+", f)})


def load_paraphrases(rng, phrases, n_rare=600, per_phrase=6):
    """Entries of data/paraphrase-en.gz (lowercase words only, <= 3 words each side): up to
    `per_phrase` for each phrase of `phrases` (the templates' words and bigrams), and `n_rare`
    sampled from the whole table (reservoir, seeded)."""
    ok = re.compile(r"[a-z]+( [a-z]+){0,2}")
    domain, rare, seen = {}, [], 0
    with gzip.open(JAR_DIR / "data" / "paraphrase-en.gz", "rt", encoding="utf-8") as f:
        while True:
            p = f.readline()
            if not p:
                break
            a = f.readline().strip()
            b = f.readline().strip()
            if a == b or not ok.fullmatch(a) or not ok.fullmatch(b):
                continue
            if a in phrases:
                lst = domain.setdefault(a, [])
                if len(lst) < per_phrase:
                    lst.append(b)
            seen += 1
            if len(rare) < n_rare:
                rare.append((a, b))
            else:
                k = rng.randrange(seen)
                if k < n_rare:
                    rare[k] = (a, b)
    return domain, rare


def inflect(w, rng):
    """A form of `w` with another ending (the stem module's ground)."""
    forms = [w + "s", w + "ing", w + "ed", w + "er", w + "ly", w + "ness", w + "es"]
    if w.endswith("e"):
        forms += [w[:-1] + "ing", w + "d", w + "s"]
    if w.endswith("y"):
        forms += [w[:-1] + "ies", w[:-1] + "ied", w[:-1] + "ily"]
    if w.endswith("s"):
        forms += [w[:-1], w + "es"]
    if w.endswith("ing"):
        forms += [w[:-3], w[:-3] + "s", w[:-3] + "ed"]
    if w.endswith("ly"):
        forms += [w[:-2]]
    return rng.choice(forms)


class Gen:
    def __init__(self, rng, syn, by_set, para, rare_para, exceptions):
        self.rng, self.syn, self.by_set, self.para, self.rare_para = rng, syn, by_set, para, rare_para
        self.exceptions = exceptions
        multi = [ws for ws in by_set.values() if len(ws) >= 2]
        self.rare_syn = [rng.sample(ws, 2) for ws in rng.sample(multi, 800)]

    def clause(self):
        r = self.rng
        n, v = r.choice(NOUNS), r.choice(VERBS)
        parts = []
        if r.random() < 0.7:
            parts.append(r.choice(["a", "the", "some", "one", "another", "this"]))
        if r.random() < 0.6:
            parts.append(r.choice(ADJS))
        parts.append(n if r.random() < 0.7 else n + "s")
        verb = r.choice([v + "s", v + "ing", "is " + v + "ing", v + "ed", "can be heard"])
        parts.append(verb)
        if r.random() < 0.4:
            parts.append(r.choice(ADVS))
        if r.random() < 0.5:
            parts.append(r.choice(PLACES))
        return " ".join(parts)

    def sentence(self):
        r = self.rng
        s = self.clause()
        for _ in range(r.choice([0, 0, 1, 1, 2])):
            s += " " + r.choice(CONNECT) + " " + self.clause()
        return s

    def detailed(self):
        r = self.rng
        intro = r.choice(["The first audio", "In the first clip,", "Audio 1", "The second audio",
                          "Compared to the first one, the second recording", "Both recordings"])
        sents = [f"{intro} {self.sentence()}"]
        for _ in range(r.randint(2, 6)):
            sents.append(self.sentence())
        return ". ".join(s[0].upper() + s[1:] for s in sents) + "."

    # Perturbations of a word list.
    def perturb(self, text, rate=0.25, subst=None):
        r = self.rng
        words = text.split()
        out = []
        for w in words:
            x = r.random()
            if x < rate * 0.3:
                continue  # dropped
            if x < rate * 0.5 and out:
                out.insert(len(out) - 1, w)  # swapped with the previous word
                continue
            if x < rate and subst:
                w = subst(w)
            out.append(w)
            if r.random() < rate * 0.15:
                out.append(r.choice(NOUNS + ADJS + ["the", "a", "of", "and"]))
        return " ".join(out) if out else r.choice(NOUNS)

    def syn_of(self, w):
        s = self.syn.get(w.lower())
        return self.rng.choice(s) if s else w

    def stem_of(self, w):
        return inflect(w.lower(), self.rng) if w.isalpha() and len(w) > 2 else w

    def para_sub(self, text):
        """Replaces phrases that have table entries with one of their paraphrases."""
        r = self.rng
        words = text.split()
        out, i = [], 0
        while i < len(words):
            two = " ".join(words[i:i + 2]).lower()
            if i + 1 < len(words) and two in self.para and r.random() < 0.6:
                out.append(r.choice(self.para[two]))
                i += 2
                continue
            one = words[i].lower()
            if one in self.para and r.random() < 0.4:
                out.append(r.choice(self.para[one]))
            else:
                out.append(words[i])
            i += 1
        return " ".join(out)

    def refs(self, base, n, subst=None, rate=0.3):
        return [self.perturb(base, rate, subst) for _ in range(n)]

    def item(self, cat):
        r = self.rng
        nref = r.choice([1, 1, 2, 3, 4, 5])
        base = self.sentence()
        if cat == "long_detailed":
            base = self.detailed()
            hyp = self.perturb(base, 0.3, self.syn_of if r.random() < 0.5 else self.stem_of)
            if r.random() < 0.5:
                hyp = self.para_sub(hyp)
            return hyp, [self.perturb(base, 0.25) if r.random() < 0.5 else self.detailed()
                         for _ in range(r.randint(1, 3))]
        if cat == "multi_ref":
            hyp = self.perturb(base, 0.3)
            return hyp, self.refs(base, r.randint(2, 5), self.syn_of, 0.35)
        if cat == "numbers":
            ins = lambda s: self.insert(s, [r.choice(NUMBERS) for _ in range(r.randint(1, 3))])
            b = ins(base)
            return ins(self.perturb(b, 0.2)), [self.perturb(b, 0.2) for _ in range(nref)]
        if cat == "hyphenation":
            ins = lambda s: self.insert(s, [r.choice(HYPHENATED) for _ in range(r.randint(1, 3))])
            b = ins(base)
            h = self.perturb(b, 0.2)
            if r.random() < 0.5:  # the same word with and without its hyphen
                h = h.replace("-", r.choice([" ", "", "-"]))
            return h, [self.perturb(b, 0.2) for _ in range(nref)]
        if cat == "punctuation":
            pool = PUNCT + ABBREV
            ins = lambda s: self.insert(s, [r.choice(pool) for _ in range(r.randint(1, 4))])
            b = ins(base)
            return ins(self.perturb(b, 0.2)), [ins(self.perturb(b, 0.2)) for _ in range(nref)]
        if cat == "stem":
            return self.perturb(base, 0.6, self.stem_of), self.refs(base, nref, None, 0.15)
        if cat == "synonym":
            if r.random() < 0.4:  # rare words only WordNet relates
                a, b = r.choice(self.rare_syn)
                t = r.choice(["a {} can be heard", "the {} and a dog", "someone mentions the {}",
                              "{} {} {}", "the sound of a {} in the distance"])
                return (t.format(a, a, a), [t.format(b, b, b)] +
                        self.refs(t.format(b, a, b), nref - 1))
            return self.perturb(base, 0.7, self.syn_of), self.refs(base, nref, None, 0.15)
        if cat == "paraphrase":
            if r.random() < 0.4:  # rare entries of the whole table
                a, b = r.choice(self.rare_para)
                t = r.choice(["the {} is heard", "{}", "a dog barks and {} while it rains",
                              "we hear {} then {}", "{} {}"])
                return t.format(a, a), [t.format(b, b)] + self.refs(t.format(b, a), nref - 1)
            h = self.para_sub(self.perturb(base, 0.1))
            return h, [self.para_sub(x) if r.random() < 0.3 else x
                       for x in self.refs(base, nref, None, 0.15)]
        if cat == "function_words":
            fw = ["the", "of", "and", "to", "a", "in", "that", "is", "it", "for", "on", "with",
                  "as", "was", "by", "at", "from", "be", "this", "not", "or", "which", "there",
                  "'s", "could", "some", "what", "so", "no", "time", "over", "into"]
            mk = lambda: " ".join(r.choice(fw) for _ in range(r.randint(1, 12)))
            if r.random() < 0.5:
                return mk(), [mk() for _ in range(nref)]
            return (self.insert(self.perturb(base, 0.3), [mk()]),
                    [self.insert(base, [mk()]) for _ in range(nref)])
        if cat == "repeated":
            w = base.split()
            rep = lambda ws: " ".join(x for x in ws for _ in range(r.choice([1, 1, 2, 3])))
            if r.random() < 0.3:
                x = r.choice(w)
                return " ".join([x] * r.randint(2, 8)), [" ".join([x] * r.randint(1, 5)), base]
            return rep(w), [rep(w) if r.random() < 0.5 else base for _ in range(nref)]
        if cat == "emptyish":
            h = r.choice(EMPTYISH + [r.choice(NOUNS), r.choice(VERBS) + "ing"])
            return h, ([r.choice(EMPTYISH)] if r.random() < 0.2 else []) + self.refs(base, nref, None, 0.1)
        if cat == "mixed_case":
            def case(s):
                out = []
                for w in s.split():
                    x = r.random()
                    out.append(w.upper() if x < 0.2 else w.capitalize() if x < 0.4 else w)
                return " ".join(out)
            ins = lambda s: self.insert(s, [r.choice(CASED) for _ in range(r.randint(1, 3))])
            b = ins(base)
            return case(self.perturb(b, 0.2)), [case(self.perturb(b, 0.2)) for _ in range(nref)]
        if cat == "identical":
            b = self.detailed() if r.random() < 0.3 else base
            h = b if r.random() < 0.6 else self.perturb(b, 0.05)
            return h, [b if r.random() < 0.5 else self.perturb(b, 0.1) for _ in range(nref)]
        if cat == "long_ambiguous":
            # Long texts of few distinct words: many candidate matches per word, so the beam
            # search (40 paths) has to prune among near-ties.
            pool = r.sample(NOUNS + VERBS + ADJS, 4) + ["the", "a", "and", "of"]
            pool += [self.syn_of(pool[0]), self.stem_of(pool[1])]
            if pool[2] in self.para:
                pool.append(r.choice(self.para[pool[2]]))
            mk = lambda n: " ".join(r.choice(pool) for _ in range(n))
            return mk(r.randint(20, 70)), [mk(r.randint(20, 70)) for _ in range(nref)]
        if cat == "inflected_synonym":
            # Synonyms in other forms (plural, -ing, -ed, irregular forms of the exception list):
            # what WordNet's base-form lookup has to find.
            def sub(w):
                x = r.random()
                if x < 0.3 and self.exceptions:
                    return r.choice(self.exceptions)
                return self.stem_of(self.syn_of(w)) if x < 0.8 else self.syn_of(self.stem_of(w))
            b = base
            if r.random() < 0.5:
                b = self.insert(b, [r.choice(self.exceptions) for _ in range(2)])
            return self.perturb(b, 0.7, sub), self.refs(b, nref, None, 0.15)
        if cat == "tied_refs":
            # References that are shuffles or copies of each other: equal scores, where the
            # first best reference must win.
            w = base.split()
            refs = []
            for _ in range(max(nref, 2)):
                x = w[:]
                if r.random() < 0.7:
                    r.shuffle(x)
                refs.append(" ".join(x))
            return self.perturb(base, 0.4), refs
        if cat == "unicode":
            ins = lambda s: self.insert(s, [r.choice(UNICODE) for _ in range(r.randint(1, 3))])
            b = ins(base)
            return ins(self.perturb(b, 0.2)), [self.perturb(b, 0.2) for _ in range(nref)]
        if cat == "mixed":
            b = self.insert(base, [r.choice(NUMBERS + HYPHENATED + PUNCT + ABBREV + CASED + UNICODE)
                                   for _ in range(r.randint(1, 4))])
            subst = r.choice([self.syn_of, self.stem_of])
            h = self.para_sub(self.perturb(b, 0.4, subst))
            return h, [self.para_sub(x) for x in self.refs(b, nref, subst, 0.3)]
        raise ValueError(cat)

    def insert(self, s, extra):
        w = s.split()
        for e in extra:
            w.insert(self.rng.randint(0, len(w)), e)
        return " ".join(w)


CATEGORIES = ["long_detailed", "multi_ref", "numbers", "hyphenation", "punctuation", "stem",
              "synonym", "paraphrase", "function_words", "repeated", "emptyish", "mixed_case",
              "mixed", "identical", "long_ambiguous", "inflected_synonym", "tied_refs", "unicode"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "metrics"))
    ap.add_argument("--per-category", type=int, default=150)
    ap.add_argument("--seed", type=int, default=SEED,
                    help="another seed draws other items (for wider checks; the fixture uses 32)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    syn, by_set = load_synonyms()
    vocab = set(NOUNS + VERBS + ADJS + ADVS + [w for p in PLACES for w in p.split()] + CONNECT)
    vocab |= {v + e for v in VERBS for e in ("s", "ing", "ed")} | {n + "s" for n in NOUNS}
    phrases = vocab | {f"{a} {b}" for p in PLACES for a, b in zip(p.split(), p.split()[1:])}
    phrases |= {f"{a} {n}" for a in ADJS for n in NOUNS} | {f"{n} {v}s" for n in NOUNS for v in VERBS}
    para, rare_para = load_paraphrases(rng, phrases)
    print(f"{len(syn)} synonym words, {len(para)} template phrases with paraphrases, "
          f"{len(rare_para)} sampled entries")
    gen = Gen(rng, syn, by_set, para, rare_para, load_exceptions())
    items = []
    for cat in CATEGORIES:
        n = args.per_category * (2 if cat == "mixed" else 1)
        for _ in range(n):
            h, rs = gen.item(cat)
            items.append((cat, h, rs[:5]))
    # Every distinct raw text once through the PTB tokenizer.
    raw = sorted({t for _, h, rs in items for t in [h, *rs]})
    tok = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(raw)})
    tok = {s: tok[i][0] for i, s in enumerate(raw)}
    texts, index = [], {}

    def idx(t):
        if t not in index:
            index[t] = len(texts)
            texts.append(t)
        return index[t]

    hyps = [tok[h] for _, h, _ in items]
    refs = [[tok[r] for r in rs] for _, _, rs in items]
    corpus, scores, stats = fixtures_meteor.run(Meteor(), hyps, refs)
    print(f"{len(items)} items, corpus {corpus}")
    out = {
        "generator": f"scripts/fixtures_meteor_generated.py (seed {args.seed}, {args.per_category} "
                     "per category; pycocoevalcap 1.2 PTBTokenizer then meteor-1.5.jar -l en -norm, "
                     "Java 17)",
        "note": "texts: the PTB-tokenized texts given to the jar, each once; items: [category, "
                "hypothesis text index, [reference text indices]]; stats: the jar's SCORE line "
                "per item; scores: its item scores; corpus: its final line",
        "categories": CATEGORIES,
        "texts": texts,
        "items": [[CATEGORIES.index(c), idx(h), [idx(r) for r in rs]]
                  for (c, _, _), h, rs in zip(items, hyps, refs)],
        "stats": stats,
        "scores": scores,
        "corpus": corpus,
    }
    path = Path(args.out) / "meteor_generated.json"
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

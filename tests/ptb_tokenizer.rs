//! adiff's coco-caption tokenizer against Stanford PTBTokenizer (CoreNLP 3.4.1, as pycocoevalcap
//! 1.2 runs it) on 4,000 generated punctuation-heavy strings and 1,076 probe strings (rare Unicode
//! next to words, numbers, compounds, file names, e-mail addresses and domain names), and
//! BLEU/ROUGE-L/CIDEr-D on a corpus of such captions against pycocoevalcap. Fixture:
//! `scripts/fixtures_ptb.py`.
//!
//! Exact equality for tokens on every string; [`KNOWN_DIFFERENCES`] (empty now) would list any
//! string allowed to differ, exactly as recorded; scores within 1e-9.

use std::path::PathBuf;

use adiff::metrics::tokenize::{coco_tokenize, coco_tokenize_lines};
use adiff::metrics::{score_corpus, score_tokenized, CorpusScores, MetricsConfig};
use serde_json::Value;

const SCORE_TOL: f64 = 1e-9;

/// Fixture strings the jar tokenizes by rules not reimplemented: `(input, the jar's tokens in
/// the one-call run, ours)`. Each is checked to differ exactly so; every other string must match.
/// All involve characters real captions do not hold; none is in the scored corpus.
#[rustfmt::skip]
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[];

fn fixture() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics/ptb_punct.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `(input, tokens in the one-call run, tokens followed by a neutral line)`.
fn lines(doc: &Value) -> Vec<(String, String, String)> {
    doc["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            let s = |k: usize| l[k].as_str().expect("string").to_string();
            let alone = if l.as_array().expect("line").len() > 2 {
                s(2)
            } else {
                s(1)
            };
            (s(0), s(1), alone)
        })
        .collect()
}

fn known(input: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    KNOWN_DIFFERENCES.iter().find(|k| k.0 == input)
}

/// Asserts `ours[i] == want[i]` for every i not in [`KNOWN_DIFFERENCES`] (naming the first
/// failing input and the count), and that each known difference is still exactly as recorded.
fn assert_all_equal(what: &str, inputs: &[&str], ours: &[String], want: &[&str]) {
    assert_eq!(ours.len(), want.len(), "{what}: line count");
    let mut listed = 0;
    for i in 0..want.len() {
        if let Some(&(_, java, mine)) = known(inputs[i]) {
            listed += 1;
            assert_eq!(want[i], java, "{what}: the jar's tokens of {:?}", inputs[i]);
            assert_eq!(
                ours[i], mine,
                "{what}: {:?} changed; if it now matches, drop it from KNOWN_DIFFERENCES",
                inputs[i]
            );
        }
    }
    assert_eq!(
        listed,
        KNOWN_DIFFERENCES.len(),
        "{what}: every known difference is in the fixture"
    );
    let bad: Vec<usize> = (0..want.len())
        .filter(|&i| ours[i] != want[i] && known(inputs[i]).is_none())
        .collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} strings differ; first: {:?}\n  ours {:?}\n  java {:?}",
            bad.len(),
            want.len(),
            inputs[i],
            ours[i],
            want[i]
        );
    }
    eprintln!(
        "{what}: {} strings, all equal but the {} known differences",
        want.len(),
        KNOWN_DIFFERENCES.len()
    );
}

/// All strings through one `coco_tokenize_lines` call, as pycocoevalcap's one Java run saw them
/// (a string's last token may depend on the next line).
#[test]
fn every_string_matches_java_in_one_call() {
    let doc = fixture();
    let l = lines(&doc);
    assert_eq!(
        l.len(),
        5076,
        "the fixture holds 4,000 generated and 1,076 probe strings"
    );
    // Some strings do depend on the next line (else the batch path is not exercised).
    assert!(l.iter().any(|(_, b, a)| b != a));
    let inputs: Vec<&str> = l.iter().map(|x| x.0.as_str()).collect();
    let want: Vec<&str> = l.iter().map(|x| x.1.as_str()).collect();
    assert_all_equal("one call", &inputs, &coco_tokenize_lines(&inputs), &want);
}

/// Each string on its own (`coco_tokenize`: the string, then a line break), against the Java
/// run where every string was followed by a neutral line.
#[test]
fn every_string_matches_java_alone() {
    let doc = fixture();
    let l = lines(&doc);
    let inputs: Vec<&str> = l.iter().map(|x| x.0.as_str()).collect();
    let want: Vec<&str> = l.iter().map(|x| x.2.as_str()).collect();
    let ours: Vec<String> = inputs.iter().map(|s| coco_tokenize(s)).collect();
    assert_all_equal("alone", &inputs, &ours, &want);
}

fn assert_scores(what: &str, s: &CorpusScores, want: &Value) {
    let close = |name: &str, ours: f64, theirs: f64| {
        let d = (ours - theirs).abs();
        eprintln!("{what:10} {name:8} ours {ours:.15} python {theirs:.15} |diff| {d:.1e}");
        assert!(
            d <= SCORE_TOL,
            "{what} {name}: ours {ours} vs python {theirs}"
        );
    };
    let bleu = want["bleu"].as_array().expect("bleu");
    assert_eq!(s.bleu.len(), bleu.len());
    for (k, (o, t)) in s.bleu.iter().zip(bleu).enumerate() {
        close(&format!("BLEU-{}", k + 1), *o, t.as_f64().expect("number"));
    }
    close(
        "ROUGE-L",
        s.rouge_l,
        want["rouge_l"].as_f64().expect("rouge_l"),
    );
    close(
        "CIDEr-D",
        s.cider_d,
        want["cider_d"].as_f64().expect("cider_d"),
    );
}

/// Corpus BLEU-1..4, ROUGE-L and CIDEr-D of punctuation-heavy captions equal pycocoevalcap's
/// (COCOEvalCap: references in one tokenizer call, predictions in another), both from raw text
/// one caption at a time (`score_corpus`) and from `coco_tokenize_lines` in COCOEvalCap's order.
#[test]
fn scores_match_pycocoevalcap_on_punctuation_heavy_captions() {
    let doc = fixture();
    let sc = &doc["scores"];
    let preds: Vec<&str> = sc["preds"]
        .as_array()
        .expect("preds")
        .iter()
        .map(|p| p.as_str().expect("pred"))
        .collect();
    let refs: Vec<Vec<&str>> = sc["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|rs| {
            rs.as_array()
                .expect("ref list")
                .iter()
                .map(|r| r.as_str().expect("ref"))
                .collect()
        })
        .collect();
    assert!(preds.len() >= 100 && preds.len() == refs.len());
    // Every scored caption is tokenized exactly as the jar does (none is a known difference).
    for c in preds.iter().chain(refs.iter().flatten()) {
        assert!(
            known(c).is_none(),
            "known difference in the scored corpus: {c:?}"
        );
    }
    let cfg = MetricsConfig::default();
    let raw = score_corpus(&preds, &refs, &cfg).expect("scores");
    assert_scores("raw", &raw, sc);

    let hyp = coco_tokenize_lines(&preds);
    let flat: Vec<&str> = refs.iter().flatten().copied().collect();
    let mut flat_tok = coco_tokenize_lines(&flat).into_iter();
    let refs_tok: Vec<Vec<String>> = refs
        .iter()
        .map(|rs| rs.iter().map(|_| flat_tok.next().expect("ref")).collect())
        .collect();
    let batch = score_tokenized(&hyp, &refs_tok, &cfg).expect("scores");
    assert_scores("one call", &batch, sc);
}

/// Arbitrary Unicode (any code point, lone line breaks, long punctuation runs) never panics,
/// alone or in a batch.
#[test]
fn arbitrary_unicode_does_not_panic() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pool: Vec<char> =
        ".,;:!?'\"`()[]{}<>-_/\\&#$%@*+=~^| \t\r\n\u{0}\u{7f}\u{85}\u{a0}\u{ad}\u{2028}\u{2019}\u{201c}\u{2026}\u{2014}aZ09é"
            .chars()
            .collect();
    let mut batch = Vec::new();
    for _ in 0..3000 {
        let n = (next() % 48) as usize;
        let s: String = (0..n)
            .map(|_| {
                let r = next();
                if r.is_multiple_of(3) {
                    char::from_u32((r >> 24) as u32 % 0x11_0000).unwrap_or('\u{fffd}')
                } else {
                    pool[(r >> 8) as usize % pool.len()]
                }
            })
            .collect();
        let _ = coco_tokenize(&s);
        batch.push(s);
    }
    assert_eq!(coco_tokenize_lines(&batch).len(), batch.len());
    assert_eq!(coco_tokenize(""), "");
    assert!(coco_tokenize_lines::<&str>(&[]).is_empty());
}

//! Attribute accuracy of explanations of synthetic pairs (`adiff eval --synthetic truth.jsonl`):
//! what an explanation asserts in the template vocabulary of [`crate::data::synthetic`] is read
//! back and checked against the clips' true attributes.
//!
//! Parsing (lower-cased; split into clauses at `. , ; : ? !` and "while"/"whereas"):
//!
//! * loudness: "louder" (second > first), "quieter"/"softer" (second < first), "the same
//!   loudness"/"equally loud"; pitch: "higher in pitch"/"higher pitch"/"higher-pitched", "lower
//!   ...", "the same pitch".
//! * source kind, pattern, background: "X instead of Y" where X and Y are phrases of the same
//!   attribute ("a chord instead of a tone"): the second audio has X, the first Y; "the same
//!   source (X)", "the same pattern (X)", "the same background (X)": both have X. "X instead of
//!   X" says the clips differ while naming one value for both: it is never right.
//! * Comparisons speak of the second audio, unless the last of "first"/"second" said before them
//!   in their clause is "first" ("the first audio is louder"), which turns them around.
//!
//! Scoring, per attribute: a prediction *asserts* the attribute when it makes at least one claim
//! about it; it is *right* when all its claims about it are true (contradicting claims are wrong).
//! Chance is the accuracy of a uniform random claim of the same form: 1/3 for a comparison
//! (second higher, lower or the same), 1/K² for a pair of values of a K-valued attribute.
//! Majority is the accuracy of always claiming the most frequent true value among the asserting
//! predictions.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::data::csv_schema::RecordLines;
use crate::data::synthetic::{Attribute, Attributes, Background, Pattern, SourceKind, TruthRecord};
use crate::error::{AdiffError, Result};

/// One thing an explanation says about an attribute of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Claim {
    /// Ordinal attributes: the second audio's value compared with the first's.
    Relation(Ordering),
    /// Categorical attributes: the value indices (in the attribute's `ALL` order) of both audios.
    Values { first: usize, second: usize },
    /// "X instead of X": a difference claimed with the same value on both sides; never true.
    SelfContradiction,
}

/// Every claim of one explanation, per attribute (indexed like [`Attribute::ALL`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assertions {
    pub claims: [BTreeSet<Claim>; 5],
}

impl Assertions {
    pub fn of(&self, attr: Attribute) -> &BTreeSet<Claim> {
        &self.claims[attr as usize]
    }
    fn add(&mut self, attr: Attribute, claim: Claim) {
        self.claims[attr as usize].insert(claim);
    }
}

/// The true claim about `attr` for a pair.
pub fn truth_claim(attr: Attribute, first: &Attributes, second: &Attributes) -> Claim {
    let (a, b) = (first.value_index(attr), second.value_index(attr));
    if attr.is_ordinal() {
        Claim::Relation(b.cmp(&a))
    } else {
        Claim::Values {
            first: a,
            second: b,
        }
    }
}

/// Phrases of an ordinal attribute and the relation each states.
const RELATION_PHRASES: [(Attribute, &str, Ordering); 12] = [
    (Attribute::Loudness, "louder", Ordering::Greater),
    (Attribute::Loudness, "quieter", Ordering::Less),
    (Attribute::Loudness, "softer", Ordering::Less),
    (Attribute::Loudness, "same loudness", Ordering::Equal),
    (Attribute::Loudness, "equally loud", Ordering::Equal),
    (Attribute::Pitch, "higher in pitch", Ordering::Greater),
    (Attribute::Pitch, "higher pitch", Ordering::Greater),
    (Attribute::Pitch, "higher pitched", Ordering::Greater),
    (Attribute::Pitch, "lower in pitch", Ordering::Less),
    (Attribute::Pitch, "lower pitch", Ordering::Less),
    (Attribute::Pitch, "lower pitched", Ordering::Less),
    (Attribute::Pitch, "same pitch", Ordering::Equal),
];

/// The categorical attributes, the word after "the same" that names each, and their phrases
/// (normalised: lower case, words separated by single spaces, no article).
fn categorical_phrases() -> [(Attribute, &'static str, Vec<&'static str>); 3] {
    [
        (
            Attribute::Kind,
            "source",
            SourceKind::ALL.iter().map(|k| k.phrase()).collect(),
        ),
        (
            Attribute::Pattern,
            "pattern",
            Pattern::ALL.iter().map(|p| p.phrase()).collect(),
        ),
        (
            Attribute::Background,
            "background",
            Background::ALL.iter().map(|b| b.phrase()).collect(),
        ),
    ]
}

/// Lower case, every run of non-alphanumeric characters one space, padded with a space on both
/// sides so that whole words match as `" word "`.
fn normalise(clause: &str) -> String {
    let mut out = String::from(" ");
    for c in clause.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// Clauses of an explanation, normalised.
fn clauses(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut parts = Vec::new();
    for piece in lower.split(['.', ',', ';', ':', '?', '!', '\n']) {
        let mut rest = piece.to_string();
        for sep in [" while ", " whereas "] {
            rest = rest.replace(sep, "\u{0}");
        }
        parts.extend(rest.split('\u{0}').map(normalise));
    }
    parts.retain(|c| !c.trim().is_empty());
    parts
}

/// Whether the last audio named before byte `pos` of a clause is the first one.
fn subject_is_first(clause: &str, pos: usize) -> bool {
    let before = &clause[..pos];
    match (before.rfind(" first "), before.rfind(" second ")) {
        (Some(f), Some(s)) => f > s,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Byte positions of whole-word occurrences of `phrase` in a normalised clause.
fn find_all(clause: &str, phrase: &str) -> Vec<usize> {
    let needle = format!(" {phrase} ");
    clause.match_indices(&needle).map(|(i, _)| i + 1).collect()
}

/// The index of the phrase (of `phrases`) that `text` starts with, after an optional article.
fn leading_phrase(text: &str, phrases: &[&str]) -> Option<usize> {
    let t = text.trim_start();
    let t = t
        .strip_prefix("a ")
        .or_else(|| t.strip_prefix("an "))
        .unwrap_or(t);
    // Longest match first ("rising chirp" before a shorter phrase it might contain).
    let mut best: Option<(usize, usize)> = None;
    for (i, p) in phrases.iter().enumerate() {
        if t.starts_with(&format!("{p} ")) && best.is_none_or(|(_, len)| p.len() > len) {
            best = Some((i, p.len()));
        }
    }
    best.map(|(i, _)| i)
}

/// The index of the phrase that `text` ends with (as whole words).
fn trailing_phrase(text: &str, phrases: &[&str]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, p) in phrases.iter().enumerate() {
        if text.ends_with(&format!(" {p} ")) && best.is_none_or(|(_, len)| p.len() > len) {
            best = Some((i, p.len()));
        }
    }
    best.map(|(i, _)| i)
}

/// Reads the claims an explanation makes (see the module documentation for the vocabulary).
pub fn parse_explanation(text: &str) -> Assertions {
    let mut out = Assertions::default();
    let categorical = categorical_phrases();
    for clause in clauses(text) {
        for (attr, phrase, rel) in RELATION_PHRASES {
            for pos in find_all(&clause, phrase) {
                let rel = if rel != Ordering::Equal && subject_is_first(&clause, pos) {
                    rel.reverse()
                } else {
                    rel
                };
                out.add(attr, Claim::Relation(rel));
            }
        }
        for (attr, name, phrases) in &categorical {
            // "X instead of Y"
            for pos in find_all(&clause, "instead of") {
                let before = &clause[..pos];
                let after = &clause[pos + "instead of ".len()..];
                if let (Some(x), Some(y)) = (
                    trailing_phrase(before, phrases),
                    leading_phrase(after, phrases),
                ) {
                    let (first, second) = if subject_is_first(&clause, pos) {
                        (x, y)
                    } else {
                        (y, x)
                    };
                    let claim = if first == second {
                        Claim::SelfContradiction
                    } else {
                        Claim::Values { first, second }
                    };
                    out.add(*attr, claim);
                }
            }
            // "the same source (X)"
            for pos in find_all(&clause, &format!("same {name}")) {
                let after = &clause[pos + format!("same {name} ").len()..];
                if let Some(x) = leading_phrase(after, phrases) {
                    out.add(
                        *attr,
                        Claim::Values {
                            first: x,
                            second: x,
                        },
                    );
                }
            }
        }
    }
    out
}

/// Reads `truth.jsonl`: path -> attributes. A malformed line is named.
pub fn read_truth(path: &Path) -> Result<HashMap<String, Attributes>> {
    let err = |m: String| AdiffError::Invalid(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut truth = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: TruthRecord = serde_json::from_str(line)
            .map_err(|e| err(format!("line {}: not a truth record: {e}", i + 1)))?;
        truth.insert(rec.path, rec.spec.attributes);
    }
    if truth.is_empty() {
        return Err(err("no truth records".into()));
    }
    Ok(truth)
}

/// The score of one attribute over a predictions file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeScore {
    pub attribute: &'static str,
    /// Predictions that make a claim about the attribute.
    pub asserted: usize,
    /// Of those, the ones whose claims are all true.
    pub right: usize,
    /// right / asserted (None when nothing was asserted).
    pub accuracy: Option<f64>,
    /// Accuracy of a uniform random claim of the same form.
    pub chance: Option<f64>,
    /// Accuracy of always claiming the most frequent true value.
    pub majority: Option<f64>,
    /// Pairs whose clips truly differ in the attribute.
    pub differing: usize,
    /// Of those, the ones whose prediction names the difference rightly (asserts the attribute,
    /// every claim true).
    pub named: usize,
    /// named / differing: recall, beside `accuracy` (= precision: right / asserted).
    pub recall: Option<f64>,
}

/// The scores of one predictions file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileReport {
    pub file: String,
    pub rows: usize,
    /// Rows whose prediction asserts nothing the parser understands.
    pub rows_without_claims: usize,
    pub attributes: Vec<AttributeScore>,
    /// Pairs that truly differ in at least one attribute.
    pub pairs_differing: usize,
    /// Of those, the ones whose prediction names every difference rightly.
    pub all_named: usize,
    /// all_named / pairs_differing.
    pub all_named_rate: Option<f64>,
}

/// `adiff eval --synthetic` over several predictions files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyntheticEval {
    pub truth: String,
    pub files: Vec<FileReport>,
}

/// Whether the true claim about an attribute says the clips differ in it.
fn is_difference(truth: Claim) -> bool {
    match truth {
        Claim::Relation(o) => o != Ordering::Equal,
        Claim::Values { first, second } => first != second,
        Claim::SelfContradiction => false,
    }
}

/// Scores one row's prediction; returns, per attribute, None (no claim) or (right, truth claim).
fn score_row(pred: &str, first: &Attributes, second: &Attributes) -> [Option<(bool, Claim)>; 5] {
    let claims = parse_explanation(pred);
    Attribute::ALL.map(|attr| {
        let set = claims.of(attr);
        if set.is_empty() {
            return None;
        }
        let truth = truth_claim(attr, first, second);
        Some((set.len() == 1 && set.contains(&truth), truth))
    })
}

/// Scores `adiff infer` outputs (`filepath1`, `filepath2`, `prediction` columns) against a
/// `truth.jsonl`. A row whose audio has no truth record is an error naming it.
pub fn evaluate(truth_path: &Path, preds: &[impl AsRef<Path>]) -> Result<SyntheticEval> {
    let truth = read_truth(truth_path)?;
    let mut files = Vec::new();
    for p in preds {
        files.push(score_file(&truth, p.as_ref())?);
    }
    Ok(SyntheticEval {
        truth: truth_path.display().to_string(),
        files,
    })
}

fn score_file(truth: &HashMap<String, Attributes>, path: &Path) -> Result<FileReport> {
    let err = |m: String| AdiffError::Invalid(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let headers = rdr.headers().map_err(|e| err(e.to_string()))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                err(format!(
                    "no '{name}' column (is it an `adiff infer` output?)"
                ))
            })
    };
    let (c1, c2, cp) = (col("filepath1")?, col("filepath2")?, col("prediction")?);
    let mut lines = RecordLines::new(&bytes);
    // Per attribute: (asserted, right, chance sum, truth claim counts).
    let mut acc: Vec<(usize, usize, f64, HashMap<Claim, usize>)> =
        vec![(0, 0, 0.0, HashMap::new()); Attribute::ALL.len()];
    // Per attribute: (pairs differing in it, of which named rightly).
    let mut diff = vec![(0usize, 0usize); Attribute::ALL.len()];
    let (mut pairs_differing, mut all_named) = (0usize, 0usize);
    let (mut rows, mut without) = (0usize, 0usize);
    for rec in rdr.records() {
        let rec = rec.map_err(|e| err(e.to_string()))?;
        let line = lines.line_of(&rec);
        let field = |i: usize| rec.get(i).unwrap_or("");
        let lookup = |p: &str| {
            truth.get(p).ok_or_else(|| {
                err(format!(
                    "line {line}: audio '{p}' has no record in the truth file"
                ))
            })
        };
        let (a, b) = (lookup(field(c1))?, lookup(field(c2))?);
        rows += 1;
        let scored = score_row(field(cp), a, b);
        if scored.iter().all(Option::is_none) {
            without += 1;
        }
        let (mut differs, mut every_named) = (false, true);
        for (attr, s) in Attribute::ALL.iter().zip(&scored) {
            if is_difference(truth_claim(*attr, a, b)) {
                let named = matches!(s, Some((true, _)));
                let d = &mut diff[*attr as usize];
                d.0 += 1;
                d.1 += usize::from(named);
                differs = true;
                every_named &= named;
            }
        }
        if differs {
            pairs_differing += 1;
            all_named += usize::from(every_named);
        }
        for (attr, s) in Attribute::ALL.iter().zip(scored) {
            if let Some((right, claim)) = s {
                let e = &mut acc[*attr as usize];
                e.0 += 1;
                e.1 += usize::from(right);
                e.2 += if attr.is_ordinal() {
                    1.0 / 3.0
                } else {
                    1.0 / (attr.cardinality() as f64).powi(2)
                };
                *e.3.entry(claim).or_insert(0) += 1;
            }
        }
    }
    if rows == 0 {
        return Err(err("no rows to score".into()));
    }
    let attributes = Attribute::ALL
        .iter()
        .zip(acc)
        .zip(diff)
        .map(
            |((attr, (asserted, right, chance, counts)), (differing, named))| {
                let frac = |x: f64| (asserted > 0).then(|| x / asserted as f64);
                AttributeScore {
                    attribute: attr.name(),
                    asserted,
                    right,
                    accuracy: frac(right as f64),
                    chance: frac(chance),
                    majority: frac(counts.values().copied().max().unwrap_or(0) as f64),
                    differing,
                    named,
                    recall: (differing > 0).then(|| named as f64 / differing as f64),
                }
            },
        )
        .collect();
    Ok(FileReport {
        file: path.display().to_string(),
        rows,
        rows_without_claims: without,
        attributes,
        pairs_differing,
        all_named,
        all_named_rate: (pairs_differing > 0).then(|| all_named as f64 / pairs_differing as f64),
    })
}

impl SyntheticEval {
    /// The report as a text table, one block per file.
    pub fn table(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let mut s = String::new();
        for f in &self.files {
            s.push_str(&format!(
                "{}: {} row(s), {} without any claim the parser reads (truth: {})\n",
                f.file, f.rows, f.rows_without_claims, self.truth
            ));
            s.push_str(&format!(
                "{:<12} {:>8} {:>6} {:>9} {:>7} {:>9} {:>7} {:>6} {:>7}\n",
                "attribute",
                "asserted",
                "right",
                "precision",
                "chance",
                "majority",
                "differ",
                "named",
                "recall"
            ));
            for a in &f.attributes {
                s.push_str(&format!(
                    "{:<12} {:>8} {:>6} {:>9} {:>7} {:>9} {:>7} {:>6} {:>7}\n",
                    a.attribute,
                    a.asserted,
                    a.right,
                    pct(a.accuracy),
                    pct(a.chance),
                    pct(a.majority),
                    a.differing,
                    a.named,
                    pct(a.recall)
                ));
            }
            s.push_str(&format!(
                "all differences named: {} of {} pair(s) that differ ({})\n",
                f.all_named,
                f.pairs_differing,
                pct(f.all_named_rate)
            ));
        }
        s.push_str(
            "precision: of the predictions that make a claim about the attribute, the share whose \
             claims are all true; recall: of the pairs that truly differ in it, the share whose \
             prediction names the difference rightly; chance: a uniform random claim of the same \
             form (1/3 for a comparison, 1/K^2 for the values of both audios); majority: always \
             the most frequent true value.\n",
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{explanation, Loudness, Pitch};

    fn clip(kind: SourceKind, pitch: Pitch, loudness: Loudness, pattern: Pattern) -> Attributes {
        Attributes {
            kind,
            pitch,
            loudness,
            pattern,
            background: Background::Silence,
        }
    }

    #[test]
    fn recall_and_all_named_count_the_pairs_that_differ() {
        use Loudness::*;
        use Pitch::*;
        let c = |p, l| clip(SourceKind::Tone, p, l, Pattern::Single);
        let truth = HashMap::from([
            ("a".to_string(), c(Low, Quiet)),
            ("b".to_string(), c(High, Loud)),
            ("c".to_string(), c(High, Quiet)),
        ]);
        // a->b differs in pitch and loudness, only loudness named; c->b in loudness only,
        // named wrongly; a->c in pitch only, named; b->b in nothing, loudness claimed (rightly).
        let csv = "filepath1,filepath2,prediction\n\
                   a,b,The second audio is louder.\n\
                   c,b,The second audio is quieter.\n\
                   a,c,The second audio is higher in pitch.\n\
                   b,b,The two audios have the same loudness.\n";
        let path = std::env::temp_dir().join(format!("adiff-recall-{}.csv", std::process::id()));
        std::fs::write(&path, csv).unwrap();
        let r = score_file(&truth, &path).unwrap();
        std::fs::remove_file(&path).ok();
        let get = |name: &str| r.attributes.iter().find(|a| a.attribute == name).unwrap();
        let (l, p) = (get("loudness"), get("pitch"));
        assert_eq!((l.asserted, l.right, l.differing, l.named), (3, 2, 2, 1));
        assert_eq!((p.asserted, p.right, p.differing, p.named), (1, 1, 2, 1));
        assert_eq!((l.recall, p.recall), (Some(0.5), Some(0.5)));
        assert_eq!((r.pairs_differing, r.all_named), (3, 1));
        assert!(r.attributes.iter().all(|a| a.attribute == "loudness"
            || a.attribute == "pitch"
            || (a.differing, a.recall) == (0, None)));
    }

    #[test]
    fn templates_parse_to_the_truth_for_every_tier() {
        let a = clip(
            SourceKind::Tone,
            Pitch::Low,
            Loudness::Loud,
            Pattern::Single,
        );
        let b = clip(
            SourceKind::ChirpDown,
            Pitch::High,
            Loudness::Quiet,
            Pattern::Single,
        );
        for tier in 1..=3 {
            let text = explanation(&a, &b, tier);
            let got = parse_explanation(&text);
            for attr in Attribute::ALL {
                let set = got.of(attr);
                let truth = truth_claim(attr, &a, &b);
                let differs = a.value_index(attr) != b.value_index(attr);
                if differs || tier == 3 {
                    assert_eq!(
                        set,
                        &BTreeSet::from([truth]),
                        "tier {tier} {attr:?}: {text}"
                    );
                } else {
                    assert!(set.is_empty(), "tier {tier} {attr:?}: {text}");
                }
            }
        }
    }

    #[test]
    fn subject_and_contradictions() {
        let p =
            parse_explanation("The first audio is louder. The second is a buzz instead of a tone.");
        assert_eq!(
            p.of(Attribute::Loudness),
            &BTreeSet::from([Claim::Relation(Ordering::Less)])
        );
        assert_eq!(
            p.of(Attribute::Kind),
            &BTreeSet::from([Claim::Values {
                first: SourceKind::Tone as usize,
                second: SourceKind::Buzz as usize
            }])
        );
        let p = parse_explanation("the first audio has a hiss instead of a hum");
        assert_eq!(
            p.of(Attribute::Background),
            &BTreeSet::from([Claim::Values {
                first: Background::Hiss as usize,
                second: Background::Hum as usize
            }])
        );
        let a = clip(
            SourceKind::Tone,
            Pitch::Low,
            Loudness::Quiet,
            Pattern::Single,
        );
        let mut b = a;
        b.loudness = Loudness::Loud;
        let s = score_row("louder but also quieter", &a, &b);
        assert_eq!(s[0].map(|x| x.0), Some(false));
        // "X instead of X" names the truth of a same-kind pair but claims a difference: wrong.
        assert_eq!(
            parse_explanation("clicks instead of clicks").of(Attribute::Kind),
            &BTreeSet::from([Claim::SelfContradiction])
        );
        assert_eq!(
            score_row("a tone instead of a tone", &a, &b)[2].map(|x| x.0),
            Some(false)
        );
        // Words that only look alike are not claims.
        assert_eq!(
            parse_explanation("a loud high-pitched tone"),
            Assertions::default()
        );
    }
}

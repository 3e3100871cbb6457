//! Captioning metrics as coco-caption (pycocoevalcap 1.2) computes them: PTB tokenization,
//! corpus BLEU-1..4, ROUGE-L and CIDEr-D, and METEOR 1.5 ([`meteor`], with Meteor's language
//! data). SPICE runs the official jar ([`spice`]).
//!
//! FENSE ([`fense`]: [`sbert_sim`] and the fluency error detector [`fer`], on [`bert`]) and
//! SPIDEr-FL ([`spider_fl`]) run their BERT models natively on candle, as aac-metrics 0.6.
//!
//! Every metric takes already tokenized text ([`tokenize::coco_tokenize`]); [`score_corpus`]
//! tokenizes raw captions and runs them all.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{AdiffError, Result};

pub mod bert;
pub mod bleu;
pub mod cider;
pub mod fense;
pub mod fer;
pub mod meteor;
pub mod rouge;
pub mod sbert_sim;
pub mod spice;
pub mod spider_fl;
pub mod synthetic;
pub mod tokenize;
pub mod vocab;

/// The constants of coco-caption's scorers (fixed by pycocoevalcap; kept in one place so that a
/// variant can be scored without editing the scorers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsConfig {
    /// Longest n-gram for BLEU and CIDEr-D.
    pub max_n: usize,
    /// ROUGE-L's F-measure weight (recall weighted beta^2 times precision).
    pub rouge_beta: f64,
    /// CIDEr-D's Gaussian length-penalty width.
    pub cider_sigma: f64,
    /// CIDEr-D's final scale factor.
    pub cider_scale: f64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_n: 4,
            rouge_beta: 1.2,
            cider_sigma: 6.0,
            cider_scale: 10.0,
        }
    }
}

/// Corpus scores of one set of predictions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CorpusScores {
    /// BLEU-1..BLEU-n (corpus level, closest reference length).
    pub bleu: Vec<f64>,
    pub rouge_l: f64,
    pub cider_d: f64,
}

/// Scores of every item (the per-item arrays pycocoevalcap's scorers return beside the corpus
/// score), in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemScores {
    /// `bleu[k][i]`: BLEU-(k+1) of item i, with the item's own brevity penalty (closest
    /// reference length), as `Bleu.compute_score`'s second value.
    pub bleu: Vec<Vec<f64>>,
    pub rouge_l: Vec<f64>,
    /// CIDEr-D of each item; document frequencies come from the whole corpus scored.
    pub cider_d: Vec<f64>,
}

/// Tokenizes predictions and references as coco-caption does, then scores them.
/// `refs[i]` are the references of `preds[i]`; every item needs at least one reference.
pub fn score_corpus<S: AsRef<str>>(
    preds: &[S],
    refs: &[Vec<S>],
    cfg: &MetricsConfig,
) -> Result<CorpusScores> {
    let (hyp, refs_tok) = tokenize_corpus(preds, refs);
    score_tokenized(&hyp, &refs_tok, cfg)
}

/// Tokenizes a corpus as COCOEvalCap does: every reference (item by item, in order) through one
/// PTB tokenizer run and every prediction through another, so that the rare rule that looks
/// past the end of a caption sees the caption that follows it there
/// ([`tokenize::coco_tokenize_lines`]).
pub fn tokenize_corpus<S: AsRef<str>>(
    preds: &[S],
    refs: &[Vec<S>],
) -> (Vec<String>, Vec<Vec<String>>) {
    let hyp = tokenize::coco_tokenize_lines(preds);
    let flat: Vec<&str> = refs.iter().flatten().map(AsRef::as_ref).collect();
    let mut flat_tok = tokenize::coco_tokenize_lines(&flat).into_iter();
    let refs_tok = refs
        .iter()
        .map(|rs| flat_tok.by_ref().take(rs.len()).collect())
        .collect();
    (hyp, refs_tok)
}

/// Scores already tokenized text (space-separated tokens).
pub fn score_tokenized(
    hyp: &[String],
    refs: &[Vec<String>],
    cfg: &MetricsConfig,
) -> Result<CorpusScores> {
    Ok(score_tokenized_items(hyp, refs, cfg)?.0)
}

/// Scores already tokenized text: the corpus scores (as [`score_tokenized`]) and every item's.
pub fn score_tokenized_items(
    hyp: &[String],
    refs: &[Vec<String>],
    cfg: &MetricsConfig,
) -> Result<(CorpusScores, ItemScores)> {
    check_shapes(hyp, refs)?;
    let (bleu, bleu_items) = bleu::bleu_with_items(hyp, refs, cfg.max_n);
    let (rouge_l, rouge_items) = rouge::rouge_l_with_items(hyp, refs, cfg.rouge_beta);
    let (cider_d, cider_items) = cider::cider_d_with_items(hyp, refs, cfg);
    Ok((
        CorpusScores {
            bleu,
            rouge_l,
            cider_d,
        },
        ItemScores {
            bleu: bleu_items,
            rouge_l: rouge_items,
            cider_d: cider_items,
        },
    ))
}

fn check_shapes(hyp: &[String], refs: &[Vec<String>]) -> Result<()> {
    if hyp.len() != refs.len() {
        return Err(AdiffError::Invalid(format!(
            "{} predictions but {} reference sets",
            hyp.len(),
            refs.len()
        )));
    }
    if hyp.is_empty() {
        return Err(AdiffError::Invalid(
            "nothing to score: no predictions".into(),
        ));
    }
    if let Some(i) = refs.iter().position(|r| r.is_empty()) {
        return Err(AdiffError::Invalid(format!("item {i} has no reference")));
    }
    Ok(())
}

/// `n` candidates with `refs`: as many reference sets, at least one item, one reference each.
pub(crate) fn check_counts<S>(n: usize, refs: &[Vec<S>]) -> Result<()> {
    if n != refs.len() {
        return Err(AdiffError::Invalid(format!(
            "{n} predictions but {} reference sets",
            refs.len()
        )));
    }
    if n == 0 {
        return Err(AdiffError::Invalid(
            "nothing to score: no predictions".into(),
        ));
    }
    if let Some(i) = refs.iter().position(|r| r.is_empty()) {
        return Err(AdiffError::Invalid(format!("item {i} has no reference")));
    }
    Ok(())
}

/// Arithmetic mean (0 for an empty slice).
pub(crate) fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The Fx hash (rustc's): n-gram keys are a few small integers, for which SipHash's DoS
/// resistance only costs time (it dominated a profile of `adiff eval`).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    const ROTATE: u32 = 5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(Self::ROTATE) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A HashMap with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Maps words to ids so that n-grams are small fixed-size keys.
#[derive(Default)]
pub(crate) struct Vocab {
    ids: FxHashMap<String, u32>,
}

/// An n-gram of word ids, padded with `u32::MAX` (so n-grams of different orders differ).
pub(crate) type Ngram = [u32; 4];

impl Vocab {
    /// Word ids of a tokenized sentence, split on whitespace as Python's `str.split()`.
    pub(crate) fn ids(&mut self, sentence: &str) -> Vec<u32> {
        sentence
            .split_whitespace()
            .map(|w| {
                let next = self.ids.len() as u32;
                *self.ids.entry(w.to_string()).or_insert(next)
            })
            .collect()
    }
}

/// Counts of every n-gram of order 1..=max_n (max_n <= 4) in `words`.
pub(crate) fn ngram_counts(words: &[u32], max_n: usize) -> FxHashMap<Ngram, u32> {
    let mut counts = FxHashMap::default();
    counts.reserve(words.len() * max_n);
    for k in 1..=max_n.min(4) {
        for w in words.windows(k) {
            let mut key = [u32::MAX; 4];
            key[..k].copy_from_slice(w);
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// Order (1-based) of an n-gram key.
pub(crate) fn ngram_order(g: &Ngram) -> usize {
    g.iter().take_while(|&&x| x != u32::MAX).count()
}

#[cfg(test)]
mod corpus_tests {
    use super::tokenize_corpus;

    /// pycocoevalcap 1.2 on these captions in one call gives `a tone in audio b` (the jar splits
    /// the period off a single letter before a capitalized sentence opener on the next line);
    /// alone, `a tone in audio b.` (checked by running it, 2026-12-06).
    #[test]
    fn a_caption_sees_the_next_one_as_the_jar_does() {
        let refs = vec![vec!["a tone in audio b.", "The second is louder"]];
        let (hyp, refs_tok) = tokenize_corpus(&["a tone in audio b."], &refs);
        assert_eq!(refs_tok[0], ["a tone in audio b", "the second is louder"]);
        // The prediction is the last (only) line of its own run.
        assert_eq!(hyp, ["a tone in audio b."]);
    }
}

//! METEOR 1.5 as pycocoevalcap runs it (`java -jar meteor-1.5.jar - - -stdio -l en -norm`),
//! reimplemented: Meteor's normaliser, its exact / stem (Snowball English) / synonym (WordNet) /
//! paraphrase matchers and beam-search aligner, the English "rank" task parameters, the best
//! reference per item, and the corpus score the jar prints last (computed from the summed
//! statistics of all items, not the mean of item scores; a perfectly aligned item's one chunk is
//! left out of the sum, as the jar's `addStats` does).
//!
//! The language data (synonyms, function words, paraphrase table) is not bundled: it is read from
//! the user's `meteor-1.5.jar` (+ `data/paraphrase-en.gz` beside it), see [`MeteorData`].

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

pub mod aligner;
pub mod normalize;
pub mod paraphrase_cache;
pub mod resources;

use aligner::{Aligner, AlignmentCounts, WordInfo, MODULES};
pub use resources::{MeteorData, MeteorResources, METEOR_DATA_ENV};

use crate::error::Result;

/// Meteor's scoring parameters (defaults: Meteor 1.5, English, task "rank", which is what
/// `-l en` selects).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeteorParams {
    /// Precision/recall balance of the F-mean.
    pub alpha: f64,
    /// Exponent of the fragmentation penalty.
    pub beta: f64,
    /// Maximum fragmentation penalty.
    pub gamma: f64,
    /// Weight of content words against function words.
    pub delta: f64,
    /// Credit of a match per module (exact, stem, synonym, paraphrase).
    pub module_weights: [f64; MODULES],
    /// Weights the aligner ranks partial alignments with (set by Meteor's scorer).
    pub search_weights: [f64; MODULES],
    /// Partial alignments kept per step of the aligner's beam search.
    pub beam_size: usize,
}

impl Default for MeteorParams {
    fn default() -> Self {
        Self {
            alpha: 0.85,
            beta: 0.20,
            gamma: 0.60,
            delta: 0.75,
            module_weights: [1.0, 0.6, 0.8, 0.6],
            search_weights: [1.0, 0.5, 0.5, 0.5],
            beam_size: 40,
        }
    }
}

/// Meteor's sufficient statistics of one item (or, summed, of a corpus): word counts, matches by
/// module and word type, chunks. All integers, so summing them is exact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeteorStats {
    pub test_length: f64,
    pub reference_length: f64,
    pub test_function_words: f64,
    pub reference_function_words: f64,
    pub test_content: [f64; MODULES],
    pub reference_content: [f64; MODULES],
    pub test_function: [f64; MODULES],
    pub reference_function: [f64; MODULES],
    pub chunks: f64,
}

impl MeteorStats {
    fn from_alignment(test_len: usize, ref_len: usize, a: &AlignmentCounts) -> Self {
        let f = |x: [u32; MODULES]| x.map(f64::from);
        Self {
            test_length: test_len as f64,
            reference_length: ref_len as f64,
            test_function_words: f64::from(a.function_words1),
            reference_function_words: f64::from(a.function_words2),
            test_content: f(a.content1),
            reference_content: f(a.content2),
            test_function: f(a.function1),
            reference_function: f(a.function2),
            chunks: f64::from(a.chunks),
        }
    }

    /// Whether these are the statistics of a perfect alignment: every word of both texts
    /// matched, in one chunk (the case the score gives no fragmentation penalty).
    fn is_perfect(&self) -> bool {
        self.test_matches() == self.test_length
            && self.reference_matches() == self.reference_length
            && self.chunks == 1.0
    }

    /// Adds another item's statistics (`MeteorStats.addStats`), as the jar sums the items of
    /// its corpus score: the chunk of a perfectly aligned item is not added (every other count
    /// is), so such items lower the corpus's fragmentation penalty.
    pub fn add(&mut self, o: &MeteorStats) {
        self.test_length += o.test_length;
        self.reference_length += o.reference_length;
        self.test_function_words += o.test_function_words;
        self.reference_function_words += o.reference_function_words;
        for i in 0..MODULES {
            self.test_content[i] += o.test_content[i];
            self.reference_content[i] += o.reference_content[i];
            self.test_function[i] += o.test_function[i];
            self.reference_function[i] += o.reference_function[i];
        }
        if !o.is_perfect() {
            self.chunks += o.chunks;
        }
    }

    fn test_matches(&self) -> f64 {
        (0..MODULES).fold(0.0, |s, i| s + self.test_content[i] + self.test_function[i])
    }

    fn reference_matches(&self) -> f64 {
        (0..MODULES).fold(0.0, |s, i| {
            s + self.reference_content[i] + self.reference_function[i]
        })
    }

    /// The METEOR score of these statistics (`MeteorScorer.computeMetrics`).
    pub fn score(&self, p: &MeteorParams) -> f64 {
        let d = p.delta;
        let test_wlen = d * (self.test_length - self.test_function_words)
            + (1.0 - d) * self.test_function_words;
        let ref_wlen = d * (self.reference_length - self.reference_function_words)
            + (1.0 - d) * self.reference_function_words;
        let mut test_w = 0.0;
        let mut ref_w = 0.0;
        for i in 0..MODULES {
            test_w += self.test_content[i] * p.module_weights[i] * d;
        }
        for i in 0..MODULES {
            ref_w += self.reference_content[i] * p.module_weights[i] * d;
        }
        for i in 0..MODULES {
            test_w += self.test_function[i] * p.module_weights[i] * (1.0 - d);
        }
        for i in 0..MODULES {
            ref_w += self.reference_function[i] * p.module_weights[i] * (1.0 - d);
        }
        let precision = test_w / test_wlen;
        let recall = ref_w / ref_wlen;
        let fmean = 1.0 / ((1.0 - p.alpha) / precision + p.alpha / recall);
        let (tm, rm) = (self.test_matches(), self.reference_matches());
        let frag = if tm == self.test_length && rm == self.reference_length && self.chunks == 1.0 {
            0.0
        } else {
            self.chunks / ((tm + rm) / 2.0)
        };
        let score = fmean * (1.0 - p.gamma * frag.powf(p.beta));
        if score.is_nan() {
            0.0
        } else {
            score.max(0.0)
        }
    }
}

/// Corpus and per-item METEOR.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MeteorScores {
    /// The jar's final line: the score of the summed statistics ([`MeteorStats::add`]).
    pub corpus: f64,
    pub items: Vec<f64>,
}

/// A loaded METEOR scorer.
pub struct Meteor {
    pub params: MeteorParams,
    pub resources: MeteorResources,
}

/// Hypotheses and references after Meteor's normalisation.
pub struct NormalizedTexts {
    pub hyps: Vec<String>,
    pub refs: Vec<Vec<String>>,
}

impl NormalizedTexts {
    /// Every word of every text (what the paraphrase table is filtered to).
    pub fn vocabulary(&self) -> HashSet<String> {
        let all = self.hyps.iter().chain(self.refs.iter().flatten());
        all.flat_map(|s| normalize::java_tokens(s).map(str::to_string))
            .collect()
    }
}

impl Meteor {
    /// Normalises the texts (as `-norm` does) and loads the data their words need.
    /// `hyps`/`refs` are what pycocoevalcap passes to the jar (PTB-tokenized text).
    pub fn prepare<S: AsRef<str>>(
        data: &MeteorData,
        hyps: &[S],
        refs: &[Vec<S>],
    ) -> Result<(Self, NormalizedTexts)> {
        let nbp = data.nonbreaking()?;
        // pycocoevalcap strips "|||" from the hypothesis and collapses double spaces.
        let clean = |h: &str| h.replace("|||", "").replace("  ", " ");
        let texts = NormalizedTexts {
            hyps: hyps
                .iter()
                .map(|h| normalize::normalize_line(&clean(h.as_ref()), &nbp))
                .collect(),
            refs: refs
                .iter()
                .map(|rs| {
                    rs.iter()
                        .map(|r| normalize::normalize_line(r.as_ref(), &nbp))
                        .collect()
                })
                .collect(),
        };
        let resources = data.load(&texts.vocabulary())?;
        Ok((
            Self {
                params: MeteorParams::default(),
                resources,
            },
            texts,
        ))
    }

    /// Statistics of one normalised hypothesis against its best normalised reference (the first
    /// of equal scores wins, as in the jar).
    fn item_stats(
        &self,
        aligner: &Aligner,
        words: &HashMap<String, WordInfo>,
        hyp: &str,
        refs: &[String],
    ) -> MeteorStats {
        let split =
            |s: &str| -> Vec<&WordInfo> { normalize::java_tokens(s).map(|w| &words[w]).collect() };
        let h = split(hyp);
        let mut best: Option<(f64, MeteorStats)> = None;
        for r in refs {
            let rw = split(r);
            let counts = aligner.align(&h, &rw);
            let stats = MeteorStats::from_alignment(h.len(), rw.len(), &counts);
            let score = stats.score(&self.params);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, stats));
            }
        }
        best.map(|(_, s)| s).unwrap_or_default()
    }

    /// Corpus and item scores of normalised hypotheses and their references.
    pub fn score(&self, hyps: &[String], refs: &[Vec<String>]) -> (MeteorScores, Vec<MeteorStats>) {
        let aligner = Aligner::new(
            &self.resources,
            self.params.search_weights,
            self.params.beam_size,
        );
        // What the matchers need of each distinct word, computed once.
        let mut words: HashMap<String, WordInfo> = HashMap::new();
        for text in hyps.iter().chain(refs.iter().flatten()) {
            for w in normalize::java_tokens(text) {
                if !words.contains_key(w) {
                    words.insert(w.to_string(), aligner.word_info(w));
                }
            }
        }
        // Items are independent: align them on all cores (the result does not depend on it).
        let stats: Vec<MeteorStats> = hyps
            .par_iter()
            .zip(refs)
            .map(|(h, rs)| self.item_stats(&aligner, &words, h, rs))
            .collect();
        let mut total = MeteorStats::default();
        for s in &stats {
            total.add(s);
        }
        let scores = MeteorScores {
            corpus: total.score(&self.params),
            items: stats.iter().map(|s| s.score(&self.params)).collect(),
        };
        (scores, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics from the jar's 23-number SCORE line.
    fn parse(line: &str) -> MeteorStats {
        let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let at = |k: usize| std::array::from_fn(|i| v[4 + 4 * i + k]);
        MeteorStats {
            test_length: v[0],
            reference_length: v[1],
            test_function_words: v[2],
            reference_function_words: v[3],
            test_content: at(0),
            reference_content: at(1),
            test_function: at(2),
            reference_function: at(3),
            chunks: v[20],
        }
    }

    /// The jar's corpus score (`EVAL`) of two items, the second perfectly aligned (4 of 4
    /// words, one of them a synonym, one chunk): 0.4291938895349431. Adding its chunk would
    /// give 0.4250063809689427.
    #[test]
    fn corpus_sum_leaves_out_a_perfect_items_chunk() {
        let a = parse("51.0 48.0 15.0 14.0 28.0 28.0 13.0 13.0 0.0 0.0 0.0 0.0 2.0 2.0 0.0 0.0 0.0 0.0 0.0 0.0 21.0 43.0 43.0");
        let b = parse("4.0 4.0 0.0 0.0 3.0 3.0 0.0 0.0 0.0 0.0 0.0 0.0 1.0 1.0 0.0 0.0 0.0 0.0 0.0 0.0 1.0 4.0 4.0");
        let p = MeteorParams::default();
        for (x, y) in [(&a, &b), (&b, &a)] {
            let mut total = MeteorStats::default();
            total.add(x);
            total.add(y);
            assert_eq!(total.chunks, 21.0);
            assert!((total.score(&p) - 0.4291938895349431).abs() < 1e-15);
        }
    }
}

//! Vocabulary size of the candidates (aac-metrics 0.6's `vocab`, its `vocab.cands` score, which
//! DCASE 2024 reports beside FENSE): the number of distinct tokens over all candidates, and per
//! item the number of distinct tokens of that candidate. Tokens are whitespace-separated
//! (`str.split` of the tokenized text). No tensors.

use std::collections::HashSet;

/// Distinct tokens over the corpus, and each candidate's own count (as f64, aac-metrics'
/// dtype).
pub fn vocab_size<S: AsRef<str>>(cands: &[S]) -> (f64, Vec<f64>) {
    let mut all: HashSet<&str> = HashSet::new();
    let items = cands
        .iter()
        .map(|c| {
            let own: HashSet<&str> = c.as_ref().split_whitespace().collect();
            all.extend(&own);
            own.len() as f64
        })
        .collect();
    (all.len() as f64, items)
}

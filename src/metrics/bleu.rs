//! Corpus and per-item BLEU as coco-caption's `bleu_scorer.py` computes them (option "closest").

use super::{ngram_counts, ngram_order, FxHashMap, Vocab};

/// Added to numerators and denominators exactly as pycocoevalcap does, so that a zero n-gram
/// count gives a (tiny) number instead of a division by zero.
const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// BLEU-1..BLEU-max_n over the corpus: clipped n-gram matches and guesses summed over all items,
/// geometric mean of the precisions, brevity penalty from the summed closest reference lengths
/// (ties go to the shorter reference).
pub fn corpus_bleu(hyp: &[String], refs: &[Vec<String>], max_n: usize) -> Vec<f64> {
    bleu_with_items(hyp, refs, max_n).0
}

/// Corpus BLEU-1..max_n (as [`corpus_bleu`]) and each item's, as the second value of
/// pycocoevalcap's `Bleu.compute_score`: `items[k][i]` is BLEU-(k+1) of item i from its own
/// counts, with its own brevity penalty (its closest reference length) and the same smoothing
/// constants.
pub fn bleu_with_items(
    hyp: &[String],
    refs: &[Vec<String>],
    max_n: usize,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut items = vec![Vec::with_capacity(hyp.len()); max_n];
    let mut vocab = Vocab::default();
    let mut correct = vec![0u64; max_n];
    let mut guess = vec![0u64; max_n];
    let (mut testlen_sum, mut reflen_sum) = (0u64, 0u64);
    for (h, rs) in hyp.iter().zip(refs) {
        // Max count of each n-gram over the references, and their lengths.
        let mut maxcounts: FxHashMap<_, u32> = FxHashMap::default();
        let mut reflens = Vec::with_capacity(rs.len());
        for r in rs {
            let ids = vocab.ids(r);
            reflens.push(ids.len());
            for (g, c) in ngram_counts(&ids, max_n) {
                let m = maxcounts.entry(g).or_insert(0);
                *m = (*m).max(c);
            }
        }
        let ids = vocab.ids(h);
        let testlen = ids.len();
        // Closest reference length; `min((|l - t|, l))` in Python, so ties pick the shorter.
        let reflen = reflens
            .iter()
            .map(|&l| (l.abs_diff(testlen), l))
            .min()
            .map_or(0, |(_, l)| l);
        testlen_sum += testlen as u64;
        reflen_sum += reflen as u64;
        for (k, g) in guess.iter_mut().enumerate() {
            *g += (testlen + 1).saturating_sub(k + 1) as u64;
        }
        let mut item_correct = vec![0u64; max_n];
        for (g, c) in ngram_counts(&ids, max_n) {
            let m = maxcounts.get(&g).copied().unwrap_or(0);
            item_correct[ngram_order(&g) - 1] += u64::from(c.min(m));
        }
        // The item's own BLEU (`bleu_list` in bleu_scorer.py).
        let mut prod = 1.0f64;
        for k in 0..max_n {
            correct[k] += item_correct[k];
            let item_guess = (testlen + 1).saturating_sub(k + 1) as f64;
            prod *= (item_correct[k] as f64 + TINY) / (item_guess + SMALL);
            items[k].push(prod.powf(1.0 / (k as f64 + 1.0)));
        }
        let ratio = (testlen as f64 + TINY) / (reflen as f64 + SMALL);
        if ratio < 1.0 {
            let bp = (1.0 - 1.0 / ratio).exp();
            for item in &mut items {
                *item.last_mut().expect("pushed above") *= bp;
            }
        }
    }
    let mut bleus = Vec::with_capacity(max_n);
    let mut prod = 1.0f64;
    for k in 0..max_n {
        prod *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        bleus.push(prod.powf(1.0 / (k as f64 + 1.0)));
    }
    let ratio = (testlen_sum as f64 + TINY) / (reflen_sum as f64 + SMALL);
    if ratio < 1.0 {
        let bp = (1.0 - 1.0 / ratio).exp();
        for b in &mut bleus {
            *b *= bp;
        }
    }
    (bleus, items)
}

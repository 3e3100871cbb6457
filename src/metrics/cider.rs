//! CIDEr-D as coco-caption's `cider_scorer.py` computes it (pycocoevalcap calls it "CIDEr"):
//! tf-idf n-gram vectors with document frequencies from the evaluated references, clipped
//! hypothesis weights, a Gaussian length penalty, averaged over n = 1..4 and references, x10.

use std::collections::HashSet;

use super::{ngram_counts, ngram_order, FxHashMap, MetricsConfig, Ngram, Vocab};

/// A sentence as CIDEr-D sees it: tf-idf weights per n-gram, the norm per order, and its
/// "length".
struct TfIdf {
    vec: FxHashMap<Ngram, f64>,
    norm: Vec<f64>,
    /// coco-caption counts the *bigrams* here (`if n == 1` on a 0-based order), not the words;
    /// kept as is, since the length penalty must match the reference implementation.
    length: f64,
}

/// Mean CIDEr-D over the corpus.
pub fn cider_d(hyp: &[String], refs: &[Vec<String>], cfg: &MetricsConfig) -> f64 {
    cider_d_with_items(hyp, refs, cfg).0
}

/// Mean CIDEr-D over the corpus and each item's (pycocoevalcap's per-item array). An item's
/// score depends on the whole corpus: the document frequencies come from all its references.
pub fn cider_d_with_items(
    hyp: &[String],
    refs: &[Vec<String>],
    cfg: &MetricsConfig,
) -> (f64, Vec<f64>) {
    let n = cfg.max_n;
    let mut vocab = Vocab::default();
    let hyp_counts: Vec<_> = hyp.iter().map(|h| ngram_counts(&vocab.ids(h), n)).collect();
    let ref_counts: Vec<Vec<_>> = refs
        .iter()
        .map(|rs| rs.iter().map(|r| ngram_counts(&vocab.ids(r), n)).collect())
        .collect();
    // Document frequency: in how many items' reference sets an n-gram occurs.
    let mut df: FxHashMap<Ngram, f64> = FxHashMap::default();
    for rs in &ref_counts {
        let set: HashSet<&Ngram, std::hash::BuildHasherDefault<super::FxHasher>> =
            rs.iter().flat_map(|c| c.keys()).collect();
        for g in set {
            *df.entry(*g).or_insert(0.0) += 1.0;
        }
    }
    let ref_len = (ref_counts.len() as f64).ln();
    let to_vec = |counts: &FxHashMap<Ngram, u32>| -> TfIdf {
        let mut vec = FxHashMap::default();
        vec.reserve(counts.len());
        let mut norm = vec![0.0f64; n];
        let mut length = 0.0;
        for (g, &tf) in counts {
            let d = df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
            let order = ngram_order(g) - 1;
            let w = f64::from(tf) * (ref_len - d);
            vec.insert(*g, w);
            norm[order] += w * w;
            if order == 1 {
                length += f64::from(tf);
            }
        }
        for x in &mut norm {
            *x = x.sqrt();
        }
        TfIdf { vec, norm, length }
    };
    let two_sigma2 = 2.0 * cfg.cider_sigma * cfg.cider_sigma;
    let mut total = 0.0;
    let mut items = Vec::with_capacity(hyp.len());
    for (hc, rcs) in hyp_counts.iter().zip(&ref_counts) {
        let h = to_vec(hc);
        let mut score = vec![0.0f64; n];
        for rc in rcs {
            let r = to_vec(rc);
            let delta = h.length - r.length;
            let penalty = (-(delta * delta) / two_sigma2).exp();
            let mut val = vec![0.0f64; n];
            for (g, &wh) in &h.vec {
                let wr = r.vec.get(g).copied().unwrap_or(0.0);
                val[ngram_order(g) - 1] += wh.min(wr) * wr;
            }
            for k in 0..n {
                if h.norm[k] != 0.0 && r.norm[k] != 0.0 {
                    val[k] /= h.norm[k] * r.norm[k];
                }
                score[k] += val[k] * penalty;
            }
        }
        let mean = score.iter().sum::<f64>() / n as f64;
        let item = mean / rcs.len() as f64 * cfg.cider_scale;
        items.push(item);
        total += item;
    }
    (total / hyp.len() as f64, items)
}

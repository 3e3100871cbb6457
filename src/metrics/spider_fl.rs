//! SPIDEr-FL (DCASE 2023/2024 audio captioning), as aac-metrics 0.6's `spider_fl`: each item's
//! SPIDEr, `(CIDEr-D + SPICE) / 2`, times `1 - penalty * fer` with the fluency error detector's
//! flag ([`super::fer`], threshold 0.9, penalty 0.9); the corpus value is the mean over items
//! (not the corpus SPIDEr times a corpus penalty). No tensors here: the scores are combined per
//! item.

use super::fense::penalize;
use crate::error::{AdiffError, Result};

/// SPIDEr-FL of a corpus.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpiderFlScores {
    /// Mean of `items`.
    pub corpus: f64,
    pub items: Vec<f64>,
    /// Each item's SPIDEr, `(cider_d + spice) / 2`.
    pub spider: Vec<f64>,
}

/// SPIDEr-FL from per-item CIDEr-D, SPICE and fluency flags (0/1), all in item order.
pub fn spider_fl(
    cider_d: &[f64],
    spice: &[f64],
    fer: &[f64],
    penalty: f64,
) -> Result<SpiderFlScores> {
    if cider_d.len() != spice.len() || cider_d.len() != fer.len() || cider_d.is_empty() {
        return Err(AdiffError::Invalid(format!(
            "SPIDEr-FL needs as many CIDEr-D ({}), SPICE ({}) and fluency ({}) scores, at least one",
            cider_d.len(),
            spice.len(),
            fer.len()
        )));
    }
    let spider: Vec<f64> = cider_d
        .iter()
        .zip(spice)
        .map(|(c, s)| (c + s) / 2.0)
        .collect();
    let items: Vec<f64> = spider
        .iter()
        .zip(fer)
        .map(|(&s, &f)| penalize(s, f, penalty))
        .collect();
    Ok(SpiderFlScores {
        corpus: super::mean(&items),
        items,
        spider,
    })
}

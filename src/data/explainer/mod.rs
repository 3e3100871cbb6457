//! Difference explanations for a pair of captions, the text `adiff build-dataset pairs` puts in
//! the `answer` column: an LLM seeded with both human captions (paper, section 2.1 and appendix E)
//! or, offline, fixed templates.

pub mod llm;
pub mod template;

use crate::error::{AdiffError, Result};

/// The explanation tiers (paper, section 2: 1 concise, 2 a sentence, 3 detailed).
pub const TIERS: std::ops::RangeInclusive<u8> = 1..=3;

/// The word of each tier in the released file names (`{split}_{word}_answer.csv`), tier 1 first.
const TIER_FILE_WORDS: [&str; 3] = ["fewwords", "sentence", "detail"];

/// The released file-name word of a tier (`fewwords`, `sentence`, `detail`).
pub fn tier_file_word(tier: u8) -> Result<&'static str> {
    if TIERS.contains(&tier) {
        Ok(TIER_FILE_WORDS[usize::from(tier - TIERS.start())])
    } else {
        Err(AdiffError::Invalid(format!(
            "explanation tier {tier} does not exist (expected {} to {})",
            TIERS.start(),
            TIERS.end()
        )))
    }
}

/// Why a pair got no explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The request budget (`--max-requests`) is spent: the pair was not attempted, not failed.
    #[error("request budget spent")]
    Budget,
    /// The pair failed (after any retries): why, in one line.
    #[error("{0}")]
    Failed(String),
}

/// Something that explains how audio 1 (`caption1`) differs from audio 2 (`caption2`) at a tier.
/// Shared by the worker threads, hence `Sync`.
pub trait Explainer: Sync {
    fn explain(
        &self,
        caption1: &str,
        caption2: &str,
        tier: u8,
    ) -> std::result::Result<String, ExplainError>;
}

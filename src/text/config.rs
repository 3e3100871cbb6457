//! Configuration of the text side (prompt length and special token ids), the `text` section of a
//! model config.

use serde::{Deserialize, Serialize};

use crate::error::{require_positive, Result};

/// Token ids and lengths of the text side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Prompt ids are padded/truncated to this length (40).
    pub prompt_length: usize,
    /// Token whose GPT-2 embedding separates the two audio prefixes (50256).
    pub separator_token_id: u32,
    /// Padding id (`!`, 0).
    pub pad_token_id: u32,
    /// Id the reference stops generation on (220, a bare space).
    pub stop_token_id: u32,
    /// GPT-2 `<|endoftext|>`.
    pub eos_token_id: u32,
    /// Explanation tiers (1-3) in the training data of the run that wrote this config (from its
    /// CSV names), so that `explain` can say when it is asked for another. Absent: not known
    /// (the official model's config; it was trained on all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_tiers: Option<Vec<u8>>,
}

impl TextConfig {
    /// A prompt of at least one token.
    pub fn validate(&self) -> Result<()> {
        require_positive("text", &[("prompt_length", self.prompt_length as f64)])
    }
}

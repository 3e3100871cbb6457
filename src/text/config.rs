//! Configuration of the text side (prompt length and special token ids), the `text` section of a
//! model config.

use serde::{Deserialize, Serialize};

use crate::error::{require_positive, AdiffError, Result};
use crate::text::vocabulary::Vocabulary;

/// Token ids and lengths of the text side. The ids are the model's: GPT-2's own, or with
/// `vocabulary` positions in it.
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
    /// The model's own vocabulary (`adiff build-dataset vocabulary`): model id `i` is GPT-2 id
    /// `vocabulary[i]`, and `gpt2.vocab_size` is its length. Absent: all of GPT-2's ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<Vec<u32>>,
}

impl TextConfig {
    /// A prompt of at least one token; with a vocabulary, one without repeats that has every
    /// special id.
    pub fn validate(&self) -> Result<()> {
        require_positive("text", &[("prompt_length", self.prompt_length as f64)])?;
        if let Some(v) = self.vocabulary()? {
            for (name, id) in self.special_ids() {
                if id as usize >= v.len() {
                    return Err(AdiffError::Config(format!(
                        "text.{name} {id} is not a model id: text.vocabulary has {} ids",
                        v.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The model's own vocabulary, if it has one.
    pub fn vocabulary(&self) -> Result<Option<Vocabulary>> {
        self.vocabulary.clone().map(Vocabulary::new).transpose()
    }

    /// The special ids with their field names.
    pub fn special_ids(&self) -> [(&'static str, u32); 4] {
        [
            ("separator_token_id", self.separator_token_id),
            ("pad_token_id", self.pad_token_id),
            ("stop_token_id", self.stop_token_id),
            ("eos_token_id", self.eos_token_id),
        ]
    }
}

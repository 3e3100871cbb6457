//! A model's own vocabulary: the subset of GPT-2's token ids a from-scratch GPT-2 keeps.
//!
//! GPT-2's embedding `transformer.wte.weight` is `[50257, C]`. A GPT-2 trained from scratch on a
//! narrow corpus (the demo's synthetic sound world uses well under 2000 GPT-2 tokens) can keep
//! only the rows of the tokens it will ever read or write: its `wte` is `[V, C]` and model id `i`
//! stands for GPT-2 id `vocabulary[i]`. The BPE tokenizer still splits text; [`Vocabulary`]
//! renumbers its ids. Why: the head multiplies every answer position by the whole `wte` three
//! times a training step (logits, their gradient to the hidden state and to `wte`), and AdamW
//! updates every row; at the demo's width that was most of a step.

use std::collections::HashMap;

use crate::error::{AdiffError, Result};

/// GPT-2 ids kept by a model, in the model's order (model id = position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    gpt2_ids: Vec<u32>,
    model_ids: HashMap<u32, u32>,
}

impl Vocabulary {
    /// `gpt2_ids[i]` is the GPT-2 id of model id `i`; the list must be non-empty and without
    /// repeats.
    pub fn new(gpt2_ids: Vec<u32>) -> Result<Self> {
        if gpt2_ids.is_empty() {
            return Err(AdiffError::Config("text.vocabulary is empty".into()));
        }
        let mut model_ids = HashMap::with_capacity(gpt2_ids.len());
        for (i, &g) in gpt2_ids.iter().enumerate() {
            if let Some(first) = model_ids.insert(g, i as u32) {
                return Err(AdiffError::Config(format!(
                    "text.vocabulary lists GPT-2 id {g} twice (at {first} and {i})"
                )));
            }
        }
        Ok(Self {
            gpt2_ids,
            model_ids,
        })
    }

    /// Number of model ids.
    pub fn len(&self) -> usize {
        self.gpt2_ids.len()
    }

    /// Never true ([`Vocabulary::new`] refuses an empty list); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.gpt2_ids.is_empty()
    }

    /// The GPT-2 ids, in model order.
    pub fn gpt2_ids(&self) -> &[u32] {
        &self.gpt2_ids
    }

    /// The model id of a GPT-2 id, if the model keeps it.
    pub fn to_model(&self, gpt2_id: u32) -> Option<u32> {
        self.model_ids.get(&gpt2_id).copied()
    }

    /// The GPT-2 id of a model id, if it is one.
    pub fn to_gpt2(&self, model_id: u32) -> Option<u32> {
        self.gpt2_ids.get(model_id as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbers_both_ways() {
        let v = Vocabulary::new(vec![50256, 0, 220, 383]).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v.to_model(220), Some(2));
        assert_eq!(v.to_model(50256), Some(0));
        assert_eq!(v.to_model(1), None);
        assert_eq!(v.to_gpt2(3), Some(383));
        assert_eq!(v.to_gpt2(4), None);
    }

    #[test]
    fn refuses_repeats_and_empty() {
        let e = Vocabulary::new(vec![5, 7, 5]).unwrap_err().to_string();
        assert!(e.contains("GPT-2 id 5 twice (at 0 and 2)"), "{e}");
        assert!(Vocabulary::new(vec![]).is_err());
    }
}

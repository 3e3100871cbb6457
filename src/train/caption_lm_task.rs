//! Stage 1, decoder part, with caption prefixes (`train-stage1 --part decoder
//! --caption-prefix`): GPT-2 learns to write each CSV row's answer after a prefix laid out as
//! ADIFF's, with the row's captions standing in for the audio:
//!
//! ```text
//! [caption 1 | wte(separator) | caption 2 | prompt]   each caption / prompt pooled into P slots
//!  P          1                 P           P          = 3P+1 positions, as stages 2 and 3
//! prefix [B, 3P+1, C] + answer a_0 .. a_{L-2}  -> GPT-2 (causal) -> positions 3P .. 3P+L-1
//! predict a_0 .. a_{L-1} (the loss of stages 2 and 3, on the answer tokens only)
//! ```
//!
//! Why: plain line-by-line pretraining puts answers at positions 0.., while stages 2 and 3 put
//! them after the 3P+1 prefix positions, whose position embeddings it never trains; and a GPT-2
//! that has already learned to *compare* two descriptions leaves stages 2 and 3 only the
//! mapping of audio embeddings to what a description holds. A slot holds the mean token
//! embedding of a contiguous run of the text's tokens (one token per slot when the text is no
//! longer than P, then the pad token), so no word is dropped whatever the caption's length.

use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::error::Result;
use crate::generate::{generate, GenerateOptions, Strategy};
use crate::model::checkpoint::{save_safetensors, Checkpoint};
use crate::train::data::{Batcher, Example};
use crate::train::lm_task::TrainableGpt2;
use crate::train::model::{pad_answers, prefixed_answer_loss};
use crate::train::trainer::TrainTask;

/// Validation uses epoch 0's prompt draws, so its loss is comparable across the run.
const VAL_EPOCH: u64 = 0;

/// Splits `ids` into `slots` contiguous runs: one id per slot (then `pad`) when there are no
/// more ids than slots, otherwise runs of `floor(n/slots)` or `ceil(n/slots)` ids.
pub fn pool_into_slots(ids: &[u32], slots: usize, pad: u32) -> Vec<Vec<u32>> {
    let n = ids.len();
    if n <= slots {
        (0..slots)
            .map(|j| vec![ids.get(j).copied().unwrap_or(pad)])
            .collect()
    } else {
        (0..slots)
            .map(|j| ids[j * n / slots..(j + 1) * n / slots].to_vec())
            .collect()
    }
}

/// Stage 1, decoder part, on caption-prefixed answers.
pub struct CaptionPrefixTask {
    pub model: TrainableGpt2,
    pub init: Checkpoint,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    /// Prompts and answer ids as stages 2 and 3 make them.
    pub batcher: Batcher,
    /// Slots per caption and for the prompt (the mappers' `prefix_length`).
    pub prefix_length: usize,
    pub separator_id: u32,
    /// Where sample generations stop.
    pub stop_id: u32,
    pub device: Device,
}

impl CaptionPrefixTask {
    /// The slots of example `index` in `epoch`: caption 1, the separator, caption 2, prompt.
    fn slots(&self, ex: &Example, epoch: u64, index: usize) -> Result<Vec<Vec<u32>>> {
        let tok = &self.batcher.tokenizer;
        let (p, pad) = (self.prefix_length, self.batcher.pad_id);
        let mut out = pool_into_slots(&tok.encode(&ex.caption1)?, p, pad);
        out.push(vec![self.separator_id]);
        out.extend(pool_into_slots(&tok.encode(&ex.caption2)?, p, pad));
        let prompt = self.batcher.prompt(ex, epoch, index);
        out.extend(pool_into_slots(&tok.encode(prompt)?, p, pad));
        Ok(out)
    }

    /// `[B, 3P+1, C]` prefixes (part of the graph: `wte` trains) of `examples[indices]`.
    fn prefix(&self, examples: &[Example], indices: &[usize], epoch: u64) -> Result<Tensor> {
        let mut ids = Vec::new();
        // Row s of the pooling matrix averages slot s's ids: [B*S, M] @ wte rows [M, C].
        let mut weights = Vec::new();
        let mut slots_per_row = 0;
        for &i in indices {
            let slots = self.slots(&examples[i], epoch, i)?;
            slots_per_row = slots.len();
            for slot in slots {
                weights.push((ids.len(), slot.len()));
                ids.extend(slot);
            }
        }
        let (rows, m) = (weights.len(), ids.len());
        let mut pool = vec![0f32; rows * m];
        for (r, &(start, len)) in weights.iter().enumerate() {
            pool[r * m + start..r * m + start + len].fill(1.0 / len as f32);
        }
        let pool = Tensor::from_vec(pool, (rows, m), &self.device)?;
        let ids = Tensor::from_vec(ids, (1, m), &self.device)?;
        // [1, M, C] -> [M, C]
        let embeds = self.model.gpt.embed_ids(&ids)?.squeeze(0)?;
        let c = embeds.dim(1)?;
        // [B*S, C] -> [B, S, C]
        Ok(pool
            .matmul(&embeds)?
            .reshape((indices.len(), slots_per_row, c))?)
    }

    fn loss(&self, examples: &[Example], indices: &[usize], epoch: u64) -> Result<Tensor> {
        let prefix = self.prefix(examples, indices, epoch)?;
        let answers = indices
            .iter()
            .map(|&i| self.batcher.answer_ids(&examples[i]))
            .collect::<Result<Vec<_>>>()?;
        let (ids, lengths) = pad_answers(&answers, self.batcher.pad_id, &self.device)?;
        prefixed_answer_loss(&self.model.gpt, &prefix, &ids, &lengths)
    }
}

impl TrainTask for CaptionPrefixTask {
    fn num_train(&self) -> usize {
        self.train.len()
    }

    fn num_val(&self) -> usize {
        self.val.len()
    }

    fn train_loss(&self, indices: &[usize], epoch: u64) -> Result<Tensor> {
        self.loss(&self.train, indices, epoch)
    }

    /// The loss is a mean over the answer tokens.
    fn train_loss_counted(&self, indices: &[usize], epoch: u64) -> Result<(Tensor, f64)> {
        let mut tokens = 0;
        for &i in indices {
            tokens += self.batcher.answer_ids(&self.train[i])?.len();
        }
        Ok((self.train_loss(indices, epoch)?, tokens as f64))
    }

    fn val_loss(&self, indices: &[usize]) -> Result<Tensor> {
        Ok(self.loss(&self.val, indices, VAL_EPOCH)?.detach())
    }

    /// Greedy answers of validation rows from their caption prefixes.
    fn samples(&self, indices: &[usize], max_tokens: usize) -> Result<Vec<String>> {
        let prefix = self.prefix(&self.val, indices, VAL_EPOCH)?.detach();
        let opts = GenerateOptions {
            strategy: Strategy::Greedy,
            max_new_tokens: max_tokens,
            stop_tokens: vec![self.stop_id],
        };
        let gens = generate(&self.model.gpt, &prefix, None, &opts)?;
        indices
            .iter()
            .zip(gens)
            .map(|(&i, g)| {
                let ex = &self.val[i];
                let text = self.batcher.tokenizer.decode_clean(&g.ids)?;
                Ok(format!(
                    "[{} | {}] {} -> {}",
                    ex.caption1,
                    ex.caption2,
                    text.trim(),
                    ex.answer
                ))
            })
            .collect()
    }

    fn vars(&self) -> &[(String, Var)] {
        &self.model.vars
    }

    fn export(&self, path: &Path) -> Result<()> {
        save_safetensors(&self.model.export_tensors(&self.init)?, None, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_take_one_token_per_slot_then_pad() {
        assert_eq!(
            pool_into_slots(&[5, 6], 4, 0),
            vec![vec![5], vec![6], vec![0], vec![0]]
        );
    }

    #[test]
    fn long_texts_keep_every_token_in_order() {
        let ids: Vec<u32> = (1..=11).collect();
        let slots = pool_into_slots(&ids, 4, 0);
        assert_eq!(slots.len(), 4);
        assert!(slots.iter().all(|s| (2..=3).contains(&s.len())));
        assert_eq!(slots.concat(), ids);
    }
}

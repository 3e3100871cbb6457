//! Stages 2 and 3: ADIFF learns to explain differences (and, from position-captioning rows, to
//! caption one audio) with next-token cross-entropy on the answers; HTSAT is frozen, GPT-2 too in
//! stage 2 (which tensors train comes from the stage's config).

use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::error::Result;
use crate::generate::{generate, GenerateOptions};
use crate::model::checkpoint::{save_safetensors, Checkpoint};
use crate::train::data::{Batcher, EmbeddingSource, Example};
use crate::train::model::{answer_loss, Batch, TrainableAdiff};
use crate::train::trainer::TrainTask;

/// Validation uses epoch 0's prompt draws, so its loss is comparable across the run.
const VAL_EPOCH: u64 = 0;

pub struct ExplanationTask {
    pub model: TrainableAdiff,
    /// The checkpoint the model was built from (frozen tensors for the exported file).
    pub init: Checkpoint,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub source: EmbeddingSource,
    pub batcher: Batcher,
    pub device: Device,
}

impl ExplanationTask {
    fn batch(&self, examples: &[Example], idx: &[usize], epoch: u64) -> Result<Batch> {
        self.batcher.batch(
            examples,
            idx,
            epoch,
            &self.source,
            &self.model.model.audio,
            &self.device,
        )
    }
}

impl TrainTask for ExplanationTask {
    fn num_train(&self) -> usize {
        self.train.len()
    }

    fn num_val(&self) -> usize {
        self.val.len()
    }

    fn train_loss(&self, indices: &[usize], epoch: u64) -> Result<Tensor> {
        let b = self.batch(&self.train, indices, epoch)?;
        answer_loss(&self.model.model, &b)
    }

    /// The loss is a mean over answer tokens, so its weight is their number.
    fn train_loss_counted(&self, indices: &[usize], epoch: u64) -> Result<(Tensor, f64)> {
        let b = self.batch(&self.train, indices, epoch)?;
        let tokens: usize = b.answer_lengths.iter().sum();
        Ok((answer_loss(&self.model.model, &b)?, tokens as f64))
    }

    fn val_loss(&self, indices: &[usize]) -> Result<Tensor> {
        let b = self.batch(&self.val, indices, VAL_EPOCH)?;
        Ok(answer_loss(&self.model.model, &b)?.detach())
    }

    /// Answer tokens of each training row (" <|endoftext|>" included, cut as training cuts).
    fn train_lengths(&self) -> Result<Option<Vec<usize>>> {
        self.train
            .iter()
            .map(|ex| Ok(self.batcher.answer_ids(ex)?.len()))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn samples(&self, indices: &[usize], max_tokens: usize) -> Result<Vec<String>> {
        let m = &self.model.model;
        let b = self.batch(&self.val, indices, VAL_EPOCH)?;
        let prefix = m
            .prefix(&b.embedding1, &b.embedding2, &b.prompt_ids)?
            .prefix
            .detach();
        let mut opts = GenerateOptions::new(&m.config().text);
        opts.max_new_tokens = max_tokens;
        let gens = generate(&m.gpt, &prefix, None, &opts)?;
        indices
            .iter()
            .zip(gens)
            .map(|(&i, g)| {
                let ex = &self.val[i];
                let text = self.batcher.tokenizer.decode_clean(&g.ids)?;
                Ok(format!(
                    "[{}] {} -> {}",
                    self.batcher.prompt(ex, VAL_EPOCH, i),
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
        let tensors = self.model.tensors(&self.init)?;
        save_safetensors(&tensors, None, path)
    }
}

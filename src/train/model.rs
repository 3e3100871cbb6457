//! The ADIFF model as it is trained: which tensors train (by checkpoint-name prefix, per stage)
//! and the loss, next-token cross-entropy on the answer tokens only.
//!
//! ```text
//! prefix [B, P, C] (121 positions)  +  answer embeddings a_0 .. a_{L-2}  -> GPT-2 (causal)
//! hidden at positions P-1 .. P+L-2 predict a_0 .. a_{L-1}; padding rows beyond each answer's
//! length are left out of the mean (the prefix positions never carry a target).
//! ```

use candle_core::{Device, Tensor, Var};

use crate::error::{AdiffError, Result};
use crate::model::adiff::Adiff;
use crate::model::audio_encoder::HTSAT_PREFIX;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::AdiffConfig;
use crate::model::gpt2::Gpt2;
use crate::train::vars::wte_and_head;
use crate::train::vars::{check_matched, tied_var_builder, under};

/// A model whose trainable tensors are [`Var`]s, sorted by name.
pub struct TrainableAdiff {
    pub model: Adiff,
    pub vars: Vec<(String, Var)>,
    /// Every checkpoint tensor the model read (what an exported model file holds).
    pub used: Vec<String>,
    /// The checkpoint stored `lm_head.weight` as a copy of `wte` (as the official one does):
    /// the model is built with the head tied to `wte`, as PyTorch trains it, and exports write
    /// the trained `wte` under both names.
    pub tied_head: bool,
}

impl TrainableAdiff {
    /// Builds the model from `ckpt`; tensors under one of `trainable` (checkpoint-name
    /// prefixes, e.g. `caption_decoder.cross_project`) become trainable, every other one stays
    /// a constant. HTSAT never trains in stages 2 and 3 (its embeddings may come from a cache).
    /// With `init_missing = Some(seed)`, trainable tensors the checkpoint lacks get their layer's
    /// default initialisation, seeded (e.g. mappers when starting from HTSAT + a hub GPT-2).
    pub fn build(
        ckpt: &Checkpoint,
        cfg: &AdiffConfig,
        trainable: &[String],
        init_missing: Option<u64>,
        device: &Device,
    ) -> Result<Self> {
        if let Some(p) = trainable
            .iter()
            .find(|p| under(p, HTSAT_PREFIX) || under(HTSAT_PREFIX, p))
        {
            return Err(AdiffError::Config(format!(
                "trainable prefix '{p}' covers HTSAT ({HTSAT_PREFIX}), which stays frozen in \
                 stages 2 and 3"
            )));
        }
        if ckpt.is_packed() {
            return Err(AdiffError::checkpoint(
                ckpt.path(),
                "holds packed (f16/i8) weights written by `adiff convert --dtype`, which are for \
                 inference only: train from the f32 checkpoint"
                    .to_string(),
            ));
        }
        let (vb, report, vars, tied_head) =
            tied_var_builder(ckpt, trainable, init_missing, device)?;
        let model = Adiff::load_or_init(vb, cfg, init_missing.is_some())
            .map_err(|e| AdiffError::checkpoint(ckpt.path(), e.to_string()))?;
        let used = report.used_names();
        report.finish()?;
        let vars = vars.sorted();
        check_matched(trainable, &vars)?;
        Ok(Self {
            model,
            vars,
            used,
            tied_head,
        })
    }

    /// All tensors the model read, the trainable ones with their current values, by name.
    pub fn tensors(&self, ckpt: &Checkpoint) -> Result<std::collections::HashMap<String, Tensor>> {
        let mut out = std::collections::HashMap::new();
        for name in &self.used {
            let t = match self.vars.iter().find(|(n, _)| n == name) {
                Some((_, v)) => v.as_tensor().detach(),
                None => ckpt
                    .get(name)
                    .ok_or_else(|| AdiffError::Invalid(format!("{name} left the checkpoint")))?
                    .clone(),
            };
            out.insert(name.clone(), t);
        }
        if self.tied_head {
            let (wte, head) = wte_and_head();
            let w = out
                .get(&wte)
                .cloned()
                .ok_or_else(|| AdiffError::Invalid(format!("{wte} missing from the model")))?;
            out.insert(head, w);
        }
        Ok(out)
    }

    /// Number of trainable values.
    pub fn num_trainable(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// One batch of training examples as tensors.
pub struct Batch {
    /// `[B, E]` HTSAT embeddings of the first and second audio.
    pub embedding1: Tensor,
    pub embedding2: Tensor,
    /// `[B, prompt_length]` u32 prompt ids (padded as at inference).
    pub prompt_ids: Tensor,
    /// `[B, L]` u32 answer ids, right-padded; row b holds `answer_lengths[b]` real tokens.
    pub answer_ids: Tensor,
    pub answer_lengths: Vec<usize>,
}

impl Batch {
    /// Builds the answer tensor from ragged ids (each row at least one token).
    pub fn new(
        embedding1: Tensor,
        embedding2: Tensor,
        prompt_ids: Tensor,
        answers: &[Vec<u32>],
        pad_id: u32,
    ) -> Result<Self> {
        let (answer_ids, answer_lengths) = pad_answers(answers, pad_id, embedding1.device())?;
        Ok(Self {
            embedding1,
            embedding2,
            prompt_ids,
            answer_ids,
            answer_lengths,
        })
    }

    pub fn len(&self) -> usize {
        self.answer_lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answer_lengths.is_empty()
    }

    /// Answer tokens that carry a target.
    pub fn num_tokens(&self) -> usize {
        self.answer_lengths.iter().sum()
    }
}

/// Ragged answer ids (each row at least one token) -> right-padded `[B, L]` u32 ids and each
/// row's real length.
pub fn pad_answers(
    answers: &[Vec<u32>],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor, Vec<usize>)> {
    let b = answers.len();
    if b == 0 || answers.iter().any(Vec::is_empty) {
        return Err(AdiffError::Invalid(
            "a training batch needs at least one row and one answer token per row".into(),
        ));
    }
    let l = answers.iter().map(Vec::len).max().unwrap_or(1);
    let mut flat = vec![pad_id; b * l];
    for (r, a) in answers.iter().enumerate() {
        flat[r * l..r * l + a.len()].copy_from_slice(a);
    }
    let ids = Tensor::from_vec(flat, (b, l), device)?;
    Ok((ids, answers.iter().map(Vec::len).collect()))
}

/// Mean next-token cross-entropy over the answer tokens of `batch` (a scalar tensor, part of
/// the autograd graph when the model has trainable tensors).
pub fn answer_loss(model: &Adiff, batch: &Batch) -> Result<Tensor> {
    // [B, P, C]
    let prefix = model
        .prefix(&batch.embedding1, &batch.embedding2, &batch.prompt_ids)?
        .prefix;
    prefixed_answer_loss(
        &model.gpt,
        &prefix,
        &batch.answer_ids,
        &batch.answer_lengths,
    )
}

/// Mean next-token cross-entropy of right-padded `answer_ids` `[B, L]` (row b holds
/// `answer_lengths[b]` real tokens) written by `gpt` after `prefix` `[B, P, C]`.
pub fn prefixed_answer_loss(
    gpt: &Gpt2,
    prefix: &Tensor,
    answer_ids: &Tensor,
    answer_lengths: &[usize],
) -> Result<Tensor> {
    let (b, p, c) = prefix.dims3()?;
    let l = answer_ids.dim(1)?;
    let limit = gpt.config().n_positions;
    if p + l - 1 > limit {
        return Err(AdiffError::Invalid(format!(
            "prefix {p} + answer {l} tokens exceed GPT-2's {limit} positions"
        )));
    }
    // Inputs: the prefix, then every answer token but the last. [B, P+L-1, C]
    let input = if l > 1 {
        let ans = gpt.embed_ids(&answer_ids.narrow(1, 0, l - 1)?)?;
        Tensor::cat(&[prefix, &ans], 1)?
    } else {
        prefix.clone()
    };
    // Positions P-1 .. P+L-2 predict answer tokens 0 .. L-1. [B, L, C]
    let hidden = gpt.forward_hidden(&input)?.narrow(1, p - 1, l)?;
    // Keep the rows with a target: [N, C] and [N].
    let keep: Vec<u32> = answer_lengths
        .iter()
        .enumerate()
        .flat_map(|(r, &n)| (0..n).map(move |i| (r * l + i) as u32))
        .collect();
    let keep = Tensor::from_vec(keep.clone(), keep.len(), hidden.device())?;
    let hidden = hidden.reshape((b * l, c))?.index_select(&keep, 0)?;
    let targets = answer_ids.flatten_all()?.index_select(&keep, 0)?;
    crate::train::loss::head_loss(gpt, &hidden, &targets)
}

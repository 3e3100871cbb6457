//! Stage 1, decoder part: GPT-2 language-model pretraining on text, one document per line, with
//! next-token cross-entropy on `line + " <|endoftext|>"` (the way stages 2 and 3 end answers).
//! Only GPT-2's tensors (`caption_decoder.gpt`) train; the exported file is the whole initial
//! checkpoint with them replaced.
//!
//! ```text
//! ids t_0 .. t_{L-1} (right-padded)  ->  GPT-2 (causal) on t_0 .. t_{L-2}
//! hidden at position i predicts t_{i+1}; the mean runs over every real target token of the batch
//! (as Hugging Face's `labels=` loss over the concatenated rows).
//! ```

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};

use crate::error::{AdiffError, Result};
use crate::generate::{generate, GenerateOptions, Strategy};
use crate::model::adiff::GPT2_PREFIX;
use crate::model::checkpoint::{save_safetensors, Checkpoint};
use crate::model::config::AdiffConfig;
use crate::model::gpt2::Gpt2;
use crate::text::tokenizer::Gpt2Tokenizer;
use crate::train::trainer::TrainTask;
use crate::train::vars::{check_matched, export_with, tied_var_builder, under, wte_and_head};

/// Appended to every line, as stages 2 and 3 append it to answers.
pub const LINE_SUFFIX: &str = " <|endoftext|>";
/// Tokens of a validation line given as the prompt of its sample continuation.
pub const SAMPLE_PROMPT_TOKENS: usize = 3;

/// Reads documents, one per non-empty line, from text files.
pub fn read_text_lines(paths: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = vec![];
    for p in paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| AdiffError::Invalid(format!("cannot read {}: {e}", p.display())))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    Ok(out)
}

/// Reads the `answer` column of ACD/CLD-format CSVs as documents (multi-line answers are joined
/// with spaces, so one answer stays one document).
pub fn read_csv_answers(paths: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = vec![];
    for p in paths {
        for row in crate::data::explanations::read_explanations(p)? {
            let a = row.answer.split_whitespace().collect::<Vec<_>>().join(" ");
            if !a.is_empty() {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// GPT-2 with its tensors under `trainable` (prefixes under `caption_decoder.gpt`) as [`Var`]s.
pub struct TrainableGpt2 {
    pub gpt: Gpt2,
    pub vars: Vec<(String, Var)>,
    /// The checkpoint stores `lm_head.weight` as a copy of `wte` (PyTorch ties them and saves
    /// both names): the model is built tied, so both uses train one tensor as in PyTorch, and
    /// the export writes the trained `wte` under both names.
    pub tied_head: bool,
}

impl TrainableGpt2 {
    pub fn build(
        ckpt: &Checkpoint,
        cfg: &AdiffConfig,
        trainable: &[String],
        init_missing: Option<u64>,
        device: &Device,
    ) -> Result<Self> {
        if let Some(p) = trainable.iter().find(|p| !under(p, GPT2_PREFIX)) {
            return Err(AdiffError::Config(format!(
                "trainable prefix '{p}' is outside GPT-2 ({GPT2_PREFIX}): stage 1's decoder part \
                 trains GPT-2 only"
            )));
        }
        let (vb, report, vars, tied_head) =
            tied_var_builder(ckpt, trainable, init_missing, device)?;
        let gpt = Gpt2::load_or_init(vb.pp(GPT2_PREFIX), &cfg.gpt2, init_missing.is_some())
            .map_err(|e| AdiffError::checkpoint(ckpt.path(), e.to_string()))?;
        report.finish()?;
        let vars = vars.sorted();
        check_matched(trainable, &vars)?;
        Ok(Self {
            gpt,
            vars,
            tied_head,
        })
    }

    /// The whole checkpoint `init` with GPT-2's trained tensors (a tied head under both names).
    pub fn export_tensors(
        &self,
        init: &Checkpoint,
    ) -> Result<std::collections::HashMap<String, Tensor>> {
        let mut out = export_with(init, &self.vars)?;
        let (wte, head) = wte_and_head();
        if self.tied_head {
            if let Some((_, v)) = self.vars.iter().find(|(n, _)| *n == wte) {
                out.insert(head, v.as_tensor().detach());
            }
        }
        Ok(out)
    }
}

/// Mean next-token cross-entropy of `rows` (each at least two ids) under `gpt`: a scalar, part of
/// the graph when GPT-2 has trainable tensors.
pub fn lm_loss(gpt: &Gpt2, rows: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Tensor> {
    if rows.is_empty() || rows.iter().any(|r| r.len() < 2) {
        return Err(AdiffError::Invalid(
            "a language-model batch needs rows of at least two tokens".into(),
        ));
    }
    let b = rows.len();
    let l = rows.iter().map(Vec::len).max().unwrap_or(2);
    let mut flat = vec![pad_id; b * l];
    for (r, ids) in rows.iter().enumerate() {
        flat[r * l..r * l + ids.len()].copy_from_slice(ids);
    }
    // [B, L]
    let ids = Tensor::from_vec(flat, (b, l), device)?;
    // [B, L-1, C]
    let hidden = gpt.forward_hidden(&gpt.embed_ids(&ids.narrow(1, 0, l - 1)?)?)?;
    let c = hidden.dim(2)?;
    // Positions with a real next token: row r, i < len_r - 1. [N]
    let keep: Vec<u32> = rows
        .iter()
        .enumerate()
        .flat_map(|(r, ids)| (0..ids.len() - 1).map(move |i| (r * (l - 1) + i) as u32))
        .collect();
    let keep = Tensor::from_vec(keep.clone(), keep.len(), device)?;
    // [N, C]
    let hidden = hidden.reshape((b * (l - 1), c))?.index_select(&keep, 0)?;
    let targets = ids
        .narrow(1, 1, l - 1)?
        .flatten_all()?
        .index_select(&keep, 0)?;
    crate::train::loss::head_loss(gpt, &hidden, &targets)
}

/// Stage 1, decoder part.
pub struct LanguageModelTask {
    pub model: TrainableGpt2,
    pub init: Checkpoint,
    pub tokenizer: Gpt2Tokenizer,
    /// Token ids of each document (`line + " <|endoftext|>"`, cut to the configured length).
    pub train: Vec<Vec<u32>>,
    pub val: Vec<Vec<u32>>,
    pub pad_id: u32,
    pub stop_id: u32,
    pub device: Device,
}

impl LanguageModelTask {
    /// Token ids of `lines`, each `line + " <|endoftext|>"` cut to `max_tokens` (at least 2).
    pub fn encode(
        tokenizer: &Gpt2Tokenizer,
        lines: &[String],
        max_tokens: usize,
    ) -> Result<Vec<Vec<u32>>> {
        lines
            .iter()
            .map(|l| {
                let mut ids = tokenizer.encode(&format!("{l}{LINE_SUFFIX}"))?;
                ids.truncate(max_tokens.max(2));
                Ok(ids)
            })
            .collect()
    }

    fn loss(&self, rows: &[Vec<u32>], idx: &[usize]) -> Result<Tensor> {
        let batch: Vec<Vec<u32>> = idx.iter().map(|&i| rows[i].clone()).collect();
        lm_loss(&self.model.gpt, &batch, self.pad_id, &self.device)
    }
}

impl TrainTask for LanguageModelTask {
    fn num_train(&self) -> usize {
        self.train.len()
    }

    fn num_val(&self) -> usize {
        self.val.len()
    }

    fn train_loss(&self, indices: &[usize], _epoch: u64) -> Result<Tensor> {
        self.loss(&self.train, indices)
    }

    /// The loss is a mean over the predicted tokens (every token of a line but its first).
    fn train_loss_counted(&self, indices: &[usize], epoch: u64) -> Result<(Tensor, f64)> {
        let tokens: usize = indices
            .iter()
            .map(|&i| self.train[i].len().saturating_sub(1))
            .sum();
        Ok((self.train_loss(indices, epoch)?, tokens as f64))
    }

    fn val_loss(&self, indices: &[usize]) -> Result<Tensor> {
        Ok(self.loss(&self.val, indices)?.detach())
    }

    /// Greedy continuation of each validation line's first [`SAMPLE_PROMPT_TOKENS`] tokens.
    fn samples(&self, indices: &[usize], max_tokens: usize) -> Result<Vec<String>> {
        let opts = GenerateOptions {
            strategy: Strategy::Greedy,
            max_new_tokens: max_tokens,
            stop_tokens: vec![self.stop_id],
        };
        indices
            .iter()
            .map(|&i| {
                let ids = &self.val[i];
                let n = SAMPLE_PROMPT_TOKENS.min(ids.len() - 1).max(1);
                let prompt = Tensor::from_vec(ids[..n].to_vec(), (1, n), &self.device)?;
                // [1, n, C]
                let embeds = self.model.gpt.embed_ids(&prompt)?.detach();
                let g = generate(&self.model.gpt, &embeds, None, &opts)?;
                let head = self.tokenizer.decode_clean(&ids[..n])?;
                let cont = g
                    .first()
                    .map(|g| self.tokenizer.decode_clean(&g.ids))
                    .transpose()?
                    .unwrap_or_default();
                let truth = self.tokenizer.decode_clean(&ids[n..])?;
                Ok(format!("[{head}] {} | {}", cont.trim(), truth.trim()))
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

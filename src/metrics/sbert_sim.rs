//! SBERT-sim: cosine similarity of Sentence-BERT embeddings, as aac-metrics 0.6's `sbert_sim`
//! (FENSE's similarity half; model `sentence-transformers/paraphrase-TinyBERT-L6-v2`).
//!
//! The model directory is a sentence-transformers save: `modules.json` (a Transformer module,
//! then Pooling, optionally Normalize), `sentence_bert_config.json` (`max_seq_length`,
//! `do_lower_case`), `1_Pooling/config.json`, the BERT `config.json`, `model.safetensors` (or
//! `pytorch_model.bin`) and `tokenizer.json` (or `vocab.txt`).
//!
//! Tensors: the encoder's `last_hidden_state` (B, T, H) f32 and `attention_mask` (B, T) are
//! pooled to an embedding (B, H) — the mean over real tokens (`sum(h * mask) / max(sum(mask),
//! 1e-9)`), or the [CLS] row — then scaled to unit length (`x / max(|x|, 1e-12)`), as
//! `SentenceTransformer.encode(normalize_embeddings=True)`.

use std::path::Path;

use candle_core::{IndexOp, D};

use super::bert::{self, length_batches, BertEncoder};
use crate::error::{AdiffError, Result};
use crate::model::checkpoint::Checkpoint;

/// How token states become one sentence embedding (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// A Sentence-BERT model: BERT, pooling, unit-length embeddings.
pub struct SentenceBert {
    encoder: BertEncoder,
    pooling: Pooling,
    /// `sentence_bert_config.json`'s `do_lower_case`: text lower-cased before tokenizing.
    lower_case: bool,
}

/// SBERT-sim of a corpus: per item the mean cosine similarity between the candidate and each of
/// its references; the corpus value is the mean over items.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SbertSimScores {
    pub corpus: f64,
    pub items: Vec<f64>,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdiffError::Config(format!("{}: cannot read: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| AdiffError::Config(format!("{}: not JSON: {e}", path.display())))
}

impl SentenceBert {
    /// Loads a sentence-transformers directory (see the module doc). Only the module chain
    /// Transformer -> Pooling (-> Normalize) is supported, with mean or CLS pooling; anything
    /// else (a Dense layer, max pooling) is an error naming the file.
    pub fn load(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        let modules = read_json(&modules_path)?;
        let kinds: Vec<String> = modules
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        let t = m.get("type").and_then(|t| t.as_str()).unwrap_or("?");
                        t.rsplit('.').next().unwrap_or(t).to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let pooling_dir = modules
            .as_array()
            .and_then(|a| {
                a.iter().find(|m| {
                    m.get("type")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| t.ends_with("Pooling"))
                })
            })
            .and_then(|m| m.get("path").and_then(|p| p.as_str()))
            .unwrap_or("1_Pooling")
            .to_string();
        let ok_chain = matches!(
            kinds.iter().map(String::as_str).collect::<Vec<_>>()[..],
            ["Transformer", "Pooling"] | ["Transformer", "Pooling", "Normalize"]
        );
        if !ok_chain {
            return Err(AdiffError::Config(format!(
                "{}: unsupported sentence-transformers modules {kinds:?} (expected Transformer, \
                 Pooling[, Normalize])",
                modules_path.display()
            )));
        }
        let pool_path = dir.join(&pooling_dir).join("config.json");
        let pool = read_json(&pool_path)?;
        let flag = |k: &str| pool.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        let modes = [
            "pooling_mode_cls_token",
            "pooling_mode_mean_tokens",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens",
            "pooling_mode_lasttoken",
        ];
        let on: Vec<&str> = modes.into_iter().filter(|m| flag(m)).collect();
        let pooling = match on[..] {
            ["pooling_mode_mean_tokens"] => Pooling::Mean,
            ["pooling_mode_cls_token"] => Pooling::Cls,
            _ => {
                return Err(AdiffError::Config(format!(
                    "{}: unsupported pooling {on:?} (mean or CLS only)",
                    pool_path.display()
                )))
            }
        };
        let st = read_json(&dir.join("sentence_bert_config.json"))?;
        let max_len = st
            .get("max_seq_length")
            .and_then(|v| v.as_u64())
            .unwrap_or(128) as usize;
        let lower_case = st
            .get("do_lower_case")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let cfg = bert::read_config(&dir.join("config.json"))?;
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                AdiffError::Config(format!(
                    "{}: no model.safetensors or pytorch_model.bin",
                    dir.display()
                ))
            })?;
        let ckpt = Checkpoint::load(&weights)?;
        let tokenizer = bert::load_tokenizer(dir, max_len)?;
        let encoder = BertEncoder::load(&ckpt, "", &cfg, tokenizer, max_len)?;
        Ok(Self {
            encoder,
            pooling,
            lower_case,
        })
    }

    /// Unit-length embeddings of `sents`, one `Vec` of H values each.
    pub fn encode<S: AsRef<str>>(&self, sents: &[S]) -> Result<Vec<Vec<f32>>> {
        // sentence-transformers strips each text (and lower-cases it when configured).
        let texts: Vec<String> = sents
            .iter()
            .map(|s| {
                let s = s.as_ref().trim();
                if self.lower_case {
                    s.to_lowercase()
                } else {
                    s.to_string()
                }
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = self.encoder.token_ids(&refs)?;
        let mut out = vec![Vec::new(); sents.len()];
        for (rows, batch) in length_batches(ids) {
            let h = self.encoder.forward(&batch)?;
            let pooled = match self.pooling {
                Pooling::Mean => {
                    let m = h.mask.unsqueeze(D::Minus1)?;
                    let sum = h.hidden.broadcast_mul(&m)?.sum(1)?;
                    let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                    sum.broadcast_div(&count)?
                }
                Pooling::Cls => h.hidden.i((.., 0, ..))?.contiguous()?,
            };
            for (mut v, row) in pooled.to_vec2::<f32>()?.into_iter().zip(rows) {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
                out[row] = v;
            }
        }
        Ok(out)
    }
}

/// Dot product of two unit-length embeddings (their cosine similarity), in f32 as torch.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// SBERT-sim of every item (`mult_refs[i]` are the references of `cands[i]`, at least one
/// each): the mean of the cosine similarities between the candidate's embedding and each
/// reference's, as aac-metrics (`(cand @ refs.T).mean()` in f32); corpus: the mean over items.
pub fn sbert_sim<S: AsRef<str>>(
    model: &SentenceBert,
    cands: &[S],
    mult_refs: &[Vec<S>],
) -> Result<SbertSimScores> {
    super::check_counts(cands.len(), mult_refs)?;
    let flat: Vec<&str> = mult_refs.iter().flatten().map(AsRef::as_ref).collect();
    let cand_emb = model.encode(cands)?;
    let ref_emb = model.encode(&flat)?;
    let mut items = Vec::with_capacity(cands.len());
    let mut start = 0;
    for (c, refs) in cand_emb.iter().zip(mult_refs) {
        let sims = ref_emb[start..start + refs.len()].iter().map(|r| dot(c, r));
        items.push(f64::from(sims.sum::<f32>() / refs.len() as f32));
        start += refs.len();
    }
    Ok(SbertSimScores {
        corpus: super::mean(&items),
        items,
    })
}

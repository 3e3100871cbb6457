//! The BERT text encoder under both of FENSE's models (the Sentence-BERT of
//! [`super::sbert_sim`] and the fluency error detector of [`super::fer`]): a Hugging Face BERT
//! `config.json`, its WordPiece tokenizer and candle-transformers' `BertModel` run on padded
//! batches.
//!
//! Tensors of one batch of B texts, T the longest encoding in it (at most the truncation length):
//! `input_ids` (B, T) u32 (padded with 0), `token_type_ids` (B, T) u32 zeros (one segment),
//! `attention_mask` (B, T) u32 (1 on tokens, 0 on padding), and the output `last_hidden_state`
//! (B, T, hidden) f32. Padding changes nothing in a text's outputs: padded keys get the
//! `f32::MIN` attention bias transformers uses, so their softmax weights are exactly 0.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config, HiddenAct, PositionEmbeddingType};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer, TruncationParams};

use crate::error::{AdiffError, Result};
use crate::model::checkpoint::Checkpoint;

/// Texts per forward pass (aac-metrics' default `batch_size`; the scores do not depend on it).
pub const BATCH_SIZE: usize = 32;

/// A Hugging Face BERT `config.json`, lenient about what old configs leave out (prajjwal1's
/// `bert-medium`, which fense's echecker uses, has no `layer_norm_eps`, `pad_token_id` or
/// `model_type`): missing fields take transformers' `BertConfig` defaults.
#[derive(Debug, serde::Deserialize)]
struct HfBertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// Reads `config.json` into candle-transformers' BERT config (whose own deserializer needs
/// fields old configs lack).
pub fn read_config(path: &Path) -> Result<Config> {
    let err = |m: String| AdiffError::Config(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let c: HfBertConfig =
        serde_json::from_str(&text).map_err(|e| err(format!("not a BERT config: {e}")))?;
    let hidden_act = match c.hidden_act.as_str() {
        "gelu" => HiddenAct::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluApproximate,
        "relu" => HiddenAct::Relu,
        other => return Err(err(format!("unsupported hidden_act '{other}'"))),
    };
    if let Some(p) = c.position_embedding_type.as_deref() {
        if p != "absolute" {
            return Err(err(format!("unsupported position_embedding_type '{p}'")));
        }
    }
    if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(err(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            c.hidden_size, c.num_attention_heads
        )));
    }
    Ok(Config {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        intermediate_size: c.intermediate_size,
        hidden_act,
        hidden_dropout_prob: 0.0,
        max_position_embeddings: c.max_position_embeddings,
        type_vocab_size: c.type_vocab_size,
        initializer_range: 0.02,
        layer_norm_eps: c.layer_norm_eps,
        pad_token_id: 0,
        position_embedding_type: PositionEmbeddingType::Absolute,
        use_cache: false,
        classifier_dropout: None,
        model_type: None,
    })
}

/// The tokenizer of a BERT directory, truncating to `max_len` tokens ([CLS] and [SEP]
/// included) and not padding (batches are padded here). `tokenizer.json` when there is one;
/// otherwise it is built from `vocab.txt` as transformers' `BertTokenizerFast` converter does
/// (BertNormalizer: clean text, Chinese characters split, lower-cased and accents stripped unless
/// `tokenizer_config.json` says `do_lower_case: false`; BertPreTokenizer; WordPiece with
/// `[UNK]`; `[CLS] $A [SEP]`).
pub fn load_tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer> {
    let json = dir.join("tokenizer.json");
    let mut tok = if json.is_file() {
        Tokenizer::from_file(&json)
            .map_err(|e| AdiffError::Tokenizer(format!("{}: {e}", json.display())))?
    } else {
        from_vocab(dir)?
    };
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| AdiffError::Tokenizer(format!("{}: {e}", dir.display())))?;
    tok.with_padding(None);
    Ok(tok)
}

fn from_vocab(dir: &Path) -> Result<Tokenizer> {
    let vocab = dir.join("vocab.txt");
    if !vocab.is_file() {
        return Err(AdiffError::Tokenizer(format!(
            "{}: neither tokenizer.json nor vocab.txt",
            dir.display()
        )));
    }
    let terr = |m: String| AdiffError::Tokenizer(format!("{}: {m}", vocab.display()));
    let lower = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
        .unwrap_or(true);
    let path = vocab.to_string_lossy().into_owned();
    let wp = WordPiece::from_file(&path)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| terr(e.to_string()))?;
    let mut tok = Tokenizer::new(wp);
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| terr(format!("no {t} token")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lower)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

/// A BERT encoder and its tokenizer.
pub struct BertEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// Where the weights came from, for messages.
    source: PathBuf,
    device: Device,
}

/// The hidden states of a batch: `hidden` (B, T, H) and `mask` (B, T) as f32 0/1.
pub struct Hidden {
    pub hidden: Tensor,
    pub mask: Tensor,
}

impl BertEncoder {
    /// Builds the encoder from `ckpt`'s tensors below `prefix` (`""` or `"encoder."`, a
    /// `bert.` prefix is also accepted); every missing or mis-shaped tensor is named in one error.
    pub fn load(
        ckpt: &Checkpoint,
        prefix: &str,
        cfg: &Config,
        tokenizer: Tokenizer,
        max_len: usize,
    ) -> Result<Self> {
        if max_len > cfg.max_position_embeddings {
            return Err(AdiffError::checkpoint(
                ckpt.path(),
                format!(
                    "texts are cut at {max_len} tokens but the model has {} positions",
                    cfg.max_position_embeddings
                ),
            ));
        }
        let device = Device::Cpu;
        let (vb, report) = ckpt.var_builder(DType::F32, &device);
        let mut vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        if ckpt.contains(&format!("{prefix}bert.embeddings.word_embeddings.weight")) {
            vb = vb.pp("bert");
        }
        let model = BertModel::load(vb, cfg)?;
        report.finish()?;
        Ok(Self {
            model,
            tokenizer,
            source: ckpt.path().to_path_buf(),
            device,
        })
    }

    /// Token ids of each text ([CLS] ... [SEP], truncated).
    pub fn token_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| AdiffError::Tokenizer(format!("{}: {e}", self.source.display())))
            })
            .collect()
    }

    /// `last_hidden_state` of one padded batch of token id lists (see [`length_batches`]).
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<Hidden> {
        let b = ids.len();
        let t = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = vec![0u32; b * t];
        let mut mask = vec![0u32; b * t];
        for (i, row) in ids.iter().enumerate() {
            flat[i * t..i * t + row.len()].copy_from_slice(row);
            mask[i * t..i * t + row.len()].fill(1);
        }
        let input_ids = Tensor::from_vec(flat, (b, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
        let token_type_ids = input_ids.zeros_like()?;
        let hidden = self
            .model
            .forward(&input_ids, &token_type_ids, Some(&mask))?;
        Ok(Hidden {
            hidden,
            mask: mask.to_dtype(DType::F32)?,
        })
    }
}

/// Token id lists cut into batches of at most [`BATCH_SIZE`], longest first, each with the
/// input positions of its rows: texts of like length share a batch, so a batch pads little
/// (sentence-transformers orders its batches the same way). Padding is masked, so the order
/// changes no value beyond float noise.
pub fn length_batches(ids: Vec<Vec<u32>>) -> Vec<(Vec<usize>, Vec<Vec<u32>>)> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
    let mut ids: Vec<Option<Vec<u32>>> = ids.into_iter().map(Some).collect();
    order
        .chunks(BATCH_SIZE)
        .map(|rows| {
            let batch = rows
                .iter()
                .map(|&i| ids[i].take().unwrap_or_default())
                .collect();
            (rows.to_vec(), batch)
        })
        .collect()
}

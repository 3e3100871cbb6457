//! Fluency error detection (FER), as aac-metrics 0.6's `fer` with fense's "echecker": a BERT
//! encoder whose [CLS] state feeds one linear layer of 6 independent sigmoid outputs, one per
//! error type ([`ERROR_NAMES`]); a sentence has a fluency error when the last ("error")
//! probability is over the threshold (0.9).
//!
//! The checkpoint is fense's `torch.save` of `{"model_type": str, "num_classes": int,
//! "state_dict": ...}` (`echecker_clotho_audiocaps_base.ckpt`), `BERTFlatClassifier`'s state
//! dict: `encoder.*` (a transformers `BertModel`, pooler included but unused; the
//! `encoder.embeddings.position_ids` buffer of transformers < 4.31 is ignored) and `clf.weight`
//! (6, H), `clf.bias` (6). The encoder's `config.json` and vocabulary come from the
//! `model_type` repository (`prajjwal1/bert-medium`), not the checkpoint.
//!
//! Tensors: `last_hidden_state` (B, T, H) -> [CLS] row (B, H) -> `clf` -> logits (B, 6) ->
//! sigmoid. Texts are first stripped of everything but word characters and whitespace and
//! lower-cased (`re.sub(r"[^\w\s]", "", x).lower()`), then tokenized with truncation at 64
//! tokens (aac-metrics pads to 64; padding changes nothing, see [`super::bert`]).

use std::io::BufReader;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, IndexOp};
use candle_nn::{Linear, Module};

use super::bert::{self, length_batches, BertEncoder};
use crate::error::{AdiffError, Result};
use crate::model::checkpoint::Checkpoint;

/// The detector's outputs, in order (fense's `_ERROR_NAMES`); the last is the overall error.
pub const ERROR_NAMES: [&str; 6] = [
    "add_tail",
    "repeat_event",
    "repeat_adv",
    "remove_conj",
    "remove_verb",
    "error",
];
/// Index of the overall "error" output in [`ERROR_NAMES`].
pub const ERROR_INDEX: usize = 5;
/// aac-metrics' `error_threshold`: an error probability above it flags the sentence.
pub const DEFAULT_ERROR_THRESHOLD: f64 = 0.9;
/// Tokens the detector reads (aac-metrics' `max_len`, [CLS] and [SEP] included).
pub const MAX_TOKENS: usize = 64;

/// fense's fluency error detector.
pub struct Echecker {
    encoder: BertEncoder,
    clf: Linear,
    /// The checkpoint's `model_type` (the hub repository of its encoder), when it has one.
    pub model_type: Option<String>,
}

/// FER of a corpus.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FerScores {
    /// 1.0 where the sentence's error probability is over the threshold, else 0.0.
    pub items: Vec<f64>,
    /// The six probabilities of each sentence ([`ERROR_NAMES`] order), f32 as torch.
    pub probs: Vec<[f32; 6]>,
    /// Fluency error rate: the mean of `items`.
    pub corpus: f64,
    /// Mean of each probability over the sentences.
    pub corpus_probs: [f64; 6],
}

/// fense's text preprocessing: drops every character that is neither a word character
/// (alphanumeric or `_`) nor whitespace, then lower-cases (Python's `re.sub(r"[^\w\s]", "", x)
/// .lower()`; Unicode letters and digits count as word characters, as in Python).
pub fn text_preprocess(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || *c == '_' || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
}

/// `model_type` and `num_classes` of a fense checkpoint (the top-level dict beside
/// `state_dict`), read from the archive's pickle without executing it.
fn read_header(path: &Path) -> Result<(Option<String>, Option<i64>)> {
    let err = |m: String| AdiffError::checkpoint(path, m);
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| err(format!("not a PyTorch zip archive: {e}")))?;
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| err("archive has no data.pkl".into()))?;
    let mut reader = BufReader::new(
        zip.by_name(&pkl)
            .map_err(|e| err(format!("cannot read {pkl}: {e}")))?,
    );
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut reader)
        .map_err(|e| err(format!("cannot unpickle {pkl}: {e}")))?;
    let obj = stack
        .finalize()
        .map_err(|e| err(format!("cannot unpickle {pkl}: {e}")))?;
    let Object::Dict(entries) = obj else {
        return Ok((None, None));
    };
    let (mut model_type, mut classes) = (None, None);
    for (k, v) in entries {
        match (k, v) {
            (Object::Unicode(k), Object::Unicode(v)) if k == "model_type" => model_type = Some(v),
            (Object::Unicode(k), Object::Int(n)) if k == "num_classes" => {
                classes = Some(i64::from(n))
            }
            (Object::Unicode(k), Object::Long(n)) if k == "num_classes" => classes = Some(n),
            _ => {}
        }
    }
    Ok((model_type, classes))
}

impl Echecker {
    /// Loads fense's checkpoint `ckpt` with its encoder's `config.json` and tokenizer
    /// (`tokenizer.json` or `vocab.txt`) from `bert_dir`.
    pub fn load(ckpt_path: &Path, bert_dir: &Path) -> Result<Self> {
        let (model_type, num_classes) = if is_zip(ckpt_path) {
            read_header(ckpt_path)?
        } else {
            (None, None)
        };
        let ckpt = Checkpoint::load(ckpt_path)?;
        let classes = ckpt
            .get("clf.weight")
            .map(|w| w.dims().first().copied().unwrap_or(0))
            .ok_or_else(|| {
                AdiffError::checkpoint(
                    ckpt_path,
                    "no clf.weight: not a fense echecker (BERTFlatClassifier) state dict",
                )
            })?;
        if classes != ERROR_NAMES.len() || num_classes.is_some_and(|n| n != classes as i64) {
            return Err(AdiffError::checkpoint(
                ckpt_path,
                format!(
                    "clf.weight has {classes} rows (num_classes {num_classes:?}); fense's detector \
                     has {} outputs",
                    ERROR_NAMES.len()
                ),
            ));
        }
        let cfg = bert::read_config(&bert_dir.join("config.json"))?;
        let tokenizer = bert::load_tokenizer(bert_dir, MAX_TOKENS)?;
        let encoder = BertEncoder::load(&ckpt, "encoder.", &cfg, tokenizer, MAX_TOKENS)?;
        let (vb, report) = ckpt.var_builder(DType::F32, &candle_core::Device::Cpu);
        let clf = candle_nn::linear(cfg.hidden_size, ERROR_NAMES.len(), vb.pp("clf"))?;
        report.finish()?;
        Ok(Self {
            encoder,
            clf,
            model_type,
        })
    }

    /// The six error probabilities of each sentence (after [`text_preprocess`]).
    pub fn probs<S: AsRef<str>>(&self, sents: &[S]) -> Result<Vec<[f32; 6]>> {
        let texts: Vec<String> = sents.iter().map(|s| text_preprocess(s.as_ref())).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = self.encoder.token_ids(&refs)?;
        let mut out = vec![[0f32; 6]; sents.len()];
        for (rows, batch) in length_batches(ids) {
            let h = self.encoder.forward(&batch)?;
            let cls = h.hidden.i((.., 0, ..))?.contiguous()?;
            let probs = candle_nn::ops::sigmoid(&self.clf.forward(&cls)?)?;
            for (p, row) in probs.to_vec2::<f32>()?.into_iter().zip(rows) {
                out[row].copy_from_slice(&p[..6]);
            }
        }
        Ok(out)
    }
}

fn is_zip(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PK\x03\x04"
}

/// FER of `cands`: a sentence counts as an error when its "error" probability is over
/// `threshold` (compared in f32, as numpy compares the float32 probabilities with 0.9).
pub fn fer<S: AsRef<str>>(echecker: &Echecker, cands: &[S], threshold: f64) -> Result<FerScores> {
    if cands.is_empty() {
        return Err(AdiffError::Invalid(
            "nothing to score: no candidates".into(),
        ));
    }
    let probs = echecker.probs(cands)?;
    let items: Vec<f64> = probs
        .iter()
        .map(|p| f64::from(u8::from(p[ERROR_INDEX] > threshold as f32)))
        .collect();
    let mut corpus_probs = [0f64; 6];
    for (k, c) in corpus_probs.iter_mut().enumerate() {
        let col: Vec<f64> = probs.iter().map(|p| f64::from(p[k])).collect();
        *c = super::mean(&col);
    }
    Ok(FerScores {
        corpus: super::mean(&items),
        items,
        probs,
        corpus_probs,
    })
}

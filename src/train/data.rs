//! Training data: rows of ACD/CLD-style CSVs (several files at once, e.g. difference and
//! position-captioning rows) turned into batches of HTSAT embeddings, prompt ids and answer ids.
//!
//! The prompt of an example is drawn from the prompt database for the row's kind (the tier from
//! the file name, or which caption a captioning row answers with), a fresh draw per epoch from a
//! seeded generator, so a run and its resumed continuation see the same prompts; rows whose kind
//! cannot be told keep their CSV `input`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;

use crate::audio::config::AudioConfig;
use crate::audio::{load_clip, CropMode};
use crate::data::embed_cache::EmbedCache;
use crate::data::explanations::read_explanations;
use crate::error::{AdiffError, Result};
use crate::model::audio_encoder::AudioEncoder;
use crate::text::prompts::{PromptDatabase, PromptKind};
use crate::text::tokenizer::Gpt2Tokenizer;
use crate::train::config::TrainConfig;
use crate::train::model::Batch;
use crate::train::trainer::epoch_order;

/// What the answers end with, as in the reference data loader: the first token (a space, 220)
/// is where generation stops.
pub const ANSWER_SUFFIX: &str = " <|endoftext|>";

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub audio1: String,
    pub audio2: String,
    /// What the prompt asks for, when it can be told from the file and row.
    pub kind: Option<PromptKind>,
    /// The CSV's captions of the first and second audio.
    pub caption1: String,
    pub caption2: String,
    /// The CSV's own prompt.
    pub input: String,
    pub answer: String,
    /// `file:line`, for messages.
    pub origin: String,
}

/// The tier named in a file name (`_fewwords_`, `_sentence_`, `_detail_`), if exactly one is.
fn tier_of(path: &Path) -> Option<u8> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let found: Vec<u8> = [("fewwords", 1), ("sentence", 2), ("detail", 3)]
        .iter()
        .filter(|(tag, _)| name.contains(tag))
        .map(|&(_, t)| t)
        .collect();
    match found[..] {
        [t] => Some(t),
        _ => None,
    }
}

/// Reads every row of the CSVs (difference rows and position-captioning rows alike).
pub fn read_examples(paths: &[PathBuf]) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for path in paths {
        let tier = tier_of(path);
        let captioning = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().to_lowercase().contains("caption"));
        for row in read_explanations(path)? {
            let kind = if captioning {
                if row.answer == row.caption1 {
                    Some(PromptKind::CaptionFirst)
                } else if row.answer == row.caption2 {
                    Some(PromptKind::CaptionSecond)
                } else {
                    None
                }
            } else {
                tier.map(PromptKind::Tier)
            };
            out.push(Example {
                origin: format!("{}:{}", path.display(), row.line),
                audio1: row.filepath1,
                audio2: row.filepath2,
                kind,
                caption1: row.caption1,
                caption2: row.caption2,
                input: row.input,
                answer: row.answer,
            });
        }
    }
    if out.is_empty() {
        return Err(AdiffError::Invalid(
            "no training rows in the given CSVs".into(),
        ));
    }
    Ok(out)
}

/// Where HTSAT embeddings come from.
pub enum EmbeddingSource {
    /// Precomputed by `adiff build-dataset embed-cache` (HTSAT is frozen, so this is exact).
    Cache(EmbedCache),
    /// Decode and encode the audio at every step with the model's own (frozen) HTSAT: slow, for
    /// data without a cache.
    Audio {
        root: PathBuf,
        audio: AudioConfig,
        crop: CropMode,
    },
}

impl EmbeddingSource {
    /// `[N, E]` embeddings of the files, in order (`encoder` serves the audio source).
    pub fn embeddings(
        &self,
        paths: &[&str],
        encoder: &AudioEncoder,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            Self::Cache(cache) => cache.embeddings(paths, device),
            Self::Audio { root, audio, crop } => {
                let clips = paths
                    .iter()
                    .map(|p| load_clip(&root.join(p), audio, *crop))
                    .collect::<Result<Vec<_>>>()?;
                let (_, out) = encoder.encode(&clips)?;
                Ok(out.embedding.to_device(device)?)
            }
        }
    }

    /// Names the first file the source cannot provide, if any (checked before training starts).
    pub fn check(&self, examples: &[Example]) -> Result<()> {
        let missing: Vec<&str> = examples
            .iter()
            .flat_map(|e| [e.audio1.as_str(), e.audio2.as_str()])
            .filter(|p| match self {
                Self::Cache(c) => !c.contains(p),
                Self::Audio { root, .. } => !root.join(p).is_file(),
            })
            .collect();
        if let Some(first) = missing.first() {
            let what = match self {
                Self::Cache(c) => format!("the embedding cache {}", c.dir().display()),
                Self::Audio { root, .. } => format!("the audio root {}", root.display()),
            };
            return Err(AdiffError::Invalid(format!(
                "{} audio reference(s) not found in {what}, e.g. {first}",
                missing.len()
            )));
        }
        Ok(())
    }
}

/// Turns examples into batches: prompts drawn per epoch, texts tokenized.
pub struct Batcher {
    pub tokenizer: Gpt2Tokenizer,
    pub prompts: PromptDatabase,
    /// Use the database (true) or always the CSV `input` (false).
    pub sample_prompts: bool,
    pub max_answer_tokens: usize,
    pub pad_id: u32,
    pub seed: u64,
}

impl Batcher {
    /// The prompt example `index` gets in `epoch` (deterministic in seed, epoch and index).
    pub fn prompt<'e>(&'e self, ex: &'e Example, epoch: u64, index: usize) -> &'e str {
        match (self.sample_prompts, ex.kind) {
            (true, Some(kind)) => {
                let mix =
                    self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64) << 1;
                let mut rng = rand::rngs::StdRng::seed_from_u64(mix);
                self.prompts.sample(kind, &mut rng)
            }
            _ => &ex.input,
        }
    }

    /// Answer ids: the answer, " <|endoftext|>", truncated to `max_answer_tokens`.
    pub fn answer_ids(&self, ex: &Example) -> Result<Vec<u32>> {
        let mut ids = self
            .tokenizer
            .encode(&format!("{}{ANSWER_SUFFIX}", ex.answer))
            .map_err(|e| AdiffError::Invalid(format!("{}: {e}", ex.origin)))?;
        ids.truncate(self.max_answer_tokens);
        if ids.is_empty() {
            return Err(AdiffError::Invalid(format!("{}: empty answer", ex.origin)));
        }
        Ok(ids)
    }

    /// The batch of `examples[indices]` in `epoch`.
    pub fn batch(
        &self,
        examples: &[Example],
        indices: &[usize],
        epoch: u64,
        source: &EmbeddingSource,
        encoder: &AudioEncoder,
        device: &Device,
    ) -> Result<Batch> {
        let rows: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
        let a1: Vec<&str> = rows.iter().map(|e| e.audio1.as_str()).collect();
        let a2: Vec<&str> = rows.iter().map(|e| e.audio2.as_str()).collect();
        let e1 = source.embeddings(&a1, encoder, device)?;
        let e2 = source.embeddings(&a2, encoder, device)?;
        let mut prompt_ids = Vec::new();
        let mut answers = Vec::new();
        for (&i, ex) in indices.iter().zip(&rows) {
            let prompt = self.prompt(ex, epoch, i);
            let ids = self.tokenizer.encode_prompt(prompt);
            prompt_ids.extend(ids.map_err(|e| AdiffError::Invalid(format!("{}: {e}", ex.origin)))?);
            answers.push(self.answer_ids(ex)?);
        }
        let plen = prompt_ids.len() / rows.len();
        let prompt_ids = Tensor::from_vec(prompt_ids, (rows.len(), plen), device)?;
        Batch::new(e1, e2, prompt_ids, &answers, self.pad_id)
    }
}

/// Mixed into the config seed for the hold-out split, so that it is not epoch 0's order.
const SPLIT_SEED_MIX: u64 = 0x5EED;

/// Splits off a seeded `val_fraction` of `train` as validation when `val` is empty (every stage
/// holds out the same rows for the same seed); returns (train, validation).
pub fn hold_out<T>(mut train: Vec<T>, val: Vec<T>, cfg: &TrainConfig) -> (Vec<T>, Vec<T>) {
    if !val.is_empty() || cfg.val_fraction == 0.0 || train.len() < 2 {
        return (train, val);
    }
    let order = epoch_order(cfg.seed ^ SPLIT_SEED_MIX, 0, train.len());
    let n_val = ((train.len() as f64 * cfg.val_fraction).round() as usize).min(train.len() - 1);
    let held: std::collections::HashSet<usize> = order[..n_val].iter().copied().collect();
    let (mut kept, mut out) = (vec![], vec![]);
    for (i, x) in train.drain(..).enumerate() {
        if held.contains(&i) {
            out.push(x);
        } else {
            kept.push(x);
        }
    }
    (kept, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::AdiffConfig;

    /// A row whose answer has a token the model's vocabulary lacks is refused with its
    /// `file:line` and the token, not a bare tokenizer error.
    #[test]
    fn an_answer_outside_the_vocabulary_names_its_row() {
        let mut text = AdiffConfig::tiny().text;
        // `<|endoftext|>`, `!`, a bare space, " the", " second", " audio", " is", " louder", "."
        let vocabulary = vec![0, 13, 220, 262, 1218, 6597, 318, 27089, 50256];
        (text.pad_token_id, text.stop_token_id) = (0, 2);
        (text.separator_token_id, text.eos_token_id) = (8, 8);
        text.vocabulary = Some(vocabulary);
        let batcher = Batcher {
            tokenizer: Gpt2Tokenizer::bundled(&text).unwrap(),
            prompts: PromptDatabase::bundled().unwrap(),
            sample_prompts: false,
            max_answer_tokens: 40,
            pad_id: text.pad_token_id,
            seed: 0,
        };
        let mut ex = Example {
            audio1: "a.wav".into(),
            audio2: "b.wav".into(),
            kind: None,
            caption1: String::new(),
            caption2: String::new(),
            input: "explain".into(),
            answer: " the second audio is louder.".into(),
            origin: "train_sentence_answer.csv:7".into(),
        };
        assert_eq!(batcher.answer_ids(&ex).unwrap().len(), 8);
        ex.answer = " the second audio is quieter.".into();
        let e = batcher.answer_ids(&ex).unwrap_err().to_string();
        assert!(e.contains("train_sentence_answer.csv:7"), "{e}");
        assert!(e.contains("has no token \" quieter\""), "{e}");
    }
}

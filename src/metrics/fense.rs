//! FENSE (Fluency ENhanced Sentence-bert Evaluation, Zhou et al. 2022), as aac-metrics 0.6's
//! `fense`: each candidate's SBERT-sim ([`super::sbert_sim`]) times `1 - penalty * fer`, fer
//! being 1 when the fluency error detector ([`super::fer`]) flags the candidate (error
//! probability over 0.9) and the penalty 0.9; the corpus FENSE is the mean over items.
//!
//! Models (tensors and shapes in the two modules above): `sentence-transformers/
//! paraphrase-TinyBERT-L6-v2` and fense's `echecker_clotho_audiocaps_base.ckpt` on
//! `prajjwal1/bert-medium`. A model directory ([`FenseFiles::from_dir`], `adiff eval
//! --fense-model`) holds `sbert/` (a sentence-transformers save) and `echecker/` (one `.ckpt` with
//! the encoder's `config.json` and `vocab.txt` or `tokenizer.json`).

use std::path::{Path, PathBuf};

use super::fer::{self, Echecker, FerScores};
use super::sbert_sim::{self, SentenceBert};
use crate::error::{AdiffError, Result};

/// aac-metrics' `penalty`: a flagged candidate keeps 1 - 0.9 = 10% of its score.
pub const DEFAULT_PENALTY: f64 = 0.9;

/// FENSE's two settings (aac-metrics' defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FenseConfig {
    /// Error probability above which a candidate is flagged.
    pub error_threshold: f64,
    /// Fraction of the score a flagged candidate loses.
    pub penalty: f64,
}

impl Default for FenseConfig {
    fn default() -> Self {
        Self {
            error_threshold: fer::DEFAULT_ERROR_THRESHOLD,
            penalty: DEFAULT_PENALTY,
        }
    }
}

/// Where FENSE's model files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenseFiles {
    /// A sentence-transformers directory.
    pub sbert_dir: PathBuf,
    /// fense's echecker checkpoint.
    pub echecker_ckpt: PathBuf,
    /// `config.json` and `vocab.txt`/`tokenizer.json` of the echecker's encoder.
    pub echecker_bert_dir: PathBuf,
}

impl FenseFiles {
    /// `dir/sbert/` and `dir/echecker/` (whose one `.ckpt` file is the detector).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let sbert_dir = dir.join("sbert");
        let echecker_dir = dir.join("echecker");
        let layout = || {
            format!(
                "expected {}/sbert/ (a sentence-transformers model) and {}/echecker/ (the \
                 echecker .ckpt with its encoder's config.json and vocab.txt)",
                dir.display(),
                dir.display()
            )
        };
        if !sbert_dir.join("modules.json").is_file() {
            return Err(AdiffError::Config(format!(
                "FENSE model: no {}: {}",
                sbert_dir.join("modules.json").display(),
                layout()
            )));
        }
        let ckpts: Vec<PathBuf> = std::fs::read_dir(&echecker_dir)
            .map_err(|e| {
                AdiffError::Config(format!(
                    "FENSE model: {}: {e}: {}",
                    echecker_dir.display(),
                    layout()
                ))
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
            .collect();
        let [ckpt] = &ckpts[..] else {
            return Err(AdiffError::Config(format!(
                "FENSE model: {} holds {} .ckpt files, expected one: {}",
                echecker_dir.display(),
                ckpts.len(),
                layout()
            )));
        };
        Ok(Self {
            sbert_dir,
            echecker_ckpt: ckpt.clone(),
            echecker_bert_dir: echecker_dir,
        })
    }
}

/// Both of FENSE's models, loaded.
pub struct FenseModels {
    pub sbert: SentenceBert,
    pub echecker: Echecker,
}

impl FenseModels {
    pub fn load(files: &FenseFiles) -> Result<Self> {
        Ok(Self {
            sbert: SentenceBert::load(&files.sbert_dir)?,
            echecker: Echecker::load(&files.echecker_ckpt, &files.echecker_bert_dir)?,
        })
    }
}

/// FENSE of a corpus, with its two parts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FenseScores {
    /// Mean of `items`.
    pub corpus: f64,
    /// Each candidate's FENSE.
    pub items: Vec<f64>,
    pub sbert_sim: sbert_sim::SbertSimScores,
    pub fer: FerScores,
}

/// `score * (1 - penalty * fer)`: the fluency penalty FENSE and SPIDEr-FL apply to each item.
pub fn penalize(score: f64, fer: f64, penalty: f64) -> f64 {
    score * (1.0 - penalty * fer)
}

/// FENSE of `cands` against `mult_refs` (at least one reference each).
pub fn fense<S: AsRef<str>>(
    models: &FenseModels,
    cands: &[S],
    mult_refs: &[Vec<S>],
    cfg: &FenseConfig,
) -> Result<FenseScores> {
    let sim = sbert_sim::sbert_sim(&models.sbert, cands, mult_refs)?;
    let fer = fer::fer(&models.echecker, cands, cfg.error_threshold)?;
    let items: Vec<f64> = sim
        .items
        .iter()
        .zip(&fer.items)
        .map(|(&s, &f)| penalize(s, f, cfg.penalty))
        .collect();
    Ok(FenseScores {
        corpus: super::mean(&items),
        items,
        sbert_sim: sim,
        fer,
    })
}

//! Stage 1, encoder part: HTSAT learns audio tagging with binary cross-entropy on multi-hot clip
//! labels (the paper pretrains the audio encoder unimodally before ADIFF's stages 2 and 3).
//!
//! The K labels of a run use HTSAT's first K clip-wise outputs (of its 527 AudioSet classes); the
//! other outputs get no target. Log-mels are computed once per clip (the front end has no
//! trainable tensor) and kept in memory (`frames x mels` f32 values per clip, 256 KB at the paper's
//! settings). bn0 stays frozen in eval mode (its folded scale and shift are derived from running
//! statistics at load time), as do the STFT and mel matrices. Not reproduced from the reference
//! training: SpecAugment, mixup and drop-path (this HTSAT has no stochastic layers), so a step is
//! deterministic and resume stays exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};

use crate::audio::{load_clip, CropMode};
use crate::data::labels::{self, LabelSet, LabelledFile};
use crate::error::{AdiffError, Result};
use crate::model::audio_encoder::{AudioEncoder, HTSAT_PREFIX};
use crate::model::checkpoint::{save_safetensors, Checkpoint, TrainablePredicate};
use crate::model::config::AdiffConfig;
use crate::train::trainer::TrainTask;
use crate::train::vars::{check_matched, export_with, under};

/// HTSAT parts that never train: bn0 (folded from running statistics at load time) and the
/// fixed STFT / mel front end.
pub const FROZEN_HTSAT_PARTS: [&str; 3] = ["bn0", "spectrogram_extractor", "logmel_extractor"];
/// Validation clips per forward pass when accuracy is measured.
const EVAL_BATCH: usize = 8;
/// Decision threshold for labels that belong to no group.
const THRESHOLD: f32 = 0.5;

/// A clip ready for training: its log-mel and targets.
pub struct TaggedClip {
    pub path: String,
    /// `[frames * mels]` row-major log-mel.
    pub logmel: Vec<f32>,
    /// `[K]` multi-hot.
    pub targets: Vec<f32>,
}

/// Reads every file's audio once and computes its log-mel.
pub fn prepare_clips(
    files: &[LabelledFile],
    labels: &LabelSet,
    root: &Path,
    encoder: &AudioEncoder,
    cfg: &AdiffConfig,
    crop: CropMode,
) -> Result<Vec<TaggedClip>> {
    files
        .iter()
        .map(|f| {
            let path: PathBuf = root.join(&f.path);
            let samples = load_clip(&path, &cfg.audio, crop)?;
            Ok(TaggedClip {
                path: f.path.clone(),
                logmel: encoder.front_end.log_mel(&samples)?,
                targets: labels.targets(&f.labels, &f.path)?,
            })
        })
        .collect()
}

/// An audio encoder whose HTSAT tensors (minus [`FROZEN_HTSAT_PARTS`]) under `trainable` are
/// [`Var`]s, sorted by name.
pub struct TrainableHtsat {
    pub encoder: AudioEncoder,
    pub vars: Vec<(String, Var)>,
}

impl TrainableHtsat {
    /// Builds the encoder from `ckpt`; every prefix of `trainable` must lie under HTSAT
    /// (`audio_encoder.base.htsat`) and must not name a frozen part.
    ///
    /// With `init_missing = Some(seed)`, trainable HTSAT tensors the checkpoint lacks start from
    /// HTSAT's own initialisation (see `model::htsat`), seeded.
    pub fn build(
        ckpt: &Checkpoint,
        cfg: &AdiffConfig,
        trainable: &[String],
        init_missing: Option<u64>,
        device: &Device,
    ) -> Result<Self> {
        let frozen: Vec<String> = FROZEN_HTSAT_PARTS
            .iter()
            .map(|p| format!("{HTSAT_PREFIX}.{p}"))
            .collect();
        for p in trainable {
            if !under(p, HTSAT_PREFIX) {
                return Err(AdiffError::Config(format!(
                    "trainable prefix '{p}' is outside HTSAT ({HTSAT_PREFIX}): stage 1's encoder \
                     part trains HTSAT only"
                )));
            }
            if let Some(f) = frozen.iter().find(|f| under(p, f)) {
                return Err(AdiffError::Config(format!(
                    "trainable prefix '{p}' names {f}, which stays frozen (eval-mode batch norm \
                     and the fixed log-mel front end)"
                )));
            }
        }
        let prefixes = trainable.to_vec();
        let predicate: TrainablePredicate = std::sync::Arc::new(move |name: &str| {
            prefixes.iter().any(|p| under(name, p)) && !frozen.iter().any(|f| under(name, f))
        });
        let (vb, report, vars) =
            ckpt.trainable_var_builder(DType::F32, device, predicate, init_missing);
        let encoder = AudioEncoder::load(vb, cfg)
            .map_err(|e| AdiffError::checkpoint(ckpt.path(), e.to_string()))?;
        report.finish()?;
        let vars = vars.sorted();
        check_matched(trainable, &vars)?;
        Ok(Self { encoder, vars })
    }
}

/// Name of a tensor of HTSAT's bn0.
fn bn0_name(what: &str) -> String {
    format!("{HTSAT_PREFIX}.bn0.{what}")
}

/// Whether `ckpt` has HTSAT's bn0 (its running statistics).
pub fn has_bn0(ckpt: &Checkpoint) -> bool {
    ckpt.contains(&bn0_name("running_mean")) && ckpt.contains(&bn0_name("running_var"))
}

/// Per-mel-bin mean and (population) variance of the clips' log-mels over all their frames:
/// what a BatchNorm's running statistics converge to on these clips. A bn0 that starts from
/// scratch gets them, because adiff keeps bn0 in eval mode (frozen) while HTSAT trains; with
/// PyTorch's fresh statistics (0 and 1) raw decibels (-100..+20) reach the patch embedding, and
/// tagging trains far worse (measured: background 0.48 against 0.98 after one epoch).
pub fn logmel_statistics(clips: &[TaggedClip], mels: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut sum = vec![0f64; mels];
    let mut sq = vec![0f64; mels];
    let mut frames = 0usize;
    for c in clips {
        if mels == 0 || c.logmel.len() % mels != 0 {
            return Err(AdiffError::Invalid(format!(
                "{}: log-mel of {} values is not a whole number of {mels}-bin frames",
                c.path,
                c.logmel.len()
            )));
        }
        for frame in c.logmel.chunks_exact(mels) {
            for (m, &v) in frame.iter().enumerate() {
                sum[m] += f64::from(v);
                sq[m] += f64::from(v) * f64::from(v);
            }
        }
        frames += c.logmel.len() / mels;
    }
    if frames == 0 {
        return Err(AdiffError::Invalid(
            "no log-mel frames to compute bn0 statistics from".into(),
        ));
    }
    let n = frames as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let var = sum
        .iter()
        .zip(&sq)
        .map(|(s, q)| ((q / n) - (s / n) * (s / n)).max(0.0) as f32)
        .collect();
    Ok((mean, var))
}

/// `ckpt` plus a bn0 with weight 1, bias 0 and the given running statistics, where it has none
/// (bn0 is frozen, so `--init-missing`, which initialises trainable tensors, does not make it).
pub fn with_bn0(mut ckpt: Checkpoint, mean: &[f32], var: &[f32]) -> Result<Checkpoint> {
    let dev = Device::Cpu;
    let n = mean.len();
    let fresh: HashMap<String, Tensor> = [
        ("weight", vec![1f32; n]),
        ("bias", vec![0f32; n]),
        ("running_mean", mean.to_vec()),
        ("running_var", var.to_vec()),
    ]
    .into_iter()
    .map(|(name, v)| Ok((name.to_string(), Tensor::from_vec(v, n, &dev)?)))
    .collect::<Result<_>>()?;
    ckpt.add_prefixed(
        Checkpoint::from_tensors("bn0 from the training clips", fresh),
        &format!("{HTSAT_PREFIX}.bn0."),
    );
    Ok(ckpt)
}

/// Mean binary cross-entropy of `logits` against `targets` (same shape), from the logits:
/// `max(x, 0) - x*y + log(1 + exp(-|x|))`, stable for large |x| and built from ops that all
/// have a backward pass.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let pos = logits.relu()?;
    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((pos - logits.mul(targets)?)? + soft)?.mean_all()?)
}

/// Validation accuracy per label group (`labels` for ungrouped labels at the 0.5 threshold), and
/// each validation clip's predicted labels `[n_val][K]`.
pub type Evaluation = (Vec<(String, f64)>, Vec<Vec<bool>>);

/// A linear tagger on HTSAT's pooled embedding, trained alongside HTSAT so that the embedding
/// itself (what ADIFF reads) carries the labels (`embedding_tagging_weight` of the training
/// config). Its tensors are optimizer variables and checkpointed, but never exported.
pub struct EmbeddingTagger {
    /// `[K, C]`, starts at zero (the loss is convex in it, so no symmetry to break).
    pub weight: Var,
    /// `[K]`, starts at zero.
    pub bias: Var,
    /// Weight of its loss next to the clip-wise head's.
    pub loss_weight: f64,
}

/// Names of the tagger's tensors in training checkpoints (outside every model prefix).
pub const EMBEDDING_TAGGER_WEIGHT: &str = "stage1.embedding_tagger.weight";
pub const EMBEDDING_TAGGER_BIAS: &str = "stage1.embedding_tagger.bias";

impl EmbeddingTagger {
    pub fn new(labels: usize, dim: usize, loss_weight: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: Var::zeros((labels, dim), DType::F32, device)?,
            bias: Var::zeros(labels, DType::F32, device)?,
            loss_weight,
        })
    }

    /// Embedding `[B, C]` -> logits `[B, K]`.
    fn logits(&self, embedding: &Tensor) -> Result<Tensor> {
        Ok(embedding
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }
}

/// Stage 1, encoder part.
pub struct TaggingTask {
    pub model: TrainableHtsat,
    pub init: Checkpoint,
    pub labels: LabelSet,
    pub train: Vec<TaggedClip>,
    pub val: Vec<TaggedClip>,
    pub device: Device,
    /// Optional tagger on the embedding (see [`EmbeddingTagger`]).
    pub embedding_tagger: Option<EmbeddingTagger>,
    /// HTSAT's trainable tensors, then the embedding tagger's: what the optimizer updates.
    all_vars: Vec<(String, Var)>,
}

impl TaggingTask {
    pub fn new(
        model: TrainableHtsat,
        init: Checkpoint,
        labels: LabelSet,
        train: Vec<TaggedClip>,
        val: Vec<TaggedClip>,
        device: Device,
        embedding_tagger: Option<EmbeddingTagger>,
    ) -> Self {
        let mut all_vars = model.vars.clone();
        if let Some(t) = &embedding_tagger {
            all_vars.push((EMBEDDING_TAGGER_WEIGHT.into(), t.weight.clone()));
            all_vars.push((EMBEDDING_TAGGER_BIAS.into(), t.bias.clone()));
        }
        Self {
            model,
            init,
            labels,
            train,
            val,
            device,
            embedding_tagger,
            all_vars,
        }
    }

    /// `[B, T, M]` log-mels and `[B, K]` targets of `clips[idx]`.
    fn batch(&self, clips: &[TaggedClip], idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let m = self.model.encoder.front_end.config().n_mels;
        let mut mel = Vec::new();
        let mut tgt = Vec::new();
        for &i in idx {
            mel.extend_from_slice(&clips[i].logmel);
            tgt.extend_from_slice(&clips[i].targets);
        }
        let b = idx.len();
        let t = mel.len() / (b * m);
        Ok((
            Tensor::from_vec(mel, (b, t, m), &self.device)?,
            Tensor::from_vec(tgt, (b, self.labels.len()), &self.device)?,
        ))
    }

    /// Clip logits of the K labels `[B, K]` (HTSAT's first K outputs) and the embedding `[B, C]`.
    fn logits_and_embedding(&self, logmel: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = self.labels.len();
        let classes = self.model.encoder.htsat.config().num_classes;
        if k > classes {
            return Err(AdiffError::Invalid(format!(
                "{k} labels but HTSAT has only {classes} clip-wise outputs"
            )));
        }
        // [B, classes] -> [B, K]
        let (logits, embedding) = self.model.encoder.htsat.clip_logits_and_embedding(logmel)?;
        Ok((logits.narrow(1, 0, k)?, embedding))
    }

    /// BCE of HTSAT's head, plus the weighted BCE of the embedding tagger when there is one.
    fn loss(&self, clips: &[TaggedClip], idx: &[usize]) -> Result<Tensor> {
        let (mel, tgt) = self.batch(clips, idx)?;
        let (logits, embedding) = self.logits_and_embedding(&mel)?;
        let head = bce_with_logits(&logits, &tgt)?;
        match &self.embedding_tagger {
            None => Ok(head),
            Some(t) => {
                let aux = bce_with_logits(&t.logits(&embedding)?, &tgt)?;
                Ok((head + (aux * t.loss_weight)?)?)
            }
        }
    }

    /// Per-group accuracy of the argmax (and, for ungrouped labels, of the 0.5 threshold) over
    /// the validation clips, plus each clip's predicted labels `[n_val][K]` (1 = predicted).
    pub fn evaluate(&self, batch: usize) -> Result<Evaluation> {
        let probs = self.val_probabilities(batch)?.0;
        Ok(self.score(&probs))
    }

    /// Validation probabilities `[n_val][K]` of HTSAT's head and of the embedding tagger.
    #[allow(clippy::type_complexity)]
    fn val_probabilities(&self, batch: usize) -> Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>)> {
        let mut probs: Vec<Vec<f32>> = Vec::with_capacity(self.val.len());
        let mut tagger: Vec<Vec<f32>> = Vec::new();
        for start in (0..self.val.len()).step_by(batch.max(1)) {
            let idx: Vec<usize> = (start..(start + batch).min(self.val.len())).collect();
            let (mel, _) = self.batch(&self.val, &idx)?;
            let (logits, embedding) = self.logits_and_embedding(&mel)?;
            probs.extend(candle_nn::ops::sigmoid(&logits.detach())?.to_vec2::<f32>()?);
            if let Some(t) = &self.embedding_tagger {
                let l = t.logits(&embedding.detach())?;
                tagger.extend(candle_nn::ops::sigmoid(&l)?.to_vec2::<f32>()?);
            }
        }
        Ok((probs, self.embedding_tagger.as_ref().map(|_| tagger)))
    }

    /// Accuracy per group (argmax) and of the ungrouped labels (threshold), and the predicted
    /// labels, of validation probabilities `[n_val][K]`.
    fn score(&self, probs: &[Vec<f32>]) -> Evaluation {
        let k = self.labels.len();
        let mut predicted = vec![vec![false; k]; probs.len()];
        let mut in_group = vec![false; k];
        let mut acc = vec![];
        for (g, r) in &self.labels.groups {
            let mut right = 0usize;
            for (c, p) in probs.iter().enumerate() {
                let best = r
                    .clone()
                    .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                    .unwrap_or(r.start);
                predicted[c][best] = true;
                right += usize::from(self.val[c].targets[best] == 1.0);
            }
            in_group[r.clone()].iter_mut().for_each(|x| *x = true);
            acc.push((g.clone(), right as f64 / probs.len().max(1) as f64));
        }
        let loose: Vec<usize> = (0..k).filter(|&i| !in_group[i]).collect();
        if !loose.is_empty() {
            let mut right = 0usize;
            for (c, p) in probs.iter().enumerate() {
                for &i in &loose {
                    let on = p[i] > THRESHOLD;
                    predicted[c][i] = on;
                    right += usize::from(on == (self.val[c].targets[i] == 1.0));
                }
            }
            acc.push((
                "labels".into(),
                right as f64 / (probs.len() * loose.len()).max(1) as f64,
            ));
        }
        (acc, predicted)
    }
}

impl TrainTask for TaggingTask {
    fn num_train(&self) -> usize {
        self.train.len()
    }

    fn num_val(&self) -> usize {
        self.val.len()
    }

    fn train_loss(&self, indices: &[usize], _epoch: u64) -> Result<Tensor> {
        self.loss(&self.train, indices)
    }

    fn val_loss(&self, indices: &[usize]) -> Result<Tensor> {
        Ok(self.loss(&self.val, indices)?.detach())
    }

    /// First line: per-attribute accuracy over the whole validation set; then one line per
    /// requested clip with its predicted and true labels.
    fn samples(&self, indices: &[usize], _max_tokens: usize) -> Result<Vec<String>> {
        let (probs, tagger) = self.val_probabilities(EVAL_BATCH)?;
        let (acc, predicted) = self.score(&probs);
        let names = |flags: &[bool]| {
            flags
                .iter()
                .zip(&self.labels.names)
                .filter(|(f, _)| **f)
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let line = |acc: &[(String, f64)]| {
            acc.iter()
                .map(|(g, a)| format!("{g} {a:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut first = format!("accuracy over {} clips: {}", self.val.len(), line(&acc));
        if let Some(t) = tagger {
            first.push_str(&format!("; embedding tagger: {}", line(&self.score(&t).0)));
        }
        let mut out = vec![first];
        for &i in indices {
            let truth: Vec<bool> = self.val[i].targets.iter().map(|&t| t == 1.0).collect();
            out.push(format!(
                "{}: {} | truth {}",
                self.val[i].path,
                names(&predicted[i]),
                names(&truth)
            ));
        }
        Ok(out)
    }

    fn vars(&self) -> &[(String, Var)] {
        &self.all_vars
    }

    /// The whole initial checkpoint with HTSAT's trained tensors, and `labels.json` beside it
    /// (label names in output order: output i of the clip-wise head is label i).
    fn export(&self, path: &Path) -> Result<()> {
        save_safetensors(&export_with(&self.init, &self.model.vars)?, None, path)?;
        labels::write_labels_file(
            &path.with_file_name(labels::LABELS_FILE),
            &self.labels.names,
        )
    }
}

//! Training configuration (one JSON file per stage: `configs/train/*.json`). A training config,
//! not a model config, so it lives beside the trainer; every field is documented and the files
//! reject unknown keys.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{AdiffError, Result};
use crate::train::optim::AdamWConfig;
use crate::train::schedule::LrSchedule;

/// How the learning rate decays after warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    /// Cosine from `lr` to `min_lr` over the rest of the run.
    Cosine { min_lr: f64 },
    /// Multiply by `gamma` every `step_size` optimizer steps (the paper's stage 2).
    Step { step_size: u64, gamma: f64 },
    /// Keep `lr`.
    Constant,
}

/// One training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Checkpoint-name prefixes of the tensors that train; every other tensor is frozen.
    pub trainable: Vec<String>,
    pub epochs: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged into one optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate (reached at the end of warm-up).
    pub lr: f64,
    pub warmup_steps: u64,
    pub decay: Decay,
    pub optimizer: AdamWConfig,
    /// Global gradient-norm clip (None: no clipping).
    pub clip_grad_norm: Option<f64>,
    /// Answers are cut to this many tokens (" <|endoftext|>" included).
    pub max_answer_tokens: usize,
    /// Draw each example's prompt from the prompt database (per epoch) instead of the CSV's.
    pub sample_prompts: bool,
    /// Validation every this many optimizer steps (0: only at the end of each epoch).
    pub eval_every: u64,
    /// Checkpoint every this many optimizer steps (0: only at the end of each epoch).
    pub save_every: u64,
    /// Checkpoints kept besides the best one.
    pub keep_last: usize,
    /// Explanations generated from validation pairs at each validation (printed and logged).
    pub num_samples: usize,
    /// Tokens generated per sample.
    pub sample_tokens: usize,
    /// When no validation CSV is given, this fraction of the training rows is held out.
    pub val_fraction: f64,
    /// Seeds data order, prompt draws and the hold-out split.
    pub seed: u64,
    /// Stage 1, encoder part only: weight of an extra binary cross-entropy from a linear tagger
    /// on HTSAT's pooled embedding (the vector ADIFF reads). HTSAT's own head weighs each
    /// frequency row separately, while the embedding averages the rows, so tagging alone can
    /// leave the embedding blind to what the tags see. The tagger trains with HTSAT and is not
    /// exported. 0 (the default): no such loss.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub embedding_tagging_weight: f64,
    /// Decay of an exponential moving average of the trainable weights, kept in every
    /// checkpoint; the exported model gets the averaged weights instead of the last ones (see
    /// [`crate::train::average`]). 0 (the default): no averaging.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_average_decay: f64,
    /// `"bf16"`: mixed precision, forward and backward in bf16 over f32 master weights, with
    /// f32 gradients, clipping and AdamW state (checkpoints and resume as in f32), in every
    /// stage. The log-mel front end, softmax and the loss stay f32. `"f32"` (the default): f32
    /// throughout.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Batches of similar answer lengths (the `group_by_length` of Hugging Face's Trainer):
    /// each epoch's shuffled order is cut into runs of [`GROUP_BY_LENGTH_STEPS`] optimizer
    /// steps, and each run is sorted by answer length, longest first. A batch is padded to its
    /// longest answer, so one tier-3 paragraph among tier-1 answers made every row of the batch
    /// cost a paragraph. The order stays a function of the seed and the epoch (exact resume).
    /// Stages 2 and 3 only. false (the default): batches as drawn.
    #[serde(default, skip_serializing_if = "is_false")]
    pub group_by_length: bool,
}

/// Optimizer steps per run of examples [`TrainConfig::group_by_length`] sorts (Hugging Face's
/// "megabatch" is 50 batches).
pub const GROUP_BY_LENGTH_STEPS: usize = 50;

fn is_false(x: &bool) -> bool {
    !*x
}

/// The arithmetic of a training step (see [`TrainConfig::precision`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// The activations' dtype.
    pub fn compute_dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
        }
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl TrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AdiffError::Config(format!(
                "cannot read training config {}: {e}",
                path.display()
            ))
        })?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| AdiffError::Config(format!("training config {}: {e}", path.display())))?;
        cfg.validate()
            .map_err(|e| AdiffError::Config(format!("training config {}: {e}", path.display())))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.trainable.is_empty() {
            return Err("'trainable' lists no tensor prefix".into());
        }
        if self.epochs == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return Err("epochs, batch_size and grad_accum must be positive".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(format!(
                "val_fraction must be in [0, 1), got {}",
                self.val_fraction
            ));
        }
        if !(self.embedding_tagging_weight >= 0.0 && self.embedding_tagging_weight.is_finite()) {
            return Err(format!(
                "embedding_tagging_weight must be >= 0, got {}",
                self.embedding_tagging_weight
            ));
        }
        if !(self.weight_average_decay == 0.0
            || (self.weight_average_decay > 0.0 && self.weight_average_decay < 1.0))
        {
            return Err(format!(
                "weight_average_decay must be 0 (off) or in (0, 1), got {}",
                self.weight_average_decay
            ));
        }
        if self.max_answer_tokens == 0 {
            return Err("max_answer_tokens must be positive".into());
        }
        self.optimizer.validate().map_err(|e| e.to_string())
    }

    /// Refuses `embedding_tagging_weight` in a stage that does not tag (`stage` names it).
    pub fn refuse_embedding_tagger(&self, stage: &str) -> Result<()> {
        if self.embedding_tagging_weight != 0.0 {
            return Err(AdiffError::Config(format!(
                "{stage}: the training config sets embedding_tagging_weight, which only \
                 train-stage1 --part encoder uses"
            )));
        }
        Ok(())
    }

    /// The schedule for a run of `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: u64) -> LrSchedule {
        let warmup_steps = self.warmup_steps.min(total_steps);
        match self.decay {
            Decay::Cosine { min_lr } => LrSchedule::WarmupCosine {
                peak_lr: self.lr,
                min_lr,
                warmup_steps,
                total_steps,
            },
            Decay::Step { step_size, gamma } => LrSchedule::WarmupStep {
                peak_lr: self.lr,
                warmup_steps,
                step_size,
                gamma,
            },
            Decay::Constant if warmup_steps == 0 => LrSchedule::Constant { lr: self.lr },
            Decay::Constant => LrSchedule::WarmupStep {
                peak_lr: self.lr,
                warmup_steps,
                step_size: u64::MAX,
                gamma: 1.0,
            },
        }
    }
}

//! Serde configuration types. `configs/base.json` holds the paper's values, `configs/tiny.json` a
//! small variant used by the tests. Unknown keys are rejected so that a typo never silently falls
//! back to a default.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{AdiffError, Result};

/// Audio front end: decoding target and log-mel parameters (HTSAT's `model/config.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// Target sample rate in Hz; every input is resampled to it.
    pub sample_rate: u32,
    /// Fixed clip length in seconds (shorter clips are tiled, longer ones cropped).
    pub duration_s: f64,
    /// FFT size and window length.
    pub n_fft: usize,
    pub hop_length: usize,
    pub n_mels: usize,
    pub fmin: f64,
    pub fmax: f64,
    /// Floor applied before `10*log10`.
    pub log_amin: f64,
}

impl AudioConfig {
    /// Number of samples in one fixed-length clip.
    pub fn clip_samples(&self) -> usize {
        (self.duration_s * self.sample_rate as f64).round() as usize
    }
    /// Number of centred STFT frames for one clip (`1 + samples / hop`).
    pub fn num_frames(&self) -> usize {
        1 + self.clip_samples() / self.hop_length
    }
    /// Number of one-sided frequency bins.
    pub fn num_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }
}

/// HTSAT (hierarchical token-semantic audio transformer, a Swin transformer on a folded log-mel image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtsatConfig {
    /// Side of the square input image (256).
    pub spec_size: usize,
    /// How many time chunks are stacked along the frequency axis (4).
    pub freq_ratio: usize,
    pub patch_size: usize,
    pub patch_stride: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub mlp_ratio: f64,
    pub num_classes: usize,
    pub layer_norm_eps: f64,
    pub batch_norm_eps: f64,
    /// Additive attention mask value between tokens of different regions in shifted windows.
    pub shift_mask_value: f64,
    /// LayerNorm after the patch embedding (HTSAT's `patch_norm`, true in the paper's model).
    /// It makes each patch token scale-invariant, so a clip's absolute level reaches the Swin
    /// stages only through the patch bias: the demo turns it off to let loudness through.
    #[serde(default = "patch_norm_default")]
    pub patch_norm: bool,
}

fn patch_norm_default() -> bool {
    true
}

impl HtsatConfig {
    /// Width of the final stage (embedding dimension): embed_dim * 2^(stages-1).
    pub fn num_features(&self) -> usize {
        self.embed_dim << (self.depths.len() - 1)
    }
    /// Number of time frames of the resized spectrogram (spec_size * freq_ratio = 1024).
    pub fn target_frames(&self) -> usize {
        self.spec_size * self.freq_ratio
    }
    /// Number of mel bins the image fold expects (spec_size / freq_ratio = 64).
    pub fn target_mels(&self) -> usize {
        self.spec_size / self.freq_ratio
    }
    /// Side of the token grid after patch embedding (64).
    pub fn patch_grid(&self) -> usize {
        self.spec_size / self.patch_stride
    }
    /// Side of the last stage's token grid (8).
    pub fn final_grid(&self) -> usize {
        self.patch_grid() >> (self.depths.len() - 1)
    }
    /// Number of time steps of the token-semantic head output (32).
    pub fn head_frames(&self) -> usize {
        self.final_grid() * self.freq_ratio
    }
}

/// Projection of the HTSAT embedding into the mapper space (768 -> 1024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionConfig {
    pub in_dim: usize,
    pub out_dim: usize,
    pub layer_norm_eps: f64,
}

/// Audio and text mappers (prefix transformers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperConfig {
    /// Prefix tokens produced per audio and for the text prompt (40).
    pub prefix_length: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub layer_norm_eps: f64,
}

/// Cross-projection transformer over the joint 121-token prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossProjectionConfig {
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub layer_norm_eps: f64,
}

/// GPT-2 (Hugging Face names). base/medium/large/xl differ only in these numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub layer_norm_epsilon: f64,
    /// Hugging Face repo (`gpt2`, `gpt2-medium`, ...) whose pretrained weights fill GPT-2 when
    /// the checkpoint has none (e.g. before training). `adiff download gpt2` fetches it ahead of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_repo: Option<String>,
}

/// Token ids and lengths of the text side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Prompt ids are padded/truncated to this length (40).
    pub prompt_length: usize,
    /// Token whose GPT-2 embedding separates the two audio prefixes (50256).
    pub separator_token_id: u32,
    /// Padding id (`!`, 0).
    pub pad_token_id: u32,
    /// Id the reference stops generation on (220, a bare space).
    pub stop_token_id: u32,
    /// GPT-2 `<|endoftext|>`.
    pub eos_token_id: u32,
}

/// The whole ADIFF model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdiffConfig {
    pub audio: AudioConfig,
    pub htsat: HtsatConfig,
    pub projection: ProjectionConfig,
    pub mapper: MapperConfig,
    pub cross_projection: CrossProjectionConfig,
    pub gpt2: Gpt2Config,
    pub text: TextConfig,
}

impl AdiffConfig {
    /// Reads and validates a JSON config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| AdiffError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text).map_err(|e| AdiffError::Config(format!("{}: {}", path.display(), e)))
    }

    /// Parses and validates a JSON config string.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: AdiffConfig =
            serde_json::from_str(text).map_err(|e| AdiffError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The paper's configuration, compiled into the binary so `--config` is optional.
    pub fn base() -> Self {
        Self::from_json(include_str!("../../configs/base.json"))
            .expect("configs/base.json is valid")
    }

    /// The tiny test configuration.
    pub fn tiny() -> Self {
        Self::from_json(include_str!("../../configs/tiny.json"))
            .expect("configs/tiny.json is valid")
    }

    /// Checks the relations between dimensions that the model relies on.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(AdiffError::Config(m));
        let h = &self.htsat;
        if h.depths.is_empty() || h.depths.len() != h.num_heads.len() {
            return err(
                "htsat.depths and htsat.num_heads must be non-empty and of equal length".into(),
            );
        }
        for (i, &heads) in h.num_heads.iter().enumerate() {
            let dim = h.embed_dim << i;
            if heads == 0 || !dim.is_multiple_of(heads) {
                return err(format!(
                    "htsat stage {i}: width {dim} is not divisible by {heads} heads"
                ));
            }
        }
        if !h
            .spec_size
            .is_multiple_of(h.patch_stride << (h.depths.len() - 1))
            || h.final_grid() == 0
        {
            return err("htsat.spec_size must be divisible by patch_stride * 2^(stages-1)".into());
        }
        if !h.final_grid().is_multiple_of(h.freq_ratio) {
            return err("htsat final grid must be divisible by freq_ratio".into());
        }
        if !h.patch_grid().is_multiple_of(h.window_size) && h.patch_grid() > h.window_size {
            return err("htsat patch grid must be divisible by window_size".into());
        }
        if self.audio.n_mels != h.target_mels() {
            return err(format!(
                "audio.n_mels ({}) must equal htsat.spec_size / freq_ratio ({})",
                self.audio.n_mels,
                h.target_mels()
            ));
        }
        if self.audio.num_frames() > h.target_frames() {
            return err("a clip has more frames than HTSAT's image can hold".into());
        }
        if self.projection.in_dim != h.num_features() {
            return err(format!(
                "projection.in_dim ({}) must equal HTSAT's final width ({})",
                self.projection.in_dim,
                h.num_features()
            ));
        }
        if !self.gpt2.n_embd.is_multiple_of(self.gpt2.n_head) {
            return err("gpt2.n_embd must be divisible by gpt2.n_head".into());
        }
        if !self.gpt2.n_embd.is_multiple_of(self.mapper.num_heads)
            || !self
                .gpt2
                .n_embd
                .is_multiple_of(self.cross_projection.num_heads)
        {
            return err(
                "gpt2.n_embd must be divisible by the mapper and cross-projection heads".into(),
            );
        }
        if self.audio.fmax > self.audio.sample_rate as f64 / 2.0
            || self.audio.fmin >= self.audio.fmax
        {
            return err("audio.fmin < audio.fmax <= sample_rate/2 is required".into());
        }
        Ok(())
    }

    /// Length of the joint prefix fed to GPT-2: audio1 | separator | audio2 | text (121).
    pub fn prefix_tokens(&self) -> usize {
        3 * self.mapper.prefix_length + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_match_the_paper() {
        let b = AdiffConfig::base();
        assert_eq!(b.audio.num_frames(), 1001);
        assert_eq!(b.htsat.num_features(), 768);
        assert_eq!(b.htsat.final_grid(), 8);
        assert_eq!(b.htsat.head_frames(), 32);
        assert_eq!(b.prefix_tokens(), 121);
        let t = AdiffConfig::tiny();
        assert_eq!(t.htsat.num_features(), 128);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../configs/tiny.json")).unwrap();
        v["htsat"]["embed_dimm"] = serde_json::json!(3);
        let e = AdiffConfig::from_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("embed_dimm"), "{e}");
    }
}

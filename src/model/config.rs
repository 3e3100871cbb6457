//! The whole model's configuration, composed of each block's config (defined beside its block and
//! re-exported here). `configs/base.json` holds the paper's values, `configs/tiny.json` a
//! small variant used by the tests. Unknown keys are rejected so that a typo never silently falls
//! back to a default.

use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::audio::config::AudioConfig;
use crate::error::{AdiffError, Result};
pub use crate::model::gpt2::Gpt2Config;
pub use crate::model::htsat::HtsatConfig;
pub use crate::model::mapper::{CrossProjectionConfig, MapperConfig, ProjectionConfig};
pub use crate::text::config::TextConfig;

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
        // Each block's own sizes first: the relations below divide by them.
        self.audio.validate()?;
        self.htsat.validate()?;
        self.projection.validate()?;
        self.mapper.validate()?;
        self.cross_projection.validate()?;
        self.gpt2.validate()?;
        self.text.validate()?;
        if let Some(v) = &self.text.vocabulary {
            if v.len() != self.gpt2.vocab_size {
                return err(format!(
                    "text.vocabulary has {} ids but gpt2.vocab_size is {}; they must agree",
                    v.len(),
                    self.gpt2.vocab_size
                ));
            }
        }
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

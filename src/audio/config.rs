//! Configuration of the audio front end (decoding target and log-mel parameters), the `audio`
//! section of a model config.

use serde::{Deserialize, Serialize};

use crate::error::{require_positive, AdiffError, Result};

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
    /// Every length, rate and size above zero, the FFT no shorter than a hop, and a clip at least
    /// one FFT long.
    pub fn validate(&self) -> Result<()> {
        require_positive(
            "audio",
            &[
                ("sample_rate", f64::from(self.sample_rate)),
                ("duration_s", self.duration_s),
                ("n_fft", self.n_fft as f64),
                ("hop_length", self.hop_length as f64),
                ("n_mels", self.n_mels as f64),
                ("fmax", self.fmax),
                ("log_amin", self.log_amin),
            ],
        )?;
        if !(self.fmin.is_finite() && self.fmin >= 0.0) {
            return Err(AdiffError::Config(format!(
                "audio.fmin must be 0 or more, got {}",
                self.fmin
            )));
        }
        if self.hop_length > self.n_fft || self.clip_samples() < self.n_fft {
            return Err(AdiffError::Config(format!(
                "audio: hop_length ({}) <= n_fft ({}) <= samples per clip ({}) is required",
                self.hop_length,
                self.n_fft,
                self.clip_samples()
            )));
        }
        Ok(())
    }

    /// Number of one-sided frequency bins.
    pub fn num_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }
}

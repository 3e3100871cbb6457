//! Configuration of the audio front end (decoding target and log-mel parameters), the `audio`
//! section of a model config.

use serde::{Deserialize, Serialize};

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

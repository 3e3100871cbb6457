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
    /// How the filterbank's band centres are spaced between `fmin` and `fmax` (default: the
    /// paper's slaney mel scale; written to a config only when it is not the default).
    #[serde(default, skip_serializing_if = "MelScale::is_slaney")]
    pub mel_scale: MelScale,
}

/// Spacing of the filterbank's band centres.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MelScale {
    /// librosa's slaney mel scale (`htk=False`): linear below 1 kHz, logarithmic above.
    #[default]
    Slaney,
    /// Evenly in log-frequency (a constant ratio between neighbouring centres): narrower bands
    /// than slaney's at low frequencies, for a few bands over a wide range (the demo's 32 bands
    /// over 50 Hz-4 kHz are 69 Hz wide below 1 kHz on the slaney scale, wider than the spacing of
    /// a low chord's partials).
    Log,
}

impl MelScale {
    pub fn is_slaney(&self) -> bool {
        *self == MelScale::Slaney
    }
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
        if self.mel_scale == MelScale::Log && self.fmin <= 0.0 {
            return Err(AdiffError::Config(format!(
                "audio.fmin must be above 0 with mel_scale \"log\", got {}",
                self.fmin
            )));
        }
        if self.fmax <= self.fmin {
            return Err(AdiffError::Config(format!(
                "audio.fmax ({}) must be above audio.fmin ({})",
                self.fmax, self.fmin
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

#[cfg(test)]
mod tests {
    // Named in full: `tests/layers.rs` reads `super::*` here as this file importing `audio`.
    use crate::audio::config::{AudioConfig, MelScale};

    fn demo() -> serde_json::Value {
        serde_json::json!({"sample_rate": 32000, "duration_s": 10.0, "n_fft": 4096,
            "hop_length": 640, "n_mels": 32, "fmin": 50.0, "fmax": 4000.0, "log_amin": 1e-10})
    }

    #[test]
    fn mel_scale_defaults_to_slaney_and_is_written_only_when_not() {
        let cfg: AudioConfig = serde_json::from_value(demo()).unwrap();
        assert_eq!(cfg.mel_scale, MelScale::Slaney);
        // Configs written before the option existed stay byte-identical when written again.
        assert_eq!(serde_json::to_value(&cfg).unwrap(), demo());
        let mut v = demo();
        v["mel_scale"] = "log".into();
        let log: AudioConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(log.mel_scale, MelScale::Log);
        assert_eq!(serde_json::to_value(&log).unwrap(), v);
        log.validate().unwrap();
        v["mel_scale"] = "bark".into();
        assert!(serde_json::from_value::<AudioConfig>(v).is_err());
    }

    #[test]
    fn a_log_scale_needs_a_positive_fmin_and_fmax_above_it() {
        let mut v = demo();
        v["mel_scale"] = "log".into();
        v["fmin"] = 0.0.into();
        let cfg: AudioConfig = serde_json::from_value(v).unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("fmin"));
        let mut v = demo();
        v["fmax"] = 40.0.into();
        let cfg: AudioConfig = serde_json::from_value(v).unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("fmax"));
    }
}

//! Audio front end: decode any supported file, mix to mono, resample, cut a fixed-length clip and
//! compute HTSAT's log-mel spectrogram.

pub mod clip;
pub mod config;
pub mod decode;
pub mod mel;
pub mod resample;

use std::path::Path;

pub use clip::CropMode;

use crate::audio::config::AudioConfig;
use crate::error::{AdiffError, Result};

/// Loads one model input: decode -> mono (channel mean) -> resample to `cfg.sample_rate` ->
/// exactly `cfg.clip_samples()` samples (tiled if short, cropped per `crop` if long).
pub fn load_clip(path: &Path, cfg: &AudioConfig, crop: CropMode) -> Result<Vec<f32>> {
    let decoded = decode::decode_file(path)?;
    let resampled = resample::resample(&decoded.samples, decoded.sample_rate, cfg.sample_rate)
        .map_err(|e| AdiffError::audio(path, e.to_string()))?;
    if resampled.is_empty() {
        return Err(AdiffError::audio(
            path,
            format!(
                "too short: {} samples at {} Hz leave nothing at {} Hz",
                decoded.samples.len(),
                decoded.sample_rate,
                cfg.sample_rate
            ),
        ));
    }
    let clip = clip::fixed_length(&resampled, cfg.clip_samples(), crop);
    // Decoding already rejects NaN/Inf; this re-checks the resampler's output, the last step
    // before the model, so that no non-finite value can reach the spectrogram.
    if let Some(i) = clip.iter().position(|s| !s.is_finite()) {
        return Err(AdiffError::audio(
            path,
            format!("non-finite sample at clip position {i} after resampling"),
        ));
    }
    Ok(clip)
}

//! Audio front end: decode any supported file, mix to mono, resample, cut a fixed-length clip and
//! compute HTSAT's log-mel spectrogram.

pub mod clip;
pub mod decode;
pub mod mel;
pub mod resample;

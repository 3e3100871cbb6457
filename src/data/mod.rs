//! Data shipped with or read by adiff.

pub mod audioset;
pub mod embed_cache;
pub mod explanations;
pub mod synthetic;

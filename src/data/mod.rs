//! Data shipped with or read by adiff.

pub mod audioset;
pub mod explanations;

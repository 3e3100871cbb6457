//! Data shipped with or read by adiff.

pub mod audioset;
pub mod captions;
pub mod csv_schema;
pub mod embed_cache;
pub mod explainer;
pub mod explanations;
pub mod labels;
pub mod pairing;
pub mod remix;
pub mod synthetic;

//! adiff: explain, in natural language, how two audio recordings differ.
//!
//! Pipeline: audio file -> [`audio`] (decode, resample, fixed-length clip, log-mel) ->
//! [`model::htsat`] (HTSAT embedding + AudioSet events) -> projection, mappers, cross-projection ->
//! [`model::gpt2`] prefix -> [`generate`] text.

pub mod alloc;
pub mod audio;
pub mod cli;
pub mod data;
pub mod error;
pub mod generate;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod progress;
pub mod simd;
pub mod text;
pub mod train;

pub use error::{AdiffError, Result};

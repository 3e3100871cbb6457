//! Model blocks, one file each. Tensor names follow the official ADIFF checkpoint.

pub mod adiff;
pub mod audio_encoder;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod gpt2;
pub mod htsat;
pub mod mapper;
pub mod ops;
pub mod ops_gpu;
pub mod packed;

//! Typed errors of the library. The CLI wraps them with `anyhow` and prints one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AdiffError {
    #[error("config: {0}")]
    Config(String),
    /// Audio that cannot be turned into a clip: the file is named.
    #[error("{path}: {msg}")]
    Audio { path: PathBuf, msg: String },
    /// A checkpoint that does not fit the model.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Invalid(String),
    /// A download or cache lookup that failed: the message names the URL and the cache path.
    #[error("{0}")]
    Download(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl AdiffError {
    pub fn audio(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        AdiffError::Audio {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        AdiffError::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, AdiffError>;

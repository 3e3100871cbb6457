//! Typed errors of the library. The CLI wraps them with `anyhow` and prints one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AdiffError {
    #[error("config: {0}")]
    Config(String),
    /// Audio that cannot be turned into a clip: the file is named (a very long path shortened).
    #[error("{}: {msg}", short_path(path))]
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

/// Longest path an error message shows whole; a longer one (a pasted file's content taken for
/// a path, say) is shown by its two ends.
const MAX_SHOWN_PATH: usize = 240;

/// `path` for a one-line message: whole up to [`MAX_SHOWN_PATH`] characters, else its start and
/// end around "...", with its length.
pub fn short_path(path: &std::path::Path) -> String {
    // One line, whatever the path holds.
    let s = path.display().to_string().replace(['\n', '\r'], " ");
    let n = s.chars().count();
    if n <= MAX_SHOWN_PATH {
        return s;
    }
    let head: String = s.chars().take(MAX_SHOWN_PATH / 2).collect();
    let tail: String = s.chars().skip(n - MAX_SHOWN_PATH / 4).collect();
    format!("{head}...{tail} (a path of {n} characters)")
}

/// Checks that every named setting of config section `section` is a finite number above zero
/// (a zero width, length, rate or FFT size would divide by zero or build an empty tensor later).
pub fn require_positive(section: &str, values: &[(&str, f64)]) -> Result<()> {
    for (name, v) in values {
        if !(v.is_finite() && *v > 0.0) {
            return Err(AdiffError::Config(format!(
                "{section}.{name} must be a number above 0, got {v}"
            )));
        }
    }
    Ok(())
}

/// Most problems an error message names before "and K more".
const MAX_NAMED_PROBLEMS: usize = 5;

/// "N {what}: a; b; c; d; e; and K more": every problem counted, the first few named.
pub fn summarise(what: &str, problems: &[String]) -> String {
    let named = problems
        .iter()
        .take(MAX_NAMED_PROBLEMS)
        .cloned()
        .collect::<Vec<_>>();
    let mut msg = format!("{} {what}: {}", problems.len(), named.join("; "));
    if problems.len() > MAX_NAMED_PROBLEMS {
        msg.push_str(&format!(
            "; and {} more",
            problems.len() - MAX_NAMED_PROBLEMS
        ));
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_counts_all_and_names_the_first_five() {
        let p: Vec<String> = (1..=7).map(|i| format!("t{i}")).collect();
        assert_eq!(
            super::summarise("problem(s)", &p),
            "7 problem(s): t1; t2; t3; t4; t5; and 2 more"
        );
        assert_eq!(super::summarise("problem(s)", &p[..1]), "1 problem(s): t1");
    }
}

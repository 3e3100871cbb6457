//! SPICE through the official jar (spice-1.0.jar with its Stanford CoreNLP jars in `lib/`), run
//! the way pycocoevalcap 1.2 runs it: the tokenized candidates and references as a JSON list of
//! `{image_id, test, refs}`, `java -jar -Xmx8G spice-1.0.jar IN -out OUT -subset -silent`, and
//! the score is the mean of the items' `All` F-scores. SPICE parses scene graphs with CoreNLP;
//! that is not reimplemented here, so without the jar SPICE (and SPIDEr) has no number.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::error::{AdiffError, Result};

/// Heap the JVM gets, as pycocoevalcap passes it.
const JVM_HEAP: &str = "-Xmx8G";
/// Environment variable naming the jar when `--spice-jar` is not given.
pub const SPICE_JAR_ENV: &str = "ADIFF_SPICE_JAR";
/// Lines of the jar's stderr quoted in an error.
const STDERR_TAIL_LINES: usize = 5;

/// Corpus and per-item SPICE.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpiceScores {
    /// Mean of the item F-scores (pycocoevalcap's SPICE).
    pub corpus: f64,
    pub items: Vec<f64>,
}

#[derive(Deserialize)]
struct ItemResult {
    image_id: usize,
    scores: ItemScores,
}

#[derive(Deserialize)]
struct ItemScores {
    #[serde(rename = "All")]
    all: FScore,
}

#[derive(Deserialize)]
struct FScore {
    f: Option<f64>,
}

/// `--spice-jar PATH`, else `$ADIFF_SPICE_JAR`; None when neither is set.
pub fn locate_jar(arg: Option<&Path>) -> Option<PathBuf> {
    arg.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(SPICE_JAR_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    })
}

/// A scratch directory removed on drop.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the SPICE jar on tokenized hypotheses and references (`java` is the Java launcher).
pub fn spice(
    java: &Path,
    jar: &Path,
    hyps: &[String],
    refs: &[Vec<String>],
) -> Result<SpiceScores> {
    let err = |m: String| AdiffError::Invalid(format!("SPICE ({}): {m}", jar.display()));
    if !jar.is_file() {
        return Err(err("no such file".into()));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = ScratchDir(
        std::env::temp_dir().join(format!("adiff-spice-{}-{nanos}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).map_err(|e| err(format!("scratch directory: {e}")))?;
    let input = dir.0.join("input.json");
    let output = dir.0.join("output.json");
    let items: Vec<serde_json::Value> = hyps
        .iter()
        .zip(refs)
        .enumerate()
        .map(|(i, (h, r))| serde_json::json!({"image_id": i, "test": h, "refs": r}))
        .collect();
    let json = serde_json::to_vec(&items).map_err(|e| err(e.to_string()))?;
    std::fs::write(&input, json).map_err(|e| err(format!("cannot write its input: {e}")))?;
    let run = Command::new(java)
        .arg("-jar")
        .arg(JVM_HEAP)
        .arg(jar)
        .arg(&input)
        .arg("-out")
        .arg(&output)
        .args(["-subset", "-silent"])
        .current_dir(jar.parent().unwrap_or(Path::new(".")))
        .output()
        .map_err(|e| err(format!("cannot start {}: {e}", java.display())))?;
    if !run.status.success() {
        let stderr = String::from_utf8_lossy(&run.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(STDERR_TAIL_LINES).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(err(format!("{} ({})", run.status, tail.join(" | "))));
    }
    let text = std::fs::read(&output).map_err(|e| err(format!("no output: {e}")))?;
    let results: Vec<ItemResult> =
        serde_json::from_slice(&text).map_err(|e| err(format!("unreadable output: {e}")))?;
    let mut items = vec![f64::NAN; hyps.len()];
    for r in results {
        let slot = items
            .get_mut(r.image_id)
            .ok_or_else(|| err(format!("output names unknown item {}", r.image_id)))?;
        // SPICE reports NaN (null in JSON) when a caption has no tuples; pycocoevalcap's mean
        // would then be NaN too, so say so rather than invent a number.
        *slot = r.scores.all.f.unwrap_or(f64::NAN);
    }
    if let Some(i) = items.iter().position(|x| x.is_nan()) {
        return Err(err(format!("no F-score for item {i}")));
    }
    let corpus = items.iter().sum::<f64>() / items.len() as f64;
    Ok(SpiceScores { corpus, items })
}

//! Labels of audio clips, for HTSAT's tagging (stage 1) and `adiff tag`.
//!
//! Three formats: `truth.jsonl` from `adiff build-dataset synthetic` (every attribute value of a
//! clip is one label, `attribute=value`), a `file,labels` CSV (labels separated by `;`), and
//! `labels.json`, written beside a stage-1 model, naming its first K clip-wise outputs in order
//! (`{"labels": [...]}`). The 527 AudioSet names of the pretrained HTSAT are in [`super::audioset`].

use std::ops::Range;
use std::path::Path;

use crate::data::synthetic::{Background, Loudness, Pattern, Pitch, SourceKind, TruthRecord};
use crate::error::{AdiffError, Result};

/// Label files written next to the exported model.
pub const LABELS_FILE: &str = "labels.json";
/// Separator of the labels in a CSV's second column.
pub const CSV_LABEL_SEPARATOR: char = ';';
/// Separates an attribute group from its value in a label name (`pitch=high`).
const GROUP_SEPARATOR: char = '=';

/// The label vocabulary of a run: names in output order, and the groups of mutually exclusive
/// labels (`attr=value` names sharing `attr`), over which accuracy is the argmax's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelSet {
    pub names: Vec<String>,
    pub groups: Vec<(String, Range<usize>)>,
}

impl LabelSet {
    /// Groups consecutive `group=value` names; a name without `=` stands alone (no group).
    pub fn new(names: Vec<String>) -> Self {
        let mut groups: Vec<(String, Range<usize>)> = vec![];
        for (i, n) in names.iter().enumerate() {
            let Some((g, _)) = n.split_once(GROUP_SEPARATOR) else {
                continue;
            };
            match groups.last_mut() {
                Some((last, r)) if last == g && r.end == i => r.end = i + 1,
                _ => groups.push((g.to_string(), i..i + 1)),
            }
        }
        Self { names, groups }
    }

    /// The 19 labels of the synthetic datasets, in this order: kind (tone, buzz, chord, noise,
    /// clicks, chirp_up, chirp_down), pitch (low, mid, high), loudness (quiet, medium, loud),
    /// pattern (continuous, pulsing, single), background (silence, hum, hiss). Names are
    /// `attribute=value` with the values as `truth.jsonl` spells them.
    pub fn synthetic() -> Self {
        fn names<T: serde::Serialize>(attr: &str, all: &[T]) -> Vec<String> {
            all.iter()
                .map(|v| {
                    let v = serde_json::to_value(v)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    format!("{attr}{GROUP_SEPARATOR}{v}")
                })
                .collect()
        }
        let mut all = names("kind", &SourceKind::ALL);
        all.extend(names("pitch", &Pitch::ALL));
        all.extend(names("loudness", &Loudness::ALL));
        all.extend(names("pattern", &Pattern::ALL));
        all.extend(names("background", &Background::ALL));
        Self::new(all)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Multi-hot targets `[K]` of a clip's label names (an unknown name is an error).
    pub fn targets(&self, labels: &[String], what: &str) -> Result<Vec<f32>> {
        let mut t = vec![0f32; self.len()];
        for l in labels {
            let i = self.names.iter().position(|n| n == l).ok_or_else(|| {
                AdiffError::Invalid(format!("{what}: label '{l}' is not in the label set"))
            })?;
            t[i] = 1.0;
        }
        Ok(t)
    }
}

/// A clip with its labels, before the audio is read.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledFile {
    /// Relative to the audio root.
    pub path: String,
    pub labels: Vec<String>,
}

/// Reads `truth.jsonl` (from `adiff build-dataset synthetic`): every attribute value of a clip is
/// one of its labels. Keeps only records of `split` when given.
pub fn read_truth(path: &Path, split: Option<&str>) -> Result<Vec<LabelledFile>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdiffError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let synthetic = LabelSet::synthetic();
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: TruthRecord = serde_json::from_str(line)
            .map_err(|e| AdiffError::Invalid(format!("{}:{}: {e}", path.display(), i + 1)))?;
        if split.is_some_and(|s| s != rec.split) {
            continue;
        }
        let a = serde_json::to_value(rec.spec.attributes)
            .map_err(|e| AdiffError::Invalid(format!("{}:{}: {e}", path.display(), i + 1)))?;
        // The group names of `LabelSet::synthetic` are the record's field names.
        let labels = synthetic
            .groups
            .iter()
            .map(|(g, _)| {
                let v = a.get(g).and_then(|v| v.as_str()).unwrap_or_default();
                format!("{g}{GROUP_SEPARATOR}{v}")
            })
            .collect();
        out.push(LabelledFile {
            path: rec.path,
            labels,
        });
    }
    Ok(out)
}

/// Reads a CSV of `file,labels` rows (labels separated by `;`; a `file,labels` header is
/// skipped).
pub fn read_label_csv(path: &Path) -> Result<Vec<LabelledFile>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| AdiffError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let mut out = vec![];
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| AdiffError::Invalid(format!("{}: {e}", path.display())))?;
        let (Some(file), Some(labels)) = (rec.get(0), rec.get(1)) else {
            return Err(AdiffError::Invalid(format!(
                "{}: row {} needs two columns (file, labels separated by '{CSV_LABEL_SEPARATOR}')",
                path.display(),
                i + 1
            )));
        };
        if i == 0 && file.trim() == "file" && labels.trim() == "labels" {
            continue;
        }
        out.push(LabelledFile {
            path: file.trim().to_string(),
            labels: labels
                .split(CSV_LABEL_SEPARATOR)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    Ok(out)
}

/// Reads a label file by its extension (`.jsonl`: truth records, only those of `split` when
/// given; otherwise a CSV, which has no split).
pub fn read_labels(path: &Path, split: Option<&str>) -> Result<Vec<LabelledFile>> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        read_truth(path, split)
    } else {
        read_label_csv(path)
    }
}

/// The label set of some files: the synthetic one when every label belongs to it, otherwise
/// the sorted distinct labels.
pub fn label_set_for(files: &[LabelledFile]) -> LabelSet {
    let synthetic = LabelSet::synthetic();
    let all: std::collections::BTreeSet<&String> = files.iter().flat_map(|f| &f.labels).collect();
    if all.iter().all(|l| synthetic.names.contains(l)) {
        synthetic
    } else {
        LabelSet::new(all.into_iter().cloned().collect())
    }
}

/// Writes `labels.json`: label i names HTSAT clip-wise output i.
pub fn write_labels_file(path: &Path, names: &[String]) -> Result<()> {
    let json = serde_json::json!({
        "labels": names,
        "note": "label i is HTSAT clip-wise output i (the first K of its outputs)",
    });
    std::fs::write(path, format!("{json:#}\n"))
        .map_err(|e| AdiffError::Invalid(format!("cannot write {}: {e}", path.display())))
}

/// Reads `labels.json` (see [`write_labels_file`]); errors name the file.
pub fn read_labels_file(path: &Path) -> Result<Vec<String>> {
    let bad = |why: String| AdiffError::Invalid(format!("{}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    v["labels"]
        .as_array()
        .ok_or_else(|| bad("no \"labels\" list".into()))?
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("a label is not a string".into()))
}

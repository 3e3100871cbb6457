//! The 527 AudioSet event names, in the index order of HTSAT's outputs (shipped in
//! `data/audioset/class_labels.csv` and compiled into the binary).

use crate::error::{AdiffError, Result};

const CLASS_LABELS_CSV: &str = include_str!("../../data/audioset/class_labels.csv");

/// AudioSet event names, index = HTSAT output index.
pub fn class_labels() -> Result<Vec<String>> {
    parse_class_labels(CLASS_LABELS_CSV)
}

/// Parses `index,display_name` rows (names may be double-quoted and contain commas).
fn parse_class_labels(text: &str) -> Result<Vec<String>> {
    let mut labels = Vec::new();
    for (line_no, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || {
            AdiffError::Invalid(format!(
                "class_labels.csv line {}: malformed row",
                line_no + 1
            ))
        };
        let (index, name) = line.split_once(',').ok_or_else(bad)?;
        let index: usize = index.trim().parse().map_err(|_| bad())?;
        if index != labels.len() {
            return Err(bad());
        }
        let name = name.trim();
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .map(|n| n.replace("\"\"", "\""))
            .unwrap_or_else(|| name.to_string());
        labels.push(name);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_labels_have_527_names_in_order() {
        let l = class_labels().unwrap();
        assert_eq!(l.len(), 527);
        assert_eq!(l[0], "Speech");
        assert_eq!(l[1], "Male speech, man speaking");
    }
}

//! ADIFF explanation CSVs (ACD/CLD): `taskname, filepath1, filepath2, caption1, caption2, input,
//! answer`, one pair of audios, a prompt and the reference explanation per row.

use std::path::Path;

use crate::data::csv_schema::read_columns;
use crate::error::{AdiffError, Result};

/// Columns every explanation CSV must have, in the released order.
pub const COLUMNS: [&str; 7] = [
    "taskname",
    "filepath1",
    "filepath2",
    "caption1",
    "caption2",
    "input",
    "answer",
];

/// One row of an explanation CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplanationRow {
    /// 1-based line of the record in its file (header = line 1), for error messages.
    pub line: u64,
    pub taskname: String,
    pub filepath1: String,
    pub filepath2: String,
    pub caption1: String,
    pub caption2: String,
    /// The prompt.
    pub input: String,
    /// The reference explanation.
    pub answer: String,
}

impl ExplanationRow {
    /// The released column values, in [`COLUMNS`] order.
    pub fn fields(&self) -> [&str; 7] {
        [
            &self.taskname,
            &self.filepath1,
            &self.filepath2,
            &self.caption1,
            &self.caption2,
            &self.input,
            &self.answer,
        ]
    }

    /// What identifies a row across runs (for resuming): the two audios and the prompt.
    pub fn key(&self) -> (String, String, String) {
        (
            self.filepath1.clone(),
            self.filepath2.clone(),
            self.input.clone(),
        )
    }
}

/// Reads an explanation CSV. A missing column is named; a row with the wrong number of fields is
/// named by its line.
pub fn read_explanations(path: &Path) -> Result<Vec<ExplanationRow>> {
    let mut rows = Vec::new();
    for (line, f) in read_columns(path, &COLUMNS, "")? {
        let [taskname, filepath1, filepath2, caption1, caption2, input, answer] =
            <[String; 7]>::try_from(f).expect("one field per column");
        rows.push(ExplanationRow {
            line,
            taskname,
            filepath1,
            filepath2,
            caption1,
            caption2,
            input,
            answer,
        });
    }
    if rows.is_empty() {
        return Err(AdiffError::Invalid(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_samples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/samples");
        for f in std::fs::read_dir(dir).unwrap() {
            let rows = read_explanations(&f.unwrap().path()).unwrap();
            assert_eq!(rows.len(), 20);
            assert!(rows
                .iter()
                .all(|r| !r.answer.is_empty() && r.input.starts_with("explain")));
        }
    }
}

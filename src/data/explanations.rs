//! ADIFF explanation CSVs (ACD/CLD): `taskname, filepath1, filepath2, caption1, caption2, input,
//! answer`, one pair of audios, a prompt and the reference explanation per row.

use std::path::Path;

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

/// 1-based line numbers of CSV records, counted from their byte positions. The csv crate's own
/// line count is one too low with CRLF endings (a record's position points at the previous line's
/// `\n`), so terminators there are skipped and newlines counted here, incrementally (records come
/// in file order).
pub struct RecordLines<'a> {
    bytes: &'a [u8],
    counted_to: usize,
    newlines: u64,
}

impl<'a> RecordLines<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            counted_to: 0,
            newlines: 0,
        }
    }

    /// Line of `rec`, which must come after every record asked about before.
    pub fn line_of(&mut self, rec: &csv::StringRecord) -> u64 {
        let bytes = self.bytes;
        let mut start = rec
            .position()
            .map_or(0, |p| p.byte() as usize)
            .min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start > self.counted_to {
            self.newlines += bytes[self.counted_to..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            self.counted_to = start;
        }
        1 + self.newlines
    }
}

/// Reads an explanation CSV. A missing column is named; a row with the wrong number of fields is
/// named by its line.
pub fn read_explanations(path: &Path) -> Result<Vec<ExplanationRow>> {
    let err = |m: String| AdiffError::Invalid(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut lines = RecordLines::new(&bytes);
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let headers = rdr.headers().map_err(|e| err(e.to_string()))?.clone();
    let mut index = [0usize; 7];
    for (slot, col) in index.iter_mut().zip(COLUMNS) {
        *slot = headers
            .iter()
            .position(|h| h.trim() == col)
            .ok_or_else(|| {
                err(format!(
                    "missing column '{col}' (header: {})",
                    headers.iter().collect::<Vec<_>>().join(",")
                ))
            })?;
    }
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| err(e.to_string()))?;
        let line = lines.line_of(&rec);
        if rec.len() != headers.len() {
            return Err(err(format!(
                "row at line {line} has {} fields, the header has {}",
                rec.len(),
                headers.len()
            )));
        }
        let f = |i: usize| rec[index[i]].to_string();
        rows.push(ExplanationRow {
            line,
            taskname: f(0),
            filepath1: f(1),
            filepath2: f(2),
            caption1: f(3),
            caption2: f(4),
            input: f(5),
            answer: f(6),
        });
    }
    if rows.is_empty() {
        return Err(err("no rows".into()));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_count_lf_crlf_and_quoted_newlines() {
        for sep in ["\n", "\r\n"] {
            let text = ["a,b", "1,\"x", "y\"", "2,z", ""].join(sep);
            let mut rdr = csv::Reader::from_reader(text.as_bytes());
            let mut lines = RecordLines::new(text.as_bytes());
            let got: Vec<u64> = rdr.records().map(|r| lines.line_of(&r.unwrap())).collect();
            assert_eq!(got, vec![2, 4], "separator {sep:?}");
        }
    }

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

//! CSV files with a known set of columns: the header is checked once, every row must have the
//! header's number of fields, and errors name the file and the row's line (as an editor counts
//! lines: quoted newlines and CRLF endings included).

use std::path::Path;

use crate::error::{AdiffError, Result};

/// Records with their 1-based line: `(line, fields)`.
pub type Records = Vec<(u64, Vec<String>)>;

/// Reads the CSV at `path`: its header cells (trimmed, without a byte-order mark: Hugging Face
/// exports and spreadsheets add them) and every record with its line. A record with another
/// number of fields than the header is an error naming its line.
pub fn read_table(path: &Path) -> Result<(Vec<String>, Records)> {
    let err = |m: String| AdiffError::Invalid(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut lines = RecordLines::new(&bytes);
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| err(e.to_string()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
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
        rows.push((line, rec.iter().map(str::to_string).collect()));
    }
    Ok((headers, rows))
}

/// Reads the CSV at `path` and returns, for every record, its line and the values of `columns`
/// in that order (see [`read_table`] for how the header matches); a missing column is named,
/// followed by `context` (e.g. " for --format clotho") and the header found.
pub fn read_columns(
    path: &Path,
    columns: &[&str],
    context: &str,
) -> Result<Vec<(u64, Vec<String>)>> {
    let (headers, rows) = read_table(path)?;
    let index = columns
        .iter()
        .map(|col| {
            headers.iter().position(|h| h == col).ok_or_else(|| {
                AdiffError::Invalid(format!(
                    "{}: missing column '{col}'{context} (header: {})",
                    path.display(),
                    headers.join(",")
                ))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok(rows
        .into_iter()
        .map(|(line, rec)| (line, index.iter().map(|&i| rec[i].clone()).collect()))
        .collect())
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
}

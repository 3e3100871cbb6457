//! Caption datasets read by `adiff build-dataset pairs`: AudioCaps, Clotho or a plain
//! `(file, caption)` CSV, flattened to one `(audio, caption)` per row (paper, appendix E, step 1).

use std::collections::HashSet;
use std::path::Path;

use crate::data::csv_schema::read_columns;
use crate::error::{AdiffError, Result};

/// Default rule turning an AudioCaps row into a file name: the layout most AudioCaps download
/// scripts write (`{youtube_id}_{start_time}.wav`, start time as in the CSV, in seconds).
pub const DEFAULT_AUDIOCAPS_NAMING: &str = "{youtube_id}_{start_time}.{ext}";

/// Default extension for AudioCaps files (the CSVs hold no file names).
pub const DEFAULT_AUDIO_EXT: &str = "wav";

/// Columns of the AudioCaps CSVs.
const AUDIOCAPS_COLUMNS: [&str; 4] = ["audiocap_id", "youtube_id", "start_time", "caption"];
/// Columns of the Clotho caption CSVs.
const CLOTHO_COLUMNS: [&str; 6] = [
    "file_name",
    "caption_1",
    "caption_2",
    "caption_3",
    "caption_4",
    "caption_5",
];
/// Columns of a plain caption CSV.
const PLAIN_COLUMNS: [&str; 2] = ["file", "caption"];

/// Which layout a caption CSV has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptionFormat {
    /// `audiocap_id, youtube_id, start_time, caption` (one caption per row).
    Audiocaps,
    /// `file_name, caption_1 .. caption_5` (five rows per audio once flattened).
    Clotho,
    /// `file, caption` (paths relative to --audio-root).
    Csv,
}

impl CaptionFormat {
    /// The `taskname` the released data uses for this source (`csv` has none: `custom`).
    pub fn taskname(self) -> &'static str {
        match self {
            CaptionFormat::Audiocaps => "audiocaps",
            CaptionFormat::Clotho => "clothov21",
            CaptionFormat::Csv => "custom",
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            CaptionFormat::Audiocaps => &AUDIOCAPS_COLUMNS,
            CaptionFormat::Clotho => &CLOTHO_COLUMNS,
            CaptionFormat::Csv => &PLAIN_COLUMNS,
        }
    }
}

/// How AudioCaps rows become file names; ignored by the other formats, which name their files.
#[derive(Debug, Clone)]
pub struct AudioNaming {
    /// Template with `{audiocap_id}`, `{youtube_id}`, `{start_time}` and `{ext}`.
    pub template: String,
    /// Extension substituted for `{ext}` (no dot).
    pub ext: String,
}

impl Default for AudioNaming {
    fn default() -> Self {
        Self {
            template: DEFAULT_AUDIOCAPS_NAMING.to_string(),
            ext: DEFAULT_AUDIO_EXT.to_string(),
        }
    }
}

/// One flattened row: an audio file (relative to the audio root) and one of its captions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaptionRow {
    pub audio: String,
    pub caption: String,
}

/// The flattened rows of a caption file, with what was dropped on the way.
#[derive(Debug, Clone, Default)]
pub struct Captions {
    pub rows: Vec<CaptionRow>,
    /// Rows identical to an earlier row (same audio and caption), dropped: `(line, row)`.
    pub duplicates: Vec<(u64, CaptionRow)>,
    /// Rows with an empty caption or file name, dropped: their lines.
    pub blank: Vec<u64>,
}

/// Reads and flattens a caption CSV. A missing column is named with the file; a row with the
/// wrong number of fields is named by its line.
pub fn read_captions(path: &Path, format: CaptionFormat, naming: &AudioNaming) -> Result<Captions> {
    let err = |m: String| AdiffError::Invalid(format!("{}: {m}", path.display()));
    let context = format!(" for --format {}", format_name(format));
    let mut out = Captions::default();
    let mut seen = HashSet::new();
    for (line, rec) in read_columns(path, format.columns(), &context)? {
        let f = |i: usize| rec[i].trim();
        let (audio, captions): (String, Vec<&str>) = match format {
            CaptionFormat::Audiocaps => {
                let name = naming
                    .template
                    .replace("{audiocap_id}", f(0))
                    .replace("{youtube_id}", f(1))
                    .replace("{start_time}", f(2))
                    .replace("{ext}", &naming.ext);
                let name = if f(1).is_empty() { String::new() } else { name };
                (name, vec![f(3)])
            }
            CaptionFormat::Clotho => (f(0).to_string(), (1..=5).map(f).collect()),
            CaptionFormat::Csv => (f(0).to_string(), vec![f(1)]),
        };
        for caption in captions {
            if audio.is_empty() || caption.is_empty() {
                out.blank.push(line);
                continue;
            }
            let row = CaptionRow {
                audio: audio.clone(),
                caption: caption.to_string(),
            };
            if seen.insert(row.clone()) {
                out.rows.push(row);
            } else {
                out.duplicates.push((line, row));
            }
        }
    }
    if out.rows.is_empty() {
        return Err(err("no caption rows".into()));
    }
    Ok(out)
}

fn format_name(format: CaptionFormat) -> &'static str {
    match format {
        CaptionFormat::Audiocaps => "audiocaps",
        CaptionFormat::Clotho => "clotho",
        CaptionFormat::Csv => "csv",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, format: CaptionFormat) -> Result<Captions> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.csv");
        std::fs::write(&p, text).unwrap();
        read_captions(&p, format, &AudioNaming::default())
    }

    #[test]
    fn audiocaps_rows_get_file_names() {
        let c = read(
            "audiocap_id,youtube_id,start_time,caption\n1,abc,30,A dog barks\n2,xyz,0,Rain\n",
            CaptionFormat::Audiocaps,
        )
        .unwrap();
        assert_eq!(c.rows[0].audio, "abc_30.wav");
        assert_eq!(c.rows[1].caption, "Rain");
    }

    #[test]
    fn clotho_flattens_five_captions_and_drops_duplicates() {
        let c = read(
            "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n\
             a.wav,one,two,three,four,four\n",
            CaptionFormat::Clotho,
        )
        .unwrap();
        assert_eq!(c.rows.len(), 4);
        assert_eq!(c.duplicates.len(), 1);
        assert_eq!(c.duplicates[0].0, 2);
    }

    #[test]
    fn missing_column_is_named() {
        let e = read("file,text\na.wav,x\n", CaptionFormat::Csv)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing column 'caption'") && e.contains("c.csv"),
            "{e}"
        );
    }
}

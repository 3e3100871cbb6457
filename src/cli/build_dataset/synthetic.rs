//! `adiff build-dataset synthetic`: pairs of synthetic clips with known attributes, their
//! explanations in the three tiers (ACD CSV format) and `truth.jsonl`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;

use crate::data::explanations::COLUMNS;
use crate::data::synthetic::{
    explanation, pair_rng, render, split_seed, write_wav_pcm16, Attribute, Attributes,
    SyntheticPair, TruthRecord, SAMPLE_RATE, TASKNAME,
};
use crate::progress;
use crate::text::prompts::{PromptDatabase, PromptKind};

/// File-name tag of each tier's CSV, as in the released data (`{split}_{tag}_answer.csv`).
const TIER_FILES: [(u8, &str); 3] = [(1, "fewwords"), (2, "sentence"), (3, "detail")];
/// File-name tag of the position-captioning CSV (`{split}_captioning.csv`): training reads a CSV
/// whose name holds "caption" as captioning rows.
const CAPTIONING_TAG: &str = "captioning";
/// Folder (inside OUT_DIR) of the rendered clips.
const AUDIO_DIR: &str = "audio";
/// Name of the attribute file (inside OUT_DIR).
pub(super) const TRUTH_FILE: &str = "truth.jsonl";
/// Most pairs per split: clip names carry a 6-digit index.
const MAX_PAIRS: usize = 999_999;

/// Render synthetic audio pairs whose differences are known, with explanations.
///
/// Each pair is two 10 s, 32 kHz mono 16-bit WAV clips: one source over a background,
/// described by five attributes, that differ in 1 to 3 of them:
///
///   source kind  tone | buzz | chord | noise | clicks | rising chirp | falling chirp
///   pitch        low (150-230 Hz) | mid (460-720 Hz) | high (1440-2250 Hz) fundamental
///   loudness     quiet (-40 dBFS) | moderately loud (-29) | loud (-18) RMS while sounding, ±1.5 dB
///   pattern      continuous | pulsing (0.5 s on, 0.5 s off) | a single event (2 s)
///   background   silence | a hum (50 + 100 Hz) | a hiss (white noise), both at -52 dBFS
///
/// Written to OUT_DIR:
///   audio/{split}_{index}_1.wav, _2.wav        the clips of each pair
///   {split}_fewwords_answer.csv                 tier 1, e.g. "louder, chord instead of tone"
///   {split}_sentence_answer.csv                 tier 2, e.g. "The second audio is louder and a chord instead of a tone."
///   {split}_detail_answer.csv                   tier 3: both captions, each difference, what stays the same
///   {split}_captioning.csv                      with --captioning: two rows per pair, "caption the
///                                               first / second audio" answered by that clip's caption
///   truth.jsonl                                 one JSON object per clip: path, split, kind, pitch,
///                                               loudness, pattern, background, f0_hz, level_dbfs, ...
///
/// The CSVs have the ACD columns (taskname, filepath1, filepath2, caption1, caption2, input,
/// answer), file paths relative to OUT_DIR, `input` drawn from the prompt database. Explanations
/// use a fixed vocabulary that `adiff eval --synthetic OUT_DIR/truth.jsonl preds.csv` reads back:
/// "louder"/"quieter", "higher in pitch"/"lower in pitch", "X instead of Y" (the second audio's
/// value first), "the same pitch", "the same source (a tone)", ...
///
/// The same --seed and --split give the same files, bit for bit; splits built with one seed
/// differ. Building another split into the same OUT_DIR adds its rows to truth.jsonl.
///
/// Example:
///   adiff build-dataset synthetic -o data/synth --count 2000 --seed 1 --split train
///   adiff build-dataset synthetic -o data/synth --count 200 --seed 1 --split test
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct SyntheticArgs {
    /// Output folder (created; an earlier build of the same split is replaced).
    #[arg(long, short = 'o', value_name = "OUT_DIR")]
    pub output: PathBuf,
    /// Number of pairs (each pair is two clips; at most 999999).
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Random seed: the same seed and split give identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Split name, used in file names (letters, digits, '-' and '_').
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Every pair differs in exactly this many attributes (1-3) instead of 1-3 drawn uniformly,
    /// e.g. `--differences 1` for a curriculum of single differences.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub differences: Option<u8>,
    /// Every pair differs in exactly these attributes and agrees in the others (comma-separated:
    /// loudness, pitch, kind, pattern, background), e.g. `--differ-in pitch` for pairs that
    /// teach one comparison at a time.
    #[arg(long, value_delimiter = ',', value_parser = parse_attribute, conflicts_with = "differences")]
    pub differ_in: Vec<Attribute>,
    /// Also write {split}_captioning.csv: position-captioning rows (paper, section 5.4), two per
    /// pair, a "caption the first / second audio" prompt answered by that clip's caption, which
    /// names every attribute of one clip ("a loud high-pitched buzz pulsing over a hum").
    #[arg(long)]
    pub captioning: bool,
}

pub(super) fn parse_attribute(name: &str) -> Result<Attribute, String> {
    Attribute::from_name(name).ok_or_else(|| {
        format!("unknown attribute '{name}' (loudness, pitch, kind, pattern or background)")
    })
}

/// One rendered pair, the prompts of its three explanation rows and of its two captioning rows.
struct Rendered {
    paths: [String; 2],
    pair: SyntheticPair,
    prompts: [String; 3],
    caption_prompts: [String; 2],
}

pub fn run(args: SyntheticArgs) -> anyhow::Result<()> {
    check_count_and_split(args.count, &args.split)?;
    let out = &args.output;
    let audio_dir = out.join(AUDIO_DIR);
    std::fs::create_dir_all(&audio_dir)
        .with_context(|| format!("cannot create {}", audio_dir.display()))?;
    let db = PromptDatabase::bundled()?;
    let base = split_seed(args.seed, &args.split);
    let started = std::time::Instant::now();
    let pb = progress::items(args.count, "rendering pairs");
    let rendered = (0..args.count)
        .into_par_iter()
        .map(|i| -> anyhow::Result<Rendered> {
            let mut rng = pair_rng(base, i);
            let pair = match args.differences {
                Some(n) => SyntheticPair::draw_differing_in(&mut rng, usize::from(n)),
                None if !args.differ_in.is_empty() => {
                    SyntheticPair::draw_differing_exactly(&mut rng, &args.differ_in)
                }
                None => SyntheticPair::draw(&mut rng),
            };
            let prompts = [1u8, 2, 3].map(|t| db.sample(PromptKind::Tier(t), &mut rng).to_string());
            // Drawn after everything else, so the pairs and the tier prompts do not depend on
            // whether captioning rows are written.
            let caption_prompts = [PromptKind::CaptionFirst, PromptKind::CaptionSecond]
                .map(|k| db.sample(k, &mut rng).to_string());
            let paths = [1, 2].map(|k| format!("{AUDIO_DIR}/{}_{i:06}_{k}.wav", args.split));
            for (spec, rel) in [&pair.first, &pair.second].into_iter().zip(&paths) {
                let file = out.join(rel);
                write_wav_pcm16(&file, &render(spec), SAMPLE_RATE)
                    .with_context(|| format!("cannot write {}", file.display()))?;
            }
            pb.inc(1);
            Ok(Rendered {
                paths,
                pair,
                prompts,
                caption_prompts,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    pb.finish_and_clear();
    let render_s = started.elapsed().as_secs_f64();

    let rows: Vec<TierRow> = rendered
        .iter()
        .map(|r| TierRow {
            paths: [&r.paths[0], &r.paths[1]],
            first: &r.pair.first.attributes,
            second: &r.pair.second.attributes,
            prompts: &r.prompts,
        })
        .collect();
    write_tier_csvs(out, &args.split, &rows)?;
    let captioning = out.join(format!("{}_{CAPTIONING_TAG}.csv", args.split));
    if args.captioning {
        write_captioning(&captioning, &rendered)?;
    } else if captioning.exists() {
        // A stale file from an earlier build of this split would name other clips.
        std::fs::remove_file(&captioning)
            .with_context(|| format!("cannot remove {}", captioning.display()))?;
    }
    write_truth(out, &args.split, &rendered)?;
    remove_stale_clips(&audio_dir, &args.split, args.count)?;
    let clips = 2 * args.count;
    eprintln!(
        "wrote {} pair(s) ({clips} clips) of split '{}' to {} in {render_s:.2} s ({:.1} clips/s)",
        args.count,
        args.split,
        out.display(),
        clips as f64 / render_s.max(1e-9)
    );
    Ok(())
}

/// Checks `--count` (1..=MAX_PAIRS) and `--split` (a name usable in file names).
pub(super) fn check_count_and_split(count: usize, split: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_PAIRS).contains(&count),
        "--count must be between 1 and {MAX_PAIRS}"
    );
    anyhow::ensure!(
        !split.is_empty()
            && split
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--split '{split}': use letters, digits, '-' and '_' only"
    );
    Ok(())
}

/// One explanation row of every tier: the clips' paths and labels and each tier's prompt.
pub(super) struct TierRow<'a> {
    pub paths: [&'a str; 2],
    pub first: &'a Attributes,
    pub second: &'a Attributes,
    pub prompts: &'a [String; 3],
}

/// Writes `{split}_{fewwords,sentence,detail}_answer.csv` into `out`, one row per pair.
pub(super) fn write_tier_csvs(out: &Path, split: &str, rows: &[TierRow]) -> anyhow::Result<()> {
    for (tier, tag) in TIER_FILES {
        let file = out.join(format!("{split}_{tag}_answer.csv"));
        let mut w = csv::Writer::from_path(&file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        w.write_record(COLUMNS)?;
        for r in rows {
            w.write_record([
                TASKNAME,
                r.paths[0],
                r.paths[1],
                &r.first.caption(),
                &r.second.caption(),
                &r.prompts[usize::from(tier - 1)],
                &explanation(r.first, r.second, tier),
            ])?;
        }
        w.flush()?;
    }
    Ok(())
}

/// Writes the position-captioning rows: per pair, the first clip's caption under a "caption the
/// first audio" prompt, then the second's.
fn write_captioning(file: &Path, rendered: &[Rendered]) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(file).with_context(|| format!("cannot write {}", file.display()))?;
    w.write_record(COLUMNS)?;
    for r in rendered {
        let captions = [
            r.pair.first.attributes.caption(),
            r.pair.second.attributes.caption(),
        ];
        for (prompt, answer) in r.caption_prompts.iter().zip(&captions) {
            w.write_record([
                TASKNAME,
                &r.paths[0],
                &r.paths[1],
                &captions[0],
                &captions[1],
                prompt,
                answer,
            ])?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Removes the clips of `split` that an earlier, larger build left behind (index >= count), so
/// that the audio folder holds exactly what the CSVs and truth.jsonl name. Only names of the
/// exact form `{split}_{6 digits}_{1|2}.wav` are touched.
fn remove_stale_clips(audio_dir: &Path, split: &str, count: usize) -> anyhow::Result<()> {
    let prefix = format!("{split}_");
    for entry in std::fs::read_dir(audio_dir)
        .with_context(|| format!("cannot list {}", audio_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let stale = match rest.split_once('_') {
            Some((index, "1.wav" | "2.wav")) if index.len() == 6 => index
                .parse::<usize>()
                .is_ok_and(|i| index.bytes().all(|b| b.is_ascii_digit()) && i >= count),
            _ => false,
        };
        if stale {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The records of a truth.jsonl's text (`path` names it in errors), each with its line; blank
/// lines are skipped, a line that is not a record is an error naming its number.
pub(super) fn parse_truth_lines<'a>(
    path: &Path,
    text: &'a str,
) -> anyhow::Result<Vec<(&'a str, TruthRecord)>> {
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: TruthRecord = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a truth record", path.display(), i + 1))?;
        records.push((line, rec));
    }
    Ok(records)
}

/// Writes truth.jsonl: the records of other splits already there are kept (in their order), then
/// this split's, one per clip in file order. Written to a temporary file, then renamed.
fn write_truth(out: &Path, split: &str, rendered: &[Rendered]) -> anyhow::Result<()> {
    let path = out.join(TRUTH_FILE);
    let mut lines = Vec::new();
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (line, rec) in parse_truth_lines(&path, &text)? {
            if rec.split != split {
                lines.push(line.to_string());
            }
        }
    }
    for r in rendered {
        for (spec, p) in [&r.pair.first, &r.pair.second].into_iter().zip(&r.paths) {
            let rec = TruthRecord {
                path: p.clone(),
                split: split.to_string(),
                spec: *spec,
            };
            lines.push(serde_json::to_string(&rec)?);
        }
    }
    let tmp = out.join(format!(".{TRUTH_FILE}.partial"));
    std::fs::write(&tmp, lines.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SyntheticArgs;
    use crate::data::synthetic::{
        BACKGROUND_LEVEL_DBFS, LEVEL_JITTER_DB, LOUDNESS_LEVELS_DBFS, PITCH_RANGES_HZ, PULSE_ON_S,
        SINGLE_EVENT_S,
    };

    /// The help text quotes the world's constants; it must follow them when they change.
    #[test]
    fn help_states_the_constants() {
        let cmd = <SyntheticArgs as clap::Args>::augment_args(clap::Command::new("synthetic"));
        let help = cmd
            .get_long_about()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let mut expected: Vec<String> = PITCH_RANGES_HZ
            .iter()
            .map(|(lo, hi)| format!("({lo}-{hi} Hz)"))
            .collect();
        expected.push(format!("quiet ({} dBFS)", LOUDNESS_LEVELS_DBFS[0]));
        expected.push(format!("moderately loud ({})", LOUDNESS_LEVELS_DBFS[1]));
        expected.push(format!("loud ({})", LOUDNESS_LEVELS_DBFS[2]));
        expected.push(format!("±{LEVEL_JITTER_DB} dB"));
        expected.push(format!("{BACKGROUND_LEVEL_DBFS} dBFS"));
        expected.push(format!("pulsing ({PULSE_ON_S} s on"));
        expected.push(format!("a single event ({SINGLE_EVENT_S} s)"));
        for e in expected {
            assert!(help.contains(&e), "{e:?} not in the help");
        }
    }
}

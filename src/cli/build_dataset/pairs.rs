//! `adiff build-dataset pairs`: ACD/CLD-style difference data from a caption dataset.
//!
//! Caption rows are flattened (one audio and one caption per row), paired as the paper's
//! appendix E does, and every pair is explained at each requested tier, by an LLM or by offline
//! templates. Each finished row is appended to its CSV and flushed at once, so a killed run loses
//! only the requests in flight, and rerunning the same command skips the rows already written.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::data::captions::{
    read_captions, AudioNaming, CaptionFormat, CaptionRow, DEFAULT_AUDIOCAPS_NAMING,
    DEFAULT_AUDIO_EXT,
};
use crate::data::explainer::llm::{
    LlmClient, LlmConfig, DEFAULT_BACKOFF_MS, DEFAULT_MAX_RETRIES, DEFAULT_TEMPERATURE,
    DEFAULT_TIMEOUT_S,
};
use crate::data::explainer::template::TemplateExplainer;
use crate::data::explainer::{tier_file_word, ExplainError, Explainer};
use crate::data::explanations::COLUMNS;
use crate::data::pairing::pair_rows;
use crate::text::prompts::{PromptDatabase, PromptKind};

/// The environment variable holding the LLM API key (never a flag: flags end up in shell
/// history and process lists).
pub const API_KEY_ENV: &str = "ADIFF_LLM_API_KEY";
/// Default number of LLM requests in flight.
const DEFAULT_CONCURRENCY: usize = 4;
/// Most requests in flight: one thread each, and more would only hit the server's rate limit.
const MAX_CONCURRENCY: usize = 256;
/// How many missing audio files an error message names.
const MISSING_NAMES_SHOWN: usize = 5;
/// Seed streams: the pairing and each output file draw from their own generator, so adding a
/// tier or `--captioning` changes neither the pairs nor the other files' prompts.
const STREAM_CAPTIONING: u64 = 4;

/// Where the explanations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainerKind {
    /// An OpenAI-compatible chat-completions endpoint (--llm-url, --llm-model, key in
    /// ADIFF_LLM_API_KEY).
    Llm,
    /// Fixed templates filled with the two captions: offline and deterministic, for tests and dry
    /// runs. These are NOT real difference explanations; do not train on them.
    Template,
}

/// Pair the rows of a caption dataset and explain each pair's difference, in the ACD/CLD format.
///
/// Reads AudioCaps (audiocap_id,youtube_id,start_time,caption), Clotho
/// (file_name,caption_1..caption_5) or plain (file,caption) CSVs and flattens them to one
/// (audio, caption) per row; duplicate rows are reported and dropped. Row i is paired with a row
/// j drawn (seeded) among all rows except i..i+4 (wrapping around) and except rows of the same
/// audio file, as in the paper's appendix E.
///
/// Writes, in OUT_DIR, one CSV per tier: {split}_fewwords_answer.csv (tier 1),
/// {split}_sentence_answer.csv (tier 2), {split}_detail_answer.csv (tier 3), with the columns
/// taskname,filepath1,filepath2,caption1,caption2,input,answer; `input` is a prompt of that tier
/// drawn (seeded) from the prompt database. --captioning also writes {split}_captioning.csv: two
/// rows per pair, "caption the first/second audio" prompts answered by that audio's caption.
///
/// Every finished row is appended and flushed at once; rerunning the same command skips rows
/// already written (a row is known by its audios, captions and prompt), so a killed or
/// budget-capped run resumes. With --concurrency above 1, rows appear in the order they finish.
///
/// --explainer template writes TEMPLATE TEXT, not real explanations: use it for dry runs.
///
/// Examples:
///   adiff build-dataset pairs --captions clotho_captions_development.csv --format clotho \
///     --audio-root clotho/development --split train -o out --explainer template
///   ADIFF_LLM_API_KEY=... adiff build-dataset pairs --captions train.csv --format audiocaps \
///     --audio-root audiocaps/train -o out --llm-url https://api.openai.com/v1 --llm-model MODEL
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct PairsArgs {
    /// Caption CSV.
    #[arg(long)]
    pub captions: PathBuf,
    /// Layout of the caption CSV.
    #[arg(long, value_enum)]
    pub format: CaptionFormat,
    /// Folder the audio files are in (file paths in the output are relative to it).
    #[arg(long)]
    pub audio_root: PathBuf,
    /// Output folder (created if needed; files in it are resumed).
    #[arg(long = "output-dir", short = 'o')]
    pub output_dir: PathBuf,
    /// Who writes the explanations. `template` writes fixed template text, NOT real
    /// explanations (offline dry runs and tests only).
    #[arg(long, value_enum, default_value_t = ExplainerKind::Llm)]
    pub explainer: ExplainerKind,
    /// Tiers to make, comma-separated (1: a few words, 2: a sentence, 3: a paragraph).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub tiers: Vec<u8>,
    /// Also write {split}_captioning.csv (caption the first / second audio of each pair).
    #[arg(long)]
    pub captioning: bool,
    /// Seed of the pairing and of the prompt draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Split name: the prefix of the output files.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// The taskname column (default: audiocaps, clothov21 as in the released data, or custom).
    #[arg(long)]
    pub taskname: Option<String>,
    /// AudioCaps only: how a row names its file; {audiocap_id}, {youtube_id}, {start_time} and
    /// {ext} are replaced by the row's values and --audio-ext.
    #[arg(long, default_value = DEFAULT_AUDIOCAPS_NAMING)]
    pub audiocaps_naming: String,
    /// AudioCaps only: the audio files' extension.
    #[arg(long, default_value = DEFAULT_AUDIO_EXT)]
    pub audio_ext: String,
    /// Skip rows whose audio file is missing under --audio-root (default: stop with an error).
    #[arg(long)]
    pub allow_missing: bool,
    /// Prompt database JSON to draw `input` from (default: the bundled one).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// LLM: chat-completions URL, e.g. https://api.openai.com/v1 (/chat/completions is appended
    /// when missing). The API key is read from ADIFF_LLM_API_KEY.
    #[arg(long)]
    pub llm_url: Option<String>,
    /// LLM: model name.
    #[arg(long)]
    pub llm_model: Option<String>,
    /// LLM: sampling temperature.
    #[arg(long, default_value_t = DEFAULT_TEMPERATURE)]
    pub temperature: f64,
    /// LLM: requests in flight.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// LLM: time-out of one request, in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: f64,
    /// LLM: retries of a request after HTTP 429, 5xx, a time-out or a broken connection.
    #[arg(long, default_value_t = DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,
    /// LLM: wait before the first retry, in ms (doubles each retry; a Retry-After header can
    /// make it longer).
    #[arg(long, default_value_t = DEFAULT_BACKOFF_MS)]
    pub backoff_ms: u64,
    /// LLM: most HTTP requests this run sends, retries included (a hard cap on spend). The run
    /// stops when it is reached; rerun to continue.
    #[arg(long)]
    pub max_requests: Option<usize>,
}

/// One output file and the rows still to write into it.
struct OutFile {
    path: PathBuf,
    /// Tier of the explanations in it; `None` for the captioning file.
    tier: Option<u8>,
}

/// One row to make: its output file, pair index and the record (answer filled in for
/// captioning rows, empty for explanation rows until the explainer answers).
struct Task {
    file: usize,
    pair: usize,
    record: [String; 7],
}

impl Task {
    /// What identifies a row across runs: audios, captions and prompt.
    fn key(&self) -> RowKey {
        key_of(self.record[1..6].iter().map(String::as_str))
    }
}

type RowKey = [String; 5];

fn key_of<'a>(mut fields: impl Iterator<Item = &'a str>) -> RowKey {
    std::array::from_fn(|_| fields.next().unwrap_or_default().to_string())
}

pub fn run(args: PairsArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let tiers = check_args(&args)?;
    let prompts = match &args.prompts {
        Some(p) => PromptDatabase::from_file(p)?,
        None => PromptDatabase::bundled()?,
    };
    // The explainer is set up before any work, so a missing --llm-url fails at once.
    let llm = match args.explainer {
        ExplainerKind::Llm => Some(llm_client(&args)?),
        ExplainerKind::Template => None,
    };

    let naming = AudioNaming {
        template: args.audiocaps_naming.clone(),
        ext: args.audio_ext.trim_start_matches('.').to_string(),
    };
    let captions = read_captions(&args.captions, args.format, &naming)?;
    if let Some((line, row)) = captions.duplicates.first() {
        eprintln!(
            "{}: {} duplicate row(s) dropped (first at line {line}: {} {:?})",
            args.captions.display(),
            captions.duplicates.len(),
            row.audio,
            row.caption
        );
    }
    if let Some(line) = captions.blank.first() {
        eprintln!(
            "{}: {} caption(s) with an empty file name or caption dropped (first at line {line})",
            args.captions.display(),
            captions.blank.len()
        );
    }
    let rows = check_audio(captions.rows, &args.audio_root, args.allow_missing)?;
    let pairs = pair_rows(rows.len(), args.seed, |i, j| rows[i].audio == rows[j].audio)?;

    // Plan every row of every file (deterministic for a seed), then drop those already written.
    let taskname = args
        .taskname
        .clone()
        .unwrap_or_else(|| args.format.taskname().to_string());
    let mut files = Vec::new();
    let mut tasks = Vec::new();
    for &tier in &tiers {
        let name = format!("{}_{}_answer.csv", args.split, tier_file_word(tier)?);
        files.push(OutFile {
            path: args.output_dir.join(name),
            tier: Some(tier),
        });
        let mut rng = StdRng::seed_from_u64(stream_seed(args.seed, u64::from(tier)));
        for p in &pairs {
            let (a, b) = (&rows[p.first], &rows[p.second]);
            let input = prompts.sample(PromptKind::Tier(tier), &mut rng);
            tasks.push(Task {
                file: files.len() - 1,
                pair: p.first,
                record: record(&taskname, a, b, input, ""),
            });
        }
    }
    if args.captioning {
        files.push(OutFile {
            path: args
                .output_dir
                .join(format!("{}_captioning.csv", args.split)),
            tier: None,
        });
        let mut rng = StdRng::seed_from_u64(stream_seed(args.seed, STREAM_CAPTIONING));
        for p in &pairs {
            let (a, b) = (&rows[p.first], &rows[p.second]);
            for (kind, answer) in [
                (PromptKind::CaptionFirst, &a.caption),
                (PromptKind::CaptionSecond, &b.caption),
            ] {
                let input = prompts.sample(kind, &mut rng);
                tasks.push(Task {
                    file: files.len() - 1,
                    pair: p.first,
                    record: record(&taskname, a, b, input, answer),
                });
            }
        }
    }
    let planned = tasks.len();
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let mut todo = Vec::new();
    let mut writers = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let mut done = completed_rows(&file.path)?;
        for t in tasks.iter().filter(|t| t.file == index) {
            match done.get_mut(&t.key()) {
                Some(n) if *n > 0 => *n -= 1,
                _ => todo.push(t),
            }
        }
        let extra: usize = done.values().sum();
        anyhow::ensure!(
            extra == 0,
            "{}: {extra} row(s) in it are not part of this run's plan (made with another --seed, \
             --captions, --tiers, --allow-missing or prompt database?); use another output folder \
             or rerun with the options that made it",
            file.path.display()
        );
        writers.push(open_output(&file.path)?);
    }
    let already = planned - todo.len();

    // Captioning rows need no explainer: written straight away.
    let (captioning, explain): (Vec<&Task>, Vec<&Task>) =
        todo.into_iter().partition(|t| files[t.file].tier.is_none());
    for t in &captioning {
        let w = &mut writers[t.file];
        w.write_record(&t.record)?;
        w.flush()?;
    }

    let template = TemplateExplainer;
    let (explainer, workers): (&dyn Explainer, usize) = match &llm {
        Some(client) => (client, args.concurrency),
        // One worker: the template rows come out in plan order, the same file every run.
        None => (&template, 1),
    };
    let pb = crate::progress::items_with_rate(explain.len(), "rows");
    let (mut explained, mut failed) = (0usize, 0usize);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // A worker hands over its result and waits until the row is on disk before it takes the
    // next one, so a killed run loses at most the `workers` requests in flight (a result
    // queued behind a busy writer would be lost too, and its request paid for).
    type Done = (usize, Result<String, ExplainError>, mpsc::SyncSender<()>);
    let (tx, rx) = mpsc::sync_channel::<Done>(0);
    std::thread::scope(|s| -> anyhow::Result<()> {
        for _ in 0..workers.min(explain.len()) {
            let tx = tx.clone();
            let (next, stop, explain, files) = (&next, &stop, &explain, &files);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= explain.len() || stop.load(Ordering::SeqCst) {
                    break;
                }
                let t = explain[i];
                let tier = files[t.file].tier.unwrap_or_default();
                let result = explainer.explain(&t.record[3], &t.record[4], tier);
                if matches!(result, Err(ExplainError::Budget)) {
                    stop.store(true, Ordering::SeqCst);
                }
                let (ack_tx, ack_rx) = mpsc::sync_channel(1);
                if tx.send((i, result, ack_tx)).is_err() || ack_rx.recv().is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, result, written) in rx {
            let t = explain[i];
            match result {
                Ok(answer) => {
                    let mut rec = t.record.clone();
                    rec[6] = answer;
                    let w = &mut writers[t.file];
                    let wrote = w.write_record(&rec).and_then(|()| Ok(w.flush()?));
                    if let Err(e) = wrote {
                        // Stop the workers: nothing more can be saved.
                        stop.store(true, Ordering::SeqCst);
                        return Err(e).with_context(|| {
                            format!("cannot write {}", files[t.file].path.display())
                        });
                    }
                    explained += 1;
                }
                // Not attempted: counted below with the rows no worker took.
                Err(ExplainError::Budget) => {}
                Err(ExplainError::Failed(why)) => {
                    failed += 1;
                    pb.suspend(|| {
                        eprintln!(
                            "failed: pair {} tier {} ({} vs {}): {why}",
                            t.pair + 1,
                            files[t.file].tier.unwrap_or_default(),
                            t.record[1],
                            t.record[2]
                        )
                    });
                }
            }
            pb.inc(1);
            // The row is written (or reported): the worker may take the next one.
            let _ = written.send(());
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    // Rows refused by the budget, or never handed to a worker once it ran out.
    let unattempted = explain.len() - explained - failed;
    let written = captioning.len() + explained;

    let secs = start.elapsed().as_secs_f64();
    let requests = llm.as_ref().map_or(0, LlmClient::requests);
    let retries = llm.as_ref().map_or(0, LlmClient::retries);
    eprintln!(
        "{} caption rows, {} pairs, {written} rows written ({already} already there), \
         {requests} requests ({retries} retries), {failed} failed, {unattempted} not attempted, \
         {secs:.2} s",
        rows.len(),
        pairs.len(),
    );
    for f in &files {
        eprintln!("  {}", f.path.display());
    }
    if failed > 0 || unattempted > 0 {
        let budget = match (unattempted, args.max_requests) {
            (0, _) => String::new(),
            (_, Some(n)) => format!(", --max-requests {n} reached"),
            (_, None) => String::new(),
        };
        anyhow::bail!(
            "{} row(s) not written ({failed} failed, {unattempted} not attempted{budget}); rerun \
             the same command to make them",
            failed + unattempted
        );
    }
    Ok(())
}

/// Checks the options that need no file; returns the tiers, sorted and deduplicated.
fn check_args(args: &PairsArgs) -> anyhow::Result<Vec<u8>> {
    let mut tiers = Vec::new();
    for &t in &args.tiers {
        tier_file_word(t).context("--tiers")?;
        if !tiers.contains(&t) {
            tiers.push(t);
        }
    }
    tiers.sort_unstable();
    anyhow::ensure!(!tiers.is_empty(), "--tiers needs at least one tier");
    anyhow::ensure!(
        !args.split.is_empty()
            && !args.split.contains(['/', '\\'])
            && args.split != "."
            && args.split != "..",
        "--split {:?} must be a plain name (it prefixes the output file names)",
        args.split
    );
    anyhow::ensure!(
        (1..=MAX_CONCURRENCY).contains(&args.concurrency),
        "--concurrency must be 1 to {MAX_CONCURRENCY}"
    );
    anyhow::ensure!(
        args.timeout > 0.0 && Duration::try_from_secs_f64(args.timeout).is_ok(),
        "--timeout must be a positive number of seconds"
    );
    anyhow::ensure!(
        args.temperature.is_finite() && args.temperature >= 0.0,
        "--temperature must be 0 or more"
    );
    anyhow::ensure!(
        args.audio_root.is_dir(),
        "--audio-root {} is not a folder",
        args.audio_root.display()
    );
    Ok(tiers)
}

/// The LLM client from the options and the key in [`API_KEY_ENV`].
fn llm_client(args: &PairsArgs) -> anyhow::Result<LlmClient> {
    let (Some(url), Some(model)) = (&args.llm_url, &args.llm_model) else {
        anyhow::bail!(
            "--explainer llm needs --llm-url and --llm-model (or use --explainer template for an \
             offline dry run)"
        );
    };
    let api_key = std::env::var(API_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty());
    Ok(LlmClient::new(LlmConfig {
        url: url.clone(),
        model: model.clone(),
        api_key: api_key.map(|k| k.trim().to_string()),
        timeout: Duration::try_from_secs_f64(args.timeout)?,
        max_retries: args.max_retries,
        backoff: Duration::from_millis(args.backoff_ms),
        temperature: args.temperature,
        max_requests: args.max_requests,
    }))
}

/// Drops (with `allow_missing`) or rejects rows whose audio file is not under `root`.
fn check_audio(
    rows: Vec<CaptionRow>,
    root: &Path,
    allow_missing: bool,
) -> anyhow::Result<Vec<CaptionRow>> {
    let audios: HashSet<&str> = rows.iter().map(|r| r.audio.as_str()).collect();
    let mut missing: Vec<&str> = audios
        .iter()
        .copied()
        .filter(|a| !root.join(a).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(rows);
    }
    missing.sort_unstable();
    let shown = missing
        .iter()
        .take(MISSING_NAMES_SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let more = if missing.len() > MISSING_NAMES_SHOWN {
        ", ..."
    } else {
        ""
    };
    let what = format!(
        "{} of {} audio file(s) missing under {} ({shown}{more})",
        missing.len(),
        audios.len(),
        root.display()
    );
    anyhow::ensure!(
        allow_missing,
        "{what}; --allow-missing skips their rows (see --audiocaps-naming for AudioCaps names)"
    );
    let missing: HashSet<String> = missing.into_iter().map(str::to_string).collect();
    let kept: Vec<CaptionRow> = rows
        .into_iter()
        .filter(|r| !missing.contains(&r.audio))
        .collect();
    eprintln!("{what}: their rows are skipped, {} left", kept.len());
    Ok(kept)
}

/// Seed of one generator stream (0: pairing, 1..=3: tier prompts, 4: captioning prompts).
fn stream_seed(seed: u64, stream: u64) -> u64 {
    // Odd multiplier (the golden ratio's bits): different streams land far apart.
    seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// An output record in [`COLUMNS`] order.
fn record(
    taskname: &str,
    a: &CaptionRow,
    b: &CaptionRow,
    input: &str,
    answer: &str,
) -> [String; 7] {
    [
        taskname.to_string(),
        a.audio.clone(),
        b.audio.clone(),
        a.caption.clone(),
        b.caption.clone(),
        input.to_string(),
        answer.to_string(),
    ]
}

/// Opens an output CSV for appending (header first when new or empty). Every field is quoted: a
/// complete record then always ends with a closing quote and a newline, which is how a record cut
/// short by a kill is told from a finished one.
fn open_output(path: &Path) -> anyhow::Result<csv::Writer<std::fs::File>> {
    let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(file);
    if fresh {
        w.write_record(COLUMNS)?;
        w.flush()?;
    }
    Ok(w)
}

/// Keys of the rows already in an output CSV, with their counts (an incomplete last record left
/// by a killed run is dropped, see [`crate::cli::completed_records`]).
fn completed_rows(path: &Path) -> anyhow::Result<HashMap<RowKey, usize>> {
    let mut done = HashMap::new();
    let records = crate::cli::completed_records(path, |headers| {
        anyhow::ensure!(
            headers.iter().eq(COLUMNS),
            "{}: not an adiff build-dataset output (header is not {})",
            path.display(),
            COLUMNS.join(",")
        );
        Ok(())
    })?;
    if let Some((_, good)) = records {
        for r in &good {
            *done.entry(key_of(r.iter().skip(1).take(5))).or_insert(0) += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ() {
        let seeds: HashSet<u64> = (0..5).map(|s| stream_seed(7, s)).collect();
        assert_eq!(seeds.len(), 5);
    }
}

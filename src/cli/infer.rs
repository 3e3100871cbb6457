//! `adiff infer`: explanations for every row of an ACD/CLD-style CSV, written to a CSV with the
//! same columns plus `prediction`. Resumable, batched, and each distinct audio file is encoded
//! once per run.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{IndexOp, Tensor};

use super::build_dataset::embed_cache::open_for_model;
use super::{answer_text, ClipArgs, DecodingArgs, ModelArgs};
use crate::audio::load_clip;
use crate::data::explanations::{read_explanations, ExplanationRow, COLUMNS};
use crate::generate::generate;
use crate::model::adiff::Adiff;
use crate::text::tokenizer::Gpt2Tokenizer;

/// Exit status when some rows could not be explained.
pub const EXIT_SOME_SKIPPED: i32 = 2;
/// Exit status when no row could be explained.
pub const EXIT_NONE_EXPLAINED: i32 = 3;

/// Explain every pair of an explanation CSV.
///
/// Reads `taskname, filepath1, filepath2, caption1, caption2, input, answer` (the ACD/CLD
/// format; `input` is the prompt) and writes the same columns plus `prediction`. Re-running with
/// the same output skips the rows already there, so an interrupted run resumes. A row whose audio
/// is missing or broken (or not in --embed-cache) is reported with its line and reason and
/// skipped; the run goes on and a summary ends it.
/// With --crop random every file uses --crop-seed, so a file gets the same crop in every row.
///
/// Exit status: 0 every row has a prediction; 2 some rows could not be explained (rerun after
/// fixing them: the others are kept); 3 no row could be explained; 1 an error stopped the run.
///
/// Example: adiff infer data/ACD/acd_test.csv --audio-root /data/audio -c adiff_base.ckpt -o preds.csv
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct InferArgs {
    /// Explanation CSV.
    pub data: PathBuf,
    /// Folder the CSV's file paths are relative to (default: the CSV's folder).
    #[arg(long)]
    pub audio_root: Option<PathBuf>,
    /// Output CSV (appended to when it exists: rows already in it are not redone).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Pairs decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// GPT-2 tokenizer.json to use instead of the bundled one.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Read HTSAT embeddings from this cache (`adiff build-dataset embed-cache`, same checkpoint
    /// and crop) instead of encoding the audio; a file not in it is reported and its rows skipped.
    #[arg(long, value_name = "DIR")]
    pub embed_cache: Option<PathBuf>,
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    let rows = read_explanations(&args.data)?;
    let root = match &args.audio_root {
        Some(r) => r.clone(),
        None => args
            .data
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let tokenizer = match &args.tokenizer {
        Some(p) => Gpt2Tokenizer::from_file(p, &cfg.text)?,
        None => Gpt2Tokenizer::bundled(&cfg.text)?,
    };
    let ckpt = args.model.load_checkpoint(&cfg)?;
    let embed_cache = match &args.embed_cache {
        Some(dir) => Some(open_for_model(dir, &ckpt, &cfg, &args.clip)?),
        None => None,
    };
    let model = Adiff::from_checkpoint_owned(ckpt, &cfg, &device)?;
    tokenizer.check_fits(model.config().gpt2.vocab_size)?;
    let opts = args.decoding.options(&cfg);

    // Resume: rows already in the output (matched by audios + prompt, with multiplicity).
    let mut done = completed_rows(&args.output)?;
    let before = rows.len();
    let todo: Vec<&ExplanationRow> = rows
        .iter()
        .filter(|r| match done.get_mut(&r.key()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect();
    let already = before - todo.len();

    let fresh = !args.output.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    // Every field quoted: a complete record always ends with a closing quote and a newline, which
    // is how `completed_rows` tells a record cut short by a kill from a finished one.
    let mut out = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(file);
    if fresh {
        let mut header: Vec<&str> = COLUMNS.to_vec();
        header.push("prediction");
        out.write_record(&header)?;
        out.flush()?;
    }

    let pb = crate::progress::items_with_rate(todo.len(), "pairs");
    // Embedding of each audio path seen in this run, or why it could not be had.
    let mut cache: HashMap<String, Result<Tensor, String>> = HashMap::new();
    let (mut written, mut skipped) = (0usize, 0usize);
    for batch in todo.chunks(args.batch_size) {
        // Encode the audios of this batch not seen before, in one HTSAT pass.
        let mut new_paths: Vec<&str> = Vec::new();
        for r in batch {
            for p in [r.filepath1.as_str(), r.filepath2.as_str()] {
                if !cache.contains_key(p) && !new_paths.contains(&p) {
                    new_paths.push(p);
                }
            }
        }
        let mut clips = Vec::new();
        let mut clip_paths = Vec::new();
        for p in &new_paths {
            if let Some(c) = &embed_cache {
                let e = c.embedding(p).and_then(|t| Ok(t.to_device(&device)?));
                cache.insert(p.to_string(), e.map_err(|e| e.to_string()));
                continue;
            }
            match load_clip(&root.join(p), &cfg.audio, args.clip.crop_mode(0)) {
                Ok(c) => {
                    clips.push(c);
                    clip_paths.push(*p);
                }
                Err(e) => {
                    cache.insert(p.to_string(), Err(e.to_string()));
                }
            }
        }
        if !clips.is_empty() {
            let (_, enc) = model.audio.encode(&clips)?;
            for (i, p) in clip_paths.iter().enumerate() {
                cache.insert(p.to_string(), Ok(enc.embedding.i(i)?));
            }
        }

        let mut ready: Vec<&ExplanationRow> = Vec::new();
        let (mut e1, mut e2, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for r in batch {
            let a = &cache[r.filepath1.as_str()];
            let b = &cache[r.filepath2.as_str()];
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    ready.push(r);
                    e1.push(a.clone());
                    e2.push(b.clone());
                    ids.extend(tokenizer.encode_prompt(&r.input)?);
                }
                (Err(e), _) | (_, Err(e)) => {
                    pb.suspend(|| eprintln!("skipped line {}: {e}", r.line));
                    skipped += 1;
                    pb.inc(1);
                }
            }
        }
        if ready.is_empty() {
            continue;
        }
        let n = ready.len();
        let prompt_ids = Tensor::from_vec(ids, (n, cfg.text.prompt_length), &device)?;
        let parts = model.prefix(
            &Tensor::stack(&e1, 0)?,
            &Tensor::stack(&e2, 0)?,
            &prompt_ids,
        )?;
        let generations = generate(&model.gpt, &parts.prefix, None, &opts)?;
        for (r, g) in ready.iter().zip(&generations) {
            let prediction = answer_text(&tokenizer, g)?;
            let mut record: Vec<&str> = r.fields().to_vec();
            record.push(&prediction);
            out.write_record(&record)?;
        }
        out.flush()?;
        written += n;
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    let summary = format!(
        "{written} pair(s) explained, {skipped} skipped (reasons above), {already} already in {}",
        args.output.display()
    );
    if skipped == 0 {
        eprintln!("{summary}");
        return Ok(());
    }
    // Some rows have no prediction: the calling script must be able to tell.
    let code = if written + already == 0 {
        EXIT_NONE_EXPLAINED
    } else {
        EXIT_SOME_SKIPPED
    };
    Err(super::Incomplete { code, summary }.into())
}

/// Keys of the rows already in an output CSV, with their counts (an incomplete last record left
/// by an interrupted run is dropped, see [`super::completed_records`]).
fn completed_rows(path: &Path) -> anyhow::Result<HashMap<(String, String, String), usize>> {
    let col = |headers: &csv::StringRecord, name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: not an adiff infer output (no '{name}' column)",
                path.display()
            )
        })
    };
    let records = super::completed_records(path, |h| {
        for name in ["filepath1", "filepath2", "input", "prediction"] {
            col(h, name)?;
        }
        Ok(())
    })?;
    let mut done = HashMap::new();
    if let Some((h, good)) = records {
        let (c1, c2, ci) = (
            col(&h, "filepath1")?,
            col(&h, "filepath2")?,
            col(&h, "input")?,
        );
        for r in &good {
            *done
                .entry((r[c1].to_string(), r[c2].to_string(), r[ci].to_string()))
                .or_insert(0) += 1;
        }
    }
    Ok(done)
}

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
use crate::data::csv_schema::read_table;
use crate::generate::generate_keyed;
use crate::text::prompts::{PromptDatabase, PromptKind};
use crate::text::tokenizer::Gpt2Tokenizer;

/// Exit status when some rows could not be explained.
pub const EXIT_SOME_SKIPPED: i32 = 2;
/// Exit status when no row could be explained.
pub const EXIT_NONE_EXPLAINED: i32 = 3;

/// Explain every pair of an explanation CSV.
///
/// Needs `filepath1` and `filepath2` columns and a prompt: the `input` column (as in the ACD/CLD
/// format) or --tier / --prompt for every row. Writes every column of the input, unchanged and
/// in order (IDs to join results back included), then `input` if the input had none, then
/// `prediction`. Re-running with the same output skips the rows already there, so an
/// interrupted run resumes; the model and settings of a run are kept in OUTPUT.settings.json,
/// and a resume with others is refused. A row whose audio
/// is missing or broken (or not in --embed-cache), or whose prompt has a token the model's own
/// vocabulary lacks, is reported with its line and reason and skipped; the run goes on and a
/// summary ends it.
/// With --crop random every file uses --crop-seed, so a file gets the same crop in every row.
/// With --sample, row i (0-based, in the input) samples from --seed + i: its text does not
/// depend on --batch-size, on other rows being skipped, or on a resume.
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
    /// Precision, as `explain --dtype` (default: bf16 on a GPU that has it, else as the file
    /// holds them).
    #[arg(long, value_enum)]
    pub dtype: Option<super::Dtype>,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Pairs decoded together: a number, or `auto` for the largest batch that fits the GPU's
    /// free memory with a margin (a tenth of it, at least 512 MiB; an estimate from the config,
    /// printed on stderr). On the CPU `auto` is 8.
    #[arg(long, default_value = "8", value_parser = parse_batch_size)]
    pub batch_size: BatchSize,
    /// Prompt every row with this tier's default prompt (1 = a few words, 2 = one sentence,
    /// 3 = a detailed paragraph) instead of its `input` column.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3), conflicts_with = "prompt")]
    pub tier: Option<u8>,
    /// Prompt every row with this text instead of its `input` column.
    #[arg(long)]
    pub prompt: Option<String>,
    /// GPT-2 tokenizer.json to use instead of the bundled one.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Read HTSAT embeddings from this cache (`adiff build-dataset embed-cache`, same checkpoint
    /// and crop) instead of encoding the audio; a file not in it is reported and its rows skipped.
    #[arg(long, value_name = "DIR")]
    pub embed_cache: Option<PathBuf>,
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    // The output is appended to (that is how a run resumes), but never onto an input.
    let mut inputs = vec![args.data.as_path()];
    inputs.extend(args.model.checkpoint.iter().map(PathBuf::as_path));
    inputs.extend(args.model.config.as_deref());
    let settings_file = settings_path(&args.output);
    super::check_outputs(
        &inputs,
        &[("predictions", &args.output), ("settings", &settings_file)],
        true,
    )?;
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    let fixed_prompt = match (&args.prompt, args.tier) {
        (Some(p), _) => {
            anyhow::ensure!(!p.trim().is_empty(), "--prompt is empty");
            Some(p.clone())
        }
        (None, Some(t)) => Some(
            PromptDatabase::bundled()?
                .default_prompt(PromptKind::Tier(t))
                .to_string(),
        ),
        (None, None) => None,
    };
    let (in_header, rows) = read_pairs(&args.data, fixed_prompt.as_deref())?;
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
    let fingerprint = model_fingerprint(&ckpt)?;
    let embed_cache = match &args.embed_cache {
        Some(dir) => Some(open_for_model(dir, &ckpt, &cfg, &args.clip)?),
        None => None,
    };
    let model = super::load_model(ckpt, &cfg, &device, args.dtype)?;
    let settings = run_settings(
        &args,
        fingerprint,
        &cfg,
        fixed_prompt.as_deref(),
        super::precision_name(&model),
    )?;
    tokenizer.check_fits(model.config().gpt2.vocab_size)?;
    let opts = args.decoding.options(&cfg);

    // Resume: rows already in the output (matched by audios + prompt, with multiplicity), if
    // they were written with this model and these settings.
    let mut done = completed_rows(&args.output)?;
    check_settings(&args.output, &settings, !done.is_empty())?;
    let before = rows.len();
    let todo: Vec<&PairRow> = rows
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
        let mut header = in_header.clone();
        if !header.iter().any(|h| h == INPUT) {
            header.push(INPUT.into());
        }
        header.push(PREDICTION.into());
        out.write_record(&header)?;
        out.flush()?;
    }

    let pb = crate::progress::items_with_rate(todo.len(), "pairs");
    // Embedding of each audio path seen in this run, or why it could not be had.
    let mut cache: HashMap<String, Result<Tensor, String>> = HashMap::new();
    let (mut written, mut skipped) = (0usize, 0usize);
    let batch_size = match args.batch_size {
        BatchSize::Fixed(n) => n,
        BatchSize::Auto => {
            auto_batch_size(&model, &device, &opts, embed_cache.is_some(), todo.len())?
        }
    };
    for batch in todo.chunks(batch_size) {
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

        let mut ready: Vec<&PairRow> = Vec::new();
        let (mut e1, mut e2, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for r in batch {
            let a = &cache[r.filepath1.as_str()];
            let b = &cache[r.filepath2.as_str()];
            // A prompt the model cannot read (a token outside its own vocabulary) skips its
            // row like a missing audio file.
            let prompt = tokenizer
                .encode_prompt(&r.prompt)
                .map_err(|e| e.to_string());
            match (a, b, &prompt) {
                (Ok(a), Ok(b), Ok(p)) => {
                    ready.push(r);
                    e1.push(a.clone());
                    e2.push(b.clone());
                    ids.extend_from_slice(p);
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
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
        // Sampling seeded by each row's index in the input: the same text whatever the batch
        // size, the rows skipped, or a resume.
        let keys: Vec<u64> = ready.iter().map(|r| r.index as u64).collect();
        let generations = generate_keyed(&model.gpt, &parts.prefix, None, &opts, &keys)?;
        for (r, g) in ready.iter().zip(&generations) {
            let prediction = answer_text(&tokenizer, g)?;
            let mut record: Vec<&str> = r.fields.iter().map(String::as_str).collect();
            if r.input_column.is_none() {
                record.push(&r.prompt);
            }
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

/// Column names infer reads and writes.
const FILEPATH1: &str = "filepath1";
const FILEPATH2: &str = "filepath2";
const INPUT: &str = "input";
const PREDICTION: &str = "prediction";

/// One pair to explain: its line in the input, its audios, its prompt, and every field of its
/// row (written back unchanged).
struct PairRow {
    /// 0-based position among the input's rows (the key that seeds its sampling).
    index: usize,
    line: u64,
    filepath1: String,
    filepath2: String,
    prompt: String,
    /// The row's `input` field, if the CSV has that column.
    input_column: Option<usize>,
    fields: Vec<String>,
}

impl PairRow {
    /// The `input` value written to the output: the row's own, or the prompt used.
    fn written_input(&self) -> &str {
        self.input_column.map_or(&self.prompt, |i| &self.fields[i])
    }

    /// What identifies a row across runs (for resuming): the two audios and the written input
    /// (the settings file makes sure the prompts came the same way).
    fn key(&self) -> (String, String, String) {
        (
            self.filepath1.clone(),
            self.filepath2.clone(),
            self.written_input().to_string(),
        )
    }
}

/// Reads the pairs of a CSV: `filepath1`, `filepath2`, and the prompt (`fixed`, or else the
/// `input` column); other columns are kept as they are. Returns the header and the rows.
fn read_pairs(path: &Path, fixed: Option<&str>) -> anyhow::Result<(Vec<String>, Vec<PairRow>)> {
    let (header, rows) = read_table(path)?;
    let col = |name: &str| header.iter().position(|h| h == name);
    let missing = |name: &str, why: &str| {
        anyhow::anyhow!(
            "{}: missing column '{name}'{why} (header: {})",
            path.display(),
            header.join(",")
        )
    };
    let c1 = col(FILEPATH1).ok_or_else(|| missing(FILEPATH1, ""))?;
    let c2 = col(FILEPATH2).ok_or_else(|| missing(FILEPATH2, ""))?;
    anyhow::ensure!(
        col(PREDICTION).is_none(),
        "{}: already has a '{PREDICTION}' column (an infer output?); give the pairs' CSV",
        path.display()
    );
    let input = col(INPUT);
    if fixed.is_none() && input.is_none() {
        return Err(missing(INPUT, " (the prompt; or give --tier or --prompt)"));
    }
    let pairs: Vec<PairRow> = rows
        .into_iter()
        .enumerate()
        .map(|(index, (line, fields))| PairRow {
            index,
            line,
            filepath1: fields[c1].clone(),
            filepath2: fields[c2].clone(),
            // --tier / --prompt, else the row's `input` (present: checked above).
            prompt: fixed
                .map(str::to_string)
                .or_else(|| input.map(|i| fields[i].clone()))
                .unwrap_or_default(),
            // With --tier/--prompt the prompt goes into an `input` column of its own unless
            // the input has one, whose values are then kept as they were.
            input_column: input,
            fields,
        })
        .collect();
    anyhow::ensure!(!pairs.is_empty(), "{}: no rows", path.display());
    Ok((header, pairs))
}

/// `--batch-size`: a number of pairs, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Fixed(usize),
    Auto,
}

/// The batch size the CPU takes for `--batch-size auto` (its default).
const CPU_AUTO_BATCH: usize = 8;

fn parse_batch_size(s: &str) -> Result<BatchSize, String> {
    match s {
        "auto" => Ok(BatchSize::Auto),
        n => match n.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("'{n}': a positive number of pairs, or 'auto'")),
            Ok(n) => Ok(BatchSize::Fixed(n)),
        },
    }
}

/// `--batch-size auto`: on a GPU the largest batch whose estimated memory fits the free memory
/// (see `model::device::pair_bytes`), at most the rows to do; 8 on the CPU. Says what it chose.
fn auto_batch_size(
    model: &crate::model::adiff::Adiff,
    device: &candle_core::Device,
    opts: &crate::generate::GenerateOptions,
    cached: bool,
    rows: usize,
) -> anyhow::Result<usize> {
    use crate::model::device;
    let Some((free, total)) = device::cuda_memory(device)? else {
        eprintln!("--batch-size auto: {CPU_AUTO_BATCH} on the CPU");
        return Ok(CPU_AUTO_BATCH);
    };
    let per_pair = device::pair_bytes(
        model.config(),
        model.compute_dtype().size_in_bytes(),
        opts.max_new_tokens,
        !cached,
    );
    let n = device::auto_batch(free, total, per_pair, rows);
    eprintln!(
        "--batch-size auto: {n} ({:.1} of {:.1} GiB free, about {:.0} MiB a pair)",
        free as f64 / (1u64 << 30) as f64,
        total as f64 / (1u64 << 30) as f64,
        per_pair as f64 / (1u64 << 20) as f64
    );
    Ok(n)
}

/// What the predictions of a run depend on, kept in OUTPUT.settings.json: the model (a
/// fingerprint of its tensors and the config), the tokenizer, the crop, the prompt source and
/// the decoding options.
fn run_settings(
    args: &InferArgs,
    fingerprint: String,
    cfg: &crate::model::config::AdiffConfig,
    fixed_prompt: Option<&str>,
    precision: &str,
) -> anyhow::Result<serde_json::Value> {
    let d = &args.decoding;
    Ok(serde_json::json!({
        "model_fingerprint": fingerprint,
        "dtype": precision,
        "config": serde_json::to_value(cfg)?,
        "tokenizer": args.tokenizer.as_ref().map_or("bundled".to_string(), |p| p.display().to_string()),
        "crop": super::build_dataset::embed_cache::crop_label(&args.clip),
        "prompt": fixed_prompt.map_or("the input column".to_string(), str::to_string),
        "decoding": {
            "sample": d.sample,
            "temperature": d.temperature,
            "top_k": d.top_k,
            "top_p": d.top_p,
            "seed": d.seed,
            "max_tokens": d.max_tokens,
            "stop_ids": d.stop_ids,
            "no_stop": d.no_stop,
        },
    }))
}

/// Values sampled per tensor for [`model_fingerprint`].
const FINGERPRINT_SAMPLES: usize = 64;

/// SHA-256 over every tensor's name, shape and up to [`FINGERPRINT_SAMPLES`] values spread over
/// it: two checkpoints that differ get different fingerprints unless they differ only between
/// the sampled values (a fine-tuned model differs everywhere), at a cost of a few milliseconds.
fn model_fingerprint(ckpt: &crate::model::checkpoint::Checkpoint) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut names: Vec<&str> = ckpt.names().collect();
    names.sort_unstable();
    let mut h = Sha256::new();
    for name in names {
        let Some(t) = ckpt.get(name) else { continue };
        h.update(name.as_bytes());
        for &d in t.dims() {
            h.update((d as u64).to_le_bytes());
        }
        let n = t.elem_count();
        if n == 0 {
            continue;
        }
        let step = n.div_ceil(FINGERPRINT_SAMPLES);
        let idx: Vec<u32> = (0..n).step_by(step).map(|i| i as u32).collect();
        let idx = Tensor::from_vec(idx.clone(), idx.len(), t.device())?;
        let vals = t
            .flatten_all()?
            .index_select(&idx, 0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        for v in vals {
            h.update(v.to_le_bytes());
        }
    }
    Ok(crate::hub::hex(&h.finalize()))
}

/// OUTPUT.settings.json.
fn settings_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".settings.json");
    PathBuf::from(name)
}

/// Refuses to add to an output whose rows came from another model or other settings (or whose
/// settings are unknown); writes the settings file for a new output.
fn check_settings(output: &Path, now: &serde_json::Value, has_rows: bool) -> anyhow::Result<()> {
    let path = settings_path(output);
    let before = match std::fs::read(&path) {
        Ok(b) => Some(
            serde_json::from_slice::<serde_json::Value>(&b)
                .with_context(|| format!("{}: not a settings file", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    match before {
        Some(before) if has_rows => {
            let mut differ: Vec<String> = Vec::new();
            if ["model_fingerprint", "config"]
                .iter()
                .any(|k| before[*k] != now[*k])
            {
                differ.push("the model".into());
            }
            for k in ["tokenizer", "crop", "prompt"] {
                if before[k] != now[k] {
                    differ.push(k.into());
                }
            }
            // Runs before `--dtype` existed were f32.
            let then = before.get("dtype").cloned().unwrap_or("f32".into());
            if then != now["dtype"] {
                differ.push(format!("dtype (then {then}, now {})", now["dtype"]));
            }
            for (k, v) in now["decoding"].as_object().into_iter().flatten() {
                let then = &before["decoding"][k.as_str()];
                if then != v {
                    differ.push(format!("{k} (then {then}, now {v})"));
                }
            }
            anyhow::ensure!(
                differ.is_empty(),
                "{}: its rows were written with other settings ({}); use another -o to keep them \
                 apart, or delete it and {} to start over",
                output.display(),
                differ.join(", "),
                path.display()
            );
            Ok(())
        }
        None if has_rows => anyhow::bail!(
            "{}: has rows but no {} saying which model and settings wrote them; use another -o, \
             or delete it to start over",
            output.display(),
            path.display()
        ),
        _ => {
            std::fs::write(&path, serde_json::to_string_pretty(now)? + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        }
    }
}

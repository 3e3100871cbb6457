//! Command-line interface: argument types and one module per subcommand.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use clap::{Parser, Subcommand, ValueEnum};

use crate::audio::CropMode;
use crate::model::adiff::GPT2_PREFIX;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::AdiffConfig;

pub mod build_dataset;
pub mod convert;
pub mod download;
pub mod embed;
pub mod eval;
pub mod explain;
pub mod infer;
pub mod serve;
pub mod tag;
pub mod train;
pub mod train_stage1;
pub mod train_stage2;
pub mod train_stage3;

/// adiff: explain how two audio recordings differ, in natural language.
///
/// Audio is decoded (WAV, FLAC, MP3, OGG/Vorbis), mixed to mono, resampled to 32 kHz and cut to a
/// 10 s clip (shorter clips are repeated) before the HTSAT audio encoder sees it.
#[derive(Debug, Parser)]
#[command(name = "adiff", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Each subcommand's `--help` is its argument struct's doc comment (what it does, how, and
/// examples): a doc comment on a variant would replace it, so only the two whose structs do not
/// describe the command have one, and the training stages set a shorter `about` for the list.
#[derive(Debug, Subcommand)]
pub enum Command {
    Embed(embed::EmbedArgs),
    Tag(tag::TagArgs),
    Explain(explain::ExplainArgs),
    Infer(infer::InferArgs),
    Convert(convert::ConvertArgs),
    /// Fetch an official checkpoint (adiff-base, adiff-wavcaps) or GPT-2 files into the cache.
    Download(download::DownloadArgs),
    Eval(eval::EvalArgs),
    /// Build datasets: `pairs` (ACD/CLD-style explanations from captions), `synthetic` (pairs with
    /// known differences), `synthetic-remix` (new pairs of rendered synthetic clips), `embed-cache`
    /// (precomputed HTSAT embeddings).
    BuildDataset(build_dataset::BuildDatasetArgs),
    #[command(
        about = "Stage 1: unimodal pretraining of HTSAT (audio tagging) or GPT-2 (language model)"
    )]
    TrainStage1(train_stage1::TrainStage1Args),
    #[command(
        about = "Stage 2: train projection, mappers and cross-projection (HTSAT and GPT-2 frozen)"
    )]
    TrainStage2(train_stage2::TrainStage2Args),
    #[command(
        about = "Stage 3: finetune with GPT-2 unfrozen (HTSAT frozen), from a stage-2 model"
    )]
    TrainStage3(train_stage3::TrainStage3Args),
    #[command(about = "Stage 2 then stage 3 in one go (resumable)")]
    Train(train::TrainArgs),
    Serve(serve::ServeArgs),
}

/// A command that ran to its end but left part of its work undone (e.g. `infer` rows whose
/// audio could not be read): `main` prints `summary` and exits with `code`, which each such
/// command documents in its `--help`, so a calling script can tell it from success (0) and
/// from an error that stopped the command (1).
#[derive(Debug)]
pub struct Incomplete {
    pub code: i32,
    pub summary: String,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for Incomplete {}

/// The same file, whether or not it exists yet (an absent path compares by its canonical folder
/// and its name).
fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    let canonical = |p: &std::path::Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    };
    match (canonical(a), canonical(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Checks a command's outputs before it writes anything: no output may be one of its `inputs`
/// or another of its `outputs`, and none may already exist unless `force` (a file this command
/// did not write is never replaced silently). Outputs come as (what, path) for the messages.
pub fn check_outputs(
    inputs: &[&std::path::Path],
    outputs: &[(&str, &std::path::Path)],
    force: bool,
) -> anyhow::Result<()> {
    for (i, (what, out)) in outputs.iter().enumerate() {
        if let Some(input) = inputs.iter().find(|p| same_path(p, out)) {
            anyhow::bail!(
                "{}: the {what} would overwrite an input of this command ({})",
                out.display(),
                input.display()
            );
        }
        if let Some((other, _)) = outputs[..i].iter().find(|(_, p)| same_path(p, out)) {
            anyhow::bail!(
                "{}: the {what} and the {other} would be the same file",
                out.display()
            );
        }
        if !force && out.exists() {
            anyhow::bail!(
                "{}: exists (the {what} of this command); give --force to replace it",
                out.display()
            );
        }
    }
    Ok(())
}

/// Options shared by every subcommand that loads a model.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Checkpoint: the official ADIFF `.ckpt`/`.pth` (torch.save) or a `.safetensors` file, or
    /// `adiff-base` / `adiff-wavcaps` for the file `adiff download` put in the cache.
    /// Repeat to combine files (a tensor in a later file replaces one in an earlier file).
    /// Needed unless --model is given (or with `train-stage1 --init-missing`, where the
    /// trained part starts from scratch).
    #[arg(long, short = 'c', conflicts_with = "model")]
    pub checkpoint: Vec<PathBuf>,
    /// A model folder in data/models/ (model.safetensors + config.json), instead of --checkpoint
    /// and --config; `$ADIFF_MODELS` can point at another folder. Shipped: `demo`, trained by
    /// scripts/train_demo.sh on synthetic sounds only (tones, buzzes, chords, noise, clicks,
    /// chirps); it knows nothing of real recordings.
    #[arg(long, conflicts_with = "config")]
    pub model: Option<String>,
    /// Model config JSON (default: the paper's, as in configs/base.json).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Device: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    pub fn config(&self) -> anyhow::Result<AdiffConfig> {
        if let Some(name) = &self.model {
            return Ok(AdiffConfig::from_file(
                shipped_model(name)?.join(SHIPPED_CONFIG),
            )?);
        }
        match &self.config {
            Some(p) => Ok(AdiffConfig::from_file(p)?),
            None => Ok(AdiffConfig::base()),
        }
    }

    pub fn device(&self) -> anyhow::Result<Device> {
        parse_device(&self.device)
    }

    /// Reads the checkpoint file(s).
    /// Reads the checkpoint file(s); names like `adiff-base` mean the cached official file. When
    /// the config names a hub GPT-2 (`gpt2.hub_repo`) and the checkpoint has no GPT-2 weights,
    /// they are taken from the hub (hf-hub cache, `adiff download gpt2`).
    pub fn load_checkpoint(&self, cfg: &AdiffConfig) -> anyhow::Result<Checkpoint> {
        if let Some(name) = &self.model {
            return Ok(Checkpoint::load(
                shipped_model(name)?.join(SHIPPED_WEIGHTS),
            )?);
        }
        anyhow::ensure!(
            !self.checkpoint.is_empty(),
            "no model given: use --checkpoint/-c FILE or --model NAME"
        );
        let paths = self
            .checkpoint
            .iter()
            .map(|p| match p.to_str() {
                Some(spec) => crate::hub::resolve_checkpoint(spec),
                None => Ok(p.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ckpt = Checkpoint::load_all(&paths)?;
        if let Some(repo) = &cfg.gpt2.hub_repo {
            if !ckpt.contains(&format!("{GPT2_PREFIX}.transformer.wpe.weight")) {
                let (weights, _tokenizer) = crate::hub::hub_gpt2_files(repo)?;
                let hub = Checkpoint::load(&weights)?;
                // Hub files name tensors `wte.weight` or `transformer.wte.weight`.
                let prefix = if hub.contains("transformer.wte.weight") {
                    format!("{GPT2_PREFIX}.")
                } else {
                    format!("{GPT2_PREFIX}.transformer.")
                };
                ckpt.add_prefixed(hub, &prefix);
            }
        }
        Ok(ckpt)
    }
}

/// `--dtype`: the precision a model runs in. On the CPU it is how the matmul weights of GPT-2,
/// the mappers and the cross-projection are held, with f32 arithmetic (HTSAT's linears: f16 for
/// both reduced formats, see `Adiff::with_weight_format`); on a GPU it is the dtype of every
/// weight and activation (bf16 by default where the GPU has it), with the log-mel front end,
/// softmax and the logits kept in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// The checkpoint's f32 values (exact).
    F32,
    /// CPU: f16 weights, f32 arithmetic (half the bytes read per token). GPU: f16 throughout.
    F16,
    /// bf16 weights and activations: a GPU's default (compute capability 8.0 or later). On the
    /// CPU it runs candle's generic bf16 kernels, slower than f32: there it only checks the
    /// GPU's numerics.
    Bf16,
    /// CPU only: int8 weights with one f16 scale per 32 values, f32 activations (about a
    /// quarter of f32's bytes).
    I8,
}

impl Dtype {
    /// The CPU weight format (`Bf16` is not a packed format: the whole model runs in bf16).
    pub fn format(self) -> crate::model::gpt2::WeightFormat {
        use crate::model::gpt2::WeightFormat;
        match self {
            Dtype::F32 | Dtype::Bf16 => WeightFormat::F32,
            Dtype::F16 => WeightFormat::F16,
            Dtype::I8 => WeightFormat::I8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::I8 => "i8",
        }
    }
}

/// How a model is loaded for `--dtype` on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    /// f32 weights, or the CPU's packed f16/i8 weights (None: as the file holds them).
    Packed(Option<Dtype>),
    /// Every weight and activation in this dtype (bf16/f16 on a GPU, bf16 on the CPU).
    Whole(candle_core::DType),
}

/// What `--dtype` (None: its default) means on `device`: a GPU defaults to bf16 where its
/// compute capability allows (8.0+) and f32 elsewhere, the CPU to what the file holds.
/// Refuses what cannot run: packed f16/i8 files and i8 on a GPU, bf16 on a GPU without it.
fn precision(
    ckpt: &Checkpoint,
    device: &Device,
    dtype: Option<Dtype>,
) -> anyhow::Result<Precision> {
    use candle_core::DType;
    if device.is_cpu() {
        return Ok(match dtype {
            Some(Dtype::Bf16) => {
                anyhow::ensure!(
                    !ckpt.is_packed(),
                    "{}: holds packed f16/i8 weights (written by `adiff convert --dtype`);                      --dtype bf16 needs the f32 checkpoint",
                    ckpt.path().display()
                );
                eprintln!(
                    "note: --dtype bf16 on the CPU runs candle's generic bf16 kernels, slower than \
                     f32 (it is the GPU's default; on the CPU use f16 or i8 for speed)"
                );
                Precision::Whole(DType::BF16)
            }
            other => Precision::Packed(other),
        });
    }
    if ckpt.is_packed() {
        anyhow::bail!(
            "{}: holds packed f16/i8 weights (written by `adiff convert --dtype`), which run on              the CPU only; on {device:?} load the f32 checkpoint (--dtype bf16, f16 or f32)",
            ckpt.path().display()
        );
    }
    let cap = crate::model::device::cuda_capability(device)?;
    let bf16_ok = cap.is_none_or(crate::model::device::supports_bf16);
    let cap_text = cap.map_or("unknown".to_string(), |(a, b)| format!("{a}.{b}"));
    Ok(match dtype {
        None if bf16_ok => Precision::Whole(DType::BF16),
        None | Some(Dtype::F32) => Precision::Packed(Some(Dtype::F32)),
        Some(Dtype::Bf16) if bf16_ok => Precision::Whole(DType::BF16),
        Some(Dtype::Bf16) => anyhow::bail!(
            "--dtype bf16: {device:?} has compute capability {cap_text}; bf16 needs 8.0 (Ampere)              or later: use --dtype f16 (or f32)"
        ),
        Some(Dtype::F16) => Precision::Whole(DType::F16),
        Some(Dtype::I8) => anyhow::bail!(
            "--dtype i8: int8 weights run on the CPU only; on {device:?} use bf16, f16 or f32"
        ),
    })
}

/// Builds the whole model from a checkpoint it takes over, in `dtype` (None: the device's
/// default, see [`Dtype`]; on the CPU as the file holds it, f32 for a checkpoint, the packed
/// format for a file written by `convert --dtype`).
pub fn load_model(
    ckpt: Checkpoint,
    cfg: &AdiffConfig,
    device: &Device,
    dtype: Option<Dtype>,
) -> anyhow::Result<crate::model::adiff::Adiff> {
    use crate::model::adiff::Adiff;
    Ok(match precision(&ckpt, device, dtype)? {
        Precision::Whole(dt) => Adiff::from_checkpoint_owned_as(ckpt, cfg, device, dt)?,
        Precision::Packed(d) => {
            let model = Adiff::from_checkpoint_owned(ckpt, cfg, device)?;
            match d {
                Some(d) if device.is_cpu() => model.with_weight_format(d.format())?,
                _ => model,
            }
        }
    })
}

/// The name of the precision a loaded model runs in (`f32`, `f16`, `bf16`, `i8`), for records.
pub fn precision_name(model: &crate::model::adiff::Adiff) -> &'static str {
    match model.compute_dtype() {
        candle_core::DType::BF16 => "bf16",
        candle_core::DType::F16 => "f16",
        _ => model.weight_format().name(),
    }
}

/// HTSAT alone (`embed`, `tag`) from a checkpoint it takes over, in `dtype` (None: the device's
/// default, as [`load_model`]). On the CPU both reduced formats hold HTSAT's Swin linears as
/// f16 (half their memory).
pub fn load_encoder(
    ckpt: Checkpoint,
    cfg: &AdiffConfig,
    device: &Device,
    dtype: Option<Dtype>,
) -> anyhow::Result<crate::model::audio_encoder::AudioEncoder> {
    use crate::model::audio_encoder::AudioEncoder;
    let precision = precision(&ckpt, device, dtype)?;
    let mut encoder = match precision {
        Precision::Whole(dt) => AudioEncoder::from_checkpoint_as(&ckpt, cfg, device, dt)?,
        Precision::Packed(_) => AudioEncoder::from_checkpoint(&ckpt, cfg, device)?,
    };
    drop(ckpt);
    if let (Precision::Packed(Some(d)), true) = (precision, device.is_cpu()) {
        encoder.visit(&mut |_, p| p.repack(d.format()))?;
    }
    Ok(encoder)
}

/// Files of a shipped model folder (`data/models/<name>/`).
const SHIPPED_WEIGHTS: &str = "model.safetensors";
const SHIPPED_CONFIG: &str = "config.json";
/// Environment variable naming another folder of shipped models.
const MODELS_ENV: &str = "ADIFF_MODELS";

/// The folder of a shipped model: `$ADIFF_MODELS/<name>`, else `data/models/<name>` of this
/// source tree (where `cargo build` ran).
pub fn shipped_model(name: &str) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--model {name:?}: a model name is letters, digits, '-' or '_'"
    );
    let root = match std::env::var_os(MODELS_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/models"),
    };
    let dir = root.join(name);
    anyhow::ensure!(
        dir.join(SHIPPED_WEIGHTS).is_file() && dir.join(SHIPPED_CONFIG).is_file(),
        "--model {name}: no {SHIPPED_WEIGHTS} + {SHIPPED_CONFIG} in {}",
        dir.display()
    );
    Ok(dir)
}

/// How a clip longer than 10 s is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Crop {
    /// The first 10 s.
    Start,
    /// The middle 10 s.
    Center,
    /// A random 10 s window (reproducible with --crop-seed).
    Random,
}

/// Options for turning files into fixed-length clips.
#[derive(Debug, clap::Args)]
pub struct ClipArgs {
    /// Where to cut clips longer than the model's 10 s window.
    #[arg(long, value_enum, default_value_t = Crop::Start)]
    pub crop: Crop,
    /// Seed for `--crop random` (file i of a run uses seed + i).
    #[arg(long = "crop-seed", default_value_t = 0)]
    pub crop_seed: u64,
}

impl ClipArgs {
    /// Says once on stderr which part of a file longer than the clip the model hears (a user
    /// who passes an hour-long file should not believe it heard all of it).
    pub fn note_window(&self, path: &std::path::Path, span: &crate::audio::ClipSpan) {
        if !span.is_crop() {
            return;
        }
        let length = match span.duration_s {
            Some(d) => format!("is {d:.1} s long"),
            None => format!("is longer than the {:.1} s clip", span.end_s - span.start_s),
        };
        let crop = match self.crop {
            Crop::Start => "start",
            Crop::Center => "center",
            Crop::Random => "random",
        };
        eprintln!(
            "note: {} {length}; the model hears {:.2}-{:.2} s of it (--crop {crop}; --crop \
             start|center|random picks another window)",
            path.display(),
            span.start_s,
            span.end_s
        );
    }

    /// Crop mode for the `index`-th file of a run.
    pub fn crop_mode(&self, index: usize) -> CropMode {
        match self.crop {
            Crop::Start => CropMode::Start,
            Crop::Center => CropMode::Center,
            Crop::Random => CropMode::Random {
                seed: self.crop_seed.wrapping_add(index as u64),
            },
        }
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .with_context(|| format!("bad device '{s}'"))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                anyhow::bail!("device '{s}': this adiff was built without CUDA (rebuild with --features cuda)");
            }
            Device::new_cuda(ordinal).map_err(|e| {
                let e = e.to_string();
                let e = e.lines().next().unwrap_or_default();
                if e.contains("CUDA_ERROR_NO_DEVICE") {
                    anyhow::anyhow!("cannot open {s}: no CUDA device is visible (CUDA_ERROR_NO_DEVICE); use --device cpu")
                } else {
                    anyhow::anyhow!("cannot open {s}: {e}")
                }
            })
        }
        other => anyhow::bail!("unknown device '{other}' (use cpu, cuda or cuda:N)"),
    }
}

/// Decoding options shared by `explain` and `infer`.
#[derive(Debug, clap::Args)]
pub struct DecodingArgs {
    /// Greedy decoding (argmax at every step; the default, as the reference).
    #[arg(long, conflicts_with = "sample")]
    pub greedy: bool,
    /// Sample instead of taking the argmax (see --temperature, --top-k, --top-p, --seed).
    #[arg(long)]
    pub sample: bool,
    /// Sampling temperature (logits are divided by it).
    #[arg(long, default_value_t = 1.0, requires = "sample")]
    pub temperature: f64,
    /// Sample only among the K most likely tokens.
    #[arg(long, requires = "sample")]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P.
    #[arg(long, requires = "sample")]
    pub top_p: Option<f64>,
    /// Random seed for sampling: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most new tokens per explanation (also capped by GPT-2's 1024 positions).
    #[arg(long, default_value_t = crate::generate::DEFAULT_MAX_NEW_TOKENS)]
    pub max_tokens: usize,
    /// Token id(s) that end an explanation (default: the model config's stop id, 220, as the
    /// reference). Repeat to give several.
    #[arg(long = "stop-id")]
    pub stop_ids: Vec<u32>,
    /// Never stop before --max-tokens (for benchmarks).
    #[arg(long, conflicts_with = "stop_ids")]
    pub no_stop: bool,
}

impl DecodingArgs {
    pub fn options(&self, cfg: &AdiffConfig) -> crate::generate::GenerateOptions {
        use crate::generate::{GenerateOptions, SamplingOptions, Strategy};
        let mut opts = GenerateOptions::new(&cfg.text);
        if self.sample {
            opts.strategy = Strategy::Sample(SamplingOptions {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            });
        }
        opts.max_new_tokens = self.max_tokens;
        if !self.stop_ids.is_empty() {
            opts.stop_tokens = self.stop_ids.clone();
        }
        if self.no_stop {
            opts.stop_tokens.clear();
        }
        opts
    }
}

/// The text of a generated answer: the stop token (an end marker, not part of the answer) is
/// dropped, and the ids are decoded the way ADIFF's wrapper printed them.
pub fn answer_text(
    tokenizer: &crate::text::tokenizer::Gpt2Tokenizer,
    g: &crate::generate::Generation,
) -> anyhow::Result<String> {
    let ids = match g.finish {
        crate::generate::FinishReason::Stop => &g.ids[..g.ids.len().saturating_sub(1)],
        _ => &g.ids[..],
    };
    Ok(tokenizer.decode_clean(ids)?.trim().to_string())
}

/// Records already in a resumable output CSV (written with every field quoted), after
/// `check_headers` accepted its header; None when the file is missing or empty. A record cut short
/// by an interrupted run (wrong field count, unreadable, or no closing quote before the final
/// newline) ends the file: it is dropped by rewriting the good part (temporary file, fsync,
/// rename), so the next run redoes it.
pub fn completed_records(
    path: &std::path::Path,
    check_headers: impl Fn(&csv::StringRecord) -> anyhow::Result<()>,
) -> anyhow::Result<Option<(csv::StringRecord, Vec<csv::StringRecord>)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let headers = rdr
        .headers()
        .with_context(|| format!("cannot read {}", path.display()))?
        .clone();
    check_headers(&headers)?;
    let mut good = Vec::new();
    let mut truncated = false;
    for rec in rdr.records() {
        match rec {
            Ok(r) if r.len() == headers.len() => good.push(r),
            _ => {
                truncated = true;
                break;
            }
        }
    }
    if !truncated && !good.is_empty() && !ends_with_closed_record(&bytes) {
        good.pop();
        truncated = true;
    }
    if truncated {
        let tmp = path.with_extension("csv.partial");
        {
            let mut w = csv::WriterBuilder::new()
                .quote_style(csv::QuoteStyle::Always)
                .from_path(&tmp)?;
            w.write_record(&headers)?;
            for r in &good {
                w.write_record(r)?;
            }
            w.flush()?;
            w.into_inner()
                .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?
                .sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        eprintln!(
            "{}: dropped an incomplete last row left by an interrupted run",
            path.display()
        );
    }
    Ok(Some((headers, good)))
}

/// Whether a file written with every field quoted ends with a complete record: a newline right
/// after a closing quote (an odd run of quotes; an even run is an escaped quote inside a field).
fn ends_with_closed_record(bytes: &[u8]) -> bool {
    let body = bytes
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b));
    match body {
        Some(b) => b.iter().rev().take_while(|&&c| c == b'"').count() % 2 == 1,
        None => false,
    }
}

#[cfg(test)]
mod resume_tests {
    use super::ends_with_closed_record;

    #[test]
    fn record_ends_are_recognised() {
        assert!(ends_with_closed_record(b"\"a\",\"b\"\n"));
        assert!(ends_with_closed_record(b"\"a\",\"say \"\"hi\"\"\"\r\n"));
        assert!(!ends_with_closed_record(b"\"a\",\"b"));
        assert!(!ends_with_closed_record(b"\"a\",\"line one\n"));
        assert!(!ends_with_closed_record(b"\"a\",\"ends with quote \"\"\n"));
    }
}

//! Command-line interface: argument types and one module per subcommand.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use clap::{Parser, Subcommand, ValueEnum};

use crate::audio::CropMode;
use crate::model::config::AdiffConfig;

pub mod embed;
pub mod tag;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute HTSAT embeddings and AudioSet event probabilities for audio files.
    Embed(embed::EmbedArgs),
    /// Print the top AudioSet events of an audio file, with the time spans where each is active.
    Tag(tag::TagArgs),
}

/// Options shared by every subcommand that loads a model.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Checkpoint: the official ADIFF `.ckpt`/`.pth` (torch.save) or a `.safetensors` file.
    #[arg(long, short = 'c')]
    pub checkpoint: PathBuf,
    /// Model config JSON (default: the paper's, as in configs/base.json).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Device: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    pub fn config(&self) -> anyhow::Result<AdiffConfig> {
        match &self.config {
            Some(p) => Ok(AdiffConfig::from_file(p)?),
            None => Ok(AdiffConfig::base()),
        }
    }

    pub fn device(&self) -> anyhow::Result<Device> {
        parse_device(&self.device)
    }
}

/// How a clip longer than 10 s is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Crop {
    /// The first 10 s.
    Start,
    /// The middle 10 s.
    Center,
    /// A random 10 s window (reproducible with --seed).
    Random,
}

/// Options for turning files into fixed-length clips.
#[derive(Debug, clap::Args)]
pub struct ClipArgs {
    /// Where to cut clips longer than the model's 10 s window.
    #[arg(long, value_enum, default_value_t = Crop::Start)]
    pub crop: Crop,
    /// Seed for `--crop random` (file i of a run uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl ClipArgs {
    /// Crop mode for the `index`-th file of a run.
    pub fn crop_mode(&self, index: usize) -> CropMode {
        match self.crop {
            Crop::Start => CropMode::Start,
            Crop::Center => CropMode::Center,
            Crop::Random => CropMode::Random {
                seed: self.seed.wrapping_add(index as u64),
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
            Device::new_cuda(ordinal).with_context(|| format!("cannot open {s}"))
        }
        other => anyhow::bail!("unknown device '{other}' (use cpu, cuda or cuda:N)"),
    }
}

/// A progress bar on stderr for `n` items (hidden when stderr is not a terminal).
pub fn progress_bar(n: usize, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(n as u64);
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

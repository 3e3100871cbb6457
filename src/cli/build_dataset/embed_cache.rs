//! `adiff build-dataset embed-cache`: HTSAT embeddings and clipwise event probabilities of every
//! distinct audio file of explanation CSVs, in resumable safetensors shards.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{Device, Tensor};

use crate::audio::load_clip;
use crate::cli::{ClipArgs, Crop, ModelArgs};
use crate::data::embed_cache::{CacheIdentity, EmbedCache, EmbedCacheWriter};
use crate::data::explanations::read_explanations;
use crate::model::audio_encoder::AudioEncoder;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::AdiffConfig;
use crate::progress;

/// Precompute HTSAT embeddings of every audio file the CSVs name.
///
/// Each distinct `filepath1`/`filepath2` of the CSVs (ACD/CLD format) is decoded, cut to 10 s
/// (--crop, as `adiff infer`: every file uses --crop-seed) and encoded once. CACHE_DIR gets
/// safetensors shards (`embedding` [n, D], `clipwise` [n, classes]) and index.json (path ->
/// shard, row; the HTSAT weights' hash, config hash and crop). Re-running skips every file
/// already cached, so a killed build resumes, and new CSVs only add what is missing. A cache made
/// with other HTSAT weights, config or crop is refused. Missing or broken audio is reported and
/// left out.
///
/// Use it with `adiff infer --embed-cache CACHE_DIR` (same checkpoint and crop), or from a training
/// loop (`adiff::data::embed_cache::EmbedCache`).
///
/// Example:
///   adiff build-dataset embed-cache data/synth/train_*_answer.csv --audio-root data/synth \
///     -c adiff_base.ckpt -o data/synth/embeddings
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct EmbedCacheArgs {
    /// Explanation CSVs whose audio files are cached.
    #[arg(required = true, value_name = "DATA.csv")]
    pub data: Vec<PathBuf>,
    /// Folder the CSVs' file paths are relative to.
    #[arg(long)]
    pub audio_root: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// Cache folder (created; resumed when it holds a cache of the same model).
    #[arg(long, short = 'o', value_name = "CACHE_DIR")]
    pub output: PathBuf,
    /// Clips encoded per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Files per shard (the unit of resumption).
    #[arg(long, default_value_t = 1024)]
    pub shard_size: usize,
}

/// How the identity of a cache names a crop.
pub fn crop_label(clip: &ClipArgs) -> String {
    match clip.crop {
        Crop::Start => "start".into(),
        Crop::Center => "center".into(),
        Crop::Random => format!("random (seed {})", clip.crop_seed),
    }
}

/// Opens a cache for a model about to be built from `ckpt`, refusing a stale one (`adiff infer
/// --embed-cache`). Call before the model takes the checkpoint's tensors.
pub fn open_for_model(
    dir: &Path,
    ckpt: &Checkpoint,
    cfg: &AdiffConfig,
    clip: &ClipArgs,
) -> anyhow::Result<EmbedCache> {
    let identity = CacheIdentity::new(ckpt, cfg, &crop_label(clip))?;
    Ok(EmbedCache::open_checked(dir, &identity)?)
}

pub fn run(args: EmbedCacheArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(args.shard_size > 0, "--shard-size must be at least 1");
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    // Distinct audio paths, in first-seen order.
    let mut paths: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for csv in &args.data {
        for row in read_explanations(csv)? {
            for p in [row.filepath1, row.filepath2] {
                if seen.insert(p.clone()) {
                    paths.push(p);
                }
            }
        }
    }
    let ckpt = args.model.load_checkpoint(&cfg)?;
    let identity = CacheIdentity::new(&ckpt, &cfg, &crop_label(&args.clip))?;
    let mut writer = EmbedCacheWriter::open(
        &args.output,
        identity,
        cfg.htsat.num_features(),
        cfg.htsat.num_classes,
    )?;
    let encoder = AudioEncoder::from_checkpoint(&ckpt, &cfg, &device)?;
    drop(ckpt);

    let missing: Vec<&String> = paths.iter().filter(|p| !writer.contains(p)).collect();
    let already = paths.len() - missing.len();
    let started = std::time::Instant::now();
    let pb = progress::items(missing.len(), "embedding");
    let (mut cached, mut failed, mut shards) = (0usize, 0usize, 0usize);
    for shard_paths in missing.chunks(args.shard_size) {
        let (mut ok, mut emb, mut clipwise) = (Vec::new(), Vec::new(), Vec::new());
        for batch in shard_paths.chunks(args.batch_size) {
            let mut clips = Vec::new();
            for p in batch {
                match load_clip(&args.audio_root.join(p), &cfg.audio, args.clip.crop_mode(0)) {
                    Ok(c) => {
                        clips.push(c);
                        ok.push((*p).clone());
                    }
                    Err(e) => {
                        pb.suspend(|| eprintln!("skipped {p}: {e}"));
                        failed += 1;
                    }
                }
            }
            if !clips.is_empty() {
                let (_, out) = encoder.encode(&clips)?;
                emb.push(out.embedding.to_device(&Device::Cpu)?);
                clipwise.push(out.clipwise.to_device(&Device::Cpu)?);
            }
            pb.inc(batch.len() as u64);
        }
        if ok.is_empty() {
            continue;
        }
        writer
            .write_shard(&ok, &Tensor::cat(&emb, 0)?, &Tensor::cat(&clipwise, 0)?)
            .with_context(|| format!("writing a shard into {}", args.output.display()))?;
        cached += ok.len();
        shards += 1;
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "cached {cached} file(s) in {shards} new shard(s), {already} already cached, {failed} \
         skipped (missing or broken audio) in {secs:.2} s ({:.1} files/s) -> {}",
        cached as f64 / secs.max(1e-9),
        args.output.display()
    );
    Ok(())
}

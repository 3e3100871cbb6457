//! `adiff embed`: HTSAT embeddings and AudioSet event probabilities for a list of audio files,
//! written to one safetensors file.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::Tensor;

use super::{ClipArgs, ModelArgs};
use crate::audio::load_clip;
use crate::model::checkpoint::save_safetensors;
use crate::progress;

/// Compute HTSAT embeddings for audio files.
///
/// Writes a safetensors file with `embedding` [N, 768], `clipwise` [N, 527], `framewise`
/// [N, 1024, 527] (and `logmel` [N, 1001, 64] with --logmel); the metadata key `paths` holds the
/// input paths as a JSON array, in row order.
///
/// Example: adiff embed a.wav b.flac --checkpoint adiff.ckpt -o emb.safetensors
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct EmbedArgs {
    /// Audio files (WAV, FLAC, MP3, OGG/Vorbis; any sample rate, mono or stereo).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// Precision. On the CPU HTSAT's weight format: f32, or f16 / i8, which both hold its Swin
    /// linears as f16 (half their memory; int8 would not speed up its compute-bound products);
    /// default as the file holds them. On a GPU every weight and activation: bf16 (the default
    /// on compute capability 8.0+), f16 or f32; the front end and the outputs stay f32.
    #[arg(long, value_enum)]
    pub dtype: Option<super::Dtype>,
    /// Output safetensors file.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also store the log-mel spectrograms.
    #[arg(long)]
    pub logmel: bool,
    /// Clips encoded per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let mut inputs: Vec<&std::path::Path> = args.inputs.iter().map(PathBuf::as_path).collect();
    inputs.extend(args.model.checkpoint.iter().map(PathBuf::as_path));
    inputs.extend(args.model.config.as_deref());
    super::check_outputs(&inputs, &[("embeddings", &args.output)], args.force)?;
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    let started = std::time::Instant::now();
    let ckpt = args.model.load_checkpoint(&cfg)?;
    let encoder = super::load_encoder(ckpt, &cfg, &device, args.dtype)?;

    let load_s = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let pb = progress::items(args.inputs.len(), "embedding");
    let (mut emb, mut clip, mut frame, mut mels) = (vec![], vec![], vec![], vec![]);
    for (b, chunk) in args.inputs.chunks(args.batch_size).enumerate() {
        let clips = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| load_clip(p, &cfg.audio, args.clip.crop_mode(b * args.batch_size + i)))
            .collect::<Result<Vec<_>, _>>()?;
        let (logmel, out) = encoder.encode(&clips)?;
        emb.push(out.embedding);
        clip.push(out.clipwise);
        frame.push(out.framewise);
        if args.logmel {
            mels.push(logmel);
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let encode_s = started.elapsed().as_secs_f64();

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert("embedding".into(), Tensor::cat(&emb, 0)?);
    tensors.insert("clipwise".into(), Tensor::cat(&clip, 0)?);
    tensors.insert("framewise".into(), Tensor::cat(&frame, 0)?);
    if args.logmel {
        tensors.insert("logmel".into(), Tensor::cat(&mels, 0)?);
    }
    let paths: Vec<String> = args
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let metadata = HashMap::from([("paths".to_string(), serde_json::to_string(&paths)?)]);
    save_safetensors(&tensors, Some(metadata), &args.output)?;
    eprintln!(
        "wrote {} clip(s) to {} (model load {load_s:.2} s, audio + encode {encode_s:.2} s)",
        args.inputs.len(),
        args.output.display()
    );
    Ok(())
}

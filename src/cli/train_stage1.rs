//! `adiff train-stage1`: unimodal pretraining, the audio encoder (HTSAT tagging) or the language
//! model (GPT-2 on text).

use std::path::{Path, PathBuf};

use super::train::{train_config, RunArgs};
use super::{ClipArgs, ModelArgs};
use crate::audio::CropMode;
use crate::data::labels::{label_set_for, read_labels, LabelledFile};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::AdiffConfig;
use crate::text::prompts::PromptDatabase;
use crate::text::tokenizer::Gpt2Tokenizer;
use crate::train::caption_lm_task::CaptionPrefixTask;
use crate::train::config::TrainConfig;
use crate::train::data::{hold_out, read_examples, Batcher};
use crate::train::lm_task::{read_csv_answers, read_text_lines, LanguageModelTask, TrainableGpt2};
use crate::train::tagging_task::{
    has_bn0, logmel_statistics, prepare_clips, with_bn0, EmbeddingTagger, TaggingTask,
    TrainableHtsat,
};
use crate::train::trainer::{self, RunSummary};

/// The paper-scale stage-1 configs, compiled in (also in configs/train/).
pub const STAGE1_ENCODER_CONFIG: &str = include_str!("../../configs/train/stage1_encoder.json");
pub const STAGE1_DECODER_CONFIG: &str = include_str!("../../configs/train/stage1_decoder.json");

/// Which half of the model stage 1 pretrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// HTSAT: audio tagging, binary cross-entropy on clip labels.
    Encoder,
    /// GPT-2: next-token cross-entropy on text lines, CSV answers, or (--caption-prefix)
    /// answers after their two captions.
    Decoder,
}

/// Stage 1, unimodal pretraining: `--part encoder` trains HTSAT to tag clips (binary
/// cross-entropy on the clip-wise logits; label i is HTSAT output i, names written to
/// OUTPUT/labels.json); `--part decoder` trains GPT-2 as a language model on text lines
/// (next-token cross-entropy on `line + " <|endoftext|>"`). Everything else stays frozen, and
/// OUTPUT/model.safetensors is the whole input checkpoint with the trained tensors replaced, so
/// stage 2 starts from it with `-c`.
///
/// Labels: `truth.jsonl` from `adiff build-dataset synthetic` (every attribute value is a label,
/// 19 in all; see docs/training.md) and/or CSVs of `file,labels` rows with labels separated by `;`.
/// Training config: configs/train/stage1_encoder.json / stage1_decoder.json (compiled in).
///
/// Examples:
///   adiff train-stage1 --part encoder --labels synth/truth.jsonl --split train --val-split test \
///     -c adiff.ckpt -o runs/s1enc
///   adiff train-stage1 --part decoder --text-from-csv synth/train_sentence_answer.csv \
///     -c runs/s1enc/model.safetensors -o runs/s1dec
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TrainStage1Args {
    /// Which part trains.
    #[arg(long, value_enum)]
    pub part: Part,
    /// Encoder: training labels (`.jsonl`: truth records; otherwise a `file,labels` CSV).
    #[arg(long, num_args = 1..)]
    pub labels: Vec<PathBuf>,
    /// Encoder: validation labels (default: `val_fraction` of the training clips held out).
    #[arg(long, num_args = 1..)]
    pub val_labels: Vec<PathBuf>,
    /// Encoder: train on the truth.jsonl records of this split only (`build-dataset synthetic`
    /// keeps every split's clips in one truth.jsonl).
    #[arg(long)]
    pub split: Option<String>,
    /// Encoder: validate on the records of this split of the `--labels` truth files (e.g.
    /// `--split train --val-split test`).
    #[arg(long)]
    pub val_split: Option<String>,
    /// Encoder: folder the label files' paths are relative to (default: the first label file's
    /// folder, where `build-dataset synthetic` puts truth.jsonl).
    #[arg(long)]
    pub audio_root: Option<PathBuf>,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// Decoder: text files, one document per line.
    #[arg(long, num_args = 1..)]
    pub text: Vec<PathBuf>,
    /// Decoder: ACD/CLD-format CSVs whose `answer` column gives one document per row.
    #[arg(long, num_args = 1..)]
    pub text_from_csv: Vec<PathBuf>,
    /// Decoder: validation text files (default: `val_fraction` of the lines held out).
    #[arg(long, num_args = 1..)]
    pub val_text: Vec<PathBuf>,
    /// Decoder: validation CSVs (`answer` column).
    #[arg(long, num_args = 1..)]
    pub val_text_from_csv: Vec<PathBuf>,
    /// Decoder, with --text-from-csv: write each row's answer after a prefix laid out as
    /// ADIFF's, with the row's captions in place of the audio ([caption 1 | separator |
    /// caption 2 | prompt], each pooled into the mappers' prefix_length slots of token
    /// embeddings; prompts drawn as in stages 2 and 3). The answers then sit at the positions
    /// stages 2 and 3 give them, and GPT-2 has already learned to compare two descriptions.
    #[arg(long)]
    pub caption_prefix: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training config JSON (default: configs/train/stage1_encoder.json or
    /// stage1_decoder.json, compiled in).
    #[arg(long)]
    pub train_config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

fn read_label_files(paths: &[PathBuf], split: Option<&str>) -> anyhow::Result<Vec<LabelledFile>> {
    let mut out = vec![];
    for p in paths {
        out.extend(read_labels(p, split)?);
    }
    Ok(out)
}

fn encoder_task(
    args: &TrainStage1Args,
    cfg: &AdiffConfig,
    tcfg: &TrainConfig,
    ckpt: Checkpoint,
    device: candle_core::Device,
) -> anyhow::Result<TaggingTask> {
    anyhow::ensure!(
        !args.labels.is_empty(),
        "--part encoder needs --labels (truth.jsonl or file,labels CSV)"
    );
    anyhow::ensure!(
        !matches!(args.clip.crop_mode(0), CropMode::Random { .. }),
        "--crop random is not supported for stage 1 (log-mels are computed once per clip)"
    );
    let root = match &args.audio_root {
        Some(r) => r.clone(),
        None => args.labels[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let train = read_label_files(&args.labels, args.split.as_deref())?;
    let mut val = read_label_files(&args.val_labels, None)?;
    if let Some(vs) = &args.val_split {
        let jsonl: Vec<PathBuf> = args
            .labels
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .cloned()
            .collect();
        anyhow::ensure!(
            !jsonl.is_empty(),
            "--val-split needs a truth.jsonl among --labels"
        );
        val.extend(read_label_files(&jsonl, Some(vs))?);
    }
    anyhow::ensure!(!train.is_empty(), "the label files list no clip");
    let all: Vec<LabelledFile> = train.iter().chain(&val).cloned().collect();
    let labels = label_set_for(&all);
    let (train, val) = hold_out(train, val, tcfg);
    let init_seed = args.run.init_missing.then_some(tcfg.seed);
    // HTSAT from scratch: bn0 gets the training clips' log-mel statistics (computed with a
    // provisional identity bn0, which the log-mels do not depend on).
    let fresh_bn0 = init_seed.is_some() && !has_bn0(&ckpt);
    let mels = cfg.htsat.target_mels();
    let provisional = if fresh_bn0 {
        with_bn0(ckpt.clone(), &vec![0.0; mels], &vec![1.0; mels])?
    } else {
        ckpt.clone()
    };
    let mut model = TrainableHtsat::build(&provisional, cfg, &tcfg.trainable, init_seed, &device)?;
    let crop = args.clip.crop_mode(0);
    eprintln!(
        "stage1-encoder: computing log-mels of {} clips ({} labels)",
        train.len() + val.len(),
        labels.len()
    );
    let train = prepare_clips(&train, &labels, &root, &model.encoder, cfg, crop)?;
    let val = prepare_clips(&val, &labels, &root, &model.encoder, cfg, crop)?;
    let ckpt = if fresh_bn0 {
        let (mean, var) = logmel_statistics(&train, mels)?;
        let ckpt = with_bn0(ckpt, &mean, &var)?;
        model = TrainableHtsat::build(&ckpt, cfg, &tcfg.trainable, init_seed, &device)?;
        eprintln!(
            "stage1-encoder: HTSAT from scratch; bn0 statistics from the training clips (mean \
             {:.1} dB, std {:.1} dB averaged over mel bins)",
            mean.iter().sum::<f32>() / mels as f32,
            var.iter().map(|v| v.sqrt()).sum::<f32>() / mels as f32
        );
        ckpt
    } else {
        ckpt
    };
    let tagger = if tcfg.embedding_tagging_weight > 0.0 {
        let dim = model.encoder.htsat.config().num_features();
        Some(EmbeddingTagger::new(
            labels.len(),
            dim,
            tcfg.embedding_tagging_weight,
            &device,
        )?)
    } else {
        None
    };
    // Mixed precision: HTSAT's stages in bf16 over its f32 trainable tensors (frozen ones held
    // in bf16); the front end, bn0, the logits and the loss stay f32.
    let dt = tcfg.precision.compute_dtype();
    model.encoder.htsat.set_compute_dtype(dt);
    model.encoder.visit(&mut |_, p| p.cast_frozen(dt))?;
    Ok(TaggingTask::new(
        model, ckpt, labels, train, val, device, tagger,
    ))
}

fn decoder_task(
    args: &TrainStage1Args,
    cfg: &AdiffConfig,
    tcfg: &TrainConfig,
    ckpt: Checkpoint,
    device: candle_core::Device,
) -> anyhow::Result<LanguageModelTask> {
    tcfg.refuse_embedding_tagger("train-stage1 --part decoder")?;
    let mut lines = read_text_lines(&args.text)?;
    lines.extend(read_csv_answers(&args.text_from_csv)?);
    anyhow::ensure!(
        !lines.is_empty(),
        "--part decoder needs --text and/or --text-from-csv with at least one non-empty line"
    );
    let mut val = read_text_lines(&args.val_text)?;
    val.extend(read_csv_answers(&args.val_text_from_csv)?);
    let (train, val) = hold_out(lines, val, tcfg);
    let init_seed = args.run.init_missing.then_some(tcfg.seed);
    let mut model = TrainableGpt2::build(&ckpt, cfg, &tcfg.trainable, init_seed, &device)?;
    model
        .gpt
        .set_compute_dtype(tcfg.precision.compute_dtype())?; // bf16 mixed precision
    let tokenizer = Gpt2Tokenizer::bundled(&cfg.text)?;
    let max = tcfg.max_answer_tokens.min(cfg.gpt2.n_positions);
    Ok(LanguageModelTask {
        train: LanguageModelTask::encode(&tokenizer, &train, max)?,
        val: LanguageModelTask::encode(&tokenizer, &val, max)?,
        model,
        init: ckpt,
        tokenizer,
        pad_id: cfg.text.pad_token_id,
        stop_id: cfg.text.stop_token_id,
        device,
    })
}

fn caption_prefix_task(
    args: &TrainStage1Args,
    cfg: &AdiffConfig,
    tcfg: &TrainConfig,
    ckpt: Checkpoint,
    device: candle_core::Device,
) -> anyhow::Result<CaptionPrefixTask> {
    tcfg.refuse_embedding_tagger("train-stage1 --part decoder")?;
    anyhow::ensure!(
        args.text.is_empty() && args.val_text.is_empty() && !args.text_from_csv.is_empty(),
        "--caption-prefix reads captions, prompts and answers from --text-from-csv (and \
         --val-text-from-csv) CSVs only"
    );
    let train = read_examples(&args.text_from_csv)?;
    let val = if args.val_text_from_csv.is_empty() {
        vec![]
    } else {
        read_examples(&args.val_text_from_csv)?
    };
    let (train, val) = hold_out(train, val, tcfg);
    let init_seed = args.run.init_missing.then_some(tcfg.seed);
    let mut model = TrainableGpt2::build(&ckpt, cfg, &tcfg.trainable, init_seed, &device)?;
    model
        .gpt
        .set_compute_dtype(tcfg.precision.compute_dtype())?; // bf16 mixed precision
    Ok(CaptionPrefixTask {
        model,
        init: ckpt,
        train,
        val,
        batcher: Batcher {
            tokenizer: Gpt2Tokenizer::bundled(&cfg.text)?,
            prompts: PromptDatabase::bundled()?,
            sample_prompts: tcfg.sample_prompts,
            max_answer_tokens: tcfg.max_answer_tokens,
            pad_id: cfg.text.pad_token_id,
            seed: tcfg.seed,
        },
        prefix_length: cfg.mapper.prefix_length,
        separator_id: cfg.text.separator_token_id,
        stop_id: cfg.text.stop_token_id,
        device,
    })
}

pub fn run(args: TrainStage1Args) -> anyhow::Result<()> {
    if super::train::spawn_local_ranks(&args.run)? {
        return Ok(());
    }
    run_stage1(&args)?;
    Ok(())
}

/// Runs stage 1 (either part) and prints a summary.
pub fn run_stage1(args: &TrainStage1Args) -> anyhow::Result<RunSummary> {
    let (stage, default) = match args.part {
        Part::Encoder => ("stage1-encoder", STAGE1_ENCODER_CONFIG),
        Part::Decoder => ("stage1-decoder", STAGE1_DECODER_CONFIG),
    };
    let tcfg = train_config(args.train_config.as_deref(), default)?;
    let cfg = args.model.config()?;
    let dp = super::train::data_parallel(&args.model)?;
    let device = match dp.as_ref().and_then(|d| d.device.clone()) {
        Some(d) => d,
        None => args.model.device()?,
    };
    // --init-missing without -c: the trained half starts from scratch, alone in the output.
    let scratch =
        args.run.init_missing && args.model.model.is_none() && args.model.checkpoint.is_empty();
    let ckpt = if scratch {
        Checkpoint::from_tensors("(no checkpoint: from scratch)", Default::default())
    } else {
        args.model.load_checkpoint(&cfg)?
    };
    let data: Vec<&Path> = [
        &args.labels,
        &args.val_labels,
        &args.text,
        &args.text_from_csv,
        &args.val_text,
        &args.val_text_from_csv,
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
    .collect();
    let opts = args.run.options(stage, &data, dp.as_ref())?;
    let lead = dp.as_ref().is_none_or(|d| d.comm.rank() == 0);
    let summary = match args.part {
        Part::Encoder => {
            let task = encoder_task(args, &cfg, &tcfg, ckpt, device)?;
            if lead {
                args.run.write_configs(&cfg, &tcfg)?;
            }
            trainer::run(&task, &tcfg, &opts)?
        }
        Part::Decoder if args.caption_prefix => {
            let task = caption_prefix_task(args, &cfg, &tcfg, ckpt, device)?;
            if lead {
                args.run.write_configs(&cfg, &tcfg)?;
            }
            trainer::run(&task, &tcfg, &opts)?
        }
        Part::Decoder => {
            let task = decoder_task(args, &cfg, &tcfg, ckpt, device)?;
            if lead {
                args.run.write_configs(&cfg, &tcfg)?;
            }
            trainer::run(&task, &tcfg, &opts)?
        }
    };
    if lead {
        args.run.report(stage, &summary);
    }
    Ok(summary)
}

//! `adiff train`: stage 2 then stage 3 in one go; also the options and the runner the single
//! stage commands (`train-stage2`, `train-stage3`) share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;

use super::{ClipArgs, ModelArgs};
use crate::audio::CropMode;
use crate::model::config::AdiffConfig;
use crate::text::prompts::PromptDatabase;
use crate::text::tokenizer::Gpt2Tokenizer;
use crate::train::config::TrainConfig;
use crate::train::data::{hold_out, read_examples, Batcher, EmbeddingSource};
use crate::train::dist::{Communicator, Launch};
use crate::train::explain_task::ExplanationTask;
use crate::train::model::TrainableAdiff;
use crate::train::trainer::{self, RunOptions, RunSummary};

/// The paper's stage configs, compiled in (also in configs/train/).
pub const STAGE2_CONFIG: &str = include_str!("../../configs/train/stage2.json");
pub const STAGE3_CONFIG: &str = include_str!("../../configs/train/stage3.json");

/// Data, model and run options of a training stage.
#[derive(Debug, clap::Args)]
pub struct StageArgs {
    /// Training CSV(s) in the ACD/CLD format (difference rows; `*_captioning.csv` rows teach
    /// position captioning). The tier of a file comes from its name (fewwords/sentence/detail).
    #[arg(long, required = true, num_args = 1..)]
    pub train: Vec<PathBuf>,
    /// Validation CSV(s); without them `val_fraction` of the training rows is held out.
    #[arg(long, num_args = 1..)]
    pub val: Vec<PathBuf>,
    /// HTSAT embeddings from `adiff build-dataset embed-cache` (fast: HTSAT is frozen).
    #[arg(long, conflicts_with = "audio_root")]
    pub embed_cache: Option<PathBuf>,
    /// Audio folder the CSV paths are relative to (each step decodes and encodes the audio).
    #[arg(long, required_unless_present = "embed_cache")]
    pub audio_root: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// User-prompt database JSON (default: the bundled data/prompts/prompts.json).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Where a training run writes, and how it starts and stops: the same flags for every `train*`
/// command.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Output folder: checkpoints/, log.jsonl, config.json and train_config.json, and at the end
    /// model.safetensors (stage 1's encoder also labels.json).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Continue from the latest checkpoint in the output folder (exactly where it stopped).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many optimizer steps in all (with a checkpoint), e.g. to fit a time
    /// budget; `--resume` continues the same schedule.
    #[arg(long)]
    pub stop_after_steps: Option<u64>,
    /// Initialise trainable tensors the checkpoint lacks from their block's own initialisation
    /// (GPT-2: Hugging Face's normal, std 0.02; HTSAT: normal 0.02 linears, PyTorch's default
    /// convolutions, bn0 from the training clips' log-mel statistics), seeded by the training
    /// config's `seed`. Stages 2 and 3: e.g. the mappers when starting from HTSAT weights + a hub
    /// GPT-2 (`-c htsat.ckpt -c gpt2.safetensors`, or a config naming `gpt2.hub_repo`); frozen
    /// tensors must be present. Stage 1: without -c the part trains from scratch and the output
    /// holds only it (combine later with repeated -c); with a checkpoint that has no GPT-2 at all,
    /// GPT-2 trains from scratch at the config's size.
    #[arg(long)]
    pub init_missing: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Data-parallel training on N GPUs of this machine: starts N processes, one per GPU, as
    /// `torchrun --nproc-per-node N` would (needs the `cuda,nccl` build). The batch size of the
    /// training config is per GPU. Processes started by torchrun or SLURM (`RANK`, `WORLD_SIZE`,
    /// `MASTER_ADDR`, ... or `SLURM_PROCID`, `SLURM_NTASKS`, ...) join their job without it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub nproc_per_node: Option<u32>,
}

/// This process's part in a data-parallel job: its communicator and, for NCCL, its GPU.
#[derive(Clone)]
pub struct DataParallel {
    pub comm: Arc<dyn Communicator>,
    /// The device this rank trains on (`cuda:LOCAL_RANK`); None keeps `--device`.
    pub device: Option<Device>,
}

/// Joins the data-parallel job described by the launcher's environment (torchrun's or SLURM's
/// variables), or None for a plain single-process run.
pub fn data_parallel(model: &ModelArgs) -> anyhow::Result<Option<DataParallel>> {
    let Some(launch) = Launch::from_env()? else {
        return Ok(None);
    };
    join_job(&launch, model)
}

#[cfg(feature = "nccl")]
fn join_job(launch: &Launch, model: &ModelArgs) -> anyhow::Result<Option<DataParallel>> {
    anyhow::ensure!(
        model.device()?.is_cuda(),
        "{} launch: data-parallel training runs over NCCL on GPUs: add --device cuda",
        launch.source
    );
    let device = Device::new_cuda(launch.local_rank).with_context(|| {
        format!(
            "rank {}: cannot open cuda:{}",
            launch.rank, launch.local_rank
        )
    })?;
    let comm = crate::train::dist::nccl::NcclComm::init(launch, &device)?;
    Ok(Some(DataParallel {
        comm: Arc::new(comm),
        device: Some(device),
    }))
}

#[cfg(not(feature = "nccl"))]
fn join_job(launch: &Launch, _model: &ModelArgs) -> anyhow::Result<Option<DataParallel>> {
    if launch.world_size == 1 {
        return Ok(None);
    }
    anyhow::bail!(
        "{} launch with {} ranks: data-parallel training runs over NCCL, and this adiff was built \
         without it (build it with scripts/build-cuda.sh, which enables --features cuda,nccl)",
        launch.source,
        launch.world_size
    )
}

/// `--nproc-per-node N`: starts N copies of this command as ranks 0..N of one job on this
/// machine (torchrun's variables set, rank i on GPU i) and waits for them; when one fails, the
/// others are stopped. Returns false (nothing started) without the flag, for N = 1, and inside a
/// process a launcher already started.
pub fn spawn_local_ranks(run: &RunArgs) -> anyhow::Result<bool> {
    let Some(n) = run.nproc_per_node else {
        return Ok(false);
    };
    if n == 1 || std::env::var_os("WORLD_SIZE").is_some() {
        return Ok(false);
    }
    anyhow::ensure!(
        cfg!(feature = "nccl"),
        "--nproc-per-node {n}: data-parallel training runs over NCCL, and this adiff was built \
         without it (build it with scripts/build-cuda.sh, which enables --features cuda,nccl)"
    );
    let exe = std::env::current_exe().context("cannot find the adiff executable")?;
    // The same arguments without --nproc-per-node (either spelling).
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut skip = false;
    for a in std::env::args_os().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        match a.to_str() {
            Some("--nproc-per-node") => skip = true,
            Some(s) if s.starts_with("--nproc-per-node=") => {}
            _ => args.push(a),
        }
    }
    let addr = std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("MASTER_PORT")
        .unwrap_or_else(|_| crate::train::dist::DEFAULT_MASTER_PORT.to_string());
    let mut children = Vec::new();
    for rank in 0..n {
        let child = std::process::Command::new(&exe)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", &addr)
            .env("MASTER_PORT", &port)
            .spawn()
            .with_context(|| format!("cannot start rank {rank}"))?;
        children.push(child);
    }
    // Poll: the first rank to fail stops the others (they would otherwise wait for it until
    // the collective timeout).
    let mut failed = None;
    let mut running: Vec<Option<std::process::Child>> = children.into_iter().map(Some).collect();
    while running.iter().any(Option::is_some) {
        for (rank, slot) in running.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Some(status) = child.try_wait()? {
                    if !status.success() && failed.is_none() {
                        failed = Some((rank, status));
                    }
                    *slot = None;
                }
            }
        }
        if failed.is_some() {
            for child in running.iter_mut().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if let Some((rank, status)) = failed {
        anyhow::bail!("rank {rank} of {n} failed ({status}); the other ranks were stopped");
    }
    Ok(true)
}

impl RunArgs {
    /// The trainer's options for `stage` (its name in logs and messages), with the identity of
    /// the run's `data` files (a resume on other data is refused).
    pub fn options(
        &self,
        stage: &str,
        data: &[&Path],
        dp: Option<&DataParallel>,
    ) -> anyhow::Result<RunOptions> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in data {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        Ok(RunOptions {
            out_dir: self.output.clone(),
            resume: self.resume,
            stop_after_steps: self.stop_after_steps,
            stage: stage.to_string(),
            progress: !self.quiet,
            data_sha256: Some(crate::hub::hex(&h.finalize())),
            comm: dp.map(|d| d.comm.clone()),
        })
    }

    /// Writes the model and training configs of the run into the output folder.
    pub fn write_configs(&self, cfg: &AdiffConfig, tcfg: &TrainConfig) -> anyhow::Result<()> {
        let out = &self.output;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        for (name, json) in [
            ("config.json", serde_json::to_string_pretty(cfg)?),
            ("train_config.json", serde_json::to_string_pretty(tcfg)?),
        ] {
            std::fs::write(out.join(name), json + "\n")
                .with_context(|| format!("cannot write {}", out.join(name).display()))?;
        }
        Ok(())
    }

    /// One line on how the run ended: its model, or how to continue it.
    pub fn report(&self, stage: &str, summary: &RunSummary) {
        let loss = |l: Option<f64>| l.map_or("-".into(), |l| format!("{l:.4}"));
        match &summary.model {
            Some(m) => println!(
                "{stage}: {} steps in {:.1} s, last train loss {}, best val loss {}; model {} (config {})",
                summary.steps,
                summary.seconds,
                loss(summary.last_train_loss),
                loss(summary.best_val_loss),
                m.display(),
                self.output.join("config.json").display()
            ),
            None => println!(
                "{stage}: stopped after {} of {} steps; continue with --resume",
                summary.steps, summary.total_steps
            ),
        }
    }
}

/// Reads a training config from a file or the compiled-in default.
pub fn train_config(path: Option<&Path>, default: &str) -> anyhow::Result<TrainConfig> {
    Ok(match path {
        Some(p) => TrainConfig::from_file(p)?,
        None => serde_json::from_str(default).context("built-in training config")?,
    })
}

/// Runs one stage; `init` overrides `args.model.checkpoint` (stage 3 after stage 2); `dp`: this
/// process's rank in a data-parallel job.
pub fn run_stage(
    stage: &str,
    args: &StageArgs,
    tcfg: &TrainConfig,
    init: Option<&Path>,
    dp: Option<&DataParallel>,
) -> anyhow::Result<RunSummary> {
    tcfg.refuse_embedding_tagger(stage)?;
    let mut cfg: AdiffConfig = args.model.config()?;
    let device = match dp.and_then(|d| d.device.clone()) {
        Some(d) => d,
        None => args.model.device()?,
    };
    let ckpt = match init {
        Some(p) => crate::model::checkpoint::Checkpoint::load(p)?,
        None => args.model.load_checkpoint(&cfg)?,
    };
    let mut model = TrainableAdiff::build(
        &ckpt,
        &cfg,
        &tcfg.trainable,
        (args.run.init_missing && init.is_none()).then_some(tcfg.seed),
        &device,
    )?;
    // Mixed precision: bf16 activations over the f32 master weights the optimizer updates.
    model
        .model
        .set_compute_dtype(tcfg.precision.compute_dtype())?;
    let tokenizer = Gpt2Tokenizer::bundled(&cfg.text)?;
    tokenizer.check_fits(model.model.config().gpt2.vocab_size)?;
    let prompts = match &args.prompts {
        Some(p) => PromptDatabase::from_file(p)?,
        None => PromptDatabase::bundled()?,
    };
    let (train, val) = hold_out(
        read_examples(&args.train)?,
        if args.val.is_empty() {
            vec![]
        } else {
            read_examples(&args.val)?
        },
        tcfg,
    );
    let source = match (&args.embed_cache, &args.audio_root) {
        (Some(dir), _) => EmbeddingSource::Cache(
            super::build_dataset::embed_cache::open_for_model(dir, &ckpt, &cfg, &args.clip)?,
        ),
        (None, Some(root)) => {
            anyhow::ensure!(
                !matches!(args.clip.crop_mode(0), CropMode::Random { .. }),
                "--crop random is not supported for training from audio (use start or center)"
            );
            EmbeddingSource::Audio {
                root: root.clone(),
                audio: cfg.audio.clone(),
                crop: args.clip.crop_mode(0),
            }
        }
        (None, None) => anyhow::bail!("give --embed-cache or --audio-root"),
    };
    source.check(&train)?;
    source.check(&val)?;
    // The tiers this run teaches, recorded in the config written beside its model.
    let tiers: std::collections::BTreeSet<u8> = train
        .iter()
        .filter_map(|e| match e.kind {
            Some(crate::text::prompts::PromptKind::Tier(t)) => Some(t),
            _ => None,
        })
        .collect();
    cfg.text.trained_tiers = (!tiers.is_empty()).then(|| tiers.into_iter().collect());
    let lead = dp.is_none_or(|d| d.comm.rank() == 0);
    if lead {
        args.run.write_configs(&cfg, tcfg)?;
    }
    let task = ExplanationTask {
        model,
        init: ckpt,
        train,
        val,
        source,
        batcher: Batcher {
            tokenizer,
            prompts,
            sample_prompts: tcfg.sample_prompts,
            max_answer_tokens: tcfg.max_answer_tokens,
            pad_id: cfg.text.pad_token_id,
            seed: tcfg.seed,
        },
        device,
    };
    let data: Vec<&Path> = args
        .train
        .iter()
        .chain(&args.val)
        .map(PathBuf::as_path)
        .collect();
    let summary = trainer::run(&task, tcfg, &args.run.options(stage, &data, dp)?)?;
    if lead {
        args.run.report(stage, &summary);
    }
    Ok(summary)
}

/// Train ADIFF: stage 2 (multimodal grounding), then stage 3 (finetuning with GPT-2 unfrozen),
/// the second starting from the first's model.
///
/// Writes OUTPUT/stage2/ and OUTPUT/stage3/ (each: checkpoints/, log.jsonl, model.safetensors,
/// config.json). `--resume` continues whichever stage was interrupted.
///
/// Example: adiff train --train data/train_*_answer.csv --embed-cache cache -c adiff_init.safetensors -o runs/adiff
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TrainArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Stage-2 training config (default: configs/train/stage2.json, compiled in).
    #[arg(long)]
    pub stage2_config: Option<PathBuf>,
    /// Stage-3 training config (default: configs/train/stage3.json, compiled in).
    #[arg(long)]
    pub stage3_config: Option<PathBuf>,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if spawn_local_ranks(&args.stage.run)? {
        return Ok(());
    }
    let dp = data_parallel(&args.stage.model)?;
    run_both(args, dp.as_ref())
}

/// Stage 2, then stage 3 from its model, as this process's rank `dp` of a data-parallel job (or
/// alone).
pub fn run_both(mut args: TrainArgs, dp: Option<&DataParallel>) -> anyhow::Result<()> {
    let c2 = train_config(args.stage2_config.as_deref(), STAGE2_CONFIG)?;
    let c3 = train_config(args.stage3_config.as_deref(), STAGE3_CONFIG)?;
    let root = args.stage.run.output.clone();
    let stop = args.stage.run.stop_after_steps;
    args.stage.run.output = root.join("stage2");
    let s2 = run_stage("stage2", &args.stage, &c2, None, dp)?;
    let Some(model2) = s2.model else {
        return Ok(());
    };
    args.stage.run.output = root.join("stage3");
    // The step budget counts both stages.
    args.stage.run.stop_after_steps = stop.map(|s| s.saturating_sub(s2.steps));
    if args.stage.run.stop_after_steps == Some(0) {
        println!("stage3: not started (step budget used up); continue with --resume");
        return Ok(());
    }
    run_stage("stage3", &args.stage, &c3, Some(&model2), dp)?;
    Ok(())
}

//! `adiff train-stage3`: finetuning with GPT-2 unfrozen.

use std::path::PathBuf;

use super::train::{
    data_parallel, run_stage, spawn_local_ranks, train_config, StageArgs, STAGE3_CONFIG,
};

/// Stage 3, finetuning: GPT-2 unfrozen too (small learning rate, warm-up, cosine decay), HTSAT
/// still frozen. Start from the stage-2 model: -c runs/stage2/model.safetensors.
///
/// Which tensors train, epochs, batch size, learning rate, warm-up and decay come from the
/// training config (default configs/train/stage3.json). Checkpoints (weights, AdamW moments,
/// step, position in the data) are written atomically to OUTPUT/checkpoints/, the last K and the
/// best kept; `--resume` continues exactly. Logs go to OUTPUT/log.jsonl.
///
/// Example: adiff train-stage2 --train acd_train_sentence_answer.csv --embed-cache cache \
///   -c adiff_init.safetensors -o runs/stage3
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TrainStage3Args {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Training config JSON (default: configs/train/stage3.json, compiled in).
    #[arg(long)]
    pub train_config: Option<PathBuf>,
}

pub fn run(args: TrainStage3Args) -> anyhow::Result<()> {
    let cfg = train_config(args.train_config.as_deref(), STAGE3_CONFIG)?;
    if spawn_local_ranks(&args.stage.run)? {
        return Ok(());
    }
    let dp = data_parallel(&args.stage.model)?;
    run_stage("stage3", &args.stage, &cfg, None, dp.as_ref())?;
    Ok(())
}

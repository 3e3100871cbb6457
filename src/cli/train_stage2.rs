//! `adiff train-stage2`: multimodal grounding.

use std::path::PathBuf;

use super::train::{
    data_parallel, run_stage, spawn_local_ranks, train_config, StageArgs, STAGE2_CONFIG,
};

/// Stage 2, multimodal grounding: HTSAT and GPT-2 frozen; the projection, the audio and text
/// mappers and the cross-projection learn from next-token cross-entropy on the answers.
///
/// Which tensors train, epochs, batch size, learning rate, warm-up and decay come from the
/// training config (default configs/train/stage2.json). Checkpoints (weights, AdamW moments,
/// step, position in the data) are written atomically to OUTPUT/checkpoints/, the last K and the
/// best kept; `--resume` continues exactly. Logs go to OUTPUT/log.jsonl.
///
/// Example: adiff train-stage2 --train acd_train_sentence_answer.csv --embed-cache cache \
///   -c adiff_init.safetensors -o runs/stage2
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TrainStage2Args {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Training config JSON (default: configs/train/stage2.json, compiled in).
    #[arg(long)]
    pub train_config: Option<PathBuf>,
}

pub fn run(args: TrainStage2Args) -> anyhow::Result<()> {
    let cfg = train_config(args.train_config.as_deref(), STAGE2_CONFIG)?;
    if spawn_local_ranks(&args.stage.run)? {
        return Ok(());
    }
    let dp = data_parallel(&args.stage.model)?;
    run_stage("stage2", &args.stage, &cfg, None, dp.as_ref())?;
    Ok(())
}

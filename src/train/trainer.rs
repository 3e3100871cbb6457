//! The training loop shared by every stage: shuffled micro-batches, gradient accumulation and
//! clipping, AdamW with a warm-up schedule, validation and sample generations, JSONL logs, a
//! progress bar, atomic checkpoints (last K + best) and exact resume.
//!
//! Exact resume: the data order of an epoch is a permutation drawn from `seed` and the epoch,
//! prompt draws depend only on (seed, epoch, example), and a checkpoint holds the trainable
//! weights, the AdamW moments and step counts, the step, epoch and position in the epoch. A run
//! stopped after step k and resumed therefore computes bit-for-bit what the uninterrupted run
//! computes from step k on (on the same device).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{AdiffError, Result};
use crate::train::average::WeightAverage;
use crate::train::config::{TrainConfig, GROUP_BY_LENGTH_STEPS};
use crate::train::dist::{self, Communicator};
use crate::train::optim::{clip_scale, AdamW, GradAccumulator};
use crate::train::state::{CheckpointDir, DataOrder, TrainMeta};

/// Mixes the epoch into the data-order seed.
const EPOCH_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// What a stage trains: its examples, losses, samples and the model file it exports.
pub trait TrainTask {
    /// Training and validation examples.
    fn num_train(&self) -> usize;
    fn num_val(&self) -> usize;
    /// Mean loss of training examples `indices` in `epoch` (a graph to backpropagate).
    fn train_loss(&self, indices: &[usize], epoch: u64) -> Result<Tensor>;
    /// [`TrainTask::train_loss`] and the number of terms it averages (target tokens, or
    /// examples): a data-parallel run weights each rank's gradient by it, so that N ranks train
    /// exactly as one batch N times larger.
    fn train_loss_counted(&self, indices: &[usize], epoch: u64) -> Result<(Tensor, f64)> {
        Ok((self.train_loss(indices, epoch)?, indices.len() as f64))
    }
    /// Mean loss of validation examples `indices`.
    fn val_loss(&self, indices: &[usize]) -> Result<Tensor>;
    /// The length of each training example's target (answer tokens), for
    /// `group_by_length`; None for a task whose examples all cost alike.
    fn train_lengths(&self) -> Result<Option<Vec<usize>>> {
        Ok(None)
    }
    /// A few generated texts for validation examples `indices` (for the log).
    fn samples(&self, indices: &[usize], max_tokens: usize) -> Result<Vec<String>>;
    /// The trainable tensors, sorted by name.
    fn vars(&self) -> &[(String, Var)];
    /// Writes the whole model (frozen and trained tensors) as one safetensors file.
    fn export(&self, path: &Path) -> Result<()>;
}

/// Where a run writes, and how far it goes.
pub struct RunOptions {
    pub out_dir: PathBuf,
    /// Continue from the latest checkpoint in `out_dir/checkpoints`.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many optimizer steps in total, as an interruption
    /// would; the schedule still spans the whole configured run.
    pub stop_after_steps: Option<u64>,
    /// Stage name for logs.
    pub stage: String,
    pub progress: bool,
    /// SHA-256 of the run's data files (see [`TrainMeta::data_sha256`]).
    pub data_sha256: Option<String>,
    /// The data-parallel group this process is a rank of; None for a single process. Rank 0
    /// alone writes the log, checkpoints and the model; every rank reads them on resume.
    pub comm: Option<std::sync::Arc<dyn Communicator>>,
}

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub steps: u64,
    pub total_steps: u64,
    pub last_train_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    /// None when stopped early (no final model written).
    pub model: Option<PathBuf>,
    pub seconds: f64,
}

/// Order in which `epoch` visits the `n` training examples.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(EPOCH_MIX));
    order.shuffle(&mut rng);
    order
}

/// `order` with each run of `steps` optimizer steps (`per_step` examples each) sorted by
/// `lengths` (longest first, stable), cut into its steps, and the steps of the run shuffled
/// again (seeded by `seed`, the epoch and the run): every step holds similar lengths, and the
/// steps of different lengths stay mixed in time. (Left sorted, as Hugging Face's sampler
/// leaves its megabatches, the demo's runs went tier 3, then 2, then 1, and the model
/// answered tier-3 prompts in tier-2 sentences: measured in docs/demo-model.md.)
pub fn group_by_length(
    mut order: Vec<usize>,
    lengths: &[usize],
    per_step: usize,
    steps: usize,
    seed: u64,
    epoch: u64,
) -> Vec<usize> {
    let per_step = per_step.max(1);
    let mut out = Vec::with_capacity(order.len());
    for (r, run) in order.chunks_mut(per_step * steps.max(1)).enumerate() {
        run.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        let mut pieces: Vec<&[usize]> = run.chunks(per_step).collect();
        // A short last piece (the epoch's end) keeps its place: the step count stays the same.
        let last = match pieces.last() {
            Some(p) if p.len() < per_step => pieces.pop(),
            _ => None,
        };
        let mix = seed ^ epoch.wrapping_mul(EPOCH_MIX) ^ (r as u64).wrapping_mul(RUN_MIX);
        pieces.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix));
        out.extend(pieces.into_iter().chain(last).flatten());
    }
    out
}

/// Mixed into the seed for each run of [`group_by_length`].
const RUN_MIX: u64 = 0xD1B5_4A32_D192_ED03;

/// `log.jsonl`; `file` is None on the ranks other than 0 of a data-parallel run.
struct Log {
    file: Option<std::fs::File>,
}

impl Log {
    fn open(path: &Path, write: bool) -> Result<Self> {
        if !write {
            return Ok(Self { file: None });
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| AdiffError::Invalid(format!("cannot open log {}: {e}", path.display())))?;
        Ok(Self { file: Some(file) })
    }

    fn write(&mut self, v: serde_json::Value) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        writeln!(file, "{v}")
            .and_then(|_| file.flush())
            .map_err(|e| AdiffError::Invalid(format!("cannot write the training log: {e}")))
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(f64::from(
        t.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?,
    ))
}

/// Runs (or resumes) one stage.
pub fn run(task: &dyn TrainTask, cfg: &TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let n = task.num_train();
    if n == 0 {
        return Err(AdiffError::Invalid("no training examples".into()));
    }
    let comm = opts.comm.as_deref();
    let (rank, world) = comm.map_or((0, 1), |c| (c.rank(), c.world_size()));
    // Rank 0 (or the only process) writes the log, checkpoints, the model and the progress bar.
    let lead = rank == 0;
    // Examples per optimizer step, over all ranks.
    let per_step = cfg.batch_size * cfg.grad_accum * world;
    let steps_per_epoch = n.div_ceil(per_step) as u64;
    let total_steps = steps_per_epoch * cfg.epochs;
    let schedule = cfg.schedule(total_steps);
    schedule.validate()?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| {
        AdiffError::Invalid(format!("cannot create {}: {e}", opts.out_dir.display()))
    })?;
    let ckpts = CheckpointDir::new(opts.out_dir.join("checkpoints"), cfg.keep_last)?;
    let mut log = Log::open(&opts.out_dir.join("log.jsonl"), lead)?;
    let vars = task.vars().to_vec();
    let mut opt = AdamW::new(vars.clone(), cfg.optimizer.clone())?;
    let mut average = match cfg.weight_average_decay {
        d if d > 0.0 => Some(WeightAverage::new(&vars, d)?),
        _ => None,
    };
    let config_json = serde_json::to_value(cfg)
        .map_err(|e| AdiffError::Invalid(format!("cannot encode the training config: {e}")))?;

    // Where to start.
    let (mut step, mut epoch, mut position, mut best_val) = (0u64, 0u64, 0u64, None::<f64>);
    if opts.resume {
        match ckpts.load_latest()? {
            Some(state) => {
                if state.meta.config != config_json {
                    return Err(AdiffError::Invalid(format!(
                        "{}: was written with another training config; resume with the same one",
                        state.path().display()
                    )));
                }
                if let (Some(then), Some(now)) = (&state.meta.data_sha256, &opts.data_sha256) {
                    if then != now {
                        return Err(AdiffError::Invalid(format!(
                            "{}: was trained on other data (the training/validation files \
                             differ); resume with the same files, or choose another --output",
                            state.path().display()
                        )));
                    }
                }
                state.restore_model(&vars)?;
                state.restore_optimizer(&mut opt)?;
                if let Some(avg) = average.as_mut() {
                    avg.load_state(state.other_tensors())
                        .map_err(|e| AdiffError::checkpoint(state.path(), e.to_string()))?;
                }
                if state.meta.world_size != world {
                    return Err(AdiffError::Invalid(format!(
                        "{}: was written by a run on {} rank(s), this one has {world}; resume \
                         with the same number of ranks (the data order of the remaining steps \
                         depends on it)",
                        state.path().display(),
                        state.meta.world_size
                    )));
                }
                step = state.meta.step;
                epoch = state.meta.epoch;
                position = state.meta.position_in_epoch;
                best_val = state.meta.best_val_loss;
                log.write(serde_json::json!({"event": "resume", "stage": opts.stage,
                    "from": state.path().display().to_string(), "step": step}))?;
            }
            None => log.write(serde_json::json!({"event": "resume", "stage": opts.stage,
                "from": null, "note": "no checkpoint yet, starting fresh"}))?,
        }
    } else if ckpts.latest()?.is_some() {
        return Err(AdiffError::Invalid(format!(
            "{} already holds checkpoints: pass --resume to continue, or choose another --output",
            ckpts.dir().display()
        )));
    }
    let values: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    if lead {
        eprintln!(
            "{}: {n} training and {} validation examples, {} trainable tensors ({values} values), \
             {total_steps} steps",
            opts.stage,
            task.num_val(),
            vars.len()
        );
        if let Some(c) = comm {
            eprintln!(
                "{}: data-parallel over {world} ranks ({}): global batch {per_step} = {} per rank \
                 x {world} ranks x {} accumulation steps",
                opts.stage,
                c.backend(),
                cfg.batch_size,
                cfg.grad_accum
            );
        }
    }
    log.write(
        serde_json::json!({"event": "start", "stage": opts.stage, "train": n,
        "val": task.num_val(), "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
        "trainable_tensors": vars.len(),
        "trainable_values": values, "world_size": world, "per_rank_batch": cfg.batch_size,
        "grad_accum": cfg.grad_accum, "global_batch": per_step,
        "backend": comm.map(|c| c.backend())}),
    )?;

    let bar = if opts.progress && lead {
        crate::progress::items(total_steps as usize, &opts.stage)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_position(step);
    let mut last_loss = None;
    let mut window = (Instant::now(), 0usize);

    let save = |step: u64,
                epoch: u64,
                position: u64,
                val: Option<f64>,
                best: Option<f64>,
                opt: &AdamW,
                average: Option<&WeightAverage>|
     -> Result<PathBuf> {
        if let Some(c) = comm {
            dist::check_in_sync(c, &vars, step)?;
        }
        if !lead {
            return Ok(ckpts.path_for(step));
        }
        let extra = match average {
            Some(a) => a.state_tensors()?,
            None => vec![],
        };
        ckpts.save_with(
            &vars,
            opt,
            &extra,
            &TrainMeta {
                step,
                epoch,
                position_in_epoch: position,
                data_order: DataOrder::Seed { seed: cfg.seed },
                rng_state: vec![],
                val_loss: val,
                best_val_loss: best,
                config: config_json.clone(),
                data_sha256: opts.data_sha256.clone(),
                world_size: world,
            },
        )
    };
    let validate = |task: &dyn TrainTask| -> Result<Option<f64>> {
        let nv = task.num_val();
        if nv == 0 {
            return Ok(None);
        }
        let (mut sum, mut count) = (0.0, 0usize);
        // Rank r takes batches r, r + world, ...; their sums are added over the ranks.
        for start in (0..nv).step_by(cfg.batch_size).skip(rank).step_by(world) {
            let idx: Vec<usize> = (start..(start + cfg.batch_size).min(nv)).collect();
            sum += scalar(&task.val_loss(&idx)?)? * idx.len() as f64;
            count += idx.len();
        }
        if let Some(c) = comm {
            let (_, s) = dist::all_reduce_grads(c, &[], &[sum as f32, count as f32])?;
            (sum, count) = (f64::from(s[0]), s[1] as usize);
        }
        Ok(Some(sum / count as f64))
    };

    let lengths = match cfg.group_by_length {
        false => None,
        true => Some(task.train_lengths()?.ok_or_else(|| {
            AdiffError::Config(
                "group_by_length: this stage's examples have no answer lengths to group by \
                 (stages 2 and 3 only)"
                    .into(),
            )
        })?),
    };
    while epoch < cfg.epochs {
        let order = epoch_order(cfg.seed, epoch, n);
        let order = match &lengths {
            Some(l) => group_by_length(order, l, per_step, GROUP_BY_LENGTH_STEPS, cfg.seed, epoch),
            None => order,
        };
        while position < steps_per_epoch {
            if opts.stop_after_steps.is_some_and(|s| step >= s) {
                let path = save(
                    step,
                    epoch,
                    position,
                    None,
                    best_val,
                    &opt,
                    average.as_ref(),
                )?;
                log.write(serde_json::json!({"event": "stopped", "step": step,
                    "checkpoint": path.display().to_string()}))?;
                bar.abandon();
                return Ok(RunSummary {
                    steps: step,
                    total_steps,
                    last_train_loss: last_loss,
                    best_val_loss: best_val,
                    model: None,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            // Wall time of the whole step: batches, forward, backward, clipping, optimizer.
            let step_started = Instant::now();
            let first = position as usize * per_step;
            let mut acc = GradAccumulator::new();
            let mut loss_sum = 0.0;
            let mut micro = 0;
            let mut items = 0;
            let (mut t_forward, mut t_backward) = (0.0, 0.0);
            // A rank of a data-parallel run weights its loss by its number of terms (target
            // tokens); the gradients are summed over the ranks and divided by the total: the
            // mean over the global batch, as one process with `per_step` examples computes it.
            let weighted = comm.is_some();
            let mut weight = 0.0;
            for k in 0..cfg.grad_accum {
                let lo = first + k * cfg.batch_size * world;
                if lo >= n {
                    break;
                }
                // (A single process takes `order[lo..lo + batch]`; a rank may get nothing at
                // the end of an epoch.)
                let idx = dist::shard(&order, lo, cfg.batch_size, rank, world);
                if idx.is_empty() {
                    continue;
                }
                let t = Instant::now();
                let (loss, w) = if weighted {
                    task.train_loss_counted(idx, epoch)?
                } else {
                    (task.train_loss(idx, epoch)?, 1.0)
                };
                loss_sum += scalar(&loss)? * w;
                weight += w;
                let t_fwd = t.elapsed().as_secs_f64();
                let grads = if weighted {
                    crate::model::ops::backward(&loss.affine(w, 0.0)?)?
                } else {
                    crate::model::ops::backward(&loss)?
                };
                t_forward += t_fwd;
                t_backward += t.elapsed().as_secs_f64() - t_fwd;
                acc.add(&vars, &grads)?;
                micro += 1;
                items += idx.len();
            }
            let (grads, loss) = match comm {
                None => (acc.average(&vars)?, loss_sum / micro as f64),
                Some(c) => {
                    let sums = acc.sum(&vars)?;
                    let local: Vec<Tensor> = vars
                        .iter()
                        .map(|(_, v)| match sums.get(v.as_tensor()) {
                            Some(g) => Ok(g.clone()),
                            None => v.as_tensor().zeros_like(),
                        })
                        .collect::<candle_core::Result<_>>()?;
                    let (summed, totals) = dist::all_reduce_grads(
                        c,
                        &local,
                        &[weight as f32, loss_sum as f32, items as f32],
                    )?;
                    let total_weight = f64::from(totals[0]);
                    if total_weight <= 0.0 {
                        return Err(AdiffError::Invalid(format!(
                            "step {step}: no rank had a training example"
                        )));
                    }
                    let mut store = candle_core::backprop::GradStore::default();
                    for ((_, v), g) in vars.iter().zip(summed) {
                        store.insert(v.as_tensor(), g.affine(1.0 / total_weight, 0.0)?);
                    }
                    items = totals[2] as usize;
                    (store, f64::from(totals[1]) / total_weight)
                }
            };
            let grad_norm = crate::train::optim::grad_norm(&vars, &grads)?;
            // Clipping is applied inside the optimizer's pass (the same values as scaling the
            // gradients first, without writing them out again).
            let grad_scale = cfg
                .clip_grad_norm
                .and_then(|max| clip_scale(grad_norm, max));
            let lr = schedule.lr(step);
            if !loss.is_finite() || !grad_norm.is_finite() {
                return Err(AdiffError::Invalid(format!(
                    "step {step}: loss {loss}, gradient norm {grad_norm}: training diverged \
                     (lower the learning rate; the last checkpoint is intact)"
                )));
            }
            let t = Instant::now();
            opt.step_scaled(&grads, lr, grad_scale)?;
            let t_optimizer = t.elapsed().as_secs_f64();
            let t_step = step_started.elapsed().as_secs_f64();
            step += 1;
            position += 1;
            if let Some(avg) = average.as_mut() {
                avg.update(step)?;
            }
            last_loss = Some(loss);
            window.1 += items;
            let secs = window.0.elapsed().as_secs_f64().max(1e-9);
            let sps = window.1 as f64 / secs;
            log.write(
                serde_json::json!({"event": "step", "stage": opts.stage, "step": step,
                "epoch": epoch, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "samples_per_s": sps, "seconds": {"forward": t_forward,
                "backward": t_backward, "optimizer": t_optimizer, "step": t_step}}),
            )?;
            bar.set_message(format!(
                "{}: loss {loss:.4} lr {lr:.2e} {sps:.1} samples/s",
                opts.stage
            ));
            bar.set_position(step);
            let end_of_epoch = position == steps_per_epoch;
            let eval_now = end_of_epoch || (cfg.eval_every > 0 && step % cfg.eval_every == 0);
            let mut val = None;
            if eval_now {
                val = validate(task)?;
                if let Some(v) = val {
                    if best_val.is_none_or(|b| v < b) {
                        best_val = Some(v);
                    }
                }
                let nv = task.num_val().min(cfg.num_samples);
                let idx: Vec<usize> = (0..nv).collect();
                let samples = if nv > 0 && lead {
                    task.samples(&idx, cfg.sample_tokens)?
                } else {
                    vec![]
                };
                log.write(
                    serde_json::json!({"event": "validation", "stage": opts.stage,
                    "step": step, "epoch": epoch, "val_loss": val, "samples": samples}),
                )?;
                bar.suspend(|| {
                    if !lead {
                        return;
                    }
                    eprintln!(
                        "[{}] step {step} epoch {epoch}: train loss {loss:.4}, val loss {}",
                        opts.stage,
                        val.map_or("-".into(), |v| format!("{v:.4}"))
                    );
                    for s in &samples {
                        eprintln!("    sample: {s}");
                    }
                });
                window = (Instant::now(), 0);
            }
            if end_of_epoch || (cfg.save_every > 0 && step % cfg.save_every == 0) {
                let (e, p) = if end_of_epoch {
                    (epoch + 1, 0)
                } else {
                    (epoch, position)
                };
                save(step, e, p, val, best_val, &opt, average.as_ref())?;
            }
        }
        epoch += 1;
        position = 0;
    }
    bar.finish();
    if let Some(avg) = &average {
        // The exported model holds the averaged weights (validation above saw the last ones).
        avg.apply()?;
        log.write(
            serde_json::json!({"event": "weights_averaged", "stage": opts.stage,
            "decay": cfg.weight_average_decay, "step": step}),
        )?;
    }
    let model = opts.out_dir.join("model.safetensors");
    if lead {
        task.export(&model)?;
    }
    if let Some(c) = comm {
        // A barrier: no rank returns (e.g. to start stage 3 from this model) before rank 0 has
        // written it.
        dist::all_reduce_grads(c, &[], &[0.0])?;
    }
    log.write(
        serde_json::json!({"event": "done", "stage": opts.stage, "step": step,
        "model": model.display().to_string(), "best_val_loss": best_val}),
    )?;
    Ok(RunSummary {
        steps: step,
        total_steps,
        last_train_loss: last_loss,
        best_val_loss: best_val,
        model: Some(model),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example still comes once per epoch; each run is sorted longest first, runs stay
    /// where the shuffle put them, and ties keep their shuffled order.
    #[test]
    fn group_by_length_sorts_within_runs_only() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 11).collect();
        let shuffled = epoch_order(5, 2, lengths.len());
        // Runs of 4 steps of 5 examples.
        let grouped = group_by_length(shuffled.clone(), &lengths, 5, 4, 5, 2);
        let mut seen = grouped.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        for (run, before) in grouped.chunks(20).zip(shuffled.chunks(20)) {
            let mut a = run.to_vec();
            let mut b = before.to_vec();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "a run keeps its examples");
            // Each step of the run is a slice of the run sorted longest first.
            let mut sorted = before.to_vec();
            sorted.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
            let steps: Vec<&[usize]> = sorted.chunks(5).collect();
            for step in run.chunks(5) {
                assert!(steps.contains(&step), "{step:?} is not one of {steps:?}");
            }
        }
        // The steps are mixed again: not the sorted order in every run.
        let sorted_runs: Vec<usize> = shuffled
            .chunks(20)
            .flat_map(|c| {
                let mut c = c.to_vec();
                c.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
                c
            })
            .collect();
        assert_ne!(grouped, sorted_runs);
        // A pure function of its inputs: a resumed run gets the same order.
        assert_eq!(grouped, group_by_length(shuffled, &lengths, 5, 4, 5, 2));
    }
}

//! Data-parallel training: the communicator the trainer all-reduces gradients through, how a
//! process learns its place in the job (torchrun's or SLURM's variables), and the sharding of
//! an epoch across ranks.
//!
//! Tensors: the gradients of the trainable tensors are flattened into buckets of at most
//! [`BUCKET_VALUES`] f32 values (`[n]` each, on the training device), each bucket summed over
//! the ranks by one collective call, then split back into the tensors' shapes.
//!
//! Implementations of [`Communicator`]: [`nccl`] (feature `nccl`: NCCL through cudarc, the
//! production path) and [`local::LocalGroup`] (threads of one process, exact sums in rank order:
//! the tests' stand-in for NCCL, so the trainer's data-parallel semantics run in CI without a
//! GPU).

pub mod local;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod rendezvous;

use std::time::Duration;

use candle_core::{DType, Tensor, Var};

use crate::error::{AdiffError, Result};

/// Values per all-reduce bucket (25 MB of f32, as PyTorch DDP's default `bucket_cap_mb`): a
/// few calls per step instead of one per tensor, without one huge temporary.
pub const BUCKET_VALUES: usize = 25 * 1024 * 1024 / 4;

/// Default time a collective or the rendezvous may take before the job is declared dead
/// (PyTorch's default NCCL timeout is also 10 minutes); `ADIFF_DIST_TIMEOUT` (seconds) sets it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The port rank 0 listens on for the rendezvous when `MASTER_PORT` is unset (torchrun's).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// A group of ranks that sum tensors together. Every rank calls the same collectives in the same
/// order with tensors of the same shape.
pub trait Communicator: Send + Sync {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// The element-wise sum of `t` (f32, any shape, contiguous) over all ranks, on every rank:
    /// the same bits on every rank.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// A short name for logs ("nccl", "local").
    fn backend(&self) -> &'static str;
}

/// The time limit of collectives and of the rendezvous: `ADIFF_DIST_TIMEOUT` seconds, or
/// [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var("ADIFF_DIST_TIMEOUT") {
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                AdiffError::Invalid(format!(
                    "ADIFF_DIST_TIMEOUT={s}: expected a positive number of seconds"
                ))
            }),
        Err(_) => Ok(DEFAULT_TIMEOUT),
    }
}

/// Where this process sits in a data-parallel job, from the launcher's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// Rank within this machine: the GPU it uses.
    pub local_rank: usize,
    pub local_world_size: usize,
    /// Rank 0's address and port for the rendezvous.
    pub master_addr: String,
    pub master_port: u16,
    /// Which variables it came from ("torchrun" or "SLURM").
    pub source: &'static str,
}

impl Launch {
    /// Reads torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`,
    /// `MASTER_PORT`, or else SLURM's `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
    /// `SLURM_NTASKS_PER_NODE` (with `MASTER_ADDR` still needed across machines). None when
    /// neither `WORLD_SIZE` nor `SLURM_NTASKS` is set: a plain single-process run.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any variable lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let num = |k: &str| -> Result<Option<usize>> {
            match var(k) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    AdiffError::Invalid(format!("{k}={v}: expected a non-negative integer"))
                }),
            }
        };
        let (source, rank, world, local_rank, local_world) = if var("WORLD_SIZE").is_some() {
            (
                "torchrun",
                num("RANK")?,
                num("WORLD_SIZE")?,
                num("LOCAL_RANK")?,
                num("LOCAL_WORLD_SIZE")?,
            )
        } else if var("SLURM_NTASKS").is_some() {
            // SLURM_NTASKS_PER_NODE may read "4" or "4(x2)"; its leading number is the count.
            let per_node = var("SLURM_NTASKS_PER_NODE").and_then(|v| {
                v.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse::<usize>().ok())
            });
            (
                "SLURM",
                num("SLURM_PROCID")?,
                num("SLURM_NTASKS")?,
                num("SLURM_LOCALID")?,
                per_node,
            )
        } else {
            return Ok(None);
        };
        let world = world.unwrap_or(1);
        let rank = rank.ok_or_else(|| {
            AdiffError::Invalid(format!(
                "{source} launch: {} is set but {} is not",
                if source == "SLURM" {
                    "SLURM_NTASKS"
                } else {
                    "WORLD_SIZE"
                },
                if source == "SLURM" {
                    "SLURM_PROCID"
                } else {
                    "RANK"
                }
            ))
        })?;
        if world == 0 || rank >= world {
            return Err(AdiffError::Invalid(format!(
                "{source} launch: rank {rank} is outside a world of {world}"
            )));
        }
        let local_rank = local_rank.unwrap_or(rank);
        let local_world = local_world.unwrap_or(world);
        if local_rank >= local_world {
            return Err(AdiffError::Invalid(format!(
                "{source} launch: local rank {local_rank} is outside {local_world} local ranks"
            )));
        }
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let master_port = match var("MASTER_PORT") {
            None => DEFAULT_MASTER_PORT,
            Some(p) => p.trim().parse::<u16>().map_err(|_| {
                AdiffError::Invalid(format!("MASTER_PORT={p}: expected a port number"))
            })?,
        };
        if world > local_world && var("MASTER_ADDR").is_none() {
            return Err(AdiffError::Invalid(format!(
                "{source} launch: {world} ranks on several machines need MASTER_ADDR (rank 0's \
                 host) for the rendezvous"
            )));
        }
        Ok(Some(Self {
            rank,
            world_size: world,
            local_rank,
            local_world_size: local_world,
            master_addr,
            master_port,
            source,
        }))
    }
}

/// The examples of one micro-batch that `rank` trains on: the micro-batch is
/// `order[lo .. lo + batch * world]` (cut at the end of the epoch), and rank r takes its r-th
/// slice of `batch`; the slices of all ranks are disjoint and cover the micro-batch. The same
/// data order on every rank (same seed) makes the shards agree without communication.
pub fn shard(order: &[usize], lo: usize, batch: usize, rank: usize, world: usize) -> &[usize] {
    let end = (lo + batch * world).min(order.len());
    let start = (lo + batch * rank).min(end);
    &order[start..(start + batch).min(end)]
}

/// Sums the gradients `grads` (one per trainable tensor, any shapes, f32) over the ranks in
/// buckets of at most [`BUCKET_VALUES`] values, with `extra` values appended to the last bucket
/// (e.g. counts and loss sums, summed with them); returns the summed gradients in the same order
/// and shapes, and the summed `extra`.
pub fn all_reduce_grads(
    comm: &dyn Communicator,
    grads: &[Tensor],
    extra: &[f32],
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    let device = match grads.first() {
        Some(g) => g.device().clone(),
        None => candle_core::Device::Cpu,
    };
    // Tensors [start, end) form a bucket (at least one tensor, so one larger than the cap
    // travels alone; one empty bucket when there are no gradients, for `extra`).
    let mut buckets: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    while start < grads.len() {
        let (mut end, mut values) = (start, 0);
        while end < grads.len()
            && (end == start || values + grads[end].elem_count() <= BUCKET_VALUES)
        {
            values += grads[end].elem_count();
            end += 1;
        }
        buckets.push(start..end);
        start = end;
    }
    if buckets.is_empty() {
        buckets.push(0..0);
    }
    let mut out: Vec<Tensor> = Vec::with_capacity(grads.len());
    let mut summed_extra = Vec::new();
    for (i, range) in buckets.iter().enumerate() {
        let last = i + 1 == buckets.len();
        let mut parts: Vec<Tensor> = grads[range.clone()]
            .iter()
            .map(|g| g.to_dtype(DType::F32)?.flatten_all())
            .collect::<candle_core::Result<_>>()?;
        if last {
            parts.push(Tensor::from_slice(extra, extra.len(), &device)?);
        }
        // [values of the bucket (+ extra)]
        let flat = Tensor::cat(&parts, 0)?.contiguous()?;
        let summed = comm.all_reduce_sum(&flat)?;
        let mut offset = 0;
        for g in &grads[range.clone()] {
            let n = g.elem_count();
            out.push(summed.narrow(0, offset, n)?.reshape(g.dims())?);
            offset += n;
        }
        if last {
            summed_extra = summed
                .narrow(0, offset, extra.len())?
                .to_device(&candle_core::Device::Cpu)?
                .to_vec1::<f32>()?;
        }
    }
    Ok((out, summed_extra))
}

/// A cheap fingerprint of the trainable weights (the sum of each tensor's values and of their
/// absolute values, in f64): ranks that applied different updates disagree on it.
pub fn weight_checksum(vars: &[(String, Var)]) -> Result<[f64; 2]> {
    let (mut s, mut a) = (0.0f64, 0.0f64);
    for (_, v) in vars {
        let t = v.as_tensor().to_dtype(DType::F64)?;
        s += t.sum_all()?.to_scalar::<f64>()?;
        a += t.abs()?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok([s, a])
}

/// Checks that every rank holds the same weights: gathers each rank's [`weight_checksum`]
/// (each rank fills its own slots, the sum gathers them) and fails on every rank alike when one
/// differs from rank 0's, naming the ranks.
pub fn check_in_sync(comm: &dyn Communicator, vars: &[(String, Var)], step: u64) -> Result<()> {
    let world = comm.world_size();
    let mine = weight_checksum(vars)?;
    let mut slots = vec![0f32; 2 * world];
    // f32 slots: the sums agree exactly between ranks in sync, so their f32 roundings do too.
    slots[2 * comm.rank()] = mine[0] as f32;
    slots[2 * comm.rank() + 1] = mine[1] as f32;
    let t = Tensor::from_vec(slots, 2 * world, &device_of(vars))?;
    let all = comm
        .all_reduce_sum(&t)?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1::<f32>()?;
    let off: Vec<usize> = (1..world)
        .filter(|&r| all[2 * r] != all[0] || all[2 * r + 1] != all[1])
        .collect();
    if !off.is_empty() {
        return Err(AdiffError::Invalid(format!(
            "step {step}: the weights of rank(s) {off:?} differ from rank 0's (checksums {:?} \
             against {:?}): the ranks diverged; resume from the last checkpoint",
            off.iter()
                .map(|&r| (all[2 * r], all[2 * r + 1]))
                .collect::<Vec<_>>(),
            (all[0], all[1])
        )));
    }
    Ok(())
}

fn device_of(vars: &[(String, Var)]) -> candle_core::Device {
    vars.first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(m: &HashMap<&str, &str>) -> Result<Option<Launch>> {
        Launch::from_vars(|k| m.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn shards_are_disjoint_and_cover_every_example() {
        for (n, batch, world) in [(10, 2, 3), (7, 3, 2), (8, 2, 2), (5, 4, 4), (1, 1, 3)] {
            let order: Vec<usize> = (0..n).rev().collect();
            let mut seen = vec![0; n];
            let mut lo = 0;
            while lo < n {
                for r in 0..world {
                    for &i in shard(&order, lo, batch, r, world) {
                        seen[i] += 1;
                    }
                    assert!(shard(&order, lo, batch, r, world).len() <= batch);
                }
                lo += batch * world;
            }
            assert!(
                seen.iter().all(|&c| c == 1),
                "{n} {batch} {world}: {seen:?}"
            );
        }
    }

    #[test]
    fn launch_variables() {
        assert_eq!(vars(&HashMap::new()).unwrap(), None);
        let l = vars(&HashMap::from([
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.local_world_size),
            (3, 8, 1, 2)
        );
        assert_eq!((l.master_addr.as_str(), l.master_port), ("node0", 29500));
        let s = vars(&HashMap::from([
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "4(x2)"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "1234"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.rank, s.world_size, s.local_rank, s.local_world_size),
            (5, 8, 1, 4)
        );
        assert_eq!((s.source, s.master_port), ("SLURM", 1234));
        for (bad, msg) in [
            (vec![("WORLD_SIZE", "2")], "RANK is not"),
            (
                vec![("WORLD_SIZE", "2"), ("RANK", "2")],
                "outside a world of 2",
            ),
            (vec![("WORLD_SIZE", "x"), ("RANK", "0")], "WORLD_SIZE=x"),
            (
                vec![
                    ("WORLD_SIZE", "4"),
                    ("RANK", "0"),
                    ("LOCAL_WORLD_SIZE", "2"),
                ],
                "need MASTER_ADDR",
            ),
            (
                vec![("WORLD_SIZE", "1"), ("RANK", "0"), ("MASTER_PORT", "99999")],
                "MASTER_PORT=99999",
            ),
        ] {
            let e = vars(&bad.into_iter().collect()).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
    }
}

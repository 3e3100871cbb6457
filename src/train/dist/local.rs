//! An in-process [`Communicator`]: the ranks are threads of one process, and a sum is computed
//! exactly, in rank order, on the CPU. It stands in for NCCL in tests, so the trainer's
//! data-parallel path (sharding, bucketed all-reduce, checksums, rank-0-only writes, resume)
//! runs in CI without a GPU. Not a transport: training across processes uses NCCL.
//!
//! Tensors: each collective takes one f32 tensor `[n]` (any shape, same on every rank) and
//! returns their sum, with the same shape, on every rank.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use super::Communicator;
use crate::error::{AdiffError, Result};

/// One collective in progress: each rank's contribution, then the sum.
#[derive(Default)]
struct Round {
    /// Collectives completed so far (each rank's n-th call joins round n).
    generation: u64,
    inputs: Vec<Option<Vec<f32>>>,
    /// The sum of the last completed round, and how many ranks have yet to read it.
    result: Option<Arc<Vec<f32>>>,
    unread: usize,
    /// Set when a rank gave up: every later call fails at once.
    failed: Option<String>,
}

struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<Round>,
    cv: Condvar,
}

/// The ranks of an in-process group: hand one [`LocalComm`] to each thread.
pub struct LocalGroup;

impl LocalGroup {
    /// `world` communicators sharing one group; a collective that waits longer than `timeout`
    /// for the other ranks fails, naming those that did not arrive.
    pub fn ranks(world: usize, timeout: Duration) -> Vec<LocalComm> {
        let shared = Arc::new(Shared {
            world,
            timeout,
            state: Mutex::new(Round {
                inputs: vec![None; world],
                ..Default::default()
            }),
            cv: Condvar::new(),
        });
        (0..world)
            .map(|rank| LocalComm {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

/// One rank of a [`LocalGroup`].
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalComm {
    fn sum(&self, mine: Vec<f32>) -> Result<Vec<f32>> {
        let sh = &*self.shared;
        fn poisoned<T>(_: T) -> AdiffError {
            AdiffError::Invalid("local all-reduce: a rank panicked".into())
        }
        let deadline = Instant::now() + sh.timeout;
        let mut st = sh.state.lock().map_err(poisoned)?;
        // Wait until the previous round's result has been read by every rank.
        while st.result.is_some() && st.failed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = sh.cv.wait_timeout(st, left).map_err(poisoned)?.0;
        }
        if let Some(e) = &st.failed {
            return Err(AdiffError::Invalid(e.clone()));
        }
        let generation = st.generation;
        if st.inputs.iter().flatten().any(|v| v.len() != mine.len()) {
            let e = format!(
                "all-reduce: rank {} sent {} values where another rank sent a different count",
                self.rank,
                mine.len()
            );
            st.failed = Some(e.clone());
            sh.cv.notify_all();
            return Err(AdiffError::Invalid(e));
        }
        st.inputs[self.rank] = Some(mine);
        if st.inputs.iter().all(Option::is_some) {
            // The last rank to arrive sums, in rank order (the same bits every time).
            let inputs: Vec<Vec<f32>> = st.inputs.iter_mut().map(|v| v.take().unwrap()).collect();
            let mut sum = inputs[0].clone();
            for v in &inputs[1..] {
                for (s, x) in sum.iter_mut().zip(v) {
                    *s += x;
                }
            }
            st.result = Some(Arc::new(sum));
            st.unread = sh.world;
            st.generation += 1;
            sh.cv.notify_all();
        }
        loop {
            if let Some(e) = &st.failed {
                return Err(AdiffError::Invalid(e.clone()));
            }
            if st.generation > generation {
                let out = st.result.as_ref().expect("result of a completed round");
                let out = (**out).clone();
                st.unread -= 1;
                if st.unread == 0 {
                    st.result = None;
                    sh.cv.notify_all();
                }
                return Ok(out);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let missing: Vec<usize> =
                    (0..sh.world).filter(|&r| st.inputs[r].is_none()).collect();
                let e = format!(
                    "rank {}: all-reduce timed out after {:.0} s waiting for rank(s) {missing:?} \
                     (a rank died or hangs)",
                    self.rank,
                    sh.timeout.as_secs_f64()
                );
                st.failed = Some(e.clone());
                sh.cv.notify_all();
                return Err(AdiffError::Invalid(e));
            }
            st = sh.cv.wait_timeout(st, left).map_err(poisoned)?.0;
        }
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let mine = t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1::<f32>()?;
        let sum = self.sum(mine)?;
        Ok(Tensor::from_vec(sum, t.dims(), t.device())?)
    }

    fn backend(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_rank_order_on_every_rank() {
        let comms = LocalGroup::ranks(3, Duration::from_secs(10));
        let outs: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut got = vec![];
                        for round in 0..5 {
                            let t = Tensor::new(
                                &[c.rank() as f32, round as f32, 0.5],
                                &candle_core::Device::Cpu,
                            )
                            .unwrap();
                            got.extend(c.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap());
                        }
                        got
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in &outs {
            assert_eq!(o, &outs[0]);
        }
        assert_eq!(&outs[0][..3], &[3.0, 0.0, 1.5]);
        assert_eq!(&outs[0][12..], &[3.0, 12.0, 1.5]);
    }

    #[test]
    fn a_missing_rank_times_out_with_its_number() {
        let comms = LocalGroup::ranks(2, Duration::from_millis(200));
        let t = Tensor::new(&[1f32], &candle_core::Device::Cpu).unwrap();
        let e = comms[0].all_reduce_sum(&t).unwrap_err().to_string();
        assert!(e.contains("waiting for rank(s) [1]"), "{e}");
        // The group has failed: the late rank is told at once.
        let e = comms[1].all_reduce_sum(&t).unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
    }
}

//! The NCCL [`Communicator`] (feature `nccl`): one process per GPU, NCCL's communicator built
//! from the unique id rank 0 hands out at the rendezvous, all-reduce on the device's stream.
//!
//! Tensors: `all_reduce_sum` takes a contiguous f32 CUDA tensor `[n]` (any shape) and returns a
//! new one with the sum over the ranks (NCCL's ring or tree gives every rank the same bits).

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};

use super::{rendezvous, Communicator, Launch};
use crate::error::{AdiffError, Result};

/// A rank of an NCCL group on one CUDA device.
pub struct NcclComm {
    comm: Comm,
    rank: usize,
    world: usize,
    device: Device,
    /// When the collective in progress started (None between collectives), watched by a
    /// thread that ends the process if one outlives the timeout: a dead rank would otherwise
    /// leave the others blocked inside NCCL forever.
    in_flight: Arc<Mutex<Option<Instant>>>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not overlap;
// the trainer makes every call from its one thread, in order.
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Joins the job described by `launch` on `device` (the rank's GPU): rank 0 creates NCCL's
    /// unique id and hands it out over TCP at `MASTER_ADDR:MASTER_PORT`; every rank then builds
    /// its communicator on the device's stream.
    pub fn init(launch: &Launch, device: &Device) -> Result<Self> {
        let timeout = super::timeout_from_env()?;
        let cuda = device.as_cuda_device().map_err(|_| {
            AdiffError::Invalid("data-parallel training over NCCL needs --device cuda".into())
        })?;
        let addr = format!("{}:{}", launch.master_addr, launch.master_port);
        let nccl = |what: &str, e: &dyn std::fmt::Debug| {
            AdiffError::Invalid(format!("rank {}: NCCL {what}: {e:?}", launch.rank))
        };
        let id = if launch.rank == 0 {
            // Bind before creating the id, so a port in use is reported before NCCL starts.
            let bind = format!("0.0.0.0:{}", launch.master_port);
            let listener = TcpListener::bind(&bind).map_err(|e| {
                AdiffError::Invalid(format!(
                    "rank 0: cannot listen for the rendezvous on {bind}: {e} (set MASTER_PORT)"
                ))
            })?;
            let id = Id::new().map_err(|e| nccl("unique id", &e))?;
            let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
            rendezvous::serve(&listener, launch.world_size, &bytes, timeout)?;
            id
        } else {
            let bytes = rendezvous::join(&addr, launch.rank, launch.world_size, timeout)?;
            let internal: [std::ffi::c_char; 128] = bytes
                .iter()
                .map(|&b| b as std::ffi::c_char)
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|_| {
                    AdiffError::Invalid(format!(
                        "rank {}: the rendezvous sent {} bytes, not NCCL's 128-byte id",
                        launch.rank,
                        bytes.len()
                    ))
                })?;
            Id::uninit(internal)
        };
        let comm = Comm::from_rank(cuda.cuda_stream(), launch.rank, launch.world_size, id)
            .map_err(|e| nccl("init", &e))?;
        let in_flight = Arc::new(Mutex::new(None::<Instant>));
        let watched = in_flight.clone();
        let rank = launch.rank;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let started = watched.lock().map(|g| *g).unwrap_or(None);
            if started.is_some_and(|s| s.elapsed() > timeout) {
                eprintln!(
                    "error: rank {rank}: an NCCL all-reduce did not complete within {:.0} s \
                     (another rank died or hangs; ADIFF_DIST_TIMEOUT sets the limit); exiting",
                    timeout.as_secs_f64()
                );
                std::process::exit(1);
            }
        });
        Ok(Self {
            comm,
            rank: launch.rank,
            world: launch.world_size,
            device: device.clone(),
            in_flight,
        })
    }
}

/// NCCL's all-reduce as a candle op: reads the input's device memory, writes a new buffer.
struct AllReduce<'a>(&'a Comm);

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL all-reduce needs a CUDA tensor")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("NCCL all-reduce needs a contiguous tensor")
        };
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        let dev = s.device.clone();
        let mut dst = dev.alloc_zeros::<f32>(end - start)?;
        self.0
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
        if let Ok(mut g) = self.in_flight.lock() {
            *g = Some(Instant::now());
        }
        let out = t.apply_op1_no_bwd(&AllReduce(&self.comm))?;
        // Wait for it here, under the watchdog, rather than at the first read of the result.
        self.device.synchronize()?;
        if let Ok(mut g) = self.in_flight.lock() {
            *g = None;
        }
        Ok(out)
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }
}

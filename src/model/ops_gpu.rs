//! Training ops for GPUs: layer norm, softmax and cross-entropy whose forward is one kernel and
//! whose backward is a few, instead of candle-nn's differentiable compositions (~10 kernels and
//! as many saved `[N, C]` temporaries each; cross-entropy's `log_softmax` + `gather` backward
//! walks the `[N, 50257]` logits a dozen times).
//!
//! - [`layer_norm`]: forward by candle's own CUDA `layernorm` kernel (f32 statistics for
//!   bf16/f16 inputs); backward `dx = rstd (g w - mean(g w) - xhat mean(g w xhat))`,
//!   `dw = sum_rows g xhat`, `db = sum_rows g`, from candle tensor ops in f32.
//! - [`softmax_last_dim`]: forward by candle's CUDA `softmax` kernel; backward
//!   `dx = y (g - sum(g y))` in f32.
//! - [`cross_entropy`]: the mean of `logsumexp(x_r) - x_r[t_r]` over rows `[N, V]` (f32 logits)
//!   as a value, plus a zero-valued op whose backward is the gradient
//!   `(softmax(x) - onehot(t)) / N`: candle's fused softmax kernel and one scatter.
//!
//! Every op also has a CPU forward (the same arithmetic, f32 accumulation), so the backward
//! compositions are tested on the CPU against candle-nn's (`tests` below); on the GPU the
//! forward is candle's kernels, checked by `scripts/gpu-check.sh`. The CPU's own training path
//! keeps the fused kernels of `ops.rs`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

/// Layer norm over the last dimension, differentiable in `x`, `w` and `b` (`[.., C]`, `[C]`,
/// `[C]`, one dtype).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

/// Mean cross-entropy of f32 logits `[N, V]` against `targets` `[N]` (u32), differentiable in
/// the logits.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let targets = targets.to_dtype(DType::U32)?;
    // [N, 1]: log-sum-exp of each row, shifted by its max.
    let x = logits.detach();
    let max = x.max_keepdim(D::Minus1)?;
    let lse = x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .add(&max)?;
    let picked = x.gather(&targets.unsqueeze(1)?, 1)?; // [N, 1]
    let value = (lse - picked)?.sum_all()?.affine(1.0 / n as f64, 0.0)?;
    // The value carries no graph; the zero-valued op carries the gradient.
    let grad_carrier = logits.apply_op1(CrossEntropyGrad { targets })?;
    value + grad_carrier
}

/// The row count and width of a contiguous `[.., C]` layout.
fn rows(l: &Layout) -> Result<(usize, usize)> {
    let c = l.dims().last().copied().unwrap_or(0);
    Ok((l.shape().elem_count() / c.max(1), c))
}

/// The contiguous values of a CPU storage widened to f32 (tests and CPU checks only).
fn cpu_f32(s: &CpuStorage, l: &Layout) -> Result<Vec<f32>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("ops_gpu: contiguous inputs only".into()))?;
    Ok(match s {
        CpuStorage::F32(v) => v[a..b].to_vec(),
        CpuStorage::BF16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::F16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
        _ => candle_core::bail!("ops_gpu: float inputs only"),
    })
}

/// `values` in `dtype` as a CPU storage.
fn cpu_storage(values: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(values),
        DType::BF16 => CpuStorage::BF16(values.into_iter().map(half::bf16::from_f32).collect()),
        DType::F16 => CpuStorage::F16(values.into_iter().map(half::f16::from_f32).collect()),
        d => candle_core::bail!("ops_gpu: unsupported dtype {d:?}"),
    })
}

struct LayerNorm {
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "gpu-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, cpu_f32(s3, l3)?);
        let (_, c) = rows(l1)?;
        let mut y = vec![0f32; x.len()];
        for (out, row) in y.chunks_mut(c).zip(x.chunks(c)) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / c as f64;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / c as f64;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for i in 0..c {
                out[i] = ((f64::from(row[i]) - mean) * rstd) as f32 * w[i] + b[i];
            }
        }
        Ok((cpu_storage(y, s1.dtype())?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{
            CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
        };
        use candle_core::cuda_backend::{kernel_name, kernels, Map3, WrapErr};
        use candle_core::{CudaDevice, WithDType};

        /// candle's `layernorm` kernel (one block per row, f32 statistics), launched as
        /// candle-nn launches it.
        struct K {
            eps: f32,
        }
        impl Map3 for K {
            fn f<T: DeviceRepr + WithDType>(
                &self,
                src: &CudaSlice<T>,
                l: &Layout,
                alpha: &CudaSlice<T>,
                la: &Layout,
                beta: &CudaSlice<T>,
                lb: &Layout,
                dev: &CudaDevice,
            ) -> Result<CudaSlice<T>> {
                fn part<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> Result<CudaView<'a, T>> {
                    match l.contiguous_offsets() {
                        Some((a, b)) => Ok(s.slice(a..b)),
                        None => candle_core::bail!("gpu layer norm: contiguous inputs only"),
                    }
                }
                let (src, alpha, beta) = (part(src, l)?, part(alpha, la)?, part(beta, lb)?);
                let (n_rows, n_cols) = rows(l)?;
                let block = if n_cols < 1024 { 32 } else { 1024 };
                let cfg = LaunchConfig {
                    grid_dim: (n_rows as u32, 1, 1),
                    block_dim: (block, 1, 1),
                    shared_mem_bytes: 0,
                };
                let func =
                    dev.get_or_load_func(&kernel_name::<T>("layernorm"), &kernels::REDUCE)?;
                // SAFETY: every element is written by the kernel.
                let dst = unsafe { dev.alloc::<T>(n_rows * n_cols)? };
                let mut builder = func.builder();
                builder.arg(&src);
                builder.arg(&dst);
                builder.arg(&alpha);
                builder.arg(&beta);
                candle_core::builder_arg!(builder, n_cols as i32, block as i32, self.eps);
                // SAFETY: arguments match the kernel's signature (candle-nn's launch).
                unsafe { builder.launch(cfg) }.w()?;
                Ok(dst)
            }
        }
        let dev = s1.device();
        let slice = K {
            eps: self.eps as f32,
        }
        .map(&s1.slice, l1, &s2.slice, l2, &s3.slice, l3, dev)?;
        Ok((
            candle_core::CudaStorage {
                slice,
                device: dev.clone(),
            },
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.elem_count();
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let (xf, wf, g) = (f(x)?, f(w)?, f(grad)?);
        let mean = xf.mean_keepdim(D::Minus1)?;
        let xc = xf.broadcast_sub(&mean)?;
        let rstd = (xc.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let xhat = xc.broadcast_mul(&rstd)?;
        let gw = g.broadcast_mul(&wf)?;
        let m1 = gw.mean_keepdim(D::Minus1)?;
        let m2 = (&gw * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = gw
            .broadcast_sub(&m1)?
            .sub(&xhat.broadcast_mul(&m2)?)?
            .broadcast_mul(&rstd)?;
        let flat = |t: Tensor| t.reshape(((), c));
        let dw = flat((&g * &xhat)?)?.sum(0)?;
        let db = flat(g)?.sum(0)?;
        Ok((
            Some(dx.to_dtype(x.dtype())?),
            Some(dw.to_dtype(w.dtype())?),
            Some(db.to_dtype(b.dtype())?),
        ))
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "gpu-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l)?;
        let (_, c) = rows(l)?;
        let mut y = vec![0f32; x.len()];
        for (out, row) in y.chunks_mut(c).zip(x.chunks(c)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f64;
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += f64::from(*o);
            }
            out.iter_mut()
                .for_each(|o| *o = (f64::from(*o) / sum) as f32);
        }
        Ok((cpu_storage(y, s.dtype())?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{
            CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
        };
        use candle_core::cuda_backend::{kernel_name, kernels, Map1, WrapErr};
        use candle_core::{CudaDevice, WithDType};

        /// candle's `softmax` kernel (one row per block, f32 accumulation), launched as
        /// candle-nn launches it.
        struct K;
        impl Map1 for K {
            fn f<T: DeviceRepr + WithDType>(
                &self,
                src: &CudaSlice<T>,
                dev: &CudaDevice,
                l: &Layout,
            ) -> Result<CudaSlice<T>> {
                let src = match l.contiguous_offsets() {
                    Some((a, b)) => src.slice(a..b),
                    None => candle_core::bail!("gpu softmax: contiguous input only"),
                };
                let (n_rows, n_cols) = rows(l)?;
                let cfg = LaunchConfig {
                    grid_dim: (n_rows as u32, 1, 1),
                    block_dim: (1, 32, 1),
                    shared_mem_bytes: 0,
                };
                let func = dev.get_or_load_func(&kernel_name::<T>("softmax"), &kernels::REDUCE)?;
                // SAFETY: every element is written by the kernel.
                let dst = unsafe { dev.alloc::<T>(n_rows * n_cols)? };
                let mut builder = func.builder();
                builder.arg(&src);
                builder.arg(&dst);
                candle_core::builder_arg!(builder, n_cols as i32);
                // SAFETY: arguments match the kernel's signature (candle-nn's launch).
                unsafe { builder.launch(cfg) }.w()?;
                Ok(dst)
            }
        }
        let dev = s.device();
        let slice = K.map(&s.slice, dev, l)?;
        Ok((
            candle_core::CudaStorage {
                slice,
                device: dev.clone(),
            },
            l.shape().clone(),
        ))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (y, g) = (res.to_dtype(DType::F32)?, grad.to_dtype(DType::F32)?);
        let dot = (&y * &g)?.sum_keepdim(D::Minus1)?;
        let dx = y.mul(&g.broadcast_sub(&dot)?)?;
        Ok(Some(dx.to_dtype(res.dtype())?))
    }
}

/// A zero-valued scalar whose gradient with respect to `logits` `[N, V]` is the mean
/// cross-entropy's, `(softmax(logits) - onehot(targets)) / N` (see [`cross_entropy`]).
struct CrossEntropyGrad {
    targets: Tensor,
}

impl CustomOp1 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        _l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dev = s.device.clone();
        let zero = dev.alloc_zeros::<f32>(1)?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(zero, dev),
            Shape::from(()),
        ))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let n = logits.dim(0)?;
        // The incoming scalar gradient over N rows, as a [1, 1] factor (stays on the device).
        let scale = grad
            .to_dtype(DType::F32)?
            .reshape((1, 1))?
            .affine(1.0 / n as f64, 0.0)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits.detach().to_dtype(DType::F32)?)?;
        let idx = self.targets.unsqueeze(1)?; // [N, 1]
        let minus_one = Tensor::full(-1f32, (n, 1), logits.device())?;
        let dx = probs
            .scatter_add(&idx, &minus_one, 1)?
            .broadcast_mul(&scale)?;
        Ok(Some(dx.to_dtype(logits.dtype())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 3.0) + (i % 5) as f32 * 0.1)
            .collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Value and all three gradients against candle-nn's differentiable composition (f32).
    #[test]
    fn layer_norm_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let (n, c) = (6, 40);
        let x = Var::from_vec(values(n * c, 0.1), (2, 3, c), &dev)?;
        let w = Var::from_vec(values(c, 0.7), c, &dev)?;
        let b = Var::from_vec(values(c, 1.3), c, &dev)?;
        let up = Tensor::new(values(n * c, 2.0), &dev)?.reshape((2, 3, c))?;
        let ours = layer_norm(&x, &w, &b, 1e-5)?;
        let theirs = candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-5)?;
        assert!(max_diff(&ours, &theirs) < 1e-5);
        let ga = (ours * &up)?.sum_all()?.backward()?;
        let gb = (theirs * &up)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let d = max_diff(ga.get(v).unwrap(), gb.get(v).unwrap());
            assert!(d < 2e-5, "d{name} differs by {d}");
        }
        Ok(())
    }

    /// Softmax value and gradient against candle-nn's composition, in f32 and in bf16
    /// (bf16: within a few bf16 steps, 2^-8 relative).
    #[test]
    fn softmax_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        for (dt, tol) in [(DType::F32, 1e-6), (DType::BF16, 2e-2)] {
            let x = Var::from_tensor(&Tensor::new(values(4 * 33, 0.5), &dev)?.reshape((4, 33))?)?;
            let up = Tensor::new(values(4 * 33, 1.5), &dev)?.reshape((4, 33))?;
            let xd = x.as_tensor().to_dtype(dt)?;
            let ours = softmax_last_dim(&xd)?;
            let theirs = candle_nn::ops::softmax(x.as_tensor(), D::Minus1)?;
            assert!(max_diff(&ours, &theirs) < tol as f32, "{dt:?} value");
            let ga = (ours.to_dtype(DType::F32)? * &up)?.sum_all()?.backward()?;
            let gb = (theirs * &up)?.sum_all()?.backward()?;
            let d = max_diff(ga.get(&x).unwrap(), gb.get(&x).unwrap());
            assert!(d < tol as f32 * 4.0, "{dt:?} gradient differs by {d}");
        }
        Ok(())
    }

    /// Cross-entropy value and gradient (times an upstream factor) against candle-nn's.
    #[test]
    fn cross_entropy_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (5, 37);
        let a = Var::from_vec(values(n * v, 0.3), (n, v), &dev)?;
        let b = Var::from_vec(values(n * v, 0.3), (n, v), &dev)?;
        let targets = Tensor::new(&[3u32, 0, 36, 17, 3], &dev)?;
        let la = cross_entropy(a.as_tensor(), &targets)?;
        let lb = candle_nn::loss::cross_entropy(b.as_tensor(), &targets)?;
        let (va, vb) = (la.to_scalar::<f32>()?, lb.to_scalar::<f32>()?);
        assert!((va - vb).abs() < 1e-5, "{va} vs {vb}");
        let ga = (la * 3.0)?.backward()?;
        let gb = (lb * 3.0)?.backward()?;
        let d = max_diff(ga.get(&a).unwrap(), gb.get(&b).unwrap());
        assert!(d < 1e-6, "gradient differs by {d}");
        Ok(())
    }
}

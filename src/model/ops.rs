//! Layer norm, softmax and GELU that keep gradients when training needs them.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` kernels are fast but have no backward
//! pass. The model calls these wrappers instead: when any input is part of an autograd graph
//! (`track_op`: a trainable `Var` or something computed from one) they use the composition of
//! differentiable ops; otherwise (inference) the fused kernels.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use candle_nn::{LayerNorm, Module};
use rayon::prelude::*;

/// `ln(x)` over the last dimension, differentiable when `x` or the norm's weights are tracked
/// (on the CPU in f32 one fused op with its own backward; elsewhere candle-nn's composition).
pub fn layer_norm(ln: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    let tracked = x.track_op() || ln.weight().track_op() || ln.bias().is_some_and(Tensor::track_op);
    match (tracked, ln.bias()) {
        (true, Some(bias))
            if x.device().is_cpu()
                && [x.dtype(), ln.weight().dtype(), bias.dtype()] == [DType::F32; 3] =>
        {
            let x = x.contiguous()?;
            x.apply_op3(
                &ln.weight().contiguous()?,
                &bias.contiguous()?,
                FusedLayerNorm { eps: ln.eps() },
            )
        }
        (true, Some(bias)) => {
            candle_nn::ops::layer_norm_slow(x, ln.weight(), bias, ln.eps() as f32)
        }
        _ => ln.forward(x),
    }
}

/// Layer norm over the last dimension with a backward pass, for training on the CPU: candle-nn's
/// differentiable layer norm is ~10 elementwise ops (each a full-size temporary, forward and
/// backward), run at every norm of every block.
struct FusedLayerNorm {
    eps: f64,
}

/// The contiguous f32 values of a storage.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("fused layer norm needs contiguous inputs"),
    }
}

/// Mean and 1/sqrt(var + eps) of one row (f64 accumulation, biased variance as torch).
fn row_stats(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

impl CustomOp3 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let (x, w, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let c = l1.dims().last().copied().unwrap_or(0);
        if c == 0 || w.len() != c || b.len() != c {
            candle_core::bail!(
                "fused layer norm: width {c}, weight {}, bias {}",
                w.len(),
                b.len()
            );
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .for_each(|(out, row)| {
                let (mean, rstd) = row_stats(row, self.eps);
                for i in 0..c {
                    out[i] = (row[i] - mean) * rstd * w[i] + b[i];
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // xhat = (x - mean) * rstd, g = dL/dy:
        //   dL/db = sum_rows g,  dL/dw = sum_rows g * xhat,
        //   dL/dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)).
        let c = x.dims().last().copied().unwrap_or(0);
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.flatten_all()?.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; xs.len()];
        // Per-thread partial sums of dw and db, added up at the end.
        let (dw, db) = dx
            .par_chunks_mut(c)
            .zip(xs.par_chunks(c).zip(gs.par_chunks(c)))
            .fold(
                || (vec![0f64; c], vec![0f64; c]),
                |(mut dw, mut db), (dxr, (row, g))| {
                    let (mean, rstd) = row_stats(row, self.eps);
                    let (mut s1, mut s2) = (0f64, 0f64);
                    for i in 0..c {
                        let xhat = (row[i] - mean) * rstd;
                        let gw = g[i] * ws[i];
                        s1 += f64::from(gw);
                        s2 += f64::from(gw * xhat);
                        dw[i] += f64::from(g[i] * xhat);
                        db[i] += f64::from(g[i]);
                    }
                    let (m1, m2) = ((s1 / c as f64) as f32, (s2 / c as f64) as f32);
                    for i in 0..c {
                        let xhat = (row[i] - mean) * rstd;
                        dxr[i] = rstd * (g[i] * ws[i] - m1 - xhat * m2);
                    }
                    (dw, db)
                },
            )
            .reduce(
                || (vec![0f64; c], vec![0f64; c]),
                |(mut a, mut b), (c2, d2)| {
                    a.iter_mut().zip(c2).for_each(|(x, y)| *x += y);
                    b.iter_mut().zip(d2).for_each(|(x, y)| *x += y);
                    (a, b)
                },
            );
        let dev = x.device();
        let to = |v: Vec<f64>| Tensor::from_vec(v.into_iter().map(|x| x as f32).collect(), c, dev);
        Ok((
            Some(Tensor::from_vec(dx, x.dims(), dev)?),
            Some(to(dw)?.reshape(w.dims())?),
            Some(to(db)?.reshape(w.dims())?),
        ))
    }
}

/// GPT-2's `gelu_new` (tanh approximation) elementwise. On the CPU in f32 one multi-threaded op
/// whose backward is one pass: candle's `gelu` runs on one thread and its backward is ~13
/// single-threaded elementwise ops (two of them `powf`), which made the MLP activation a large
/// share of a GPT-2 training step. Forward values are candle's own formula, bit for bit.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(FusedGelu)
    } else {
        x.gelu()
    }
}

/// sqrt(2 / pi), the scale inside `gelu_new`'s tanh.
const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of `gelu_new`.
const GELU_CUBIC: f32 = 0.044_715;
/// Elements per task of the elementwise kernels (large enough to amortise rayon's scheduling).
const ELEMENTWISE_CHUNK: usize = 16 * 1024;

struct FusedGelu;

/// `gelu_new(v)`, written as candle's `Gelu::f32`.
#[inline]
fn gelu_value(v: f32) -> f32 {
    0.5 * v * (1.0 + f32::tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_CUBIC * v * v)))
}

/// `d gelu_new(v) / dv = 0.5 (1 + t) + 0.5 v (1 - t^2) sqrt(2/pi) (1 + 3 c v^2)`, `t` the tanh.
#[inline]
fn gelu_slope(v: f32) -> f32 {
    let t = f32::tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_CUBIC * v * v));
    0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * v * v)
}

impl CustomOp1 for FusedGelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(out, xs)| {
                for (o, &v) in out.iter_mut().zip(xs) {
                    *o = gelu_value(v);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (candle_core::Storage::Cpu(xs), candle_core::Storage::Cpu(gs)) = (&*xs, &*gs) else {
            candle_core::bail!("fused gelu runs on the CPU only");
        };
        let (xv, gv) = (f32_slice(xs, xl)?, f32_slice(gs, gl)?);
        let mut dx = vec![0f32; xv.len()];
        dx.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(xv.par_chunks(ELEMENTWISE_CHUNK).zip(gv.par_chunks(ELEMENTWISE_CHUNK)))
            .for_each(|(out, (xs, gs))| {
                for ((o, &v), &g) in out.iter_mut().zip(xs).zip(gs) {
                    *o = g * gelu_slope(v);
                }
            });
        Ok(Some(Tensor::from_vec(dx, x.dims(), x.device())?))
    }
}

/// Softmax over the last dimension, differentiable when `x` is tracked (on the CPU in f32 one
/// fused op with its own backward; elsewhere candle-nn's composition).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        candle_nn::ops::softmax_last_dim(x)
    } else if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(FusedSoftmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Softmax over the last dimension with a backward pass (`dx = y * (g - sum(g * y))`), reading
/// the saved output instead of re-running the ~6 ops of candle-nn's composition.
struct FusedSoftmax;

impl CustomOp1 for FusedSoftmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let c = l.dims().last().copied().unwrap_or(0);
        let mut y = vec![0f32; x.len()];
        if c > 0 {
            y.par_chunks_mut(c)
                .zip(x.par_chunks(c))
                .for_each(|(out, row)| {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = (v - max).exp();
                        sum += *o;
                    }
                    out.iter_mut().for_each(|o| *o /= sum);
                });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let c = res.dims().last().copied().unwrap_or(0);
        let ys = res.flatten_all()?.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; ys.len()];
        if c > 0 {
            dx.par_chunks_mut(c)
                .zip(ys.par_chunks(c).zip(gs.par_chunks(c)))
                .for_each(|(d, (y, g))| {
                    let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                    for i in 0..c {
                        d[i] = y[i] * (g[i] - dot);
                    }
                });
        }
        Ok(Some(Tensor::from_vec(dx, res.dims(), res.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The fused GELU equals candle's `gelu` bit for bit forward, and its gradient matches a
    /// central finite difference of `gelu_new` computed in f64 (an independent derivative).
    #[test]
    fn fused_gelu_matches_candle_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..50_000).map(|i| ((i as f32) * 0.37).sin() * 6.0).collect();
        let n = vals.len();
        let x = Var::from_vec(vals.clone(), n, &dev)?;
        let fused = gelu(x.as_tensor())?;
        let reference = x.as_tensor().gelu()?;
        let diff = (&fused - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "fused gelu differs from candle's by {diff}");
        let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos()).collect();
        let w = Tensor::from_vec(w.clone(), n, &dev)?;
        let grads = (fused * &w)?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("grad").to_vec1::<f32>()?;
        let ws = w.to_vec1::<f32>()?;
        let f = |v: f64| {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        };
        let h = 1e-5;
        for i in 0..n {
            let v = f64::from(vals[i]);
            let want = (f(v + h) - f(v - h)) / (2.0 * h) * f64::from(ws[i]);
            let got = f64::from(g[i]);
            assert!((got - want).abs() < 2e-6, "x = {v}: gradient {got}, finite difference {want}");
        }
        Ok(())
    }

    /// The differentiable path gives the fused kernels' values and real gradients.
    #[test]
    fn differentiable_paths_match_fused_kernels() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 8, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 8, &dev)?;
        let ln = LayerNorm::new(w, b, 1e-5);
        let fused = layer_norm(&ln, &x)?;
        let xv = Var::from_tensor(&x)?;
        let slow = layer_norm(&ln, xv.as_tensor())?;
        let diff = (fused - &slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "layer norm paths differ by {diff}");
        let grads = slow.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(xv.as_tensor()).is_some());

        // The fused training op against candle-nn's composition: value and all three gradients.
        let (wv, bv) = (
            Var::from_tensor(ln.weight())?,
            Var::from_tensor(ln.bias().unwrap())?,
        );
        let ln_v = LayerNorm::new(wv.as_tensor().clone(), bv.as_tensor().clone(), 1e-5);
        let ours = layer_norm(&ln_v, xv.as_tensor())?;
        let reference =
            candle_nn::ops::layer_norm_slow(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-5)?;
        let diff = (&ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "fused layer norm value differs by {diff}");
        let up = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?;
        let ga = (ours * &up)?.sum_all()?.backward()?;
        let gb = (reference * &up)?.sum_all()?.backward()?;
        for v in [&xv, &wv, &bv] {
            let (a, b) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "fused layer norm gradient differs by {diff}");
        }

        let s_fused = softmax_last_dim(&x)?;
        let s_slow = softmax_last_dim(xv.as_tensor())?;
        let diff = (s_fused - &s_slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "softmax paths differ by {diff}");
        // The fused training softmax against candle-nn's composition: value and gradient.
        let s_ref = candle_nn::ops::softmax(xv.as_tensor(), D::Minus1)?;
        let diff = (&s_slow - &s_ref)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "fused softmax differs by {diff}");
        let up = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?;
        let ga = (s_slow * &up)?.sum_all()?.backward()?;
        let gb = (s_ref * &up)?.sum_all()?.backward()?;
        let (a, b) = (
            ga.get(xv.as_tensor()).unwrap(),
            gb.get(xv.as_tensor()).unwrap(),
        );
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "fused softmax gradient differs by {diff}");
        let _ = DType::F32;
        Ok(())
    }
}

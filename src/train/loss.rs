//! Mean next-token cross-entropy over GPT-2's 50257-way vocabulary, fused on the CPU.
//!
//! candle-nn's `cross_entropy` is `log_softmax` + `gather` built from a dozen elementwise ops,
//! each writing (and, backward, reading) a fresh `[N, V]` tensor: for a batch of 16 answers
//! that is ~50 MB per op, and those passes dominated a training step. The fused op reads the
//! logits once forward (log-sum-exp per row) and writes the gradient once backward
//! (`(softmax - one_hot) / N`). GPUs use `model::ops_gpu::cross_entropy`.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{AdiffError, Result};

/// Mean over rows of `-log softmax(logits[r])[targets[r]]`; `logits` `[N, V]` f32, `targets`
/// `[N]` u32. Differentiable in `logits`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if targets.dims1()? != n {
        return Err(AdiffError::Invalid(format!(
            "cross-entropy: {n} logit rows but {} targets",
            targets.dims1()?
        )));
    }
    if !logits.device().is_cpu() || logits.dtype() != DType::F32 {
        // GPUs: the value from a few kernels, the gradient from one softmax and one scatter.
        return Ok(crate::model::ops_gpu::cross_entropy(
            &logits.to_dtype(DType::F32)?,
            targets,
        )?);
    }
    let targets = targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    if let Some(t) = targets.iter().find(|&&t| t as usize >= v) {
        return Err(AdiffError::Invalid(format!(
            "cross-entropy: target {t} outside the {v}-token vocabulary"
        )));
    }
    Ok(logits
        .contiguous()?
        .apply_op1(FusedCrossEntropy { targets })?)
}

struct FusedCrossEntropy {
    targets: Vec<u32>,
}

/// The `[N, V]` values of a contiguous f32 storage (the op is applied to contiguous logits).
fn rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let (n, v) = layout.shape().dims2()?;
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok((&data[a..b], n, v)),
        None => candle_core::bail!("fused cross-entropy needs contiguous logits"),
    }
}

/// `(max, log-sum-exp)` of one row, in f64 accumulation for the sum.
fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from((x - max).exp())).sum();
    (max, max + sum.ln() as f32)
}

impl CustomOp1 for FusedCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (data, n, v) = rows(storage, layout)?;
        if n != self.targets.len() {
            candle_core::bail!(
                "fused cross-entropy: {n} rows, {} targets",
                self.targets.len()
            );
        }
        let total: f64 = data
            .par_chunks_exact(v)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| f64::from(log_sum_exp(row).1 - row[t as usize]))
            .sum();
        let mean = if n == 0 {
            f32::NAN
        } else {
            (total / n as f64) as f32
        };
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // d mean / d logits[r, j] = (softmax(logits[r])[j] - [j == t_r]) / N, times the
        // incoming scalar gradient.
        let (n, v) = arg.dims2()?;
        let scale = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()? / n as f32;
        let (storage, layout) = arg.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("fused cross-entropy runs on the CPU only");
        };
        let (data, _, _) = rows(cpu, layout)?;
        let mut grad = vec![0f32; n * v];
        data.par_chunks_exact(v)
            .zip(grad.par_chunks_exact_mut(v))
            .zip(self.targets.par_iter())
            .for_each(|((row, out), &t)| {
                let (_, lse) = log_sum_exp(row);
                for (g, &x) in out.iter_mut().zip(row) {
                    *g = (x - lse).exp() * scale;
                }
                out[t as usize] -= scale;
            });
        drop(storage);
        Ok(Some(Tensor::from_vec(grad, (n, v), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused op and candle-nn's composition agree in value and gradient.
    #[test]
    fn matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (5usize, 37usize);
        let vals: Vec<f32> = (0..n * v)
            .map(|i| ((i as f32 * 0.7).sin() * 4.0) + (i % 3) as f32)
            .collect();
        let targets = Tensor::new(&[3u32, 0, 36, 17, 3], &dev)?;
        let a = Var::from_vec(vals.clone(), (n, v), &dev)?;
        let b = Var::from_vec(vals, (n, v), &dev)?;
        let la = cross_entropy(a.as_tensor(), &targets)?;
        let lb = candle_nn::loss::cross_entropy(b.as_tensor(), &targets)?;
        let (la_v, lb_v) = (la.to_scalar::<f32>()?, lb.to_scalar::<f32>()?);
        assert!((la_v - lb_v).abs() < 1e-5, "{la_v} vs {lb_v}");
        let ga = (la * 2.0)?.backward()?;
        let gb = (lb * 2.0)?.backward()?;
        let ga = ga.get(&a).expect("grad").flatten_all()?.to_vec1::<f32>()?;
        let gb = gb.get(&b).expect("grad").flatten_all()?.to_vec1::<f32>()?;
        let worst = ga
            .iter()
            .zip(&gb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "gradient differs by {worst}");
        Ok(())
    }
}

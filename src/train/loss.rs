//! Mean next-token cross-entropy over GPT-2's 50257-way vocabulary, fused on the CPU.
//!
//! candle-nn's `cross_entropy` is `log_softmax` + `gather` built from a dozen elementwise ops,
//! each writing (and, backward, reading) a fresh `[N, V]` tensor: for a batch of 16 answers
//! that is ~50 MB per op, and those passes dominated a training step. The fused op reads the
//! logits once forward (log-sum-exp per row) and writes the gradient once backward
//! (`(softmax - one_hot) / N`). GPUs use `model::ops_gpu::cross_entropy`.
//!
//! [`head_loss`] goes one step further on the CPU: GPT-2's head (`hidden [N, C]` times the
//! `[V, C]` table) and the loss in one op that never holds the `[N, V]` logits. It runs over
//! column chunks of the vocabulary `[N, Vc]` small enough to stay in cache: forward, each chunk's
//! row maxima and exp-sums (merged into each row's log-sum-exp); backward, each chunk's logits
//! again, turned in place into `(softmax - one_hot) * g / N`, then `dW` rows `[Vc, C]` and a
//! partial `dX` `[N, C]`. The `[N, V]` tensors (50 MB for a batch of 16 answers) were written,
//! read twice and freed every step, and that memory traffic made the loss the largest part of
//! a demo-sized training step (profile in docs/performance.md).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::OnceLock;

use crate::model::gpt2::Gpt2;
use crate::model::ops::{exp_nonpositive, matmul_into, Mat};

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
    Ok(logits.contiguous()?.apply_op1(FusedCrossEntropy {
        targets,
        lse: OnceLock::new(),
    })?)
}

/// Widest hidden size for which the fused head + loss is used. It computes the logits twice
/// (forward, then again in the backward) to save their memory traffic, which pays while the
/// product is cheap: measured with `benches/head_loss.rs` (2-core Xeon, docs/performance.md),
/// 1.6-1.7x faster at C 64 (the demo), 1.0-1.4x at 128-256, 0.8-0.9x at 384-768 (GPT-2).
pub const FUSED_HEAD_MAX_WIDTH: usize = 256;

/// Mean next-token cross-entropy of GPT-2's head over `hidden` `[N, C]` against `targets`
/// `[N]`: fused ([`head_cross_entropy`]) when the head is a plain f32 table on the CPU at most
/// [`FUSED_HEAD_MAX_WIDTH`] wide, else the logits `[N, V]` and [`cross_entropy`].
pub fn head_loss(gpt: &Gpt2, hidden: &Tensor, targets: &Tensor) -> Result<Tensor> {
    match gpt.head_weight_f32() {
        Some(w)
            if hidden.device().is_cpu()
                && hidden.dtype() == DType::F32
                && hidden.dim(1)? <= FUSED_HEAD_MAX_WIDTH =>
        {
            head_cross_entropy(hidden, w, targets)
        }
        _ => {
            // [1, N, C] -> [N, V]
            let logits = gpt.logits(&hidden.unsqueeze(0)?)?.squeeze(0)?;
            cross_entropy(&logits, targets)
        }
    }
}

/// Mean over rows of `-log softmax(hidden[r] weight^T)[targets[r]]` without the `[N, V]`
/// logits: `hidden` `[N, C]`, `weight` `[V, C]`, both f32 on the CPU; differentiable in both.
/// Equal to `cross_entropy(hidden.matmul(weight.t()), targets)` up to f32 rounding.
pub fn head_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, c) = hidden.dims2()?;
    let (v, cw) = weight.dims2()?;
    if cw != c {
        return Err(AdiffError::Invalid(format!(
            "head cross-entropy: hidden [{n}, {c}] against a [{v}, {cw}] head"
        )));
    }
    if targets.dims1()? != n {
        return Err(AdiffError::Invalid(format!(
            "head cross-entropy: {n} hidden rows but {} targets",
            targets.dims1()?
        )));
    }
    let targets = targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    if let Some(t) = targets.iter().find(|&&t| t as usize >= v) {
        return Err(AdiffError::Invalid(format!(
            "head cross-entropy: target {t} outside the {v}-token vocabulary"
        )));
    }
    let op = FusedHeadCrossEntropy {
        targets,
        chunk: head_chunk(n),
        hidden_grad: hidden.track_op(),
        weight_grad: weight.track_op(),
        lse: OnceLock::new(),
    };
    Ok(hidden.contiguous()?.apply_op2(&weight.contiguous()?, op)?)
}

/// Logit values per vocabulary chunk (256K f32 = 1 MB, within a core's L2 beside the chunk's
/// weight rows).
const HEAD_CHUNK_VALUES: usize = 1 << 18;
/// Fewest and most vocabulary columns per chunk.
const HEAD_CHUNK_COLUMNS: (usize, usize) = (256, 4096);

/// Vocabulary columns per chunk for `n` rows.
fn head_chunk(n: usize) -> usize {
    (HEAD_CHUNK_VALUES / n.max(1)).clamp(HEAD_CHUNK_COLUMNS.0, HEAD_CHUNK_COLUMNS.1)
}

struct FusedHeadCrossEntropy {
    targets: Vec<u32>,
    /// Vocabulary columns per chunk (fixed per op, so the backward recomputes the forward's
    /// logits bit for bit).
    chunk: usize,
    hidden_grad: bool,
    weight_grad: bool,
    /// Each row's log-sum-exp, kept by the forward for the backward.
    lse: OnceLock<Vec<f32>>,
}

/// Chunk `k`'s logits `[N, Vc]` = `hidden [N, C]` times the chunk's rows of `weight`,
/// transposed; returns the chunk's first column and width.
fn chunk_logits(
    hidden: &[f32],
    weight: &[f32],
    (n, c, v): (usize, usize, usize),
    chunk: usize,
    k: usize,
    out: &mut Vec<f32>,
) -> candle_core::Result<(usize, usize)> {
    let j0 = k * chunk;
    let vc = chunk.min(v - j0);
    out.resize(n * vc, 0.0);
    // weight rows j0..j0+vc [Vc, C], read transposed as [C, Vc].
    let w = Mat::new(&weight[j0 * c..(j0 + vc) * c], (vc, c), (c, 1));
    matmul_into(out, Mat::new(hidden, (n, c), (c, 1)), w.t(), 1.0)?;
    Ok((j0, vc))
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused cross-entropy needs contiguous inputs"),
    }
}

impl CustomOp2 for FusedHeadCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-head-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = l1.shape().dims2()?;
        let (v, _) = l2.shape().dims2()?;
        let (hidden, weight) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        if n == 0 {
            return Ok((CpuStorage::F32(vec![f32::NAN]), Shape::from(())));
        }
        let chunks = v.div_ceil(self.chunk);
        // Per chunk, per row: (chunk max, sum of exp(logit - chunk max), the target's logit
        // when the target falls in the chunk).
        let stats: Vec<Vec<(f32, f64, Option<f32>)>> = (0..chunks)
            .into_par_iter()
            .map_init(Vec::new, |buf, k| -> candle_core::Result<_> {
                let (j0, vc) = chunk_logits(hidden, weight, (n, c, v), self.chunk, k, buf)?;
                Ok(buf
                    .chunks_exact(vc)
                    .zip(&self.targets)
                    .map(|(row, &t)| {
                        let mut st = [0f32; 2];
                        row_log_sum_exp(row, &mut st);
                        let [max, lse] = st;
                        let t = (t as usize).checked_sub(j0).filter(|&j| j < vc);
                        (max, f64::from(lse - max).exp(), t.map(|j| row[j]))
                    })
                    .collect())
            })
            .collect::<candle_core::Result<_>>()?;
        let mut lse = Vec::with_capacity(n);
        let mut total = 0f64;
        for r in 0..n {
            let max = stats
                .iter()
                .map(|s| s[r].0)
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = stats
                .iter()
                .map(|s| s[r].1 * f64::from(s[r].0 - max).exp())
                .sum();
            let l = max + sum.ln() as f32;
            let target = stats.iter().find_map(|s| s[r].2).unwrap_or(f32::NAN);
            lse.push(l);
            total += f64::from(l - target);
        }
        let _ = self.lse.set(lse);
        Ok((
            CpuStorage::F32(vec![(total / n as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        hidden_t: &Tensor,
        weight_t: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c) = hidden_t.dims2()?;
        let (v, _) = weight_t.dims2()?;
        if n == 0 || !(self.hidden_grad || self.weight_grad) {
            return Ok((None, None));
        }
        let scale = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()? / n as f32;
        let Some(lse) = self.lse.get() else {
            candle_core::bail!("fused head cross-entropy: backward before forward");
        };
        let (hs, hl) = hidden_t.storage_and_layout();
        let (ws, wl) = weight_t.storage_and_layout();
        let (candle_core::Storage::Cpu(hs), candle_core::Storage::Cpu(ws)) = (&*hs, &*ws) else {
            candle_core::bail!("fused head cross-entropy runs on the CPU only");
        };
        let (hidden, weight) = (f32_slice(hs, hl)?, f32_slice(ws, wl)?);
        let chunks = v.div_ceil(self.chunk);
        let mut d_weight = vec![0f32; if self.weight_grad { v * c } else { 0 }];
        let mut d_hidden_parts = vec![0f32; if self.hidden_grad { chunks * n * c } else { 0 }];
        // Chunk k owns dW rows k*Vc.. and its own partial dX [N, C]; the partials are summed
        // below in chunk order, so the result does not depend on the thread count.
        let dw_parts: Vec<&mut [f32]> = if self.weight_grad {
            d_weight.chunks_mut(self.chunk * c).collect()
        } else {
            (0..chunks).map(|_| <&mut [f32]>::default()).collect()
        };
        let dx_parts: Vec<&mut [f32]> = if self.hidden_grad {
            d_hidden_parts.chunks_mut(n * c).collect()
        } else {
            (0..chunks).map(|_| <&mut [f32]>::default()).collect()
        };
        dw_parts
            .into_par_iter()
            .zip(dx_parts)
            .enumerate()
            .try_for_each_init(Vec::new, |buf, (k, (dw, dx))| -> candle_core::Result<()> {
                let (j0, vc) = chunk_logits(hidden, weight, (n, c, v), self.chunk, k, buf)?;
                for ((row, &t), &l) in buf.chunks_exact_mut(vc).zip(&self.targets).zip(lse) {
                    scaled_softmax_in_place(row, l, scale);
                    if let Some(j) = (t as usize).checked_sub(j0).filter(|&j| j < vc) {
                        row[j] -= scale;
                    }
                }
                let g = Mat::new(buf, (n, vc), (vc, 1));
                if self.weight_grad {
                    // dW rows [Vc, C] = g^T [Vc, N] hidden [N, C]
                    matmul_into(dw, g.t(), Mat::new(hidden, (n, c), (c, 1)), 1.0)?;
                }
                if self.hidden_grad {
                    // partial dX [N, C] = g [N, Vc] W rows [Vc, C]
                    let w = Mat::new(&weight[j0 * c..(j0 + vc) * c], (vc, c), (c, 1));
                    matmul_into(dx, g, w, 1.0)?;
                }
                Ok(())
            })?;
        let device = hidden_t.device();
        let d_hidden = if self.hidden_grad {
            let mut sum = vec![0f32; n * c];
            for part in d_hidden_parts.chunks_exact(n * c) {
                sum.iter_mut().zip(part).for_each(|(s, &p)| *s += p);
            }
            Some(Tensor::from_vec(sum, (n, c), device)?)
        } else {
            None
        };
        let d_weight = if self.weight_grad {
            Some(Tensor::from_vec(d_weight, (v, c), device)?)
        } else {
            None
        };
        Ok((d_hidden, d_weight))
    }
}

struct FusedCrossEntropy {
    targets: Vec<u32>,
    /// Each row's log-sum-exp, kept by the forward for the backward (the same op object).
    lse: OnceLock<Vec<f32>>,
}

/// The `[N, V]` values of a contiguous f32 storage (the op is applied to contiguous logits).
fn rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let (n, v) = layout.shape().dims2()?;
    Ok((f32_slice(storage, layout)?, n, v))
}

/// f32 lanes of the vectorised row loops (one AVX-512 register).
const LANES: usize = 16;
/// Elements summed in f32 lanes before their partial sum joins the row's f64 total, so that
/// a 50257-wide row sums as accurately as an f64 loop would (to ~1e-7 relative).
const SUM_BLOCK: usize = 1024;

crate::simd::widest_simd! {
    /// `stats = [max(row), log(sum(exp(row)))]`, with the exponentials of Cephes' vectorisable
    /// `expf` (within 1e-7 relative; libm's scalar `expf` made this half of a demo stage-3 step).
    fn row_log_sum_exp(row: &[f32], stats: &mut [f32; 2]) {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for (m, &x) in lanes.iter_mut().zip(c) {
                *m = m.max(x);
            }
        }
        let max = lanes.iter().chain(rest).copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f64;
        for block in row.chunks(SUM_BLOCK) {
            let mut sums = [0f32; LANES];
            let chunks = block.chunks_exact(LANES);
            let rest = chunks.remainder();
            for c in chunks {
                for (s, &x) in sums.iter_mut().zip(c) {
                    *s += exp_nonpositive(x - max);
                }
            }
            let tail: f32 = rest.iter().map(|&x| exp_nonpositive(x - max)).sum();
            total += f64::from(sums.iter().sum::<f32>() + tail);
        }
        *stats = [max, max + total.ln() as f32];
    }
}

crate::simd::widest_simd! {
    /// `out[j] = exp(row[j] - lse) * scale`: one row of the scaled softmax.
    fn scaled_softmax(row: &[f32], lse: f32, scale: f32, out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o = exp_nonpositive(x - lse) * scale;
        }
    }
}

crate::simd::widest_simd! {
    /// `row[j] = exp(row[j] - lse) * scale`.
    fn scaled_softmax_in_place(row: &mut [f32], lse: f32, scale: f32) {
        for x in row.iter_mut() {
            *x = exp_nonpositive(*x - lse) * scale;
        }
    }
}

/// log-sum-exp of one row.
fn log_sum_exp(row: &[f32]) -> f32 {
    let mut stats = [0f32; 2];
    row_log_sum_exp(row, &mut stats);
    stats[1]
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
        let lse: Vec<f32> = data.par_chunks_exact(v).map(log_sum_exp).collect();
        let total: f64 = data
            .chunks_exact(v)
            .zip(&lse)
            .zip(&self.targets)
            .map(|((row, &l), &t)| f64::from(l - row[t as usize]))
            .sum();
        // A second forward of the same op object would see the same logits.
        let _ = self.lse.set(lse);
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
        let lse = match self.lse.get() {
            Some(lse) if lse.len() == n => lse.clone(),
            _ => data.par_chunks_exact(v).map(log_sum_exp).collect(),
        };
        let mut grad = vec![0f32; n * v];
        data.par_chunks_exact(v)
            .zip(grad.par_chunks_exact_mut(v))
            .zip(self.targets.par_iter().zip(&lse))
            .for_each(|((row, out), (&t, &lse))| {
                scaled_softmax(row, lse, scale, out);
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

    /// On GPT-2-wide rows (every lane, block and remainder path of the vectorised loops), the
    /// loss and gradient match an f64 evaluation with libm's `exp`: loss within 1e-6 relative,
    /// each gradient element within 1e-5 relative (the f32 rounding of `x - lse` for logits
    /// of ~50 alone is ~3e-6) plus 1e-12.
    #[test]
    fn wide_rows_match_f64() -> Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (6usize, 50257usize);
        let vals: Vec<f32> = (0..n * v)
            .map(|i| {
                (i as f32 * 0.37).sin() * 6.0 + ((i * 7) % 11) as f32 * 0.3
                    - 40.0 * (i % v == 5) as i32 as f32
            })
            .collect();
        let t: Vec<u32> = vec![0, 5, 50256, 1024, 17, 31337];
        let targets = Tensor::new(t.as_slice(), &dev)?;
        let x = Var::from_vec(vals.clone(), (n, v), &dev)?;
        let loss = cross_entropy(x.as_tensor(), &targets)?;
        let grads = (&loss * 3.0)?.backward()?;
        let got = grads
            .get(&x)
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want_loss = 0f64;
        let mut want = vec![0f64; n * v];
        for (r, row) in vals.chunks_exact(v).enumerate() {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
            let lse = max + sum.ln();
            want_loss += lse - row[t[r] as usize] as f64;
            for (j, &x) in row.iter().enumerate() {
                want[r * v + j] =
                    3.0 * ((x as f64 - lse).exp() - (j == t[r] as usize) as i32 as f64) / n as f64;
            }
        }
        want_loss /= n as f64;
        let l = f64::from(loss.to_scalar::<f32>()?);
        assert!(
            (l - want_loss).abs() <= 1e-6 * want_loss.abs(),
            "{l} vs {want_loss}"
        );
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-12,
                "gradient [{}, {}]: {g} vs {w}",
                i / v,
                i % v
            );
        }
        Ok(())
    }

    /// Loss and gradients (hidden and weight) of the fused head + loss against the unfused
    /// path (`matmul` then [`cross_entropy`]) on a vocabulary of several uneven chunks;
    /// tolerances 1e-5 relative (loss) and 1e-5 of each gradient's largest value (the two sum
    /// the products in different orders). And the same bits on one thread as on four.
    #[test]
    fn fused_head_matches_unfused() -> Result<()> {
        let dev = Device::Cpu;
        let (n, c, v) = (300usize, 24usize, 3001usize);
        assert!(
            v.div_ceil(head_chunk(n)) >= 3,
            "several chunks, the last one short"
        );
        let wave = |len: usize, a: f32, b: f32| -> Vec<f32> {
            (0..len).map(|i| (i as f32 * a).sin() * b).collect()
        };
        let targets: Vec<u32> = (0..n).map(|r| ((r * 977) % v) as u32).collect();
        let targets = Tensor::new(targets.as_slice(), &dev)?;
        let run = |fused: bool| -> Result<(f32, Vec<f32>, Vec<f32>)> {
            let h = Var::from_vec(wave(n * c, 0.31, 1.5), (n, c), &dev)?;
            let w = Var::from_vec(wave(v * c, 0.17, 0.8), (v, c), &dev)?;
            let loss = if fused {
                head_cross_entropy(h.as_tensor(), w.as_tensor(), &targets)?
            } else {
                cross_entropy(&h.as_tensor().matmul(&w.as_tensor().t()?)?, &targets)?
            };
            let g = (&loss * 1.5)?.backward()?;
            let flat = |x: &Var| -> Result<Vec<f32>> {
                Ok(g.get(x).expect("grad").flatten_all()?.to_vec1::<f32>()?)
            };
            Ok((loss.to_scalar::<f32>()?, flat(&h)?, flat(&w)?))
        };
        let (lf, hf, wf) = run(true)?;
        let (lu, hu, wu) = run(false)?;
        assert!((lf - lu).abs() <= 1e-5 * lu.abs(), "loss {lf} vs {lu}");
        for (name, a, b) in [("hidden", &hf, &hu), ("weight", &wf, &wu)] {
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "{name} gradient off by {worst} (largest {scale})"
            );
        }
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .expect("pool");
        let a = one.install(|| run(true))?;
        let b = four.install(|| run(true))?;
        assert!(a == b, "the fused op depends on the thread count");
        assert!(a == (lf, hf, wf));
        Ok(())
    }

    /// A frozen head (stage 2) gets no gradient, and the hidden gradient is unchanged.
    #[test]
    fn fused_head_frozen_weight() -> Result<()> {
        let dev = Device::Cpu;
        let (n, c, v) = (7usize, 8usize, 700usize);
        let h = Var::from_vec((0..n * c).map(|i| (i as f32).cos()).collect(), (n, c), &dev)?;
        let w = Tensor::from_vec(
            (0..v * c)
                .map(|i| (i as f32 * 0.3).sin())
                .collect::<Vec<f32>>(),
            (v, c),
            &dev,
        )?;
        let targets = Tensor::new(&[0u32, 1, 699, 350, 5, 6, 7], &dev)?;
        let fused = head_cross_entropy(h.as_tensor(), &w, &targets)?;
        let plain = cross_entropy(&h.as_tensor().matmul(&w.t()?)?, &targets)?;
        let gf = fused.backward()?;
        let gp = plain.backward()?;
        assert!(gf.get(&w).is_none());
        let a = gf.get(&h).expect("grad").flatten_all()?.to_vec1::<f32>()?;
        let b = gp.get(&h).expect("grad").flatten_all()?.to_vec1::<f32>()?;
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "hidden gradient off by {worst}");
        Ok(())
    }
}

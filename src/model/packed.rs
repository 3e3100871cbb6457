//! Weight formats of GPT-2's projections and their CPU kernels: the fast path apart from the
//! readable model in `gpt2.rs` (as llm.c keeps its fast kernels apart from `train_gpt2.c`).
//!
//! A [`Proj`] is one dense projection `y = x W^T + b` (`x` `[M, in]`, `W` `[out, in]`, `y`
//! `[M, out]`) held as f32 (candle's gemm, or dot products over weight rows for M <= 4 rows), f16
//! or int8 rows (this file's kernels), ggml Q8_0 (candle's quantized matmul), or a trainable
//! `[in, out]` Conv1D weight. [`attend_one`] is one decoding step of attention over the KV cache
//! `[B, H, capacity, D]` straight from its storage.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::{AdiffError, Result};
use crate::model::ops;

/// How the matmul weights (attention, MLP, lm_head) are held. Embeddings, biases and layer norms
/// stay f32 in every format, and so do activations except inside candle's Q8_0 matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Exact: the checkpoint's f32 values (candle's gemm).
    F32,
    /// f16 weights, f32 activations (this module's kernel): half the bytes per step.
    F16,
    /// int8 weights with one f32 scale per 32 values, f32 activations (this module's kernel):
    /// about a quarter of the bytes per step. Input widths must be multiples of 32.
    I8,
    /// ggml Q8_0 through candle's quantized matmul (activations quantized to 8 bits too).
    /// Input widths must be multiples of 32.
    Q8_0,
}

/// Activation rows up to which a projection runs as dot products over weight rows (each weight
/// read once, straight from memory); beyond it candle's gemm, which packs and blocks, is faster.
const MATVEC_MAX_ROWS: usize = 4;

/// A dense projection `y = x W^T + b` with `W` `[out, in]` in one of the [`WeightFormat`]s.
#[derive(Debug, Clone)]
pub(crate) enum Proj {
    /// `wt` is `[out, in]`, contiguous (a tied lm_head shares the storage of `wte`).
    F32 {
        wt: Tensor,
        b: Option<Tensor>,
        b_vec: Option<Vec<f32>>,
        /// `[in, out]` contiguous copy of a frozen `wt`, made at the first training forward:
        /// gemm runs `x W` up to 1.5x faster than `x W^T` from `[out, in]` at GPT-2's MLP
        /// shapes (measured), and inference never pays for the copy.
        w_in_out: std::sync::OnceLock<Tensor>,
    },
    /// Rows in f16 or int8, with the bias as a plain vector.
    Packed {
        w: kernels::Packed,
        b: Option<Tensor>,
        b_vec: Option<Vec<f32>>,
    },
    /// Quantized `[out, in]` weight.
    Quant { w: QMatMul, b: Option<Tensor> },
    /// A trainable Conv1D weight `[in, out]` used as it is (no derived copy that an optimizer
    /// step would leave stale): `y = x W + b`.
    Trainable { w_in_out: Tensor, b: Option<Tensor> },
}

impl Proj {
    /// Builds from an `[out, in]` f32 weight.
    pub(crate) fn new(w_out_in: Tensor, b: Option<Tensor>, format: WeightFormat) -> Result<Self> {
        let (d_out, d_in) = w_out_in.dims2()?;
        let needs_blocks = matches!(format, WeightFormat::I8 | WeightFormat::Q8_0);
        if needs_blocks && !d_in.is_multiple_of(kernels::I8_BLOCK) {
            return Err(AdiffError::Invalid(format!(
                "{format:?} weights need input widths divisible by {}, got {d_in}",
                kernels::I8_BLOCK
            )));
        }
        let rows = || -> Result<Vec<f32>> { Ok(w_out_in.flatten_all()?.to_vec1::<f32>()?) };
        let b_vec = match &b {
            Some(b) => Some(b.to_vec1::<f32>()?),
            None => None,
        };
        Ok(match format {
            WeightFormat::F32 => Proj::F32 {
                w_in_out: std::sync::OnceLock::new(),
                wt: w_out_in.contiguous()?,
                b,
                b_vec,
            },
            WeightFormat::F16 => Proj::Packed {
                w: kernels::Packed::f16(&rows()?, d_out, d_in),
                b,
                b_vec,
            },
            WeightFormat::I8 => Proj::Packed {
                w: kernels::Packed::i8(&rows()?, d_out, d_in),
                b,
                b_vec,
            },
            WeightFormat::Q8_0 => {
                let q = QTensor::quantize(&w_out_in.contiguous()?, GgmlDType::Q8_0)?;
                Proj::Quant {
                    w: QMatMul::from_qtensor(q)?,
                    b,
                }
            }
        })
    }

    /// `[out, in]` f32 weight (dequantized if needed), for re-packing.
    pub(crate) fn weight_out_in(&self) -> Result<Tensor> {
        Ok(match self {
            Proj::F32 { wt, .. } => wt.clone(),
            Proj::Trainable { w_in_out, .. } => w_in_out.t()?.contiguous()?,
            Proj::Packed { w, .. } => Tensor::from_vec(w.to_f32(), (w.n, w.k), &Device::Cpu)?,
            Proj::Quant { w, .. } => match w {
                QMatMul::QTensor(q) => q.dequantize(&Device::Cpu)?,
                QMatMul::Tensor(t) => t.clone(),
                QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
            },
        })
    }

    pub(crate) fn bias(&self) -> Option<&Tensor> {
        match self {
            Proj::F32 { b, .. }
            | Proj::Packed { b, .. }
            | Proj::Quant { b, .. }
            | Proj::Trainable { b, .. } => b.as_ref(),
        }
    }

    /// x: [M, in] -> [M, out]
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (m, _) = x.dims2()?;
        let y = match self {
            // [M, in] x [in, out] + b; the weight's gradient comes in its own layout.
            Proj::Trainable { w_in_out, b } => {
                return Ok(ops::linear(
                    x,
                    w_in_out,
                    b.as_ref(),
                    ops::WeightLayout::InOut,
                )?);
            }
            // Training (tracked input or weight, e.g. a trainable tied lm_head): gradients only
            // for what is tracked, so a frozen weight never gets one.
            Proj::F32 { wt, b, .. } if wt.track_op() => {
                return Ok(ops::linear(x, wt, b.as_ref(), ops::WeightLayout::OutIn)?);
            }
            Proj::F32 {
                wt, b, w_in_out, ..
            } if x.track_op() => {
                let w = match w_in_out.get() {
                    Some(w) => w.clone(),
                    None => {
                        let w = wt.t()?.contiguous()?; // [in, out]
                        let _ = w_in_out.set(w.clone());
                        w
                    }
                };
                return Ok(ops::linear_frozen(x, &w, wt, b.as_ref())?);
            }
            Proj::F32 { wt, b_vec, .. } => {
                // The dot-product kernel works on raw slices: no gradients through it.
                if m <= MATVEC_MAX_ROWS && !x.track_op() && !wt.track_op() {
                    if let Some(y) = matvec_f32(wt, x, b_vec.as_deref())? {
                        return Ok(y);
                    }
                }
                x.matmul(&wt.t()?)? // [M, in] x [in, out]
            }
            Proj::Packed { w, .. } if m > MATVEC_MAX_ROWS => {
                // Many rows (a prefix): gemm on the weights widened back to f32 for this call.
                let wt = Tensor::from_vec(w.to_f32(), (w.n, w.k), x.device())?;
                x.matmul(&wt.t()?)?
            }
            Proj::Packed { w, b_vec, .. } => {
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                let y = w.matmul(&xs, m, b_vec.as_deref());
                return Ok(Tensor::from_vec(y, (m, w.n), x.device())?);
            }
            Proj::Quant { w, .. } => w.forward(x)?,
        };
        Ok(match self.bias() {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Few-row f32 product on the CPU, reading `wt` [out, in] in place; None on other devices.
fn matvec_f32(wt: &Tensor, x: &Tensor, bias: Option<&[f32]>) -> Result<Option<Tensor>> {
    let (n, k) = wt.dims2()?;
    let (m, _) = x.dims2()?;
    let (storage, layout) = wt.storage_and_layout();
    let data = match &*storage {
        candle_core::Storage::Cpu(cpu) => cpu.as_slice::<f32>()?,
        _ => return Ok(None),
    };
    let w = &data[layout.start_offset()..layout.start_offset() + n * k];
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let y = kernels::matmul_f32(w, n, k, &xs, m, bias);
    Ok(Some(Tensor::from_vec(y, (m, n), x.device())?))
}

/// Single-query attention on the CPU, reading the caches in place: q [B, H, 1, D], caches
/// [B, H, capacity, D] with `len` slots filled, row b's first `pad[b]` slots masked (skipped:
/// the same as an additive f32::MIN, whose exp underflows to exactly 0). Returns [B, H, D]
/// (= [B, C] with heads concatenated), or None when the tensors are not on the CPU.
pub(crate) fn attend_one(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    len: usize,
    pad: &[usize],
) -> Result<Option<Tensor>> {
    let (b, h, cap, d) = k_cache.dims4()?;
    let (ks, kl) = k_cache.storage_and_layout();
    let (vs, vl) = v_cache.storage_and_layout();
    let (k, v) = match (&*ks, &*vs) {
        (candle_core::Storage::Cpu(k), candle_core::Storage::Cpu(v)) => (
            &k.as_slice::<f32>()?[kl.start_offset()..],
            &v.as_slice::<f32>()?[vl.start_offset()..],
        ),
        _ => return Ok(None),
    };
    let qv = q.flatten_all()?.to_vec1::<f32>()?; // [B*H*D]
    let y = kernels::attend_one(&qv, k, v, b, h, cap, d, len, pad);
    Ok(Some(Tensor::from_vec(y, (b, h, d), q.device())?))
}

/// Matrix products with compact weights (f16, or int8 with one f32 scale per block) and f32
/// activations, for decoding on a CPU, where a step reads every weight once and memory bandwidth
/// is the limit: halving or quartering the bytes read is what makes a step cheaper.
///
/// Weights are rows `[out, in]`; each output is a dot product of an activation row with a weight
/// row, converted to f32 on the fly. Rows are split across rayon's pool (candle's own threads).
/// On x86-64 with AVX2/FMA/F16C (checked at run time) the dot products use those instructions;
/// elsewhere a portable loop gives the same results up to summation order.
mod kernels {
    use half::f16;
    use rayon::prelude::*;

    /// Weights per int8 scale (ggml's Q8_0 block size).
    pub const I8_BLOCK: usize = 32;
    /// Largest int8 magnitude used by the symmetric quantizer.
    const I8_MAX: f32 = 127.0;
    /// Output rows per rayon task: big enough to amortise scheduling, small enough to balance.
    const ROWS_PER_TASK: usize = 64;

    #[derive(Debug, Clone)]
    pub enum Rows {
        F16(Vec<f16>),
        /// `q[o * k + i]`, scale of block `b` of row `o` at `scales[o * k / I8_BLOCK + b]`.
        I8 {
            q: Vec<i8>,
            scales: Vec<f32>,
        },
    }

    /// A weight matrix `[n, k]` (rows = outputs).
    #[derive(Debug, Clone)]
    pub struct Packed {
        pub rows: Rows,
        pub n: usize,
        pub k: usize,
    }

    impl Packed {
        pub fn f16(w: &[f32], n: usize, k: usize) -> Self {
            Self {
                rows: Rows::F16(w.iter().map(|&v| f16::from_f32(v)).collect()),
                n,
                k,
            }
        }

        /// Symmetric per-block quantization; `k` must be a multiple of [`I8_BLOCK`].
        pub fn i8(w: &[f32], n: usize, k: usize) -> Self {
            let mut q = Vec::with_capacity(w.len());
            let mut scales = Vec::with_capacity(w.len() / I8_BLOCK);
            for block in w.chunks_exact(I8_BLOCK) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = if amax > 0.0 { amax / I8_MAX } else { 1.0 };
                scales.push(s);
                q.extend(block.iter().map(|v| (v / s).round() as i8));
            }
            Self {
                rows: Rows::I8 { q, scales },
                n,
                k,
            }
        }

        /// The weights back in f32, `[n, k]`.
        pub fn to_f32(&self) -> Vec<f32> {
            let mut out = vec![0f32; self.n * self.k];
            for (o, row) in out.chunks_exact_mut(self.k).enumerate() {
                self.row_f32(o, row);
            }
            out
        }

        fn row_f32(&self, o: usize, dst: &mut [f32]) {
            let k = self.k;
            match &self.rows {
                Rows::F16(w) => {
                    use half::slice::HalfFloatSliceExt;
                    w[o * k..(o + 1) * k].convert_to_f32_slice(dst);
                }
                Rows::I8 { q, scales } => {
                    let q = &q[o * k..(o + 1) * k];
                    let s = &scales[o * k / I8_BLOCK..(o + 1) * k / I8_BLOCK];
                    for ((d, qb), s) in dst
                        .chunks_exact_mut(I8_BLOCK)
                        .zip(q.chunks_exact(I8_BLOCK))
                        .zip(s)
                    {
                        for (d, &v) in d.iter_mut().zip(qb) {
                            *d = v as f32 * s;
                        }
                    }
                }
            }
        }

        /// Dot product of `x` [k] with weight row `o`.
        fn dot_row(&self, x: &[f32], o: usize, simd: bool) -> f32 {
            let k = self.k;
            match &self.rows {
                Rows::F16(w) => {
                    let w = &w[o * k..(o + 1) * k];
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: `simd` is only true when AVX2, FMA and F16C were detected.
                        return unsafe { x86::dot_f16(x, w) };
                    }
                    let _ = simd;
                    x.iter().zip(w).map(|(a, b)| a * b.to_f32()).sum()
                }
                Rows::I8 { q, scales } => {
                    let q = &q[o * k..(o + 1) * k];
                    let s = &scales[o * k / I8_BLOCK..(o + 1) * k / I8_BLOCK];
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: as above.
                        return unsafe { x86::dot_i8(x, q, s) };
                    }
                    x.chunks_exact(I8_BLOCK)
                        .zip(q.chunks_exact(I8_BLOCK))
                        .zip(s)
                        .map(|((xb, qb), s)| {
                            s * xb.iter().zip(qb).map(|(a, &b)| a * b as f32).sum::<f32>()
                        })
                        .sum()
                }
            }
        }

        /// `x` [m, k] -> `x W^T + bias` [m, n].
        pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
            let simd = simd_available();
            matmul_rows(
                self.n,
                self.k,
                x,
                m,
                bias,
                |xr, o| self.dot_row(xr, o, simd),
                |o, dst| self.row_f32(o, dst),
            )
        }
    }

    /// `x` [m, k] times f32 rows `w` [n, k] transposed, plus bias -> [m, n].
    pub fn matmul_f32(
        w: &[f32],
        n: usize,
        k: usize,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let simd = simd_available();
        matmul_rows(
            n,
            k,
            x,
            m,
            bias,
            |xr, o| dot_f32(xr, &w[o * k..(o + 1) * k], simd),
            |o, dst| dst.copy_from_slice(&w[o * k..(o + 1) * k]),
        )
    }

    /// Shared driver: `dot(x_row, o)` is one output; `row(o, dst)` writes weight row `o` as f32
    /// (used when several activation rows share each weight row).
    fn matmul_rows<D, R>(
        n: usize,
        k: usize,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        dot: D,
        row: R,
    ) -> Vec<f32>
    where
        D: Fn(&[f32], usize) -> f32 + Sync,
        R: Fn(usize, &mut [f32]) + Sync,
    {
        let simd = simd_available();
        // Output transposed, [n, m], so that each task owns whole weight rows.
        let mut yt = vec![0f32; n * m];
        yt.par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * ROWS_PER_TASK;
                if m == 1 {
                    for (j, y) in out.iter_mut().enumerate() {
                        *y = dot(x, first + j);
                    }
                } else {
                    // Convert each weight row once, reuse it for the m activation rows.
                    let mut buf = vec![0f32; k];
                    for (j, ys) in out.chunks_exact_mut(m).enumerate() {
                        row(first + j, &mut buf);
                        for (r, y) in ys.iter_mut().enumerate() {
                            *y = dot_f32(&x[r * k..(r + 1) * k], &buf, simd);
                        }
                    }
                }
            });
        let mut y = if m == 1 {
            yt
        } else {
            let mut y = vec![0f32; m * n];
            for (o, col) in yt.chunks_exact(m).enumerate() {
                for (r, &v) in col.iter().enumerate() {
                    y[r * n + o] = v;
                }
            }
            y
        };
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(n) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        y
    }

    /// See `super::attend_one`. Caches are [b, h, cap, d] contiguous slices.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_one(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        b: usize,
        h: usize,
        cap: usize,
        d: usize,
        len: usize,
        pad: &[usize],
    ) -> Vec<f32> {
        let simd = simd_available();
        let scale = 1.0 / (d as f32).sqrt();
        let mut y = vec![0f32; b * h * d];
        y.par_chunks_mut(d).enumerate().for_each(|(bh, out)| {
            let row = bh / h;
            let base = bh * cap * d;
            let qh = &q[bh * d..(bh + 1) * d];
            let first = pad[row].min(len);
            let scores: Vec<f32> = (first..len)
                .map(|l| dot_f32(qh, &k[base + l * d..base + (l + 1) * d], simd) * scale)
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let probs: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = probs.iter().sum();
            for (j, p) in probs.iter().enumerate() {
                let vr = &v[base + (first + j) * d..base + (first + j + 1) * d];
                let w = p / total;
                for (o, x) in out.iter_mut().zip(vr) {
                    *o += w * x;
                }
            }
        });
        y
    }

    fn dot_f32(a: &[f32], b: &[f32], simd: bool) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only true when AVX2 and FMA were detected.
            return unsafe { x86::dot_f32(a, b) };
        }
        let _ = simd;
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn simd_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::I8_BLOCK;
        use half::f16;
        use std::arch::x86_64::*;

        /// Lanes of one AVX register of f32.
        const LANES: usize = 8;

        #[target_feature(enable = "avx2,fma")]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i + 2 * LANES <= n {
                acc0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + LANES)),
                    _mm256_loadu_ps(b.as_ptr().add(i + LANES)),
                    acc1,
                );
                i += 2 * LANES;
            }
            let mut s = hsum(_mm256_add_ps(acc0, acc1));
            while i < n {
                s += a[i] * b[i];
                i += 1;
            }
            s
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn dot_f16(x: &[f32], w: &[f16]) -> f32 {
            let n = x.len().min(w.len());
            let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let wp = w.as_ptr() as *const u16;
            let mut i = 0;
            while i + 2 * LANES <= n {
                let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i) as *const __m128i));
                let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i + LANES) as *const __m128i));
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i)), w0, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i + LANES)), w1, acc1);
                i += 2 * LANES;
            }
            let mut s = hsum(_mm256_add_ps(acc0, acc1));
            while i < n {
                s += x[i] * w[i].to_f32();
                i += 1;
            }
            s
        }

        /// `k` is a multiple of I8_BLOCK (checked when packing).
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dot_i8(x: &[f32], q: &[i8], scales: &[f32]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (b, &s) in scales.iter().enumerate() {
                let base = b * I8_BLOCK;
                let mut blk = _mm256_setzero_ps();
                let mut j = 0;
                while j < I8_BLOCK {
                    let qi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        q.as_ptr().add(base + j) as *const __m128i
                    ));
                    blk = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.as_ptr().add(base + j)),
                        _mm256_cvtepi32_ps(qi),
                        blk,
                    );
                    j += LANES;
                }
                acc = _mm256_fmadd_ps(blk, _mm256_set1_ps(s), acc);
            }
            hsum(acc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kernels::Packed;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, b: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for o in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[o * k + i] as f64)
                    .sum();
                y[r * n + o] = dot as f32 + b[o];
            }
        }
        y
    }

    #[test]
    fn packed_kernels_match_f32_within_their_precision() {
        // 200 outputs (not a multiple of the task size), 96 inputs (3 int8 blocks, 16-lane tails).
        let (n, k) = (200, 96);
        let w = values(n * k, 1);
        let b = values(n, 2);
        for m in [1, 3] {
            let x = values(m * k, 3 + m as u64);
            let want = reference(&x, &w, m, n, k, &b);
            // Error bounds: sum over k of |x| * (weight rounding), |x| <= 1, |w| <= 1:
            // f16 rounds to 2^-11 relative, int8 to half a step of max|w|/127 per block.
            for (packed, tol) in [
                (Packed::f16(&w, n, k), k as f32 * 2f32.powi(-11)),
                (Packed::i8(&w, n, k), k as f32 * 0.5 / 127.0),
            ] {
                let got = packed.matmul(&x, m, Some(&b));
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= tol, "m={m} worst {worst} > {tol}");
            }
        }
    }
}

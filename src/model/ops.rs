//! Layer norm, softmax and GELU that keep gradients when training needs them.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` kernels are fast but have no backward
//! pass. The model calls these wrappers instead: when any input is part of an autograd graph
//! (`track_op`: a trainable `Var` or something computed from one) they use the composition of
//! differentiable ops; otherwise (inference) the fused kernels.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use candle_nn::{LayerNorm, Module};
use rayon::prelude::*;

/// Runs `f` on one of rayon's worker threads (the calling thread waits for it), or in place when
/// already on one. Inference calls it around each forward pass: the parallel ops inside then
/// split with a join on that worker (its share runs in place, the other workers steal the rest)
/// instead of injecting a job from outside the pool and putting the caller to sleep until it
/// ends. Decoding a token makes about 60 such calls; from the main thread they cost four context
/// switches each (158k -> 37k over `bench decode`'s i8 run, docs/performance.md).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

/// `ln(x)` over the last dimension, differentiable when `x` or the norm's weights are tracked
/// (on the CPU in f32 one fused op with its own backward; elsewhere `ops_gpu`'s).
pub fn layer_norm(ln: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    // Mixed precision: f32 (master) weights meet bf16/f16 activations in the activations' dtype.
    if ln.weight().dtype() != x.dtype() {
        let dt = x.dtype();
        let bias = ln.bias().map(|b| b.to_dtype(dt)).transpose()?;
        let weight = ln.weight().to_dtype(dt)?;
        let ln = match bias {
            Some(b) => LayerNorm::new(weight, b, ln.eps()),
            None => LayerNorm::new_no_bias(weight, ln.eps()),
        };
        return layer_norm(&ln, x);
    }
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
        // GPUs (and bf16/f16 on the CPU): one kernel forward, a short composition backward.
        (true, Some(bias)) => crate::model::ops_gpu::layer_norm(x, ln.weight(), bias, ln.eps()),
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
        None => candle_core::bail!("fused CPU ops need contiguous inputs"),
    }
}

/// The contiguous f32 values of a tensor's storage (from `storage_and_layout`), on the CPU only.
pub(crate) fn storage_f32<'a>(s: &'a candle_core::Storage, l: &Layout) -> Result<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(cpu) => f32_slice(cpu, l),
        _ => candle_core::bail!("fused CPU ops need tensors on the CPU"),
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

/// How a linear layer's weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in]`, torch's `nn.Linear`: `y = x W^T`.
    OutIn,
    /// `[in, out]`, GPT-2's `Conv1D`: `y = x W`.
    InOut,
}

/// `x [.., in] -> [.., out]`: `x W^T + b` or `x W + b` (see [`WeightLayout`]). Untracked
/// (inference) it is candle's matmul as before; when `x` or `w` is tracked it is one op whose
/// backward computes only what is needed: the input's gradient when `x` is tracked, the weight's
/// when `w` is (a frozen weight never gets one), each as one gemm straight into the weight's
/// own layout. candle's `x.matmul(&w.t())` computes both gradients always, and the weight's
/// arrives transposed, so adding it up is a strided pass over the whole weight.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, layout: WeightLayout) -> Result<Tensor> {
    linear_with(
        x,
        w,
        b,
        LinearOp {
            layout,
            w_out_in: None,
            relu: false,
        },
    )
}

/// `relu(linear(x))`. In training on the CPU (f32, with a bias) the ReLU runs inside the
/// linear op, in the pass that adds the bias, and its backward masks the output's gradient in
/// one parallel pass before the linear backward: candle's `relu` is a separate op whose
/// backward is four single-threaded passes plus a zeroed gradient buffer.
pub fn linear_relu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    layout: WeightLayout,
) -> Result<Tensor> {
    let fused = (x.track_op() || w.track_op() || b.is_some_and(Tensor::track_op))
        && x.device().is_cpu()
        && b.is_some_and(|b| [x.dtype(), w.dtype(), b.dtype()] == [DType::F32; 3]);
    if !fused {
        return linear(x, w, b, layout)?.relu();
    }
    let op = LinearOp {
        layout,
        w_out_in: None,
        relu: true,
    };
    linear_with(x, w, b, op)
}

/// [`linear`] through a frozen weight held both ways: the forward multiplies by `w_in_out`
/// `[in, out]`, the input's gradient by `w_out_in` `[out, in]`, so both products read their
/// right-hand side row-major (gemm is up to 1.5x slower on the transposed one at GPT-2's MLP
/// shapes, measured). No weight gradient.
pub fn linear_frozen(
    x: &Tensor,
    w_in_out: &Tensor,
    w_out_in: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    let op = LinearOp {
        layout: WeightLayout::InOut,
        // In the activations' dtype, as `linear_with` casts `w_in_out` (mixed precision).
        w_out_in: Some(w_out_in.detach().to_dtype(x.dtype())?),
        relu: false,
    };
    linear_with(x, &w_in_out.detach(), b.map(Tensor::detach).as_ref(), op)
}

fn linear_with(x: &Tensor, w: &Tensor, b: Option<&Tensor>, op: LinearOp) -> Result<Tensor> {
    // Mixed precision: the weights in the activations' dtype (a no-op when they match); the
    // cast is differentiable, so f32 master weights get f32 gradients.
    let (w, b) = (
        &w.to_dtype(x.dtype())?,
        b.map(|b| b.to_dtype(x.dtype())).transpose()?,
    );
    let b = b.as_ref();
    let layout = op.layout;
    let dims = x.dims().to_vec();
    let k = dims.last().copied().unwrap_or(0);
    let n = match layout {
        WeightLayout::OutIn => w.dim(0)?,
        WeightLayout::InOut => w.dim(1)?,
    };
    let m = x.elem_count() / k.max(1);
    let x2 = x.reshape((m, k))?; // [M, in]
    let tracked = x.track_op() || w.track_op() || b.is_some_and(Tensor::track_op);
    let y = if tracked {
        match b {
            // On the CPU the bias is added inside the op: candle's broadcast_add would also
            // build a zero gradient for a frozen bias, the full size of the output, and add to it.
            Some(b)
                if x.device().is_cpu() && [x.dtype(), w.dtype(), b.dtype()] == [DType::F32; 3] =>
            {
                let y = x2.apply_op3(w, &b.contiguous()?, op)?;
                let mut out_dims = dims;
                if let Some(last) = out_dims.last_mut() {
                    *last = n;
                }
                return y.reshape(out_dims);
            }
            _ => x2.apply_op2(w, op)?,
        }
    } else {
        match layout {
            WeightLayout::OutIn => x2.matmul(&w.t()?)?,
            WeightLayout::InOut => x2.matmul(w)?,
        }
    }; // [M, out]
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = n;
    }
    let y = y.reshape(out_dims)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// The matmul of [`linear`] with its own backward.
struct LinearOp {
    layout: WeightLayout,
    /// The same frozen weight as `[out, in]`, for the input's gradient (see [`linear_frozen`]).
    w_out_in: Option<Tensor>,
    /// `relu(x W^T + b)` (only with a bias: see [`linear_relu`]).
    relu: bool,
}

impl LinearOp {
    /// `(m, k, n)` and the layout that presents the weight as `[in, out]`.
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<(usize, usize, usize, Layout)> {
        let (m, k) = l1.shape().dims2()?;
        let (rhs, (k2, n)) = match self.layout {
            WeightLayout::OutIn => {
                let t = l2.transpose(0, 1)?;
                let d = t.shape().dims2()?;
                (t, d)
            }
            WeightLayout::InOut => (l2.clone(), l2.shape().dims2()?),
        };
        if k != k2 {
            candle_core::bail!("linear: input [{m}, {k}] against a weight of input width {k2}");
        }
        Ok((m, k, n, rhs))
    }
}

impl LinearOp {
    /// The product on the CPU: `[m, n]` values and their shape.
    fn cpu_matmul(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, usize, usize)> {
        use candle_core::backend::BackendStorage;
        let (m, k, n, rhs) = self.dims(l1, l2)?;
        Ok((s1.matmul(s2, (1, m, n, k), l1, &rhs)?, m, n))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, m, n) = self.cpu_matmul(s1, l1, s2, l2)?;
        Ok((y, (m, n).into()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (m, k, n, rhs) = self.dims(l1, l2)?;
        Ok((s1.matmul(s2, (1, m, n, k), l1, &rhs)?, (m, n).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, grad)
    }
}

impl candle_core::CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear-bias"
    }

    /// `x W^T + b` (or `x W + b`): the gemm, then the bias added to each row in place.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (mut y, m, n) = self.cpu_matmul(s1, l1, s2, l2)?;
        let bias = f32_slice(s3, l3)?;
        if bias.len() != n {
            candle_core::bail!("linear: bias of {} values for {n} outputs", bias.len());
        }
        if let CpuStorage::F32(v) = &mut y {
            let relu = self.relu;
            v.par_chunks_mut(n).for_each(|row| {
                row.iter_mut().zip(bias).for_each(|(y, &b)| {
                    let v = *y + b;
                    // As torch's relu: NaN stays NaN.
                    *y = if relu && v < 0.0 { 0.0 } else { v };
                });
            });
        } else {
            candle_core::bail!("linear: f32 only");
        }
        Ok((y, (m, n).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let masked;
        let grad = if self.relu {
            masked = relu_grad(res, grad)?;
            &masked
        } else {
            grad
        };
        let (dx, dw) = self.grads(x, w, grad)?;
        let db = match (b.track_op(), b.is_variable()) {
            (false, _) => None,
            (true, true) => sink_weight_grad(b, column_sums(grad)?)?, // [out]
            (true, false) => Some(column_sums(grad)?),
        };
        Ok((dx, dw, db))
    }
}

/// The gradient through a ReLU from its output `y` [M, N]: `grad` where `y > 0`, else 0 (torch's
/// `threshold_backward`), in one parallel pass.
fn relu_grad(y: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let (y, grad) = (y.contiguous()?, grad.contiguous()?);
    let (ys, yl) = y.storage_and_layout();
    let (gs, gl) = grad.storage_and_layout();
    let (yv, gv) = (storage_f32(&ys, yl)?, storage_f32(&gs, gl)?);
    if yv.len() != gv.len() {
        candle_core::bail!(
            "relu: output of {} values, gradient of {}",
            yv.len(),
            gv.len()
        );
    }
    let mut out = vec![0f32; gv.len()];
    out.par_chunks_mut(RELU_CHUNK)
        .zip(gv.par_chunks(RELU_CHUNK).zip(yv.par_chunks(RELU_CHUNK)))
        .for_each(|(o, (g, y))| {
            o.iter_mut()
                .zip(g.iter().zip(y))
                .for_each(|(o, (&g, &y))| *o = if y > 0.0 { g } else { 0.0 });
        });
    Tensor::from_vec(out, grad.shape(), grad.device())
}

/// Values per parallel task of [`relu_grad`].
const RELU_CHUNK: usize = 1 << 14;

/// `g.sum(0)` of a [M, N] f32 CPU tensor, rows added in order (candle's reduction over a
/// leading dimension walks the matrix column by column, a strided pass).
fn column_sums(g: &Tensor) -> Result<Tensor> {
    let (m, n) = g.dims2()?;
    let g = g.contiguous()?;
    let (storage, layout) = g.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return g.sum(0);
    };
    let vals = f32_slice(cpu, layout)?;
    let mut out = vec![0f32; n];
    for row in vals.chunks_exact(n).take(m) {
        out.iter_mut().zip(row).for_each(|(o, &x)| *o += x);
    }
    Tensor::from_vec(out, n, g.device())
}

impl LinearOp {
    /// The input's and the weight's gradients, each only when it is tracked.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // grad [M, out]; x [M, in].
        let (xd, wd) = (x.detach(), w.detach());
        let dx = match (x.track_op(), self.layout) {
            (false, _) => None,
            (true, _) if self.w_out_in.is_some() => {
                self.w_out_in.as_ref().map(|w| grad.matmul(w)).transpose()? // [M, out] x [out, in]
            }
            (true, WeightLayout::OutIn) => Some(grad.matmul(&wd)?), // [M, out] x [out, in]
            (true, WeightLayout::InOut) => Some(grad.matmul(&wd.t()?)?), // [M, out] x [out, in]
        };
        let dw = match (w.track_op(), self.layout) {
            (false, _) => None,
            (true, WeightLayout::OutIn) => Some(grad.t()?.matmul(&xd)?), // [out, M] x [M, in]
            (true, WeightLayout::InOut) => Some(xd.t()?.matmul(grad)?),  // [in, M] x [M, out]
        };
        let dw = match dw {
            Some(g) if w.is_variable() => sink_weight_grad(w, g)?,
            other => other,
        };
        Ok((dx, dw))
    }
}

thread_local! {
    /// Weight gradients set aside during [`backward`]: by the weight's id.
    static WEIGHT_GRADS: std::cell::RefCell<Option<std::collections::HashMap<candle_core::TensorId, Tensor>>> =
        const { std::cell::RefCell::new(None) };
}

/// During [`backward`], keeps the gradient `g` of the trainable weight `w` aside (summed with
/// any earlier one) and returns None, so that candle does not add it to a zeroed buffer of the
/// weight's size, which it does for every gradient it is handed: for the full-size model's
/// ~140 M trainable values that is ~2 GB of memory traffic per step. Outside [`backward`]
/// returns `Some(g)` (candle's own accounting).
fn sink_weight_grad(w: &Tensor, g: Tensor) -> Result<Option<Tensor>> {
    WEIGHT_GRADS.with(|sink| {
        let mut sink = sink.borrow_mut();
        let Some(map) = sink.as_mut() else {
            return Ok(Some(g));
        };
        let sum = match map.remove(&w.id()) {
            Some(prev) => (prev + g)?,
            None => g,
        };
        map.insert(w.id(), sum);
        Ok(None)
    })
}

/// `loss.backward()`, with the gradients of trainable weights of [`linear`] layers handed over
/// directly instead of through candle's accumulation (see [`sink_weight_grad`]): the same
/// gradient store, with less memory traffic. The training loops call this.
pub fn backward(loss: &Tensor) -> Result<candle_core::backprop::GradStore> {
    WEIGHT_GRADS.with(|sink| *sink.borrow_mut() = Some(Default::default()));
    let result = loss.backward();
    let set_aside = WEIGHT_GRADS
        .with(|sink| sink.borrow_mut().take())
        .unwrap_or_default();
    let mut grads = result?;
    for (id, g) in set_aside {
        let sum = match grads.get_id(id) {
            Some(prev) => (prev + g)?,
            None => g,
        };
        grads.insert_id(id, sum);
    }
    Ok(grads)
}

/// A dense layer `y = x W^T + b` with `W` `[out, in]` (torch's `nn.Linear`) whose training
/// forward is [`linear`]. Built from candle-nn's, so loading and initialisation are candle-nn's.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl From<candle_nn::Linear> for Linear {
    fn from(l: candle_nn::Linear) -> Self {
        Self {
            weight: l.weight().clone(),
            bias: l.bias().cloned(),
        }
    }
}

impl Linear {
    /// From a weight `[out, in]` and an optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `[.., in]` -> `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref(), WeightLayout::OutIn)
    }

    /// `relu(forward(x))`, fused in training (see [`linear_relu`]).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        linear_relu(x, &self.weight, self.bias.as_ref(), WeightLayout::OutIn)
    }
}

/// GPT-2's `gelu_new` (tanh approximation) elementwise. On the CPU in f32 one multi-threaded,
/// vectorised op whose backward is one pass: candle's `gelu` runs on one thread through libm's
/// `tanhf`, and its backward is ~13 single-threaded elementwise ops (two of them `powf`), which
/// made the MLP activation a large share of a GPT-2 training step. `tanh` here is built on a
/// vectorisable `exp` (see [`tanh_sech2`]), as accurate as libm's to within a few 1e-8.
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

/// Cephes' `expf` (ln 2 split in two, a degree-5 polynomial on [-ln2/2, ln2/2], then the
/// exponent set in the bits), branch-free so that it vectorises: within 1e-7 relative of the
/// exact value for x in [-87, 0] (measured on 4e6 points against f64); inputs above 0 are read
/// as 0.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5, // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    ];
    // Clamped to [-87, 0] and NaN to -87 (which `clamp` would keep), so z below is a whole
    // number in [-126, 0].
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(0.0);
    let z = (std::f32::consts::LOG2_E * x + 0.5).floor();
    let r = x - z * LN2_HI;
    let r = r - z * LN2_LO;
    let mut p = P[0];
    for &c in &P[1..] {
        p = p * r + c;
    }
    let y = p * (r * r) + r + 1.0;
    // 2^z for z in [-126, 0]: the exponent field alone.
    // SAFETY: z is a whole number in [-126, 0] (see above), so the conversion is exact; the
    // unchecked form vectorises (`as i32` saturates, which LLVM does lane by lane in scalar
    // code: that made this function 3x slower).
    let zi: i32 = unsafe { z.to_int_unchecked() };
    y * f32::from_bits(((zi + 127) << 23) as u32)
}

/// `(tanh(u), 1 - tanh(u)^2)` from `e = exp(-2|u|)`: `(1 - e) / (1 + e)` with u's sign and
/// `4e / (1 + e)^2`, the latter without the cancellation of `1 - t^2`. tanh within 9e-8 of the
/// exact value (libm's tanhf: 6e-8), measured on 4e6 points in [-20, 20].
#[inline(always)]
fn tanh_sech2(u: f32) -> (f32, f32) {
    let e = exp_nonpositive(-2.0 * u.abs());
    let t = ((1.0 - e) / (1.0 + e)).copysign(u);
    (t, 4.0 * e / ((1.0 + e) * (1.0 + e)))
}

/// `gelu_new`'s inner argument `u = sqrt(2/pi) (v + c v^3)`.
#[inline(always)]
fn gelu_arg(v: f32) -> f32 {
    SQRT_TWO_OVER_PI * v * (1.0 + GELU_CUBIC * v * v)
}

/// `gelu_new(v) = 0.5 v (1 + tanh(u))`.
#[inline(always)]
fn gelu_value(v: f32) -> f32 {
    0.5 * v * (1.0 + tanh_sech2(gelu_arg(v)).0)
}

/// `d gelu_new(v) / dv = 0.5 (1 + t) + 0.5 v sech^2(u) sqrt(2/pi) (1 + 3 c v^2)`.
#[inline(always)]
fn gelu_slope(v: f32) -> f32 {
    let (t, s2) = tanh_sech2(gelu_arg(v));
    0.5 * (1.0 + t) + 0.5 * v * s2 * SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * v * v)
}

crate::simd::widest_simd! {
    /// `out[i] = gelu(x[i])` (`g = None`) or `g[i] * gelu'(x[i])`.
    fn gelu_chunk(x: &[f32], g: Option<&[f32]>, out: &mut [f32]) {
        match g {
            None => out.iter_mut().zip(x).for_each(|(o, &v)| *o = gelu_value(v)),
            Some(g) => out
                .iter_mut()
                .zip(x.iter().zip(g))
                .for_each(|(o, (&v, &gi))| *o = gi * gelu_slope(v)),
        }
    }
}

struct FusedGelu;

impl CustomOp1 for FusedGelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(out, xs)| gelu_chunk(xs, None, out));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (xv, gv) = (storage_f32(&xs, xl)?, storage_f32(&gs, gl)?);
        let mut dx = vec![0f32; xv.len()];
        dx.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(
                xv.par_chunks(ELEMENTWISE_CHUNK)
                    .zip(gv.par_chunks(ELEMENTWISE_CHUNK)),
            )
            .for_each(|(out, (xs, gs))| gelu_chunk(xs, Some(gs), out));
        Ok(Some(Tensor::from_vec(dx, x.dims(), x.device())?))
    }
}

/// Multi-head self-attention on packed projections, for training on the CPU: `qkv` [B, T, 3C]
/// (queries, keys, values side by side, head h at columns h*D.. of each, D = C / heads) ->
/// [B, T, C] (heads concatenated): `softmax(q k^T / sqrt(D) [+ causal mask]) v`, one op with
/// its own backward. The composition (narrow, transposes, two batched matmuls, scale, mask,
/// softmax) is ~12 graph nodes per layer, each of which candle's backward pays with a zeroed
/// gradient buffer and an add: together more than the attention arithmetic itself.
/// None when the op does not apply (not f32 on the CPU); the caller composes it then.
pub fn attention(qkv: &Tensor, heads: usize, causal: bool) -> Result<Option<Tensor>> {
    if !qkv.device().is_cpu() || qkv.dtype() != DType::F32 {
        return Ok(None);
    }
    let (_, _, c3) = qkv.dims3()?;
    if heads == 0 || c3 % (3 * heads) != 0 {
        candle_core::bail!("attention: width {c3} is not 3 x {heads} heads");
    }
    let op = FusedAttention {
        heads,
        causal,
        split: false,
        probs: std::sync::Mutex::new(None),
    };
    Ok(Some(qkv.contiguous()?.apply_op1(op)?))
}

/// [`attention`] (no mask) on queries `q` [B, T, C] and keys/values `kv` [B, T, 2C] (keys the
/// first C columns) as two projections give them (the mappers' `to_queries`,
/// `to_keys_values`): the same op, reading both in place, so no `[B, T, 3C]` concatenation is
/// built in the forward nor split again in the backward.
pub fn attention_q_kv(q: &Tensor, kv: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || kv.dtype() != DType::F32 {
        return Ok(None);
    }
    let (b, t, c) = q.dims3()?;
    if kv.dims() != [b, t, 2 * c] || heads == 0 || c % heads != 0 {
        candle_core::bail!(
            "attention: queries {:?} and keys/values {:?} for {heads} heads",
            q.dims(),
            kv.dims()
        );
    }
    let op = FusedAttention {
        heads,
        causal: false,
        split: true,
        probs: std::sync::Mutex::new(None),
    };
    Ok(Some(q.contiguous()?.apply_op2(&kv.contiguous()?, op)?))
}

struct FusedAttention {
    heads: usize,
    causal: bool,
    /// Two inputs, queries [B, T, C] and keys/values [B, T, 2C], instead of one [B, T, 3C].
    split: bool,
    /// Softmax probabilities of the forward, [B, H, T, T] (zeros above the diagonal when
    /// causal), kept for the backward.
    probs: std::sync::Mutex<Option<Vec<f32>>>,
}

/// A strided f32 matrix view: element (r, c) at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    pub(crate) fn new(
        data: &'a [f32],
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst [m, n] (row-major, contiguous) = scale * a [m, k] @ b [k, n]`, one thread (the callers
/// parallelise: attention over heads, the fused head + loss over vocabulary chunks), through the
/// `gemm` crate candle itself uses.
pub(crate) fn matmul_into(dst: &mut [f32], a: Mat, b: Mat, scale: f32) -> candle_core::Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || dst.len() != m * n || !a.in_bounds() || !b.in_bounds() {
        candle_core::bail!(
            "matmul: product [{m}, {k}] x [{}, {n}] out of bounds",
            b.rows
        );
    }
    // SAFETY: the three views were checked to lie within their slices, `dst` is exactly
    // [m, n] row-major and borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

/// Where queries, keys and values sit: for each, (input, row width, column of head 0). Packed:
/// one input of rows `[q | k | v]` (3C); split: `q` (C) and `[k | v]` (2C).
fn qkv_places(split: bool, c: usize) -> [(usize, usize, usize); 3] {
    if split {
        [(0, c, 0), (1, 2 * c, 0), (1, 2 * c, c)]
    } else {
        [(0, 3 * c, 0), (0, 3 * c, c), (0, 3 * c, 2 * c)]
    }
}

/// Head `h` of batch row `bi`: its queries, keys and values [T, D], read in place from the
/// inputs (see [`qkv_places`]).
fn head_views<'a>(
    inputs: &[&'a [f32]],
    places: &[(usize, usize, usize); 3],
    (bi, h): (usize, usize),
    (t, d): (usize, usize),
) -> [Mat<'a>; 3] {
    places.map(|(i, w, col)| Mat::new(&inputs[i][bi * t * w + col + h * d..], (t, d), (w, 1)))
}

/// Forward of one head: `p` [T, T] = softmax(q k^T / sqrt(D) [causal]), `y` [T, D] = p v.
fn attention_head_fwd(
    [q, k, v]: [Mat; 3],
    causal: bool,
    p: &mut [f32],
    y: &mut [f32],
) -> candle_core::Result<()> {
    let (t, d) = (q.rows, q.cols);
    matmul_into(p, q, k.t(), 1.0 / (d as f32).sqrt())?;
    for (i, row) in p.chunks_exact_mut(t).enumerate() {
        let n = if causal { i + 1 } else { t };
        let (seen, masked) = row.split_at_mut(n);
        masked.fill(0.0);
        let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in seen.iter_mut() {
            *s = exp_nonpositive(*s - max);
            sum += *s;
        }
        seen.iter_mut().for_each(|s| *s /= sum);
    }
    matmul_into(y, Mat::new(p, (t, t), (t, 1)), v, 1.0)
}

/// Backward of one head from `p` [T, T] and the output's gradient `dy` [T, D]: `dq`, `dk`,
/// `dv` [T, D]. `dp` [T, T] is scratch.
fn attention_head_bwd(
    [q, k, v]: [Mat; 3],
    dy: Mat,
    p: &[f32],
    dp: &mut [f32],
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
) -> candle_core::Result<()> {
    let (t, d) = (q.rows, q.cols);
    let pm = Mat::new(p, (t, t), (t, 1));
    matmul_into(dv, pm.t(), dy, 1.0)?; // dV = P^T dY
    matmul_into(dp, dy, v.t(), 1.0)?; // dP = dY V^T
                                      // dS = P (dP - rowsum(P dP)) / sqrt(D), in place of dP (zero where P is: the mask).
    let scale = 1.0 / (d as f32).sqrt();
    for (ds, pr) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
        let r: f32 = ds.iter().zip(pr).map(|(g, p)| g * p).sum();
        ds.iter_mut()
            .zip(pr)
            .for_each(|(g, &p)| *g = p * (*g - r) * scale);
    }
    let dsm = Mat::new(dp, (t, t), (t, 1));
    matmul_into(dq, dsm, k, 1.0)?; // dQ = dS K
    matmul_into(dk, dsm.t(), q, 1.0) // dK = dS^T Q
}

impl FusedAttention {
    /// `inputs` (one packed or two split, see [`qkv_places`]) -> output [B, T, C], keeping the
    /// probabilities for the backward.
    fn forward_cpu(&self, inputs: &[&[f32]], (b, t, c): (usize, usize, usize)) -> Result<Vec<f32>> {
        let h = self.heads;
        let d = c / h;
        let places = qkv_places(self.split, c);
        // Per (row, head): probabilities [T, T] and output [T, D].
        let parts = (0..b * h)
            .into_par_iter()
            .map(|bh| {
                let (mut p, mut y) = (vec![0f32; t * t], vec![0f32; t * d]);
                let views = head_views(inputs, &places, (bh / h, bh % h), (t, d));
                attention_head_fwd(views, self.causal, &mut p, &mut y)?;
                Ok((p, y))
            })
            .collect::<Result<Vec<(Vec<f32>, Vec<f32>)>>>()?;
        let mut y = vec![0f32; b * t * c];
        let mut probs = Vec::with_capacity(b * h * t * t);
        for (bh, (p, yh)) in parts.into_iter().enumerate() {
            let (bi, hi) = (bh / h, bh % h);
            for ti in 0..t {
                let o = (bi * t + ti) * c + hi * d;
                y[o..o + d].copy_from_slice(&yh[ti * d..(ti + 1) * d]);
            }
            probs.extend_from_slice(&p);
        }
        *self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned".into()))? = Some(probs);
        Ok(y)
    }

    /// The gradients of the inputs (as laid out in the forward) from the output's, `grad`
    /// [B, T, C].
    fn backward_cpu(&self, inputs: &[Tensor], grad: &Tensor) -> Result<Vec<Tensor>> {
        let (b, t, c) = grad.dims3()?;
        let h = self.heads;
        let d = c / h;
        let places = qkv_places(self.split, c);
        let grad = grad.contiguous()?;
        let guard = self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned".into()))?;
        let Some(probs) = guard.as_ref() else {
            candle_core::bail!("attention: backward before forward");
        };
        let storages: Vec<_> = inputs.iter().map(Tensor::storage_and_layout).collect();
        let views = storages
            .iter()
            .map(|(s, l)| storage_f32(s, l))
            .collect::<Result<Vec<&[f32]>>>()?;
        let (gs, gl) = grad.storage_and_layout();
        let gv = storage_f32(&gs, gl)?;
        let parts = (0..b * h)
            .into_par_iter()
            .map(|bh| {
                let (bi, hi) = (bh / h, bh % h);
                let qkv = head_views(&views, &places, (bi, hi), (t, d));
                // The output's gradient: [T, C] rows, head hi's columns.
                let dy = Mat::new(&gv[bi * t * c + hi * d..], (t, d), (c, 1));
                let mut out = [vec![0f32; t * d], vec![0f32; t * d], vec![0f32; t * d]];
                let mut dp = vec![0f32; t * t];
                let p = &probs[bh * t * t..(bh + 1) * t * t];
                let [dq, dk, dv] = &mut out;
                attention_head_bwd(qkv, dy, p, &mut dp, (dq, dk, dv))?;
                Ok(out)
            })
            .collect::<Result<Vec<[Vec<f32>; 3]>>>()?;
        let mut dx: Vec<Vec<f32>> = inputs.iter().map(|x| vec![0f32; x.elem_count()]).collect();
        for (bh, parts) in parts.into_iter().enumerate() {
            let (bi, hi) = (bh / h, bh % h);
            for (part, &(i, w, col)) in parts.iter().zip(&places) {
                for ti in 0..t {
                    let o = (bi * t + ti) * w + col + hi * d;
                    dx[i][o..o + d].copy_from_slice(&part[ti * d..(ti + 1) * d]);
                }
            }
        }
        dx.into_iter()
            .zip(inputs)
            .map(|(g, x)| Tensor::from_vec(g, x.shape(), x.device()))
            .collect()
    }
}

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, t, c3) = l.shape().dims3()?;
        let y = self.forward_cpu(&[f32_slice(s, l)?], (b, t, c3 / 3))?;
        Ok((CpuStorage::F32(y), (b, t, c3 / 3).into()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.backward_cpu(std::slice::from_ref(x), grad)?.pop())
    }
}

impl CustomOp2 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention-q-kv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t, c) = l1.shape().dims3()?;
        let y = self.forward_cpu(&[f32_slice(s1, l1)?, f32_slice(s2, l2)?], (b, t, c))?;
        Ok((CpuStorage::F32(y), (b, t, c).into()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self
            .backward_cpu(&[q.clone(), kv.clone()], grad)?
            .into_iter();
        Ok((g.next(), g.next()))
    }
}

/// Softmax over the last dimension, differentiable when `x` is tracked (on the CPU in f32 one
/// fused op with its own backward; elsewhere `ops_gpu`'s).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        candle_nn::ops::softmax_last_dim(x)
    } else if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(FusedSoftmax)
    } else {
        crate::model::ops_gpu::softmax_last_dim(x)
    }
}

/// Attention weights: `softmax(scores + bias)` over the last dimension, computed in f32 whatever
/// the scores' dtype (bf16 keeps f32's range but not its precision, f16 neither: a masked
/// key's `f32::MIN` bias would be -inf in f16), returned in the scores' dtype. `bias` (f32 or
/// the scores' dtype) broadcasts against `scores`.
pub fn attention_softmax(scores: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dt = scores.dtype();
    let x = scores.to_dtype(DType::F32)?;
    let x = match bias {
        Some(b) => x.broadcast_add(&b.to_dtype(DType::F32)?)?,
        None => x,
    };
    softmax_last_dim(&x)?.to_dtype(dt)
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
    use candle_core::{DType, Device, Var, D};

    /// The fused GELU against `gelu_new` computed in f64 with the exact tanh (an independent
    /// implementation): values within 1e-6 (relative above 1), gradients within 2e-6 of a
    /// central finite difference; candle's `gelu` (libm tanhf) agrees to the same tolerance.
    #[test]
    fn fused_gelu_matches_exact_gelu_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..50_000)
            .map(|i| ((i as f32) * 0.37).sin() * 6.0)
            .chain([0.0, 1e-5, -3e-4, 12.0, -12.0, 40.0, -40.0])
            .collect();
        let n = vals.len();
        let x = Var::from_vec(vals.clone(), n, &dev)?;
        let fused = gelu(x.as_tensor())?;
        let candle = x.as_tensor().gelu()?.to_vec1::<f32>()?;
        let f = |v: f64| {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        };
        let got = fused.to_vec1::<f32>()?;
        for i in 0..n {
            let want = f(f64::from(vals[i]));
            let tol = 1e-6 * want.abs().max(1.0);
            assert!(
                (f64::from(got[i]) - want).abs() < tol,
                "gelu({}) = {} not {want}",
                vals[i],
                got[i]
            );
            assert!(
                (f64::from(candle[i]) - want).abs() < tol,
                "candle gelu({})",
                vals[i]
            );
        }
        let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos()).collect();
        let w = Tensor::from_vec(w.clone(), n, &dev)?;
        let grads = (fused * &w)?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("grad").to_vec1::<f32>()?;
        let ws = w.to_vec1::<f32>()?;
        let h = 1e-5;
        for i in 0..n {
            let v = f64::from(vals[i]);
            let want = (f(v + h) - f(v - h)) / (2.0 * h) * f64::from(ws[i]);
            let got = f64::from(g[i]);
            let tol = 2e-6;
            assert!(
                (got - want).abs() < tol,
                "x = {v}: gradient {got}, finite difference {want}"
            );
        }
        Ok(())
    }

    /// The fused attention against candle's composition (narrow, transpose, matmul, scale,
    /// additive causal mask, softmax, matmul): values and the gradient of `qkv`, causal and not.
    #[test]
    fn fused_attention_matches_composition() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, d) = (2usize, 7usize, 3usize, 8usize);
        let c = h * d;
        let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, 3 * c), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (b, t, c), &dev)?;
        for causal in [true, false] {
            let fused = attention(qkv.as_tensor(), h, causal)?.expect("cpu f32");
            let heads = |i: usize| -> Result<Tensor> {
                qkv.as_tensor()
                    .narrow(2, i * c, c)?
                    .reshape((b, t, h, d))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
            let mut att = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
            if causal {
                let m: Vec<f32> = (0..t * t)
                    .map(|i| if i % t > i / t { f32::MIN } else { 0.0 })
                    .collect();
                att = att.broadcast_add(&Tensor::from_vec(m, (1, 1, t, t), &dev)?)?;
            }
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let reference = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
            let diff = (&fused - &reference)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "causal {causal}: values differ by {diff}");
            let g1 = (fused * &w)?.sum_all()?.backward()?;
            let g2 = (reference * &w)?.sum_all()?.backward()?;
            let (g1, g2) = (
                g1.get(qkv.as_tensor()).unwrap(),
                g2.get(qkv.as_tensor()).unwrap(),
            );
            let diff = (g1 - g2)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "causal {causal}: gradients differ by {diff}");
        }
        Ok(())
    }

    /// Split queries / keys-values give what the packed op gives on their concatenation:
    /// the same values, and the gradients of the two inputs are the packed gradient's columns.
    #[test]
    fn split_attention_matches_packed() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, d) = (2usize, 6usize, 3usize, 4usize);
        let c = h * d;
        let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, c), &dev)?)?;
        let kv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, 2 * c), &dev)?)?;
        let qkv = Var::from_tensor(&Tensor::cat(&[q.as_tensor(), kv.as_tensor()], 2)?)?;
        let g = Tensor::randn(0f32, 1.0, (b, t, c), &dev)?;
        let split = attention_q_kv(q.as_tensor(), kv.as_tensor(), h)?.expect("cpu f32");
        let packed = attention(qkv.as_tensor(), h, false)?.expect("cpu f32");
        let diff = (&split - &packed)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "values differ by {diff}");
        let gs = (split * &g)?.sum_all()?.backward()?;
        let gp = (packed * &g)?.sum_all()?.backward()?;
        let dqkv = gp.get(qkv.as_tensor()).unwrap();
        let dq = gs.get(q.as_tensor()).unwrap();
        let dkv = gs.get(kv.as_tensor()).unwrap();
        let d1 = (dq - dqkv.narrow(2, 0, c)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        let d2 = (dkv - dqkv.narrow(2, c, 2 * c)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!((d1, d2), (0.0, 0.0), "gradients differ");
        Ok(())
    }

    /// The fused linear + ReLU against candle's composition `(x W^T + b).relu()`: values and
    /// the gradients of x, W and b (the mask is exact; only summation order differs).
    #[test]
    fn fused_linear_relu_matches_composition() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 12), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (9, 12), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 9, &dev)?)?;
        let g = Tensor::randn(0f32, 1.0, (2, 5, 9), &dev)?;
        let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let fused = linear_relu(xt, wt, Some(bt), WeightLayout::OutIn)?;
        let reference = xt.broadcast_matmul(&wt.t()?)?.broadcast_add(bt)?.relu()?;
        let diff = (&fused - &reference)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "values differ by {diff}");
        let zeros = fused.eq(0f32)?.sum_all()?.to_scalar::<u8>()?;
        assert!(zeros > 0, "the test needs some negative pre-activations");
        let g1 = (fused * &g)?.sum_all()?.backward()?;
        let g2 = (reference * &g)?.sum_all()?.backward()?;
        for (name, t) in [("x", xt), ("w", wt), ("b", bt)] {
            let d = (g1.get(t).unwrap() - g2.get(t).unwrap())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-5, "gradient of {name} differs by {d}");
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

//! Weight formats of GPT-2's projections and their CPU kernels: the fast path apart from the
//! readable model in `gpt2.rs` (as llm.c keeps its fast kernels apart from `train_gpt2.c`).
//!
//! A [`Proj`] is one dense projection `y = x W^T + b` (`x` `[M, in]`, `W` `[out, in]`, `y`
//! `[M, out]`) held as f32 (candle's gemm; for M <= 4 rows dot products over `[out, in]` weight
//! rows, or row-by-row accumulation over a frozen `[in, out]` Conv1D weight kept as stored), f16
//! or int8 rows (this file's kernels), ggml Q8_0 (candle's quantized matmul), or a trainable
//! `[in, out]` Conv1D weight. [`attend_one`] is one decoding step of attention over the KV cache
//! `[B, H, capacity, D]` straight from its storage.
//!
//! Packed weights are stored (by `adiff convert --dtype`) beside the projection's other tensors:
//! `<name>.weight.i8` (u8 holding the int8 bits, `[out, in]`) with `<name>.weight.i8_scale` (f16
//! `[out, in / 32]`), or `<name>.weight.f16` (f16 `[out, in]`); the bias stays `<name>.bias` (f32).
//! Such a file loads straight into the packed form: nothing is quantized again.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

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
    /// int8 weights with one f16 scale per 32 values, f32 activations (this module's kernel):
    /// about a quarter of the bytes per step. Input widths must be multiples of 32.
    I8,
    /// ggml Q8_0 through candle's quantized matmul (activations quantized to 8 bits too).
    /// Input widths must be multiples of 32.
    Q8_0,
}

impl WeightFormat {
    /// The name `--dtype` and stored files use.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::I8 => "i8",
            WeightFormat::Q8_0 => "q8_0",
        }
    }
}

/// Stored names of a packed weight, after the projection's own name (see the header).
const I8_WEIGHT: &str = "weight.i8";
const I8_SCALE: &str = "weight.i8_scale";
const F16_WEIGHT: &str = "weight.f16";

/// Whether `name` is one of the stored packed-weight tensors (`convert` keeps them as they are).
pub fn is_packed_name(name: &str) -> bool {
    [I8_WEIGHT, I8_SCALE, F16_WEIGHT]
        .iter()
        .any(|suffix| name.ends_with(&format!(".{suffix}")))
}

/// A projection whose weight format can change after loading (`--dtype`) and whose packed
/// weight can be written out (`adiff convert --dtype`).
pub trait Repack {
    /// Re-packs the weight into `format` (from the f32 values, or the dequantized ones).
    fn repack(&mut self, format: WeightFormat) -> Result<()>;
    /// The stored tensors of the packed weight under `name` (see the header); none for f32,
    /// whose weight stays the checkpoint's own `<name>.weight`.
    fn stored(&self, name: &str) -> Result<Vec<(String, Tensor)>>;
    /// Holds a frozen f32 weight in `dtype` from now on (mixed-precision training: the cast is
    /// done once instead of at every use); trainable and packed weights are left as they are.
    fn cast_frozen(&mut self, dtype: DType) -> Result<()> {
        let _ = dtype;
        Ok(())
    }
}

/// Calls `f` with each re-packable projection and its full checkpoint name (no `.weight`).
pub type Visitor<'a> = dyn FnMut(&str, &mut dyn Repack) -> Result<()> + 'a;

/// Activation rows up to which a projection runs as dot products over weight rows (each weight
/// read once, straight from memory); beyond it candle's gemm, which packs and blocks, is faster.
const MATVEC_MAX_ROWS: usize = 4;

/// A dense projection `y = x W^T + b` with `W` `[out, in]` in one of the [`WeightFormat`]s.
#[derive(Debug, Clone)]
pub(crate) enum Proj {
    /// `w` contiguous in the layout it was stored in: `[out, in]` (a torch Linear; a tied
    /// lm_head shares the storage of `wte`) or `[in, out]` (GPT-2's Conv1D, used as read: no
    /// transposed copy at load, 0.45 s of the full model's 1.2 s f32 load, measured).
    F32 {
        w: Tensor,
        layout: ops::WeightLayout,
        b: Option<Tensor>,
        b_vec: Option<Vec<f32>>,
        /// The other layout's contiguous copy, made at the first training forward of a frozen
        /// weight: the forward (`[in, out]`) and the input's gradient (`[out, in]`) then both
        /// read a row-major operand (gemm is up to 1.5x slower on a transposed one at GPT-2's
        /// MLP shapes, measured); inference never pays for it.
        other: std::sync::OnceLock<Tensor>,
        /// An `[out, in]` weight as 16-row tiles stored transposed (`kernels::f32_tiles_of`),
        /// made at the first inference product that runs on them (`kernels::f32_tiles_apply`:
        /// a small model's head decoding a batch); shared by the model's clones.
        tiles: std::sync::OnceLock<std::sync::Arc<Vec<f32>>>,
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

/// The bias as a plain vector for the CPU's f32 kernels (None for a bf16/f16 model, whose
/// products are candle's).
fn f32_bias(b: Option<&Tensor>) -> Result<Option<Vec<f32>>> {
    Ok(match b {
        Some(b) if b.dtype() == DType::F32 => Some(b.to_vec1::<f32>()?),
        _ => None,
    })
}

impl Proj {
    /// Builds from an `[out, in]` weight (f32, or bf16/f16 for a GPU model held as it is).
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
        let b_vec = f32_bias(b.as_ref())?;
        Ok(match format {
            WeightFormat::F32 => Proj::F32 {
                w: w_out_in.contiguous()?,
                layout: ops::WeightLayout::OutIn,
                other: std::sync::OnceLock::new(),
                tiles: std::sync::OnceLock::new(),
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

    /// A frozen f32 `[in, out]` weight (GPT-2's Conv1D) held as it is: `y = x W + b`.
    pub(crate) fn f32_in_out(w_in_out: Tensor, b: Option<Tensor>) -> Result<Self> {
        let b_vec = f32_bias(b.as_ref())?;
        Ok(Proj::F32 {
            w: w_in_out.contiguous()?,
            layout: ops::WeightLayout::InOut,
            other: std::sync::OnceLock::new(),
            tiles: std::sync::OnceLock::new(),
            b,
            b_vec,
        })
    }

    /// The projection at `vb` if its weight is stored packed (`weight.i8` + `weight.i8_scale`, or
    /// `weight.f16`), with its f32 bias (`bias [out]`) when `bias` is set; None when the file
    /// holds a plain `weight`.
    pub(crate) fn load_stored(
        vb: &VarBuilder,
        d_out: usize,
        d_in: usize,
        bias: bool,
    ) -> Result<Option<Self>> {
        let w = if vb.contains_tensor(I8_WEIGHT) {
            if !d_in.is_multiple_of(kernels::I8_BLOCK) {
                return Err(AdiffError::Invalid(format!(
                    "{}.{I8_WEIGHT}: int8 weights need input widths divisible by {}, got {d_in}",
                    vb.prefix(),
                    kernels::I8_BLOCK
                )));
            }
            let q = vb
                .get_with_hints_dtype(
                    (d_out, d_in),
                    I8_WEIGHT,
                    candle_nn::Init::Const(0.0),
                    DType::U8,
                )?
                .flatten_all()?
                .to_vec1::<u8>()?;
            let scales = vb
                .get_with_hints_dtype(
                    (d_out, d_in / kernels::I8_BLOCK),
                    I8_SCALE,
                    candle_nn::Init::Const(0.0),
                    DType::F16,
                )?
                .flatten_all()?
                .to_vec1::<half::f16>()?;
            // The u8 tensor holds int8 bits.
            let q = q.into_iter().map(|b| b as i8).collect();
            kernels::Packed::from_i8(q, scales, d_out, d_in)
        } else if vb.contains_tensor(F16_WEIGHT) {
            let w = vb
                .get_with_hints_dtype(
                    (d_out, d_in),
                    F16_WEIGHT,
                    candle_nn::Init::Const(0.0),
                    DType::F16,
                )?
                .flatten_all()?
                .to_vec1::<half::f16>()?;
            kernels::Packed::from_f16(w, d_out, d_in)
        } else {
            return Ok(None);
        };
        let b = if bias {
            Some(vb.get(d_out, "bias")?)
        } else {
            None
        };
        let b_vec = match &b {
            Some(b) => Some(b.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Some(Proj::Packed { w, b, b_vec }))
    }

    /// Weight rows `ids` as f32 `[ids, in]` (a tied head serving as the embedding table).
    pub(crate) fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Proj::Packed { w, .. } => {
                let mut out = vec![0f32; ids.len() * w.k];
                for (dst, &id) in out.chunks_exact_mut(w.k).zip(ids) {
                    w.row_f32(id as usize, dst);
                }
                Ok(Tensor::from_vec(out, (ids.len(), w.k), &Device::Cpu)?)
            }
            _ => {
                let ids = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
                Ok(self.weight_out_in()?.index_select(&ids, 0)?)
            }
        }
    }

    /// The format the weight is held in (a trainable weight is f32).
    pub(crate) fn format(&self) -> WeightFormat {
        match self {
            Proj::F32 { .. } | Proj::Trainable { .. } => WeightFormat::F32,
            Proj::Packed { w, .. } => match w.rows {
                kernels::Rows::F16(_) => WeightFormat::F16,
                kernels::Rows::I8 { .. } => WeightFormat::I8,
            },
            Proj::Quant { .. } => WeightFormat::Q8_0,
        }
    }

    /// `[out, in]` f32 weight (dequantized if needed), for re-packing.
    pub(crate) fn weight_out_in(&self) -> Result<Tensor> {
        Ok(match self {
            Proj::F32 { w, layout, .. } => match layout {
                ops::WeightLayout::OutIn => w.clone(),
                ops::WeightLayout::InOut => w.t()?.contiguous()?,
            },
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

    /// `[.., in]` -> `[.., out]`: [`Proj::forward`] over the leading dimensions flattened.
    pub(crate) fn forward_nd(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let d_in = *dims.last().unwrap_or(&0);
        let y = self.forward(&x.reshape(((), d_in))?)?;
        if let Some(last) = dims.last_mut() {
            *last = y.dim(1)?;
        }
        Ok(y.reshape(dims)?)
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
            Proj::F32 { w, layout, b, .. } if w.track_op() => {
                return Ok(ops::linear(x, w, b.as_ref(), *layout)?);
            }
            Proj::F32 {
                w,
                layout,
                b,
                other,
                ..
            } if x.track_op() => {
                let other = match other.get() {
                    Some(o) => o.clone(),
                    None => {
                        let o = w.t()?.contiguous()?;
                        let _ = other.set(o.clone());
                        o
                    }
                };
                let (in_out, out_in) = match layout {
                    ops::WeightLayout::InOut => (w, &other),
                    ops::WeightLayout::OutIn => (&other, w),
                };
                return Ok(ops::linear_frozen(x, in_out, out_in, b.as_ref())?);
            }
            Proj::F32 {
                w,
                layout,
                b_vec,
                tiles,
                ..
            } => {
                // The kernels work on raw slices: no gradients through them.
                let k = x.dim(1)?;
                let tiled = *layout == ops::WeightLayout::OutIn && kernels::f32_tiles_apply(k, m);
                if (m <= MATVEC_MAX_ROWS || tiled) && !x.track_op() && !w.track_op() {
                    if let Some(y) =
                        matvec_f32(w, *layout, x, b_vec.as_deref(), tiled.then_some(tiles))?
                    {
                        return Ok(y);
                    }
                }
                // Mixed precision: the weight in the activations' dtype (no-op when equal).
                let w = w.to_dtype(x.dtype())?;
                match layout {
                    ops::WeightLayout::OutIn => x.matmul(&w.t()?)?, // [M, in] x [in, out]
                    ops::WeightLayout::InOut => x.matmul(&w)?,
                }
            }
            // Few rows: dot products over the packed rows; many (a prefix): gemm over tiles of
            // rows widened to f32 (no gradient flows through either).
            Proj::Packed { w, b_vec, .. } => {
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                let y = w.matmul(&xs, m, b_vec.as_deref());
                return Ok(Tensor::from_vec(y, (m, w.n), x.device())?);
            }
            Proj::Quant { w, .. } => w.forward(x)?,
        };
        Ok(match self.bias() {
            Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
            None => y,
        })
    }
}

impl Repack for Proj {
    fn cast_frozen(&mut self, dtype: DType) -> Result<()> {
        if let Proj::F32 {
            w, b, b_vec, other, ..
        } = self
        {
            let frozen = !w.track_op() && !b.as_ref().is_some_and(Tensor::track_op);
            if frozen && w.dtype() != dtype {
                *w = w.to_dtype(dtype)?;
                *b = b.as_ref().map(|b| b.to_dtype(dtype)).transpose()?;
                *b_vec = None; // the CPU's f32 kernels no longer apply
                *other = std::sync::OnceLock::new();
            }
        }
        Ok(())
    }

    fn repack(&mut self, format: WeightFormat) -> Result<()> {
        if self.format() != format {
            let b = self.bias().cloned();
            *self = Proj::new(self.weight_out_in()?, b, format)?;
        }
        Ok(())
    }

    fn stored(&self, name: &str) -> Result<Vec<(String, Tensor)>> {
        let Proj::Packed { w, .. } = self else {
            return Ok(Vec::new());
        };
        let cpu = &Device::Cpu;
        Ok(match &w.rows {
            kernels::Rows::I8 { q, scales } => {
                let bits: Vec<u8> = q.iter().map(|&v| v as u8).collect();
                vec![
                    (
                        format!("{name}.{I8_WEIGHT}"),
                        Tensor::from_vec(bits, (w.n, w.k), cpu)?,
                    ),
                    (
                        format!("{name}.{I8_SCALE}"),
                        Tensor::from_slice(scales, (w.n, w.k / kernels::I8_BLOCK), cpu)?,
                    ),
                ]
            }
            kernels::Rows::F16(v) => vec![(
                format!("{name}.{F16_WEIGHT}"),
                Tensor::from_slice(v, (w.n, w.k), cpu)?,
            )],
        })
    }
}

/// A torch `nn.Linear` of the mappers: [`ops::Linear`] when f32 (its fused training ops), or a
/// packed [`Proj`] for inference in a reduced format.
#[derive(Debug, Clone)]
pub(crate) enum Dense {
    Exact(ops::Linear),
    Packed(Proj),
}

impl Dense {
    /// `nn.Linear(in, out, bias)` at `vb`: packed as stored, else candle-nn's loading (and
    /// initialisation when training from scratch).
    pub fn load(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        if let Some(p) = Proj::load_stored(&vb, d_out, d_in, bias)? {
            return Ok(Dense::Packed(p));
        }
        let l = if bias {
            candle_nn::linear(d_in, d_out, vb)?
        } else {
            candle_nn::linear_no_bias(d_in, d_out, vb)?
        };
        Ok(Dense::Exact(l.into()))
    }

    /// `[.., in]` -> `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Dense::Exact(l) => Ok(l.forward(x)?),
            Dense::Packed(p) => p.forward_nd(x),
        }
    }

    /// `relu(forward(x))` (fused in training).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Dense::Exact(l) => Ok(l.forward_relu(x)?),
            Dense::Packed(_) => Ok(self.forward(x)?.relu()?),
        }
    }
}

impl Repack for Dense {
    fn cast_frozen(&mut self, dtype: DType) -> Result<()> {
        if let Dense::Exact(l) = self {
            let frozen = !l.weight().track_op() && !l.bias().is_some_and(Tensor::track_op);
            if frozen && l.weight().dtype() != dtype {
                let b = l.bias().map(|b| b.to_dtype(dtype)).transpose()?;
                *l = ops::Linear::new(l.weight().to_dtype(dtype)?, b);
            }
        }
        Ok(())
    }

    fn repack(&mut self, format: WeightFormat) -> Result<()> {
        match self {
            Dense::Exact(l) if format != WeightFormat::F32 => {
                *self = Dense::Packed(Proj::new(l.weight().clone(), l.bias().cloned(), format)?);
            }
            Dense::Exact(_) => {}
            Dense::Packed(p) if format == WeightFormat::F32 => {
                *self = Dense::Exact(ops::Linear::new(p.weight_out_in()?, p.bias().cloned()));
            }
            Dense::Packed(p) => p.repack(format)?,
        }
        Ok(())
    }

    fn stored(&self, name: &str) -> Result<Vec<(String, Tensor)>> {
        match self {
            Dense::Exact(_) => Ok(Vec::new()),
            Dense::Packed(p) => p.stored(name),
        }
    }
}

/// Few-row f32 product on the CPU, reading the contiguous weight `w` (`[out, in]` or `[in, out]`
/// as `layout` says) in place; None on other devices.
fn matvec_f32(
    w: &Tensor,
    layout: ops::WeightLayout,
    x: &Tensor,
    bias: Option<&[f32]>,
    tiles: Option<&std::sync::OnceLock<std::sync::Arc<Vec<f32>>>>,
) -> Result<Option<Tensor>> {
    let (rows, cols) = w.dims2()?;
    let (m, _) = x.dims2()?;
    if w.dtype() != DType::F32 || x.dtype() != DType::F32 {
        return Ok(None); // bf16/f16 models take candle's matmul
    }
    let (storage, l) = w.storage_and_layout();
    let data = match &*storage {
        candle_core::Storage::Cpu(cpu) => cpu.as_slice::<f32>()?,
        _ => return Ok(None),
    };
    let w = &data[l.start_offset()..l.start_offset() + rows * cols];
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let (y, n) = match (layout, tiles) {
        (ops::WeightLayout::OutIn, Some(tiles)) => {
            let tiles = tiles.get_or_init(|| kernels::f32_tiles_of(w, rows, cols).into());
            (
                kernels::matmul_f32_tiled(w, tiles, rows, cols, &xs, m, bias),
                rows,
            )
        }
        (ops::WeightLayout::OutIn, None) => {
            (kernels::matmul_f32(w, rows, cols, &xs, m, bias), rows)
        }
        (ops::WeightLayout::InOut, _) => (
            kernels::matmul_f32_in_out(w, rows, cols, &xs, m, bias),
            cols,
        ),
    };
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
    if k_cache.dtype() != DType::F32 || q.dtype() != DType::F32 {
        return Ok(None); // bf16/f16 models take candle's ops
    }
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

/// Matrix products with compact weights (f16, or int8 with one f16 scale per block) and f32
/// activations, for decoding on a CPU, where a step reads every weight once and memory bandwidth
/// is the limit: halving or quartering the bytes read is what makes a step cheaper.
///
/// Weights are rows `[out, in]`; each output is a dot product of an activation row with a weight
/// row, converted to f32 on the fly. Rows are split across rayon's pool (candle's own threads).
/// On x86-64 the dot products use AVX-512 or AVX2/FMA/F16C (the widest the CPU has, checked at
/// run time) and prefetch the weight stream ahead of the loads (without it the kernel read memory
/// at half the machine's bandwidth); elsewhere a portable loop gives the same results up to
/// summation order. Many activation rows go through gemm over tiles of rows widened to f32.
mod kernels {
    use half::f16;
    use rayon::prelude::*;

    /// Weights per int8 scale (ggml's Q8_0 block size).
    pub const I8_BLOCK: usize = 32;
    /// Largest int8 magnitude used by the symmetric quantizer.
    const I8_MAX: f32 = 127.0;
    /// Output rows per rayon task: big enough to amortise scheduling, small enough to balance.
    const ROWS_PER_TASK: usize = 64;
    /// Tasks per thread a matrix is split into at least (load balance).
    const TASKS_PER_THREAD: usize = 4;
    /// Rows per task at most (the lm_head's 50257 rows: ~6000 per task on 2 threads otherwise).
    const MAX_ROWS_PER_TASK: usize = 4096;

    fn rows_per_task(n: usize) -> usize {
        let threads = rayon::current_num_threads().max(1);
        (n / (threads * TASKS_PER_THREAD)).clamp(ROWS_PER_TASK, MAX_ROWS_PER_TASK)
    }

    #[derive(Debug, Clone)]
    pub enum Rows {
        F16(Vec<f16>),
        /// `q[o * k + i]`, scale of block `b` of row `o` at `scales[o * k / I8_BLOCK + b]` (f16:
        /// one eighth of the int8 bytes instead of a quarter, with no measurable change in
        /// accuracy: the scale's rounding is folded into the values, see [`Packed::i8`]).
        I8 {
            q: Vec<i8>,
            scales: Vec<f16>,
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

        /// From stored f16 rows `[n, k]`.
        pub fn from_f16(w: Vec<f16>, n: usize, k: usize) -> Self {
            Self {
                rows: Rows::F16(w),
                n,
                k,
            }
        }

        /// From stored int8 rows `[n, k]` and their block scales `[n, k / I8_BLOCK]`.
        pub fn from_i8(q: Vec<i8>, scales: Vec<f16>, n: usize, k: usize) -> Self {
            Self {
                rows: Rows::I8 { q, scales },
                n,
                k,
            }
        }

        /// Symmetric per-block quantization (ggml's Q8_0 rule: the block's largest magnitude
        /// maps to 127); `k` must be a multiple of [`I8_BLOCK`]. A least-squares refit of each
        /// scale was tried and dropped: it did not lower the logit error on the full-size model.
        pub fn i8(w: &[f32], n: usize, k: usize) -> Self {
            let mut q = Vec::with_capacity(w.len());
            let mut scales = Vec::with_capacity(w.len() / I8_BLOCK);
            for block in w.chunks_exact(I8_BLOCK) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                // The scale as stored (f16), so the values are rounded against the scale the
                // kernels will use; a block too small for an f16 scale is stored as zeros.
                let s16 = f16::from_f32((amax / I8_MAX).min(f16::MAX.to_f32()));
                let s = s16.to_f32();
                scales.push(s16);
                if s > 0.0 {
                    q.extend(
                        block
                            .iter()
                            .map(|v| (v / s).round().clamp(-I8_MAX, I8_MAX) as i8),
                    );
                } else {
                    q.extend(std::iter::repeat_n(0i8, I8_BLOCK));
                }
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

        pub fn row_f32(&self, o: usize, dst: &mut [f32]) {
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
                        let s = s.to_f32();
                        for (d, &v) in d.iter_mut().zip(qb) {
                            *d = v as f32 * s;
                        }
                    }
                }
            }
        }

        /// Dot product of `x` [k] with weight row `o`.
        fn dot_row(&self, x: &[f32], o: usize, level: Level) -> f32 {
            let k = self.k;
            match &self.rows {
                Rows::F16(w) => {
                    let w = &w[o * k..(o + 1) * k];
                    #[cfg(target_arch = "x86_64")]
                    match level {
                        // SAFETY: each level is only chosen when its features were detected.
                        Level::Avx512 => return unsafe { x86::dot_f16_512(x, w) },
                        Level::Avx2 => return unsafe { x86::dot_f16(x, w) },
                        Level::Portable => {}
                    }
                    let _ = level;
                    x.iter().zip(w).map(|(a, b)| a * b.to_f32()).sum()
                }
                Rows::I8 { q, scales } => {
                    let q = &q[o * k..(o + 1) * k];
                    let s = &scales[o * k / I8_BLOCK..(o + 1) * k / I8_BLOCK];
                    #[cfg(target_arch = "x86_64")]
                    match level {
                        // SAFETY: as above.
                        Level::Avx512 => return unsafe { x86::dot_i8_512(x, q, s) },
                        Level::Avx2 => return unsafe { x86::dot_i8(x, q, s) },
                        Level::Portable => {}
                    }
                    x.chunks_exact(I8_BLOCK)
                        .zip(q.chunks_exact(I8_BLOCK))
                        .zip(s)
                        .map(|((xb, qb), s)| {
                            s.to_f32() * xb.iter().zip(qb).map(|(a, &b)| a * b as f32).sum::<f32>()
                        })
                        .sum()
                }
            }
        }

        /// `x` [m, k] -> `x W^T + bias` [m, n]: dot products over weight rows for a few
        /// activation rows, else a gemm per tile of weight rows widened to f32 (see
        /// [`gemm_tiles`]).
        pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
            if m > super::MATVEC_MAX_ROWS {
                return gemm_tiles(self.n, self.k, x, m, bias, |o, dst| self.row_f32(o, dst));
            }
            let level = level();
            matmul_rows(
                self.n,
                self.k,
                x,
                m,
                bias,
                |xr, o| self.dot_row(xr, o, level),
                Some(|o: usize, dst: &mut [f32]| self.row_f32(o, dst)),
            )
        }
    }

    /// Bytes of f32 weights one tile of [`gemm_tiles`] widens: it stays in a core's L2 cache.
    const TILE_BYTES: usize = 256 * 1024;
    /// Activation rows per task at least when [`gemm_tiles`] splits them.
    const MIN_ROWS_PER_PART: usize = 64;

    /// `x` [m, k] times rows `[n, k]` transposed, plus bias -> [m, n], for many activation rows:
    /// each rayon task widens a tile of weight rows to f32 (`row(o, dst)`) and multiplies it
    /// with gemm into its columns of the output. The weights are read once and never held whole
    /// in f32, unlike widening the matrix and calling one large gemm.
    fn gemm_tiles<R>(
        n: usize,
        k: usize,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        row: R,
    ) -> Vec<f32>
    where
        R: Fn(usize, &mut [f32]) + Sync,
    {
        let tile = (TILE_BYTES / (4 * k.max(1))).clamp(8, 256);
        let tiles = n.div_ceil(tile);
        // Few tiles (a narrow layer, e.g. HTSAT's first stage): split the activation rows too,
        // so that every thread has work.
        let threads = rayon::current_num_threads().max(1);
        let row_parts = (2 * threads)
            .div_ceil(tiles)
            .clamp(1, m.div_ceil(MIN_ROWS_PER_PART));
        let rows_per_part = m.div_ceil(row_parts);
        let mut y = vec![0f32; m * n];
        let out = SendPtr(y.as_mut_ptr());
        (0..tiles * row_parts).into_par_iter().for_each(|task| {
            let (t, part) = (task / row_parts, task % row_parts);
            let first = t * tile;
            let cols = tile.min(n - first);
            let r0 = part * rows_per_part;
            let rows = rows_per_part.min(m.saturating_sub(r0));
            if rows == 0 {
                return;
            }
            let mut w = vec![0f32; cols * k];
            for (j, dst) in w.chunks_exact_mut(k).enumerate() {
                row(first + j, dst);
            }
            let dst = out.get();
            // SAFETY: task (t, part) writes only rows r0..r0+rows of columns first..first+cols
            // of the [m, n] output, which no other task touches; every pointer and stride stays
            // inside its buffer.
            unsafe {
                gemm::gemm(
                    rows,
                    cols,
                    k,
                    dst.add(r0 * n + first),
                    1,
                    n as isize,
                    false,
                    x.as_ptr().add(r0 * k),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        if let Some(b) = bias {
            for r in y.chunks_exact_mut(n) {
                for (v, b) in r.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        y
    }

    /// The output pointer shared by the tasks of [`gemm_tiles`], each writing its own columns.
    #[derive(Clone, Copy)]
    struct SendPtr(*mut f32);
    // SAFETY: the tasks write disjoint elements (see `gemm_tiles`).
    unsafe impl Send for SendPtr {}
    unsafe impl Sync for SendPtr {}
    impl SendPtr {
        fn get(self) -> *mut f32 {
            self.0
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
        let level = level();
        matmul_rows(
            n,
            k,
            x,
            m,
            bias,
            |xr, o| dot_f32(xr, &w[o * k..(o + 1) * k], level),
            // f32 rows are read in place (a copy per row was 6% of `adiff serve`'s model time).
            None::<fn(usize, &mut [f32])>,
        )
    }

    /// `y` `[m, n]` plus `bias` `[n]` on every row.
    fn add_bias(y: &mut [f32], n: usize, bias: Option<&[f32]>) {
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(n) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
    }

    /// Weight rows per tile of [`matmul_f32_tiled`].
    const TILE: usize = 16;

    /// Whether an f32 `[out, in]` product of `k` inputs and `m` activation rows runs on
    /// [`matmul_f32_tiled`]: AVX-512, `k` a multiple of 32 (`dot_f32_512`'s two 16-lane
    /// accumulators with no scalar tail) and small (the transposed copy is made for a small
    /// model's head: the demo's 64), and a batch of a few to a few dozen rows, which gemm
    /// served by packing the whole weight every call.
    pub fn f32_tiles_apply(k: usize, m: usize) -> bool {
        level() == Level::Avx512
            && k > 0
            && k.is_multiple_of(32)
            && k <= TILES_MAX_K
            && (2..=TILES_MAX_ROWS).contains(&m)
    }
    /// Inputs and activation rows up to which [`f32_tiles_apply`] holds.
    const TILES_MAX_K: usize = 256;
    const TILES_MAX_ROWS: usize = 32;

    /// `w` `[n, k]` as tiles of 16 rows stored transposed: tile t at `t * 16 * k`,
    /// `[k, 16]`, element `(i, j)` = `w[16t + j][i]`. The last `n % 16` rows are not copied
    /// ([`matmul_f32_tiled`] reads them from `w`).
    pub fn f32_tiles_of(w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let full = n / TILE;
        let mut tiles = vec![0f32; full * TILE * k];
        tiles
            .par_chunks_mut(TILE * k)
            .enumerate()
            .for_each(|(t, tile)| {
                for j in 0..TILE {
                    let row = &w[(t * TILE + j) * k..(t * TILE + j + 1) * k];
                    for (i, &v) in row.iter().enumerate() {
                        tile[i * TILE + j] = v;
                    }
                }
            });
        tiles
    }

    /// [`matmul_f32`] from [`f32_tiles_of`]'s tiles: every output is the same sum as
    /// [`dot_f32`] at [`Level::Avx512`] gives it, bit for bit, whatever `m` (a batch answers
    /// as its rows would alone), with the 16 outputs of a tile in the lanes of one register
    /// and each tile read once for every activation row (see `x86::tile16_f32_512`).
    /// Callers check [`f32_tiles_apply`].
    pub fn matmul_f32_tiled(
        w: &[f32],
        tiles: &[f32],
        n: usize,
        k: usize,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let level = level();
        let per_task = rows_per_task(n).next_multiple_of(TILE);
        // Each task's `[m, len]` band of the output, in its own buffer.
        let bands: Vec<Vec<f32>> = (0..n.div_ceil(per_task))
            .into_par_iter()
            .map(|task| {
                let first = task * per_task;
                let len = per_task.min(n - first);
                let mut band = vec![0f32; m * len];
                let mut o = 0;
                #[cfg(not(target_arch = "x86_64"))]
                let _ = tiles;
                // Whole tiles on AVX-512 (the only level f32_tiles_apply accepts); the rows
                // past the last whole tile, below, as single dot products.
                #[cfg(target_arch = "x86_64")]
                while o + TILE <= len {
                    let t = (first + o) / TILE;
                    let tile = &tiles[t * TILE * k..(t + 1) * TILE * k];
                    let mut r = 0;
                    while r < m {
                        let out = &mut band[r * len + o..];
                        // SAFETY: f32_tiles_apply checked AVX-512 and k % 32 == 0; `tile` is
                        // [k, 16], `x` has rows r.. and `band` rows r.. from column o.
                        unsafe {
                            if r + 2 <= m {
                                x86::tile16_f32_512::<2>(&x[r * k..], k, tile, out, len);
                            } else {
                                x86::tile16_f32_512::<1>(&x[r * k..], k, tile, out, len);
                            }
                        }
                        r += 2;
                    }
                    o += TILE;
                }
                for j in o..len {
                    let wr = &w[(first + j) * k..(first + j + 1) * k];
                    for r in 0..m {
                        band[r * len + j] = dot_f32(&x[r * k..(r + 1) * k], wr, level);
                    }
                }
                band
            })
            .collect();
        let mut y = Vec::with_capacity(m * n);
        for r in 0..m {
            for band in &bands {
                let len = band.len() / m;
                y.extend_from_slice(&band[r * len..(r + 1) * len]);
            }
        }
        add_bias(&mut y, n, bias);
        y
    }

    /// `x` [m, k] times f32 `w` [k, n] (GPT-2's Conv1D layout), plus bias -> [m, n]: each task
    /// streams a band of consecutive weight rows once and adds `x[r, i] * w[i, :]` into its own
    /// partial `[m, n]` sums (in cache), which are then added up. Every read of the weights is
    /// sequential, as in [`matmul_f32`] over `[n, k]` rows.
    pub fn matmul_f32_in_out(
        w: &[f32],
        k: usize,
        n: usize,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        matmul_f32_in_out_at(w, k, n, x, m, bias, level())
    }

    /// [`matmul_f32_in_out`] at a given instruction-set level (tests compare them).
    pub fn matmul_f32_in_out_at(
        w: &[f32],
        k: usize,
        n: usize,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        level: Level,
    ) -> Vec<f32> {
        let threads = rayon::current_num_threads().max(1);
        // Bands of whole groups of four rows (the kernel's unit), several per thread.
        let per_task = k
            .div_ceil(threads * TASKS_PER_THREAD)
            .next_multiple_of(4)
            .max(4);
        let mut y = w
            .par_chunks(per_task * n)
            .enumerate()
            .fold(
                || vec![0f32; m * n],
                |mut acc, (task, band)| {
                    let i0 = task * per_task;
                    let rows = band.len() / n;
                    let mut i = 0;
                    while i < rows {
                        let g = (rows - i).min(4);
                        let ws: Vec<&[f32]> =
                            (i..i + g).map(|j| &band[j * n..(j + 1) * n]).collect();
                        for (r, out) in acc.chunks_exact_mut(n).enumerate() {
                            let xs = &x[r * k + i0 + i..r * k + i0 + i + g];
                            axpy_rows(out, xs, &ws, level);
                        }
                        i += g;
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f32; m * n],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        y
    }

    /// `acc += sum_j xs[j] * ws[j]` over up to four weight rows at once (one pass over `acc`).
    fn axpy_rows(acc: &mut [f32], xs: &[f32], ws: &[&[f32]], level: Level) {
        #[cfg(target_arch = "x86_64")]
        if xs.len() == 4 {
            let (xs4, ws4) = ([xs[0], xs[1], xs[2], xs[3]], [ws[0], ws[1], ws[2], ws[3]]);
            match level {
                // SAFETY: each level is only chosen when its features were detected.
                Level::Avx512 => return unsafe { x86::axpy4_f32_512(acc, xs4, ws4) },
                Level::Avx2 => return unsafe { x86::axpy4_f32(acc, xs4, ws4) },
                Level::Portable => {}
            }
        }
        let _ = level;
        for (&a, w) in xs.iter().zip(ws) {
            acc.iter_mut().zip(*w).for_each(|(y, w)| *y += a * w);
        }
    }

    /// Shared driver: `dot(x_row, o)` is one output; `row(o, dst)` writes weight row `o` as f32
    /// (used when several activation rows share each weight row; without it, as for f32 rows,
    /// `dot` serves every row).
    fn matmul_rows<D, R>(
        n: usize,
        k: usize,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        dot: D,
        row: Option<R>,
    ) -> Vec<f32>
    where
        D: Fn(&[f32], usize) -> f32 + Sync,
        R: Fn(usize, &mut [f32]) + Sync,
    {
        let level = level();
        let per_task = rows_per_task(n);
        // Output transposed, [n, m], so that each task owns whole weight rows.
        let mut yt = vec![0f32; n * m];
        yt.par_chunks_mut(per_task * m)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * per_task;
                if let (Some(row), true) = (&row, m > 1) {
                    // Convert each weight row once, reuse it for the m activation rows.
                    let mut buf = vec![0f32; k];
                    for (j, ys) in out.chunks_exact_mut(m).enumerate() {
                        row(first + j, &mut buf);
                        for (r, y) in ys.iter_mut().enumerate() {
                            *y = dot_f32(&x[r * k..(r + 1) * k], &buf, level);
                        }
                    }
                } else {
                    for (j, ys) in out.chunks_exact_mut(m).enumerate() {
                        for (r, y) in ys.iter_mut().enumerate() {
                            *y = dot(&x[r * k..(r + 1) * k], first + j);
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
        add_bias(&mut y, n, bias);
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
        let level = level();
        let scale = 1.0 / (d as f32).sqrt();
        let mut y = vec![0f32; b * h * d];
        y.par_chunks_mut(d).enumerate().for_each(|(bh, out)| {
            let row = bh / h;
            let base = bh * cap * d;
            let qh = &q[bh * d..(bh + 1) * d];
            let first = pad[row].min(len);
            let scores: Vec<f32> = (first..len)
                .map(|l| dot_f32(qh, &k[base + l * d..base + (l + 1) * d], level) * scale)
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

    fn dot_f32(a: &[f32], b: &[f32], level: Level) -> f32 {
        #[cfg(target_arch = "x86_64")]
        match level {
            // SAFETY: each level is only chosen when its features were detected.
            Level::Avx512 => return unsafe { x86::dot_f32_512(a, b) },
            Level::Avx2 => return unsafe { x86::dot_f32(a, b) },
            Level::Portable => {}
        }
        let _ = level;
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The instruction set the dot products use, detected once at run time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Level {
        Portable,
        /// AVX2 + FMA + F16C.
        Avx2,
        /// AVX-512F on top of those: 16 lanes, twice the work per instruction.
        Avx512,
    }

    fn level() -> Level {
        static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(detect)
    }

    fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match (avx2, is_x86_feature_detected!("avx512f")) {
                (true, true) => Level::Avx512,
                (true, false) => Level::Avx2,
                _ => Level::Portable,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Level::Portable
        }
    }

    /// Every level this CPU can run, for tests that compare them.
    #[cfg(test)]
    pub fn levels() -> Vec<Level> {
        match detect() {
            Level::Avx512 => vec![Level::Portable, Level::Avx2, Level::Avx512],
            Level::Avx2 => vec![Level::Portable, Level::Avx2],
            Level::Portable => vec![Level::Portable],
        }
    }

    /// An f32 dot product at a given level (tests).
    #[cfg(test)]
    pub fn dot_f32_at(a: &[f32], b: &[f32], level: Level) -> f32 {
        dot_f32(a, b, level)
    }

    /// Weight row `o` dotted with `x` at a given level (tests).
    #[cfg(test)]
    pub fn dot_row_at(p: &Packed, x: &[f32], o: usize, level: Level) -> f32 {
        p.dot_row(x, o, level)
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::I8_BLOCK;
        use half::f16;
        use std::arch::x86_64::*;

        /// Lanes of one AVX register of f32.
        const LANES: usize = 8;

        /// One f16 to f32 with the F16C instruction (half's `to_f32` is a software routine here).
        #[inline]
        #[target_feature(enable = "f16c")]
        unsafe fn f16_to_f32(h: f16) -> f32 {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
        }

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

        /// `acc += a[0] w[0] + .. + a[3] w[3]`.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn axpy4_f32(acc: &mut [f32], a: [f32; 4], w: [&[f32]; 4]) {
            let n = acc.len().min(w.iter().map(|r| r.len()).min().unwrap_or(0));
            let av = a.map(|v| _mm256_set1_ps(v));
            let p = acc.as_mut_ptr();
            let mut j = 0;
            while j + LANES <= n {
                let mut s = _mm256_loadu_ps(p.add(j));
                for r in 0..4 {
                    s = _mm256_fmadd_ps(av[r], _mm256_loadu_ps(w[r].as_ptr().add(j)), s);
                }
                _mm256_storeu_ps(p.add(j), s);
                j += LANES;
            }
            while j < n {
                acc[j] += a[0] * w[0][j] + a[1] * w[1][j] + a[2] * w[2][j] + a[3] * w[3][j];
                j += 1;
            }
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
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn dot_i8(x: &[f32], q: &[i8], scales: &[f16]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (b, &s) in scales.iter().enumerate() {
                let s = f16_to_f32(s);
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

        /// Lanes of one AVX-512 register of f32.
        const LANES_512: usize = 16;
        /// How far ahead of the int8 weights being read the kernel prefetches.
        const PREFETCH_BYTES: usize = 2048;

        /// `acc += a[0] w[0] + .. + a[3] w[3]`, prefetching each weight row ahead.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn axpy4_f32_512(acc: &mut [f32], a: [f32; 4], w: [&[f32]; 4]) {
            let n = acc.len().min(w.iter().map(|r| r.len()).min().unwrap_or(0));
            let av = a.map(|v| _mm512_set1_ps(v));
            let p = acc.as_mut_ptr();
            let mut j = 0;
            while j + LANES_512 <= n {
                let mut s = _mm512_loadu_ps(p.add(j));
                for r in 0..4 {
                    let wp = w[r].as_ptr().add(j);
                    _mm_prefetch::<_MM_HINT_T0>((wp as *const i8).wrapping_add(PREFETCH_BYTES));
                    s = _mm512_fmadd_ps(av[r], _mm512_loadu_ps(wp), s);
                }
                _mm512_storeu_ps(p.add(j), s);
                j += LANES_512;
            }
            while j < n {
                acc[j] += a[0] * w[0][j] + a[1] * w[1][j] + a[2] * w[2][j] + a[3] * w[3][j];
                j += 1;
            }
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn dot_f32_512(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut i = 0;
            while i + 2 * LANES_512 <= n {
                // `b` is the weight stream (two cache lines per iteration).
                let ahead = b.as_ptr().add(i + PREFETCH_BYTES / 4) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
                acc0 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i + LANES_512)),
                    _mm512_loadu_ps(b.as_ptr().add(i + LANES_512)),
                    acc1,
                );
                i += 2 * LANES_512;
            }
            let mut s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
            while i < n {
                s += a[i] * b[i];
                i += 1;
            }
            s
        }

        /// `out[r * stride + j] = dot_f32_512(x[r], w[16t + j])` for the 16 weight rows of one
        /// tile and `R` activation rows `x` (`[R, k]`, `k` a multiple of 32), bit for bit, from
        /// the tile stored transposed (`tile[i * 16 + j] = w[16t + j][i]`, see
        /// `f32_tiles_of`): with the 16 outputs in the lanes, every step of `dot_f32_512`
        /// (lane `l`'s two accumulators over the even and odd 16-wide chunks, their sum, then
        /// `_mm512_reduce_add_ps`'s pairwise tree: lanes `i` and `i + 8`, then `j` and `j + 4`,
        /// `h` and `h + 2`, 0 and 1) is one vertical operation for 16 outputs at once, where the
        /// row-major dot ended each 64-input output in a horizontal sum (most of its cost for
        /// the demo's 50257-row head).
        #[target_feature(enable = "avx512f")]
        pub unsafe fn tile16_f32_512<const R: usize>(
            x: &[f32],
            k: usize,
            tile: &[f32],
            out: &mut [f32],
            stride: usize,
        ) {
            debug_assert!(k.is_multiple_of(2 * LANES_512) && x.len() >= R * k);
            debug_assert!(tile.len() >= 16 * k && out.len() >= (R - 1) * stride + 16);
            let (xp, tp) = (x.as_ptr(), tile.as_ptr());
            let zero = _mm512_setzero_ps();
            // t[i][r] = p_i + p_{i+8} for row r, where p_l = acc0_l + acc1_l are lane l of
            // dot_f32_512's accumulators (input 16c + l of chunk c): each weight vector is
            // loaded once for the R rows.
            let mut t = [[zero; R]; 8];
            for (i, ti) in t.iter_mut().enumerate() {
                for l in [i, i + 8] {
                    let (mut acc0, mut acc1) = ([zero; R], [zero; R]);
                    let mut c = l;
                    while c < k {
                        let w0 = _mm512_loadu_ps(tp.add(c * LANES_512));
                        let w1 = _mm512_loadu_ps(tp.add((c + LANES_512) * LANES_512));
                        for r in 0..R {
                            let xr = xp.add(r * k + c);
                            acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(*xr), w0, acc0[r]);
                            acc1[r] =
                                _mm512_fmadd_ps(_mm512_set1_ps(*xr.add(LANES_512)), w1, acc1[r]);
                        }
                        c += 2 * LANES_512;
                    }
                    for r in 0..R {
                        let p = _mm512_add_ps(acc0[r], acc1[r]);
                        ti[r] = if l == i { p } else { _mm512_add_ps(ti[r], p) };
                    }
                }
            }
            // u_j = t_j + t_{j+4}, v_h = u_h + u_{h+2}, s = v_0 + v_1.
            #[allow(clippy::needless_range_loop)] // r indexes the inner arrays of `t`
            for r in 0..R {
                let u = [
                    _mm512_add_ps(t[0][r], t[4][r]),
                    _mm512_add_ps(t[1][r], t[5][r]),
                    _mm512_add_ps(t[2][r], t[6][r]),
                    _mm512_add_ps(t[3][r], t[7][r]),
                ];
                let v = [_mm512_add_ps(u[0], u[2]), _mm512_add_ps(u[1], u[3])];
                _mm512_storeu_ps(out.as_mut_ptr().add(r * stride), _mm512_add_ps(v[0], v[1]));
            }
        }

        #[target_feature(enable = "avx512f,f16c")]
        pub unsafe fn dot_f16_512(x: &[f32], w: &[f16]) -> f32 {
            let n = x.len().min(w.len());
            let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let wp = w.as_ptr() as *const u16;
            let mut i = 0;
            while i + 2 * LANES_512 <= n {
                // 32 f16 weights = one cache line per iteration (see PREFETCH_BYTES).
                _mm_prefetch::<_MM_HINT_T0>(wp.add(i + PREFETCH_BYTES / 2) as *const i8);
                let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(i) as *const __m256i));
                let w1 =
                    _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(i + LANES_512) as *const __m256i));
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(i)), w0, acc0);
                acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(i + LANES_512)), w1, acc1);
                i += 2 * LANES_512;
            }
            let mut s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
            while i < n {
                s += x[i] * w[i].to_f32();
                i += 1;
            }
            s
        }

        /// `k` is a multiple of I8_BLOCK (checked when packing). Two blocks per iteration into
        /// two accumulators, so that the scale's multiply-add does not wait on the previous one.
        #[target_feature(enable = "avx512f,f16c")]
        pub unsafe fn dot_i8_512(x: &[f32], q: &[i8], scales: &[f16]) -> f32 {
            #[inline(always)]
            unsafe fn block(x: *const f32, q: *const i8) -> __m512 {
                let q0 =
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q as *const __m128i)));
                let q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    q.add(LANES_512) as *const __m128i,
                )));
                let p = _mm512_mul_ps(_mm512_loadu_ps(x), q0);
                _mm512_fmadd_ps(_mm512_loadu_ps(x.add(LANES_512)), q1, p)
            }
            let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let (xp, qp) = (x.as_ptr(), q.as_ptr());
            let blocks = scales.len();
            let mut b = 0;
            let sp = scales.as_ptr();
            while b + 2 <= blocks {
                let o = b * I8_BLOCK;
                // Software prefetch of the weight stream (and its scales), a few rows ahead:
                // the hardware prefetcher alone left half the memory bandwidth unused.
                _mm_prefetch::<_MM_HINT_T0>(qp.add(o + PREFETCH_BYTES));
                if b % 16 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(sp.add(b + PREFETCH_BYTES / I8_BLOCK) as *const i8);
                }
                acc0 = _mm512_fmadd_ps(
                    block(xp.add(o), qp.add(o)),
                    _mm512_set1_ps(f16_to_f32(scales[b])),
                    acc0,
                );
                let o = o + I8_BLOCK;
                acc1 = _mm512_fmadd_ps(
                    block(xp.add(o), qp.add(o)),
                    _mm512_set1_ps(f16_to_f32(scales[b + 1])),
                    acc1,
                );
                b += 2;
            }
            if b < blocks {
                let o = b * I8_BLOCK;
                acc0 = _mm512_fmadd_ps(
                    block(xp.add(o), qp.add(o)),
                    _mm512_set1_ps(f16_to_f32(scales[b])),
                    acc0,
                );
            }
            _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
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
        // 1 and 3 rows: dot products over weight rows; 7: the tiled gemm path.
        for m in [1, 3, 7] {
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

    /// GPT-2's Conv1D weights are used as stored, `[in, out]`: the few-row kernel at each
    /// instruction-set level, and the projection's gemm path, against an f64 reference.
    #[test]
    fn conv1d_layout_matches_the_reference_at_every_level() {
        use super::kernels::{levels, matmul_f32_in_out_at};
        use candle_core::{Device, Tensor};
        // n = 200: 16- and 8-lane tails; k = 7, 97: a last group of 3 and 1 weight rows.
        for k in [7, 96, 97] {
            let n = 200;
            let w_in_out = values(k * n, 20 + k as u64);
            let w_out_in: Vec<f32> = (0..n * k).map(|j| w_in_out[(j % k) * n + j / k]).collect();
            let b = values(n, 21);
            for m in [1, 3, 4, 7] {
                let x = values(m * k, 22 + m as u64);
                let want = reference(&x, &w_out_in, m, n, k, &b);
                let tol = k as f32 * 1e-6;
                let check = |got: &[f32], what: &str| {
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(worst <= tol, "{what} k={k} m={m}: worst {worst} > {tol}");
                };
                for level in levels() {
                    check(
                        &matmul_f32_in_out_at(&w_in_out, k, n, &x, m, Some(&b), level),
                        &format!("{level:?}"),
                    );
                }
                let cpu = &Device::Cpu;
                let proj = super::Proj::f32_in_out(
                    Tensor::from_slice(&w_in_out, (k, n), cpu).unwrap(),
                    Some(Tensor::from_slice(&b, n, cpu).unwrap()),
                )
                .unwrap();
                let xt = Tensor::from_slice(&x, (m, k), cpu).unwrap();
                let got = proj.forward(&xt).unwrap().flatten_all().unwrap();
                check(&got.to_vec1::<f32>().unwrap(), "Proj::forward");
            }
        }
    }

    /// The 16-row tiles (AVX-512) give each output exactly the dot product a row alone gets,
    /// at every batch size: `adiff serve`'s batches answer as `adiff explain` does.
    #[test]
    fn f32_tiles_are_bit_identical_to_single_dot_products() {
        use super::kernels::{dot_f32_at, f32_tiles_of, levels, matmul_f32_tiled, Level};
        if !levels().contains(&Level::Avx512) {
            return; // the tiles run on AVX-512 only
        }
        // n = 200: twelve tiles and a tail of 8 rows; k = 64 (the demo), 96, 256; m odd and
        // even (the kernel takes rows in pairs).
        for k in [64, 96, 256] {
            let n = 200;
            let w = values(n * k, 40 + k as u64);
            let b = values(n, 41);
            let tiles = f32_tiles_of(&w, n, k);
            for m in [1, 2, 3, 7, 16] {
                let x = values(m * k, 42 + m as u64);
                let got = matmul_f32_tiled(&w, &tiles, n, k, &x, m, Some(&b));
                for r in 0..m {
                    for o in 0..n {
                        let want = dot_f32_at(
                            &x[r * k..(r + 1) * k],
                            &w[o * k..(o + 1) * k],
                            Level::Avx512,
                        ) + b[o];
                        assert_eq!(
                            got[r * n + o].to_bits(),
                            want.to_bits(),
                            "k={k} m={m} row {r} output {o}: {} vs {want}",
                            got[r * n + o]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_dot_products() {
        use super::kernels::{dot_row_at, levels};
        // k = 800: 25 int8 blocks (an odd count: the AVX-512 loop's single-block tail), and
        // f16 tails after the 32- and 16-lane loops.
        let (n, k) = (5, 800);
        let w = values(n * k, 11);
        let x = values(k, 12);
        for packed in [Packed::f16(&w, n, k), Packed::i8(&w, n, k)] {
            for o in 0..n {
                let want = dot_row_at(&packed, &x, o, levels()[0]); // portable
                for &level in &levels()[1..] {
                    let got = dot_row_at(&packed, &x, o, level);
                    // Same products, other summation order: f32 rounding over 800 terms.
                    assert!(
                        (got - want).abs() <= 1e-4,
                        "{level:?} row {o}: {got} vs portable {want}"
                    );
                }
            }
        }
    }
}

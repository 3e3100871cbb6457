//! GPT-2 (the Hugging Face layout) as ADIFF's caption decoder.
//!
//! The model is fed `inputs_embeds` (ADIFF's 121-token prefix) at positions 0.., then one token
//! per step through a preallocated key/value cache. Rows of a batch may have different prefix
//! lengths: they are left-aligned by the caller (right padding) and stored left-padded in the
//! cache, so every row appends at the same cache slot and a per-row key mask hides the padding
//! (the same scheme as Hugging Face `generate` with an attention mask).
//!
//! Weights load from either naming scheme through a [`VarBuilder`]: the hub names (`wte.weight`,
//! `h.0.attn.c_attn.weight`, ... optionally under `transformer.`) and ADIFF's
//! (`caption_decoder.gpt.transformer.*` with `caption_decoder.gpt.lm_head.weight`). Conv1D weights
//! are stored `[in, out]`. The causal-mask buffers `attn.bias` / `attn.masked_bias` are never read.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::error::{AdiffError, Result};
use crate::model::config::Gpt2Config;
use crate::model::ops;

/// Additive attention bias for masked keys. Finite (like Hugging Face's `finfo.min`) so that a
/// fully masked row (a padding query) gives a uniform softmax instead of NaNs that would leak
/// into later layers through `0 * NaN`.
const MASKED: f32 = f32::MIN;

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
enum Proj {
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
        w: packed::Packed,
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
    fn new(w_out_in: Tensor, b: Option<Tensor>, format: WeightFormat) -> Result<Self> {
        let (d_out, d_in) = w_out_in.dims2()?;
        let needs_blocks = matches!(format, WeightFormat::I8 | WeightFormat::Q8_0);
        if needs_blocks && !d_in.is_multiple_of(packed::I8_BLOCK) {
            return Err(AdiffError::Invalid(format!(
                "{format:?} weights need input widths divisible by {}, got {d_in}",
                packed::I8_BLOCK
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
                w: packed::Packed::f16(&rows()?, d_out, d_in),
                b,
                b_vec,
            },
            WeightFormat::I8 => Proj::Packed {
                w: packed::Packed::i8(&rows()?, d_out, d_in),
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
    fn weight_out_in(&self) -> Result<Tensor> {
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

    fn bias(&self) -> Option<&Tensor> {
        match self {
            Proj::F32 { b, .. }
            | Proj::Packed { b, .. }
            | Proj::Quant { b, .. }
            | Proj::Trainable { b, .. } => b.as_ref(),
        }
    }

    /// x: [M, in] -> [M, out]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
    let y = packed::matmul_f32(w, n, k, &xs, m, bias);
    Ok(Some(Tensor::from_vec(y, (m, n), x.device())?))
}

/// Hugging Face GPT-2's initialisation (`initializer_range`): what a tensor missing from the
/// checkpoint starts from when training with `--init-missing`; loading never uses it.
const INIT_STD: f64 = 0.02;

fn normal_init(stdev: f64) -> candle_nn::Init {
    candle_nn::Init::Randn { mean: 0.0, stdev }
}

/// Reads a Conv1D (`weight [in, out]`, `bias [out]`); a missing weight would start from
/// N(0, `init_std`^2) and a missing bias from zeros.
fn conv1d(vb: &VarBuilder, d_in: usize, d_out: usize, init_std: f64) -> Result<Proj> {
    let w = vb.get_with_hints((d_in, d_out), "weight", normal_init(init_std))?; // Conv1D: [in, out]
    let b = vb.get_with_hints(d_out, "bias", candle_nn::Init::Const(0.0))?;
    if w.is_variable() || b.is_variable() {
        return Ok(Proj::Trainable {
            w_in_out: w,
            b: Some(b),
        });
    }
    Proj::new(w.t()?, Some(b), WeightFormat::F32)
}

fn layer_norm(vb: VarBuilder, cfg: &Gpt2Config) -> Result<LayerNorm> {
    Ok(candle_nn::layer_norm(
        cfg.n_embd,
        cfg.layer_norm_epsilon,
        vb,
    )?)
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Proj,
    attn_proj: Proj,
    ln_2: LayerNorm,
    c_fc: Proj,
    mlp_proj: Proj,
    n_head: usize,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Gpt2Config) -> Result<Self> {
        let c = cfg.n_embd;
        let inner = 4 * c; // GPT-2's n_inner default (None -> 4 * n_embd)
                           // Hugging Face scales the residual projections' initialisation by 1/sqrt(2 * n_layer).
        let proj_std = INIT_STD / (2.0 * cfg.n_layer as f64).sqrt();
        Ok(Self {
            ln_1: layer_norm(vb.pp("ln_1"), cfg)?,
            c_attn: conv1d(&vb.pp("attn.c_attn"), c, 3 * c, INIT_STD)?,
            attn_proj: conv1d(&vb.pp("attn.c_proj"), c, c, proj_std)?,
            ln_2: layer_norm(vb.pp("ln_2"), cfg)?,
            c_fc: conv1d(&vb.pp("mlp.c_fc"), c, inner, INIT_STD)?,
            mlp_proj: conv1d(&vb.pp("mlp.c_proj"), inner, c, proj_std)?,
            n_head: cfg.n_head,
        })
    }

    fn projs_mut(&mut self) -> [&mut Proj; 4] {
        [
            &mut self.c_attn,
            &mut self.attn_proj,
            &mut self.c_fc,
            &mut self.mlp_proj,
        ]
    }

    /// x: [B, T, C] written at cache slots `offset..offset+T`; `mask`: additive bias
    /// broadcastable to [B, H, T, offset+T] (None = every key visible); `pad`: each row's
    /// masked leading slots (the same information, for the one-token path).
    fn forward(
        &self,
        x: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        offset: usize,
        mask: Option<&Tensor>,
        pad: &[usize],
    ) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let h = self.n_head;
        let d = c / h;
        let residual = x;
        let x = ops::layer_norm(&self.ln_1, x)?.reshape((b * t, c))?; // [B*T, C]
        let qkv = self.c_attn.forward(&x)?.reshape((b, t, 3 * c))?; // [B, T, 3C]
        let heads = |i: usize| -> Result<Tensor> {
            // [B, T, C] -> [B, T, H, D] -> [B, H, T, D]
            let part = qkv.narrow(2, i * c, c)?.reshape((b, t, h, d))?;
            Ok(if t == 1 {
                part.reshape((b, h, 1, d))?
            } else {
                part.transpose(1, 2)?.contiguous()?
            })
        };
        let q = heads(0)?; // [B, H, T, D]
        k_cache.slice_set(&heads(1)?, 2, offset)?;
        v_cache.slice_set(&heads(2)?, 2, offset)?;
        let len = offset + t;
        if t == 1 {
            // One query per row: dot products straight over the cache, no gemm calls.
            if let Some(y) = attend_one(&q, k_cache, v_cache, len, pad)? {
                return self.finish(residual, &y.reshape((b, c))?);
            }
        }
        let k = k_cache.narrow(2, 0, len)?; // [B, H, L, D] (strided view, no copy)
        let v = v_cache.narrow(2, 0, len)?; // [B, H, L, D]
        let scale = 1.0 / (d as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?; // [B, H, T, L]
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = ops::softmax_last_dim(&att)?; // [B, H, T, L]
        let y = att.matmul(&v)?; // [B, H, T, D]
        let y = if t == 1 {
            y.reshape((b * t, c))?
        } else {
            y.transpose(1, 2)?.reshape((b * t, c))? // [B*T, C]
        };
        self.finish(residual, &y)
    }

    /// x: [B, T, C] at positions 0..T without a cache (every op differentiable); `mask`: the
    /// additive causal bias [1, 1, T, T].
    fn forward_full(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let h = self.n_head;
        let d = c / h;
        let xn = ops::layer_norm(&self.ln_1, x)?.reshape((b * t, c))?; // [B*T, C]
        let qkv = self.c_attn.forward(&xn)?.reshape((b, t, 3 * c))?; // [B, T, 3C]
        if qkv.track_op() {
            // Training on the CPU: the same causal attention as one op with its own backward.
            if let Some(y) = ops::attention(&qkv, h, true)? {
                return self.finish(x, &y.reshape((b * t, c))?); // [B, T, C] -> [B*T, C]
            }
        }
        // [B, T, C] -> [B, H, T, D]
        let heads = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * c, c)?
                .reshape((b, t, h, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let scale = 1.0 / (d as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?; // [B, H, T, T]
        let att = ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b * t, c))?; // [B*T, C]
        self.finish(x, &y)
    }

    /// Output projection, residual and MLP: attention output y [B*T, C] -> block output [B, T, C].
    fn finish(&self, residual: &Tensor, y: &Tensor) -> Result<Tensor> {
        let (b, t, c) = residual.dims3()?;
        let y = self.attn_proj.forward(y)?.reshape((b, t, c))?;
        let x = (residual + y)?; // [B, T, C]
        let m = ops::layer_norm(&self.ln_2, &x)?.reshape((b * t, c))?;
        let m = ops::gelu(&self.c_fc.forward(&m)?)?; // gelu_new (tanh approximation), [B*T, 4C]
        let m = self.mlp_proj.forward(&m)?.reshape((b, t, c))?;
        Ok((x + m)?)
    }
}

/// Single-query attention on the CPU, reading the caches in place: q [B, H, 1, D], caches
/// [B, H, capacity, D] with `len` slots filled, row b's first `pad[b]` slots masked (skipped:
/// the same as an additive f32::MIN, whose exp underflows to exactly 0). Returns [B, H, D]
/// (= [B, C] with heads concatenated), or None when the tensors are not on the CPU.
fn attend_one(
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
    let y = packed::attend_one(&qv, k, v, b, h, cap, d, len, pad);
    Ok(Some(Tensor::from_vec(y, (b, h, d), q.device())?))
}

/// Key/value cache for one batch: `[B, H, capacity, D]` per layer, filled left to right.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Slots already written (the same for every row).
    len: usize,
    capacity: usize,
    /// Left-padding slots of each row (masked keys, not positions).
    pad: Vec<usize>,
    /// Additive key mask `[B, 1, 1, capacity]`; None when no row is padded.
    key_mask: Option<Tensor>,
}

impl KvCache {
    pub fn batch_size(&self) -> usize {
        self.pad.len()
    }

    /// Slots written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Position id of the next token of each row (its real length so far).
    pub fn next_positions(&self) -> Vec<usize> {
        self.pad.iter().map(|p| self.len - p).collect()
    }

    /// Keeps only `rows` (in that order): finished rows stop costing work, beams get reordered.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&r) = rows.iter().find(|&&r| r >= self.batch_size()) {
            return Err(AdiffError::Invalid(format!(
                "kv cache: row {r} out of range for batch {}",
                self.batch_size()
            )));
        }
        let dev = self
            .k
            .first()
            .map(|t| t.device().clone())
            .unwrap_or(Device::Cpu);
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &dev,
        )?;
        let pick = |ts: &[Tensor]| -> Result<Vec<Tensor>> {
            ts.iter()
                .map(|t| Ok(t.index_select(&idx, 0)?))
                .collect::<Result<Vec<_>>>()
        };
        let pad: Vec<usize> = rows.iter().map(|&r| self.pad[r]).collect();
        let key_mask = match &self.key_mask {
            Some(m) if pad.iter().any(|&p| p > 0) => Some(m.index_select(&idx, 0)?),
            _ => None,
        };
        Ok(KvCache {
            k: pick(&self.k)?,
            v: pick(&self.v)?,
            len: self.len,
            capacity: self.capacity,
            pad,
            key_mask,
        })
    }
}

/// GPT-2 language model with a tied or separate lm_head.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    wte: Tensor, // [V, C]
    wpe: Tensor, // [P, C]
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `[C, V]` projection to the vocabulary (no bias).
    lm_head: Proj,
    cfg: Gpt2Config,
    format: WeightFormat,
}

impl Gpt2 {
    /// Loads from `vb`, which points at the model root: the hub layout (`wte.weight` or
    /// `transformer.wte.weight`) or ADIFF's (`vb.pp("caption_decoder.gpt")`, holding
    /// `transformer.*` and `lm_head.weight`). Without `lm_head.weight` the head is tied to `wte`.
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config) -> Result<Self> {
        Self::load_or_init(vb, cfg, false)
    }

    /// As [`Gpt2::load`]; with `init_missing` (a var builder that initialises missing
    /// tensors), a checkpoint without any GPT-2 tensor gives a freshly initialised GPT-2 with
    /// the head tied to `wte`.
    pub fn load_or_init(vb: VarBuilder, cfg: &Gpt2Config, init_missing: bool) -> Result<Self> {
        if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) || cfg.n_layer == 0 {
            return Err(AdiffError::Config(format!(
                "gpt2: n_embd {} must be a positive multiple of n_head {}, with n_layer > 0",
                cfg.n_embd, cfg.n_head
            )));
        }
        let tvb = if vb.contains_tensor("transformer.wte.weight") {
            vb.pp("transformer")
        } else if vb.contains_tensor("wte.weight") {
            vb.clone()
        } else if init_missing {
            // Training from scratch: the ADIFF layout, every tensor from its initialisation.
            vb.pp("transformer")
        } else {
            return Err(AdiffError::Invalid(format!(
                "no GPT-2 weights under '{}': neither transformer.wte.weight nor wte.weight found",
                vb.prefix()
            )));
        };
        let (v, c) = (cfg.vocab_size, cfg.n_embd);
        let wte = tvb
            .get_with_hints((v, c), "wte.weight", normal_init(INIT_STD))?
            .contiguous()?;
        let wpe = tvb
            .get_with_hints((cfg.n_positions, c), "wpe.weight", normal_init(INIT_STD))?
            .contiguous()?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(tvb.pp(format!("h.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = layer_norm(tvb.pp("ln_f"), cfg)?;
        let head = if vb.contains_tensor("lm_head.weight") {
            vb.get((v, c), "lm_head.weight")?
        } else {
            wte.clone()
        };
        // [V, C] is already [out, in]; tied, it shares wte's storage.
        let lm_head = Proj::new(head, None, WeightFormat::F32)?;
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            cfg: cfg.clone(),
            format: WeightFormat::F32,
        })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    pub fn weight_format(&self) -> WeightFormat {
        self.format
    }

    /// Re-packs the matmul weights into `format` (from the f32 originals when converting twice
    /// from F32, otherwise from the dequantized values).
    pub fn with_weight_format(mut self, format: WeightFormat) -> Result<Self> {
        if format == self.format {
            return Ok(self);
        }
        let repack = |p: &mut Proj| -> Result<()> {
            let b = p.bias().cloned();
            *p = Proj::new(p.weight_out_in()?, b, format)?;
            Ok(())
        };
        for block in &mut self.blocks {
            for p in block.projs_mut() {
                repack(p)?;
            }
        }
        repack(&mut self.lm_head)?;
        self.format = format;
        Ok(self)
    }

    /// The token embedding table `[V, C]` (ADIFF's text mapper and separator read it).
    pub fn wte(&self) -> &Tensor {
        &self.wte
    }

    /// Token embeddings (no position added): ids [B, T] -> [B, T, C].
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        if let Some(&bad) = flat
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?
            .iter()
            .find(|&&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(AdiffError::Invalid(format!(
                "token id {bad} is outside the GPT-2 vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        Ok(self
            .wte
            .index_select(&flat, 0)?
            .reshape((b, t, self.cfg.n_embd))?)
    }

    fn check_embeds(&self, embeds: &Tensor) -> Result<(usize, usize)> {
        let (b, t, c) = embeds.dims3().map_err(|_| {
            AdiffError::Invalid(format!(
                "inputs_embeds must be [batch, time, {}], got {:?}",
                self.cfg.n_embd,
                embeds.dims()
            ))
        })?;
        if c != self.cfg.n_embd || b == 0 || t == 0 {
            return Err(AdiffError::Invalid(format!(
                "inputs_embeds must be [batch >= 1, time >= 1, {}], got {:?}",
                self.cfg.n_embd,
                embeds.dims()
            )));
        }
        if t > self.cfg.n_positions {
            return Err(AdiffError::Invalid(format!(
                "prefix of {t} positions exceeds GPT-2's limit of {}",
                self.cfg.n_positions
            )));
        }
        if embeds.dtype() != DType::F32 {
            return Err(AdiffError::Invalid(format!(
                "inputs_embeds must be f32, got {:?}",
                embeds.dtype()
            )));
        }
        Ok((b, t))
    }

    /// Full causal forward without a cache: inputs_embeds [B, T, C] at positions 0..T
    /// -> logits [B, T, V]. The reference recomputation that the cached path must equal.
    pub fn forward(&self, embeds: &Tensor) -> Result<Tensor> {
        let (_, t) = self.check_embeds(embeds)?;
        let mut cache = self.new_cache(&vec![0; embeds.dim(0)?], t, embeds.device())?;
        let hidden = self.run(embeds, &mut cache)?; // [B, T, C]
        self.head(&hidden)
    }

    /// Training forward: inputs_embeds [B, T, C] at positions 0..T -> final hidden states
    /// (after ln_f) [B, T, C], through differentiable ops only (no cache, no raw-slice
    /// kernels), so gradients reach the inputs and any trainable weight. Rows are right-padded:
    /// causal attention keeps padding from reaching earlier positions, so no key mask is needed.
    pub fn forward_hidden(&self, embeds: &Tensor) -> Result<Tensor> {
        let (_, t) = self.check_embeds(embeds)?;
        let mask = Self::causal_mask(t, embeds.device())?; // [1, 1, T, T]
        let mut x = self.add_positions(embeds)?; // [B, T, C]
        for i in 0..self.num_blocks() {
            x = self.block_forward(i, &x, &mask)?;
        }
        self.final_norm(&x)
    }

    /// The additive causal bias [1, 1, T, T] of the training forward: query i sees keys 0..=i.
    pub fn causal_mask(t: usize, dev: &Device) -> Result<Tensor> {
        let mut m = vec![0f32; t * t];
        for q in 0..t {
            m[q * t + q + 1..(q + 1) * t].fill(MASKED);
        }
        Ok(Tensor::from_vec(m, (1, 1, t, t), dev)?)
    }

    /// inputs_embeds [B, T, C] + position embeddings 0..T -> [B, T, C] (the first block's input).
    pub fn add_positions(&self, embeds: &Tensor) -> Result<Tensor> {
        let t = embeds.dim(1)?;
        let pos = self.wpe.narrow(0, 0, t)?.unsqueeze(0)?; // [1, T, C]
        Ok(embeds.broadcast_add(&pos)?)
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Block `i` of the training forward (differentiable, no cache): x [B, T, C] -> [B, T, C];
    /// `mask` from [`Gpt2::causal_mask`]. With [`Gpt2::add_positions`] and [`Gpt2::final_norm`]
    /// it is [`Gpt2::forward_hidden`] one block at a time (the training profiler times each).
    pub fn block_forward(&self, i: usize, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let block = self.blocks.get(i).ok_or_else(|| {
            AdiffError::Invalid(format!(
                "gpt2 has {} blocks, no block {i}",
                self.blocks.len()
            ))
        })?;
        block.forward_full(x, mask)
    }

    /// The final layer norm `ln_f`: [B, T, C] -> [B, T, C].
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::layer_norm(&self.ln_f, x)?)
    }

    /// Hidden states [B, T, C] -> logits [B, T, V] (the tied or separate lm_head).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head(hidden)
    }

    /// Runs the prefix and fills a new cache that can take `capacity` slots in all.
    /// `embeds` [B, T, C] holds each row's prefix from position 0 (right padding after
    /// `lengths[b]`, whose values must lie in 1..=T; None means every row is T long).
    /// Returns the logits of each row's last prefix position [B, V] and the cache.
    pub fn start(
        &self,
        embeds: &Tensor,
        lengths: Option<&[usize]>,
        capacity: usize,
    ) -> Result<(Tensor, KvCache)> {
        let (b, t) = self.check_embeds(embeds)?;
        let lengths: Vec<usize> = match lengths {
            Some(l) => l.to_vec(),
            None => vec![t; b],
        };
        if lengths.len() != b {
            return Err(AdiffError::Invalid(format!(
                "{} prefix lengths given for a batch of {b}",
                lengths.len()
            )));
        }
        if let Some(&bad) = lengths.iter().find(|&&l| l == 0 || l > t) {
            return Err(AdiffError::Invalid(format!(
                "prefix length {bad} is outside 1..={t}"
            )));
        }
        if capacity < t || capacity > self.cfg.n_positions {
            return Err(AdiffError::Invalid(format!(
                "cache capacity {capacity} must lie in {t}..={}",
                self.cfg.n_positions
            )));
        }
        let pad: Vec<usize> = lengths.iter().map(|&l| t - l).collect();
        // Right padding -> left padding: row b's real tokens end at slot T-1.
        let embeds = if pad.iter().all(|&p| p == 0) {
            embeds.clone()
        } else {
            let rows = (0..b)
                .map(|r| {
                    let row = embeds.get(r)?; // [T, C]
                    if pad[r] == 0 {
                        return Ok(row);
                    }
                    let zeros = Tensor::zeros((pad[r], self.cfg.n_embd), DType::F32, row.device())?;
                    Ok(Tensor::cat(&[&zeros, &row.narrow(0, 0, lengths[r])?], 0)?)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::stack(&rows, 0)? // [B, T, C]
        };
        let mut cache = self.new_cache(&pad, capacity, embeds.device())?;
        let hidden = self.run(&embeds, &mut cache)?; // [B, T, C]
        let last = hidden.narrow(1, t - 1, 1)?; // [B, 1, C]
        let logits = self.head(&last)?.squeeze(1)?; // [B, V]
        Ok((logits, cache))
    }

    /// Feeds one token per row (ids [B]) and returns the next logits [B, V].
    pub fn step(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let dev = self.wte.device();
        let idx = Tensor::from_vec(ids.to_vec(), (ids.len(), 1), dev)?;
        let embeds = self.embed_ids(&idx)?; // [B, 1, C]
        self.step_embeds(&embeds, cache)
    }

    /// Feeds one embedding per row ([B, 1, C]) and returns the next logits [B, V].
    pub fn step_embeds(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = self.check_embeds(embeds)?;
        if t != 1 || b != cache.batch_size() {
            return Err(AdiffError::Invalid(format!(
                "a step takes [{}, 1, {}] embeddings, got {:?}",
                cache.batch_size(),
                self.cfg.n_embd,
                embeds.dims()
            )));
        }
        let hidden = self.run(embeds, cache)?; // [B, 1, C]
        Ok(self.head(&hidden)?.squeeze(1)?) // [B, V]
    }

    fn new_cache(&self, pad: &[usize], capacity: usize, dev: &Device) -> Result<KvCache> {
        let b = pad.len();
        let h = self.cfg.n_head;
        let d = self.cfg.n_embd / h;
        let zeros = || Tensor::zeros((b, h, capacity, d), DType::F32, dev);
        let mut k = Vec::with_capacity(self.blocks.len());
        let mut v = Vec::with_capacity(self.blocks.len());
        for _ in &self.blocks {
            k.push(zeros()?);
            v.push(zeros()?);
        }
        let key_mask = if pad.iter().any(|&p| p > 0) {
            let mut m = vec![0f32; b * capacity];
            for (r, &p) in pad.iter().enumerate() {
                m[r * capacity..r * capacity + p].fill(MASKED);
            }
            Some(Tensor::from_vec(m, (b, 1, 1, capacity), dev)?)
        } else {
            None
        };
        Ok(KvCache {
            k,
            v,
            len: 0,
            capacity,
            pad: pad.to_vec(),
            key_mask,
        })
    }

    /// Runs `embeds` [B, T, C] at the cache's next slots; returns ln_f output [B, T, C].
    fn run(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t, _) = embeds.dims3()?;
        let offset = cache.len;
        if offset + t > cache.capacity {
            return Err(AdiffError::Invalid(format!(
                "kv cache full: {offset} + {t} slots exceed its capacity {}",
                cache.capacity
            )));
        }
        let dev = embeds.device();
        // Position ids: slot - pad (padding slots get position 0; they are masked anyway).
        let pos = if cache.pad.iter().all(|&p| p == 0) {
            self.wpe.narrow(0, offset, t)?.unsqueeze(0)? // [1, T, C]
        } else {
            let ids: Vec<u32> = cache
                .pad
                .iter()
                .flat_map(|&p| (offset..offset + t).map(move |s| s.saturating_sub(p) as u32))
                .collect();
            let ids = Tensor::from_vec(ids, b * t, dev)?;
            self.wpe
                .index_select(&ids, 0)?
                .reshape((b, t, self.cfg.n_embd))? // [B, T, C]
        };
        let mut x = embeds.broadcast_add(&pos)?; // [B, T, C]
        let len = offset + t;
        // Additive mask [B or 1, 1, T, L]: causal within the new tokens, plus padded keys.
        let mask = if t > 1 {
            let mut m = vec![0f32; t * len];
            for q in 0..t {
                m[q * len + offset + q + 1..(q + 1) * len].fill(MASKED);
            }
            let causal = Tensor::from_vec(m, (1, 1, t, len), dev)?;
            Some(match &cache.key_mask {
                // minimum, not sum: MASKED + MASKED would overflow to -inf.
                Some(km) => causal.broadcast_minimum(&km.narrow(3, 0, len)?)?,
                None => causal,
            })
        } else {
            match &cache.key_mask {
                Some(km) => Some(km.narrow(3, 0, len)?),
                None => None,
            }
        };
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(
                &x,
                &cache.k[i],
                &cache.v[i],
                offset,
                mask.as_ref(),
                &cache.pad,
            )?;
        }
        cache.len = len;
        Ok(ops::layer_norm(&self.ln_f, &x)?)
    }

    /// hidden [B, T, C] -> logits [B, T, V].
    fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, c) = hidden.dims3()?;
        let logits = self.lm_head.forward(&hidden.reshape((b * t, c))?)?; // [B*T, V]
        Ok(logits.reshape((b, t, self.cfg.vocab_size))?)
    }
}

/// Matrix products with compact weights (f16, or int8 with one f32 scale per block) and f32
/// activations, for decoding on a CPU, where a step reads every weight once and memory bandwidth
/// is the limit: halving or quartering the bytes read is what makes a step cheaper.
///
/// Weights are rows `[out, in]`; each output is a dot product of an activation row with a weight
/// row, converted to f32 on the fly. Rows are split across rayon's pool (candle's own threads).
/// On x86-64 with AVX2/FMA/F16C (checked at run time) the dot products use those instructions;
/// elsewhere a portable loop gives the same results up to summation order.
mod packed {
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
    use super::packed::Packed;

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

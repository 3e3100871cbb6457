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
//!
//! Each projection is a [`Proj`] whose weight format (f32, f16, int8, Q8_0) and kernels live in
//! `packed.rs`; this file is the model a reader follows top to bottom.

use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{AdiffError, Result};
use crate::model::ops;
pub use crate::model::packed::WeightFormat;
use crate::model::packed::{attend_one, Proj, Visitor};

/// GPT-2 (Hugging Face names). base/medium/large/xl differ only in these numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub layer_norm_epsilon: f64,
    /// Hugging Face repo (`gpt2`, `gpt2-medium`, ...) whose pretrained weights fill GPT-2 when
    /// the checkpoint has none (e.g. before training). `adiff download gpt2` fetches it ahead of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_repo: Option<String>,
}

impl Gpt2Config {
    pub fn validate(&self) -> Result<()> {
        crate::error::require_positive(
            "gpt2",
            &[
                ("vocab_size", self.vocab_size as f64),
                ("n_positions", self.n_positions as f64),
                ("n_embd", self.n_embd as f64),
                ("n_head", self.n_head as f64),
                ("layer_norm_epsilon", self.layer_norm_epsilon),
            ],
        )
    }
}

/// Additive attention bias for masked keys. Finite (like Hugging Face's `finfo.min`) so that a
/// fully masked row (a padding query) gives a uniform softmax instead of NaNs that would leak
/// into later layers through `0 * NaN`.
const MASKED: f32 = f32::MIN;

/// Hugging Face GPT-2's initialisation (`initializer_range`): what a tensor missing from the
/// checkpoint starts from when training with `--init-missing`; loading never uses it.
const INIT_STD: f64 = 0.02;

fn normal_init(stdev: f64) -> candle_nn::Init {
    candle_nn::Init::Randn { mean: 0.0, stdev }
}

/// Reads a Conv1D (`weight [in, out]`, `bias [out]`); a missing weight would start from
/// N(0, `init_std`^2) and a missing bias from zeros.
fn conv1d(vb: &VarBuilder, d_in: usize, d_out: usize, init_std: f64) -> Result<Proj> {
    if let Some(p) = Proj::load_stored(vb, d_out, d_in, true)? {
        return Ok(p); // packed by `adiff convert --dtype`
    }
    let w = vb.get_with_hints((d_in, d_out), "weight", normal_init(init_std))?; // Conv1D: [in, out]
    let b = vb.get_with_hints(d_out, "bias", candle_nn::Init::Const(0.0))?;
    if w.is_variable() || b.is_variable() {
        return Ok(Proj::Trainable {
            w_in_out: w,
            b: Some(b),
        });
    }
    Proj::f32_in_out(w, Some(b)) // kept as stored: `y = x W + b`
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

    /// The projections with their names under the block's.
    fn projs_mut(&mut self) -> [(&'static str, &mut Proj); 4] {
        [
            ("attn.c_attn", &mut self.c_attn),
            ("attn.c_proj", &mut self.attn_proj),
            ("mlp.c_fc", &mut self.c_fc),
            ("mlp.c_proj", &mut self.mlp_proj),
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
        let att = ops::attention_softmax(&att, mask)?; // [B, H, T, L], softmax in f32
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
        let att = (q.matmul(&k.t()?)? * scale)?; // [B, H, T, T]
        let att = ops::attention_softmax(&att, Some(mask))?; // softmax in f32
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
    /// `[V, C]`; None when the head is tied to it and packed (`--dtype f16|i8`): the
    /// embedding rows are then read from the packed head, so the table is held once.
    wte: Option<Tensor>,
    /// Whether the head is the embedding table (no `lm_head.weight` of its own).
    tied: bool,
    wpe: Tensor, // [P, C]
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `[C, V]` projection to the vocabulary (no bias).
    lm_head: Proj,
    cfg: Gpt2Config,
    format: WeightFormat,
    /// The activations' dtype: the weights' as loaded (f32, or bf16/f16 on a GPU), or bf16 over
    /// f32 master weights in mixed-precision training. Logits leave [`Gpt2::logits`] in f32.
    compute: DType,
    /// Checkpoint names of the blocks' parent (`...transformer`, or the hub file's root) and of
    /// the head (`...lm_head`), for writing packed weights back under the names they load from.
    names: (String, String),
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
        // The position table is in every layout (a tied, packed file holds no `wte.weight`).
        let tvb = if vb.contains_tensor("transformer.wpe.weight") {
            vb.pp("transformer")
        } else if vb.contains_tensor("wpe.weight") {
            vb.clone()
        } else if init_missing {
            // Training from scratch: the ADIFF layout, every tensor from its initialisation.
            vb.pp("transformer")
        } else {
            return Err(AdiffError::Invalid(format!(
                "no GPT-2 weights under '{}': no transformer.wpe.weight or wpe.weight (the \
                 position table every GPT-2 file holds beside wte.weight)",
                vb.prefix()
            )));
        };
        let (v, c) = (cfg.vocab_size, cfg.n_embd);
        let stored_head = Proj::load_stored(&vb.pp("lm_head"), v, c, false)?;
        // A packed head without a table of its own is the tied table (see `wte`).
        let wte = match &stored_head {
            Some(_) if !tvb.contains_tensor("wte.weight") => None,
            _ => Some(
                tvb.get_with_hints((v, c), "wte.weight", normal_init(INIT_STD))?
                    .contiguous()?,
            ),
        };
        let wpe = tvb
            .get_with_hints((cfg.n_positions, c), "wpe.weight", normal_init(INIT_STD))?
            .contiguous()?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(tvb.pp(format!("h.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = layer_norm(tvb.pp("ln_f"), cfg)?;
        // Tied: no head of its own, or one storage with wte (the official `torch.save` file).
        let (lm_head, tied) = match (stored_head, &wte) {
            (Some(packed), _) => (packed, wte.is_none()),
            (None, Some(wte)) => {
                let head = if vb.contains_tensor("lm_head.weight") {
                    vb.get((v, c), "lm_head.weight")?
                } else {
                    wte.clone()
                };
                let tied = head.id() == wte.id();
                // [V, C] is already [out, in]; tied, it shares wte's storage.
                (Proj::new(head, None, WeightFormat::F32)?, tied)
            }
            (None, None) => unreachable!("wte is only absent beside a packed head"),
        };
        let format = blocks[0].c_attn.format();
        let join = |p: &str, n: &str| {
            if p.is_empty() {
                n.to_string()
            } else {
                format!("{p}.{n}")
            }
        };
        let names = (tvb.prefix(), join(&vb.prefix(), "lm_head"));
        let compute = wpe.dtype();
        Ok(Self {
            compute,
            wte,
            tied,
            wpe,
            blocks,
            ln_f,
            lm_head,
            cfg: cfg.clone(),
            format,
            names,
        })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    pub fn weight_format(&self) -> WeightFormat {
        self.format
    }

    /// The activations' dtype (see [`Gpt2::set_compute_dtype`]).
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Runs the activations in `dtype` whatever the weights' (a trainable weight is cast where
    /// it is used): bf16 over f32 master weights for mixed-precision training. Frozen weights
    /// (the projections, the tables) are held in `dtype` from now on, cast once.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.compute = dtype;
        self.visit(&mut |_, p| p.cast_frozen(dtype))?;
        let cast = |t: &Tensor| -> Result<Tensor> {
            Ok(if t.track_op() {
                t.clone()
            } else {
                t.to_dtype(dtype)?
            })
        };
        self.wte = self.wte.as_ref().map(cast).transpose()?;
        self.wpe = cast(&self.wpe)?;
        Ok(())
    }

    /// Re-packs the matmul weights into `format` (from the f32 originals when converting twice
    /// from F32, otherwise from the dequantized values).
    /// A tied head packed this way also serves the embedding rows, and the f32 table goes.
    pub fn with_weight_format(mut self, format: WeightFormat) -> Result<Self> {
        self.visit(&mut |_, p| p.repack(format))?;
        if self.tied {
            self.wte = match format {
                WeightFormat::F32 => Some(self.lm_head.weight_out_in()?),
                _ => None,
            };
        }
        self.format = format;
        Ok(self)
    }

    /// Each matmul projection (blocks, then the head) with its checkpoint name.
    pub(crate) fn visit(&mut self, f: &mut Visitor) -> Result<()> {
        let (root, head) = self.names.clone();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            for (name, p) in block.projs_mut() {
                let full = if root.is_empty() {
                    format!("h.{i}.{name}")
                } else {
                    format!("{root}.h.{i}.{name}")
                };
                f(&full, p)?;
            }
        }
        f(&head, &mut self.lm_head)
    }

    /// Token embeddings (no position added): ids [B, T] -> [B, T, C].
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        let id_list = flat.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if let Some(&bad) = id_list.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(AdiffError::Invalid(format!(
                "token id {bad} is outside the GPT-2 vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let rows = match &self.wte {
            Some(wte) => wte.index_select(&flat, 0)?,
            None => self.lm_head.rows(&id_list)?,
        };
        Ok(rows
            .to_dtype(self.compute)?
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
        if !embeds.dtype().is_float() {
            return Err(AdiffError::Invalid(format!(
                "inputs_embeds must be floating point, got {:?}",
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
        let hidden = self.run(&embeds.to_dtype(self.compute)?, &mut cache)?; // [B, T, C]
        self.head(&hidden)
    }

    /// Training forward: inputs_embeds [B, T, C] at positions 0..T -> final hidden states
    /// (after ln_f) [B, T, C], through differentiable ops only (no cache, no raw-slice
    /// kernels), so gradients reach the inputs and any trainable weight. Rows are right-padded:
    /// causal attention keeps padding from reaching earlier positions, so no key mask is needed.
    pub fn forward_hidden(&self, embeds: &Tensor) -> Result<Tensor> {
        let (_, t) = self.check_embeds(embeds)?;
        let mask = Self::causal_mask(t, embeds.device())?; // [1, 1, T, T]
        let mut x = self.add_positions(&embeds.to_dtype(self.compute)?)?; // [B, T, C]
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
        Ok(embeds.broadcast_add(&pos.to_dtype(embeds.dtype())?)?)
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
    /// The head's f32 `[V, C]` weight (the tied `wte`, or a stored `lm_head.weight`) when the
    /// head is a plain product with it, for training's fused head + loss
    /// (`train::loss::head_cross_entropy`); None for packed, bf16 or GPU-held heads.
    pub fn head_weight_f32(&self) -> Option<&Tensor> {
        match &self.lm_head {
            Proj::F32 {
                w,
                layout: ops::WeightLayout::OutIn,
                b: None,
                ..
            } if w.dtype() == DType::F32 && w.device().is_cpu() => Some(w),
            _ => None,
        }
    }

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
        let embeds = &embeds.to_dtype(self.compute)?;
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
                    let zeros =
                        Tensor::zeros((pad[r], self.cfg.n_embd), self.compute, row.device())?;
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
        let dev = self.wpe.device();
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
        let hidden = self.run(&embeds.to_dtype(self.compute)?, cache)?; // [B, 1, C]
        Ok(self.head(&hidden)?.squeeze(1)?) // [B, V]
    }

    fn new_cache(&self, pad: &[usize], capacity: usize, dev: &Device) -> Result<KvCache> {
        let b = pad.len();
        let h = self.cfg.n_head;
        let d = self.cfg.n_embd / h;
        let zeros = || Tensor::zeros((b, h, capacity, d), self.compute, dev);
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
        let mut x = embeds.broadcast_add(&pos.to_dtype(embeds.dtype())?)?; // [B, T, C]
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
        // [B*T, V], then f32 for sampling and the loss whatever the activations' dtype
        let logits = self.lm_head.forward(&hidden.reshape((b * t, c))?)?;
        Ok(logits
            .to_dtype(DType::F32)?
            .reshape((b, t, self.cfg.vocab_size))?)
    }
}

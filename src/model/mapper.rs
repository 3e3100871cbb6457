//! The blocks between HTSAT and GPT-2: the audio projection, the prefix mappers (ClipCap-style
//! transformer mappers) and the cross-projection transformer over the joint prefix.
//!
//! Names follow the official checkpoint: `audio_encoder.projection.*`,
//! `caption_decoder.audio_project{1,2}.*`, `caption_decoder.text_project.*`,
//! `caption_decoder.cross_project.*`. Shapes in comments use the base config: E = 1024 projection
//! width, C = 768 GPT-2 width, P = 40 prefix tokens.

use candle_core::{DType, Tensor, D};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::ops;
use crate::model::packed::{Dense as Linear, Visitor};

/// Projection of the HTSAT embedding into the mapper space (768 -> 1024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionConfig {
    pub in_dim: usize,
    pub out_dim: usize,
    pub layer_norm_eps: f64,
}

/// Audio and text mappers (prefix transformers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperConfig {
    /// Prefix tokens produced per audio and for the text prompt (40).
    pub prefix_length: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub layer_norm_eps: f64,
}

/// Cross-projection transformer over the joint 121-token prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossProjectionConfig {
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub layer_norm_eps: f64,
}

/// torch's `nn.Linear(in, out)` at `vb` (candle-nn's loading and initialisation).
fn linear(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::load(d_in, d_out, true, vb)
}

/// `nn.Linear(in, out, bias=False)` at `vb`.
fn linear_no_bias(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::load(d_in, d_out, false, vb)
}

/// HTSAT embedding -> unit-norm projection (`audio_encoder.projection`):
/// `LN(l1(x) + l2(gelu(l1(x))))`, then divided by its L2 norm.
pub struct Projection {
    linear1: Linear,
    linear2: Linear,
    layer_norm: LayerNorm,
}

impl Projection {
    pub fn new(cfg: &ProjectionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear1: linear_no_bias(cfg.in_dim, cfg.out_dim, vb.pp("linear1"))?,
            linear2: linear_no_bias(cfg.out_dim, cfg.out_dim, vb.pp("linear2"))?,
            layer_norm: layer_norm(cfg.out_dim, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
        })
    }

    /// `[B, 768]` -> `[B, E]` with unit L2 norm (no epsilon, as the reference).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h1 = self.linear1.forward(x)?;
        let h2 = self.linear2.forward(&h1.gelu_erf()?)?;
        let y = ops::layer_norm(&self.layer_norm, &(h1 + h2)?)?;
        // The norm's sum of E squares in f32 whatever y's dtype (a bf16 sum drifts).
        let norm = y
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .to_dtype(y.dtype())?;
        Ok(y.broadcast_div(&norm)?)
    }
}

impl ProjectionConfig {
    pub fn validate(&self) -> Result<()> {
        crate::error::require_positive(
            "projection",
            &[
                ("in_dim", self.in_dim as f64),
                ("out_dim", self.out_dim as f64),
                ("layer_norm_eps", self.layer_norm_eps),
            ],
        )
    }
}

impl MapperConfig {
    pub fn validate(&self) -> Result<()> {
        crate::error::require_positive(
            "mapper",
            &[
                ("prefix_length", self.prefix_length as f64),
                ("num_heads", self.num_heads as f64),
                ("mlp_ratio", self.mlp_ratio),
                ("layer_norm_eps", self.layer_norm_eps),
            ],
        )
    }
}

impl CrossProjectionConfig {
    pub fn validate(&self) -> Result<()> {
        crate::error::require_positive(
            "cross_projection",
            &[
                ("num_heads", self.num_heads as f64),
                ("mlp_ratio", self.mlp_ratio),
                ("layer_norm_eps", self.layer_norm_eps),
            ],
        )
    }
}

/// Multi-head self-attention of the mapper transformer (`to_queries`, `to_keys_values` without
/// bias, `project` with bias; no mask).
struct MapperAttention {
    to_queries: Linear,
    to_keys_values: Linear,
    project: Linear,
    heads: usize,
}

impl MapperAttention {
    fn new(dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            to_queries: linear_no_bias(dim, dim, vb.pp("to_queries"))?,
            to_keys_values: linear_no_bias(dim, 2 * dim, vb.pp("to_keys_values"))?,
            project: linear(dim, dim, vb.pp("project"))?,
            heads,
        })
    }

    fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        f(&format!("{prefix}.to_queries"), &mut self.to_queries)?;
        f(
            &format!("{prefix}.to_keys_values"),
            &mut self.to_keys_values,
        )?;
        f(&format!("{prefix}.project"), &mut self.project)
    }

    /// `[B, N, C]` -> `[B, N, C]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        if x.track_op() {
            // Training on the CPU: the same attention as one op with its own backward, reading
            // queries [B, N, C] and keys/values [B, N, 2C] (keys first) where they are.
            let q = self.to_queries.forward(x)?;
            let kv = self.to_keys_values.forward(x)?;
            if let Some(y) = ops::attention_q_kv(&q, &kv, self.heads)? {
                return self.project.forward(&y);
            }
        }
        let hd = c / self.heads;
        // [B, heads, N, hd]
        let q = self
            .to_queries
            .forward(x)?
            .reshape((b, n, self.heads, hd))?
            .transpose(1, 2)?;
        let q = (q.contiguous()? * (hd as f64).powf(-0.5))?;
        // [B, N, 2, heads, hd]: keys are the first C outputs, values the next C.
        let kv = self
            .to_keys_values
            .forward(x)?
            .reshape((b, n, 2, self.heads, hd))?;
        let k = kv
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let v = kv
            .narrow(2, 1, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        // [B, heads, N, N], softmax over keys (in f32)
        let attn = ops::attention_softmax(&q.matmul(&k.t()?)?, None)?;
        // [B, heads, N, hd] -> [B, N, C]
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        self.project.forward(&out)
    }
}

/// Pre-LN transformer layer: `x + attn(norm1(x))`, then `x + fc2(relu(fc1(norm2(x))))`.
struct MapperLayer {
    norm1: LayerNorm,
    attn: MapperAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl MapperLayer {
    fn new(dim: usize, heads: usize, mlp_ratio: f64, eps: f64, vb: VarBuilder) -> Result<Self> {
        let hidden = (dim as f64 * mlp_ratio) as usize;
        Ok(Self {
            norm1: layer_norm(dim, eps, vb.pp("norm1"))?,
            attn: MapperAttention::new(dim, heads, vb.pp("attn"))?,
            norm2: layer_norm(dim, eps, vb.pp("norm2"))?,
            fc1: linear(dim, hidden, vb.pp("mlp.fc1"))?,
            fc2: linear(hidden, dim, vb.pp("mlp.fc2"))?,
        })
    }

    fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        self.attn.visit(&format!("{prefix}.attn"), f)?;
        f(&format!("{prefix}.mlp.fc1"), &mut self.fc1)?;
        f(&format!("{prefix}.mlp.fc2"), &mut self.fc2)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&ops::layer_norm(&self.norm1, x)?)?)?;
        // [B, N, C] -> [B, N, hidden] -> [B, N, C]
        let m = self
            .fc2
            .forward(&self.fc1.forward_relu(&ops::layer_norm(&self.norm2, &x)?)?)?;
        Ok((x + m)?)
    }
}

/// A stack of [`MapperLayer`]s with no final norm (`<prefix>.layers.N`).
pub struct MapperTransformer {
    layers: Vec<MapperLayer>,
}

impl MapperTransformer {
    pub fn new(
        dim: usize,
        heads: usize,
        num_layers: usize,
        mlp_ratio: f64,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|i| MapperLayer::new(dim, heads, mlp_ratio, eps, vb.pp(format!("layers.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Each projection with its checkpoint name (`prefix` is this stack's).
    pub fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.visit(&format!("{prefix}.layers.{i}"), f)?;
        }
        Ok(())
    }

    /// `[B, N, C]` -> `[B, N, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

/// Turns a sequence into P prefix tokens: `[input | prefix_const]` through a transformer, keeping
/// the last P positions. The audio mappers first expand a vector into P tokens with `linear`; the
/// text mapper takes GPT-2 token embeddings as they are.
pub struct PrefixMapper {
    /// `E -> P*C` expansion (audio mappers only).
    linear: Option<Linear>,
    /// `[P, C]` learned queries.
    prefix_const: Tensor,
    transformer: MapperTransformer,
    prefix_length: usize,
}

impl PrefixMapper {
    /// Audio mapper (`caption_decoder.audio_project{1,2}`): `[B, E]` -> `[B, P, C]`.
    pub fn audio(cfg: &MapperConfig, in_dim: usize, width: usize, vb: VarBuilder) -> Result<Self> {
        let linear = linear(in_dim, cfg.prefix_length * width, vb.pp("linear"))?;
        Self::build(cfg, width, Some(linear), vb)
    }

    /// Text mapper (`caption_decoder.text_project`): `[B, L, C]` token embeddings -> `[B, P, C]`.
    pub fn text(cfg: &MapperConfig, width: usize, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, width, None, vb)
    }

    fn build(
        cfg: &MapperConfig,
        width: usize,
        linear: Option<Linear>,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            linear,
            // torch.randn in the official mapper (used only when training from scratch).
            prefix_const: vb.get_with_hints(
                (cfg.prefix_length, width),
                "prefix_const",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
            transformer: MapperTransformer::new(
                width,
                cfg.num_heads,
                cfg.num_layers,
                cfg.mlp_ratio,
                cfg.layer_norm_eps,
                vb.pp("transformer"),
            )?,
            prefix_length: cfg.prefix_length,
        })
    }

    /// Each projection with its checkpoint name (`prefix` is this mapper's).
    pub fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        if let Some(l) = &mut self.linear {
            f(&format!("{prefix}.linear"), l)?;
        }
        self.transformer.visit(&format!("{prefix}.transformer"), f)
    }

    /// Audio: `[B, E]`; text: `[B, L, C]`. Returns `[B, P, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, width) = (x.dim(0)?, self.prefix_const.dim(1)?);
        // [B, P or L, C]
        let tokens = match &self.linear {
            Some(l) => l.forward(x)?.reshape((b, self.prefix_length, width))?,
            None => x.clone(),
        };
        let n_in = tokens.dim(1)?;
        // [B, n_in + P, C]
        let queries = self
            .prefix_const
            .to_dtype(tokens.dtype())?
            .unsqueeze(0)?
            .broadcast_as((b, self.prefix_length, width))?;
        let x = Tensor::cat(&[&tokens, &queries.contiguous()?], 1)?;
        Ok(self
            .transformer
            .forward(&x)?
            .narrow(1, n_in, self.prefix_length)?)
    }
}

/// Cross-projection over the joint prefix (`caption_decoder.cross_project`): `[B, 3P+1, C]` ->
/// `[B, 3P+1, C]`.
pub struct CrossProjection {
    transformer: MapperTransformer,
}

impl CrossProjection {
    pub fn new(cfg: &CrossProjectionConfig, width: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            transformer: MapperTransformer::new(
                width,
                cfg.num_heads,
                cfg.num_layers,
                cfg.mlp_ratio,
                cfg.layer_norm_eps,
                vb,
            )?,
        })
    }

    /// Each projection with its checkpoint name (`prefix` is this block's).
    pub fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        self.transformer.visit(prefix, f)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.transformer.forward(x)
    }
}

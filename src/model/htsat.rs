//! HTSAT: a hierarchical Swin transformer over a log-mel spectrogram folded into a square image,
//! with a token-semantic head that gives clip-wise and frame-wise AudioSet event probabilities.
//!
//! Follows the official ADIFF/HTSAT code (see `shared/reference/NOTES.md`); tensor names are those
//! of the checkpoint under `audio_encoder.base.htsat`. Shapes in comments use the base config:
//! B clips, T = 1001 log-mel frames, M = 64 mel bins, S = 256 image side, C = 96 * 2^stage.

use candle_core::{DType, IndexOp, Module, Tensor, D};
use candle_nn::{layer_norm, Init, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::audio::config::AudioConfig;
use crate::error::{AdiffError, Result};
use crate::model::ops;
use crate::model::packed::{Proj, Repack, Visitor, WeightFormat};

/// HTSAT (hierarchical token-semantic audio transformer, a Swin transformer on a folded log-mel image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtsatConfig {
    /// Side of the square input image (256).
    pub spec_size: usize,
    /// How many time chunks are stacked along the frequency axis (4).
    pub freq_ratio: usize,
    pub patch_size: usize,
    pub patch_stride: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub mlp_ratio: f64,
    pub num_classes: usize,
    pub layer_norm_eps: f64,
    pub batch_norm_eps: f64,
    /// Additive attention mask value between tokens of different regions in shifted windows.
    pub shift_mask_value: f64,
    /// LayerNorm after the patch embedding (HTSAT's `patch_norm`, true in the paper's model).
    /// It makes each patch token scale-invariant, so a clip's absolute level reaches the Swin
    /// stages only through the patch bias: the demo turns it off to let loudness through.
    #[serde(default = "patch_norm_default")]
    pub patch_norm: bool,
}

fn patch_norm_default() -> bool {
    true
}

impl HtsatConfig {
    /// Every size above zero (the relations between them are checked by `AdiffConfig`).
    pub fn validate(&self) -> Result<()> {
        let mut v = vec![
            ("spec_size", self.spec_size as f64),
            ("freq_ratio", self.freq_ratio as f64),
            ("patch_size", self.patch_size as f64),
            ("patch_stride", self.patch_stride as f64),
            ("embed_dim", self.embed_dim as f64),
            ("window_size", self.window_size as f64),
            ("mlp_ratio", self.mlp_ratio),
            ("num_classes", self.num_classes as f64),
            ("layer_norm_eps", self.layer_norm_eps),
            ("batch_norm_eps", self.batch_norm_eps),
        ];
        v.extend(self.depths.iter().map(|&d| ("depths[i]", d as f64)));
        v.extend(self.num_heads.iter().map(|&d| ("num_heads[i]", d as f64)));
        crate::error::require_positive("htsat", &v)
    }

    /// Width of the final stage (embedding dimension): embed_dim * 2^(stages-1).
    pub fn num_features(&self) -> usize {
        self.embed_dim << (self.depths.len() - 1)
    }
    /// Number of time frames of the resized spectrogram (spec_size * freq_ratio = 1024).
    pub fn target_frames(&self) -> usize {
        self.spec_size * self.freq_ratio
    }
    /// Number of mel bins the image fold expects (spec_size / freq_ratio = 64).
    pub fn target_mels(&self) -> usize {
        self.spec_size / self.freq_ratio
    }
    /// Side of the token grid after patch embedding (64).
    pub fn patch_grid(&self) -> usize {
        self.spec_size / self.patch_stride
    }
    /// Side of the last stage's token grid (8).
    pub fn final_grid(&self) -> usize {
        self.patch_grid() >> (self.depths.len() - 1)
    }
    /// Number of time steps of the token-semantic head output (32).
    pub fn head_frames(&self) -> usize {
        self.final_grid() * self.freq_ratio
    }
}

/// What HTSAT gives for a batch of clips.
pub struct HtsatOutput {
    /// `[B, C_final]` (768): mean of the final feature map over its positions.
    pub embedding: Tensor,
    /// `[B, classes]`: sigmoid of the time-averaged token-semantic logits.
    pub clipwise: Tensor,
    /// `[B, frames, classes]` (1024 x 527): sigmoid of the per-step logits, each step repeated to
    /// the resized time axis.
    pub framewise: Tensor,
}

/// The HTSAT encoder (front-end normalisation, image fold, Swin stages, token-semantic head).
pub struct Htsat {
    cfg: HtsatConfig,
    /// The Swin stages' activations' dtype (the weights' as loaded, or bf16 over f32 master
    /// weights in mixed-precision training); the front end's normalisation and the outputs
    /// stay f32.
    compute: DType,
    /// bn0 in eval mode folded into `x * scale + shift`, `[M]`.
    bn_scale: Tensor,
    bn_shift: Tensor,
    /// `[T, target_frames]`: bicubic (align_corners=True) time resize as a matrix, or `None` when
    /// the clip already has `target_frames` frames.
    time_resize_t: Option<Tensor>,
    patch_embed: PatchEmbed,
    stages: Vec<SwinStage>,
    norm: LayerNorm,
    /// `[classes, C_final, final_grid / freq_ratio, 3]`.
    tscam_weight: Tensor,
    tscam_bias: Tensor,
}

impl Htsat {
    /// Builds HTSAT from `vb` (prefix `audio_encoder.base.htsat`) for clips described by `audio`.
    pub fn new(cfg: &HtsatConfig, audio: &AudioConfig, vb: VarBuilder) -> Result<Self> {
        let mels = cfg.target_mels();
        let bn = vb.pp("bn0");
        // Initialisation hints (used only by `--init-missing`): a fresh BatchNorm2d's.
        // bn0 and the time resize run in f32 whatever the model's dtype: they see log-mel
        // values in dB, before any normalisation.
        let f32_param = |name, init| bn.get_with_hints_dtype(mels, name, init, DType::F32);
        let w = f32_param("weight", Init::Const(1.0))?;
        let b = f32_param("bias", Init::Const(0.0))?;
        let mean = f32_param("running_mean", Init::Const(0.0))?;
        let var = f32_param("running_var", Init::Const(1.0))?;
        let bn_scale = w.div(&(var + cfg.batch_norm_eps)?.sqrt()?)?;
        let bn_shift = b.sub(&mean.mul(&bn_scale)?)?;

        let frames = audio.num_frames();
        let time_resize_t = if frames == cfg.target_frames() {
            None
        } else {
            let m = bicubic_resize_matrix(frames, cfg.target_frames());
            // Stored transposed ([T, target]) so the resize is one right-multiplication.
            let m = Tensor::from_vec(m, (cfg.target_frames(), frames), vb.device())?;
            Some(m.t()?.contiguous()?)
        };

        let patch_embed = PatchEmbed::new(cfg, vb.pp("patch_embed"))?;
        let mut stages = Vec::with_capacity(cfg.depths.len());
        for i in 0..cfg.depths.len() {
            stages.push(SwinStage::new(cfg, i, vb.pp(format!("layers.{i}")))?);
        }
        let c = cfg.num_features();
        let norm = layer_norm(c, cfg.layer_norm_eps, vb.pp("norm"))?;
        let kh = cfg.final_grid() / cfg.freq_ratio;
        let tscam = vb.pp("tscam_conv");
        let tscam_init = conv_init(c * kh * TSCAM_KERNEL_TIME);
        let tscam_weight = tscam.get_with_hints(
            (cfg.num_classes, c, kh, TSCAM_KERNEL_TIME),
            "weight",
            tscam_init,
        )?;
        let tscam_bias = tscam.get_with_hints(cfg.num_classes, "bias", tscam_init)?;
        Ok(Self {
            compute: vb.dtype(),
            cfg: cfg.clone(),
            bn_scale,
            bn_shift,
            time_resize_t,
            patch_embed,
            stages,
            norm,
            tscam_weight,
            tscam_bias,
        })
    }

    pub fn config(&self) -> &HtsatConfig {
        &self.cfg
    }

    /// Runs the Swin stages in `dtype` whatever the weights' (see [`Htsat::compute`]).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }

    /// Log-mel `[B, T, M]` -> Swin input image `[B, 1, S, S]`: bn0, bicubic time resize to
    /// `target_frames`, then fold `freq_ratio` time chunks along the frequency axis
    /// (image row = chunk * M + mel, column = frame within chunk).
    pub fn image(&self, logmel: &Tensor) -> Result<Tensor> {
        let (b, t, m) = logmel.dims3()?;
        if m != self.cfg.target_mels() {
            return Err(AdiffError::Invalid(format!(
                "log-mel has {m} mel bins, HTSAT expects {}",
                self.cfg.target_mels()
            )));
        }
        let target = self.cfg.target_frames();
        // [B, T, M]
        let x = logmel
            .broadcast_mul(&self.bn_scale)?
            .broadcast_add(&self.bn_shift)?;
        // [B, M, T]
        let x = x.transpose(1, 2)?.contiguous()?;
        // [B, M, target]
        let x = match &self.time_resize_t {
            Some(r) if r.dim(0)? == t => {
                x.reshape((b * m, t))?.matmul(r)?.reshape((b, m, target))?
            }
            None if t == target => x,
            _ => {
                return Err(AdiffError::Invalid(format!(
                    "log-mel has {t} frames; this model was built for {}",
                    self.time_resize_t
                        .as_ref()
                        .map(|r| r.dim(0).unwrap_or(0))
                        .unwrap_or(target)
                )))
            }
        };
        let (fr, s) = (self.cfg.freq_ratio, self.cfg.spec_size);
        // [B, M, fr, S] -> [B, fr, M, S] -> [B, 1, fr*M = S, S]
        let x = x
            .reshape((b, m, fr, target / fr))?
            .permute((0, 2, 1, 3))?
            .contiguous()?;
        Ok(x.reshape((b, 1, s, s))?)
    }

    /// Log-mel `[B, T, M]` -> embedding, clip-wise and frame-wise probabilities.
    pub fn forward(&self, logmel: &Tensor) -> Result<HtsatOutput> {
        let image = self.image(logmel)?;
        self.forward_image(&image)
    }

    /// Swin input image `[B, 1, S, S]` -> outputs.
    pub fn forward_image(&self, image: &Tensor) -> Result<HtsatOutput> {
        let (tokens, _) = self.forward_stages(image)?;
        self.head(&tokens)
    }

    /// Image -> final tokens `[B, G*G, C_final]`, and the tokens after patch embedding and after
    /// every stage (for parity checks).
    /// Each linear of the Swin stages with its checkpoint name (`prefix` is HTSAT's).
    pub(crate) fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        for (i, stage) in self.stages.iter_mut().enumerate() {
            let sp = format!("{prefix}.layers.{i}");
            for (j, b) in stage.blocks.iter_mut().enumerate() {
                let bp = format!("{sp}.blocks.{j}");
                f(&format!("{bp}.attn.qkv"), &mut b.qkv)?;
                f(&format!("{bp}.attn.proj"), &mut b.proj)?;
                f(&format!("{bp}.mlp.fc1"), &mut b.fc1)?;
                f(&format!("{bp}.mlp.fc2"), &mut b.fc2)?;
            }
            if let Some(d) = &mut stage.downsample {
                f(&format!("{sp}.downsample.reduction"), &mut d.reduction)?;
            }
        }
        Ok(())
    }

    pub fn forward_stages(&self, image: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        // [B, (S/4)^2 = 4096, 96]
        let mut x = self.patch_embed.forward(&image.to_dtype(self.compute)?)?;
        let mut trace = vec![x.clone()];
        for stage in &self.stages {
            x = stage.forward(&x)?;
            trace.push(x.clone());
        }
        Ok((x, trace))
    }

    /// Log-mel `[B, T, M]` -> clip-wise logits `[B, classes]` (the time-averaged token-semantic
    /// logits, before the sigmoid): what stage-1 tagging trains with BCE-with-logits, which is
    /// numerically safer than a BCE on the probabilities.
    pub fn clip_logits(&self, logmel: &Tensor) -> Result<Tensor> {
        Ok(self.clip_logits_and_embedding(logmel)?.0)
    }

    /// Log-mel `[B, T, M]` -> (clip-wise logits `[B, classes]`, embedding `[B, C]`): stage 1's
    /// optional embedding tagger trains on the embedding, which is what ADIFF reads.
    pub fn clip_logits_and_embedding(&self, logmel: &Tensor) -> Result<(Tensor, Tensor)> {
        let image = self.image(logmel)?;
        let (tokens, _) = self.forward_stages(&image)?;
        let (embedding, logits) = self.tscam(&tokens)?;
        Ok((logits.mean(D::Minus1)?, embedding))
    }

    /// Token-semantic head on the final tokens `[B, G*G, C]` (G = 8).
    fn head(&self, tokens: &Tensor) -> Result<HtsatOutput> {
        let cfg = &self.cfg;
        let b = tokens.dim(0)?;
        let (embedding, logits) = self.tscam(tokens)?;
        // [B, classes]
        let clipwise = candle_nn::ops::sigmoid(&logits.mean(D::Minus1)?)?;
        // [B, 32, classes] -> each step repeated to the resized time axis -> [B, 1024, classes]
        let steps = logits.dim(2)?;
        let repeat = cfg.target_frames() / steps;
        let framewise = candle_nn::ops::sigmoid(&logits.transpose(1, 2)?)?
            .unsqueeze(2)?
            .broadcast_as((b, steps, repeat, cfg.num_classes))?
            .reshape((b, steps * repeat, cfg.num_classes))?;
        Ok(HtsatOutput {
            embedding,
            clipwise,
            framewise,
        })
    }

    /// Final tokens `[B, G*G, C]` -> (embedding `[B, C]`, token-semantic logits
    /// `[B, classes, fr*G]`).
    fn tscam(&self, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let cfg = &self.cfg;
        let (b, _, c) = tokens.dims3()?;
        let g = cfg.final_grid();
        let fr = cfg.freq_ratio;
        // [B, 64, C] -> [B, C, G(freq rows), G(time cols)]
        let x = ops::layer_norm(&self.norm, tokens)?
            .transpose(1, 2)?
            .reshape((b, c, g, g))?;
        // Undo the fold: rows are fr chunks of g/fr bins; chunks become consecutive in time.
        // [B, C, fr, g/fr, G] -> [B, C, g/fr, fr, G] -> [B, C, g/fr (2), fr*G (32)]
        let x = x
            .reshape((b, c, fr, g / fr, g))?
            .permute((0, 1, 3, 2, 4))?
            .contiguous()?
            .reshape((b, c, g / fr, fr * g))?;
        // [B, C], f32 whatever the compute dtype (as the logits below)
        let embedding = x.flatten_from(2)?.to_dtype(DType::F32)?.mean(D::Minus1)?;
        // tscam_conv: kernel (g/fr, 3), padding (0, 1) -> [B, classes, 1, 32] -> [B, classes, 32]
        let pad = TSCAM_KERNEL_TIME / 2;
        let dt = x.dtype();
        let logits = x
            .pad_with_zeros(3, pad, pad)?
            .apply(&|x: &Tensor| conv2d(x, &self.tscam_weight, 0, 1))?
            .broadcast_add(
                &self
                    .tscam_bias
                    .to_dtype(dt)?
                    .reshape((1, cfg.num_classes, 1, 1))?,
            )?
            .squeeze(2)?
            .to_dtype(DType::F32)?;
        Ok((embedding, logits))
    }
}

/// `x.conv2d(w)` in `x`'s dtype (`w` is cast to it). candle's CPU convolution has no bf16/f16
/// kernel, so there it runs in f32 (the GPU's bf16 numerics are checked on the CPU this way).
fn conv2d(x: &Tensor, w: &Tensor, pad: usize, stride: usize) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    if x.device().is_cpu() && dt != DType::F32 {
        let y = x
            .to_dtype(DType::F32)?
            .conv2d(&w.to_dtype(DType::F32)?, pad, stride, 1, 1)?;
        return y.to_dtype(dt);
    }
    x.conv2d(&w.to_dtype(dt)?, pad, stride, 1, 1)
}

/// Time width of the token-semantic convolution kernel (padding keeps the time length).
const TSCAM_KERNEL_TIME: usize = 3;
/// PyTorch's cubic convolution coefficient for bicubic interpolation.
const BICUBIC_A: f64 = -0.75;

/// `[out, in]` matrix of PyTorch's 1-D bicubic interpolation with `align_corners=True`:
/// source coordinate `i * (in-1)/(out-1)`, four taps clamped to the borders.
pub fn bicubic_resize_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    // The cubic convolution kernel for |x| <= 1 and for 1 < |x| < 2.
    let cubic1 = |x: f64| ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0;
    let cubic2 =
        |x: f64| ((BICUBIC_A * x - 5.0 * BICUBIC_A) * x + 8.0 * BICUBIC_A) * x - 4.0 * BICUBIC_A;
    // PyTorch computes the source coordinate in f32; doing the same keeps the taps identical.
    let scale = if n_out > 1 {
        (n_in as f32 - 1.0) / (n_out as f32 - 1.0)
    } else {
        0.0
    };
    let mut m = vec![0f32; n_out * n_in];
    for i in 0..n_out {
        let real = scale * i as f32;
        let idx = real.floor();
        let t = (real - idx) as f64;
        let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let src = (idx as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
            m[i * n_in + src] += *wk as f32;
        }
    }
    m
}

/// Conv2d(1, C, patch, stride) + LayerNorm (when `patch_norm`), flattened to tokens.
struct PatchEmbed {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    norm: Option<LayerNorm>,
}

impl PatchEmbed {
    fn new(cfg: &HtsatConfig, vb: VarBuilder) -> Result<Self> {
        let (c, p) = (cfg.embed_dim, cfg.patch_size);
        let proj = vb.pp("proj");
        let init = conv_init(p * p);
        Ok(Self {
            weight: proj.get_with_hints((c, 1, p, p), "weight", init)?,
            bias: proj.get_with_hints(c, "bias", init)?,
            stride: cfg.patch_stride,
            norm: if cfg.patch_norm {
                Some(layer_norm(c, cfg.layer_norm_eps, vb.pp("norm"))?)
            } else {
                None
            },
        })
    }

    /// `[B, 1, S, S]` -> `[B, (S/stride)^2, C]`.
    fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let pad = (self.weight.dim(2)? - self.stride) / 2;
        // [B, C, S/4, S/4]
        let dt = image.dtype();
        let x = conv2d(image, &self.weight, pad, self.stride)?;
        let x = x.broadcast_add(&self.bias.to_dtype(dt)?.reshape((1, (), 1, 1))?)?;
        // [B, (S/4)^2, C]
        let x = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        match &self.norm {
            Some(norm) => Ok(ops::layer_norm(norm, &x)?),
            None => Ok(x),
        }
    }
}

/// One Swin stage: `depth` blocks (odd ones with shifted windows) and an optional patch merging.
struct SwinStage {
    blocks: Vec<SwinBlock>,
    downsample: Option<PatchMerging>,
}

impl SwinStage {
    fn new(cfg: &HtsatConfig, stage: usize, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.embed_dim << stage;
        let grid = cfg.patch_grid() >> stage;
        let mut blocks = Vec::with_capacity(cfg.depths[stage]);
        for j in 0..cfg.depths[stage] {
            let shift = if j % 2 == 1 { cfg.window_size / 2 } else { 0 };
            blocks.push(SwinBlock::new(
                cfg,
                dim,
                cfg.num_heads[stage],
                grid,
                shift,
                vb.pp(format!("blocks.{j}")),
            )?);
        }
        let downsample = if stage + 1 < cfg.depths.len() {
            Some(PatchMerging::new(
                dim,
                grid,
                cfg.layer_norm_eps,
                vb.pp("downsample"),
            )?)
        } else {
            None
        };
        Ok(Self { blocks, downsample })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        match &self.downsample {
            Some(d) => d.forward(&x),
            None => Ok(x),
        }
    }
}

/// Pre-LN Swin block: (shifted) window attention with relative position bias, then an MLP.
struct SwinBlock {
    norm1: LayerNorm,
    qkv: Dense16,
    proj: Dense16,
    norm2: LayerNorm,
    fc1: Dense16,
    fc2: Dense16,
    heads: usize,
    grid: usize,
    window: usize,
    shift: usize,
    /// Relative position bias (+ shift mask): `[nW or 1, heads, N, N]`, N = window^2.
    attn_bias: Tensor,
    /// What `attn_bias` is gathered from, kept so a trainable table (stage 1) is re-gathered in
    /// every forward instead of leaving a stale copy once the optimizer updates it.
    bias_table: Tensor,
    /// `[N*N]` u32 relative position index.
    bias_index: Tensor,
    /// `[nW, 1, N, N]` shift mask (shifted blocks only).
    shift_mask: Option<Tensor>,
}

impl SwinBlock {
    fn new(
        cfg: &HtsatConfig,
        dim: usize,
        heads: usize,
        grid: usize,
        shift: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        // A map no larger than the window is attended as one window, without shift.
        let (window, shift) = if grid <= cfg.window_size {
            (grid, 0)
        } else {
            (cfg.window_size, shift)
        };
        let n = window * window;
        let hidden = (dim as f64 * cfg.mlp_ratio) as usize;
        let attn = vb.pp("attn");
        let table = attn.get_with_hints(
            ((2 * window - 1) * (2 * window - 1), heads),
            "relative_position_bias_table",
            LINEAR_INIT,
        )?;
        let bias_index = Tensor::from_vec(relative_position_index(window), n * n, vb.device())?;
        let shift_mask = if shift > 0 {
            let nw = (grid / window) * (grid / window);
            let mask = shift_attention_mask(grid, window, shift, cfg.shift_mask_value as f32);
            Some(Tensor::from_vec(mask, (nw, 1, n, n), vb.device())?.to_dtype(vb.dtype())?)
        } else {
            None
        };
        let attn_bias = attention_bias(&table, &bias_index, shift_mask.as_ref(), heads)?;
        Ok(Self {
            norm1: layer_norm(dim, cfg.layer_norm_eps, vb.pp("norm1"))?,
            qkv: linear(dim, 3 * dim, true, attn.pp("qkv"))?,
            proj: linear(dim, dim, true, attn.pp("proj"))?,
            norm2: layer_norm(dim, cfg.layer_norm_eps, vb.pp("norm2"))?,
            fc1: linear(dim, hidden, true, vb.pp("mlp.fc1"))?,
            fc2: linear(hidden, dim, true, vb.pp("mlp.fc2"))?,
            heads,
            grid,
            window,
            shift,
            attn_bias,
            bias_table: table,
            bias_index,
            shift_mask,
        })
    }

    /// `[B, G*G, C]` -> `[B, G*G, C]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        let (g, ws) = (self.grid, self.window);
        let s = self.shift as i32;
        // [B, G, G, C], cyclically shifted up-left when this is a shifted block.
        let mut h = ops::layer_norm(&self.norm1, x)?.reshape((b, g, g, c))?;
        if s > 0 {
            h = h.roll(-s, 1)?.roll(-s, 2)?;
        }
        // Window partition: [B, G/ws, ws, G/ws, ws, C] -> [B*nW, N, C]
        let nwin = g / ws;
        let windows = h
            .reshape((b, nwin, ws, nwin, ws, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b * nwin * nwin, ws * ws, c))?;
        let attn = self.window_attention(&windows, b)?;
        // Window reverse: [B*nW, N, C] -> [B, G, G, C]
        let mut h = attn
            .reshape((b, nwin, nwin, ws, ws, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b, g, g, c))?;
        if s > 0 {
            h = h.roll(s, 1)?.roll(s, 2)?;
        }
        let x = (x + h.reshape((b, l, c))?)?;
        let m = self.fc2.forward(
            &self
                .fc1
                .forward(&ops::layer_norm(&self.norm2, &x)?)?
                .gelu_erf()?,
        )?;
        Ok((x + m)?)
    }

    /// Multi-head attention inside each window: `[B*nW, N, C]` -> `[B*nW, N, C]`.
    fn window_attention(&self, x: &Tensor, batch: usize) -> Result<Tensor> {
        let (bw, n, c) = x.dims3()?;
        let hd = c / self.heads;
        // [B*nW, N, 3C] -> [3, B*nW, heads, N, hd]
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((bw, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.i(0)?.contiguous()? * (hd as f64).powf(-0.5))?;
        let k = qkv.i(1)?.contiguous()?;
        let v = qkv.i(2)?.contiguous()?;
        // [B*nW, heads, N, N] + bias/mask broadcast over the batch.
        // A trainable table is gathered again (its current value, inside the graph).
        let fresh;
        let attn_bias = if self.bias_table.track_op() {
            fresh = attention_bias(
                &self.bias_table,
                &self.bias_index,
                self.shift_mask.as_ref(),
                self.heads,
            )?;
            &fresh
        } else {
            &self.attn_bias
        };
        let nw_bias = attn_bias.dim(0)?;
        let attn =
            q.matmul(&k.t()?)?
                .reshape((batch, bw / batch / nw_bias, nw_bias, self.heads, n, n))?;
        // softmax(scores + bias) in f32, back in the scores' dtype: [B*nW, heads, N, N]
        let attn =
            ops::attention_softmax(&attn, Some(attn_bias))?.reshape((bw, self.heads, n, n))?;
        // [B*nW, heads, N, hd] -> [B*nW, N, C]
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((bw, n, c))?;
        self.proj.forward(&out)
    }
}

/// Relative position bias gathered from `table` `[(2w-1)^2, heads]` by `index` `[N*N]`, plus the
/// shift mask when there is one: `[nW or 1, heads, N, N]`.
fn attention_bias(
    table: &Tensor,
    index: &Tensor,
    shift_mask: Option<&Tensor>,
    heads: usize,
) -> Result<Tensor> {
    let n = (index.dim(0)? as f64).sqrt().round() as usize;
    // [N*N, heads] -> [heads, N, N]
    let bias = table
        .index_select(index, 0)?
        .reshape((n, n, heads))?
        .permute((2, 0, 1))?;
    let out = match shift_mask {
        Some(mask) => mask.broadcast_add(&bias.unsqueeze(0)?)?,
        None => bias.unsqueeze(0)?,
    };
    Ok(out.contiguous()?)
}

/// Swin's relative position index for a `w x w` window, flattened `[N*N]`.
fn relative_position_index(w: usize) -> Vec<u32> {
    let n = w * w;
    let mut idx = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dh = (i / w) as i64 - (j / w) as i64 + w as i64 - 1;
            let dw = (i % w) as i64 - (j % w) as i64 + w as i64 - 1;
            idx.push((dh * (2 * w as i64 - 1) + dw) as u32);
        }
    }
    idx
}

/// Additive mask `[nW, N, N]` that keeps shifted windows from attending across the regions that
/// the cyclic shift brought together (`value` between different regions, 0 within one).
fn shift_attention_mask(grid: usize, window: usize, shift: usize, value: f32) -> Vec<f32> {
    let region = |p: usize| {
        if p < grid - window {
            0
        } else if p < grid - shift {
            1
        } else {
            2
        }
    };
    let nwin = grid / window;
    let n = window * window;
    let mut mask = Vec::with_capacity(nwin * nwin * n * n);
    for wh in 0..nwin {
        for ww in 0..nwin {
            let ids: Vec<usize> = (0..n)
                .map(|t| region(wh * window + t / window) * 3 + region(ww * window + t % window))
                .collect();
            for a in &ids {
                for b in &ids {
                    mask.push(if a == b { 0.0 } else { value });
                }
            }
        }
    }
    mask
}

/// HTSAT's own initialisation of linear weights and relative position bias tables
/// (`trunc_normal_(std=.02)`, truncated at +-2, i.e. never in practice); used only when a
/// training run starts HTSAT from scratch (`--init-missing`).
const LINEAR_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// PyTorch's default Conv2d initialisation (kaiming_uniform with a = sqrt(5), and the matching
/// bias rule): both U(-1/sqrt(fan_in), 1/sqrt(fan_in)). HTSAT leaves its convolutions at it.
fn conv_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `Linear` with HTSAT's initialisation hints (weight N(0, 0.02), bias 0), or its f16 rows
/// when the file holds them packed (`adiff convert --dtype f16|i8`).
fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Dense16> {
    if let Some(p) = Proj::load_stored(&vb, out_dim, in_dim, bias)? {
        return Ok(Dense16::Half(p));
    }
    let w = vb.get_with_hints((out_dim, in_dim), "weight", LINEAR_INIT)?;
    let b = if bias {
        Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Dense16::Exact(Linear::new(w, b)))
}

/// An `nn.Linear` of the Swin stages: candle-nn's (training, and exact inference), or f16 rows
/// for reduced-precision inference (`--dtype f16|i8`: HTSAT takes f16, never int8, since its
/// gemms over thousands of patch rows are bound by compute, not by reading weights; f16 halves
/// the 134 MB its weights hold).
enum Dense16 {
    Exact(Linear),
    Half(Proj),
}

impl Dense16 {
    /// `[.., in]` -> `[.., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Dense16::Exact(l) if l.weight().dtype() != x.dtype() => {
                // Mixed precision: the layer in the activations' dtype.
                let dt = x.dtype();
                let b = l.bias().map(|b| b.to_dtype(dt)).transpose()?;
                Ok(Linear::new(l.weight().to_dtype(dt)?, b).forward(x)?)
            }
            Dense16::Exact(l) => Ok(l.forward(x)?),
            Dense16::Half(p) => p.forward_nd(x),
        }
    }
}

impl Repack for Dense16 {
    fn cast_frozen(&mut self, dtype: DType) -> Result<()> {
        if let Dense16::Exact(l) = self {
            let frozen = !l.weight().track_op() && !l.bias().is_some_and(Tensor::track_op);
            if frozen && l.weight().dtype() != dtype {
                let b = l.bias().map(|b| b.to_dtype(dtype)).transpose()?;
                *l = Linear::new(l.weight().to_dtype(dtype)?, b);
            }
        }
        Ok(())
    }

    fn repack(&mut self, format: WeightFormat) -> Result<()> {
        match (&*self, format) {
            (Dense16::Exact(l), WeightFormat::F16 | WeightFormat::I8) => {
                let p = Proj::new(l.weight().clone(), l.bias().cloned(), WeightFormat::F16)?;
                *self = Dense16::Half(p);
            }
            (Dense16::Half(p), WeightFormat::F32) => {
                *self = Dense16::Exact(Linear::new(p.weight_out_in()?, p.bias().cloned()));
            }
            _ => {}
        }
        Ok(())
    }

    fn stored(&self, name: &str) -> Result<Vec<(String, Tensor)>> {
        match self {
            Dense16::Exact(_) => Ok(Vec::new()),
            Dense16::Half(p) => p.stored(name),
        }
    }
}

/// Swin patch merging: 2x2 neighbours concatenated (order x(0,0), x(1,0), x(0,1), x(1,1)),
/// LayerNorm(4C), Linear(4C -> 2C, no bias).
struct PatchMerging {
    norm: LayerNorm,
    reduction: Dense16,
    grid: usize,
}

impl PatchMerging {
    fn new(dim: usize, grid: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: layer_norm(4 * dim, eps, vb.pp("norm"))?,
            reduction: linear(4 * dim, 2 * dim, false, vb.pp("reduction"))?,
            grid,
        })
    }

    /// `[B, G*G, C]` -> `[B, (G/2)^2, 2C]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        let h = self.grid / 2;
        // [B, G/2, 2(row parity p), G/2, 2(col parity q), C] -> [B, G/2, G/2, q, p, C]:
        // concatenation index q*2 + p gives x0=(0,0), x1=(1,0), x2=(0,1), x3=(1,1).
        let x = x
            .reshape((b, h, 2, h, 2, c))?
            .permute((0, 1, 3, 4, 2, 5))?
            .contiguous()?
            .reshape((b, h * h, 4 * c))?;
        self.reduction.forward(&ops::layer_norm(&self.norm, &x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_matrix_rows_sum_to_one_and_hit_the_ends() {
        let m = bicubic_resize_matrix(1001, 1024);
        for i in 0..1024 {
            let s: f32 = m[i * 1001..(i + 1) * 1001].iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
        assert_eq!(m[0], 1.0);
        assert_eq!(m[1023 * 1001 + 1000], 1.0);
    }

    #[test]
    fn relative_position_index_matches_swin() {
        // Known values for a 2x2 window (from the Swin reference implementation).
        assert_eq!(
            relative_position_index(2),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }
}

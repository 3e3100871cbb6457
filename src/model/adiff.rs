//! The whole ADIFF model: two audios and a prompt -> a GPT-2 prefix -> an explanation.
//!
//! ```text
//! audio1 -> HTSAT -> projection -> audio_project1 -> [B, P, C] --+
//! wte(separator)                                   -> [B, 1, C] --+
//! audio2 -> HTSAT -> projection -> audio_project2 -> [B, P, C] --+--> cross_project -> GPT-2
//! prompt ids -> wte -> text_project                -> [B, P, C] --+    [B, 3P+1, C]
//! ```
//! Tensor names are the official checkpoint's, so `adiff_base.ckpt` loads as it is.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{AdiffError, Result};
use crate::model::audio_encoder::AudioEncoder;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::AdiffConfig;
use crate::model::gpt2::{Gpt2, WeightFormat};
use crate::model::mapper::{CrossProjection, PrefixMapper, Projection};
use crate::model::packed::Visitor;

/// Checkpoint prefix of ADIFF's GPT-2 (the caption decoder's language model).
pub const GPT2_PREFIX: &str = "caption_decoder.gpt";

/// Stored tensors of the packed weights, and the names of the f32 weights they replace.
pub type PackedTensors = (Vec<(String, Tensor)>, Vec<String>);

/// Intermediate tensors of the prefix computation (kept for parity checks and `--json`).
pub struct PrefixParts {
    /// `[B, E]` unit-norm projections of the two HTSAT embeddings.
    pub projected1: Tensor,
    pub projected2: Tensor,
    /// `[B, P, C]` mapper outputs.
    pub audio_prefix1: Tensor,
    pub audio_prefix2: Tensor,
    pub text_prefix: Tensor,
    /// `[B, 3P+1, C]`: audio prefix 1, separator, audio prefix 2, text prefix.
    pub joint: Tensor,
    /// `[B, 3P+1, C]` after the cross-projection: GPT-2's `inputs_embeds` (equal to `joint`
    /// from [`Adiff::mapped_prefix`], which stops before the cross-projection).
    pub prefix: Tensor,
}

pub struct Adiff {
    cfg: AdiffConfig,
    pub audio: AudioEncoder,
    projection: Projection,
    audio_project1: PrefixMapper,
    audio_project2: PrefixMapper,
    text_project: PrefixMapper,
    cross_project: CrossProjection,
    pub gpt: Gpt2,
}

impl Adiff {
    /// Loads the whole model, naming every missing or mis-shaped tensor on failure.
    pub fn from_checkpoint(ckpt: &Checkpoint, cfg: &AdiffConfig, device: &Device) -> Result<Self> {
        let (vb, report) = ckpt.var_builder(DType::F32, device);
        let model =
            Self::load(vb, cfg).map_err(|e| AdiffError::checkpoint(ckpt.path(), e.to_string()))?;
        report.finish()?;
        Ok(model)
    }

    /// Loads the whole model from a checkpoint it owns: each tensor is released as soon as the
    /// model has taken (and possibly re-packed) it, which keeps peak memory near the model's size.
    pub fn from_checkpoint_owned(
        ckpt: Checkpoint,
        cfg: &AdiffConfig,
        device: &Device,
    ) -> Result<Self> {
        Self::from_checkpoint_owned_as(ckpt, cfg, device, DType::F32)
    }

    /// [`Adiff::from_checkpoint_owned`] with every weight in `dtype` (bf16/f16 on a GPU): the
    /// activations follow; the front end's tensors stay f32.
    pub fn from_checkpoint_owned_as(
        ckpt: Checkpoint,
        cfg: &AdiffConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let (vb, report) = ckpt.var_builder(dtype, device);
        let path = ckpt.path().to_path_buf();
        drop(ckpt);
        let model =
            Self::load(vb, cfg).map_err(|e| AdiffError::checkpoint(&path, e.to_string()))?;
        report.finish()?;
        Ok(model)
    }

    /// Builds the model from `vb` (the checkpoint root); problems are collected by the
    /// [`crate::model::checkpoint::LoadReport`] that came with `vb`.
    pub fn load(vb: VarBuilder, cfg: &AdiffConfig) -> Result<Self> {
        Self::load_or_init(vb, cfg, false)
    }

    /// As [`Adiff::load`]; `init_missing` lets GPT-2 start from scratch (see
    /// [`Gpt2::load_or_init`]) when `vb` initialises missing trainable tensors.
    pub fn load_or_init(vb: VarBuilder, cfg: &AdiffConfig, init_missing: bool) -> Result<Self> {
        let audio = AudioEncoder::load(vb.clone(), cfg)?;
        let width = cfg.gpt2.n_embd;
        let dec = vb.pp("caption_decoder");
        let model = Self {
            cfg: cfg.clone(),
            audio,
            projection: Projection::new(&cfg.projection, vb.pp("audio_encoder.projection"))?,
            audio_project1: PrefixMapper::audio(
                &cfg.mapper,
                cfg.projection.out_dim,
                width,
                dec.pp("audio_project1"),
            )?,
            audio_project2: PrefixMapper::audio(
                &cfg.mapper,
                cfg.projection.out_dim,
                width,
                dec.pp("audio_project2"),
            )?,
            text_project: PrefixMapper::text(&cfg.mapper, width, dec.pp("text_project"))?,
            cross_project: CrossProjection::new(
                &cfg.cross_projection,
                width,
                dec.pp("cross_project"),
            )?,
            gpt: Gpt2::load_or_init(vb.pp(GPT2_PREFIX), &cfg.gpt2, init_missing)?,
        };
        Ok(model)
    }

    pub fn config(&self) -> &AdiffConfig {
        &self.cfg
    }

    /// The format of the matmul weights of GPT-2, the mappers and the cross-projection (see
    /// [`Adiff::with_weight_format`] for HTSAT's).
    pub fn weight_format(&self) -> WeightFormat {
        self.gpt.weight_format()
    }

    /// Re-packs the matmul weights of GPT-2, the three mappers and the cross-projection into
    /// `format` (a no-op for those already in it, e.g. loaded from a converted file). HTSAT's
    /// Swin linears take f16 for `f16` and `i8` alike: its gemms over thousands of patch rows are
    /// bound by compute, so int8 would only add error, while f16 halves their memory. Its
    /// convolutions and the 768 -> E projection (1.6M weights, read once per clip) stay f32.
    pub fn with_weight_format(mut self, format: WeightFormat) -> Result<Self> {
        self.visit_before_gpt(&mut |_, p| p.repack(format))?;
        self.gpt = self.gpt.with_weight_format(format)?;
        Ok(self)
    }

    /// Each re-packable projection (HTSAT's, the mappers, the cross-projection, then GPT-2's)
    /// with its checkpoint name.
    pub(crate) fn visit_projections(&mut self, f: &mut Visitor) -> Result<()> {
        self.visit_before_gpt(f)?;
        self.gpt.visit(f)
    }

    /// [`Adiff::visit_projections`] without GPT-2's, which [`Gpt2::with_weight_format`] repacks
    /// along with its embedding table.
    fn visit_before_gpt(&mut self, f: &mut Visitor) -> Result<()> {
        self.audio.visit(f)?;
        let dec = "caption_decoder";
        self.audio_project1
            .visit(&format!("{dec}.audio_project1"), f)?;
        self.audio_project2
            .visit(&format!("{dec}.audio_project2"), f)?;
        self.text_project.visit(&format!("{dec}.text_project"), f)?;
        self.cross_project.visit(&format!("{dec}.cross_project"), f)
    }

    /// The packed weights' stored tensors (empty when f32) and the names of the f32 weights
    /// they replace, for `adiff convert --dtype`.
    pub fn packed_tensors(&mut self) -> Result<PackedTensors> {
        let mut stored = Vec::new();
        let mut replaced = Vec::new();
        self.visit_projections(&mut |name, p| {
            let parts = p.stored(name)?;
            if !parts.is_empty() {
                replaced.push(format!("{name}.weight"));
                stored.extend(parts);
            }
            Ok(())
        })?;
        Ok((stored, replaced))
    }

    pub fn device(&self) -> &Device {
        self.audio.device()
    }

    /// The activations' dtype after the front end (the weights' as loaded, unless set by
    /// [`Adiff::set_compute_dtype`]).
    pub fn compute_dtype(&self) -> DType {
        self.gpt.compute_dtype()
    }

    /// Runs HTSAT's stages, the mappers and GPT-2 in `dtype` whatever the weights' dtype (each
    /// weight is cast where it is used): bf16 over f32 master weights is mixed-precision
    /// training. The log-mel front end, softmax, the loss and the logits stay f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.audio.htsat.set_compute_dtype(dtype);
        // Frozen projections of HTSAT, the mappers and the cross-projection, cast once (GPT-2's
        // are cast by its own setter, with its tables).
        self.visit_before_gpt(&mut |_, p| p.cast_frozen(dtype))?;
        self.gpt.set_compute_dtype(dtype)
    }

    /// HTSAT embeddings `[B, 768]` of both audios and prompt ids `[B, L]` -> prefix parts.
    pub fn prefix(
        &self,
        embedding1: &Tensor,
        embedding2: &Tensor,
        prompt_ids: &Tensor,
    ) -> Result<PrefixParts> {
        let mut parts = self.mapped_prefix(embedding1, embedding2, prompt_ids)?;
        parts.prefix = self.cross_project(&parts.joint)?;
        Ok(parts)
    }

    /// [`Adiff::prefix`] up to the joint prefix, without the cross-projection (`prefix` holds
    /// the joint prefix too).
    pub fn mapped_prefix(
        &self,
        embedding1: &Tensor,
        embedding2: &Tensor,
        prompt_ids: &Tensor,
    ) -> Result<PrefixParts> {
        let b = embedding1.dim(0)?;
        // [B, 768] in the compute dtype (HTSAT's outputs and cached embeddings are f32)
        let dt = self.compute_dtype();
        let (embedding1, embedding2) = (embedding1.to_dtype(dt)?, embedding2.to_dtype(dt)?);
        // [B, E]
        let projected1 = self.projection.forward(&embedding1)?;
        let projected2 = self.projection.forward(&embedding2)?;
        // [B, P, C]
        let audio_prefix1 = self.audio_project1.forward(&projected1)?;
        let audio_prefix2 = self.audio_project2.forward(&projected2)?;
        // [B, L, C] -> [B, P, C]
        let text_prefix = self
            .text_project
            .forward(&self.gpt.embed_ids(prompt_ids)?)?;
        // [1, 1] -> [B, 1, C]
        let sep = Tensor::new(&[[self.cfg.text.separator_token_id]], self.device())?;
        let sep = self
            .gpt
            .embed_ids(&sep)?
            .broadcast_as((b, 1, self.cfg.gpt2.n_embd))?
            .contiguous()?;
        // [B, 3P+1, C]
        let joint = Tensor::cat(&[&audio_prefix1, &sep, &audio_prefix2, &text_prefix], 1)?;
        Ok(PrefixParts {
            projected1,
            projected2,
            audio_prefix1,
            audio_prefix2,
            text_prefix,
            prefix: joint.clone(),
            joint,
        })
    }

    /// The joint prefix `[B, 3P+1, C]` (mapped audio, separator, mapped audio, mapped prompt)
    /// through the cross-projection: GPT-2's `inputs_embeds` (the last step of [`Adiff::prefix`]).
    pub fn cross_project(&self, joint: &Tensor) -> Result<Tensor> {
        self.cross_project.forward(joint)
    }
}

//! AdamW with decoupled weight decay (as `torch.optim.AdamW`), global-norm gradient clipping (as
//! `torch.nn.utils.clip_grad_norm_`) and gradient accumulation.
//!
//! candle-nn's `AdamW` keeps its moments private, so a run could not be resumed exactly; this one
//! exposes them ([`AdamW::state_tensors`], [`AdamW::load_state`]). Every update is made of candle
//! tensor ops in f32, so it runs wherever the parameters live (CPU or CUDA). The order of the
//! elementwise operations follows torch's single-tensor implementation (its fused multiply-adds
//! included): on the fixture of `tests/train_optim.rs` the moments after 20 steps equal torch's
//! bit for bit, and parameters differ by at most 2 ulps, because torch's CPU f32 `sqrt` is not
//! correctly rounded (about 1 value in 5 is off by an ulp) while candle's is.

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{summarise, AdiffError, Result};
use crate::model::ops::storage_f32;

/// `torch.optim.AdamW` defaults.
pub const DEFAULT_BETA1: f64 = 0.9;
pub const DEFAULT_BETA2: f64 = 0.999;
pub const DEFAULT_EPS: f64 = 1e-8;
pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;
/// Added to the total norm before dividing, as `clip_grad_norm_` does, so a zero norm is safe.
pub const CLIP_NORM_EPS: f32 = 1e-6;

/// Name prefixes of the optimizer tensors in [`AdamW::state_tensors`].
pub const STATE_M_PREFIX: &str = "adamw.m.";
pub const STATE_V_PREFIX: &str = "adamw.v.";
pub const STATE_STEP_PREFIX: &str = "adamw.step.";

/// Parameter-name endings that get no weight decay by default: GPT-2's token and position
/// embeddings and the mappers' learnable prefix constants (decaying them towards zero only hurts).
pub const DEFAULT_NO_DECAY_SUFFIXES: [&str; 3] = ["wte.weight", "wpe.weight", "prefix_const"];

fn default_beta1() -> f64 {
    DEFAULT_BETA1
}
fn default_beta2() -> f64 {
    DEFAULT_BETA2
}
fn default_eps() -> f64 {
    DEFAULT_EPS
}
fn default_weight_decay() -> f64 {
    DEFAULT_WEIGHT_DECAY
}
fn default_true() -> bool {
    true
}
fn default_no_decay_suffixes() -> Vec<String> {
    DEFAULT_NO_DECAY_SUFFIXES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// AdamW hyper-parameters (the learning rate is not here: the caller passes it to every
/// [`AdamW::step`], from an [`crate::train::schedule::LrSchedule`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Added to `sqrt(v_hat)` (not inside the root), as torch does.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay: `p -= lr * weight_decay * p` before the Adam update.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// No weight decay for tensors of rank < 2 (biases, LayerNorm/BatchNorm scales and shifts).
    #[serde(default = "default_true")]
    pub no_decay_1d: bool,
    /// No weight decay for parameters whose name ends with one of these.
    #[serde(default = "default_no_decay_suffixes")]
    pub no_decay_suffixes: Vec<String>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: DEFAULT_BETA1,
            beta2: DEFAULT_BETA2,
            eps: DEFAULT_EPS,
            weight_decay: DEFAULT_WEIGHT_DECAY,
            no_decay_1d: true,
            no_decay_suffixes: default_no_decay_suffixes(),
        }
    }
}

impl AdamWConfig {
    /// Whether the parameter `name` of shape `dims` gets weight decay under this config's rule.
    pub fn decays(&self, name: &str, dims: &[usize]) -> bool {
        let one_dim = self.no_decay_1d && dims.len() < 2;
        let listed = self.no_decay_suffixes.iter().any(|s| name.ends_with(s));
        !(one_dim || listed)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(AdiffError::Config(format!("adamw: {m}")));
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} = {b} must be in [0, 1)"));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(format!("eps = {} must be positive", self.eps));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("weight_decay = {} must be >= 0", self.weight_decay));
        }
        Ok(())
    }
}

/// One parameter with its moments (f32, on the parameter's device).
struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
    /// Updates this parameter has received (torch keeps the count per parameter too, so a
    /// parameter that had no gradient for a while gets the right bias correction).
    step: u64,
}

/// What one [`AdamW::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    pub updated: usize,
    /// Parameters without a gradient in the store (not part of this loss): left untouched.
    pub skipped: usize,
}

/// AdamW over named `Var`s (kept sorted by name).
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
}

impl AdamW {
    /// Weight decay follows [`AdamWConfig::decays`].
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let rule = config.clone();
        Self::with_decay_rule(params, config, move |n, d| rule.decays(n, d))
    }

    /// `decays(name, dims)` says which parameters get weight decay (e.g. an explicit name list).
    pub fn with_decay_rule(
        mut params: Vec<(String, Var)>,
        config: AdamWConfig,
        decays: impl Fn(&str, &[usize]) -> bool,
    ) -> Result<Self> {
        config.validate()?;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = params.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(AdiffError::Invalid(format!(
                "adamw: parameter {} given twice",
                w[0].0
            )));
        }
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params {
            if var.dtype() != DType::F32 {
                return Err(AdiffError::Invalid(format!(
                    "adamw: parameter {name} is {:?}; the optimizer works on f32 parameters",
                    var.dtype()
                )));
            }
            let m = var.zeros_like()?;
            let v = var.zeros_like()?;
            slots.push(Slot {
                decay: decays(&name, var.dims()),
                name,
                var,
                m,
                v,
                step: 0,
            });
        }
        Ok(Self { slots, config })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Parameter names, sorted, each with whether it gets weight decay.
    pub fn param_groups(&self) -> Vec<(&str, bool)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.decay))
            .collect()
    }

    /// The parameters, sorted by name (for clipping, accumulation and saving).
    pub fn params(&self) -> Vec<(String, Var)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.var.clone()))
            .collect()
    }

    /// Updates `name` has received so far.
    pub fn step_count(&self, name: &str) -> Option<u64> {
        self.slot(name).map(|s| s.step)
    }

    /// First and second moments of `name`.
    pub fn moments(&self, name: &str) -> Option<(&Tensor, &Tensor)> {
        self.slot(name).map(|s| (&s.m, &s.v))
    }

    fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.slots[i])
    }

    /// One AdamW update at learning rate `lr`, exactly as torch's single-tensor AdamW:
    ///
    /// ```text
    /// t += 1
    /// p *= 1 - lr * wd                       (wd = 0 for no-decay parameters)
    /// m  = fma(1 - beta1, g - m, m)          (torch: m.lerp_(g, 1 - beta1))
    /// v  = fma((1 - beta2) * g, g, beta2 * v)  (torch: v.mul_(beta2).addcmul_(g, g, 1 - beta2))
    /// denom = sqrt(v) / sqrt(1 - beta2^t) + eps
    /// p += ((-lr / (1 - beta1^t)) * m) / denom   (torch: p.addcdiv_(m, denom, -step_size))
    /// ```
    /// Scalars are computed in f64 and applied in f32; `fma` rounds once (see [`wide`]).
    /// Parameters without a gradient are skipped.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<StepReport> {
        self.step_scaled(grads, lr, None)
    }

    /// [`AdamW::step`] on the gradients times `grad_scale` (rounded as candle's `affine`, so
    /// the result equals scaling the store first, e.g. by [`clip_grad_norm`], bit for bit),
    /// without writing the scaled gradients out: clipping becomes [`grad_norm`],
    /// [`clip_scale`] and this, one pass over the gradients fewer.
    pub fn step_scaled(
        &mut self,
        grads: &GradStore,
        lr: f64,
        grad_scale: Option<f32>,
    ) -> Result<StepReport> {
        if !(lr >= 0.0 && lr.is_finite()) {
            return Err(AdiffError::Invalid(format!(
                "adamw: learning rate {lr} is not a finite non-negative number"
            )));
        }
        // Shapes are checked first so that a bad store leaves every parameter untouched.
        for slot in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                if g.dims() != slot.var.dims() {
                    return Err(AdiffError::Invalid(format!(
                        "adamw: gradient of {} has shape {:?}, parameter {:?}",
                        slot.name,
                        g.dims(),
                        slot.var.dims()
                    )));
                }
            }
        }
        let mut report = StepReport {
            updated: 0,
            skipped: 0,
        };
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                report.skipped += 1;
                continue;
            };
            let g = g.to_dtype(DType::F32)?.detach();
            slot.step += 1;
            let t = slot.step as f64;
            let scalars = StepScalars::new(&self.config, slot.decay, lr, t);
            let p = slot.var.as_tensor();
            let (m, v) = if g.device().is_cpu() && p.dtype() == DType::F32 {
                // Writes p in place.
                fused_step(p, &g, &slot.m, &slot.v, &scalars, grad_scale)?
            } else {
                let g = match grad_scale {
                    Some(c) => g.affine(f64::from(c), 0.0)?,
                    None => g,
                };
                let (p, m, v) = tensor_step(p, &g, &slot.m, &slot.v, &scalars)?;
                slot.var.set(&p)?;
                (m, v)
            };
            slot.m = m;
            slot.v = v;
            report.updated += 1;
        }
        Ok(report)
    }

    /// Moments and per-parameter step counts, named `adamw.m.<param>`, `adamw.v.<param>` (f32, on
    /// the CPU) and `adamw.step.<param>` (i64 scalar), sorted by name.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.slots.len());
        for s in &self.slots {
            out.push((
                format!("{STATE_M_PREFIX}{}", s.name),
                s.m.to_device(&Device::Cpu)?,
            ));
            out.push((
                format!("{STATE_V_PREFIX}{}", s.name),
                s.v.to_device(&Device::Cpu)?,
            ));
            out.push((
                format!("{STATE_STEP_PREFIX}{}", s.name),
                Tensor::new(s.step as i64, &Device::Cpu)?,
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Restores the state written by [`AdamW::state_tensors`]. Every parameter's three tensors
    /// must be present with the right shape; otherwise nothing is changed and the error names the
    /// first few missing or mis-shaped tensors (and how many there are). Tensors for parameters
    /// this optimizer does not hold are ignored.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mut problems = Vec::new();
        let mut loaded = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let mut get = |prefix: &str, dims: &[usize]| -> Result<Option<Tensor>> {
                let name = format!("{prefix}{}", s.name);
                match tensors.get(&name) {
                    None => {
                        problems.push(format!("{name} is missing"));
                        Ok(None)
                    }
                    Some(t) if t.dims() != dims => {
                        problems.push(format!(
                            "{name} has shape {:?}, expected {dims:?}",
                            t.dims()
                        ));
                        Ok(None)
                    }
                    Some(t) => Ok(Some(t.clone())),
                }
            };
            let m = get(STATE_M_PREFIX, s.var.dims())?;
            let v = get(STATE_V_PREFIX, s.var.dims())?;
            let step = get(STATE_STEP_PREFIX, &[])?;
            if let (Some(m), Some(v), Some(step)) = (m, v, step) {
                let dev = s.var.device();
                let step = step.to_dtype(DType::I64)?.to_scalar::<i64>()?;
                if step < 0 {
                    problems.push(format!("{STATE_STEP_PREFIX}{} is negative", s.name));
                    continue;
                }
                loaded.push((
                    m.to_dtype(DType::F32)?.to_device(dev)?,
                    v.to_dtype(DType::F32)?.to_device(dev)?,
                    step as u64,
                ));
            }
        }
        if !problems.is_empty() {
            return Err(AdiffError::Invalid(format!(
                "optimizer state: {}",
                summarise("problem(s)", &problems)
            )));
        }
        for (s, (m, v, step)) in self.slots.iter_mut().zip(loaded) {
            s.m = m;
            s.v = v;
            s.step = step;
        }
        Ok(())
    }
}

/// The per-step constants of one parameter's update, rounded as the tensor path rounds them.
struct StepScalars {
    /// `1 - lr * weight_decay` as f32 (None when the parameter has no decay).
    decay: Option<f32>,
    /// The f32 value of `1 - beta1`, as torch casts the scalar before its fused kernel.
    beta1_weight: f64,
    one_minus_beta2: f32,
    beta2: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
}

impl StepScalars {
    fn new(cfg: &AdamWConfig, decay: bool, lr: f64, t: f64) -> Self {
        Self {
            decay: (decay && cfg.weight_decay != 0.0)
                .then_some((1.0 - lr * cfg.weight_decay) as f32),
            beta1_weight: f64::from((1.0 - cfg.beta1) as f32),
            one_minus_beta2: (1.0 - cfg.beta2) as f32,
            beta2: cfg.beta2 as f32,
            bias_correction2_sqrt: (1.0 - cfg.beta2.powf(t)).sqrt() as f32,
            eps: cfg.eps as f32,
            neg_step_size: (-lr / (1.0 - cfg.beta1.powf(t))) as f32,
        }
    }
}

/// The update of [`AdamW::step`] from tensor ops (any device); returns `(p, m, v)`.
fn tensor_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: &StepScalars,
) -> Result<(Tensor, Tensor, Tensor)> {
    let p = match k.decay {
        Some(d) => p.affine(f64::from(d), 0.0)?,
        None => p.clone(),
    };
    let m = (wide(&(g - m)?)?.affine(k.beta1_weight, 0.0)? + wide(m)?)?.to_dtype(DType::F32)?;
    let v = (wide(&g.affine(f64::from(k.one_minus_beta2), 0.0)?)?.mul(&wide(g)?)?
        + wide(&v.affine(f64::from(k.beta2), 0.0)?)?)?
    .to_dtype(DType::F32)?;
    // A true division (not a multiplication by the reciprocal), as torch.
    let bc2 = Tensor::new(k.bias_correction2_sqrt, v.device())?;
    let denom = v
        .sqrt()?
        .broadcast_div(&bc2)?
        .affine(1.0, f64::from(k.eps))?;
    let p = (p + (m.affine(f64::from(k.neg_step_size), 0.0)? / &denom)?)?;
    Ok((p, m, v))
}

/// The update of [`AdamW::step`] in one pass over each element on the CPU, with every rounding
/// of the tensor path (candle's f32 `affine` is `x * mul + add`, two roundings; the moments'
/// `a * b + c` in f64 then f32): bit-identical to it, and to torch (tests/train_optim.rs).
/// The parameter is updated in place (what `Var::set` would write, without the new tensor and
/// the copy); the new moments are returned. Each value is read once and written once: 28 bytes
/// per parameter, where copying everything out first, updating and copying back took ~70.
fn fused_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: &StepScalars,
    grad_scale: Option<f32>,
) -> Result<(Tensor, Tensor)> {
    let n = p.elem_count();
    if [g.elem_count(), m.elem_count(), v.elem_count()] != [n; 3] {
        return Err(AdiffError::Invalid(format!(
            "adamw: parameter of {n} values with gradient {}, moments {} and {}",
            g.elem_count(),
            m.elem_count(),
            v.elem_count()
        )));
    }
    let (g, m, v) = (g.contiguous()?, m.contiguous()?, v.contiguous()?);
    let kernel = FusedAdamW {
        g: &g,
        m: &m,
        v: &v,
        k,
        grad_scale,
        moments: std::sync::Mutex::new(None),
    };
    p.inplace_op1(&kernel)?;
    let (m_new, v_new) = kernel
        .moments
        .into_inner()
        .map_err(|_| AdiffError::Invalid("adamw: a worker thread panicked".into()))?
        .ok_or_else(|| AdiffError::Invalid("adamw: the fused update did not run".into()))?;
    let (dims, dev) = (p.dims(), p.device());
    Ok((
        Tensor::from_vec(m_new, dims, dev)?,
        Tensor::from_vec(v_new, dims, dev)?,
    ))
}

/// The in-place kernel of [`fused_step`]: writes the parameter it is applied to, reads the
/// gradient and the old moments, and leaves the new moments in `moments`.
struct FusedAdamW<'a> {
    g: &'a Tensor,
    m: &'a Tensor,
    v: &'a Tensor,
    k: &'a StepScalars,
    /// The gradient is `g * scale + 0.0` (candle's `affine`) when set.
    grad_scale: Option<f32>,
    moments: std::sync::Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl candle_core::InplaceOp1 for FusedAdamW<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        let (a, b) = match layout.contiguous_offsets() {
            Some(r) => r,
            None => candle_core::bail!("fused adamw needs a contiguous parameter"),
        };
        let p = match storage {
            candle_core::CpuStorage::F32(p) => &mut p[a..b],
            _ => candle_core::bail!("fused adamw needs an f32 parameter"),
        };
        let (gs, gl) = self.g.storage_and_layout();
        let (ms, ml) = self.m.storage_and_layout();
        let (vs, vl) = self.v.storage_and_layout();
        let (g, m, v) = (
            storage_f32(&gs, gl)?,
            storage_f32(&ms, ml)?,
            storage_f32(&vs, vl)?,
        );
        if [g.len(), m.len(), v.len()] != [p.len(); 3] {
            candle_core::bail!("fused adamw: gradient or moments do not match the parameter");
        }
        let k = self.k;
        let scale = self.grad_scale;
        // The new moments are written once each, so they are not zeroed first (a memset of
        // 8 bytes per parameter); their lengths are set once every chunk is written.
        let len = p.len();
        let mut m_out: Vec<f32> = Vec::with_capacity(len);
        let mut v_out: Vec<f32> = Vec::with_capacity(len);
        p.par_chunks_mut(CHUNK)
            .zip(m_out.spare_capacity_mut()[..len].par_chunks_mut(CHUNK))
            .zip(v_out.spare_capacity_mut()[..len].par_chunks_mut(CHUNK))
            .zip(
                g.par_chunks(CHUNK)
                    .zip(m.par_chunks(CHUNK))
                    .zip(v.par_chunks(CHUNK)),
            )
            .for_each(|(((p, m_out), v_out), ((g, m), v))| {
                adamw_chunk(p, m_out, v_out, (g, m, v), k, scale)
            });
        // SAFETY: `adamw_chunk` wrote every element of both (the chunks cover `p.len()`).
        unsafe {
            m_out.set_len(len);
            v_out.set_len(len);
        }
        let mut slot = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: poisoned moments".into()))?;
        *slot = Some((m_out, v_out));
        Ok(())
    }
}

crate::simd::widest_simd! {
    /// One chunk of [`FusedAdamW`]: the update of each element (see [`AdamW::step`] for the
    /// formula and its roundings; the vector variants round the same way).
    fn adamw_chunk(
        p: &mut [f32],
        m_out: &mut [std::mem::MaybeUninit<f32>],
        v_out: &mut [std::mem::MaybeUninit<f32>],
        ins: (&[f32], &[f32], &[f32]),
        k: &StepScalars,
        scale: Option<f32>,
    ) {
        let (g, m, v) = ins;
        // Zipped iterators: no bounds checks, so the loop vectorises.
        let outs = p.iter_mut().zip(m_out.iter_mut()).zip(v_out.iter_mut());
        let ins = g.iter().zip(m).zip(v);
        for (((pi, mo), vo), ((&g0, &m0), &v0)) in outs.zip(ins) {
            let gi = match scale {
                Some(c) => g0 * c + 0.0,
                None => g0,
            };
            let mut pv = *pi;
            if let Some(d) = k.decay {
                pv = pv * d + 0.0;
            }
            let mi = (f64::from(gi - m0) * k.beta1_weight + 0.0 + f64::from(m0)) as f32;
            let vi = (f64::from(gi * k.one_minus_beta2 + 0.0) * f64::from(gi)
                + f64::from(v0 * k.beta2 + 0.0)) as f32;
            let denom = (vi.sqrt() / k.bias_correction2_sqrt) * 1.0 + k.eps;
            *pi = pv + (mi * k.neg_step_size + 0.0) / denom;
            mo.write(mi);
            vo.write(vi);
        }
    }
}

/// f32 -> f64, for `a * b + c` rounded once to f32 (a product of two f32 values is exact in f64):
/// the fused multiply-add torch's CPU kernels compile `lerp_` and `addcmul_` to. With separate f32
/// roundings the moments drift from torch's by a few ulps per step.
fn wide(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_dtype(DType::F64)
}

/// Scales the gradients of `params` in `grads` so that their global L2 norm is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_` (norm of the per-tensor norms; coefficient
/// `max_norm / (norm + 1e-6)` clamped to 1, computed in f32). Returns the norm before clipping.
/// Parameters without a gradient are ignored; with no gradient at all the norm is 0. A non-finite
/// norm is returned as is and the gradients are left unscaled (torch would scale them by 0 or NaN):
/// the caller should skip that step.
pub fn clip_grad_norm(
    params: &[(String, Var)],
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64> {
    let total = grad_norm(params, grads)?;
    if let Some(coef) = clip_scale(total, max_norm) {
        for (_, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                // `g * coef + 0.0` per element as candle's `affine`, on every thread.
                let scaled = with_cpu_f32(g, |vals| {
                    use rayon::prelude::*;
                    vals.par_iter()
                        .map(|&x| x * coef + 0.0)
                        .collect::<Vec<f32>>()
                })?;
                let scaled = match scaled {
                    Some(out) => Tensor::from_vec(out, g.dims(), g.device())?,
                    None => g.affine(coef as f64, 0.0)?,
                };
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(total)
}

/// The factor [`clip_grad_norm`] scales gradients of global norm `total` by: `max_norm /
/// (total + 1e-6)` in f32 (torch's), or None where it would not scale (a coefficient clamped to
/// 1, which changes nothing, or a non-finite norm, which the caller should treat as divergence).
pub fn clip_scale(total: f64, max_norm: f64) -> Option<f32> {
    let coef = (max_norm as f32) / (total as f32 + CLIP_NORM_EPS);
    (total.is_finite() && coef < 1.0).then_some(coef)
}

/// Global L2 norm of the gradients of `params` (f32 math, as torch: the norm of the per-tensor
/// norms). Non-finite if any gradient is.
pub fn grad_norm(params: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let mut norms = Vec::new();
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            // Chunk sums in f64 on every thread, added in chunk order (the same result whatever
            // the thread count), then the tensor's norm in f32.
            let n = with_cpu_f32(g, |vals| {
                use rayon::prelude::*;
                let parts: Vec<f64> = vals
                    .par_chunks(NORM_CHUNK)
                    .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
                    .collect();
                parts.iter().sum::<f64>().sqrt() as f32
            })?;
            let n = match n {
                Some(n) => n,
                None => {
                    let n = g.to_dtype(DType::F32)?.sqr()?.sum_all()?.sqrt()?;
                    n.to_device(&Device::Cpu)?.to_scalar::<f32>()?
                }
            };
            norms.push(n);
        }
    }
    let total = norms.iter().map(|n| n * n).sum::<f32>().sqrt();
    Ok(total as f64)
}

/// Values per partial sum of [`grad_norm`].
const NORM_CHUNK: usize = 1 << 16;

/// `f` of the values of a contiguous f32 tensor on the CPU, read in place; None on other
/// devices, dtypes or layouts.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    if !t.device().is_cpu() || t.dtype() != DType::F32 {
        return Ok(None);
    }
    let (storage, layout) = t.storage_and_layout();
    if layout.contiguous_offsets().is_none() {
        return Ok(None);
    }
    Ok(Some(f(storage_f32(&storage, layout)?)))
}

/// Sums the gradients of several micro-batches (each from its own `loss.backward()`), by
/// parameter name; [`GradAccumulator::average`] divides by their number, which equals the
/// gradient of the mean of the micro-batch losses (one batch's mean loss when they are equally
/// sized).
#[derive(Default)]
pub struct GradAccumulator {
    sums: BTreeMap<String, Tensor>,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one micro-batch's gradients (detached, f32) for the parameters that have one.
    pub fn add(&mut self, params: &[(String, Var)], grads: &GradStore) -> Result<()> {
        for (name, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.to_dtype(DType::F32)?.detach();
                let sum = match self.sums.remove(name) {
                    Some(s) => (s + g)?,
                    None => g,
                };
                self.sums.insert(name.clone(), sum);
            }
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// Micro-batches added since the last [`GradAccumulator::average`] / [`GradAccumulator::sum`].
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The summed gradients as a [`GradStore`] for `params`; resets the accumulator.
    pub fn sum(&mut self, params: &[(String, Var)]) -> Result<GradStore> {
        self.take(params, 1.0)
    }

    /// The mean gradient over the micro-batches added; resets the accumulator. Errors when none
    /// was added.
    pub fn average(&mut self, params: &[(String, Var)]) -> Result<GradStore> {
        if self.micro_batches == 0 {
            return Err(AdiffError::Invalid(
                "gradient accumulation: no micro-batch was added".into(),
            ));
        }
        self.take(params, 1.0 / self.micro_batches as f64)
    }

    fn take(&mut self, params: &[(String, Var)], scale: f64) -> Result<GradStore> {
        let mut store = GradStore::default();
        let mut sums = std::mem::take(&mut self.sums);
        self.micro_batches = 0;
        for (name, var) in params {
            if let Some(g) = sums.remove(name) {
                let g = if scale == 1.0 {
                    g
                } else {
                    g.affine(scale, 0.0)?
                };
                store.insert(var.as_tensor(), g);
            }
        }
        if let Some(name) = sums.keys().next() {
            return Err(AdiffError::Invalid(format!(
                "gradient accumulation: {name} has a gradient but is not among the parameters"
            )));
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, data: &[f32], dims: &[usize]) -> (String, Var) {
        (
            name.to_string(),
            Var::from_vec(data.to_vec(), dims, &Device::Cpu).unwrap(),
        )
    }

    /// The fused CPU update and the tensor-op update (what other devices run) agree bit for bit.
    #[test]
    fn fused_step_is_bit_identical_to_tensor_ops() {
        let n = 40_000; // more than two rayon chunks
        let wave =
            |a: f32, b: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * a).sin() * b).collect() };
        let t = |x: Vec<f32>| Tensor::from_vec(x, (200, n / 200), &Device::Cpu).unwrap();
        let (p, g) = (t(wave(0.37, 0.5)), t(wave(1.3, 2e-3)));
        let m = t(wave(0.71, 1e-3));
        let v = t(wave(0.11, 1e-6).iter().map(|x| x.abs()).collect());
        let cfg = AdamWConfig::default();
        for (decay, lr, step) in [(true, 1e-3, 1.0), (false, 3e-4, 7.0), (true, 0.05, 250.0)] {
            let k = StepScalars::new(&cfg, decay, lr, step);
            let b = tensor_step(&p, &g, &m, &v, &k).unwrap();
            let p_fused = p.copy().unwrap(); // the fused step writes its parameter in place
            let (m_fused, v_fused) = fused_step(&p_fused, &g, &m, &v, &k, None).unwrap();
            let a = (p_fused, m_fused, v_fused);
            for (x, y) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
                let bits = |t: &Tensor| -> Vec<u32> {
                    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    v.iter().map(|f| f.to_bits()).collect()
                };
                assert_eq!(bits(x), bits(y), "decay {decay}, lr {lr}, step {step}");
            }
        }
    }

    #[test]
    fn default_rule_skips_bias_norm_and_embeddings() {
        let c = AdamWConfig::default();
        assert!(c.decays("h.0.attn.c_attn.weight", &[768, 2304]));
        assert!(!c.decays("h.0.attn.c_attn.bias", &[2304]));
        assert!(!c.decays("h.0.ln_1.weight", &[768]));
        assert!(!c.decays("gpt.transformer.wte.weight", &[50257, 768]));
        assert!(!c.decays("audio_mapper.prefix_const", &[40, 768]));
    }

    #[test]
    fn params_without_gradient_are_skipped_and_counted() {
        let a = var("a", &[1.0, 2.0], &[2]);
        let b = var("b", &[3.0], &[1]);
        let loss = a.1.as_tensor().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(vec![b.clone(), a.clone()], AdamWConfig::default()).unwrap();
        let r = opt.step(&grads, 0.1).unwrap();
        assert_eq!(
            r,
            StepReport {
                updated: 1,
                skipped: 1
            }
        );
        assert_eq!(opt.step_count("a"), Some(1));
        assert_eq!(opt.step_count("b"), Some(0));
        assert_eq!(b.1.as_tensor().to_vec1::<f32>().unwrap(), vec![3.0]);
        // First Adam step moves every coordinate by ~lr against the gradient's sign.
        let a_new = a.1.as_tensor().to_vec1::<f32>().unwrap();
        assert!((a_new[0] - 0.9).abs() < 1e-5 && (a_new[1] - 1.9).abs() < 1e-5);
    }

    #[test]
    fn load_state_names_missing_and_misshaped() {
        let a = var("a", &[1.0, 2.0], &[2]);
        let b = var("b", &[3.0], &[1]);
        let mut opt = AdamW::new(vec![a, b], AdamWConfig::default()).unwrap();
        let mut st: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        st.remove("adamw.v.a");
        st.insert(
            "adamw.m.b".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = opt.load_state(&st).unwrap_err().to_string();
        assert!(e.contains("adamw.v.a is missing"), "{e}");
        assert!(e.contains("adamw.m.b has shape [2], expected [1]"), "{e}");
        assert!(e.contains("2 problem(s)"), "{e}");
    }

    #[test]
    fn rejects_duplicate_and_non_f32_params() {
        let a = var("a", &[1.0], &[1]);
        assert!(AdamW::new(vec![a.clone(), a], AdamWConfig::default()).is_err());
        let h = Var::zeros(2, DType::F64, &Device::Cpu).unwrap();
        let e = AdamW::new(vec![("h".into(), h)], AdamWConfig::default());
        assert!(e.is_err());
    }

    #[test]
    fn clipping_leaves_non_finite_gradients_unscaled() {
        let a = var("a", &[1.0, 2.0], &[2]);
        let params = vec![a.clone()];
        let mut grads = GradStore::default();
        let g = Tensor::new(&[f32::INFINITY, 1.0], &Device::Cpu).unwrap();
        grads.insert(a.1.as_tensor(), g);
        let n = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
        assert!(n.is_infinite());
        let g = grads
            .get(a.1.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, vec![f32::INFINITY, 1.0]);
    }

    #[test]
    fn config_rejects_unknown_keys_and_bad_betas() {
        assert!(serde_json::from_str::<AdamWConfig>(r#"{"beta3": 0.5}"#).is_err());
        let c: AdamWConfig = serde_json::from_str(r#"{"beta1": 1.0}"#).unwrap();
        assert!(c.validate().is_err());
        let c: AdamWConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, AdamWConfig::default());
    }
}

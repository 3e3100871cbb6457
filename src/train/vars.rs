//! Which tensors train (checkpoint-name prefixes from a stage's config, shared by every stage),
//! GPT-2's tied head, and the export of trained tensors into the whole checkpoint.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use crate::error::{AdiffError, Result};
use crate::model::adiff::GPT2_PREFIX;
use crate::model::checkpoint::{Checkpoint, LoadReport, TrainablePredicate, TrainableVars};

/// Whether `name` is `prefix` or lies under it (`prefix.` ...).
pub fn under(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// True for names under any of `prefixes`.
pub fn prefix_predicate(prefixes: &[String]) -> TrainablePredicate {
    let prefixes = prefixes.to_vec();
    std::sync::Arc::new(move |name: &str| prefixes.iter().any(|p| under(name, p)))
}

/// Every prefix must have made at least one tensor trainable (a typo would train nothing).
pub fn check_matched(prefixes: &[String], vars: &[(String, Var)]) -> Result<()> {
    match prefixes
        .iter()
        .find(|p| !vars.iter().any(|(n, _)| under(n, p)))
    {
        Some(p) => Err(AdiffError::Config(format!(
            "trainable prefix '{p}' matches no tensor of the model"
        ))),
        None => Ok(()),
    }
}

/// A trainable var builder over `ckpt` (missing trainable tensors initialised from
/// `init_seed`); a stored `lm_head` that copies `wte` is left out so the model ties them, as
/// PyTorch trains it. The last value says whether that happened.
pub fn tied_var_builder(
    ckpt: &Checkpoint,
    trainable: &[String],
    init_seed: Option<u64>,
    device: &Device,
) -> Result<(VarBuilder<'static>, LoadReport, TrainableVars, bool)> {
    let untied = without_head_copy(ckpt)?;
    let source = untied.as_ref().unwrap_or(ckpt);
    let (vb, report, vars) =
        source.trainable_var_builder(DType::F32, device, prefix_predicate(trainable), init_seed);
    Ok((vb, report, vars, untied.is_some()))
}

/// The whole checkpoint with the trained tensors replaced (what stage 2 starts from with `-c`).
pub fn export_with(init: &Checkpoint, vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    let mut out: HashMap<String, Tensor> = init
        .names()
        .map(|n| (n.to_string(), init.get(n).cloned()))
        .filter_map(|(n, t)| t.map(|t| (n, t)))
        .collect();
    for (name, v) in vars {
        out.insert(name.clone(), v.as_tensor().detach());
    }
    Ok(out)
}

/// Names of GPT-2's token embedding and output head in an ADIFF checkpoint.
pub(crate) fn wte_and_head() -> (String, String) {
    (
        format!("{GPT2_PREFIX}.transformer.wte.weight"),
        format!("{GPT2_PREFIX}.lm_head.weight"),
    )
}

/// Whether `ckpt` holds `lm_head.weight` equal to `wte` element for element.
fn head_is_wte_copy(ckpt: &Checkpoint) -> Result<bool> {
    let (wte, head) = wte_and_head();
    let (Some(w), Some(h)) = (ckpt.get(&wte), ckpt.get(&head)) else {
        return Ok(false);
    };
    if w.dims() != h.dims() || w.dtype() != h.dtype() {
        return Ok(false);
    }
    let diff = w
        .to_dtype(DType::F32)?
        .sub(&h.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    Ok(diff == 0.0)
}

/// `ckpt` without its `lm_head.weight` when that is a copy of `wte` (then the loader ties the
/// head to `wte`, as PyTorch trains it); None when the head is absent or a tensor of its own.
pub(crate) fn without_head_copy(ckpt: &Checkpoint) -> Result<Option<Checkpoint>> {
    if !head_is_wte_copy(ckpt)? {
        return Ok(None);
    }
    let head = wte_and_head().1;
    let tensors = ckpt
        .names()
        .filter(|n| *n != head)
        .filter_map(|n| ckpt.get(n).map(|t| (n.to_string(), t.clone())))
        .collect();
    Ok(Some(Checkpoint::from_tensors(ckpt.path(), tensors)))
}

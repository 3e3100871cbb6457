//! Which tensors train: checkpoint-name prefixes from a stage's config, shared by every stage.

use candle_core::{DType, Device, Var};
use candle_nn::VarBuilder;

use crate::error::{AdiffError, Result};
use crate::model::checkpoint::{Checkpoint, LoadReport, TrainablePredicate, TrainableVars};
use crate::train::lm_task::without_head_copy;

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

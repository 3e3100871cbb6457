//! Training checkpoints: trainable weights + AdamW state + a JSON metadata blob (step, epoch, data
//! position and order, RNG state, validation losses, the training config) in ONE safetensors file,
//! so a resumed run continues exactly where it stopped.
//!
//! File layout: model tensors under `model.<name>`, optimizer tensors as named by
//! [`AdamW::state_tensors`] (`adamw.*`), and in the safetensors `__metadata__` map
//! `format = "adiff-train-state"`, `version = "1"`, `train_state = <TrainMeta as JSON>`.
//!
//! Writes are atomic: a temporary file in the same directory, fsync, rename, fsync of the
//! directory; the temporary file is removed if any part fails, so a crash or a full disk never
//! leaves a truncated file under a checkpoint name, and the previous checkpoint stays intact.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{summarise, AdiffError, Result};
use crate::model::checkpoint::Checkpoint;
use crate::train::optim::AdamW;

/// Value of the `format` metadata key.
pub const STATE_FORMAT: &str = "adiff-train-state";
/// Bumped whenever the layout or [`TrainMeta`] changes incompatibly.
pub const STATE_VERSION: u32 = 1;
const FORMAT_KEY: &str = "format";
const VERSION_KEY: &str = "version";
const META_KEY: &str = "train_state";
/// Prefix of the model weights inside a training checkpoint.
pub const MODEL_PREFIX: &str = "model.";
const CHECKPOINT_PREFIX: &str = "step-";
const CHECKPOINT_EXT: &str = ".safetensors";
/// Zero-padded width of the step in file names (`step-000123.safetensors`); larger steps simply
/// get more digits, and listing sorts by the parsed number, not the name.
const STEP_DIGITS: usize = 6;
const PARTIAL_SUFFIX: &str = ".partial";
/// Safetensors header length field size (little-endian u64).
const HEADER_LEN_BYTES: usize = 8;
/// Larger headers are not plausible (a permutation of millions of indices is a few MB).
const MAX_HEADER_BYTES: u64 = 256 << 20;

/// How the current epoch's data order can be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataOrder {
    /// The order is regenerated from this seed (e.g. `seed + epoch` into the shuffler).
    Seed { seed: u64 },
    /// The order itself: example indices in the order they are visited.
    Permutation { indices: Vec<u64> },
}

/// Everything besides tensors needed to resume a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainMeta {
    /// Optimizer steps completed (the next step's 0-based index, for the lr schedule).
    pub step: u64,
    /// 0-based epoch in progress.
    pub epoch: u64,
    /// Batches of the current epoch already consumed (in `data_order`).
    pub position_in_epoch: u64,
    pub data_order: DataOrder,
    /// State of the run's random generators, as the trainer packs it.
    pub rng_state: Vec<u64>,
    /// Validation loss measured at this checkpoint, if any (used to keep the best checkpoint).
    pub val_loss: Option<f64>,
    /// Best validation loss seen so far in the run.
    pub best_val_loss: Option<f64>,
    /// The training configuration, as JSON.
    pub config: serde_json::Value,
    /// SHA-256 of the run's data files (training and validation), when the command gave them:
    /// a resume on other data is refused. Absent in checkpoints of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
    /// Ranks of the data-parallel run that wrote it (1: a single process; absent then, and in
    /// checkpoints of earlier versions). The data order of the remaining steps depends on it.
    #[serde(default = "one_rank", skip_serializing_if = "is_one_rank")]
    pub world_size: usize,
}

fn one_rank() -> usize {
    1
}

fn is_one_rank(n: &usize) -> bool {
    *n == 1
}

/// Writes a training checkpoint atomically (see the module doc). Tensors are copied to the CPU.
/// `extra` holds further run state (e.g. weight averages), under names of its own.
pub fn save_train_state(
    path: &Path,
    model: &[(String, Var)],
    optimizer: &AdamW,
    extra: &[(String, Tensor)],
    meta: &TrainMeta,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(model.len());
    for (name, var) in model {
        tensors.push((
            format!("{MODEL_PREFIX}{name}"),
            var.as_tensor().to_device(&Device::Cpu)?,
        ));
    }
    tensors.extend(optimizer.state_tensors()?);
    tensors.extend(extra.iter().cloned());
    let json = serde_json::to_string(meta)
        .map_err(|e| AdiffError::checkpoint(path, format!("cannot encode metadata: {e}")))?;
    let metadata = HashMap::from([
        (FORMAT_KEY.to_string(), STATE_FORMAT.to_string()),
        (VERSION_KEY.to_string(), STATE_VERSION.to_string()),
        (META_KEY.to_string(), json),
    ]);
    write_atomic(&tensors, metadata, path)
}

/// Temp file beside `path`, fsync, rename, fsync the directory; the temp file is removed on error.
fn write_atomic(
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let err = |m: String| AdiffError::checkpoint(path, format!("cannot write: {m}"));
    let file_name = path
        .file_name()
        .ok_or_else(|| err("no file name".into()))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{file_name}{PARTIAL_SUFFIX}"));
    let result = (|| -> std::result::Result<(), String> {
        safetensors::serialize_to_file(
            tensors.iter().map(|(k, v)| (k.as_str(), v)),
            Some(metadata),
            &tmp,
        )
        .map_err(|e| e.to_string())?;
        // Data on disk before the rename makes it visible under the final name.
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("fsync: {e}"))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("rename: {e}"))?;
        sync_dir(&dir).map_err(|e| format!("fsync of the directory: {e}"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Makes a rename durable (the directory entry itself).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Reads only the safetensors header of `path` and returns its metadata after checking the format
/// and version (cheap: no tensor data is read).
pub fn read_train_meta(path: &Path) -> Result<TrainMeta> {
    let err = |m: String| AdiffError::checkpoint(path, m);
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let file_len = f
        .metadata()
        .map_err(|e| err(format!("cannot stat: {e}")))?
        .len();
    let mut len = [0u8; HEADER_LEN_BYTES];
    f.read_exact(&mut len)
        .map_err(|_| err(format!("truncated or not a checkpoint ({file_len} bytes)")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || HEADER_LEN_BYTES as u64 + header_len > file_len {
        return Err(err(format!(
            "truncated or corrupt: header of {header_len} bytes in a file of {file_len} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|e| err(format!("cannot read header: {e}")))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: Option<HashMap<String, String>>,
    }
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| err(format!("corrupt header (not JSON): {e}")))?;
    let md = header
        .metadata
        .ok_or_else(|| err("no metadata: not an adiff training checkpoint".into()))?;
    if md.get(FORMAT_KEY).map(String::as_str) != Some(STATE_FORMAT) {
        return Err(err(format!(
            "not an adiff training checkpoint (format {:?})",
            md.get(FORMAT_KEY)
        )));
    }
    let version = md.get(VERSION_KEY).map(String::as_str).unwrap_or("none");
    if version != STATE_VERSION.to_string() {
        return Err(err(format!(
            "training-state version {version}, this adiff reads version {STATE_VERSION}"
        )));
    }
    let json = md
        .get(META_KEY)
        .ok_or_else(|| err(format!("metadata has no {META_KEY:?} entry")))?;
    serde_json::from_str(json).map_err(|e| err(format!("bad {META_KEY} metadata: {e}")))
}

/// A training checkpoint read back from disk.
pub struct LoadedState {
    path: PathBuf,
    pub meta: TrainMeta,
    model: HashMap<String, Tensor>,
    optimizer: HashMap<String, Tensor>,
}

impl LoadedState {
    /// Reads the metadata (format and version checked first) and every tensor; a truncated or
    /// corrupt file gives one error naming it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let meta = read_train_meta(&path)?;
        let ckpt = Checkpoint::load(&path)?;
        let mut model = HashMap::new();
        let mut optimizer = HashMap::new();
        for name in ckpt.names() {
            let t = ckpt.get(name).expect("listed").clone();
            match name.strip_prefix(MODEL_PREFIX) {
                Some(n) => model.insert(n.to_string(), t),
                None => optimizer.insert(name.to_string(), t),
            };
        }
        Ok(Self {
            path,
            meta,
            model,
            optimizer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Model weights by parameter name (prefix removed), on the CPU.
    pub fn model_tensors(&self) -> &HashMap<String, Tensor> {
        &self.model
    }

    /// Copies the saved weights into `vars` (converted to each var's dtype and device). The saved
    /// set must match `vars` exactly; otherwise nothing is changed and the error names the
    /// file and the first few missing, mis-shaped or unexpected tensors.
    pub fn restore_model(&self, vars: &[(String, Var)]) -> Result<()> {
        let mut problems = Vec::new();
        for (name, var) in vars {
            match self.model.get(name) {
                None => problems.push(format!("{MODEL_PREFIX}{name} is missing")),
                Some(t) if t.dims() != var.dims() => problems.push(format!(
                    "{MODEL_PREFIX}{name} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )),
                Some(_) => {}
            }
        }
        let wanted: std::collections::HashSet<&str> =
            vars.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<&String> = self
            .model
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .collect();
        extra.sort();
        for n in extra {
            problems.push(format!(
                "{MODEL_PREFIX}{n} is not a trainable parameter of this model"
            ));
        }
        if !problems.is_empty() {
            return Err(AdiffError::checkpoint(
                &self.path,
                format!("model weights: {}", summarise("problem(s)", &problems)),
            ));
        }
        for (name, var) in vars {
            let t = &self.model[name];
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// Run state saved besides the weights and the optimizer (e.g. `average.<param>`), by name.
    pub fn other_tensors(&self) -> &HashMap<String, Tensor> {
        &self.optimizer
    }

    /// Restores the optimizer's moments and step counts; errors name the file.
    pub fn restore_optimizer(&self, optimizer: &mut AdamW) -> Result<()> {
        optimizer
            .load_state(&self.optimizer)
            .map_err(|e| AdiffError::checkpoint(&self.path, e.to_string()))
    }
}

/// A directory of training checkpoints `step-000123.safetensors`: keeps the last `keep_last`
/// plus the one with the lowest validation loss; older ones are deleted only after the new one
/// has been renamed into place. The latest checkpoint is the one with the highest step (every
/// listed file is complete, since writes are atomic).
pub struct CheckpointDir {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointDir {
    /// Creates `dir` if needed and removes temporary files left by an interrupted write.
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self> {
        let dir = dir.into();
        if keep_last == 0 {
            return Err(AdiffError::Config(
                "checkpoints: keep_last must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| AdiffError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        let this = Self { dir, keep_last };
        for entry in std::fs::read_dir(&this.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
                .is_some_and(|n| parse_step(n).is_some());
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(this)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/step-000123.safetensors`.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!(
            "{CHECKPOINT_PREFIX}{step:0width$}{CHECKPOINT_EXT}",
            width = STEP_DIGITS
        ))
    }

    /// Checkpoints in the directory, sorted by step.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| AdiffError::Invalid(format!("cannot list {}: {e}", self.dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) = parse_step(&name) {
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    out.push((step, entry.path()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The checkpoint with the highest step, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }

    /// For `--resume`: the latest checkpoint, loaded (None when the directory has none).
    pub fn load_latest(&self) -> Result<Option<LoadedState>> {
        self.latest()?.map(LoadedState::load).transpose()
    }

    /// The checkpoint with the lowest finite validation loss (earliest on ties), with that loss.
    /// Files whose metadata cannot be read are not candidates.
    pub fn best(&self) -> Result<Option<(PathBuf, f64)>> {
        let mut best: Option<(PathBuf, f64)> = None;
        for (_, path) in self.list()? {
            let Ok(meta) = read_train_meta(&path) else {
                continue;
            };
            if let Some(loss) = meta.val_loss.filter(|l| l.is_finite()) {
                if best.as_ref().is_none_or(|(_, b)| loss < *b) {
                    best = Some((path, loss));
                }
            }
        }
        Ok(best)
    }

    /// Writes `step-<meta.step>.safetensors` atomically, then deletes the checkpoints that are
    /// neither among the last `keep_last` nor the best. Returns the new file's path.
    pub fn save(
        &self,
        model: &[(String, Var)],
        optimizer: &AdamW,
        meta: &TrainMeta,
    ) -> Result<PathBuf> {
        self.save_with(model, optimizer, &[], meta)
    }

    /// [`CheckpointDir::save`] with further run state `extra` (see [`save_train_state`]).
    pub fn save_with(
        &self,
        model: &[(String, Var)],
        optimizer: &AdamW,
        extra: &[(String, Tensor)],
        meta: &TrainMeta,
    ) -> Result<PathBuf> {
        let path = self.path_for(meta.step);
        save_train_state(&path, model, optimizer, extra, meta)?;
        self.prune()?;
        Ok(path)
    }

    /// Deletes every checkpoint except the last `keep_last` (by step) and the best; returns the
    /// deleted paths.
    pub fn prune(&self) -> Result<Vec<PathBuf>> {
        let all = self.list()?;
        let best = self.best()?.map(|(p, _)| p);
        let first_kept = all.len().saturating_sub(self.keep_last);
        let mut deleted = Vec::new();
        for (_, path) in &all[..first_kept] {
            if Some(path) == best.as_ref() {
                continue;
            }
            std::fs::remove_file(path).map_err(|e| {
                AdiffError::checkpoint(path, format!("cannot delete old checkpoint: {e}"))
            })?;
            deleted.push(path.clone());
        }
        Ok(deleted)
    }
}

/// `step-000123.safetensors` -> 123.
fn parse_step(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(CHECKPOINT_PREFIX)?
        .strip_suffix(CHECKPOINT_EXT)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_round_trip() {
        assert_eq!(parse_step("step-000123.safetensors"), Some(123));
        assert_eq!(parse_step("step-1234567.safetensors"), Some(1234567));
        assert_eq!(parse_step("step-.safetensors"), None);
        assert_eq!(parse_step("step-12a.safetensors"), None);
        assert_eq!(parse_step(".step-000001.safetensors.partial"), None);
        let d = CheckpointDir {
            dir: PathBuf::from("x"),
            keep_last: 1,
        };
        assert_eq!(d.path_for(123), PathBuf::from("x/step-000123.safetensors"));
    }

    #[test]
    fn meta_json_is_strict() {
        let meta = TrainMeta {
            step: 1,
            epoch: 0,
            position_in_epoch: 1,
            data_order: DataOrder::Seed { seed: u64::MAX },
            rng_state: vec![u64::MAX, 1],
            val_loss: None,
            best_val_loss: Some(2.5),
            config: serde_json::json!({"lr": 1e-4}),
            data_sha256: Some("ab".into()),
            world_size: 4,
        };
        let s = serde_json::to_string(&meta).unwrap();
        let back: TrainMeta = serde_json::from_str(&s).unwrap();
        assert_eq!(back, meta, "u64 values above 2^53 survive JSON");
        let mut v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<TrainMeta>(v).is_err());
    }
}

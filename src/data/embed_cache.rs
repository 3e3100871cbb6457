//! A folder of precomputed HTSAT outputs (`adiff build-dataset embed-cache`), so that inference
//! and training read a clip's embedding instead of decoding and encoding its audio again.
//!
//! Layout of the folder:
//!
//! * `shard_00000.safetensors`, `shard_00001.safetensors`, ...: `embedding` `[rows, D]` and
//!   `clipwise` `[rows, classes]` (f32), the metadata key `paths` listing the rows' audio paths;
//! * `index.json`: format version, the [`CacheIdentity`] the shards were computed with, the shard
//!   files, and `entries`: audio path -> `{shard, row}`.
//!
//! Paths are the strings of the explanation CSVs (relative to their audio root), so a dataset
//! folder can move without invalidating its cache. A shard is written (atomically) before the
//! index names it, so an interrupted build loses at most the shard in progress, and the next
//! build skips every file the index already holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, IndexOp, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AdiffError, Result};
use crate::model::audio_encoder::AudioEncoder;
use crate::model::checkpoint::{save_safetensors, Checkpoint};
use crate::model::config::AdiffConfig;

/// Name of the index file inside a cache folder.
pub const INDEX_FILE: &str = "index.json";
/// Version of the folder layout; a cache of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
/// Tensor names inside a shard.
pub const EMBEDDING: &str = "embedding";
pub const CLIPWISE: &str = "clipwise";

/// What the cached numbers depend on. Two identities that differ in any field but `checkpoint`
/// mean the cache is stale for the model at hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheIdentity {
    /// SHA-256 over the tensors the audio encoder reads (`audio_encoder.base.htsat.*`): names,
    /// shapes and f32 values in name order, so the same weights match whatever file holds them.
    pub htsat_sha256: String,
    /// SHA-256 of the `audio` and `htsat` sections of the model config (as JSON).
    pub config_sha256: String,
    /// How clips longer than the model window are cut (`start`, `center`, `random (seed N)`).
    pub crop: String,
    /// The checkpoint file(s) the cache was built from (for messages only; not compared).
    pub checkpoint: String,
}

impl CacheIdentity {
    /// The identity of HTSAT in `ckpt` under `cfg`, with clips cut as `crop` says. Only the
    /// tensors the audio encoder reads are hashed (an encoder is built, on the CPU, to learn
    /// which), so a checkpoint and its `adiff convert` output have the same identity.
    pub fn new(ckpt: &Checkpoint, cfg: &AdiffConfig, crop: &str) -> Result<Self> {
        let (vb, report) = ckpt.var_builder(DType::F32, &Device::Cpu);
        AudioEncoder::load(vb, cfg)
            .map_err(|e| AdiffError::checkpoint(ckpt.path(), e.to_string()))?;
        let names = report.used_names();
        report.finish()?;
        let mut h = Sha256::new();
        for name in names {
            let t = ckpt
                .get(&name)
                .ok_or_else(|| AdiffError::Invalid(format!("tensor {name} vanished")))?;
            h.update(name.as_bytes());
            h.update([0u8]);
            for &d in t.dims() {
                h.update((d as u64).to_le_bytes());
            }
            let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            for v in values {
                h.update(v.to_le_bytes());
            }
        }
        let config = serde_json::to_string(&(&cfg.audio, &cfg.htsat))
            .map_err(|e| AdiffError::Config(e.to_string()))?;
        Ok(Self {
            htsat_sha256: crate::hub::hex(&h.finalize()),
            config_sha256: crate::hub::hex(&Sha256::digest(config.as_bytes())),
            crop: crop.to_string(),
            checkpoint: ckpt.path().display().to_string(),
        })
    }

    /// Why a cache built with `self` does not fit `now`, or None when it fits.
    pub fn mismatch(&self, now: &CacheIdentity) -> Option<String> {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        let mut why = Vec::new();
        if self.htsat_sha256 != now.htsat_sha256 {
            why.push(format!(
                "HTSAT weights differ (cache: sha256 {}… from {}; now: sha256 {}… from {})",
                short(&self.htsat_sha256),
                self.checkpoint,
                short(&now.htsat_sha256),
                now.checkpoint
            ));
        }
        if self.config_sha256 != now.config_sha256 {
            why.push("the audio/HTSAT config differs".to_string());
        }
        if self.crop != now.crop {
            why.push(format!(
                "the crop differs (cache: {}; now: {})",
                self.crop, now.crop
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// Where one cached clip lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub shard: usize,
    pub row: usize,
}

/// The contents of `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheIndex {
    pub version: u32,
    pub identity: CacheIdentity,
    /// Width of the embedding (HTSAT's final stage).
    pub embedding_dim: usize,
    /// Number of clipwise event classes.
    pub classes: usize,
    /// Shard file names, in order (`Entry::shard` indexes this list).
    pub shards: Vec<String>,
    /// Audio path -> shard and row.
    pub entries: BTreeMap<String, Entry>,
}

fn invalid(dir: &Path, msg: impl std::fmt::Display) -> AdiffError {
    AdiffError::Invalid(format!("embedding cache {}: {msg}", dir.display()))
}

fn read_index(dir: &Path) -> Result<Option<CacheIndex>> {
    let path = dir.join(INDEX_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(dir, e))?;
    let index: CacheIndex = serde_json::from_str(&text)
        .map_err(|e| invalid(dir, format!("{INDEX_FILE} is not a cache index: {e}")))?;
    if index.version != FORMAT_VERSION {
        return Err(invalid(
            dir,
            format!(
                "format version {} (this adiff reads {FORMAT_VERSION}); rebuild it",
                index.version
            ),
        ));
    }
    Ok(Some(index))
}

/// The tensors of one shard.
struct Shard {
    embedding: Tensor,
    clipwise: Tensor,
}

/// A cache opened for reading. Shards are read on first use; lookups take `&self`, so one cache
/// can serve several threads.
pub struct EmbedCache {
    dir: PathBuf,
    index: CacheIndex,
    shards: Vec<OnceLock<Shard>>,
}

impl EmbedCache {
    /// Opens a cache folder (any identity).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index = read_index(&dir)?.ok_or_else(|| {
            invalid(
                &dir,
                format!(
                    "no {INDEX_FILE} (not a cache; build one with `adiff build-dataset embed-cache`)"
                ),
            )
        })?;
        let shards = index.shards.iter().map(|_| OnceLock::new()).collect();
        Ok(Self { dir, index, shards })
    }

    /// Opens a cache and checks that it was computed with `expected` (same HTSAT weights, config
    /// and crop); a stale cache is refused with the reason.
    pub fn open_checked(dir: impl AsRef<Path>, expected: &CacheIdentity) -> Result<Self> {
        let cache = Self::open(dir)?;
        if let Some(why) = cache.index.identity.mismatch(expected) {
            return Err(invalid(
                &cache.dir,
                format!(
                    "stale for this model: {why}; rebuild it with `adiff build-dataset \
                     embed-cache` (into an empty folder)"
                ),
            ));
        }
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn index(&self) -> &CacheIndex {
        &self.index
    }

    pub fn len(&self) -> usize {
        self.index.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.entries.is_empty()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.index.entries.contains_key(path)
    }

    /// The cached audio paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.index.entries.keys().map(String::as_str)
    }

    fn shard(&self, i: usize) -> Result<&Shard> {
        if let Some(s) = self.shards[i].get() {
            return Ok(s);
        }
        let file = self.dir.join(&self.index.shards[i]);
        let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu)
            .map_err(|e| invalid(&self.dir, format!("{}: {e}", file.display())))?;
        let mut take = |name: &str, width: usize| {
            let t = tensors
                .remove(name)
                .ok_or_else(|| invalid(&self.dir, format!("{} has no '{name}'", file.display())))?;
            match t.dims() {
                [_, w] if *w == width => Ok(t.to_dtype(DType::F32)?),
                d => Err(invalid(
                    &self.dir,
                    format!(
                        "{}: '{name}' has shape {d:?}, expected [rows, {width}]",
                        file.display()
                    ),
                )),
            }
        };
        let shard = Shard {
            embedding: take(EMBEDDING, self.index.embedding_dim)?,
            clipwise: take(CLIPWISE, self.index.classes)?,
        };
        let _ = self.shards[i].set(shard);
        Ok(self.shards[i].get().expect("just set"))
    }

    fn row(&self, path: &str, clipwise: bool) -> Result<Tensor> {
        let e = self.index.entries.get(path).ok_or_else(|| {
            invalid(
                &self.dir,
                format!(
                    "'{path}' is not cached (run `adiff build-dataset embed-cache` on its CSV)"
                ),
            )
        })?;
        let shard = self.shard(e.shard)?;
        let t = if clipwise {
            &shard.clipwise
        } else {
            &shard.embedding
        };
        if e.row >= t.dim(0)? {
            return Err(invalid(
                &self.dir,
                format!("'{path}': row {} is past the end of its shard", e.row),
            ));
        }
        Ok(t.i(e.row)?)
    }

    /// The HTSAT embedding `[D]` of an audio path (on the CPU).
    pub fn embedding(&self, path: &str) -> Result<Tensor> {
        self.row(path, false)
    }

    /// The clipwise event probabilities `[classes]` of an audio path (on the CPU).
    pub fn clipwise(&self, path: &str) -> Result<Tensor> {
        self.row(path, true)
    }

    /// Embeddings of several paths stacked to `[B, D]` on `device` (a training batch).
    pub fn embeddings(&self, paths: &[&str], device: &Device) -> Result<Tensor> {
        let rows = paths
            .iter()
            .map(|p| self.embedding(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?.to_device(device)?)
    }
}

/// A cache opened for adding shards (`adiff build-dataset embed-cache`).
pub struct EmbedCacheWriter {
    dir: PathBuf,
    index: CacheIndex,
}

impl EmbedCacheWriter {
    /// Opens (or creates) a cache folder for a model with `identity`. An existing cache made with
    /// another identity is refused, so shards of two models never mix.
    pub fn open(
        dir: impl AsRef<Path>,
        identity: CacheIdentity,
        embedding_dim: usize,
        classes: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| invalid(&dir, e))?;
        let index = match read_index(&dir)? {
            Some(index) => {
                if let Some(why) = index.identity.mismatch(&identity) {
                    return Err(invalid(
                        &dir,
                        format!(
                            "was built for another model: {why}; use an empty folder or delete it"
                        ),
                    ));
                }
                index
            }
            None => CacheIndex {
                version: FORMAT_VERSION,
                identity,
                embedding_dim,
                classes,
                shards: Vec::new(),
                entries: BTreeMap::new(),
            },
        };
        Ok(Self { dir, index })
    }

    pub fn index(&self) -> &CacheIndex {
        &self.index
    }

    pub fn contains(&self, path: &str) -> bool {
        self.index.entries.contains_key(path)
    }

    /// Adds one shard: `embedding` `[n, D]` and `clipwise` `[n, classes]` of `paths` (in row
    /// order). The shard file is written first, then the index (both atomically).
    pub fn write_shard(
        &mut self,
        paths: &[String],
        embedding: &Tensor,
        clipwise: &Tensor,
    ) -> Result<()> {
        let n = paths.len();
        if embedding.dims() != [n, self.index.embedding_dim]
            || clipwise.dims() != [n, self.index.classes]
        {
            return Err(invalid(
                &self.dir,
                format!(
                    "shard of {n} paths with embedding {:?} and clipwise {:?}",
                    embedding.dims(),
                    clipwise.dims()
                ),
            ));
        }
        let shard = self.index.shards.len();
        let file = format!("shard_{shard:05}.safetensors");
        let tensors = std::collections::HashMap::from([
            (EMBEDDING.to_string(), embedding.to_dtype(DType::F32)?),
            (CLIPWISE.to_string(), clipwise.to_dtype(DType::F32)?),
        ]);
        let paths_json =
            serde_json::to_string(paths).map_err(|e| invalid(&self.dir, e.to_string()))?;
        let metadata = std::collections::HashMap::from([("paths".to_string(), paths_json)]);
        save_safetensors(&tensors, Some(metadata), &self.dir.join(&file))?;
        self.index.shards.push(file);
        for (row, p) in paths.iter().enumerate() {
            self.index.entries.insert(p.clone(), Entry { shard, row });
        }
        self.write_index()
    }

    fn write_index(&self) -> Result<()> {
        let path = self.dir.join(INDEX_FILE);
        let tmp = self.dir.join(format!(".{INDEX_FILE}.partial"));
        let text = serde_json::to_string_pretty(&self.index)
            .map_err(|e| invalid(&self.dir, e.to_string()))?;
        std::fs::write(&tmp, text + "\n").map_err(|e| invalid(&self.dir, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| invalid(&self.dir, e))?;
        Ok(())
    }
}

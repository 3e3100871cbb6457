//! Reading model weights: `.safetensors` and PyTorch `torch.save` archives (`.ckpt/.pth/.pt`).
//!
//! PyTorch archives are parsed with candle's pickle reader, which only interprets the pickle
//! opcodes and never executes code. A DDP `module.` prefix is stripped. Tensors whose storage type
//! the model never needs (GPT-2's bool `attn.bias` masks) are skipped. Models are built through a
//! [`CheckedBackend`] that records every missing or mis-shaped tensor, so one error can name all of
//! them instead of the first.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::error::{AdiffError, Result};

/// Prefix that `torch.nn.parallel.DistributedDataParallel` adds to every key.
const DDP_PREFIX: &str = "module.";

/// All tensors of one checkpoint file, on the CPU, keyed by name (DDP prefix stripped).
/// Cloning shares the tensors' storage.
#[derive(Clone)]
pub struct Checkpoint {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    /// Entries present in the file that could not be read (unsupported dtype), with the reason.
    skipped: HashMap<String, String>,
}

impl Checkpoint {
    /// Loads a `.safetensors` file or a PyTorch zip archive (chosen by content, not extension).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |m: String| AdiffError::checkpoint(&path, m);
        let meta = std::fs::metadata(&path).map_err(|e| err(format!("cannot open: {e}")))?;
        if meta.len() == 0 {
            return Err(err("file is empty".into()));
        }
        let mut magic = [0u8; 4];
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| err(format!("cannot read: {e}")))?;
        let (raw, skipped) = if &magic == b"PK\x03\x04" {
            read_torch_zip(&path)
                .map_err(|e| err(format!("not a readable PyTorch archive: {e}")))?
        } else {
            read_safetensors(&path)
                .map_err(|e| err(format!("not a readable safetensors or PyTorch file: {e}")))?
        };
        if raw.is_empty() {
            return Err(err("no tensors found".into()));
        }
        let strip = |n: String| n.strip_prefix(DDP_PREFIX).map(str::to_string).unwrap_or(n);
        let tensors = raw.into_iter().map(|(n, t)| (strip(n), t)).collect();
        let skipped = skipped.into_iter().map(|(n, r)| (strip(n), r)).collect();
        Ok(Self {
            path,
            tensors,
            skipped,
        })
    }

    /// Loads several files as one checkpoint (e.g. ADIFF weights plus a hub GPT-2); a tensor in a
    /// later file replaces one of the same name in an earlier file.
    pub fn load_all(paths: &[impl AsRef<Path>]) -> Result<Self> {
        let mut iter = paths.iter();
        let first = iter
            .next()
            .ok_or_else(|| AdiffError::Invalid("no checkpoint file given".into()))?;
        let mut ckpt = Self::load(first)?;
        for p in iter {
            let next = Self::load(p)?;
            ckpt.path = PathBuf::from(format!("{}+{}", ckpt.path.display(), next.path.display()));
            ckpt.tensors.extend(next.tensors);
            ckpt.skipped.extend(next.skipped);
        }
        Ok(ckpt)
    }

    /// Adds `other`'s tensors under `prefix` (names already in `self` are kept).
    pub fn add_prefixed(&mut self, other: Checkpoint, prefix: &str) {
        for (name, t) in other.tensors {
            self.tensors.entry(format!("{prefix}{name}")).or_insert(t);
        }
        self.path = PathBuf::from(format!("{}+{}", self.path.display(), other.path.display()));
    }

    /// A checkpoint held in memory (used by tests and by converters).
    pub fn from_tensors(path: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            path: path.into(),
            tensors,
            skipped: HashMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds packed (f16/int8) weights written by `adiff convert --dtype`:
    /// such a file is for inference, not for training or converting again.
    pub fn is_packed(&self) -> bool {
        self.names().any(crate::model::packed::is_packed_name)
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// A [`VarBuilder`] over this checkpoint that records problems instead of failing on the
    /// first one. Call [`LoadReport::finish`] once the model is built.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> (VarBuilder<'static>, LoadReport) {
        let (vb, report, _) = self.builder(dtype, device, None, None);
        (vb, report)
    }

    /// Like [`Checkpoint::var_builder`], but every tensor whose full name satisfies `trainable`
    /// becomes a [`Var`] (collected in the returned [`TrainableVars`], in the order the model
    /// reads them); the others stay plain tensors, so no gradient is computed for them. With
    /// `init_seed`, a trainable tensor the checkpoint lacks is created with the layer's default
    /// initialisation instead of being reported missing (to start training from parts, e.g.
    /// HTSAT weights + a hub GPT-2 without mappers), with values drawn from the seed and each
    /// tensor's name (reproducible).
    pub fn trainable_var_builder(
        &self,
        dtype: DType,
        device: &Device,
        trainable: TrainablePredicate,
        init_seed: Option<u64>,
    ) -> (VarBuilder<'static>, LoadReport, TrainableVars) {
        self.builder(dtype, device, Some(trainable), init_seed)
    }

    fn builder(
        &self,
        dtype: DType,
        device: &Device,
        trainable: Option<TrainablePredicate>,
        init_seed: Option<u64>,
    ) -> (VarBuilder<'static>, LoadReport, TrainableVars) {
        let problems = Arc::new(Mutex::new(Vec::new()));
        let used = Arc::new(Mutex::new(BTreeSet::new()));
        let vars = TrainableVars::default();
        let backend = CheckedBackend {
            tensors: Mutex::new(self.tensors.clone()),
            skipped: self.skipped.clone(),
            problems: problems.clone(),
            used: used.clone(),
            trainable,
            vars: vars.clone(),
            init_missing: init_seed.is_some(),
            init_seed: init_seed.unwrap_or(0),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let report = LoadReport {
            path: self.path.clone(),
            problems,
            used,
        };
        (vb, report, vars)
    }
}

/// Decides from a tensor's full name whether it is trained.
pub type TrainablePredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The trainable tensors a model was built with, by full checkpoint name.
#[derive(Clone, Default)]
pub struct TrainableVars(Arc<Mutex<Vec<(String, Var)>>>);

impl TrainableVars {
    /// The variables, sorted by name.
    pub fn sorted(&self) -> Vec<(String, Var)> {
        let mut v = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn push(&self, name: &str, var: Var) {
        if let Ok(mut v) = self.0.lock() {
            v.push((name.to_string(), var));
        }
    }
}

/// Problems found while building a model from a checkpoint.
pub struct LoadReport {
    path: PathBuf,
    problems: Arc<Mutex<Vec<String>>>,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl LoadReport {
    /// Names of the checkpoint tensors the model read, sorted (what `adiff convert` keeps).
    pub fn used_names(&self) -> Vec<String> {
        self.used
            .lock()
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Errors with the first few offending tensors (and how many there are) if any was missing or
    /// had the wrong shape.
    pub fn finish(self) -> Result<()> {
        let problems = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        if problems.is_empty() {
            return Ok(());
        }
        let msg = crate::error::summarise("tensor(s) do not fit the model", &problems);
        Err(AdiffError::checkpoint(self.path, msg))
    }
}

/// A [`SimpleBackend`] that hands out checkpoint tensors, converting dtype and device, and records
/// (rather than raises) missing or mis-shaped tensors, returning zeros so construction continues.
struct CheckedBackend {
    /// Handed-out tensors leave the map, so once the [`Checkpoint`] itself is dropped, a weight
    /// the model re-packs (transposes, converts) is freed instead of living on beside its copy.
    tensors: Mutex<HashMap<String, Tensor>>,
    skipped: HashMap<String, String>,
    problems: Arc<Mutex<Vec<String>>>,
    used: Arc<Mutex<BTreeSet<String>>>,
    /// Names to hand out as trainable [`Var`]s (None: plain tensors only).
    trainable: Option<TrainablePredicate>,
    vars: TrainableVars,
    /// Create missing trainable tensors from the layer's init hint instead of reporting them.
    init_missing: bool,
    /// Seed of those initial values (each tensor also mixes in its name).
    init_seed: u64,
}

/// Initial values for `shape` following candle's init hint `h`, drawn from a generator seeded
/// by `seed` and the tensor's name (candle's own `Init::var` uses an unseedable CPU generator).
fn seeded_init(
    h: &candle_nn::Init,
    shape: &Shape,
    name: &str,
    seed: u64,
) -> candle_core::Result<Tensor> {
    use candle_nn::init::{Init, NormalOrUniform};
    use rand::{Rng, SeedableRng};
    let mix = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ mix);
    let n = shape.elem_count();
    let mut normal = |mean: f64, std: f64| -> Vec<f32> {
        // Box-Muller on two uniforms in (0, 1].
        (0..n)
            .map(|_| {
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (mean + std * z) as f32
            })
            .collect()
    };
    let values = match *h {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => normal(mean, stdev),
        Init::Uniform { lo, up } => {
            let mut r = rand::rngs::StdRng::seed_from_u64(seed ^ mix);
            (0..n).map(|_| r.random_range(lo..up) as f32).collect()
        }
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    let mut r = rand::rngs::StdRng::seed_from_u64(seed ^ mix);
                    (0..n)
                        .map(|_| r.random_range(-bound..bound) as f32)
                        .collect()
                }
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), &Device::Cpu)
}

impl CheckedBackend {
    /// A fetched tensor, made a [`Var`] if it is trainable.
    fn hand_out(&self, name: &str, t: Tensor) -> candle_core::Result<Tensor> {
        match &self.trainable {
            Some(is_trainable) if is_trainable(name) => {
                let var = Var::from_tensor(&t)?;
                let out = var.as_tensor().clone();
                self.vars.push(name, var);
                Ok(out)
            }
            _ => Ok(t),
        }
    }

    fn record(&self, p: String) {
        if let Ok(mut v) = self.problems.lock() {
            v.push(p);
        }
    }

    fn mark_used(&self, name: &str) {
        if let Ok(mut u) = self.used.lock() {
            u.insert(name.to_string());
        }
    }

    fn was_taken(&self, name: &str) -> bool {
        self.used.lock().map(|u| u.contains(name)).unwrap_or(false)
    }
}

impl SimpleBackend for CheckedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut map = self
            .tensors
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        match map.get(name) {
            Some(t) if t.shape() == &s => {
                let t = map.remove(name).expect("present");
                drop(map);
                self.mark_used(name);
                self.hand_out(name, t.to_dtype(dtype)?.to_device(dev)?)
            }
            None if self.was_taken(name) => {
                self.record(format!("{name} was read twice (a bug in adiff)"));
                Tensor::zeros(s, dtype, dev)
            }
            Some(t) => {
                self.record(format!(
                    "{name} has shape {:?}, expected {:?}",
                    t.dims(),
                    s.dims()
                ));
                Tensor::zeros(s, dtype, dev)
            }
            None if self.init_missing
                && !self.skipped.contains_key(name)
                && self.trainable.as_ref().is_some_and(|t| t(name)) =>
            {
                drop(map);
                let var = Var::from_tensor(&seeded_init(&h, &s, name, self.init_seed)?)?;
                let var = Var::from_tensor(&var.as_tensor().to_dtype(dtype)?.to_device(dev)?)?;
                self.mark_used(name);
                let out = var.as_tensor().clone();
                self.vars.push(name, var);
                Ok(out)
            }
            None => {
                match self.skipped.get(name) {
                    Some(why) => self.record(format!("{name} could not be read ({why})")),
                    None => {
                        self.record(format!("{name} is missing (expected shape {:?})", s.dims()))
                    }
                }
                Tensor::zeros(s, dtype, dev)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let taken = self.tensors.lock().ok().and_then(|mut m| m.remove(name));
        match taken {
            Some(t) => {
                self.mark_used(name);
                self.hand_out(name, t.to_dtype(dtype)?.to_device(dev)?)
            }
            None => {
                self.record(format!("{name} is missing"));
                candle_core::bail!("{name} is missing")
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors
            .lock()
            .map(|m| m.contains_key(name))
            .unwrap_or(false)
    }
}

/// Writes tensors (moved to the CPU) and optional string metadata to a safetensors file,
/// atomically: a temporary file beside the target, then a rename, so an interrupted write never
/// leaves a truncated file under the final name.
pub fn save_safetensors(
    tensors: &HashMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<()> {
    let mut cpu = Vec::with_capacity(tensors.len());
    for (k, v) in tensors {
        cpu.push((k.as_str(), v.to_device(&Device::Cpu)?));
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.partial"));
    let io = |e: String| AdiffError::Invalid(format!("cannot write {}: {e}", path.display()));
    safetensors::serialize_to_file(cpu.iter().map(|(k, v)| (*k, v)), metadata, &tmp)
        .map_err(|e| io(e.to_string()))?;
    // safetensors writes through a private temporary file (mode 0600); give the output the
    // mode any new file of this process gets, as `File::create` would.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = 0o666 & !process_umask();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io(e.to_string()))?;
    Ok(())
}

/// The process's file-creation mask, read from `/proc/self/status` (setting it to read it
/// would race with other threads creating files); 0o022, the usual one, where that is absent.
#[cfg(unix)]
pub fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

type NamedTensors = Vec<(String, Tensor)>;

/// Reads every tensor of a `torch.save` zip archive holding a state dict (plain dict or
/// `OrderedDict`, possibly nested under `state_dict`/`model`). Entries of unsupported storage
/// types are returned separately, with the reason.
fn read_torch_zip(path: &Path) -> candle_core::Result<(NamedTensors, HashMap<String, String>)> {
    let file = std::fs::File::open(path)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(candle_core::Error::wrap)?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| candle_core::Error::Msg("archive has no data.pkl".into()))?;
    let dir = PathBuf::from(pkl_name.strip_suffix(".pkl").unwrap_or(&pkl_name));
    let obj = {
        let mut reader = BufReader::new(zip.by_name(&pkl_name).map_err(candle_core::Error::wrap)?);
        let mut stack = Stack::empty();
        stack.read_loop(&mut reader)?;
        stack.finalize()?
    };
    let entries = state_dict_entries(obj)
        .ok_or_else(|| candle_core::Error::Msg("data.pkl holds no state dict".into()))?;
    let mut tensors = Vec::new();
    let mut skipped = HashMap::new();
    // Tensors that share one storage (GPT-2's tied lm_head and wte) are read once and shared.
    let mut shared: HashMap<(String, usize, Vec<usize>), Tensor> = HashMap::new();
    for (key, value) in entries {
        let Object::Unicode(name) = key.clone() else {
            continue;
        };
        match value.into_tensor_info(key, &dir) {
            Ok(Some(info)) => {
                let id = (
                    info.path.clone(),
                    info.layout.start_offset(),
                    info.layout.dims().to_vec(),
                );
                let t = match shared.get(&id) {
                    Some(t) => t.clone(),
                    None => {
                        let t = read_tensor(&mut zip, &info)?;
                        shared.insert(id, t.clone());
                        t
                    }
                };
                tensors.push((name, t));
            }
            Ok(None) => {}
            Err(e) => {
                skipped.insert(name, e.to_string());
            }
        }
    }
    Ok((tensors, skipped))
}

/// Reads `shape`'s elements of `T` (stored little-endian, as on every platform candle runs on)
/// into a tensor, the file's bytes landing in the tensor's own buffer.
fn read_typed<T: candle_core::WithDType>(
    f: &std::fs::File,
    offset: u64,
    shape: &[usize],
) -> candle_core::Result<Tensor> {
    use std::os::unix::fs::FileExt;
    let n: usize = shape.iter().product();
    let mut v = zeroed_vec::<T>(n);
    huge_pages(&mut v);
    // SAFETY: `v` holds n initialised values of a plain-old-data type (f32, u8, f16: every bit
    // pattern is valid), viewed as their n * size_of::<T>() bytes for the read.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n * std::mem::size_of::<T>())
    };
    f.read_exact_at(bytes, offset)?;
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// `n` zero values from the allocator's zeroed memory (calloc: fresh pages are not written
/// before the read, as `vec![f16::default(); n]` would do for a type the standard library does
/// not know to be zero).
fn zeroed_vec<T: candle_core::WithDType>(n: usize) -> Vec<T> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Vec::new();
    }
    let layout = std::alloc::Layout::array::<T>(n).expect("tensor size overflows memory");
    // SAFETY: the layout is non-zero-sized; the block is n zeroed values of a plain-old-data
    // type (f32, u8, f16, ...: all-zero bits are a valid 0), allocated by the global allocator
    // with T's layout, as Vec::from_raw_parts requires.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Vec::from_raw_parts(p, n, n)
    }
}

/// Asks for transparent huge pages under a large fresh buffer before its first touch: the read
/// then faults it in 2 MB at a time instead of 4 KB (the faults were half of the f32 load's CPU
/// time, measured). Only a hint: without THP (or off Linux) nothing changes.
fn huge_pages<T>(v: &mut [T]) {
    /// Buffers below this are not worth a system call.
    const MIN_BYTES: usize = 4 << 20;
    const PAGE: usize = 4096;
    let bytes = std::mem::size_of_val(v);
    #[cfg(target_os = "linux")]
    if bytes >= MIN_BYTES {
        let start = (v.as_mut_ptr() as usize).next_multiple_of(PAGE);
        let end = (v.as_mut_ptr() as usize + bytes) / PAGE * PAGE;
        // SAFETY: madvise only sets a paging hint on whole pages inside `v`'s own allocation.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    let _ = (bytes, v);
}

/// Reads every tensor of a safetensors file with plain reads, each straight into its own buffer
/// (no memory map, so the file's pages and the tensors are never both resident: peak memory stays
/// near the model's size), on rayon's threads: the copy out of the page cache and the faulting-in
/// of fresh pages are CPU work that two cores share (the full f32 model's `explain` load phase:
/// 0.74-0.98 s -> 0.49-0.64 s over four runs each, measured). Tensors of dtypes candle cannot hold (the bool causal masks some GPT-2 exports carry)
/// are returned separately, with the reason.
fn read_safetensors(path: &Path) -> candle_core::Result<(NamedTensors, HashMap<String, String>)> {
    /// Larger headers are not plausible and would only be a way to make us allocate.
    const MAX_HEADER_BYTES: u64 = 100 << 20;
    let bad = |m: String| candle_core::Error::Msg(m);
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("file too short for a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(bad(format!("implausible header length {header_len}")));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut jobs = Vec::new();
    let mut skipped = HashMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let field = |k: &str| {
            info.get(k)
                .ok_or_else(|| bad(format!("{name}: no '{k}' in header")))
        };
        let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
        let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone())
            .map_err(|e| bad(format!("{name}: bad shape: {e}")))?;
        let offsets: [u64; 2] = serde_json::from_value(field("data_offsets")?.clone())
            .map_err(|e| bad(format!("{name}: bad data_offsets: {e}")))?;
        let dtype = match dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "I64" => DType::I64,
            "U32" => DType::U32,
            "U8" => DType::U8,
            other => {
                skipped.insert(name, format!("unsupported dtype {other}"));
                continue;
            }
        };
        let n_bytes = shape.iter().product::<usize>() * dtype.size_in_bytes();
        if offsets[1] < offsets[0]
            || offsets[1] - offsets[0] != n_bytes as u64
            || data_start + offsets[1] > file_len
        {
            return Err(bad(format!(
                "{name}: data offsets {offsets:?} do not fit its shape or the file"
            )));
        }
        jobs.push((name, dtype, shape, data_start + offsets[0], n_bytes));
    }
    // In file order.
    jobs.sort_by_key(|j| j.3);
    let f = &f;
    let tensors = jobs
        .into_par_iter()
        .map(|(name, dtype, shape, offset, n_bytes)| {
            // Read straight into the tensor's own buffer (no second copy of the bytes).
            let t = match dtype {
                DType::F32 => read_typed::<f32>(f, offset, &shape)?,
                DType::U8 => read_typed::<u8>(f, offset, &shape)?,
                DType::F16 => read_typed::<half::f16>(f, offset, &shape)?,
                _ => {
                    let mut bytes = vec![0u8; n_bytes];
                    f.read_exact_at(&mut bytes, offset)?;
                    Tensor::from_raw_buffer(&bytes, dtype, &shape, &Device::Cpu)?
                }
            };
            Ok((name, t))
        })
        .collect::<candle_core::Result<NamedTensors>>()?;
    Ok((tensors, skipped))
}

/// Finds the `(name, tensor)` pairs of a state dict in an unpickled object.
fn state_dict_entries(obj: Object) -> Option<Vec<(Object, Object)>> {
    let entries = match obj {
        Object::Dict(d) => d,
        // An OrderedDict with `_metadata` is pickled as BUILD(OrderedDict(), state).
        Object::Build { callable, .. } => match *callable {
            Object::Dict(d) => d,
            _ => return None,
        },
        _ => return None,
    };
    let has_tensors = entries
        .iter()
        .any(|(_, v)| matches!(v, Object::Reduce { .. }));
    if has_tensors {
        return Some(entries);
    }
    // Training checkpoints nest the weights: {"state_dict": {...}} or {"model": {...}}.
    entries.into_iter().find_map(|(k, v)| match k {
        Object::Unicode(k) if k == "state_dict" || k == "model" => state_dict_entries(v),
        _ => None,
    })
}

fn read_tensor<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    info: &TensorInfo,
) -> candle_core::Result<Tensor> {
    let layout = &info.layout;
    let mut reader = zip.by_name(&info.path).map_err(candle_core::Error::wrap)?;
    let fortran = layout.is_fortran_contiguous() && layout.shape().rank() > 1;
    if !layout.is_contiguous() && !fortran {
        candle_core::bail!("{}: non-contiguous tensors are not supported", info.name);
    }
    std::io::copy(
        &mut reader.by_ref().take(layout.start_offset() as u64),
        &mut std::io::sink(),
    )?;
    let mut bytes = vec![0u8; layout.shape().elem_count() * info.dtype.size_in_bytes()];
    reader.read_exact(&mut bytes)?;
    if fortran {
        // Stored column-major: read with the reversed shape, then reverse the axes back.
        let rev: Vec<usize> = layout.dims().iter().rev().copied().collect();
        let t = Tensor::from_raw_buffer(&bytes, info.dtype, &rev, &Device::Cpu)?;
        let axes: Vec<usize> = (0..rev.len()).rev().collect();
        t.permute(axes)?.contiguous()
    } else {
        Tensor::from_raw_buffer(&bytes, info.dtype, layout.dims(), &Device::Cpu)
    }
}

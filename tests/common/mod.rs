//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Tensor;

/// The crate root (where `configs/` and `tests/fixtures/` live).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `adiff` binary with `args` from the crate root.
pub fn adiff<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// A failing command exits 1 with exactly one line on stderr that contains `needle`, and no
/// panic message.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `out` of a command that must have succeeded; otherwise fails with its stdout and stderr.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "command failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// The three files that together form the tiny official-layout checkpoint: HTSAT, GPT-2 and
/// the rest of ADIFF (`scripts/make_fixtures.py`).
pub fn tiny_checkpoint_parts() -> Vec<PathBuf> {
    [
        "htsat/htsat_tiny.ckpt",
        "gpt2/adiff_tiny.safetensors",
        "adiff/adiff_tiny_rest.ckpt",
    ]
    .map(fixture)
    .to_vec()
}

/// `--config <root>/configs/tiny.json`.
pub fn tiny_config_args() -> [String; 2] {
    [
        "--config".into(),
        root().join("configs/tiny.json").display().to_string(),
    ]
}

/// The tiny model on an `adiff` command line: `-c PART` for each of
/// [`tiny_checkpoint_parts`], then [`tiny_config_args`] (absolute paths).
pub fn tiny_model_args() -> Vec<String> {
    let mut v = Vec::new();
    for part in tiny_checkpoint_parts() {
        v.push("-c".into());
        v.push(part.display().to_string());
    }
    v.extend(tiny_config_args());
    v
}

/// Largest absolute element-wise difference of two same-shaped f32 tensors.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest absolute value of a tensor (the scale relative errors are measured against).
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Writes a mono 32 kHz PCM16 WAV holding `data` (little-endian i16 samples).
#[allow(dead_code)] // not every test binary writes audio
pub fn write_pcm16_wav(path: &Path, data: &[u8]) {
    let mut w = Vec::with_capacity(44 + data.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    // fmt chunk size 16; PCM, 1 channel; 32 kHz; 64000 bytes/s; block align 2, 16 bits.
    for v in [16u32, 1 | (1 << 16), 32_000, 64_000, 2 | (16 << 16)] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(data);
    std::fs::write(path, w).unwrap();
}

/// A fresh scratch folder `<tmp>/<name>XXXXXX` (tempfile's), removed when dropped: also when
/// the test panics, so a failed run leaves nothing behind (a failed demo-model run used to leave
/// 250 MB of clips in /tmp each time). Derefs to its path.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn new(name: &str) -> Self {
        Scratch(
            tempfile::Builder::new()
                .prefix(&format!("{name}-"))
                .tempdir()
                .unwrap(),
        )
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<OsStr> for Scratch {
    fn as_ref(&self) -> &OsStr {
        self.0.path().as_os_str()
    }
}

/// A fresh scratch folder `<tmp>/<tag>-<name>-XXXXXX` holding a synthetic dataset (`data/`, from
/// `build-dataset synthetic --count count --seed seed`) and its embedding cache (`data/cache`)
/// for the tiny model: what the training tests train on.
pub fn synthetic_dataset(tag: &str, name: &str, count: u32, seed: u32) -> Scratch {
    let dir = Scratch::new(&format!("{tag}-{name}"));
    let data = dir.join("data");
    let (count, seed) = (count.to_string(), seed.to_string());
    let d = data.display().to_string();
    ok(adiff(&[
        "build-dataset",
        "synthetic",
        "--count",
        &count,
        "--seed",
        &seed,
        "-o",
        &d,
    ]));
    let csv = data.join("train_sentence_answer.csv").display().to_string();
    let cache = data.join("cache").display().to_string();
    let mut args = vec!["build-dataset", "embed-cache", &csv, "--audio-root", &d];
    let model = tiny_model_args();
    args.extend(model.iter().map(String::as_str));
    args.extend(["-o", &cache]);
    ok(adiff(&args));
    dir
}

/// `explain --json` output whose first answer is the PyTorch reference's for fixture row `row`
/// of `tests/fixtures/adiff/adiff_tiny_expected.json`: same prompt, token count and text.
pub fn assert_reference_answer(stdout: &[u8], row: &serde_json::Value) {
    let v: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    let answer = &v["answers"][0];
    assert_eq!(answer["prompt"], row["prompt"]);
    assert_eq!(
        answer["tokens"].as_u64().unwrap() as usize,
        row["reference_ids"].as_array().unwrap().len()
    );
    assert_eq!(
        answer["explanation"].as_str().unwrap(),
        row["reference_text"].as_str().unwrap().trim()
    );
}

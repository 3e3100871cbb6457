//! `adiff build-dataset embed-cache` on the tiny fixture model: cached embeddings equal
//! on-the-fly ones, `infer --embed-cache` writes what `infer` writes, a rebuild skips what is
//! cached, and a cache of other HTSAT weights or another crop is refused.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use adiff::audio::{load_clip, CropMode};
use adiff::data::embed_cache::EmbedCache;
use adiff::model::audio_encoder::AudioEncoder;
use adiff::model::checkpoint::{save_safetensors, Checkpoint};
use adiff::model::config::AdiffConfig;
use candle_core::{Device, Tensor};
use common::{fixture, max_abs_diff, root, tiny_model_args};

/// Largest difference tolerated between a cached embedding and one computed on the fly. Both
/// run the same code on the same clip; only the batch it is encoded in may differ.
const TOLERANCE: f32 = 1e-6;

fn adiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn tmp(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("adiff-test-{name}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small synthetic dataset in `dir` (`count` pairs).
fn dataset(dir: &Path, count: usize) {
    let o = adiff(&[
        "build-dataset",
        "synthetic",
        "-o",
        s(dir),
        "--count",
        &count.to_string(),
        "--seed",
        "9",
        "--split",
        "test",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn embed_cache(
    csvs: &[&Path],
    audio_root: &Path,
    ckpt: &Path,
    out: &Path,
    extra: &[&str],
) -> Output {
    let mut args = vec!["build-dataset", "embed-cache"];
    args.extend(csvs.iter().map(|p| s(p)));
    args.extend([
        "--audio-root",
        s(audio_root),
        "-c",
        s(ckpt),
        "--config",
        "configs/tiny.json",
        "-o",
        s(out),
        "--batch-size",
        "3",
        "--shard-size",
        "2",
    ]);
    args.extend(extra);
    adiff(&args)
}

fn infer(data: &Path, audio_root: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "infer",
        s(data),
        "--audio-root",
        s(audio_root),
        "-o",
        s(out),
    ];
    let model = tiny_model_args();
    args.extend(model.iter().map(String::as_str));
    args.extend(["--max-tokens", "12", "--batch-size", "2"]);
    args.extend(extra);
    let args: Vec<String> = args.into_iter().map(String::from).collect();
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(&args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

#[test]
fn cache_equals_on_the_fly_and_infer_with_it_writes_the_same() {
    let dir = tmp("embcache-eq");
    dataset(&dir, 3);
    let csv = dir.join("test_sentence_answer.csv");
    let cache_dir = dir.join("cache");
    let htsat = fixture("htsat/htsat_tiny.ckpt");
    let err = ok(&embed_cache(&[&csv], &dir, &htsat, &cache_dir, &[]));
    assert!(err.contains("cached 6 file(s) in 3 new shard(s)"), "{err}");

    // On the fly, one clip at a time, through the library.
    let cfg = AdiffConfig::from_file(root().join("configs/tiny.json")).unwrap();
    let ckpt = Checkpoint::load(&htsat).unwrap();
    let encoder = AudioEncoder::from_checkpoint(&ckpt, &cfg, &Device::Cpu).unwrap();
    let cache = EmbedCache::open(&cache_dir).unwrap();
    assert_eq!(cache.len(), 6);
    let mut worst = 0f32;
    for path in cache.paths().map(String::from).collect::<Vec<_>>() {
        let clip = load_clip(&dir.join(&path), &cfg.audio, CropMode::Start).unwrap();
        let (_, out) = encoder.encode(&[clip]).unwrap();
        let emb = cache.embedding(&path).unwrap();
        let clipwise = cache.clipwise(&path).unwrap();
        worst = worst
            .max(max_abs_diff(&emb, &out.embedding.squeeze(0).unwrap()))
            .max(max_abs_diff(&clipwise, &out.clipwise.squeeze(0).unwrap()));
    }
    eprintln!("cache vs on the fly: max abs diff {worst:e} (tolerance {TOLERANCE:e})");
    assert!(worst <= TOLERANCE, "{worst}");
    let batch = cache
        .embeddings(
            &["audio/test_000001_2.wav", "audio/test_000000_1.wav"],
            &Device::Cpu,
        )
        .unwrap();
    assert_eq!(batch.dims(), [2, 128]);

    // infer with and without the cache: the same file.
    let (plain, cached) = (dir.join("plain.csv"), dir.join("cached.csv"));
    ok(&infer(&csv, &dir, &plain, &[]));
    ok(&infer(
        &csv,
        &dir,
        &cached,
        &["--embed-cache", s(&cache_dir)],
    ));
    let a = std::fs::read_to_string(&plain).unwrap();
    assert_eq!(a.lines().count(), 4, "{a}");
    assert_eq!(a, std::fs::read_to_string(&cached).unwrap());

    // The same weights converted to one safetensors file have the same identity.
    let converted = dir.join("tiny.safetensors");
    let mut args = vec!["convert".to_string()];
    args.extend(tiny_model_args());
    args.extend(["-o", s(&converted)].map(String::from));
    ok(&adiff(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let conv_out = dir.join("converted.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args([
            "infer",
            s(&csv),
            "--audio-root",
            s(&dir),
            "-o",
            s(&conv_out),
        ])
        .args(["-c", s(&converted), "--config", s(&dir.join("tiny.json"))])
        .args(["--max-tokens", "12", "--batch-size", "2"])
        .args(["--embed-cache", s(&cache_dir)])
        .current_dir(root())
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(a, std::fs::read_to_string(&conv_out).unwrap());

    // A row whose audio is not cached is reported and skipped, as broken audio is.
    let extra = dir.join("extra.csv");
    std::fs::write(
        &extra,
        "taskname,filepath1,filepath2,caption1,caption2,input,answer\n\
         t,audio/test_000000_1.wav,audio/elsewhere.wav,a,b,explain the difference in few words,r\n",
    )
    .unwrap();
    let o = infer(
        &extra,
        &dir,
        &dir.join("x.csv"),
        &["--embed-cache", s(&cache_dir)],
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    // Its only row skipped: exit status 3 (no row explained).
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("'audio/elsewhere.wav' is not cached") && err.contains("1 skipped"),
        "{err}"
    );
}

/// The tiny HTSAT checkpoint with one weight changed, as safetensors.
fn other_checkpoint(path: &Path) {
    let ckpt = Checkpoint::load(fixture("htsat/htsat_tiny.ckpt")).unwrap();
    let mut tensors: HashMap<String, Tensor> = ckpt
        .names()
        .map(|n| (n.to_string(), ckpt.get(n).unwrap().clone()))
        .collect();
    let name = "audio_encoder.base.htsat.norm.weight";
    let t = tensors[name].affine(1.01, 0.0).unwrap();
    tensors.insert(name.to_string(), t);
    save_safetensors(&tensors, None, path).unwrap();
}

fn one_line_error(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

#[test]
fn rebuild_skips_cached_shards_and_stale_cache_is_refused() {
    let dir = tmp("embcache-resume");
    dataset(&dir, 3);
    // The first pair only, then the whole file: the second build only adds what is missing.
    let all = dir.join("test_fewwords_answer.csv");
    let text = std::fs::read_to_string(&all).unwrap();
    let first = dir.join("first.csv");
    std::fs::write(
        &first,
        text.lines().take(2).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let htsat = fixture("htsat/htsat_tiny.ckpt");
    let cache_dir = dir.join("cache");
    let err = ok(&embed_cache(&[&first], &dir, &htsat, &cache_dir, &[]));
    assert!(
        err.contains("cached 2 file(s) in 1 new shard(s), 0 already"),
        "{err}"
    );
    let shard0 = cache_dir.join("shard_00000.safetensors");
    let (bytes0, mtime0) = (
        std::fs::read(&shard0).unwrap(),
        std::fs::metadata(&shard0).unwrap().modified().unwrap(),
    );
    let err = ok(&embed_cache(&[&first, &all], &dir, &htsat, &cache_dir, &[]));
    assert!(
        err.contains("cached 4 file(s) in 2 new shard(s), 2 already"),
        "{err}"
    );
    assert_eq!(std::fs::read(&shard0).unwrap(), bytes0);
    assert_eq!(
        std::fs::metadata(&shard0).unwrap().modified().unwrap(),
        mtime0
    );
    let err = ok(&embed_cache(&[&all], &dir, &htsat, &cache_dir, &[]));
    assert!(
        err.contains("cached 0 file(s) in 0 new shard(s), 6 already"),
        "{err}"
    );
    assert_eq!(EmbedCache::open(&cache_dir).unwrap().len(), 6);

    // A build killed after writing its last shard but before the index named it: the next build
    // redoes that shard only.
    let index_path = cache_dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let last = index["shards"].as_array_mut().unwrap().pop().unwrap();
    assert_eq!(last, "shard_00002.safetensors");
    index["entries"]
        .as_object_mut()
        .unwrap()
        .retain(|_, e| e["shard"] != 2);
    std::fs::write(&index_path, index.to_string()).unwrap();
    let err = ok(&embed_cache(&[&all], &dir, &htsat, &cache_dir, &[]));
    assert!(
        err.contains("cached 2 file(s) in 1 new shard(s), 4 already"),
        "{err}"
    );
    assert_eq!(std::fs::read(&shard0).unwrap(), bytes0);
    assert_eq!(EmbedCache::open(&cache_dir).unwrap().len(), 6);

    // Other weights: refused by the builder and by infer; another crop: refused too.
    let other = dir.join("other.safetensors");
    other_checkpoint(&other);
    one_line_error(
        &embed_cache(&[&all], &dir, &other, &cache_dir, &[]),
        &["was built for another model", "HTSAT weights differ"],
    );
    one_line_error(
        &embed_cache(&[&all], &dir, &htsat, &cache_dir, &["--crop", "center"]),
        &["the crop differs (cache: start; now: center)"],
    );
    let mut args = vec!["infer", s(&all), "--audio-root", s(&dir), "-o"];
    let out = dir.join("p.csv");
    args.push(s(&out));
    let parts = [
        other.clone(),
        fixture("gpt2/adiff_tiny.safetensors"),
        fixture("adiff/adiff_tiny_rest.ckpt"),
    ];
    for p in &parts {
        args.extend(["-c", s(p)]);
    }
    args.extend([
        "--config",
        "configs/tiny.json",
        "--embed-cache",
        s(&cache_dir),
    ]);
    one_line_error(
        &adiff(&args),
        &["stale for this model", "HTSAT weights differ"],
    );
    // Not a cache at all.
    one_line_error(
        &adiff(&[
            "infer",
            s(&all),
            "-o",
            s(&out),
            "-c",
            s(&htsat),
            "--config",
            "configs/tiny.json",
            "--embed-cache",
            s(&dir),
        ]),
        &["no index.json"],
    );
}

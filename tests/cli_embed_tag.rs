//! End-to-end tests of `adiff embed` and `adiff tag` as a user runs them, on the tiny fixture
//! model. Values are checked against the PyTorch fixture (scripts/fixtures_audio.py).

use std::path::PathBuf;

use candle_core::{Device, IndexOp};

mod common;

use common::{adiff, assert_one_line_error, root};

/// A file under `tests/fixtures/htsat/`.
fn fixture(name: &str) -> PathBuf {
    common::fixture("htsat").join(name)
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adiff-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn embed_writes_the_documented_tensors() {
    let dir = tmp_dir("embed");
    let out_path = dir.join("emb.safetensors");
    let (a, b, ck) = (
        fixture("clip_a.wav"),
        fixture("clip_b.wav"),
        fixture("htsat_tiny.ckpt"),
    );
    let out = adiff(&[
        "embed",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--checkpoint",
        ck.to_str().unwrap(),
        "--config",
        "configs/tiny.json",
        "--logmel",
        "--batch-size",
        "1",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = candle_core::safetensors::load(&out_path, &Device::Cpu).unwrap();
    assert_eq!(t["embedding"].dims(), [2, 128]);
    assert_eq!(t["clipwise"].dims(), [2, 527]);
    assert_eq!(t["framewise"].dims(), [2, 1024, 527]);
    assert_eq!(t["logmel"].dims(), [2, 1001, 64]);
    let exp =
        candle_core::safetensors::load(fixture("htsat_tiny_expected.safetensors"), &Device::Cpu)
            .unwrap();
    let err = (&t["embedding"] - &exp["embedding"])
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    assert!(err.to_scalar::<f32>().unwrap() <= 1e-4);
    // Row order and the `paths` metadata.
    let bytes = std::fs::read(&out_path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let paths: Vec<String> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["paths"]).unwrap();
    assert_eq!(
        paths,
        vec![a.display().to_string(), b.display().to_string()]
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tag_json_ranks_events_by_clipwise_probability() {
    let (a, ck) = (fixture("clip_a.wav"), fixture("htsat_tiny.ckpt"));
    let out = adiff(&[
        "tag",
        a.to_str().unwrap(),
        "-c",
        ck.to_str().unwrap(),
        "--config",
        "configs/tiny.json",
        "--top",
        "5",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    let exp =
        candle_core::safetensors::load(fixture("htsat_tiny_expected.safetensors"), &Device::Cpu)
            .unwrap();
    let clipwise = exp["clipwise"].i(0).unwrap().to_vec1::<f32>().unwrap();
    let mut best: Vec<usize> = (0..clipwise.len()).collect();
    best.sort_by(|&x, &y| clipwise[y].total_cmp(&clipwise[x]));
    let labels = adiff::data::audioset::class_labels().unwrap();
    for (e, &k) in events.iter().zip(&best) {
        assert_eq!(e["index"].as_u64().unwrap() as usize, k);
        assert_eq!(e["label"].as_str().unwrap(), labels[k]);
        assert!((e["probability"].as_f64().unwrap() as f32 - clipwise[k]).abs() < 1e-4);
        for span in e["spans"].as_array().unwrap() {
            let (s, t) = (span[0].as_f64().unwrap(), span[1].as_f64().unwrap());
            assert!(0.0 <= s && s < t && t <= 10.0 + 1e-6);
        }
    }
    // The table form names the file and the top event.
    let out = adiff(&[
        "tag",
        a.to_str().unwrap(),
        "-c",
        ck.to_str().unwrap(),
        "--config",
        "configs/tiny.json",
        "--top",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&labels[best[0]]), "{text}");
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let dir = tmp_dir("errors");
    let ck = fixture("htsat_tiny.ckpt");
    let ck = ck.to_str().unwrap();
    let tiny = ["--config", "configs/tiny.json"];
    // Missing audio file.
    let out = adiff(&["tag", "no/such/file.wav", "-c", ck, tiny[0], tiny[1]]);
    assert_one_line_error(&out, "no/such/file.wav");
    // Corrupt audio.
    let bad = dir.join("noise.wav");
    std::fs::write(&bad, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunkjunk").unwrap();
    let out = adiff(&["tag", bad.to_str().unwrap(), "-c", ck, tiny[0], tiny[1]]);
    assert_one_line_error(&out, "noise.wav");
    // Empty audio.
    let empty = dir.join("empty.flac");
    std::fs::write(&empty, b"").unwrap();
    let out = adiff(&["tag", empty.to_str().unwrap(), "-c", ck, tiny[0], tiny[1]]);
    assert_one_line_error(&out, "empty.flac");
    // Missing checkpoint.
    let a = fixture("clip_a.wav");
    let out = adiff(&[
        "tag",
        a.to_str().unwrap(),
        "-c",
        "missing.ckpt",
        tiny[0],
        tiny[1],
    ]);
    assert_one_line_error(&out, "missing.ckpt");
    // Garbage checkpoint.
    let junk = dir.join("junk.ckpt");
    std::fs::write(&junk, b"this is not a checkpoint").unwrap();
    let out = adiff(&[
        "tag",
        a.to_str().unwrap(),
        "-c",
        junk.to_str().unwrap(),
        tiny[0],
        tiny[1],
    ]);
    assert_one_line_error(&out, "junk.ckpt");
    // Checkpoint that does not fit the config: names tensors and shapes.
    let out = adiff(&["tag", a.to_str().unwrap(), "-c", ck]);
    assert_one_line_error(&out, "expected [");
    // Config with an unknown key.
    let cfg = dir.join("bad.json");
    let text = std::fs::read_to_string(root().join("configs/tiny.json"))
        .unwrap()
        .replacen("\"window_size\"", "\"windowsize\"", 1);
    std::fs::write(&cfg, text).unwrap();
    let out = adiff(&[
        "tag",
        a.to_str().unwrap(),
        "-c",
        ck,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "windowsize");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn embed_reads_every_supported_format_rate_and_layout() {
    let dir = tmp_dir("formats");
    let out_path = dir.join("formats.safetensors");
    let files = [
        "pcm16_16k_mono.wav",
        "pcm16_44k_stereo.wav",
        "pcm24_48k_stereo.wav",
        "pcm8_16k_mono.wav",
        "pcm32_48k_mono.wav",
        "float32_44k_mono.wav",
        "float64_16k_stereo.wav",
        "flac_44k_stereo.flac",
        "mp3_16k_mono.mp3",
        "mp3_44k_stereo.mp3",
        "vorbis_48k_stereo.ogg",
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|f| {
            root()
                .join("tests/fixtures/audio")
                .join(f)
                .display()
                .to_string()
        })
        .collect();
    let ck = fixture("htsat_tiny.ckpt");
    let mut args = vec!["embed"];
    args.extend(paths.iter().map(String::as_str));
    args.extend([
        "-c",
        ck.to_str().unwrap(),
        "--config",
        "configs/tiny.json",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let out = adiff(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = candle_core::safetensors::load(&out_path, &Device::Cpu).unwrap();
    assert_eq!(t["embedding"].dims(), [files.len(), 128]);
    // Every row is finite, and files with different content give different embeddings.
    let emb = t["embedding"].to_vec2::<f32>().unwrap();
    assert!(emb.iter().flatten().all(|x| x.is_finite()));
    assert_ne!(emb[0], emb[1]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unsupported_and_invalid_audio_is_rejected_by_the_cli() {
    let ck = fixture("htsat_tiny.ckpt");
    for (file, needle) in [
        ("opus_48k_mono.ogg", "opus_48k_mono.ogg"),
        ("nan_float32.wav", "NaN"),
        ("inf_float32.wav", "inf_float32.wav"),
        ("zero_frames.wav", "zero_frames.wav"),
        ("truncated_data.wav", "truncated_data.wav"),
        ("random_bytes.wav", "random_bytes.wav"),
    ] {
        let p = root().join("tests/fixtures/audio").join(file);
        let out = adiff(&[
            "tag",
            p.to_str().unwrap(),
            "-c",
            ck.to_str().unwrap(),
            "--config",
            "configs/tiny.json",
        ]);
        assert_one_line_error(&out, needle);
    }
}

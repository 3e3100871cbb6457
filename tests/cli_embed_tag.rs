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

fn tmp_dir(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("adiff-test-{name}"))
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
    let emb = t["embedding"].to_vec2::<f32>().unwrap();
    // Each row against the same model fed the reference decoder's samples (torchaudio's decode,
    // channels averaged, `<file>.ref.f32` from scripts/make_audio_fixtures.py), resampled and
    // tiled by the library: the CLI's decoding is the reference's (lossless: the same samples,
    // so the same embedding up to f32 summation order; lossy: decoders differ by ~1e-4 of full
    // scale, far below what moves an embedding by 1e-3). A wrong decoder (e.g. channels
    // concatenated, a wrong rate or bit depth) moves it by far more.
    let cfg =
        adiff::model::config::AdiffConfig::from_file(root().join("configs/tiny.json")).unwrap();
    let ckpt = adiff::model::checkpoint::Checkpoint::load(&ck).unwrap();
    let enc = adiff::model::audio_encoder::AudioEncoder::from_checkpoint(&ckpt, &cfg, &Device::Cpu)
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/audio/manifest.json")).unwrap(),
    )
    .unwrap();
    for (i, f) in files.iter().enumerate() {
        let path = root().join("tests/fixtures/audio").join(f);
        let bytes = std::fs::read(
            root()
                .join("tests/fixtures/audio")
                .join(format!("{f}.ref.f32")),
        )
        .unwrap();
        let mut reference: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let entry = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == *f)
            .unwrap()
            .clone();
        let sr = entry["sample_rate"].as_u64().unwrap() as u32;
        let lossless = entry["lossless"].as_bool().unwrap();
        // ffmpeg stops a Vorbis stream 128 frames (one short block) before its last granule
        // position; adiff decodes to it, the source's length (the manifest's `frames`). The
        // clip tiles the file, so the length matters: those last frames come from adiff's own
        // decode (its samples are checked against the known signal in audio_decode.rs).
        let ours = adiff::audio::decode::decode_file(&path).unwrap().samples;
        if f.ends_with(".ogg") {
            assert_eq!(ours.len() as u64, entry["frames"].as_u64().unwrap());
            assert_eq!(ours.len() - reference.len(), 128, "{f}");
            reference.extend_from_slice(&ours[reference.len()..]);
        }
        assert_eq!(ours.len(), reference.len(), "{f}: decoded length");
        let y = adiff::audio::resample::resample(&reference, sr, cfg.audio.sample_rate).unwrap();
        let clip = adiff::audio::clip::fixed_length(
            &y,
            cfg.audio.clip_samples(),
            adiff::audio::CropMode::Start,
        );
        let (_, out) = enc.encode(&[clip]).unwrap();
        let want = out.embedding.i(0).unwrap().to_vec1::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = emb[i]
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Lossless: the same samples (measured: identical embeddings). Lossy: the decoders
        // differ by ~1e-6 of full scale, which the log-mel of near-silent bands (above a 16 kHz
        // MP3's 8 kHz Nyquist) turns into up to 2.6e-3 of the embedding's scale (measured).
        let tol = if lossless { 1e-6 } else { 5e-3 };
        assert!(
            worst <= tol * scale,
            "{f}: embedding differs from the reference decode's by {worst} (max |e| {scale})"
        );
    }
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

/// Runs adiff and returns its stdout, stderr, exit success and peak resident memory (KiB, the
/// child's own `ru_maxrss` from `wait4`: other tests' processes do not count).
#[cfg(target_os = "linux")]
#[allow(clippy::zombie_processes)] // reaped by `wait4` below, which std does not know of
fn run_with_peak_rss(args: &[&str]) -> (String, String, bool, i64) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 reaps our own child and fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(
        pid,
        child.id() as i32,
        "{}",
        std::io::Error::last_os_error()
    );
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (out, err, ok, usage.ru_maxrss)
}

/// Writes mono PCM16 at 32 kHz (samples are multiples of 1/32768, as a PCM16 file decodes).
fn write_wav(path: &std::path::Path, samples: &[f32]) {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|&s| ((s * 32768.0).round() as i16).to_le_bytes())
        .collect();
    common::write_pcm16_wav(path, &data);
}

/// A 10-minute file whose middle 10 s are clip_a: `tag --crop center` reads it packet by packet
/// and keeps only that window, so its peak memory stays within 20 MiB of tagging clip_a itself
/// (the whole-file decode it replaced held 19.2 M samples twice, +147 MiB); it says on stderr
/// which window it used; its events equal clip_a's, with the spans moved to the file's time axis.
#[cfg(target_os = "linux")]
#[test]
fn tag_of_a_long_file_holds_only_its_window() {
    let dir = tmp_dir("long");
    let a = adiff::audio::decode::decode_file(&fixture("clip_a.wav")).unwrap();
    assert_eq!((a.sample_rate, a.samples.len()), (32_000, 320_000));
    // 295 s of quiet noise on each side: the centre crop of 600 s is [295, 305) s.
    let side = 295 * 32_000;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
    };
    let mut long: Vec<f32> = (0..side).map(|_| noise()).collect();
    long.extend_from_slice(&a.samples);
    long.extend((0..side).map(|_| noise()));
    let long_path = dir.join("long.wav");
    write_wav(&long_path, &long);
    drop(long);
    let ck = fixture("htsat_tiny.ckpt");
    let tag = |file: &std::path::Path| {
        run_with_peak_rss(&[
            "tag",
            file.to_str().unwrap(),
            "-c",
            ck.to_str().unwrap(),
            "--config",
            "configs/tiny.json",
            "--crop",
            "center",
            "--top",
            "5",
            "--json",
        ])
    };
    let (short_out, short_err, ok, short_rss) = tag(&fixture("clip_a.wav"));
    assert!(ok, "{short_err}");
    assert!(!short_err.contains("note:"), "{short_err}");
    let (long_out, long_err, ok, long_rss) = tag(&long_path);
    assert!(ok, "{long_err}");
    assert!(
        long_rss < short_rss + 20 * 1024,
        "peak RSS {long_rss} KiB for 600 s against {short_rss} KiB for 10 s"
    );
    assert!(
        long_err.contains("is 600.0 s long; the model hears 295.00-305.00 s"),
        "{long_err}"
    );
    let (s, l): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&short_out).unwrap(),
        serde_json::from_str(&long_out).unwrap(),
    );
    assert_eq!(l["window_s"], serde_json::json!([295.0, 305.0]));
    assert_eq!(s["window_s"], serde_json::json!([0.0, 10.0]));
    let (se, le) = (
        s["events"].as_array().unwrap(),
        l["events"].as_array().unwrap(),
    );
    assert_eq!(se.len(), le.len());
    for (a, b) in se.iter().zip(le) {
        assert_eq!(a["index"], b["index"]);
        assert_eq!(a["probability"], b["probability"]);
        let (sa, sb) = (
            a["spans"].as_array().unwrap(),
            b["spans"].as_array().unwrap(),
        );
        assert_eq!(sa.len(), sb.len());
        for (x, y) in sa.iter().zip(sb) {
            for k in 0..2 {
                let (x, y) = (x[k].as_f64().unwrap(), y[k].as_f64().unwrap());
                assert!((y - x - 295.0).abs() < 1e-3, "span {x} -> {y}");
            }
        }
    }
}

/// `tag --window` over clip_a twice (20 s): two windows, each clip_a itself, so every event's
/// probability is clip_a's and its spans are clip_a's spans at 0 s and again at 10 s (joined
/// where they meet); with 5 s more, a third window ends at the file's end.
#[cfg(target_os = "linux")]
#[test]
fn tag_window_stitches_the_windows_on_the_file_axis() {
    let dir = tmp_dir("windows");
    let a = adiff::audio::decode::decode_file(&fixture("clip_a.wav")).unwrap();
    let twice: Vec<f32> = a.samples.iter().chain(&a.samples).copied().collect();
    let path = dir.join("twice.wav");
    write_wav(&path, &twice);
    let ck = fixture("htsat_tiny.ckpt");
    let tag = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "tag",
            file.to_str().unwrap(),
            "-c",
            ck.to_str().unwrap(),
            "--config",
            "configs/tiny.json",
            "--top",
            "8",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (out, err, ok, _) = run_with_peak_rss(&args);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let one = tag(&fixture("clip_a.wav"), &[]);
    let both = tag(&path, &["--window", "10"]);
    assert_eq!(
        both["windows"],
        serde_json::json!({"seconds": 10.0, "hop": 10.0, "count": 2})
    );
    assert_eq!(both["window_s"], serde_json::json!([0.0, 20.0]));
    for (e1, e2) in one["events"]
        .as_array()
        .unwrap()
        .iter()
        .zip(both["events"].as_array().unwrap())
    {
        assert_eq!(e1["index"], e2["index"]);
        assert_eq!(e1["probability"], e2["probability"]);
        let s1: Vec<[f64; 2]> = serde_json::from_value(e1["spans"].clone()).unwrap();
        let mut want: Vec<[f64; 2]> = s1.clone();
        want.extend(s1.iter().map(|[a, b]| [a + 10.0, b + 10.0]));
        // Spans that meet at 10 s are one.
        let mut joined: Vec<[f64; 2]> = Vec::new();
        for s in want {
            match joined.last_mut() {
                Some(l) if (s[0] - l[1]).abs() < 1e-4 => l[1] = s[1],
                _ => joined.push(s),
            }
        }
        let s2: Vec<[f64; 2]> = serde_json::from_value(e2["spans"].clone()).unwrap();
        assert_eq!(s2.len(), joined.len(), "{e2}");
        for (x, y) in s2.iter().zip(&joined) {
            assert!(
                (x[0] - y[0]).abs() < 1e-3 && (x[1] - y[1]).abs() < 1e-3,
                "{x:?} vs {y:?}"
            );
        }
    }
    // 25 s: windows at 0 and 10 s, and one ending at 25 s.
    let mut longer = twice.clone();
    longer.extend_from_slice(&a.samples[..160_000]);
    let path = dir.join("longer.wav");
    write_wav(&path, &longer);
    let v = tag(&path, &["--window", "10"]);
    assert_eq!(v["windows"]["count"], 3);
    assert_eq!(v["window_s"], serde_json::json!([0.0, 25.0]));
    // A window longer than the model's clip is refused in one line.
    let (_, err, ok, _) = run_with_peak_rss(&[
        "tag",
        path.to_str().unwrap(),
        "-c",
        ck.to_str().unwrap(),
        "--config",
        "configs/tiny.json",
        "--window",
        "12",
    ]);
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("--window 12"),
        "{err}"
    );
}

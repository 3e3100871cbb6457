//! Audio loading against fixtures made by `scripts/make_audio_fixtures.py`.
//!
//! Reference values come from torchaudio 2.5.1 (`torchaudio.load`, the reference implementation's
//! loader, ffmpeg backend, and `torchaudio.transforms.Resample`); the signals are known sines
//! (channel 0: 440 Hz at 0.5, channel 1: 1000 Hz at 0.25), so content is checked analytically too.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use adiff::audio::clip::fixed_length;
use adiff::audio::decode::decode_file;
use adiff::audio::resample::resample;
use adiff::audio::{load_clip, CropMode};
use adiff::model::config::AdiffConfig;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name)
}

fn read_f32(name: &str) -> Vec<f32> {
    std::fs::read(fixture(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

struct Entry {
    name: String,
    sample_rate: u32,
    channels: usize,
    frames: usize,
    lossless: bool,
}

struct Manifest {
    freqs: Vec<f64>,
    amps: Vec<f64>,
    files: Vec<Entry>,
}

fn manifest() -> Manifest {
    let v: Value =
        serde_json::from_slice(&std::fs::read(fixture("manifest.json")).unwrap()).unwrap();
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let files = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Entry {
            name: f["name"].as_str().unwrap().to_string(),
            sample_rate: f["sample_rate"].as_u64().unwrap() as u32,
            channels: f["channels"].as_u64().unwrap() as usize,
            frames: f["frames"].as_u64().unwrap() as usize,
            lossless: f["lossless"].as_bool().unwrap(),
        })
        .collect();
    Manifest {
        freqs: nums("freqs_hz"),
        amps: nums("amps"),
        files,
    }
}

/// The ideal mono mix (channel mean) of the fixture signal.
fn ideal(m: &Manifest, sr: u32, channels: usize, len: usize) -> Vec<f64> {
    (0..len)
        .map(|n| {
            (0..channels)
                .map(|c| m.amps[c] * (2.0 * PI * m.freqs[c] * n as f64 / sr as f64).sin())
                .sum::<f64>()
                / channels as f64
        })
        .collect()
}

/// Pearson correlation over the common prefix.
fn correlation(a: &[f32], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let ma = a[..n].iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let mb = b[..n].iter().sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (a[i] as f64 - ma, b[i] - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Least-squares amplitude of a sinusoid of `freq` Hz in `x`.
fn amplitude_at(x: &[f32], sr: u32, freq: f64) -> f64 {
    let (mut ss, mut sc, mut cc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (n, &v) in x.iter().enumerate() {
        let (s, c) = (2.0 * PI * freq * n as f64 / sr as f64).sin_cos();
        ss += s * s;
        sc += s * c;
        cc += c * c;
        ys += v as f64 * s;
        yc += v as f64 * c;
    }
    let det = ss * cc - sc * sc;
    let a = (ys * cc - yc * sc) / det;
    let b = (yc * ss - ys * sc) / det;
    (a * a + b * b).sqrt()
}

/// Frequency of a pure sine from its upward zero crossings (linearly interpolated).
fn zero_crossing_freq(x: &[f32], sr: u32) -> f64 {
    let ups: Vec<f64> = x
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + (w[0] / (w[0] - w[1])) as f64)
        .collect();
    let periods = (ups.len() - 1) as f64;
    periods * sr as f64 / (ups[ups.len() - 1] - ups[0])
}

#[test]
fn every_format_decodes_with_right_rate_channels_and_length() {
    let m = manifest();
    for f in &m.files {
        let d = decode_file(&fixture(&f.name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.sample_rate, f.sample_rate, "{}", f.name);
        assert_eq!(d.channels, f.channels, "{}", f.name);
        // Exact for the lossy files too: the MP3s carry a LAME gapless header (encoder delay and
        // padding are trimmed) and a Vorbis stream ends at its last granule position.
        assert_eq!(d.samples.len(), f.frames, "{}", f.name);
    }
}

#[test]
fn lossless_formats_match_torchaudio_bit_exactly() {
    let m = manifest();
    for f in m.files.iter().filter(|f| f.lossless) {
        let d = decode_file(&fixture(&f.name)).unwrap();
        let reference = read_f32(&format!("{}.ref.f32", f.name));
        assert_eq!(d.samples.len(), reference.len(), "{}", f.name);
        let mismatches = d
            .samples
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(mismatches, 0, "{}: samples differ from torchaudio", f.name);
    }
}

#[test]
fn pcm16_is_sample_over_32768() {
    let path = fixture("pcm16_16k_mono.wav");
    let bytes = std::fs::read(&path).unwrap();
    // soundfile writes a canonical 44-byte header for PCM16 WAV.
    assert_eq!(&bytes[36..40], b"data");
    let ints: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let d = decode_file(&path).unwrap();
    assert_eq!(d.samples.len(), ints.len());
    for (i, (&s, &q)) in d.samples.iter().zip(&ints).enumerate() {
        assert_eq!(s, q as f32 / 32768.0, "sample {i}");
    }
}

#[test]
fn every_format_holds_the_known_signal() {
    let m = manifest();
    for f in &m.files {
        let d = decode_file(&fixture(&f.name)).unwrap();
        let want = ideal(&m, f.sample_rate, f.channels, d.samples.len().min(f.frames));
        let r = correlation(&d.samples, &want);
        // Lossless: only quantisation noise (8-bit is the worst, ~50 dB SNR); lossy: codec noise.
        let min_corr = if f.lossless { 0.9999 } else { 0.99 };
        assert!(
            r > min_corr,
            "{}: correlation {r} with the ideal signal",
            f.name
        );
        let want_f32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let (got_rms, want_rms) = (rms(&d.samples[..want.len()]), rms(&want_f32));
        let tol = if f.lossless { 0.005 } else { 0.05 };
        assert!(
            (got_rms / want_rms - 1.0).abs() < tol,
            "{}: rms {got_rms} vs {want_rms}",
            f.name
        );
    }
}

#[test]
fn lossy_formats_match_torchaudio_decode() {
    let m = manifest();
    for f in m.files.iter().filter(|f| !f.lossless) {
        let d = decode_file(&fixture(&f.name)).unwrap();
        let reference = read_f32(&format!("{}.ref.f32", f.name));
        let want: Vec<f64> = reference.iter().map(|&v| v as f64).collect();
        // Same bitstream, different decoders (symphonia vs ffmpeg): tiny float differences only.
        let r = correlation(&d.samples, &want);
        let n = d.samples.len().min(reference.len());
        let max_diff = d.samples[..n]
            .iter()
            .zip(&reference[..n])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{}: corr {r:.6}, max |diff| {max_diff:.2e} over {n} frames",
            f.name
        );
        assert!(
            r > 0.999,
            "{}: correlation {r} with torchaudio's decode",
            f.name
        );
        // Both decoders follow the codec spec in float; measured <= 1.2e-6.
        assert!(
            max_diff < 1e-4,
            "{}: max |diff| {max_diff} vs torchaudio",
            f.name
        );
    }
}

#[test]
fn stereo_is_averaged_not_concatenated() {
    let m = manifest();
    let f = m
        .files
        .iter()
        .find(|f| f.name == "pcm16_44k_stereo.wav")
        .unwrap();
    let d = decode_file(&fixture(&f.name)).unwrap();
    assert_eq!(d.channels, 2);
    // Same duration as the file, not twice it.
    assert_eq!(d.samples.len(), f.frames);
    // Each channel's sine at half its amplitude.
    for c in 0..2 {
        let a = amplitude_at(&d.samples, f.sample_rate, m.freqs[c]);
        assert!(
            (a / (m.amps[c] / 2.0) - 1.0).abs() < 1e-3,
            "{} Hz amplitude {a}",
            m.freqs[c]
        );
    }
}

#[test]
fn resample_to_32k_preserves_frequency_and_amplitude() {
    let m = manifest();
    let to = 32_000;
    for name in [
        "pcm16_16k_mono.wav",
        "float32_44k_mono.wav",
        "pcm32_48k_mono.wav",
    ] {
        let d = decode_file(&fixture(name)).unwrap();
        let y = resample(&d.samples, d.sample_rate, to).unwrap();
        let want_len = (d.samples.len() as f64 * to as f64 / d.sample_rate as f64).round() as usize;
        assert_eq!(y.len(), want_len, "{name}");
        // Skip the edges, where the sinc sees the zeros beyond the clip.
        let edge = y.len() / 8;
        let mid = &y[edge..y.len() - edge];
        let f = zero_crossing_freq(mid, to);
        assert!((f / m.freqs[0] - 1.0).abs() < 1e-3, "{name}: {f} Hz");
        let a = amplitude_at(mid, to, m.freqs[0]);
        assert!((a / m.amps[0] - 1.0).abs() < 0.01, "{name}: amplitude {a}");
    }
}

#[test]
fn resample_is_time_aligned() {
    // A click at input sample 441*k must land on output sample 320*k (44.1 kHz -> 32 kHz), and
    // symmetric around it (no fractional shift).
    for &(from, to, step_in, step_out) in &[
        (44_100u32, 32_000u32, 441usize, 320usize),
        (48_000, 32_000, 3, 2),
        (16_000, 32_000, 1, 2),
    ] {
        // Click well past the first filter length (256 input samples).
        let k = 1000usize.div_ceil(step_in);
        let mut x = vec![0.0f32; step_in * k * 2];
        x[step_in * k] = 1.0;
        let y = resample(&x, from, to).unwrap();
        let at = step_out * k;
        let peak = y
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(peak, at, "{from}->{to}");
        // Sub-sample position of the peak from a parabola through it and its neighbours; a
        // misaligned resampler would be off by up to half a sample here.
        let (a, b, c) = (y[at - 1] as f64, y[at] as f64, y[at + 1] as f64);
        let frac = 0.5 * (a - c) / (a - 2.0 * b + c);
        println!("{from}->{to}: click at {at} {frac:+.5}");
        assert!(
            frac.abs() < 0.01,
            "{from}->{to}: click off by {frac} output samples"
        );
    }
}

#[test]
fn resample_matches_torchaudio_in_band() {
    // torchaudio.transforms.Resample (Hann-windowed sinc, 6 zero crossings, rolloff 0.99) and
    // rubato (256-tap Blackman-Harris^2 sinc) differ only near Nyquist; for in-band sines the two
    // outputs agree closely away from the clip edges, where each pads with zeros differently.
    for (src, from) in [
        ("pcm16_44k_stereo.wav", 44_100u32),
        ("pcm16_16k_mono.wav", 16_000),
    ] {
        let x = read_f32(&format!("{src}.ref.f32"));
        let reference = read_f32(&format!("resampled_{src}_32k.ref.f32"));
        let y = resample(&x, from, 32_000).unwrap();
        assert_eq!(y.len(), reference.len(), "{src}");
        let edge = 256;
        let max_diff = y[edge..y.len() - edge]
            .iter()
            .zip(&reference[edge..reference.len() - edge])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{src}: max |rubato - torchaudio| = {max_diff:.2e}");
        assert!(max_diff < 1e-3, "{src}: max diff {max_diff}");
    }
}

#[test]
fn fixed_length_tiles_then_trims_like_the_reference() {
    let x: Vec<f32> = (1..=5).map(|i| i as f32).collect();
    // torch: x.repeat(ceil(12 / 5))[0:12]
    let want: Vec<f32> = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
        .iter()
        .map(|&v| v as f32)
        .collect();
    for mode in [
        CropMode::Start,
        CropMode::Center,
        CropMode::Random { seed: 1 },
    ] {
        assert_eq!(fixed_length(&x, 12, mode), want);
        assert_eq!(fixed_length(&x, 5, mode), x);
    }
}

#[test]
fn fixed_length_crops_at_start_centre_and_seeded_offset() {
    let x: Vec<f32> = (0..100).map(|i| i as f32).collect();
    assert_eq!(fixed_length(&x, 10, CropMode::Start), x[0..10].to_vec());
    assert_eq!(fixed_length(&x, 10, CropMode::Center), x[45..55].to_vec());
    assert_eq!(fixed_length(&x, 11, CropMode::Center), x[44..55].to_vec());
    let mut offsets = std::collections::BTreeSet::new();
    for seed in 0..50 {
        let a = fixed_length(&x, 10, CropMode::Random { seed });
        assert_eq!(
            a,
            fixed_length(&x, 10, CropMode::Random { seed }),
            "seed {seed}"
        );
        let off = a[0] as usize;
        // Contiguous crop, offset in the reference's range 0..len - target.
        assert_eq!(a, x[off..off + 10].to_vec());
        assert!(off < 90);
        offsets.insert(off);
    }
    assert!(offsets.len() > 10, "seeds give varied offsets: {offsets:?}");
}

#[test]
fn load_clip_is_decode_resample_tile() {
    let cfg = AdiffConfig::tiny().audio;
    let path = fixture("pcm16_44k_stereo.wav");
    let clip = load_clip(&path, &cfg, CropMode::Start).unwrap();
    assert_eq!(clip.len(), cfg.clip_samples());
    let d = decode_file(&path).unwrap();
    let y = resample(&d.samples, d.sample_rate, cfg.sample_rate).unwrap();
    assert!(y.len() < clip.len());
    // The clip is the resampled audio repeated.
    for (i, &v) in clip.iter().enumerate() {
        assert_eq!(v.to_bits(), y[i % y.len()].to_bits(), "clip sample {i}");
    }
}

/// (file, words the error must contain besides the file name)
const BAD_INPUTS: &[(&str, &str)] = &[
    ("empty.wav", "empty file"),
    ("random_bytes.wav", "unrecognised or corrupt"),
    ("truncated_header.wav", "unrecognised or corrupt"),
    ("truncated_data.wav", "truncated"),
    ("truncated.flac", "truncated"),
    ("zero_frames.wav", "no audio samples"),
    ("nan_float32.wav", "non-finite sample (NaN) at frame 100"),
    ("inf_float32.wav", "non-finite sample (inf) at frame 100"),
    ("opus_48k_mono.ogg", "unsupported codec"),
    ("does_not_exist.wav", "file not found"),
    // The fixtures directory itself.
    ("", "is a directory"),
];

#[test]
fn bad_inputs_fail_with_file_and_reason() {
    let cfg = AdiffConfig::tiny().audio;
    for &(name, why) in BAD_INPUTS {
        let path = fixture(name);
        for msg in [
            decode_file(&path).map(|_| ()).unwrap_err().to_string(),
            load_clip(&path, &cfg, CropMode::Start)
                .map(|_| ())
                .unwrap_err()
                .to_string(),
        ] {
            println!("{msg}");
            assert!(
                msg.contains(name),
                "{name}: message does not name the file: {msg}"
            );
            assert!(msg.contains(why), "{name}: expected '{why}' in: {msg}");
            assert!(!msg.contains('\n'), "{name}: not one line: {msg}");
        }
    }
}

/// Deterministic xorshift so the fuzz cases are reproducible without extra dependencies.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn mangled_files_never_panic() {
    let m = manifest();
    let dir = std::env::temp_dir().join(format!("adiff_audio_fuzz_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut cases = 0;
    for f in &m.files {
        let bytes = std::fs::read(fixture(&f.name)).unwrap();
        let ext = Path::new(&f.name).extension().unwrap().to_str().unwrap();
        for case in 0..24 {
            let mut b = bytes.clone();
            match case % 3 {
                // Truncate anywhere, including inside the header.
                0 => b.truncate(xorshift(&mut state) as usize % b.len()),
                // Overwrite a handful of random bytes.
                1 => {
                    for _ in 0..8 {
                        let i = xorshift(&mut state) as usize % b.len();
                        b[i] = xorshift(&mut state) as u8;
                    }
                }
                // Corrupt the first 64 bytes (header) only.
                _ => {
                    let i = xorshift(&mut state) as usize % 64.min(b.len());
                    b[i] = xorshift(&mut state) as u8;
                }
            }
            let path = dir.join(format!("case_{cases}.{ext}"));
            std::fs::write(&path, &b).unwrap();
            if let Err(e) = decode_file(&path) {
                let msg = e.to_string();
                assert!(msg.contains(&format!("case_{cases}.{ext}")), "{msg}");
            }
            cases += 1;
        }
    }
    // A WAV header claiming far more data than present, and random bytes under every extension.
    let mut wav = std::fs::read(fixture("pcm16_16k_mono.wav")).unwrap();
    wav[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    wav[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let path = dir.join("huge_claim.wav");
    std::fs::write(&path, &wav).unwrap();
    // The u32::MAX data length is ffmpeg's "unknown length" marker for piped WAV: accepted.
    assert_eq!(decode_file(&path).unwrap().samples.len(), 8000);
    wav[40..44].copy_from_slice(&(1u32 << 30).to_le_bytes());
    wav[4..8].copy_from_slice(&((1u32 << 30) + 36).to_le_bytes());
    std::fs::write(&path, &wav).unwrap();
    let msg = decode_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("huge_claim.wav") && msg.contains("truncated"),
        "{msg}"
    );
    for ext in ["wav", "flac", "mp3", "ogg"] {
        let noise: Vec<u8> = (0..2048).map(|_| xorshift(&mut state) as u8).collect();
        let path = dir.join(format!("noise.{ext}"));
        std::fs::write(&path, &noise).unwrap();
        let msg = match decode_file(&path) {
            Ok(_) => panic!("random bytes as .{ext} decoded"),
            Err(e) => e.to_string(),
        };
        // One line naming the file.
        assert!(
            msg.contains(&path.display().to_string()) && !msg.contains('\n'),
            "{msg}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Largest element-wise difference of two equally long signals.
fn worst_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// A clip cut from a file longer than it is read packet by packet, keeping only its window: the
/// result equals the whole-file path (decode, resample, crop) for every format and crop mode,
/// exactly at the model's rate and within 1e-5 of full scale across a resampler (the window's
/// edges, where the resampler sees zeros, stay outside the clip), and the span names where the
/// crop lies. (A 50 ms clip makes every fixture "long"; lossy files exercise the counting pass.)
#[test]
fn streamed_crop_equals_the_whole_file_path() {
    use adiff::audio::load_clip_span;
    let mut cfg = AdiffConfig::tiny().audio;
    cfg.duration_s = 0.05;
    let target = cfg.clip_samples();
    for f in manifest().files {
        let path = fixture(&f.name);
        let d = decode_file(&path).unwrap();
        let whole = resample(&d.samples, d.sample_rate, cfg.sample_rate).unwrap();
        assert!(whole.len() > target, "{}: not longer than the clip", f.name);
        for crop in [
            CropMode::Start,
            CropMode::Center,
            CropMode::Random { seed: 3 },
            CropMode::Random { seed: 11 },
        ] {
            let want = fixed_length(&whole, target, crop);
            let (got, span) = load_clip_span(&path, &cfg, crop).unwrap();
            let worst = worst_diff(&got, &want);
            let tol = if d.sample_rate == cfg.sample_rate {
                0.0
            } else {
                1e-5
            };
            assert_eq!(got.len(), target);
            assert!(
                worst <= tol,
                "{} {crop:?}: worst {worst:e} > {tol:e}",
                f.name
            );
            let offset = adiff::audio::clip::crop_offset(whole.len(), target, crop);
            let sr = f64::from(cfg.sample_rate);
            assert_eq!(span.start_s, offset as f64 / sr, "{} {crop:?}", f.name);
            assert_eq!(
                span.end_s,
                (offset + target) as f64 / sr,
                "{} {crop:?}",
                f.name
            );
            assert!(span.is_crop(), "{} {crop:?}", f.name);
            if let Some(dur) = span.duration_s {
                let want = d.samples.len() as f64 / f64::from(d.sample_rate);
                assert!(
                    (dur - want).abs() < 1e-9,
                    "{}: duration {dur} vs {want}",
                    f.name
                );
            }
        }
    }
}

/// A file shorter than the clip is tiled as before, and its span is the whole file.
#[test]
fn short_file_span_is_the_whole_file() {
    let cfg = AdiffConfig::tiny().audio;
    let (clip, span) =
        adiff::audio::load_clip_span(&fixture("pcm16_16k_mono.wav"), &cfg, CropMode::Center)
            .unwrap();
    assert_eq!(
        clip,
        load_clip(&fixture("pcm16_16k_mono.wav"), &cfg, CropMode::Start).unwrap()
    );
    assert_eq!(span.duration_s, Some(0.5));
    assert_eq!((span.start_s, span.end_s), (0.0, 0.5));
    assert!(!span.is_crop());
}

/// `for_each_window` cuts the whole file in one pass: windows at 0, hop, 2 hop, ... while they
/// fit, then one ending at the file's end; each equal to the whole file's resampled samples at
/// its place (exact at the model's rate, 1e-5 across a resampler); a window shorter than the clip
/// is repeated to fill it. (Windows of 40 ms every 30 ms make the 0.25-0.5 s fixtures long.)
#[test]
fn windows_cover_the_file_and_equal_the_whole_file_path() {
    use adiff::audio::for_each_window;
    let mut cfg = AdiffConfig::tiny().audio;
    cfg.duration_s = 0.05;
    let (window, hop) = (0.04, 0.03);
    let sr = f64::from(cfg.sample_rate);
    let (win, step) = ((window * sr).round() as usize, (hop * sr).round() as usize);
    for f in manifest().files {
        let path = fixture(&f.name);
        let d = decode_file(&path).unwrap();
        let whole = resample(&d.samples, d.sample_rate, cfg.sample_rate).unwrap();
        let mut starts = Vec::new();
        let duration = for_each_window(&path, &cfg, window, hop, |w| {
            let start = (w.span.start_s * sr).round() as usize;
            assert_eq!(((w.span.end_s - w.span.start_s) * sr).round() as usize, win);
            let want = fixed_length(
                &whole[start..start + win],
                cfg.clip_samples(),
                CropMode::Start,
            );
            let worst = worst_diff(&w.clip, &want);
            let tol = if d.sample_rate == cfg.sample_rate {
                0.0
            } else {
                1e-5
            };
            assert!(
                worst <= tol,
                "{} window at {start}: worst {worst:e}",
                f.name
            );
            starts.push(start);
            Ok(())
        })
        .unwrap();
        let want_dur = d.samples.len() as f64 / f64::from(d.sample_rate);
        assert!((duration - want_dur).abs() < 1e-9, "{}", f.name);
        let mut want_starts: Vec<usize> = (0..)
            .map(|k| k * step)
            .take_while(|s| s + win <= whole.len())
            .collect();
        if want_starts.last().unwrap() + win < whole.len() {
            want_starts.push(whole.len() - win);
        }
        assert_eq!(starts, want_starts, "{}", f.name);
    }
    // Out of range windows are refused.
    let p = fixture("pcm16_16k_mono.wav");
    assert!(for_each_window(&p, &cfg, 0.06, 0.01, |_| Ok(())).is_err());
    assert!(for_each_window(&p, &cfg, 0.04, 0.0, |_| Ok(())).is_err());
}

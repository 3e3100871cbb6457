//! Parity of the log-mel front end and HTSAT against PyTorch references (torchlibrosa front end,
//! msclap's HTSAT with NOTES.md's ADIFF behaviour), produced by `scripts/fixtures_audio.py` with a
//! tiny random HTSAT (`configs/tiny.json`). Tolerances are the issue's: log-mel <= 1e-2 dB,
//! image <= 1e-3, embedding/clip-wise <= 1e-4.

mod common;
use common::max_abs_diff;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use adiff::audio::{load_clip, CropMode};
use adiff::model::audio_encoder::{AudioEncoder, HTSAT_PREFIX};
use adiff::model::checkpoint::Checkpoint;
use adiff::model::config::AdiffConfig;
use candle_core::{Device, IndexOp, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/htsat")
        .join(name)
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("htsat_tiny_expected.safetensors"), &Device::Cpu)
        .unwrap()
}

fn clips(cfg: &AdiffConfig) -> Vec<Vec<f32>> {
    ["clip_a.wav", "clip_b.wav"]
        .iter()
        .map(|n| load_clip(&fixture(n), &cfg.audio, CropMode::Start).unwrap())
        .collect()
}

fn encoder(cfg: &AdiffConfig) -> AudioEncoder {
    let ckpt = Checkpoint::load(fixture("htsat_tiny.ckpt")).unwrap();
    AudioEncoder::from_checkpoint(&ckpt, cfg, &Device::Cpu).unwrap()
}

#[test]
fn waveforms_load_like_the_reference() {
    let cfg = AdiffConfig::tiny();
    let exp = expected();
    let head = exp["waveform_head"].to_vec2::<f32>().unwrap();
    let sums = exp["waveform_sum"].to_vec1::<f32>().unwrap();
    for (i, clip) in clips(&cfg).iter().enumerate() {
        assert_eq!(clip.len(), cfg.audio.clip_samples());
        assert_eq!(
            &clip[..head[i].len()],
            head[i].as_slice(),
            "clip {i}: first samples differ"
        );
        let sum: f64 = clip.iter().map(|&x| x as f64).sum();
        assert!(
            (sum - sums[i] as f64).abs() < 1e-2,
            "clip {i}: sum {sum} vs {}",
            sums[i]
        );
    }
}

#[test]
fn log_mel_matches_torchlibrosa() {
    let cfg = AdiffConfig::tiny();
    let exp = expected();
    let enc = encoder(&cfg);
    let clips = clips(&cfg);
    // With the checkpoint's melW.
    let ours = enc.log_mel(&clips).unwrap();
    let err = max_abs_diff(&ours, &exp["logmel"]);
    eprintln!("log-mel max abs error (checkpoint melW): {err:.3e} dB");
    assert!(err <= 1e-2, "log-mel error {err} dB");
    // With the mel matrix computed here (librosa slaney formula).
    let own = adiff::audio::mel::LogMelFrontEnd::new(&cfg.audio);
    let ours2 = own.log_mel_batch(&clips, &Device::Cpu).unwrap();
    let err2 = max_abs_diff(&ours2, &exp["logmel"]);
    eprintln!("log-mel max abs error (computed mel matrix): {err2:.3e} dB");
    assert!(
        err2 <= 1e-2,
        "log-mel error with computed mel matrix {err2} dB"
    );
    // Power spectrum of one frame against the STFT-as-convolution reference (relative error).
    let p = own.power_spectrogram(&clips[0]).unwrap();
    let bins = cfg.audio.num_bins();
    let frame = &p[100 * bins..101 * bins];
    let refp = exp["power_frame100"]
        .i(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let scale = refp.iter().cloned().fold(0f32, f32::max);
    let worst = frame
        .iter()
        .zip(&refp)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale;
    eprintln!("power spectrum frame 100: max error relative to peak {worst:.3e}");
    assert!(worst < 1e-4);
}

#[test]
fn mel_matrix_and_stft_kernels_match_the_checkpoint() {
    let cfg = AdiffConfig::tiny();
    let ckpt = Checkpoint::load(fixture("htsat_tiny.ckpt")).unwrap();
    let own = adiff::audio::mel::LogMelFrontEnd::new(&cfg.audio);
    let mel_w = ckpt
        .get(&format!("{HTSAT_PREFIX}.logmel_extractor.melW"))
        .unwrap();
    let ours = Tensor::from_slice(own.mel_matrix(), mel_w.dims(), &Device::Cpu).unwrap();
    let err = max_abs_diff(&ours, mel_w);
    eprintln!("mel matrix max abs error vs checkpoint melW: {err:.3e}");
    assert!(err < 1e-6);
    let stft = format!("{HTSAT_PREFIX}.spectrogram_extractor.stft");
    let re = ckpt.get(&format!("{stft}.conv_real.weight")).unwrap();
    let im = ckpt.get(&format!("{stft}.conv_imag.weight")).unwrap();
    let kerr = own.stft_kernel_error(re, im).unwrap();
    eprintln!("STFT kernel max abs error: {kerr:.3e}");
    assert!(kerr < 1e-5);
}

#[test]
fn image_matches_pytorch() {
    let cfg = AdiffConfig::tiny();
    let exp = expected();
    let enc = encoder(&cfg);
    let img = enc.htsat.image(&exp["logmel"]).unwrap();
    let err = max_abs_diff(&img, &exp["image"]);
    eprintln!("image max abs error (from reference log-mel): {err:.3e}");
    assert!(err <= 1e-3, "image error {err}");
}

#[test]
fn swin_stages_and_head_match_pytorch() {
    let cfg = AdiffConfig::tiny();
    let exp = expected();
    let enc = encoder(&cfg);
    let (_, trace) = enc.htsat.forward_stages(&exp["image"]).unwrap();
    let err = max_abs_diff(&trace[0], &exp["patch_tokens"]);
    eprintln!("patch tokens max abs error: {err:.3e}");
    assert!(err <= 1e-4);
    for i in 0..cfg.htsat.depths.len() {
        let err = max_abs_diff(&trace[i + 1], &exp[&format!("stage_out_{i}")]);
        eprintln!("stage {i} output max abs error: {err:.3e}");
        assert!(err <= 1e-3, "stage {i} error {err}");
    }
    let out = enc.htsat.forward_image(&exp["image"]).unwrap();
    let e_emb = max_abs_diff(&out.embedding, &exp["embedding"]);
    let e_clip = max_abs_diff(&out.clipwise, &exp["clipwise"]);
    let fw32 = &exp["framewise_32"];
    let (b, steps, k) = fw32.dims3().unwrap();
    let repeat = cfg.htsat.target_frames() / steps;
    let fw = fw32
        .unsqueeze(2)
        .unwrap()
        .broadcast_as((b, steps, repeat, k))
        .unwrap()
        .reshape((b, steps * repeat, k))
        .unwrap();
    let e_frame = max_abs_diff(&out.framewise, &fw);
    eprintln!("from reference image: embedding {e_emb:.3e}, clipwise {e_clip:.3e}, framewise {e_frame:.3e}");
    assert!(e_emb <= 1e-4 && e_clip <= 1e-4 && e_frame <= 1e-4);
}

#[test]
fn end_to_end_from_wav_matches_pytorch() {
    let cfg = AdiffConfig::tiny();
    let exp = expected();
    let enc = encoder(&cfg);
    let (_, out) = enc.encode(&clips(&cfg)).unwrap();
    let e_emb = max_abs_diff(&out.embedding, &exp["embedding"]);
    let e_clip = max_abs_diff(&out.clipwise, &exp["clipwise"]);
    eprintln!("end to end from WAV: embedding {e_emb:.3e}, clipwise {e_clip:.3e}");
    assert!(e_emb <= 1e-4 && e_clip <= 1e-4);
}

#[test]
fn checkpoint_problems_are_named() {
    let cfg = AdiffConfig::tiny();
    let ckpt = Checkpoint::load(fixture("htsat_tiny.ckpt")).unwrap();
    let mut tensors: HashMap<String, Tensor> = ckpt
        .names()
        .map(|n| (n.to_string(), ckpt.get(n).unwrap().clone()))
        .collect();
    let missing = format!("{HTSAT_PREFIX}.layers.1.blocks.0.attn.qkv.weight");
    let reshaped = format!("{HTSAT_PREFIX}.norm.weight");
    tensors.remove(&missing);
    tensors.insert(
        reshaped.clone(),
        Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let broken = Checkpoint::from_tensors("broken.ckpt", tensors);
    let msg = match AudioEncoder::from_checkpoint(&broken, &cfg, &Device::Cpu) {
        Ok(_) => panic!("a broken checkpoint loaded"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(&missing) && msg.contains("missing"), "{msg}");
    assert!(msg.contains(&reshaped) && msg.contains("[7]"), "{msg}");
    assert!(msg.contains("broken.ckpt"), "{msg}");
    // The full-size config does not fit the tiny checkpoint: many tensors, summarised.
    let msg = match AudioEncoder::from_checkpoint(&ckpt, &AdiffConfig::base(), &Device::Cpu) {
        Ok(_) => panic!("tiny checkpoint loaded with the base config"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("more"), "{msg}");
}

/// `patch_norm: false` (the demo's setting) drops the LayerNorm after the patch embedding and
/// nothing else: a checkpoint without `patch_embed.norm.*` loads, and the tokens it makes,
/// layer-normed here by hand with the checkpoint's norm, are PyTorch's (normed) patch tokens.
/// With the default `patch_norm: true` (every paper config) those tensors are required by name.
#[test]
fn patch_norm_off_gives_the_reference_tokens_before_their_norm() {
    let mut cfg = AdiffConfig::tiny();
    assert!(cfg.htsat.patch_norm && AdiffConfig::base().htsat.patch_norm);
    let exp = expected();
    let ckpt = Checkpoint::load(fixture("htsat_tiny.ckpt")).unwrap();
    let prefix = format!("{HTSAT_PREFIX}.patch_embed.norm.");
    let (gamma, beta) = (
        ckpt.get(&format!("{prefix}weight"))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        ckpt.get(&format!("{prefix}bias"))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    let tensors: HashMap<String, Tensor> = ckpt
        .names()
        .filter(|n| !n.starts_with(&prefix))
        .map(|n| (n.to_string(), ckpt.get(n).unwrap().clone()))
        .collect();
    let without = Checkpoint::from_tensors("no-patch-norm.ckpt", tensors);
    let msg = match AudioEncoder::from_checkpoint(&without, &cfg, &Device::Cpu) {
        Ok(_) => panic!("patch_norm: true loaded a checkpoint without the patch norm"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(&format!("{prefix}weight")), "{msg}");

    cfg.htsat.patch_norm = false;
    let enc = AudioEncoder::from_checkpoint(&without, &cfg, &Device::Cpu).unwrap();
    let (_, trace) = enc.htsat.forward_stages(&exp["image"]).unwrap();
    // [B, N, C] raw tokens -> LayerNorm over C (eps from the config) -> the reference's tokens.
    let (b, n, c) = trace[0].dims3().unwrap();
    let raw = trace[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eps = cfg.htsat.layer_norm_eps;
    let mut normed = Vec::with_capacity(raw.len());
    for tok in raw.chunks_exact(c) {
        let mean = tok.iter().map(|&x| f64::from(x)).sum::<f64>() / c as f64;
        let var = tok
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / c as f64;
        for (i, &x) in tok.iter().enumerate() {
            let y = (f64::from(x) - mean) / (var + eps).sqrt();
            normed.push((y * f64::from(gamma[i]) + f64::from(beta[i])) as f32);
        }
    }
    let normed = Tensor::from_vec(normed, (b, n, c), &Device::Cpu).unwrap();
    let err = max_abs_diff(&normed, &exp["patch_tokens"]);
    eprintln!("patch_norm off, normed by hand vs PyTorch patch tokens: max abs error {err:.3e}");
    assert!(err <= 1e-4, "patch token error {err}");
    // The raw tokens are not already normed: the norm really is gone.
    assert!(max_abs_diff(&trace[0], &exp["patch_tokens"]) > 1e-2);
}

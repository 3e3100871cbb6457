//! Stage 1 (unimodal pretraining) against PyTorch (`scripts/fixtures_stage1.py`) and from the
//! CLI. Tolerances: encoder BCE loss 1e-5 relative, its gradients (all 121 tensors) within 1e-3
//! of the tensor's largest |g| (element-wise where stored whole, at the sampled elements
//! otherwise; the L2 norm and fixed +-1 projections of a summarised one within 1e-3 of its L2
//! norm) and the global gradient norm 1e-3 relative (the loss runs through
//! the whole f32 Swin, whose forward already differs from torch's by ~1e-5); decoder LM loss
//! 1e-5 relative, gradients within 1e-4 of the largest |g|, norm 1e-4 relative.

mod common;

use common::ok;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adiff::audio::{load_clip, CropMode};
use adiff::data::labels::LabelSet;
use adiff::model::checkpoint::Checkpoint;
use adiff::model::config::AdiffConfig;
use adiff::train::lm_task::{lm_loss, TrainableGpt2};
use adiff::train::tagging_task::{bce_with_logits, TrainableHtsat};
use candle_core::{DType, Device, Tensor};

const HTSAT: &str = "audio_encoder.base.htsat";
const NUM_LABELS: usize = 19;

fn fixture() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(common::fixture("train/stage1.safetensors"), &Device::Cpu)
        .unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

/// Largest |x| of a tensor.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn grad_norm(grads: &candle_core::backprop::GradStore, vars: &[(String, candle_core::Var)]) -> f64 {
    vars.iter()
        .map(|(_, v)| {
            grads
                .get(v.as_tensor())
                .map(|g| {
                    f64::from(
                        g.sqr()
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap(),
                    )
                })
                .unwrap_or(0.0)
        })
        .sum::<f64>()
        .sqrt()
}

fn check_grad(what: &str, got: &Tensor, want: &Tensor, rel: f32) -> f32 {
    let scale = max_abs(want);
    let d = common::max_abs_diff(got, want);
    assert!(
        d <= rel * scale + 1e-7,
        "{what}: gradient differs by {d} (largest |g| {scale})"
    );
    d / (scale + 1e-7)
}

/// splitmix64 (the hash of `scripts/fixtures_stage1.py`'s projections).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A gradient against the summary torch's was stored as (`scripts/fixtures_stage1.py`): its L2
/// norm and each fixed +-1 projection within `rel` of torch's L2 norm (a wrong, permuted or
/// transposed gradient moves a projection by about its norm), and the sampled elements (with the
/// largest) within `rel` of torch's largest |g|. The worst of those ratios, or what differs.
fn summary_mismatch(
    g: &[f32],
    summary: &[f64],
    idx: &[i64],
    val: &[f32],
    rel: f64,
) -> Result<f64, String> {
    let (norm, largest) = (summary[0], summary[1]);
    let ours = g.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let mut worst = (ours - norm).abs() / norm;
    if worst > rel {
        return Err(format!("gradient norm {ours} vs torch {norm}"));
    }
    for (j, &want) in summary[2..].iter().enumerate() {
        let p: f64 = g
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let h = splitmix64(((j as u64) << 40) | i as u64);
                if h >> 63 == 0 {
                    f64::from(x)
                } else {
                    -f64::from(x)
                }
            })
            .sum();
        let d = (p - want).abs() / norm;
        worst = worst.max(d);
        if d > rel {
            return Err(format!("projection {j} is {p}, torch {want} (|g| {norm})"));
        }
    }
    for (&i, &want) in idx.iter().zip(val) {
        let d = f64::from((g[i as usize] - want).abs());
        worst = worst.max(d / largest);
        if d > rel * largest + 1e-7 {
            return Err(format!(
                "element {i} is {}, torch {want} (largest |g| {largest})",
                g[i as usize]
            ));
        }
    }
    Ok(worst)
}

/// The summary's three parts for `name` from the fixture.
fn summary_of(f: &HashMap<String, Tensor>, name: &str) -> (Vec<f64>, Vec<i64>, Vec<f32>) {
    let get = |what: &str| {
        f.get(&format!("encoder.{what}.{name}"))
            .unwrap_or_else(|| panic!("torch has no gradient for {name}"))
    };
    (
        get("gradsum").to_vec1::<f64>().unwrap(),
        get("gradidx").to_vec1::<i64>().unwrap(),
        get("gradval").to_vec1::<f32>().unwrap(),
    )
}

#[test]
fn synthetic_label_layout() {
    let l = LabelSet::synthetic();
    assert_eq!(l.len(), NUM_LABELS);
    assert_eq!(l.names[0], "kind=tone");
    assert_eq!(l.names[5], "kind=chirp_up");
    assert_eq!(l.names[9], "pitch=high");
    assert_eq!(l.names[18], "background=hiss");
    let groups: Vec<(&str, usize)> = l
        .groups
        .iter()
        .map(|(g, r)| (g.as_str(), r.len()))
        .collect();
    assert_eq!(
        groups,
        [
            ("kind", 7),
            ("pitch", 3),
            ("loudness", 3),
            ("pattern", 3),
            ("background", 3)
        ]
    );
}

#[test]
fn encoder_loss_and_gradients_match_pytorch() {
    let f = fixture();
    let cfg = AdiffConfig::tiny();
    let ckpt = Checkpoint::load(common::fixture("htsat/htsat_tiny.ckpt")).unwrap();
    let t = TrainableHtsat::build(&ckpt, &cfg, &[HTSAT.to_string()], None, &Device::Cpu).unwrap();
    assert_eq!(
        t.vars.len(),
        scalar(&f["encoder.num_grads"].to_dtype(DType::F32).unwrap()) as usize,
        "trainable sets differ"
    );
    assert!(t.vars.iter().all(|(n, _)| !n.contains(".bn0.")));
    let clips: Vec<Vec<f32>> = ["clip_a.wav", "clip_b.wav"]
        .iter()
        .map(|n| {
            load_clip(
                &common::fixture(&format!("htsat/{n}")),
                &cfg.audio,
                CropMode::Start,
            )
            .unwrap()
        })
        .collect();
    let mel = t.encoder.log_mel(&clips).unwrap();
    let logits = t
        .encoder
        .htsat
        .clip_logits(&mel)
        .unwrap()
        .narrow(1, 0, NUM_LABELS)
        .unwrap();
    let loss = bce_with_logits(&logits, &f["encoder.target"]).unwrap();
    let (ours, theirs) = (loss.to_scalar::<f32>().unwrap(), scalar(&f["encoder.loss"]));
    let rel = ((ours - theirs) / theirs).abs();
    println!("encoder BCE: ours {ours} torch {theirs} (rel {rel:.1e})");
    assert!(rel < 1e-5, "encoder loss {ours} vs {theirs}");

    // Every trainable tensor's gradient: whole, or (over 4096 elements) by its summary.
    let grads = loss.backward().unwrap();
    let (mut worst, mut whole, mut summarised) = (0f64, 0, 0);
    for (full_name, var) in &t.vars {
        let name = full_name.strip_prefix(&format!("{HTSAT}.")).unwrap();
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        if let Some(want) = f.get(&format!("encoder.grad.{name}")) {
            worst = worst.max(f64::from(check_grad(name, got, want, 1e-3)));
            whole += 1;
        } else {
            let (sum, idx, val) = summary_of(&f, name);
            let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let r = summary_mismatch(&g, &sum, &idx, &val, 1e-3);
            worst = worst.max(r.unwrap_or_else(|e| panic!("{name}: {e}")));
            summarised += 1;
        }
    }
    // The rows of the K labels (the only ones with a gradient) also whole.
    let tscam = format!("{HTSAT}.tscam_conv.weight");
    let (_, tscam) = t.vars.iter().find(|(n, _)| *n == tscam).unwrap();
    let got = grads
        .get(tscam.as_tensor())
        .unwrap()
        .narrow(0, 0, NUM_LABELS)
        .unwrap();
    check_grad(
        "tscam_conv.weight (first K rows)",
        &got,
        &f["encoder.grad.tscam_conv.weight.first_k"],
        1e-3,
    );
    // Nothing in the fixture is left unchecked.
    let in_fixture = f
        .keys()
        .filter(|k| {
            (k.starts_with("encoder.grad.") && !k.ends_with(".first_k"))
                || k.starts_with("encoder.gradsum.")
        })
        .count();
    assert_eq!(
        (whole + summarised, in_fixture),
        (t.vars.len(), t.vars.len()),
        "{whole} whole + {summarised} summarised gradients checked"
    );
    println!("encoder: {whole} gradients whole, {summarised} by summary");
    // The summary tells a slightly scaled, a row-reversed or a transposed gradient from the
    // right one.
    let name = "layers.3.blocks.0.mlp.fc1.weight";
    let (sum, idx, val) = summary_of(&f, name);
    let (_, var) = t
        .vars
        .iter()
        .find(|(n, _)| *n == format!("{HTSAT}.{name}"))
        .unwrap();
    let got = grads.get(var.as_tensor()).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(summary_mismatch(&flat(got), &sum, &idx, &val, 1e-3).is_ok());
    let rev: Vec<u32> = (0..got.dim(0).unwrap() as u32).rev().collect();
    let rev = Tensor::from_vec(rev.clone(), rev.len(), &Device::Cpu).unwrap();
    let reversed = got.index_select(&rev, 0).unwrap();
    for (how, wrong) in [
        ("scaled by 1.002", flat(&got.affine(1.002, 0.0).unwrap())),
        ("rows reversed", flat(&reversed)),
        ("transposed", flat(&got.t().unwrap().contiguous().unwrap())),
    ] {
        let r = summary_mismatch(&wrong, &sum, &idx, &val, 1e-3);
        assert!(r.is_err(), "{name} {how} passed the summary check: {r:?}");
    }
    let norm = grad_norm(&grads, &t.vars);
    let want = f64::from(scalar(&f["encoder.grad_norm"]));
    println!(
        "encoder: worst gradient difference {worst:.1e} of the tensor's scale; norm {norm} vs {want}"
    );
    assert!(
        ((norm - want) / want).abs() < 1e-3,
        "gradient norm {norm} vs {want}"
    );
}

#[test]
fn decoder_loss_and_gradients_match_hugging_face() {
    let f = fixture();
    let cfg = AdiffConfig::tiny();
    let ckpt = Checkpoint::load(common::fixture("gpt2/adiff_tiny.safetensors")).unwrap();
    let t = TrainableGpt2::build(
        &ckpt,
        &cfg,
        &["caption_decoder.gpt".to_string()],
        None,
        &Device::Cpu,
    )
    .unwrap();
    let ids = f["decoder.ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let lens = f["decoder.lengths"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let rows: Vec<Vec<u32>> = ids
        .iter()
        .zip(&lens)
        .map(|(r, &n)| r[..n as usize].to_vec())
        .collect();
    let loss = lm_loss(&t.gpt, &rows, cfg.text.pad_token_id, &Device::Cpu).unwrap();
    let (ours, theirs) = (loss.to_scalar::<f32>().unwrap(), scalar(&f["decoder.loss"]));
    let rel = ((ours - theirs) / theirs).abs();
    println!("decoder LM loss: ours {ours} torch {theirs} (rel {rel:.1e})");
    assert!(rel < 1e-5, "decoder loss {ours} vs {theirs}");
    let grads = loss.backward().unwrap();
    let by_name: HashMap<&str, &Tensor> = t
        .vars
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_tensor()))
        .collect();
    for (k, want) in &f {
        let Some(name) = k.strip_prefix("decoder.grad.") else {
            continue;
        };
        let got = if name == "wte_rows" {
            let rows = f["decoder.wte_rows"].to_dtype(DType::U32).unwrap();
            let wte = by_name["caption_decoder.gpt.transformer.wte.weight"];
            grads.get(wte).unwrap().index_select(&rows, 0).unwrap()
        } else {
            grads
                .get(by_name[format!("caption_decoder.gpt.{name}").as_str()])
                .unwrap()
                .clone()
        };
        check_grad(name, &got, want, 1e-4);
    }
    let norm = grad_norm(&grads, &t.vars);
    let want = f64::from(scalar(&f["decoder.grad_norm"]));
    println!("decoder: gradient norm {norm} vs {want}");
    assert!(
        ((norm - want) / want).abs() < 1e-4,
        "gradient norm {norm} vs {want}"
    );
    assert!(!t.tied_head);

    // The official checkpoint stores lm_head.weight as a copy of wte (tied in PyTorch): it is
    // trained tied, with the same gradients, and exported under both names.
    let mut tensors: HashMap<String, Tensor> = ckpt
        .names()
        .map(|n| (n.to_string(), ckpt.get(n).unwrap().clone()))
        .collect();
    let wte = tensors["caption_decoder.gpt.transformer.wte.weight"]
        .copy()
        .unwrap();
    tensors.insert("caption_decoder.gpt.lm_head.weight".into(), wte);
    let copy = Checkpoint::from_tensors("with-head-copy", tensors);
    let tied = TrainableGpt2::build(
        &copy,
        &cfg,
        &["caption_decoder.gpt".to_string()],
        None,
        &Device::Cpu,
    )
    .unwrap();
    assert!(tied.tied_head);
    assert_eq!(
        tied.vars.len(),
        t.vars.len(),
        "the head copy is no separate tensor"
    );
    let loss = lm_loss(&tied.gpt, &rows, cfg.text.pad_token_id, &Device::Cpu).unwrap();
    let norm = grad_norm(&loss.backward().unwrap(), &tied.vars);
    assert!(
        ((norm - want) / want).abs() < 1e-4,
        "tied: gradient norm {norm} vs {want}"
    );
    let (_, v) = tied
        .vars
        .iter()
        .find(|(n, _)| n.ends_with("wte.weight"))
        .unwrap();
    v.set(&(v.as_tensor() + 1.0).unwrap()).unwrap();
    let out = tied.export_tensors(&copy).unwrap();
    assert_eq!(
        common::max_abs_diff(&out["caption_decoder.gpt.lm_head.weight"], v.as_tensor()),
        0.0
    );
}

fn adiff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
}

fn scratch(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("adiff-stage1-{name}"))
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn step_losses(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// Writes a copy of a tiny stage-1 config with some fields replaced.
fn config(dir: &Path, name: &str, changes: serde_json::Value) -> PathBuf {
    config_as(dir, name, name, changes)
}

/// [`config`] written to `dir/out_name`.
fn config_as(dir: &Path, name: &str, out_name: &str, changes: serde_json::Value) -> PathBuf {
    let text = std::fs::read_to_string(common::root().join("configs/train").join(name)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (k, x) in changes.as_object().unwrap() {
        v[k] = x.clone();
    }
    let p = dir.join(out_name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

/// `count` synthetic pairs (two clips each) with seed 5 in `data`.
fn synthetic_pairs(data: &Path, count: u32) {
    ok(adiff()
        .args(["build-dataset", "synthetic", "--count"])
        .arg(count.to_string())
        .args(["--seed", "5", "-o"])
        .arg(data)
        .output()
        .unwrap());
}

/// `train-stage1 --part encoder` on `data`'s clips with the tiny model.
fn train_encoder(data: &Path, ckpt: &Path, tcfg: &Path, out: &Path, extra: &[&str]) -> Output {
    ok(adiff()
        .args(["train-stage1", "--part", "encoder", "--quiet", "--labels"])
        .arg(data.join("truth.jsonl"))
        .arg("-c")
        .arg(ckpt)
        .args(common::tiny_config_args())
        .arg("--train-config")
        .arg(tcfg)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap())
}

/// `train-stage1 --part decoder` on `data`'s tier-2 answers with the tiny GPT-2.
fn train_decoder(data: &Path, tcfg: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = adiff();
    cmd.args([
        "train-stage1",
        "--part",
        "decoder",
        "--quiet",
        "--text-from-csv",
    ])
    .arg(data.join("train_sentence_answer.csv"))
    .args(extra);
    for f in common::tiny_checkpoint_parts() {
        cmd.arg("-c").arg(f);
    }
    ok(cmd
        .args(common::tiny_config_args())
        .arg("--train-config")
        .arg(tcfg)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap())
}

/// Every tensor of `a` equals `b`'s bit for bit (a resumed run against an uninterrupted one).
fn assert_same_weights(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    for (name, t) in a {
        assert_eq!(
            common::max_abs_diff(
                &t.to_dtype(DType::F32).unwrap(),
                &b[name].to_dtype(DType::F32).unwrap()
            ),
            0.0,
            "{name} differs after resume"
        );
    }
}

/// The encoder run: loss drops on a small synthetic set (overfitting two clips), only HTSAT's
/// trainable tensors move (bn0, the front end and the other checkpoint tensors are bit-for-bit
/// the input's), labels.json is written, and a run stopped and resumed ends with the same weights.
#[test]
fn encoder_cli_trains_freezes_and_resumes() {
    let dir = scratch("enc");
    let data = dir.join("data");
    synthetic_pairs(&data, 1);
    let tcfg = config(
        &dir,
        "tiny_stage1_encoder.json",
        serde_json::json!({"epochs": 4, "batch_size": 2, "val_fraction": 0.0, "warmup_steps": 0, "num_samples": 0}),
    );
    let ckpt = common::fixture("htsat/htsat_tiny.ckpt");
    let run = |out: &Path, extra: &[&str]| train_encoder(&data, &ckpt, &tcfg, out, extra);
    let full = dir.join("full");
    run(&full, &[]);
    let losses = step_losses(&full.join("log.jsonl"));
    println!("encoder step losses: {losses:?}");
    assert_eq!(losses.len(), 4);
    assert!(
        losses[3] < 0.8 * losses[0],
        "training loss did not drop: {losses:?}"
    );
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("labels.json")).unwrap()).unwrap();
    assert_eq!(labels["labels"].as_array().unwrap().len(), NUM_LABELS);
    // `adiff tag` on the trained model names its outputs from labels.json, and ranks only those.
    let clip = std::fs::read_dir(data.join("audio"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let tagged = adiff()
        .arg("tag")
        .arg(&clip)
        .arg("-c")
        .arg(full.join("model.safetensors"))
        .args(common::tiny_config_args())
        .args(["--top", "30", "--json"])
        .output()
        .unwrap();
    ok(tagged.clone());
    let report: serde_json::Value = serde_json::from_slice(&tagged.stdout).unwrap();
    let events = report["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        NUM_LABELS,
        "only the labelled outputs are ranked"
    );
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["label"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pitch=high") && names.contains(&"kind=tone"),
        "{names:?}"
    );

    let init = Checkpoint::load(&ckpt).unwrap();
    let model = load(&full.join("model.safetensors"));
    assert_eq!(
        model.len(),
        init.len(),
        "the export holds every input tensor"
    );
    let (mut moved, mut same) = (0, 0);
    for (name, t) in &model {
        let before = init.get(name).unwrap().to_dtype(t.dtype()).unwrap();
        let unchanged = before.flatten_all().unwrap().to_vec1::<f32>().ok()
            == t.flatten_all().unwrap().to_vec1::<f32>().ok()
            && before.dims() == t.dims();
        let frozen = name.contains(".bn0.")
            || name.contains("spectrogram_extractor")
            || name.contains("logmel_extractor")
            || t.dtype() != DType::F32;
        if frozen {
            assert!(unchanged, "{name} is frozen but changed");
            same += 1;
        } else if !unchanged {
            moved += 1;
        }
    }
    println!("{moved} tensors moved, {same} frozen ones unchanged");
    assert!(moved > 100 && same >= 5, "moved {moved}, frozen {same}");

    // Stopped after 2 of 4 steps, then resumed: the same weights, bit for bit.
    let part = dir.join("part");
    run(&part, &["--stop-after-steps", "2"]);
    assert!(!part.join("model.safetensors").exists());
    run(&part, &["--resume"]);
    assert_same_weights(&model, &load(&part.join("model.safetensors")));
}

/// The decoder run on the synthetic explanations (`--text-from-csv`, plain lines or answers after
/// their caption prefixes): loss drops, only GPT-2 moves, samples are logged.
fn decoder_cli_trains_gpt2_only(name: &str, extra: &[&str]) {
    let dir = scratch(name);
    let data = dir.join("data");
    synthetic_pairs(&data, 8);
    let tcfg = config(
        &dir,
        "tiny_stage1_decoder.json",
        serde_json::json!({"epochs": 4, "lr": 0.02}),
    );
    let out = dir.join("run");
    train_decoder(&data, &tcfg, &out, extra);
    let losses = step_losses(&out.join("log.jsonl"));
    println!("decoder step losses: {losses:?}");
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < 0.8 * first, "LM loss did not drop: {losses:?}");
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert!(
        log.contains("\"samples\":[\"["),
        "no sample continuations logged"
    );

    let init = Checkpoint::load_all(&common::tiny_checkpoint_parts()).unwrap();
    let model = load(&out.join("model.safetensors"));
    assert_eq!(model.len(), init.len());
    for (name, t) in &model {
        let before = init.get(name).unwrap().to_dtype(t.dtype()).unwrap();
        let same = before.dims() == t.dims()
            && before
                .to_dtype(DType::F32)
                .and_then(|b| {
                    b.sub(&t.to_dtype(DType::F32)?)?
                        .abs()?
                        .flatten_all()?
                        .max(0)
                })
                .map(|d| d.to_scalar::<f32>().unwrap() == 0.0)
                .unwrap_or(true);
        if name.starts_with("caption_decoder.gpt.") && name.contains(".h.0.mlp.c_fc.weight") {
            assert!(!same, "{name} did not train");
        }
        if !name.starts_with("caption_decoder.gpt.") {
            assert!(same, "{name} is outside GPT-2 but changed");
        }
    }
}

#[test]
fn decoder_cli_trains_gpt2_only_on_lines() {
    decoder_cli_trains_gpt2_only("dec", &[]);
}

#[test]
fn decoder_cli_trains_gpt2_only_after_caption_prefixes() {
    decoder_cli_trains_gpt2_only("dec-captions", &["--caption-prefix"]);
}

/// `--caption-prefix` needs CSVs: plain text lines have no captions.
#[test]
fn caption_prefix_refuses_text_files() {
    let dir = scratch("dec-captions-text");
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("lines.txt");
    std::fs::write(&text, "one line\n").unwrap();
    let out = adiff()
        .args([
            "train-stage1",
            "--part",
            "decoder",
            "--caption-prefix",
            "--quiet",
            "--text",
        ])
        .arg(&text)
        .args(["--init-missing", "-o"])
        .arg(dir.join("run"))
        .args(common::tiny_config_args())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--caption-prefix reads"), "{err}");
}

#[test]
fn stage1_misuse_is_refused() {
    let ckpt = Checkpoint::load(common::fixture("htsat/htsat_tiny.ckpt")).unwrap();
    let cfg = AdiffConfig::tiny();
    for (prefix, want) in [
        (format!("{HTSAT}.bn0"), "frozen"),
        ("caption_decoder.gpt".to_string(), "outside HTSAT"),
        (format!("{HTSAT}.nope"), "matches no tensor"),
    ] {
        let err = TrainableHtsat::build(&ckpt, &cfg, &[prefix], None, &Device::Cpu)
            .err()
            .expect("refused");
        assert!(err.to_string().contains(want), "{err}");
    }
}

/// No derived copy goes stale: after every trainable tensor is changed in place (as an optimizer
/// step does), the trainable encoder gives what a frozen encoder built from the changed
/// checkpoint gives (relative-position tables are re-gathered, tscam and patch weights used as
/// they are).
#[test]
fn updated_htsat_vars_are_seen_by_the_forward() {
    use adiff::model::audio_encoder::AudioEncoder;
    use adiff::train::vars::export_with;
    let cfg = AdiffConfig::tiny();
    let ckpt = Checkpoint::load(common::fixture("htsat/htsat_tiny.ckpt")).unwrap();
    let t = TrainableHtsat::build(&ckpt, &cfg, &[HTSAT.to_string()], None, &Device::Cpu).unwrap();
    let clip = load_clip(
        &common::fixture("htsat/clip_a.wav"),
        &cfg.audio,
        CropMode::Start,
    )
    .unwrap();
    let mel = t.encoder.log_mel(&[clip]).unwrap();
    let before = t.encoder.htsat.clip_logits(&mel).unwrap();
    // The differentiable (unfused) path against the fused inference kernels, before any update.
    let plain = AudioEncoder::from_checkpoint(&ckpt, &cfg, &Device::Cpu).unwrap();
    let d0 = common::max_abs_diff(&before, &plain.htsat.clip_logits(&mel).unwrap());
    for (i, (_, v)) in t.vars.iter().enumerate() {
        let shift = 0.005 * ((i % 7) as f64 - 3.0);
        v.set(&(v.as_tensor() * 1.01).unwrap().affine(1.0, shift).unwrap())
            .unwrap();
    }
    let after = t.encoder.htsat.clip_logits(&mel).unwrap();
    let changed = Checkpoint::from_tensors("changed", export_with(&ckpt, &t.vars).unwrap());
    let frozen = AudioEncoder::from_checkpoint(&changed, &cfg, &Device::Cpu).unwrap();
    let want = frozen.htsat.clip_logits(&mel).unwrap();
    let d = common::max_abs_diff(&after, &want);
    let moved = common::max_abs_diff(&after, &before);
    let scale = max_abs(&want);
    println!(
        "trainable vs frozen path: {d0:.1e} before the update; after it {d:.1e} (largest |logit| \
         {scale:.1}, moved by {moved:.2})"
    );
    assert!(moved > 0.1, "the update had no effect");
    // A stale copy would be off by about the update's effect (0.3); the f32 path difference
    // (unfused vs fused kernels) stays within 1e-5 of the logits' size.
    assert!(d < 1e-5 * scale, "the trainable forward is stale by {d}");
}

#[test]
fn labels_from_a_csv() {
    use adiff::data::labels::{label_set_for, read_label_csv};
    let dir = scratch("csv");
    let p = dir.join("labels.csv");
    std::fs::write(
        &p,
        "file,labels\na.wav,kind=tone;pitch=low\nb.wav,dog;rain\n\"c d.wav\",rain\n",
    )
    .unwrap();
    let files = read_label_csv(&p).unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[2].path, "c d.wav");
    let set = label_set_for(&files);
    assert_eq!(set.names, ["dog", "kind=tone", "pitch=low", "rain"]);
    assert_eq!(
        set.targets(&files[1].labels, "b").unwrap(),
        [1.0, 0.0, 0.0, 1.0]
    );
    // Only-synthetic labels keep the synthetic layout.
    assert_eq!(label_set_for(&files[..1]).len(), NUM_LABELS);
}

#[test]
fn truth_records_by_split() {
    use adiff::data::labels::read_truth;
    let dir = scratch("split");
    for (split, count) in [("train", "2"), ("test", "1")] {
        ok(adiff()
            .args([
                "build-dataset",
                "synthetic",
                "--count",
                count,
                "--seed",
                "2",
            ])
            .args(["--split", split, "-o"])
            .arg(&dir)
            .output()
            .unwrap());
    }
    let truth = dir.join("truth.jsonl");
    assert_eq!(read_truth(&truth, None).unwrap().len(), 6);
    let test = read_truth(&truth, Some("test")).unwrap();
    assert_eq!(test.len(), 2);
    assert!(test.iter().all(|f| f.path.contains("test_")));
    assert_eq!(test[0].labels.len(), 5);
}

/// `--init-missing` with a checkpoint that has no GPT-2 (a stage-1 encoder's output): GPT-2
/// starts from Hugging Face's initialisation (weights N(0, 0.02^2), residual projections scaled
/// by 1/sqrt(2 n_layer), biases 0, layer norms 1/0), tied head, the same values for the same
/// seed; without the flag the missing GPT-2 is an error.
/// The values of the one trainable variable whose name ends with `suffix`.
fn var_values(vars: &[(String, candle_core::Var)], suffix: &str) -> Vec<f32> {
    let (_, v) = vars.iter().find(|(n, _)| n.ends_with(suffix)).unwrap();
    v.as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Root mean square (the standard deviation of zero-mean initial values).
fn std(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

#[test]
fn decoder_from_scratch_with_init_missing() {
    let cfg = AdiffConfig::tiny();
    let htsat = Checkpoint::load(common::fixture("htsat/htsat_tiny.ckpt")).unwrap();
    let gpt = ["caption_decoder.gpt".to_string()];
    let e = TrainableGpt2::build(&htsat, &cfg, &gpt, None, &Device::Cpu)
        .err()
        .expect("GPT-2 missing from an HTSAT checkpoint")
        .to_string();
    assert!(
        e.contains("htsat_tiny.ckpt") && e.contains("no GPT-2 weights under 'caption_decoder.gpt'"),
        "{e}"
    );
    let a = TrainableGpt2::build(&htsat, &cfg, &gpt, Some(7), &Device::Cpu).unwrap();
    let b = TrainableGpt2::build(&htsat, &cfg, &gpt, Some(7), &Device::Cpu).unwrap();
    let get = |t: &TrainableGpt2, suffix: &str| var_values(&t.vars, suffix);
    let wte = get(&a, "transformer.wte.weight");
    assert!((std(&wte) - 0.02).abs() < 0.001, "wte std {}", std(&wte));
    let proj = get(&a, "h.0.mlp.c_proj.weight");
    let want = 0.02 / (2.0 * cfg.gpt2.n_layer as f32).sqrt();
    assert!(
        (std(&proj) - want).abs() < 0.1 * want,
        "c_proj std {}",
        std(&proj)
    );
    assert!(get(&a, "h.0.attn.c_attn.bias").iter().all(|&v| v == 0.0));
    assert!(get(&a, "h.1.ln_2.weight").iter().all(|&v| v == 1.0));
    assert!(
        !a.vars.iter().any(|(n, _)| n.ends_with("lm_head.weight")),
        "head tied to wte"
    );
    assert_eq!(
        wte,
        get(&b, "transformer.wte.weight"),
        "same seed, same values"
    );
    let c = TrainableGpt2::build(&htsat, &cfg, &gpt, Some(8), &Device::Cpu).unwrap();
    assert_ne!(wte, get(&c, "transformer.wte.weight"));
}

/// `--init-missing` for the encoder: HTSAT from nothing, with HTSAT's own initialisation (normal
/// 0.02 linears and relative position tables, zero linear biases, PyTorch's default U(+-1/sqrt
/// (fan_in)) convolutions, unit layer norms) and a fresh, frozen bn0; seeded.
#[test]
fn encoder_from_scratch_with_init_missing() {
    use adiff::train::tagging_task::{logmel_statistics, with_bn0, TaggedClip};
    let cfg = AdiffConfig::tiny();
    let empty = || Checkpoint::from_tensors("empty", HashMap::new());
    let htsat = [HTSAT.to_string()];
    let e = TrainableHtsat::build(&empty(), &cfg, &htsat, None, &Device::Cpu)
        .err()
        .expect("HTSAT missing")
        .to_string();
    // bn0 is frozen, so init_missing alone does not create it.
    let e3 = TrainableHtsat::build(&empty(), &cfg, &htsat, Some(3), &Device::Cpu)
        .err()
        .expect("bn0 missing")
        .to_string();
    // Every HTSAT tensor is named missing without --init-missing; with it, only bn0's four.
    assert!(
        e.contains("checkpoint empty: 125 tensor(s) do not fit the model")
            && e.contains(&format!("{HTSAT}.patch_embed.proj.weight is missing")),
        "{e}"
    );
    assert!(
        e3.contains("checkpoint empty: 4 tensor(s) do not fit the model"),
        "{e3}"
    );
    for what in ["weight", "bias", "running_mean", "running_var"] {
        assert!(
            e3.contains(&format!("{HTSAT}.bn0.{what} is missing")),
            "{e3}"
        );
    }
    // bn0's statistics come from the training clips' log-mels, per mel bin over all frames.
    let m = cfg.audio.n_mels;
    let clip = |values: Vec<f32>| TaggedClip {
        path: "x.wav".into(),
        logmel: values,
        targets: vec![],
    };
    let first: Vec<f32> = (0..2 * m).map(|i| (i % m) as f32).collect(); // 2 frames: bin value m
    let second: Vec<f32> = (0..m).map(|i| (i % m) as f32 + 3.0).collect(); // 1 frame: m + 3
    let (mean, var) = logmel_statistics(&[clip(first), clip(second)], m).unwrap();
    assert!((mean[5] - 6.0).abs() < 1e-6, "{}", mean[5]); // (5 + 5 + 8) / 3
    assert!((var[5] - 2.0).abs() < 1e-5, "{}", var[5]); // ((1 + 1 + 4) / 3)
    let e = logmel_statistics(&[clip(vec![0.0; m + 1])], m)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "x.wav: log-mel of {} values is not a whole number of {m}-bin frames",
            m + 1
        )),
        "{e}"
    );
    let e = logmel_statistics(&[], m).unwrap_err().to_string();
    assert!(
        e.contains("no log-mel frames to compute bn0 statistics from"),
        "{e}"
    );
    let ckpt = with_bn0(empty(), &mean, &var).unwrap();
    let a = TrainableHtsat::build(&ckpt, &cfg, &htsat, Some(3), &Device::Cpu).unwrap();
    let b = TrainableHtsat::build(&ckpt, &cfg, &htsat, Some(3), &Device::Cpu).unwrap();
    assert!(a.vars.iter().all(|(n, _)| !n.contains(".bn0.")));
    let get = |t: &TrainableHtsat, suffix: &str| var_values(&t.vars, suffix);
    let qkv = get(&a, "layers.3.blocks.1.attn.qkv.weight");
    assert!((std(&qkv) - 0.02).abs() < 0.002, "qkv std {}", std(&qkv));
    let table = get(&a, "layers.0.blocks.0.attn.relative_position_bias_table");
    assert!(
        (std(&table) - 0.02).abs() < 0.004,
        "table std {}",
        std(&table)
    );
    assert!(get(&a, "layers.1.blocks.0.mlp.fc1.bias")
        .iter()
        .all(|&v| v == 0.0));
    assert!(get(&a, "layers.2.blocks.1.norm2.weight")
        .iter()
        .all(|&v| v == 1.0));
    // Patch embedding: a 1-channel 4x4 convolution, fan_in 16, U(-1/4, 1/4).
    let proj = get(&a, "patch_embed.proj.weight");
    let bound = 1.0 / ((cfg.htsat.patch_size * cfg.htsat.patch_size) as f32).sqrt();
    assert!(proj.iter().all(|v| v.abs() <= bound));
    assert!(proj.iter().any(|v| v.abs() > 0.5 * bound));
    let tscam = get(&a, "tscam_conv.weight");
    let kh = cfg.htsat.final_grid() / cfg.htsat.freq_ratio;
    let bound = 1.0 / ((cfg.htsat.num_features() * kh * 3) as f32).sqrt();
    assert!(tscam.iter().all(|v| v.abs() <= bound));
    assert_eq!(
        qkv,
        get(&b, "layers.3.blocks.1.attn.qkv.weight"),
        "same seed, same values"
    );
    let c = TrainableHtsat::build(&ckpt, &cfg, &htsat, Some(4), &Device::Cpu).unwrap();
    assert_ne!(qkv, get(&c, "layers.3.blocks.1.attn.qkv.weight"));
    let bn = ckpt.get(&format!("{HTSAT}.bn0.running_var")).unwrap();
    assert_eq!(bn.to_vec1::<f32>().unwrap(), var);
    let w = ckpt.get(&format!("{HTSAT}.bn0.weight")).unwrap();
    assert_eq!(w.to_vec1::<f32>().unwrap(), vec![1.0; m]);
}

/// `embedding_tagging_weight`: a linear tagger on HTSAT's pooled embedding trains alongside.
/// It starts at zero, so its first loss is ln 2 per label on top of the plain run's first loss;
/// it is checkpointed (and resumes exactly) but not exported; the samples report its accuracy;
/// stages that do not tag refuse the setting.
#[test]
fn encoder_embedding_tagger_trains_and_is_not_exported() {
    let dir = scratch("emb-tagger");
    let data = dir.join("data");
    synthetic_pairs(&data, 1);
    let changes = |w: f64| {
        serde_json::json!({"epochs": 4, "batch_size": 2, "val_fraction": 0.5, "warmup_steps": 0,
            "num_samples": 1, "embedding_tagging_weight": w})
    };
    let plain_cfg = config_as(&dir, "tiny_stage1_encoder.json", "plain.json", changes(0.0));
    let tagger_cfg = config_as(
        &dir,
        "tiny_stage1_encoder.json",
        "tagger.json",
        changes(1.0),
    );
    let ckpt = common::fixture("htsat/htsat_tiny.ckpt");
    let run = |cfg: &Path, out: &Path, extra: &[&str]| train_encoder(&data, &ckpt, cfg, out, extra);
    let plain = dir.join("plain");
    run(&plain_cfg, &plain, &[]);
    let full = dir.join("full");
    let out = run(&tagger_cfg, &full, &[]);
    let (l0, l1) = (
        step_losses(&plain.join("log.jsonl")),
        step_losses(&full.join("log.jsonl")),
    );
    println!("plain {l0:?}\nwith tagger {l1:?}");
    // BCE of a zero logit is ln 2 whatever the target; the mean over labels is ln 2 too.
    assert!(
        (l1[0] - l0[0] - std::f64::consts::LN_2).abs() < 1e-4,
        "first-step losses {} and {}",
        l1[0],
        l0[0]
    );
    assert!(l1[3] < l1[0], "loss did not drop: {l1:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("embedding tagger: kind "), "{stderr}");

    let model = load(&full.join("model.safetensors"));
    let init = Checkpoint::load(&ckpt).unwrap();
    assert_eq!(model.len(), init.len(), "the tagger is not exported");
    let states: Vec<PathBuf> = std::fs::read_dir(full.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let state = load(&states[0]);
    // Training states keep trainable tensors under "model." (optimizer moments elsewhere).
    let w = state
        .get("model.stage1.embedding_tagger.weight")
        .expect("the tagger is checkpointed");
    assert_eq!(w.dims(), [NUM_LABELS, 128]);
    assert!(max_abs(w) > 0.0, "the tagger trained");

    // Stopped after 2 of 4 steps, then resumed: the same weights, bit for bit.
    let part = dir.join("part");
    run(&tagger_cfg, &part, &["--stop-after-steps", "2"]);
    run(&tagger_cfg, &part, &["--resume"]);
    assert_same_weights(&model, &load(&part.join("model.safetensors")));

    let refused = adiff()
        .args([
            "train-stage1",
            "--part",
            "decoder",
            "--quiet",
            "--text-from-csv",
        ])
        .arg(data.join("train_sentence_answer.csv"))
        .args(["--init-missing"])
        .args(common::tiny_config_args())
        .arg("--train-config")
        .arg(&tagger_cfg)
        .arg("-o")
        .arg(dir.join("dec"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("embedding_tagging_weight"), "{msg}");
}

/// `precision: "bf16"` in stage 1: both parts train in mixed precision with losses close to
/// f32's (measured 2026-12-06 on these runs: decoder worst 5.3e-4 relative over 8 steps,
/// encoder 3.8e-3 over 8 steps; bounds 2e-3 and 3e-2, the latter the demo recipe's per-step
/// tolerance in docs/gpu.md), and no exported tensor is bf16 or f16.
#[test]
fn stage1_trains_in_bf16_mixed_precision() {
    let dir = scratch("bf16");
    let data = dir.join("data");
    synthetic_pairs(&data, 8);
    let mut worst = HashMap::new();
    for part in ["decoder", "encoder"] {
        let mut losses = Vec::new();
        for precision in ["f32", "bf16"] {
            let mut changes = serde_json::json!({ "precision": precision });
            if part == "decoder" {
                changes["epochs"] = 4.into();
                changes["lr"] = 0.02.into();
            }
            let tcfg = config_as(
                &dir,
                &format!("tiny_stage1_{part}.json"),
                &format!("{part}_{precision}.json"),
                changes,
            );
            let out = dir.join(format!("{part}_{precision}"));
            if part == "decoder" {
                train_decoder(&data, &tcfg, &out, &[]);
            } else {
                let ckpt = common::fixture("htsat/htsat_tiny.ckpt");
                train_encoder(&data, &ckpt, &tcfg, &out, &["--stop-after-steps", "8"]);
            }
            losses.push(step_losses(&out.join("log.jsonl")));
            if part == "decoder" {
                for (name, t) in load(&out.join("model.safetensors")) {
                    let half = matches!(t.dtype(), DType::BF16 | DType::F16);
                    assert!(!half, "{name} exported as {:?}", t.dtype());
                }
            }
        }
        assert_eq!(losses[0].len(), losses[1].len());
        assert!(losses[0].len() >= 8, "{part}: {} steps", losses[0].len());
        let w = losses[0]
            .iter()
            .zip(&losses[1])
            .map(|(a, b)| ((a - b) / a).abs())
            .fold(0f64, f64::max);
        eprintln!("stage 1 {part}: bf16 vs f32 worst relative loss difference {w:.2e}");
        assert!(
            w > 0.0,
            "{part}: bf16 losses equal f32's: precision ignored?"
        );
        worst.insert(part, w);
    }
    assert!(worst["decoder"] <= 2e-3, "{worst:?}");
    assert!(worst["encoder"] <= 3e-2, "{worst:?}");
}

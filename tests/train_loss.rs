//! The training loss and its gradients against PyTorch (`scripts/fixtures_train.py`): the tiny
//! ADIFF on a batch of three examples with answers of different lengths, stage 2 (projection,
//! mappers and cross-projection trainable) and stage 3 (GPT-2 too). Tolerances: loss 1e-5
//! relative; every gradient within 1e-4 of the largest |gradient| of its tensor (+1e-7).

mod common;

use std::collections::HashMap;

use adiff::model::checkpoint::Checkpoint;
use adiff::model::config::AdiffConfig;
use adiff::train::model::{answer_loss, Batch, TrainableAdiff};
use candle_core::{DType, Device, Tensor};

const STAGE2: [&str; 5] = [
    "audio_encoder.projection",
    "caption_decoder.audio_project1",
    "caption_decoder.audio_project2",
    "caption_decoder.text_project",
    "caption_decoder.cross_project",
];

fn checkpoint() -> Checkpoint {
    Checkpoint::load_all(&common::tiny_checkpoint_parts()).unwrap()
}

fn fixture() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        common::fixture("train/loss_grads.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn batch(f: &HashMap<String, Tensor>) -> Batch {
    let ids = f["answer_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let lens = f["answer_lengths"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let answers: Vec<Vec<u32>> = ids
        .iter()
        .zip(&lens)
        .map(|(row, &n)| row[..n as usize].to_vec())
        .collect();
    Batch::new(
        f["emb1"].clone(),
        f["emb2"].clone(),
        f["prompt_ids"].to_dtype(DType::U32).unwrap(),
        &answers,
        AdiffConfig::tiny().text.pad_token_id,
    )
    .unwrap()
}

fn check_stage(stage: &str, trainable: &[String]) {
    let f = fixture();
    let ckpt = checkpoint();
    let t =
        TrainableAdiff::build(&ckpt, &AdiffConfig::tiny(), trainable, None, &Device::Cpu).unwrap();
    let b = batch(&f);
    let loss = answer_loss(&t.model, &b).unwrap();
    let ours = loss.to_scalar::<f32>().unwrap();
    let theirs = f[&format!("{stage}.loss")].to_vec1::<f32>().unwrap()[0];
    let rel = ((ours - theirs) / theirs).abs();
    println!("{stage}: loss ours {ours} torch {theirs} (rel {rel:.1e})");
    assert!(rel < 1e-5, "{stage} loss {ours} vs {theirs}");

    // Both candle's own backward and the one the trainer runs (weight gradients handed over
    // directly, `ops::backward`) must give torch's gradients.
    for (how, grads) in [
        ("candle backward", loss.backward().unwrap()),
        (
            "trainer backward",
            adiff::model::ops::backward(&loss).unwrap(),
        ),
    ] {
        check_grads(stage, how, &f, &t, &grads);
    }
}

fn check_grads(
    stage: &str,
    how: &str,
    f: &HashMap<String, Tensor>,
    t: &TrainableAdiff,
    grads: &candle_core::backprop::GradStore,
) {
    let prefix = format!("{stage}.grad.");
    let expected: HashMap<&str, &Tensor> = f
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n, v)))
        .collect();
    let mut worst = 0f32;
    for (name, var) in &t.vars {
        let want = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{stage}: torch has no gradient for {name}"));
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{stage}: no gradient reached {name}"));
        let scale = common::max_abs(want);
        let d = common::max_abs_diff(got, want);
        worst = worst.max(d / (scale + 1e-7));
        assert!(
            d <= 1e-4 * scale + 1e-7,
            "{stage}: gradient of {name} differs by {d} (largest |g| {scale})"
        );
    }
    // Every tensor torch trained is trainable here, and nothing else.
    assert_eq!(
        t.vars.len(),
        expected.len(),
        "{stage}: trainable sets differ"
    );
    println!(
        "{stage} ({how}): {} gradients, worst difference {worst:.2e} of the tensor's largest |g|",
        t.vars.len()
    );
}

#[test]
fn stage2_loss_and_gradients_match_pytorch() {
    let t: Vec<String> = STAGE2.iter().map(|s| s.to_string()).collect();
    check_stage("stage2", &t);
}

#[test]
fn stage3_loss_and_gradients_match_pytorch() {
    let mut t: Vec<String> = STAGE2.iter().map(|s| s.to_string()).collect();
    t.push("caption_decoder.gpt".into());
    check_stage("stage3", &t);
}

#[test]
fn htsat_cannot_be_trainable_in_stages_2_and_3() {
    let err = TrainableAdiff::build(
        &checkpoint(),
        &AdiffConfig::tiny(),
        &["audio_encoder".to_string()],
        None,
        &Device::Cpu,
    )
    .err()
    .expect("HTSAT prefix refused");
    assert!(err.to_string().contains("HTSAT"), "{err}");
    let err = TrainableAdiff::build(
        &checkpoint(),
        &AdiffConfig::tiny(),
        &["caption_decoder.nope".to_string()],
        None,
        &Device::Cpu,
    )
    .err()
    .expect("unknown prefix refused");
    assert!(err.to_string().contains("matches no tensor"), "{err}");
}

/// A checkpoint that stores `lm_head.weight` as a copy of `wte` (as the official one does)
/// trains them tied in stage 3, as PyTorch does, and exports the trained `wte` under both names.
#[test]
fn stored_head_copy_trains_tied() {
    let ckpt = checkpoint();
    let mut tensors: HashMap<String, Tensor> = ckpt
        .names()
        .map(|n| (n.to_string(), ckpt.get(n).unwrap().clone()))
        .collect();
    let wte = "caption_decoder.gpt.transformer.wte.weight";
    let head = "caption_decoder.gpt.lm_head.weight";
    tensors.insert(head.to_string(), tensors[wte].copy().unwrap());
    let with_head = Checkpoint::from_tensors("with_head", tensors);
    let mut trainable: Vec<String> = STAGE2.iter().map(|s| s.to_string()).collect();
    trainable.push("caption_decoder.gpt".into());
    let t = TrainableAdiff::build(
        &with_head,
        &AdiffConfig::tiny(),
        &trainable,
        None,
        &Device::Cpu,
    )
    .unwrap();
    assert!(t.tied_head);
    assert!(
        t.vars.iter().all(|(n, _)| n != head),
        "head must not be a separate tensor"
    );
    // Same loss and gradients as the tied fixture (the file's tolerances): the head's gradient
    // lands on wte, as torch's tied weight collects both.
    let f = fixture();
    let loss = answer_loss(&t.model, &batch(&f)).unwrap();
    let (got, want) = (
        loss.to_scalar::<f32>().unwrap(),
        f["stage3.loss"].to_vec1::<f32>().unwrap()[0],
    );
    assert!(((got - want) / want).abs() < 1e-5, "loss {got} vs {want}");
    for (how, grads) in [
        ("head copy, candle backward", loss.backward().unwrap()),
        (
            "head copy, trainer backward",
            adiff::model::ops::backward(&loss).unwrap(),
        ),
    ] {
        check_grads("stage3", how, &f, &t, &grads);
    }
    let out = t.tensors(&with_head).unwrap();
    assert_eq!(common::max_abs_diff(&out[head], &out[wte]), 0.0);
}

/// Starting from parts (HTSAT + GPT-2, no mappers): without `init_missing` the missing mapper
/// tensors are named; with it they are initialised, trainable, and the loss is finite.
#[test]
fn missing_trainable_tensors_are_initialised_on_request() {
    let parts = Checkpoint::load_all(&[
        common::fixture("htsat/htsat_tiny.ckpt"),
        common::fixture("gpt2/adiff_tiny.safetensors"),
    ])
    .unwrap();
    let trainable: Vec<String> = STAGE2.iter().map(|s| s.to_string()).collect();
    let err = TrainableAdiff::build(&parts, &AdiffConfig::tiny(), &trainable, None, &Device::Cpu)
        .err()
        .expect("missing mappers reported");
    assert!(
        err.to_string()
            .contains("audio_encoder.projection.linear1.weight is missing"),
        "{err}"
    );
    let t = TrainableAdiff::build(
        &parts,
        &AdiffConfig::tiny(),
        &trainable,
        Some(5),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(t.vars.len(), 107);
    // Seeded: the same seed gives the same initial values.
    let again = TrainableAdiff::build(
        &parts,
        &AdiffConfig::tiny(),
        &trainable,
        Some(5),
        &Device::Cpu,
    )
    .unwrap();
    for ((n, a), (_, b)) in t.vars.iter().zip(&again.vars) {
        assert_eq!(
            common::max_abs_diff(a.as_tensor(), b.as_tensor()),
            0.0,
            "{n}"
        );
    }
    let loss = answer_loss(&t.model, &batch(&fixture()))
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    // Frozen parts must still come from the checkpoint: a missing GPT-2 tensor is an error.
    let htsat_only = Checkpoint::load(common::fixture("htsat/htsat_tiny.ckpt")).unwrap();
    let e = TrainableAdiff::build(
        &htsat_only,
        &AdiffConfig::tiny(),
        &trainable,
        Some(5),
        &Device::Cpu,
    )
    .err()
    .expect("frozen GPT-2 missing")
    .to_string();
    assert!(
        e.contains("htsat_tiny.ckpt")
            && e.contains("caption_decoder.gpt.transformer.wte.weight is missing"),
        "{e}"
    );
}

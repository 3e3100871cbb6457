//! GPT-2 decoder against Hugging Face transformers (`GPT2LMHeadModel`, eager attention, f32).
//! Fixtures: `scripts/fixtures_gpt2.py` (random weights, fixed seeds).
//!
//! Tolerances: logits vs HF <= 1e-4 absolute; cached (incremental) logits vs our own full
//! recomputation <= 1e-5 absolute; greedy ids identical.

mod common;
use common::max_abs_diff;

use std::collections::HashMap;
use std::path::PathBuf;

use adiff::generate::{generate, FinishReason, GenerateOptions, SamplingOptions, Strategy};
use adiff::model::config::{AdiffConfig, Gpt2Config};
use adiff::model::gpt2::{Gpt2, WeightFormat};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;

const HF_TOL: f32 = 1e-4;
const CACHE_TOL: f32 = 1e-5;
/// Must equal LOGIT_STRIDE / STEP_LOGIT_STRIDE in scripts/fixtures_gpt2.py.
const LOGIT_STRIDE: usize = 13;
const STEP_LOGIT_STRIDE: usize = 101;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpt2")
        .join(name)
}

fn config(name: &str) -> Gpt2Config {
    let text = std::fs::read_to_string(fixture("configs.json")).unwrap();
    let all: HashMap<String, Gpt2Config> = serde_json::from_str(&text).unwrap();
    all[name].clone()
}

fn expected(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu).unwrap()
}

fn vb(name: &str) -> VarBuilder<'static> {
    // SAFETY: the fixture files are not modified while the tests run.
    unsafe {
        VarBuilder::from_mmaped_safetensors(&[fixture(name)], DType::F32, &Device::Cpu).unwrap()
    }
}

fn tiny() -> Gpt2 {
    Gpt2::load(
        vb("adiff_tiny.safetensors").pp("caption_decoder.gpt"),
        &config("tiny"),
    )
    .unwrap()
}

fn small(file: &str) -> Gpt2 {
    let vb = vb(file);
    let vb = if file.starts_with("adiff") {
        vb.pp("caption_decoder.gpt")
    } else {
        vb
    };
    Gpt2::load(vb, &config("small")).unwrap()
}

/// Every `stride`-th entry of the last dimension.
fn strided(t: &Tensor, stride: usize) -> Tensor {
    let n = t.dim(t.rank() - 1).unwrap();
    let idx: Vec<u32> = (0..n).step_by(stride).map(|i| i as u32).collect();
    let idx = Tensor::from_vec(idx.clone(), idx.len(), &Device::Cpu).unwrap();
    t.index_select(&idx, t.rank() - 1).unwrap()
}

fn ids_of(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap()
}

fn greedy_opts(n: usize, stop: Vec<u32>) -> GenerateOptions {
    GenerateOptions {
        strategy: Strategy::Greedy,
        max_new_tokens: n,
        stop_tokens: stop,
    }
}

#[test]
fn adiff_named_logits_match_hf() {
    let exp = expected("adiff_tiny_expected.safetensors");
    let logits = tiny().forward(&exp["forward.embeds"]).unwrap(); // [2, 7, V]
    let d_all = max_abs_diff(
        &strided(&logits, LOGIT_STRIDE),
        &exp["forward.logits_strided"],
    );
    let d_last = max_abs_diff(&logits.i((0, 6)).unwrap(), &exp["forward.logits_last_row0"]);
    println!("max |logits - HF|: strided {d_all:.2e}, full last row {d_last:.2e}");
    assert!(d_all <= HF_TOL && d_last <= HF_TOL, "{d_all} {d_last}");
}

#[test]
fn hub_layouts_and_untied_head_match_hf() {
    let exp = expected("small_expected.safetensors");
    for file in ["hub_lmhead.safetensors", "hub_base.safetensors"] {
        let d = max_abs_diff(
            &small(file).forward(&exp["embeds"]).unwrap(),
            &exp["logits_tied"],
        );
        println!("{file}: max |logits - HF| {d:.2e}");
        assert!(d <= HF_TOL, "{file}: {d}");
    }
    let d = max_abs_diff(
        &small("adiff_untied.safetensors")
            .forward(&exp["embeds"])
            .unwrap(),
        &exp["logits_untied"],
    );
    println!("adiff_untied: max |logits - HF| {d:.2e}");
    assert!(d <= HF_TOL, "untied: {d}");
}

#[test]
fn kv_cache_steps_equal_full_recomputation_and_hf() {
    let exp = expected("adiff_tiny_expected.safetensors");
    let model = tiny();
    let prefix = &exp["greedy.embeds"]; // [1, 9, C]
    let ids = ids_of(&exp["greedy.ids"]);
    let hf_steps = &exp["greedy.logits_strided"]; // [30, V/stride]
    let t = prefix.dim(1).unwrap();
    let (mut logits, mut cache) = model.start(prefix, None, t + ids.len()).unwrap();
    let mut seq = prefix.clone();
    let (mut worst_cache, mut worst_hf) = (0f32, 0f32);
    for (n, &id) in ids.iter().enumerate() {
        // Logits predicting token n: cached vs full recomputation vs HF generate's.
        let full = model.forward(&seq).unwrap(); // [1, T+n, V]
        let full_last = full.i((0, t + n - 1)).unwrap();
        worst_cache = worst_cache.max(max_abs_diff(&logits.i(0).unwrap(), &full_last));
        worst_hf = worst_hf.max(max_abs_diff(
            &strided(&logits.i(0).unwrap(), STEP_LOGIT_STRIDE),
            &hf_steps.i(n).unwrap(),
        ));
        let idx = Tensor::new(&[[id]], &Device::Cpu).unwrap();
        seq = Tensor::cat(&[&seq, &model.embed_ids(&idx).unwrap()], 1).unwrap();
        if n + 1 < ids.len() {
            logits = model.step(&[id], &mut cache).unwrap();
        }
    }
    println!("cached vs recomputed {worst_cache:.2e}, cached vs HF {worst_hf:.2e}");
    assert!(worst_cache <= CACHE_TOL, "{worst_cache}");
    assert!(worst_hf <= HF_TOL, "{worst_hf}");
}

#[test]
fn greedy_30_tokens_match_hf_generate() {
    let exp = expected("adiff_tiny_expected.safetensors");
    let want = ids_of(&exp["greedy.ids"]);
    let out = generate(
        &tiny(),
        &exp["greedy.embeds"],
        None,
        &greedy_opts(30, vec![]),
    )
    .unwrap();
    assert_eq!(out[0].ids, want);
    assert_eq!(out[0].finish, FinishReason::MaxNewTokens);
}

#[test]
fn padded_batch_matches_each_row_run_alone_in_hf() {
    let exp = expected("adiff_tiny_expected.safetensors");
    let model = tiny();
    let lengths: Vec<usize> = ids_of(&exp["padded.lengths"])
        .into_iter()
        .map(|l| l as usize)
        .collect();
    let embeds = &exp["padded.embeds"];
    let t = embeds.dim(1).unwrap();
    let (logits, _) = model.start(embeds, Some(&lengths), t).unwrap();
    let d = max_abs_diff(
        &strided(&logits, LOGIT_STRIDE),
        &exp["padded.logits_last_strided"],
    );
    println!("padded batch last logits vs HF rows alone: {d:.2e}");
    assert!(d <= HF_TOL, "{d}");
    let out = generate(&model, embeds, Some(&lengths), &greedy_opts(30, vec![])).unwrap();
    let want = exp["padded.ids"].to_dtype(DType::U32).unwrap();
    for (r, g) in out.iter().enumerate() {
        assert_eq!(
            g.ids,
            want.i(r).unwrap().to_vec1::<u32>().unwrap(),
            "row {r}"
        );
    }
}

#[test]
fn finished_rows_drop_out_without_changing_the_others() {
    let exp = expected("adiff_tiny_expected.safetensors");
    let lengths: Vec<usize> = ids_of(&exp["padded.lengths"])
        .into_iter()
        .map(|l| l as usize)
        .collect();
    let want: Vec<Vec<u32>> = (0..lengths.len())
        .map(|r| ids_of(&exp["padded.ids"].i(r).unwrap()))
        .collect();
    // Stop on a token that row 1 emits early; every row must equal HF's ids cut at that token.
    let stop = want[1][4];
    let out = generate(
        &tiny(),
        &exp["padded.embeds"],
        Some(&lengths),
        &greedy_opts(30, vec![stop]),
    )
    .unwrap();
    for (r, g) in out.iter().enumerate() {
        let cut = want[r].iter().position(|&i| i == stop);
        let expect = match cut {
            Some(c) => want[r][..=c].to_vec(),
            None => want[r].clone(),
        };
        assert_eq!(g.ids, expect, "row {r}");
        let reason = if cut.is_some() {
            FinishReason::Stop
        } else {
            FinishReason::MaxNewTokens
        };
        assert_eq!(g.finish, reason, "row {r}");
    }
}

#[test]
fn sampling_is_reproducible_per_seed() {
    let exp = expected("adiff_tiny_expected.safetensors");
    let model = tiny();
    let opts = |seed| GenerateOptions {
        strategy: Strategy::Sample(SamplingOptions {
            temperature: 0.8,
            top_k: Some(50),
            top_p: Some(0.9),
            seed,
        }),
        max_new_tokens: 25,
        stop_tokens: vec![],
    };
    let embeds = &exp["padded.embeds"];
    let lengths = [9, 4, 6];
    let a = generate(&model, embeds, Some(&lengths), &opts(42)).unwrap();
    let b = generate(&model, embeds, Some(&lengths), &opts(42)).unwrap();
    let c = generate(&model, embeds, Some(&lengths), &opts(43)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Row 0 of a batch equals a batch of one with the same seed.
    let row0 = embeds.narrow(0, 0, 1).unwrap();
    let single = generate(&model, &row0, None, &opts(42)).unwrap();
    assert_eq!(single[0], a[0]);
}

#[test]
fn position_limit_caps_generation_and_bad_inputs_are_errors() {
    let model = small("hub_base.safetensors");
    let cfg = config("small"); // n_positions 64
    let dev = Device::Cpu;
    let embeds = |t: usize| Tensor::randn(0f32, 1.0, (1, t, cfg.n_embd), &dev).unwrap();
    let opts = greedy_opts(300, vec![]);
    let out = generate(&model, &embeds(60), None, &opts).unwrap();
    assert_eq!(out[0].ids.len(), 4);
    assert_eq!(out[0].finish, FinishReason::PositionLimit);
    let out = generate(&model, &embeds(64), None, &opts).unwrap();
    assert!(out[0].ids.is_empty());
    let n = cfg.n_embd;
    for (what, want, r) in [
        (
            "too long",
            "prefix of 65 positions exceeds GPT-2's limit of 64".to_string(),
            generate(&model, &embeds(65), None, &opts),
        ),
        (
            "empty",
            format!("inputs_embeds must be [batch >= 1, time >= 1, {n}], got [1, 0, {n}]"),
            generate(&model, &embeds(0), None, &opts),
        ),
        (
            "wrong width",
            format!(
                "inputs_embeds must be [batch >= 1, time >= 1, {n}], got [1, 3, {}]",
                n + 1
            ),
            generate(
                &model,
                &Tensor::zeros((1, 3, n + 1), DType::F32, &dev).unwrap(),
                None,
                &opts,
            ),
        ),
        (
            "lengths count",
            "2 prefix lengths given for a batch of 1".to_string(),
            generate(&model, &embeds(5), Some(&[5, 5]), &opts),
        ),
        (
            "length zero",
            "prefix length 0 is outside 1..=5".to_string(),
            generate(&model, &embeds(5), Some(&[0]), &opts),
        ),
        (
            "length past T",
            "prefix length 6 is outside 1..=5".to_string(),
            generate(&model, &embeds(5), Some(&[6]), &opts),
        ),
    ] {
        let e = r.expect_err(what).to_string();
        println!("{what}: {e}");
        assert!(e.contains(&want), "{what}: {e}");
    }
    let e = model
        .step(
            &[cfg.vocab_size as u32],
            &mut model.start(&embeds(3), None, 8).unwrap().1,
        )
        .expect_err("out-of-vocabulary id must be an error")
        .to_string();
    assert!(
        e.contains(&format!(
            "token id {} is outside the GPT-2 vocabulary ({})",
            cfg.vocab_size, cfg.vocab_size
        )),
        "{e}"
    );
}

#[test]
fn reference_prefix_and_300_tokens_stay_within_positions() {
    // ADIFF shape: 121-token prefix, 300 new tokens, nothing stops early.
    let model = tiny();
    let cfg = config("tiny");
    let prefix = AdiffConfig::base().prefix_tokens();
    let embeds = Tensor::randn(0f32, 1.0, (1, prefix, cfg.n_embd), &Device::Cpu).unwrap();
    let out = generate(&model, &embeds, None, &greedy_opts(300, vec![])).unwrap();
    assert_eq!(out[0].ids.len(), 300);
    assert!(prefix + out[0].ids.len() <= cfg.n_positions);
}

#[test]
fn missing_weights_are_a_clear_error() {
    let e = Gpt2::load(vb("adiff_tiny.safetensors").pp("nope"), &config("tiny"))
        .expect_err("error")
        .to_string();
    assert!(e.contains("nope") && e.contains("wte"), "{e}");
}

#[test]
fn quantized_formats_need_block_aligned_widths() {
    // Q8_0 packs 32 values per block: the 12-wide test model cannot be quantized, and says so.
    let e = tiny()
        .with_weight_format(WeightFormat::Q8_0)
        .expect_err("12-wide Q8_0")
        .to_string();
    assert!(
        e.contains("Q8_0 weights need input widths divisible by 32, got 12"),
        "{e}"
    );
    // f16 weights work at any width and stay close to f32 here.
    let exp = expected("adiff_tiny_expected.safetensors");
    let f16 = tiny().with_weight_format(WeightFormat::F16).unwrap();
    let d = max_abs_diff(
        &f16.forward(&exp["forward.embeds"]).unwrap(),
        &tiny().forward(&exp["forward.embeds"]).unwrap(),
    );
    println!("f16 weights: max |logits - f32| {d:.2e}");
    assert!(d < 0.1, "{d}");
}

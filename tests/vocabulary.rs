//! A model with its own vocabulary (`text.vocabulary`, `adiff build-dataset vocabulary`).
//!
//! The check that the renumbering is right end to end: the tiny fixture model with its `wte`
//! cut to a few hundred rows (the reference's tokens among them) must explain the fixture clips
//! with exactly the text the PyTorch reference wrote for the full model
//! (`tests/fixtures/adiff/adiff_tiny_expected.json`, `scripts/fixtures_adiff.py`), and its
//! logits must be the full model's at the kept rows (<= 1e-5 abs: the same dot products).

mod common;
use common::{adiff, assert_one_line_error, fixture, ok, root, tiny_checkpoint_parts};

use std::collections::BTreeSet;
use std::path::Path;

use adiff::model::adiff::Adiff;
use adiff::model::checkpoint::Checkpoint;
use adiff::model::config::AdiffConfig;
use adiff::text::config::TextConfig;
use adiff::text::tokenizer::Gpt2Tokenizer;
use candle_core::{Device, IndexOp, Tensor};

const WTE: &str = "caption_decoder.gpt.transformer.wte.weight";
/// Every STRIDE-th GPT-2 id is kept besides the reference's, so that the argmax has rivals.
const STRIDE: u32 = 97;

fn temp_dir(tag: &str) -> common::Scratch {
    common::Scratch::new(&format!("adiff-test-{tag}"))
}

fn expected_row() -> serde_json::Value {
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("adiff/adiff_tiny_expected.json")).unwrap(),
    )
    .unwrap();
    j["rows"][0].clone()
}

/// The tiny config given `vocabulary` (GPT-2 ids, sorted), its special ids renumbered.
fn config_with(vocabulary: &[u32]) -> AdiffConfig {
    let mut cfg = AdiffConfig::tiny();
    let at = |id: u32| vocabulary.binary_search(&id).unwrap() as u32;
    let t = &mut cfg.text;
    (t.separator_token_id, t.pad_token_id) = (at(t.separator_token_id), at(t.pad_token_id));
    (t.stop_token_id, t.eos_token_id) = (at(t.stop_token_id), at(t.eos_token_id));
    t.vocabulary = Some(vocabulary.to_vec());
    cfg.gpt2.vocab_size = vocabulary.len();
    cfg.validate().unwrap();
    cfg
}

/// The fixture's GPT-2 part with `wte` cut to `vocabulary`'s rows, written to `path` (the
/// other tensors, HF's boolean attention masks among them, copied byte for byte).
fn trimmed_gpt2(vocabulary: &[u32], path: &Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = std::fs::read(fixture("gpt2/adiff_tiny.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let wte = st.tensor(WTE).unwrap();
    assert_eq!(wte.dtype(), Dtype::F32);
    let width = wte.shape()[1] * 4;
    let cut: Vec<u8> = vocabulary
        .iter()
        .flat_map(|&g| wte.data()[g as usize * width..(g as usize + 1) * width].to_vec())
        .collect();
    let mut views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != WTE)
        .collect();
    views.push((
        WTE.into(),
        TensorView::new(Dtype::F32, vec![vocabulary.len(), wte.shape()[1]], &cut).unwrap(),
    ));
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The reference's answer ids, its prompt's ids, the special ids and every STRIDE-th id.
fn fixture_vocabulary() -> Vec<u32> {
    let row = expected_row();
    let tok = Gpt2Tokenizer::bundled(&AdiffConfig::tiny().text).unwrap();
    let mut kept: BTreeSet<u32> = (0..50257).step_by(STRIDE as usize).collect();
    kept.extend(
        row["reference_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32),
    );
    kept.extend(tok.encode_prompt(row["prompt"].as_str().unwrap()).unwrap());
    kept.extend([50256, 0, 220]);
    kept.into_iter().collect()
}

#[test]
fn a_trimmed_model_explains_like_the_full_one() {
    let dir = temp_dir("vocabulary-explain");
    let vocabulary = fixture_vocabulary();
    let gpt2 = dir.join("gpt2.safetensors");
    trimmed_gpt2(&vocabulary, &gpt2);
    let cfg = config_with(&vocabulary);
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();

    // The logits of the prefix's last position: the full model's at the kept rows.
    let parts = tiny_checkpoint_parts();
    let full = Adiff::from_checkpoint(
        &Checkpoint::load_all(&parts).unwrap(),
        &AdiffConfig::tiny(),
        &Device::Cpu,
    )
    .unwrap();
    let trimmed_parts = vec![parts[0].clone(), gpt2.clone(), parts[2].clone()];
    let trimmed = Adiff::from_checkpoint(
        &Checkpoint::load_all(&trimmed_parts).unwrap(),
        &cfg,
        &Device::Cpu,
    )
    .unwrap();
    let x = Tensor::randn(
        0f32,
        1.0,
        (1, 5, AdiffConfig::tiny().gpt2.n_embd),
        &Device::Cpu,
    )
    .unwrap();
    let last = |m: &Adiff| m.gpt.forward(&x).unwrap().i((0, 4)).unwrap();
    let rows = Tensor::new(vocabulary.as_slice(), &Device::Cpu).unwrap();
    let want = last(&full).index_select(&rows, 0).unwrap();
    let got = last(&trimmed);
    let err = common::max_abs_diff(&got, &want);
    assert!(err <= 1e-5, "logits differ by {err}");

    // `adiff explain` with the trimmed model writes the reference's text, token for token.
    let row = expected_row();
    let mut args: Vec<String> = vec![
        "explain".into(),
        fixture("htsat/clip_a.wav").display().to_string(),
        fixture("htsat/clip_b.wav").display().to_string(),
    ];
    for p in &trimmed_parts {
        args.extend(["-c".into(), p.display().to_string()]);
    }
    args.extend(["--config".into(), cfg_path.display().to_string()]);
    args.extend(["--tier", "3", "--max-tokens", "30", "--json"].map(String::from));
    let o = ok(adiff(&args));
    common::assert_reference_answer(&o.stdout, &row);

    // A prompt with a word the vocabulary lacks: one line naming the token.
    let mut bad = args.clone();
    bad.truncate(args.len() - 5);
    bad.extend(["--prompt", "explain the difference in detail dogs"].map(String::from));
    assert_one_line_error(&adiff(&bad), "has no token \" dogs\"");

    // `infer`: a row whose prompt the model cannot read is skipped with its line (exit 2, as
    // for a missing audio file); the other row is explained as by `explain`.
    let csv = dir.join("pairs.csv");
    let audio = fixture("htsat");
    std::fs::write(
        &csv,
        format!(
            "{CSV_HEADER}\
             t,clip_a.wav,clip_b.wav,c1,c2,{},ref\n\
             t,clip_a.wav,clip_b.wav,c1,c2,explain the difference in detail dogs,ref\n",
            row["prompt"].as_str().unwrap()
        ),
    )
    .unwrap();
    let preds = dir.join("preds.csv");
    let mut infer: Vec<String> = vec!["infer".into(), csv.display().to_string()];
    infer.extend(["--audio-root".into(), audio.display().to_string()]);
    infer.extend([
        "-o".into(),
        preds.display().to_string(),
        "--max-tokens".into(),
        "30".into(),
    ]);
    infer.extend(args[3..args.len() - 5].iter().cloned());
    let o = adiff(&infer);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("skipped line 3:") && err.contains("has no token \" dogs\""),
        "{err}"
    );
    assert!(err.contains("1 pair(s) explained, 1 skipped"), "{err}");
    let written = std::fs::read_to_string(&preds).unwrap();
    assert!(
        written.contains(row["reference_text"].as_str().unwrap().trim()),
        "{written}"
    );

    // A config whose vocab_size disagrees with its vocabulary is refused, naming both.
    let mut wrong = cfg.clone();
    wrong.gpt2.vocab_size = 50257;
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&wrong).unwrap()).unwrap();
    let mut mismatched = args.clone();
    mismatched.truncate(args.len() - 5);
    assert_one_line_error(
        &adiff(&mismatched),
        &format!(
            "text.vocabulary has {} ids but gpt2.vocab_size is 50257",
            vocabulary.len()
        ),
    );
}

const CSV_HEADER: &str = "taskname,filepath1,filepath2,caption1,caption2,input,answer\n";

#[test]
fn build_dataset_vocabulary_keeps_every_token_of_its_csvs() {
    let dir = temp_dir("vocabulary-build");
    let csv = dir.join("train_sentence_answer.csv");
    let answers = [
        "The second audio is louder and a falling chirp instead of noise.",
        "The first audio is higher in pitch, pulsing instead of continuous.",
    ];
    let mut text = CSV_HEADER.to_string();
    for a in answers {
        text += &format!(
            "t,a.wav,b.wav,a quiet hum,a loud buzz,explain the difference in one sentence,\"{a}\"\n"
        );
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.join("config.json");
    let tiny = root().join("configs/tiny.json");
    let build = |force: bool| {
        let mut a: Vec<String> = vec!["build-dataset".into(), "vocabulary".into()];
        a.push(csv.display().to_string());
        a.extend(["--config".into(), tiny.display().to_string()]);
        a.extend(["-o".into(), out.display().to_string()]);
        if force {
            a.push("--force".into());
        }
        adiff(&a)
    };
    ok(build(false));
    let cfg = AdiffConfig::from_file(&out).unwrap();
    let vocabulary = cfg.text.vocabulary.clone().unwrap();
    assert_eq!(cfg.gpt2.vocab_size, vocabulary.len());
    assert!(
        vocabulary.windows(2).all(|w| w[0] < w[1]),
        "sorted, no repeats"
    );
    // The special ids point at the same GPT-2 tokens as before.
    let old = AdiffConfig::tiny().text;
    let gpt2_of = |id: u32| vocabulary[id as usize];
    assert_eq!(gpt2_of(cfg.text.separator_token_id), old.separator_token_id);
    assert_eq!(gpt2_of(cfg.text.pad_token_id), old.pad_token_id);
    assert_eq!(gpt2_of(cfg.text.stop_token_id), old.stop_token_id);
    assert_eq!(gpt2_of(cfg.text.eos_token_id), old.eos_token_id);

    // Every text of the CSV and every prompt of the database encodes and decodes back.
    let tok = Gpt2Tokenizer::bundled(&cfg.text).unwrap();
    let full = Gpt2Tokenizer::bundled(&old).unwrap();
    for a in answers.iter().chain(&["a quiet hum", "a loud buzz"]) {
        let ids = tok.encode(&format!("{a} <|endoftext|>")).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), format!("{a} <|endoftext|>"));
        let gpt2: Vec<u32> = ids.iter().map(|&i| gpt2_of(i)).collect();
        assert_eq!(gpt2, full.encode(&format!("{a} <|endoftext|>")).unwrap());
    }
    let db = adiff::text::prompts::PromptDatabase::bundled().unwrap();
    for kind in adiff::text::prompts::PromptKind::ALL {
        for p in db.prompts(kind) {
            tok.encode_prompt(p).unwrap();
        }
    }
    // Only what the texts need: under a thousand of GPT-2's 50257 (the prompts are most).
    assert!(vocabulary.len() < 1000, "{}", vocabulary.len());
    assert!(tok.encode("a loud dog").is_err());

    // Its output is not replaced without --force, and a config with a vocabulary is refused.
    let before = std::fs::read(&out).unwrap();
    assert_one_line_error(&build(false), "exists");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let again = dir.join("again.json");
    let o = adiff(&[
        "build-dataset",
        "vocabulary",
        &csv.display().to_string(),
        "--config",
        &out.display().to_string(),
        "-o",
        &again.display().to_string(),
    ]);
    assert_one_line_error(&o, "already has a text.vocabulary");
    assert!(!again.exists());
    ok(build(true));

    // A config whose special id is outside its vocabulary is refused, naming the field.
    let mut text: TextConfig = cfg.text.clone();
    text.stop_token_id = vocabulary.len() as u32;
    let e = text.validate().unwrap_err().to_string();
    assert!(e.contains("text.stop_token_id"), "{e}");
}

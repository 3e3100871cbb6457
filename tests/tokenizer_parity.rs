//! The GPT-2 tokenizer with ADIFF's `!` pad token against Hugging Face transformers
//! (`GPT2TokenizerFast` + `add_special_tokens({'pad_token': '!'})`, whose ids the fixture script
//! also checked against the pure-Python `GPT2Tokenizer`). Fixtures: `scripts/fixtures_gpt2.py`.
//! Exact equality: ids and strings must match byte for byte.

use std::path::PathBuf;

use adiff::model::config::AdiffConfig;
use adiff::text::tokenizer::Gpt2Tokenizer;
use serde_json::Value;

fn cases() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2/tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer fixture");
    serde_json::from_str(&text).expect("valid JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn tokenizers() -> Vec<(&'static str, Gpt2Tokenizer)> {
    let text = AdiffConfig::base().text;
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/gpt2/tokenizer.json");
    vec![
        ("bundled", Gpt2Tokenizer::bundled(&text).unwrap()),
        ("file", Gpt2Tokenizer::from_file(file, &text).unwrap()),
    ]
}

#[test]
fn ids_prompts_and_decoding_match_hf() {
    let doc = cases();
    let cases = doc["cases"].as_array().unwrap();
    let answers = cases.iter().filter(|c| c["kind"] == "answer").count();
    assert_eq!(answers, 200, "the fixture holds 200 ACD answers");
    assert_eq!(
        doc["prompt_length"].as_u64().unwrap() as usize,
        AdiffConfig::base().text.prompt_length
    );
    for (name, tok) in tokenizers() {
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let want = ids(&c["ids"]);
            assert_eq!(tok.encode(text).unwrap(), want, "{name}: ids of {text:?}");
            assert_eq!(
                tok.encode_prompt(text).unwrap(),
                ids(&c["prompt_ids"]),
                "{name}: prompt ids of {text:?}"
            );
            assert_eq!(tok.decode(&want).unwrap(), c["decoded"].as_str().unwrap());
            assert_eq!(
                tok.decode_clean(&want).unwrap(),
                c["decoded_clean"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn generated_ids_decode_like_hf() {
    let doc = cases();
    for (_, tok) in tokenizers() {
        for g in doc["generated"].as_array().unwrap() {
            let want = ids(&g["ids"]);
            assert_eq!(tok.decode(&want).unwrap(), g["decoded"].as_str().unwrap());
            assert_eq!(
                tok.decode_clean(&want).unwrap(),
                g["decoded_clean"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn missing_tokenizer_file_is_a_clear_error() {
    let e = Gpt2Tokenizer::from_file("/nonexistent/tokenizer.json", &AdiffConfig::base().text)
        .err()
        .expect("error")
        .to_string();
    assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");
}

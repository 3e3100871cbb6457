//! The bundled user-prompt database (paper appendix H) and the loader's handling of bad user
//! files. The default prompts are compared with the `input` column of the released ACD/CLD
//! validation CSVs (`data/samples/`), so they are checked against the official data, not against
//! strings copied into this test.

use std::collections::BTreeSet;
use std::path::PathBuf;

mod common;

use adiff::model::config::AdiffConfig;
use adiff::text::prompts::{PromptDatabase, PromptKind};
use adiff::AdiffError;
use rand::rngs::StdRng;
use rand::SeedableRng;

use common::root;

/// Appendix H: "about 100 sample user inputs per output tier".
const MIN_PROMPTS_PER_LIST: usize = 90;

fn tmp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adiff-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Splits one CSV row (RFC 4180 quoting, no embedded newlines in these files) into fields.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// The distinct values of the `input` column of one released CSV.
fn csv_inputs(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("data/samples").join(file)).unwrap();
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap());
    let col = header.iter().position(|h| h == "input").unwrap();
    lines
        .map(|l| {
            let f = csv_fields(l);
            assert_eq!(f.len(), header.len(), "{file}: bad row {l:?}");
            f[col].clone()
        })
        .collect()
}

#[test]
fn bundled_database_loads_with_enough_prompts() {
    let db = PromptDatabase::bundled().unwrap();
    for kind in PromptKind::ALL {
        let n = db.prompts(kind).len();
        assert!(n >= MIN_PROMPTS_PER_LIST, "{kind}: only {n} prompts");
    }
}

#[test]
fn default_prompts_are_the_released_strings() {
    let db = PromptDatabase::bundled().unwrap();
    let cases = [
        (
            PromptKind::Tier(1),
            &[
                "acd_val_adiff_fewwords_answer.csv",
                "cld_validation_adiff_fewwords_answer.csv",
            ][..],
        ),
        (
            PromptKind::Tier(2),
            &[
                "acd_val_adiff_sentence_answer.csv",
                "cld_validation_adiff_sentence_answer.csv",
            ][..],
        ),
        (
            PromptKind::Tier(3),
            &["acd_val_adiff_detail_answer.csv"][..],
        ),
    ];
    for (kind, files) in cases {
        for file in files {
            let inputs = csv_inputs(file);
            assert_eq!(inputs.len(), 1, "{file}: several prompts {inputs:?}");
            assert_eq!(db.default_prompt(kind), inputs.first().unwrap(), "{file}");
        }
    }
    // Section 5.4 quotes the position-captioning prompts; no CSV of them is released.
    assert_eq!(
        db.default_prompt(PromptKind::CaptionFirst),
        "caption the first audio"
    );
    assert_eq!(
        db.default_prompt(PromptKind::CaptionSecond),
        "caption the second audio"
    );
    // And the exact strings the task names for the tiers.
    assert_eq!(
        db.default_prompt(PromptKind::Tier(1)),
        "explain the difference in few words"
    );
    assert_eq!(
        db.default_prompt(PromptKind::Tier(2)),
        "explain the difference in a sentence"
    );
    assert_eq!(
        db.default_prompt(PromptKind::Tier(3)),
        "explain the difference in detail"
    );
}

#[test]
fn bundled_includes_paper_table8_examples() {
    let db = PromptDatabase::bundled().unwrap();
    let table8 = [
        (
            1,
            "Summarize the differences between the two audios briefly.",
        ),
        (
            1,
            "Highlight the main differences between the two audio tracks.",
        ),
        (1, "Provide a concise comparison of the two audios."),
        (
            2,
            "Explain the contrast between the two audio pieces in one long sentence.",
        ),
        (
            2,
            "In one elaborate sentence, summarize the differences between both audio files.",
        ),
        (
            2,
            "Describe the variation between the two audio tracks in one extended sentence.",
        ),
        (3, "Explain the difference between both audios in detail."),
        (
            3,
            "Could you elaborate on the distinctions between the two audio tracks?",
        ),
        (
            3,
            "Please provide a detailed comparison of both audio files.",
        ),
    ];
    for (tier, prompt) in table8 {
        let kind = PromptKind::tier(tier).unwrap();
        assert!(
            db.prompts(kind).iter().any(|p| p == prompt),
            "{kind} lacks {prompt:?}"
        );
    }
}

/// Every bundled prompt plus " <|endoftext|>" must fit the text prefix without truncation.
/// Counted with the shipped GPT-2 tokenizer, the same file the Python check used
/// (`GPT2TokenizerFast`, longest prompt 24 tokens with the suffix).
#[test]
fn bundled_prompts_fit_the_prompt_length() {
    let cfg = AdiffConfig::base();
    let tok = tokenizers::Tokenizer::from_file(root().join("data/gpt2/tokenizer.json")).unwrap();
    let db = PromptDatabase::bundled().unwrap();
    let mut longest = (0, String::new());
    for kind in PromptKind::ALL {
        for p in db.prompts(kind) {
            let text = format!("{p} <|endoftext|>");
            let n = tok.encode(text.as_str(), false).unwrap().len();
            assert!(
                n <= cfg.text.prompt_length,
                "{kind}: {p:?} is {n} tokens (limit {})",
                cfg.text.prompt_length
            );
            if n > longest.0 {
                longest = (n, p.clone());
            }
        }
    }
    // Same count as the Python tokenizer gave for the longest prompt.
    assert_eq!(longest.0, 24, "longest prompt {:?}", longest.1);
}

#[test]
fn caption_prompts_name_their_position() {
    let db = PromptDatabase::bundled().unwrap();
    let first = [
        "first",
        "audio 1",
        "audio one",
        "1st",
        "number one",
        "number 1",
        "earlier",
    ];
    let second = [
        "second",
        "audio 2",
        "audio two",
        "2nd",
        "number two",
        "number 2",
        "later",
    ];
    for (kind, words) in [
        (PromptKind::CaptionFirst, &first),
        (PromptKind::CaptionSecond, &second),
    ] {
        for p in db.prompts(kind) {
            let lower = p.to_lowercase();
            assert!(
                words.iter().any(|w| lower.contains(w)),
                "{kind}: {p:?} names no position"
            );
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_varied() {
    let db = PromptDatabase::bundled().unwrap();
    for kind in PromptKind::ALL {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| db.sample(kind, &mut rng).to_string())
                .collect::<Vec<_>>()
        };
        let a = draw(2025);
        assert_eq!(a, draw(2025), "{kind}: same seed, different draws");
        assert_ne!(a, draw(2026), "{kind}: different seeds, same draws");
        let distinct: BTreeSet<&String> = a.iter().collect();
        assert!(
            distinct.len() > 1,
            "{kind}: sampling always gave {:?}",
            a[0]
        );
        assert!(a.iter().all(|p| db.prompts(kind).contains(p)));
    }
}

#[test]
fn user_file_round_trips() {
    let json = r#"{"tier1": ["short please", "brief"], "tier2": ["one sentence"],
        "tier3": ["in detail"], "caption_first": ["describe audio 1"],
        "caption_second": ["describe audio 2"]}"#;
    let db = PromptDatabase::from_file(tmp_file("good.json", json)).unwrap();
    assert_eq!(db.default_prompt(PromptKind::Tier(1)), "short please");
    assert_eq!(db.prompts(PromptKind::Tier(1)).len(), 2);
    assert_eq!(
        db.default_prompt(PromptKind::CaptionSecond),
        "describe audio 2"
    );
}

/// Loads a user file and returns the error message, checking it is `Invalid`, one line, and
/// names the file.
fn load_error(name: &str, json: &str) -> String {
    let path = tmp_file(name, json);
    let err = PromptDatabase::from_file(&path).unwrap_err();
    assert!(matches!(err, AdiffError::Invalid(_)), "{name}: {err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{name}: multi-line error {msg:?}");
    assert!(
        msg.contains(name),
        "{name}: error does not name the file: {msg}"
    );
    msg
}

fn with_tier2(tier2: &str) -> String {
    format!(
        r#"{{"tier1": ["a"], "tier2": {tier2}, "tier3": ["c"],
            "caption_first": ["d"], "caption_second": ["e"]}}"#
    )
}

#[test]
fn bad_user_files_give_named_errors() {
    let msg = load_error("empty.json", &with_tier2("[]"));
    assert!(msg.contains("\"tier2\" is empty"), "{msg}");

    let msg = load_error("bang.json", &with_tier2(r#"["fine", "tell me now!"]"#));
    assert!(
        msg.contains("\"tier2\"") && msg.contains("\"tell me now!\"") && msg.contains("'!'"),
        "{msg}"
    );

    let msg = load_error("dup.json", &with_tier2(r#"["x", "y", "x"]"#));
    assert!(
        msg.contains("\"tier2\"") && msg.contains("\"x\" appears twice"),
        "{msg}"
    );

    let missing = r#"{"tier1": ["a"], "tier2": ["b"], "tier3": ["c"], "caption_first": ["d"]}"#;
    let msg = load_error("missing.json", missing);
    assert!(msg.contains("missing field `caption_second`"), "{msg}");

    let unknown = r#"{"tier1": ["a"], "tier2": ["b"], "tier3": ["c"], "tier4": ["z"],
        "caption_first": ["d"], "caption_second": ["e"]}"#;
    let msg = load_error("unknown.json", unknown);
    assert!(msg.contains("unknown field `tier4`"), "{msg}");

    let msg = load_error("notjson.json", "tier1: [a]");
    assert!(msg.contains("prompt database"), "{msg}");

    let msg = load_error("wrongtype.json", &with_tier2(r#""one sentence""#));
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn missing_user_file_is_named() {
    let path = std::env::temp_dir().join("adiff-prompts-does-not-exist.json");
    let msg = PromptDatabase::from_file(&path).unwrap_err().to_string();
    assert!(msg.contains("adiff-prompts-does-not-exist.json"), "{msg}");
}

//! The shipped demo model (`data/models/demo`, trained by `scripts/train_demo.sh`): the README's
//! main-job command works on the bundled clips, and on 200 held-out synthetic pairs (seed 2, a
//! seed no training split uses) `adiff eval --synthetic` gives at least 80% on loudness and
//! pitch and 70% on source kind, at tiers 1 and 2 (issue 7), and meets issue 33's goals at
//! tiers 1, 2 and 3 ([`GOALS`], [`ALL_NAMED_BAR`]; tier 3 is held to [`DETAIL_FLOOR`], at or
//! above the goals); with `--dtype f16` and `--dtype i8` every attribute's accuracy stays within
//! 2 points of f32's (see [`DTYPE_TOLERANCE`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, root, Scratch};

/// Held-out pairs and their seed (the training splits use seeds 1, 3, 4; stage 3 remixes only
/// training and pool clips).
const TEST_PAIRS: &str = "200";
const TEST_SEED: &str = "2";
/// The bar of issue 7, per attribute (fraction of the predictions that assert it).
const BAR: [(&str, f64); 3] = [("loudness", 0.8), ("pitch", 0.8), ("source kind", 0.7)];
/// Issue 33's goals, per attribute: precision and recall at least these (f32, tiers 1 and 2).
/// Measured (2026-12-07, fifth session, AVX-512 Xeon), tier 1 / tier 2: loudness 98.7/96.2,
/// 98.7/97.4; pitch 100/100, 100/100; source kind 92.0/89.6, 92.1/90.9; pattern and background
/// 98.7-100 (docs/demo-model.md).
const GOALS: [(&str, f64, f64); 5] = [
    ("loudness", 0.9, 0.85),
    ("pitch", 0.9, 0.85),
    ("source kind", 0.9, 0.85),
    ("pattern", 0.7, 0.7),
    ("background", 0.7, 0.7),
];
/// Issue 33: every difference of a pair named in at least this share of the differing pairs
/// (measured 95.0% / 96.5% at tiers 1 / 2).
const ALL_NAMED_BAR: f64 = 0.7;
/// Tier 3 (f32), precision and recall per attribute: the larger of issue 33's goal and a floor
/// about 5 points under what the shipped model measured, so that a model or decoder that
/// paragraphs worse fails while a few rows more or less do not. Measured (2026-12-07, fifth
/// session, AVX-512 Xeon): loudness 98.0/94.9, pitch 100/100, source kind 95.0/88.3, pattern
/// 99.5/98.7, background 100/100.
const DETAIL_FLOOR: [(&str, f64, f64); 5] = [
    ("loudness", 0.93, 0.9),
    ("pitch", 0.95, 0.95),
    ("source kind", 0.9, 0.85),
    ("pattern", 0.95, 0.94),
    ("background", 0.95, 0.95),
];
/// Tier 3: every difference of a pair named, floor (as [`DETAIL_FLOOR`]; measured 94.0%).
const DETAIL_ALL_NAMED_FLOOR: f64 = 0.89;
/// Largest accuracy change a reduced weight format may cause, per attribute. Issue 29's goal is
/// 1 point; measured (2026-12-06) on the demo shipped until that evening: f16 changed no row, i8
/// one row of 200 at tier 2, which moved pitch by 1.2 points (one claim of about 80); on the demo
/// shipped from that evening: f16 no row, i8 one row, no cell moved; on the demo shipped since
/// 2026-12-07 (log bands): f16 no row, i8 one row of 400. A broken kernel or file format moves
/// far more.
const DTYPE_TOLERANCE: f64 = 0.02;
/// Reduced formats checked against f32.
const DTYPES: [&str; 2] = ["f16", "i8"];

fn adiff() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adiff"));
    // The shipped models of this tree, whatever the environment says.
    c.env_remove("ADIFF_MODELS").current_dir(root());
    c
}

/// `adiff explain --model demo` on the two example clips with `extra` options (must succeed).
fn explain_examples(extra: &[&str]) -> std::process::Output {
    ok(adiff()
        .args([
            "explain",
            "--model",
            "demo",
            "data/examples/demo_first.wav",
            "data/examples/demo_second.wav",
        ])
        .args(extra)
        .output()
        .unwrap())
}

/// The README's main job, scored against the example clips' true attributes
/// (`data/examples/truth.jsonl`, the generator's record of the pair): at tiers 1, 2 and 3 every
/// claim the answer makes is right and every attribute in which the clips differ (loudness and
/// source kind) is named (issue 33: the demo names every difference). A substring check would
/// pass any tier-2-shaped sentence.
#[test]
fn main_job_command_explains_the_bundled_clips() {
    use adiff::data::synthetic::Attribute;
    use adiff::metrics::synthetic::{parse_explanation, read_truth, truth_claim};
    let truth = read_truth(&root().join("data/examples/truth.jsonl")).unwrap();
    let (first, second) = (&truth["demo_first.wav"], &truth["demo_second.wav"]);
    let explain = |tier: &str| {
        let out = explain_examples(&["--tier", tier]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let wrong_claims = |text: &str| -> Vec<String> {
        let claims = parse_explanation(text);
        Attribute::ALL
            .iter()
            .flat_map(|&a| {
                let want = truth_claim(a, first, second);
                claims
                    .of(a)
                    .iter()
                    .filter(move |c| **c != want)
                    .map(move |c| format!("{a:?}: {c:?}, truth {want:?}"))
            })
            .collect()
    };
    let differing: Vec<Attribute> = Attribute::ALL
        .into_iter()
        .filter(|&a| first.value_index(a) != second.value_index(a))
        .collect();
    assert_eq!(
        differing,
        [Attribute::Loudness, Attribute::Kind],
        "the example pair changed"
    );
    let tier2 = explain("2");
    assert!(
        tier2.starts_with("The second audio is"),
        "not tier 2: {tier2}"
    );
    // Tier 3, the CLI's default: a paragraph (both captions, then the differences), and no
    // notice, since the demo was trained on it.
    let out = explain_examples(&[]);
    let tier3 = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("note:"), "{err}");
    assert!(
        tier3.starts_with("The first audio is") && tier3.matches(". ").count() >= 2,
        "not tier 3: {tier3}"
    );
    for text in [tier3, tier2, explain("1")] {
        assert_eq!(wrong_claims(&text), Vec::<String>::new(), "{text}");
        let claims = parse_explanation(&text);
        let missed: Vec<&Attribute> = differing
            .iter()
            .filter(|&&a| claims.of(a).is_empty())
            .collect();
        assert!(missed.is_empty(), "{missed:?} not named: {text}");
    }
}

/// `adiff infer` of the test split's `tier` CSV in `dir` with the demo model; the predictions' path.
fn infer(dir: &Path, tier: &str, dtype: &str, max_tokens: &str) -> PathBuf {
    let out = dir.join(format!("preds_{tier}_{dtype}.csv"));
    ok(adiff()
        .arg("infer")
        .arg(dir.join(format!("test_{tier}_answer.csv")))
        .arg("--audio-root")
        .arg(dir)
        .args([
            "--model",
            "demo",
            "--max-tokens",
            max_tokens,
            "--dtype",
            dtype,
        ])
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap());
    out
}

/// `adiff eval --synthetic` of `preds` against `dir`'s truth; its JSON report's files, in order.
fn eval_synthetic<'a>(
    dir: &Path,
    preds: impl IntoIterator<Item = &'a PathBuf>,
    name: &str,
) -> Vec<serde_json::Value> {
    let report = dir.join(name);
    ok(adiff()
        .args(["eval", "--synthetic"])
        .arg(dir.join("truth.jsonl"))
        .args(preds)
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    v["files"].as_array().unwrap().clone()
}

/// An attribute's entry in one file of an `eval --synthetic` report.
fn attribute<'a>(file: &'a serde_json::Value, attr: &str) -> &'a serde_json::Value {
    file["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attribute"] == attr)
        .unwrap()
}

/// Precision (0 when nothing was asserted) and the number of answers asserting `attr`.
fn accuracy(file: &serde_json::Value, attr: &str) -> (f64, u64) {
    let a = attribute(file, attr);
    (
        a["accuracy"].as_f64().unwrap_or(0.0),
        a["asserted"].as_u64().unwrap(),
    )
}

/// Recall (0 when no pair differs in `attr`).
fn recall_of(file: &serde_json::Value, attr: &str) -> f64 {
    attribute(file, attr)["recall"].as_f64().unwrap_or(0.0)
}

/// Where `file` falls under `bars` (precision, recall per attribute) or `all_named` ("all
/// differences named"), one line each; `what` names the bars in the lines.
fn below(
    file: &serde_json::Value,
    bars: &[(&str, f64, f64)],
    all_named: f64,
    what: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for &(attr, precision, recall) in bars {
        let (acc, _) = accuracy(file, attr);
        let rec = recall_of(file, attr);
        if acc < precision || rec < recall {
            failures.push(format!(
                "{}: {attr} precision {acc:.3} ({what} {precision}), recall {rec:.3} ({what} {recall})",
                file["file"]
            ));
        }
    }
    let all = file["all_named_rate"].as_f64().unwrap_or(0.0);
    if all < all_named {
        failures.push(format!(
            "{}: all named {all:.3} < {all_named}",
            file["file"]
        ));
    }
    failures
}

#[test]
fn held_out_pairs_clear_the_bar() {
    let dir = Scratch::new("adiff-demo-model");
    ok(adiff()
        .args([
            "build-dataset",
            "synthetic",
            "--count",
            TEST_PAIRS,
            "--seed",
            TEST_SEED,
            "--split",
            "test",
            "-o",
        ])
        .arg(&dir)
        .output()
        .unwrap());
    // Predictions of each tier, in f32 (the default) and each reduced format.
    let mut preds: Vec<(&str, PathBuf)> = Vec::new();
    for dtype in std::iter::once("f32").chain(DTYPES) {
        for tier in ["fewwords", "sentence"] {
            preds.push((dtype, infer(&dir, tier, dtype, "40")));
        }
    }
    let files = eval_synthetic(&dir, preds.iter().map(|(_, p)| p), "eval.json");
    assert_eq!(files.len(), preds.len());
    let mut failures = Vec::new();
    // Files are in the order given: f32's two tiers first, then each dtype's.
    for (i, file) in files.iter().enumerate() {
        assert_eq!(file["rows"], 200);
        let (dtype, path) = &preds[i];
        let f32_file = &files[i % 2];
        if *dtype == "f32" {
            failures.extend(below(file, &GOALS, ALL_NAMED_BAR, "goal"));
        }
        for (attr, bar) in BAR {
            let (acc, asserted) = accuracy(file, attr);
            assert!(asserted >= 20, "{attr}: too few claims");
            if *dtype == "f32" && acc < bar {
                failures.push(format!("{}: {attr} {acc:.3} < {bar}", file["file"]));
            }
            let (acc32, _) = accuracy(f32_file, attr);
            if (acc - acc32).abs() > DTYPE_TOLERANCE {
                failures.push(format!("{dtype}: {attr} {acc:.3} vs f32 {acc32:.3}"));
            }
        }
        // Reported, not asserted: how often the reduced format's text is f32's exactly.
        let text = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
        let (ours, base) = (text(path), text(&preds[i % 2].1));
        let same = ours
            .lines()
            .zip(base.lines())
            .filter(|(a, b)| a == b)
            .count();
        eprintln!(
            "{dtype} {}: {same}/{} rows identical to f32",
            path.display(),
            base.lines().count()
        );
    }
    // Tier 3 (f32): paragraphs decoded with up to 128 tokens, as scripts/train_demo.sh does.
    let detail = infer(&dir, "detail", "f32", "128");
    let files = eval_synthetic(&dir, [&detail], "eval_detail.json");
    assert_eq!(files[0]["rows"], 200);
    failures.extend(below(
        &files[0],
        &DETAIL_FLOOR,
        DETAIL_ALL_NAMED_FLOOR,
        "floor",
    ));
    assert!(failures.is_empty(), "{failures:?}");
}

/// Mono PCM16 32 kHz WAV data chunk of a bundled example clip.
fn example_pcm(name: &str) -> Vec<u8> {
    let b = std::fs::read(root().join("data/examples").join(name)).unwrap();
    let at = b.windows(4).position(|w| w == b"data").unwrap();
    let n = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
    b[at + 8..at + 8 + n].to_vec()
}

/// `explain --window` on two long files made of the example clips (A = first, second, first;
/// B = second, first, second, first): as many pairs as the shorter file has windows (3), each
/// pair's answer exactly the answer `explain` gives for those two 10 s clips, with its spans, and
/// with --events those clips' events on the files' time axes; sampled answers do not depend on
/// --batch-size.
#[test]
fn explain_window_explains_each_pair_of_windows() {
    let dir = Scratch::new("adiff-demo-window");
    std::fs::create_dir_all(&dir).unwrap();
    let (f, s) = (
        example_pcm("demo_first.wav"),
        example_pcm("demo_second.wav"),
    );
    let (a, b) = (dir.join("a.wav"), dir.join("b.wav"));
    common::write_pcm16_wav(&a, &[f.clone(), s.clone(), f.clone()].concat());
    common::write_pcm16_wav(&b, &[s.clone(), f.clone(), s.clone(), f.clone()].concat());
    let run = |args: &[&str]| -> serde_json::Value {
        let out = ok(adiff()
            .args(["explain", "--model", "demo", "--tier", "2", "--json"])
            .args(args)
            .output()
            .unwrap());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let single = |x: &str, y: &str| -> String {
        let v = run(&[&format!("data/examples/{x}"), &format!("data/examples/{y}")]);
        v["answers"][0]["explanation"].as_str().unwrap().to_string()
    };
    let fs = single("demo_first.wav", "demo_second.wav");
    let sf = single("demo_second.wav", "demo_first.wav");
    assert_ne!(fs, sf);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let v = run(&[a, b, "--window", "10"]);
    let w = v["windows"].as_array().unwrap();
    assert_eq!(w.len(), 3, "{v}");
    assert_eq!(v["duration_s"], serde_json::json!([30.0, 40.0]));
    for (i, want) in [&fs, &sf, &fs].iter().enumerate() {
        let t = i as f64 * 10.0;
        assert_eq!(w[i]["audio1_s"], serde_json::json!([t, t + 10.0]));
        assert_eq!(w[i]["audio2_s"], serde_json::json!([t, t + 10.0]));
        assert_eq!(
            w[i]["answers"][0]["explanation"].as_str().unwrap(),
            want.as_str(),
            "window {i}"
        );
    }
    // --events: each window's events are those of `explain --events` on its two clips, with
    // the spans moved to the window's place in its file.
    let ev = run(&[a, b, "--window", "10", "--events"]);
    for (i, (x, y)) in [
        ("first", "second"),
        ("second", "first"),
        ("first", "second"),
    ]
    .iter()
    .enumerate()
    {
        let one = run(&[
            &format!("data/examples/demo_{x}.wav"),
            &format!("data/examples/demo_{y}.wav"),
            "--events",
        ]);
        let t = i as f64 * 10.0;
        for side in 0..2 {
            let (got, want) = (
                ev["windows"][i]["events"][side].as_array().unwrap(),
                one["events"][side].as_array().unwrap(),
            );
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g["label"], w["label"]);
                assert_eq!(g["probability"], w["probability"]);
                let (gs, ws) = (
                    g["spans"].as_array().unwrap(),
                    w["spans"].as_array().unwrap(),
                );
                assert_eq!(gs.len(), ws.len(), "window {i} side {side}: {g} vs {w}");
                for (x, y) in gs.iter().zip(ws) {
                    for k in 0..2 {
                        let d = x[k].as_f64().unwrap() - y[k].as_f64().unwrap() - t;
                        assert!(d.abs() < 1e-3, "window {i}: span {x} vs {y} + {t}");
                    }
                }
            }
        }
    }
    let sampled = |batch: &str| {
        let v = run(&[
            a,
            b,
            "--window",
            "10",
            "--sample",
            "--seed",
            "5",
            "--temperature",
            "1.5",
            "--batch-size",
            batch,
        ]);
        v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["answers"][0]["explanation"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(sampled("1"), sampled("4"));
}

/// A model whose config says it was trained on tiers 1 and 2 (the demo's weights under a config
/// that says so): the default tier 3 gets a one-line notice on stderr and still an answer; tiers
/// 1 and 2, and a prompt of one's own, get none.
#[test]
fn a_tier_the_model_was_not_trained_on_gets_a_notice() {
    let dir = Scratch::new("adiff-demo-tiers");
    std::fs::create_dir_all(&dir).unwrap();
    let demo = root().join("data/models/demo");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.join("config.json")).unwrap()).unwrap();
    cfg["text"]["trained_tiers"] = serde_json::json!([1, 2]);
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let run = |extra: &[&str]| {
        let out = ok(adiff()
            .args(["explain", "-c"])
            .arg(demo.join("model.safetensors"))
            .arg("--config")
            .arg(&cfg_path)
            .args([
                "data/examples/demo_first.wav",
                "data/examples/demo_second.wav",
            ])
            .args(extra)
            .output()
            .unwrap());
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let (answer, err) = run(&[]);
    assert!(!answer.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("trained on tiers 1 and 2 only; its tier-3 answers"),
        "{err}"
    );
    for extra in [
        &["--tier", "1"][..],
        &["--tier", "2"],
        &["--prompt", "How do they differ?"],
    ] {
        let (_, err) = run(extra);
        assert!(!err.contains("note:"), "{extra:?}: {err}");
    }
}

//! Parity of the coco-caption metrics with pycocoevalcap 1.2 (Java PTBTokenizer, Bleu, Rouge,
//! Cider = CIDEr-D) and aac-metrics 0.6.0 (cider_d), on fixtures made by
//! `scripts/fixtures_metrics.py` from the shared ADIFF CSVs.
//!
//! Tolerances: corpus scores within 1e-6 (absolute) of the Python values, per-item scores (the
//! scorers' per-item arrays) within 1e-9; the tokenizer must give the Java output on at least
//! 99.9% of the real sentences (every difference is printed).

use std::path::PathBuf;

use adiff::metrics::{
    score_corpus, score_tokenized, score_tokenized_items, tokenize::coco_tokenize, MetricsConfig,
};
use serde_json::Value;

const SCORE_TOL: f64 = 1e-6;
const ITEM_TOL: f64 = 1e-9;
const MIN_TOKENIZER_AGREEMENT: f64 = 0.999;

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .expect("array of [raw, tokenized]")
        .iter()
        .map(|p| {
            (
                p[0].as_str().expect("raw").to_string(),
                p[1].as_str().expect("tokenized").to_string(),
            )
        })
        .collect()
}

/// One scored case: raw and Java-tokenized predictions and references, and expected scores.
struct Case {
    name: String,
    preds: Vec<(String, String)>,
    refs: Vec<Vec<(String, String)>>,
    bleu: Vec<f64>,
    rouge_l: f64,
    cider_d: f64,
    cider_d_aac: f64,
    /// pycocoevalcap's per-item scores: `item_bleu[k][i]` is BLEU-(k+1) of item i.
    item_bleu: Vec<Vec<f64>>,
    item_rouge_l: Vec<f64>,
    item_cider_d: Vec<f64>,
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn cases() -> (Vec<(String, String)>, Vec<Case>) {
    let f = fixture("cases.json");
    let table = pairs(&f["sentences"]);
    let get = |v: &Value| table[v.as_u64().expect("sentence id") as usize].clone();
    let cases = f["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().expect("name").to_string(),
            preds: c["preds"]
                .as_array()
                .expect("preds")
                .iter()
                .map(get)
                .collect(),
            refs: c["refs"]
                .as_array()
                .expect("refs")
                .iter()
                .map(|rs| rs.as_array().expect("ref ids").iter().map(get).collect())
                .collect(),
            bleu: c["bleu"]
                .as_array()
                .expect("bleu")
                .iter()
                .map(|x| x.as_f64().expect("bleu value"))
                .collect(),
            rouge_l: c["rouge_l"].as_f64().expect("rouge_l"),
            cider_d: c["cider_d"].as_f64().expect("cider_d"),
            cider_d_aac: c["cider_d_aac_metrics"].as_f64().expect("aac"),
            item_bleu: c["items"]["bleu"]
                .as_array()
                .expect("items.bleu")
                .iter()
                .map(floats)
                .collect(),
            item_rouge_l: floats(&c["items"]["rouge_l"]),
            item_cider_d: floats(&c["items"]["cider_d"]),
        })
        .collect();
    (table, cases)
}

fn assert_close(case: &str, what: &str, ours: f64, theirs: f64) {
    let d = (ours - theirs).abs();
    eprintln!("{case:32} {what:8} ours {ours:.12} python {theirs:.12} |diff| {d:.2e}");
    assert!(
        d <= SCORE_TOL,
        "{case} {what}: ours {ours} vs python {theirs}"
    );
}

fn check_scores(c: &Case, s: &adiff::metrics::CorpusScores) {
    assert!(
        c.preds.len() >= 300,
        "{}: cases must have 300+ items",
        c.name
    );
    for (k, (&o, &t)) in s.bleu.iter().zip(&c.bleu).enumerate() {
        assert_close(&c.name, &format!("BLEU-{}", k + 1), o, t);
    }
    assert_close(&c.name, "ROUGE-L", s.rouge_l, c.rouge_l);
    assert_close(&c.name, "CIDEr-D", s.cider_d, c.cider_d);
    assert_close(&c.name, "CIDEr-D*", s.cider_d, c.cider_d_aac);
}

/// Metrics on the Java tokenizer's output: isolates BLEU/ROUGE-L/CIDEr-D from tokenization.
#[test]
fn metrics_match_pycocoevalcap_on_java_tokens() {
    let (_, cases) = cases();
    assert!(cases.len() >= 3);
    for c in &cases {
        let hyp: Vec<String> = c.preds.iter().map(|p| p.1.clone()).collect();
        let refs: Vec<Vec<String>> = c
            .refs
            .iter()
            .map(|rs| rs.iter().map(|r| r.1.clone()).collect())
            .collect();
        let s = score_tokenized(&hyp, &refs, &MetricsConfig::default()).expect("scores");
        check_scores(c, &s);
    }
}

/// Largest |ours - python| over the items of one metric (every item must be within ITEM_TOL).
fn assert_items_close(case: &str, what: &str, ours: &[f64], theirs: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{case} {what}: item count");
    let mut worst = 0.0f64;
    for (i, (&o, &t)) in ours.iter().zip(theirs).enumerate() {
        let d = (o - t).abs();
        assert!(
            d <= ITEM_TOL,
            "{case} {what} item {i}: ours {o} vs python {t}"
        );
        worst = worst.max(d);
    }
    eprintln!(
        "{case:32} {what:8} {} items, max |diff| {worst:.2e}",
        ours.len()
    );
}

/// Per-item BLEU-1..4 (each item's own brevity penalty), ROUGE-L and CIDEr-D on the Java
/// tokenizer's output equal pycocoevalcap's per-item arrays.
#[test]
fn item_scores_match_pycocoevalcap_on_java_tokens() {
    let (_, cases) = cases();
    for c in &cases {
        let hyp: Vec<String> = c.preds.iter().map(|p| p.1.clone()).collect();
        let refs: Vec<Vec<String>> = c
            .refs
            .iter()
            .map(|rs| rs.iter().map(|r| r.1.clone()).collect())
            .collect();
        let (corpus, items) =
            score_tokenized_items(&hyp, &refs, &MetricsConfig::default()).expect("scores");
        check_scores(c, &corpus);
        assert_eq!(items.bleu.len(), 4);
        for k in 0..4 {
            let what = format!("BLEU-{} i", k + 1);
            assert_items_close(&c.name, &what, &items.bleu[k], &c.item_bleu[k]);
        }
        assert_items_close(&c.name, "ROUGE-L i", &items.rouge_l, &c.item_rouge_l);
        assert_items_close(&c.name, "CIDEr-D i", &items.cider_d, &c.item_cider_d);
        // Some items have a brevity penalty of their own (shorter than their closest reference).
        let short = hyp
            .iter()
            .zip(&refs)
            .filter(|(h, rs)| {
                let n = h.split_whitespace().count();
                let closest = rs
                    .iter()
                    .map(|r| r.split_whitespace().count())
                    .min_by_key(|&l| (l.abs_diff(n), l))
                    .expect("a reference");
                n > 0 && n < closest
            })
            .count();
        assert!(short > 0, "{}: no item with a brevity penalty", c.name);
    }
}

/// The whole pipeline from raw text (our tokenizer, then the metrics).
#[test]
fn metrics_match_pycocoevalcap_from_raw_text() {
    let (_, cases) = cases();
    for c in &cases {
        let hyp: Vec<&str> = c.preds.iter().map(|p| p.0.as_str()).collect();
        let refs: Vec<Vec<&str>> = c
            .refs
            .iter()
            .map(|rs| rs.iter().map(|r| r.0.as_str()).collect())
            .collect();
        let s = score_corpus(&hyp, &refs, &MetricsConfig::default()).expect("scores");
        check_scores(c, &s);
    }
}

#[test]
fn tokenizer_matches_java_ptbtokenizer() {
    let (table, _) = cases();
    let tok = fixture("tokenizer.json");
    let mut data = table;
    data.extend(pairs(&tok["data"]));
    let mut diffs = 0;
    for (raw, java) in &data {
        let ours = coco_tokenize(raw);
        if &ours != java {
            diffs += 1;
            eprintln!("DIFF {raw:?}\n  ours {ours:?}\n  java {java:?}");
        }
    }
    let agree = 1.0 - diffs as f64 / data.len() as f64;
    eprintln!(
        "tokenizer: {} sentences, {diffs} differ, agreement {:.4}%",
        data.len(),
        agree * 100.0
    );
    assert!(agree >= MIN_TOKENIZER_AGREEMENT, "agreement {agree}");
    // Hand-written constructs rare in the data (contractions, brackets, quotes, abbreviations,
    // signed numbers, Unicode dashes and quotes, an empty line): all must match except the known
    // differences below, which are rules of the Java lexer not reimplemented.
    let edge = pairs(&tok["edge"]);
    let mut edge_diffs = Vec::new();
    for (raw, java) in &edge {
        let ours = coco_tokenize(raw);
        if &ours != java {
            eprintln!("EDGE DIFF {raw:?}\n  ours {ours:?}\n  java {java:?}");
            edge_diffs.push(raw.as_str());
        }
    }
    eprintln!(
        "edge cases: {} sentences, {} differ",
        edge.len(),
        edge_diffs.len()
    );
    for d in &edge_diffs {
        assert!(
            KNOWN_EDGE_DIFFERENCES.contains(d),
            "new tokenizer difference: {d:?}"
        );
    }
}

/// Sentences the Java lexer tokenizes by rules not reimplemented: none since the tokenizer learnt
/// Twitter names, `C++`, `y'all` and `'tis`/`'twas` (tests/ptb_tokenizer.rs holds the rare ones
/// still differing).
const KNOWN_EDGE_DIFFERENCES: [&str; 0] = [];

#[test]
fn mismatched_or_empty_inputs_are_errors() {
    let cfg = MetricsConfig::default();
    let hyp = ["a b".to_string()];
    for (refs, hyp, want) in [
        (vec![], &hyp[..], "1 predictions but 0 reference sets"),
        (vec![vec![]], &hyp[..], "item 0 has no reference"),
        (vec![], &[][..], "nothing to score: no predictions"),
    ] {
        let e = score_tokenized(hyp, &refs, &cfg)
            .expect_err(want)
            .to_string();
        assert!(e.contains(want), "{e}");
    }
}

/// A scratch folder for one test (removed at the end of the test).
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adiff-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Runs adiff without METEOR data or a SPICE jar from the environment (the "unavailable" path).
fn adiff(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_adiff"))
        .env_remove("ADIFF_METEOR_DATA")
        .env_remove("ADIFF_SPICE_JAR")
        .args(args)
        .output()
        .expect("run adiff")
}

/// `adiff eval` on an infer-style CSV (two reference columns, one empty prediction, CRLF line
/// ends as Python's csv writes them) gives pycocoevalcap's numbers in its JSON.
#[test]
fn eval_cli_matches_pycocoevalcap() {
    let (_, cases) = cases();
    let c = cases
        .iter()
        .find(|c| c.name == "cld_fewwords_2ref")
        .expect("two-reference case");
    let dir = scratch("eval");
    let csv_path = dir.join("cld_fewwords_preds.csv");
    {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_path(&csv_path)
            .expect("csv");
        w.write_record(["taskname", "input", "answer", "answer_2", "prediction"])
            .expect("header");
        for (p, rs) in c.preds.iter().zip(&c.refs) {
            w.write_record([
                "clothov21",
                "explain the difference in few words",
                &rs[0].0,
                &rs[1].0,
                &p.0,
            ])
            .expect("row");
        }
    }
    let json_path = dir.join("scores.json");
    let items_path = dir.join("items.csv");
    let out = adiff(&[
        "eval".as_ref(),
        csv_path.as_os_str(),
        "--json".as_ref(),
        json_path.as_os_str(),
        "--per-item".as_ref(),
        items_path.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success());
    assert!(stdout.contains("METEOR: unavailable: needs Meteor's data (--meteor-data"));
    assert!(stdout.contains("SPICE: unavailable: needs the SPICE jar (--spice-jar"));
    assert!(stdout.contains("SPIDEr: unavailable: needs SPICE"));
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json")).expect("json");
    let groups = j["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g["taskname"], "clothov21");
    assert_eq!(g["tier"], "fewwords");
    assert_eq!(g["items"].as_u64(), Some(c.preds.len() as u64));
    // The 8th data row (line 9: header is line 1) has the empty prediction.
    let empty: Vec<&str> = g["empty_predictions"]
        .as_array()
        .expect("empty_predictions")
        .iter()
        .map(|v| v.as_str().expect("str"))
        .collect();
    assert_eq!(empty.len(), 1);
    assert!(empty[0].ends_with("cld_fewwords_preds.csv:9"), "{empty:?}");
    let s = &g["scores"];
    for k in 0..4 {
        assert_close(
            &c.name,
            "cli BLEU",
            s["bleu"][k].as_f64().expect("bleu"),
            c.bleu[k],
        );
    }
    assert_close(
        &c.name,
        "cli ROUGE",
        s["rouge_l"].as_f64().expect("rouge"),
        c.rouge_l,
    );
    assert_close(
        &c.name,
        "cli CIDEr",
        s["cider_d"].as_f64().expect("cider"),
        c.cider_d,
    );
    for metric in ["meteor", "spice", "spider"] {
        assert!(g[metric].is_null(), "no {metric} number may be reported");
    }
    for metric in ["METEOR", "SPICE", "SPIDEr"] {
        assert!(g["unavailable"][metric].is_string(), "{metric} unavailable");
    }
    for metric in ["tokenizer", "bleu", "rouge_l", "cider_d", "meteor", "spice"] {
        assert!(
            j["metric_versions"][metric].is_string(),
            "metric_versions.{metric}"
        );
    }
    // --per-item: one row per input row, in order, with pycocoevalcap's per-item scores.
    let mut rdr = csv::Reader::from_path(&items_path).expect("per-item csv");
    let header: Vec<String> = rdr
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        [
            "file",
            "line",
            "taskname",
            "tier",
            "prediction",
            "bleu_1",
            "bleu_2",
            "bleu_3",
            "bleu_4",
            "meteor",
            "rouge_l",
            "cider_d",
            "spice"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), c.preds.len());
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let num = |r: &csv::StringRecord, name: &str| -> f64 {
        r[col(name)]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let mut got = vec![Vec::new(); 6];
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(&r[col("file")], csv_path.display().to_string());
        assert_eq!(&r[col("line")], (i + 2).to_string());
        assert_eq!(&r[col("taskname")], "clothov21");
        assert_eq!(&r[col("tier")], "fewwords");
        assert_eq!(&r[col("prediction")], c.preds[i].0);
        assert_eq!(&r[col("meteor")], "", "no METEOR without its data");
        assert_eq!(&r[col("spice")], "", "no SPICE without its jar");
        for (k, name) in ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"]
            .iter()
            .enumerate()
        {
            got[k].push(num(r, name));
        }
    }
    for (ours, theirs) in got.iter().zip(&c.item_bleu) {
        assert_items_close(&c.name, "cli BLEU i", ours, theirs);
    }
    assert_items_close(&c.name, "cli ROUGE i", &got[4], &c.item_rouge_l);
    assert_items_close(&c.name, "cli CIDEr i", &got[5], &c.item_cider_d);
    // The per-item CSV is not replaced without --force.
    let again = adiff(&[
        "eval".as_ref(),
        csv_path.as_os_str(),
        "--per-item".as_ref(),
        items_path.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("exists (the per-item CSV"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Bad input gives a one-line error naming the file, never a panic.
#[test]
fn eval_cli_reports_bad_input() {
    let dir = scratch("eval-bad");
    let no_pred = dir.join("x_sentence.csv");
    std::fs::write(&no_pred, "answer\nsome words\n").expect("write");
    let no_tier = dir.join("x.csv");
    std::fs::write(&no_tier, "prediction,answer\na b,a c\n").expect("write");
    let no_ref = dir.join("y_detail.csv");
    std::fs::write(&no_ref, "prediction,answer\na b,a c\nd,\n").expect("write");
    for (path, needle) in [
        (&no_pred, "no 'prediction' column"),
        (&no_tier, "--tier"),
        (&no_ref, "line 3: no reference answer"),
    ] {
        let out = adiff(&[
            "eval".as_ref(),
            path.as_os_str(),
            "--group-by".as_ref(),
            "tier".as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", path.display());
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&*path.display().to_string()), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
    // --tier overrides the file name; a file without `taskname` can still be scored by tier.
    let out = adiff(&[
        "eval".as_ref(),
        no_tier.as_os_str(),
        "--tier".as_ref(),
        "2".as_ref(),
        "--group-by".as_ref(),
        "tier".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// --per-item keeps the input order when groups interleave, names each row's group, and scores
/// CIDEr-D over the row's group (its document frequencies); it is refused onto an input.
#[test]
fn eval_cli_per_item_order_and_groups() {
    let dir = scratch("eval-per-item");
    let csv_path = dir.join("x_fewwords_preds.csv");
    std::fs::write(
        &csv_path,
        "taskname,answer,answer_2,prediction\n\
         audiocaps,a dog barks loudly,the dog is barking,a dog barks\n\
         clothov21,birds chirp,,birds sing\n\
         audiocaps,rain falls,,heavy rain\n",
    )
    .expect("write");
    let items_path = dir.join("items.csv");
    let out = adiff(&[
        "eval".as_ref(),
        csv_path.as_os_str(),
        "--per-item".as_ref(),
        items_path.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rdr = csv::Reader::from_path(&items_path).expect("per-item csv");
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("row")).collect();
    let got: Vec<(&str, &str, &str)> = rows.iter().map(|r| (&r[1], &r[2], &r[4])).collect();
    assert_eq!(
        got,
        [
            ("2", "audiocaps", "a dog barks"),
            ("3", "clothov21", "birds sing"),
            ("4", "audiocaps", "heavy rain"),
        ]
    );
    // Each row's CIDEr-D is its group's per-item value.
    let cfg = MetricsConfig::default();
    let acd = score_tokenized_items(
        &["a dog barks".into(), "heavy rain".into()],
        &[
            vec!["a dog barks loudly".into(), "the dog is barking".into()],
            vec!["rain falls".into()],
        ],
        &cfg,
    )
    .expect("scores")
    .1;
    let cider = |r: &csv::StringRecord| -> f64 { r[11].parse().expect("cider_d") };
    assert_eq!(cider(&rows[0]), acd.cider_d[0]);
    assert_eq!(cider(&rows[2]), acd.cider_d[1]);
    // Onto an input: refused, even with --force.
    let out = adiff(&[
        "eval".as_ref(),
        csv_path.as_os_str(),
        "--per-item".as_ref(),
        csv_path.as_os_str(),
        "--force".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("would overwrite an input"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

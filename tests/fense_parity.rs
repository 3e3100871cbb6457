//! FENSE, SBERT-sim, the fluency error detector and SPIDEr-FL against aac-metrics 0.6.0, with
//! the tiny random-weight models of tests/fixtures/metrics/fense/ (scripts/fixtures_fense.py:
//! a sentence-transformers save and an echecker checkpoint in fense's layout), through the
//! library and through `adiff eval --metrics`; and `adiff download fense` without a network.

use std::path::{Path, PathBuf};
use std::process::Command;

use adiff::metrics::fense::{fense, FenseConfig, FenseFiles, FenseModels};
use adiff::metrics::fer::ERROR_NAMES;
use adiff::metrics::spider_fl::spider_fl;
use adiff::metrics::tokenize::coco_tokenize;
use adiff::metrics::{score_tokenized_items, MetricsConfig};
use serde_json::Value;

mod common;

const TOL: f64 = 1e-5;

fn fixture_dir() -> PathBuf {
    common::root().join("tests/fixtures/metrics/fense")
}

fn fixture() -> Value {
    let p = fixture_dir().join("fense.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fense.json")).expect("json")
}

fn models() -> FenseModels {
    FenseModels::load(&FenseFiles::from_dir(&fixture_dir()).expect("layout")).expect("models")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect()
}

/// Largest |ours - theirs| over the items; fails naming the worst item beyond [`TOL`].
fn worst(what: &str, ours: &[f64], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "{what}: item count");
    let (mut w, mut at) = (0f64, 0);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if (a - b).abs() > w {
            (w, at) = ((a - b).abs(), i);
        }
    }
    assert!(
        w <= TOL,
        "{what}: item {at}: adiff {} vs aac-metrics {} (diff {w:e})",
        ours[at],
        theirs[at]
    );
    w
}

fn close(what: &str, ours: f64, theirs: f64) -> f64 {
    worst(what, &[ours], &[theirs])
}

/// Every FENSE output of one fixture case (`raw` or `tokenized`) within [`TOL`].
fn check_case(models: &FenseModels, case: &Value, name: &str) -> f64 {
    let cands = strings(&case["candidates"]);
    let refs: Vec<Vec<String>> = case["mult_references"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    let s = fense(models, &cands, &refs, &FenseConfig::default()).expect("fense");
    let items = &case["items"];
    let corpus = &case["corpus"];
    let mut w = 0f64;
    w = w.max(worst(
        &format!("{name} sbert_sim"),
        &s.sbert_sim.items,
        &floats(&items["sbert_sim"]),
    ));
    assert_eq!(s.fer.items, floats(&items["fer"]), "{name} fer flags");
    w = w.max(worst(
        &format!("{name} fense"),
        &s.items,
        &floats(&items["fense"]),
    ));
    for (k, n) in ERROR_NAMES.iter().enumerate() {
        let ours: Vec<f64> = s.fer.probs.iter().map(|p| f64::from(p[k])).collect();
        w = w.max(worst(
            &format!("{name} {n}_prob"),
            &ours,
            &floats(&items["probs"][n]),
        ));
        w = w.max(close(
            &format!("{name} corpus {n}_prob"),
            s.fer.corpus_probs[k],
            corpus["probs"][n].as_f64().unwrap(),
        ));
    }
    w = w.max(close(
        &format!("{name} corpus sbert_sim"),
        s.sbert_sim.corpus,
        corpus["sbert_sim"].as_f64().unwrap(),
    ));
    w = w.max(close(
        &format!("{name} corpus fer"),
        s.fer.corpus,
        corpus["fer"].as_f64().unwrap(),
    ));
    w = w.max(close(
        &format!("{name} corpus fense"),
        s.corpus,
        corpus["fense"].as_f64().unwrap(),
    ));
    let flagged = s.fer.items.iter().filter(|&&f| f == 1.0).count();
    assert!(
        flagged > 5 && flagged < cands.len() - 5,
        "{name}: the fixture should flag some candidates, not all ({flagged})"
    );
    w
}

#[test]
fn fense_matches_aac_metrics() {
    let fx = fixture();
    let m = models();
    let w_raw = check_case(&m, &fx["raw"], "raw");
    let w_tok = check_case(&m, &fx["tokenized"], "tokenized");
    println!("worst difference: raw {w_raw:e}, tokenized {w_tok:e}");
}

#[test]
fn sbert_embeddings_match_sentence_transformers() {
    let fx = fixture();
    let m = models();
    let cands = strings(&fx["raw"]["candidates"]);
    let want = fx["sbert_embeddings_first8"].as_array().unwrap();
    let ours = m.sbert.encode(&cands[..want.len()]).unwrap();
    for (i, (o, w)) in ours.iter().zip(want).enumerate() {
        let o: Vec<f64> = o.iter().map(|&x| f64::from(x)).collect();
        worst(&format!("embedding {i}"), &o, &floats(w));
    }
}

#[test]
fn spider_fl_matches_aac_metrics() {
    let fx = fixture();
    let m = models();
    let raw = strings(&fx["raw"]["candidates"]);
    let tok = strings(&fx["tokenized"]["candidates"]);
    // The fixture's tokenized text is what coco-caption's PTB tokenization makes of the raw.
    for (r, t) in raw.iter().zip(&tok) {
        assert_eq!(&coco_tokenize(r), t, "tokenization of {r:?}");
    }
    let refs: Vec<Vec<String>> = fx["tokenized"]["mult_references"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    let case = &fx["spider_fl"];
    let (_, items) = score_tokenized_items(&tok, &refs, &MetricsConfig::default()).unwrap();
    worst(
        "cider_d",
        &items.cider_d,
        &floats(&case["items"]["cider_d"]),
    );
    let fer = adiff::metrics::fer::fer(&m.echecker, &tok, 0.9).unwrap();
    assert_eq!(fer.items, floats(&case["items"]["fer"]), "fer flags");
    let spice = floats(&case["items"]["spice"]);
    let s = spider_fl(&items.cider_d, &spice, &fer.items, 0.9).unwrap();
    worst("spider", &s.spider, &floats(&case["items"]["spider"]));
    let w = worst("spider_fl", &s.items, &floats(&case["items"]["spider_fl"]));
    let wc = close(
        "corpus spider_fl",
        s.corpus,
        case["corpus"]["spider_fl"].as_f64().unwrap(),
    );
    println!("worst difference: items {w:e}, corpus {wc:e}");
}

#[test]
fn fluency_preprocessing_keeps_word_characters_only() {
    use adiff::metrics::fer::text_preprocess;
    assert_eq!(text_preprocess("A dog, barking!"), "a dog barking");
    assert_eq!(text_preprocess("Café_au-lait; 3 x"), "café_aulait 3 x");
}

#[test]
fn bad_model_dirs_are_errors_naming_the_file() {
    let dir = scratch("bad-model");
    let err = FenseFiles::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("modules.json"), "{err}");
    // A checkpoint that is not an echecker.
    copy_dir(&fixture_dir(), &dir);
    std::fs::write(dir.join("echecker/echecker_tiny.ckpt"), b"not a checkpoint").unwrap();
    let files = FenseFiles::from_dir(&dir).unwrap();
    let err = FenseModels::load(&files).err().expect("error").to_string();
    assert!(err.contains("echecker_tiny.ckpt"), "{err}");
}

fn scratch(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("adiff-fense-{name}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Items 0..N of the fixture as an `adiff infer` CSV: raw text, references in answer,
/// answer_2, ... columns.
fn preds_csv(dir: &Path, n: usize) -> PathBuf {
    let fx = fixture();
    let cands = strings(&fx["raw"]["candidates"]);
    let refs = fx["raw"]["mult_references"].as_array().unwrap();
    let width = refs[..n]
        .iter()
        .map(|r| r.as_array().unwrap().len())
        .max()
        .unwrap();
    let p = dir.join("preds_sentence.csv");
    let mut w = csv::Writer::from_path(&p).unwrap();
    let mut header = vec!["taskname".to_string(), "prediction".into(), "answer".into()];
    header.extend((2..=width).map(|k| format!("answer_{k}")));
    w.write_record(&header).unwrap();
    for i in 0..n {
        let mut row = vec!["audiocaps".to_string(), cands[i].clone()];
        let r = strings(&refs[i]);
        row.extend((0..width).map(|k| r.get(k).cloned().unwrap_or_default()));
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    p
}

fn eval(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .env_remove("ADIFF_METEOR_DATA")
        .env_remove("ADIFF_SPICE_JAR")
        .env_remove("ADIFF_FENSE_MODEL")
        .arg("eval")
        .args(args)
        .output()
        .expect("run adiff")
}

#[test]
fn eval_cli_fense_end_to_end() {
    const N: usize = 12;
    let dir = scratch("cli");
    let csv_path = preds_csv(&dir, N);
    let json = dir.join("scores.json");
    let per_item = dir.join("items.csv");
    let model = fixture_dir();
    let out = common::ok(eval(&[
        csv_path.as_os_str(),
        "--metrics".as_ref(),
        "fense,vocab".as_ref(),
        "--fense-model".as_ref(),
        model.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
        "--per-item".as_ref(),
        per_item.as_os_str(),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FENSE"), "{stdout}");
    assert!(stdout.contains("SBERT-sim"), "{stdout}");
    assert!(
        !stdout.contains("BLEU-1"),
        "only the metrics asked for: {stdout}"
    );

    // `adiff eval` scores coco-caption's tokenized text, as aac-metrics' evaluate(preprocess=True).
    let fx = fixture();
    let want = &fx["tokenized"]["items"];
    let want_fense = &floats(&want["fense"])[..N];
    let want_sim = &floats(&want["sbert_sim"])[..N];
    let want_fer = &floats(&want["fer"])[..N];
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let g = &v["groups"][0];
    close("json fense", g["fense"].as_f64().unwrap(), mean(want_fense));
    close(
        "json sbert_sim",
        g["sbert_sim"].as_f64().unwrap(),
        mean(want_sim),
    );
    close("json fer", g["fer"].as_f64().unwrap(), mean(want_fer));
    assert!(g["vocab"].as_f64().unwrap() > 10.0, "{g}");
    assert!(v["metric_versions"]["fense"].is_string(), "{v}");
    assert!(g.get("meteor").is_none_or(Value::is_null), "{g}");

    let mut rdr = csv::Reader::from_path(&per_item).unwrap();
    let header = rdr.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (cf, cs, cr) = (col("fense"), col("sbert_sim"), col("fer"));
    assert!(header.iter().all(|h| h != "bleu_1"), "{header:?}");
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), N);
    let get = |c: usize| -> Vec<f64> { rows.iter().map(|r| r[c].parse().unwrap()).collect() };
    worst("per-item fense", &get(cf), want_fense);
    worst("per-item sbert_sim", &get(cs), want_sim);
    worst("per-item fer", &get(cr), want_fer);
}

#[test]
fn eval_cli_default_output_has_no_fense() {
    let dir = scratch("default");
    let csv_path = preds_csv(&dir, 3);
    let out = common::ok(eval(&[csv_path.as_os_str()]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BLEU-1") && !stdout.contains("FENSE"),
        "{stdout}"
    );
}

#[test]
fn eval_cli_fense_without_models_says_what_to_do() {
    let dir = scratch("nomodel");
    let csv_path = preds_csv(&dir, 3);
    let out = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .env_remove("ADIFF_FENSE_MODEL")
        .env("HF_HOME", dir.join("hf"))
        .env("ADIFF_CACHE", dir.join("cache"))
        .args(["eval".as_ref(), csv_path.as_os_str()])
        .args(["--metrics", "fense"])
        .output()
        .unwrap();
    common::assert_one_line_error(&out, "adiff download fense");
    // A model directory with the wrong layout is named.
    let out = eval(&[
        csv_path.as_os_str(),
        "--metrics".as_ref(),
        "dcase2024".as_ref(),
        "--fense-model".as_ref(),
        dir.as_os_str(),
    ]);
    common::assert_one_line_error(&out, "modules.json");
    // SPIDEr-FL needs SPICE: without its jar it is reported as unavailable, as SPIDEr.
    let out = common::ok(eval(&[
        csv_path.as_os_str(),
        "--metrics".as_ref(),
        "spider-fl".as_ref(),
        "--fense-model".as_ref(),
        fixture_dir().as_os_str(),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SPIDEr-FL: unavailable: needs SPICE"),
        "{stdout}"
    );
    let out = eval(&[
        csv_path.as_os_str(),
        "--metrics".as_ref(),
        "nonsense".as_ref(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn download_fense_from_an_unreachable_hub_says_what_to_put_where() {
    let dir = scratch("dl-hub");
    let out = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(["download", "fense"])
        .env("HF_HOME", dir.join("hf"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("ADIFF_CACHE", dir.join("cache"))
        .env("ADIFF_DOWNLOAD_BASE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    common::assert_one_line_error(&out, "paraphrase-TinyBERT-L6-v2");
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(line.contains("cannot reach"), "{line}");
    assert!(line.contains("modules.json"), "{line}");
    let repo_dir = dir
        .join("hf/hub")
        .join("models--sentence-transformers--paraphrase-TinyBERT-L6-v2");
    assert!(line.contains(&repo_dir.display().to_string()), "{line}");
}

/// hf-hub's cache with `files` placed by hand in a `manual` snapshot of `repo`.
fn place_by_hand(hf_home: &Path, repo: &str, files: &[&str]) {
    let repo_dir = hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots/manual");
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "manual").unwrap();
    for f in files {
        let p = snapshot.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
}

#[test]
fn download_fense_echecker_from_an_unreachable_server_names_url_and_path() {
    let dir = scratch("dl-ckpt");
    let hf = dir.join("hf");
    place_by_hand(
        &hf,
        "sentence-transformers/paraphrase-TinyBERT-L6-v2",
        &[
            "config.json",
            "modules.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
            "tokenizer.json",
            "model.safetensors",
        ],
    );
    place_by_hand(&hf, "prajjwal1/bert-medium", &["config.json", "vocab.txt"]);
    let out = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(["download", "fense"])
        .env("HF_HOME", &hf)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("ADIFF_CACHE", dir.join("cache"))
        .env("ADIFF_DOWNLOAD_BASE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    common::assert_one_line_error(&out, "cannot reach the server");
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(
        line.contains(
            "http://127.0.0.1:9/blmoistawinde/fense/releases/download/V0.1/\
             echecker_clotho_audiocaps_base.ckpt"
        ),
        "{line}"
    );
    let dest = dir.join("cache/fense/echecker_clotho_audiocaps_base.ckpt");
    assert!(line.contains(&dest.display().to_string()), "{line}");
}

/// `adiff eval --metrics spider-fl` over all fixture items, SPICE from a `java` stand-in that
/// returns the fixture's stand-in SPICE values: per-item and corpus SPIDEr-FL as aac-metrics'.
#[cfg(unix)]
#[test]
fn eval_cli_spider_fl_end_to_end() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let n = fx["raw"]["candidates"].as_array().unwrap().len();
    let dir = scratch("cli-spider-fl");
    let csv_path = preds_csv(&dir, n);
    let spice = floats(&fx["spider_fl"]["items"]["spice"]);
    let result: Vec<Value> = spice
        .iter()
        .enumerate()
        .map(|(i, f)| serde_json::json!({"image_id": i, "scores": {"All": {"pr": f, "re": f, "f": f}}}))
        .collect();
    let out_json = dir.join("result.json");
    std::fs::write(&out_json, serde_json::to_string(&result).unwrap()).unwrap();
    let java = dir.join("java");
    // Called as `java -jar -Xmx8G JAR IN -out OUT -subset -silent`.
    std::fs::write(
        &java,
        format!("#!/bin/sh\ncp '{}' \"$6\"\n", out_json.display()),
    )
    .unwrap();
    std::fs::set_permissions(&java, std::fs::Permissions::from_mode(0o755)).unwrap();
    let jar = dir.join("spice-1.0.jar");
    std::fs::write(&jar, b"stand-in").unwrap();
    let per_item = dir.join("items.csv");
    let json = dir.join("scores.json");
    let model = fixture_dir();
    common::ok(eval(&[
        csv_path.as_os_str(),
        "--metrics".as_ref(),
        "spider-fl".as_ref(),
        "--fense-model".as_ref(),
        model.as_os_str(),
        "--spice-jar".as_ref(),
        jar.as_os_str(),
        "--java".as_ref(),
        java.as_os_str(),
        "--per-item".as_ref(),
        per_item.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ]));
    let mut rdr = csv::Reader::from_path(&per_item).unwrap();
    let header = rdr.headers().unwrap().clone();
    let c = header
        .iter()
        .position(|h| h == "spider_fl")
        .expect("spider_fl");
    let ours: Vec<f64> = rdr
        .records()
        .map(|r| r.unwrap()[c].parse().unwrap())
        .collect();
    worst(
        "per-item spider_fl",
        &ours,
        &floats(&fx["spider_fl"]["items"]["spider_fl"]),
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    close(
        "json spider_fl",
        v["groups"][0]["spider_fl"].as_f64().unwrap(),
        fx["spider_fl"]["corpus"]["spider_fl"].as_f64().unwrap(),
    );
}

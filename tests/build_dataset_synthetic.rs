//! `adiff build-dataset synthetic` and `adiff eval --synthetic`: determinism, clips that measure
//! as labelled (level in dBFS, dominant pitch band), template explanations scored 100% and a
//! wrong one counted wrong, and one-line errors for bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adiff::data::synthetic::{
    pair_rng, pitch_band_hz, render, split_seed, Attribute, Attributes, Background, ClipSpec,
    Loudness, Pattern, Pitch, SourceKind, SyntheticPair, TruthRecord, CLIP_SAMPLES,
    LOUDNESS_LEVELS_DBFS, SAMPLE_RATE,
};

/// Frames (samples) over which the level is measured: 250 ms, i.e. exactly two click periods.
const LEVEL_FRAME: usize = 8_000;
/// Frames at least this fraction of the loudest frame's power count as "sounding".
const SOUNDING_FRACTION: f64 = 0.5;
/// Largest difference tolerated between the measured and the drawn level (dB); the classes are
/// 11 dB apart.
const LEVEL_TOLERANCE_DB: f64 = 2.5;

fn adiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .output()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adiff-test-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn build(dir: &Path, count: usize, seed: u64, split: &str) {
    build_with(dir, count, seed, split, &[]);
}

/// As [`build`], with more `build-dataset synthetic` options.
fn build_with(dir: &Path, count: usize, seed: u64, split: &str, extra: &[&str]) {
    let (count, seed) = (count.to_string(), seed.to_string());
    let mut args = vec![
        "build-dataset",
        "synthetic",
        "-o",
        dir.to_str().unwrap(),
        "--count",
        &count,
        "--seed",
        &seed,
        "--split",
        split,
    ];
    args.extend_from_slice(extra);
    let o = adiff(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn truth(dir: &Path) -> Vec<TruthRecord> {
    std::fs::read_to_string(dir.join("truth.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// RMS level (dBFS) while the clip sounds: mean power of the 250 ms frames within 3 dB of the
/// loudest one.
fn sounding_level_dbfs(x: &[f32]) -> f64 {
    let powers: Vec<f64> = x
        .chunks_exact(LEVEL_FRAME)
        .map(|f| f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / f.len() as f64)
        .collect();
    let max = powers.iter().copied().fold(0.0, f64::max);
    let loud: Vec<f64> = powers
        .into_iter()
        .filter(|&p| p >= SOUNDING_FRACTION * max)
        .collect();
    10.0 * (loud.iter().sum::<f64>() / loud.len() as f64).log10()
}

/// Energy of the clip in each pitch class's band (low, mid, high), from its power spectrum.
fn band_energies(x: &[f32]) -> [f64; 3] {
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(x.len());
    let mut input: Vec<f64> = x.iter().map(|&s| f64::from(s)).collect();
    let mut spec = fft.make_output_vec();
    fft.process(&mut input, &mut spec).unwrap();
    let bin_hz = f64::from(SAMPLE_RATE) / x.len() as f64;
    Pitch::ALL.map(|p| {
        let (lo, hi) = pitch_band_hz(p);
        spec.iter()
            .enumerate()
            .filter(|(k, _)| (lo..hi).contains(&(*k as f64 * bin_hz)))
            .map(|(_, c)| c.norm_sqr())
            .sum()
    })
}

/// Checks one clip against its labels; returns the level error (dB).
fn check_clip(x: &[f32], spec: &ClipSpec, what: &str) -> f64 {
    assert_eq!(x.len(), CLIP_SAMPLES, "{what}");
    let level = sounding_level_dbfs(x);
    let err = (level - spec.level_dbfs).abs();
    assert!(
        err <= LEVEL_TOLERANCE_DB,
        "{what}: measured {level:.2} dBFS, drawn {:.2}",
        spec.level_dbfs
    );
    let nearest = (0..3)
        .min_by(|&a, &b| {
            (level - LOUDNESS_LEVELS_DBFS[a])
                .abs()
                .total_cmp(&(level - LOUDNESS_LEVELS_DBFS[b]).abs())
        })
        .unwrap();
    assert_eq!(
        nearest, spec.attributes.loudness as usize,
        "{what}: {level:.2} dBFS"
    );
    let bands = band_energies(x);
    let want = spec.attributes.pitch as usize;
    for (i, e) in bands.iter().enumerate() {
        if i != want {
            assert!(
                bands[want] >= 2.0 * e,
                "{what}: band energies {bands:?}, labelled {:?}",
                spec.attributes.pitch
            );
        }
    }
    err
}

#[test]
fn same_seed_same_files_other_seed_or_split_differs() {
    let (a, b, c) = (tmp("synth-a"), tmp("synth-b"), tmp("synth-c"));
    build(&a, 4, 5, "train");
    build(&b, 4, 5, "train");
    build(&c, 4, 6, "train");
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), 3 + 1 + 8, "{:?}", fa.keys());
    assert!(fa == fb, "same seed, different files");
    for name in ["train_detail_answer.csv", "audio/train_000000_1.wav"] {
        assert_ne!(fa[name], fc[name], "{name} did not change with the seed");
    }
    // Another split in the same folder: other clips, and truth.jsonl holds both splits.
    build(&a, 2, 5, "test");
    assert_ne!(
        std::fs::read(a.join("audio/test_000000_1.wav")).unwrap(),
        fa["audio/train_000000_1.wav"]
    );
    let t = truth(&a);
    assert_eq!(t.iter().filter(|r| r.split == "train").count(), 8);
    assert_eq!(t.iter().filter(|r| r.split == "test").count(), 4);
    // Rebuilding a split replaces its records and clips instead of adding to them.
    build(&a, 4, 5, "train");
    assert_eq!(truth(&a).len(), 12);
    build(&a, 2, 5, "train");
    assert_eq!(truth(&a).len(), 8);
    let clips: Vec<String> = files(&a)
        .into_keys()
        .filter(|k| k.starts_with("audio/"))
        .collect();
    assert_eq!(clips.len(), 4 + 4, "{clips:?}");
    assert_eq!(
        std::fs::read(a.join("audio/train_000001_2.wav")).unwrap(),
        fa["audio/train_000001_2.wav"]
    );
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// `--captioning` adds `{split}_captioning.csv` (two rows per pair: each clip's caption under a
/// prompt of its position) and changes no other file; training reads its rows as captioning
/// rows of the right position; a rebuild without it removes the file.
#[test]
fn captioning_rows_name_each_clip_and_change_nothing_else() {
    let (plain, with) = (tmp("synth-nocap"), tmp("synth-cap"));
    build(&plain, 3, 7, "train");
    build_with(&with, 3, 7, "train", &["--captioning"]);
    let (mut fw, fp) = (files(&with), files(&plain));
    assert!(fw.remove("train_captioning.csv").is_some());
    assert!(fw == fp, "--captioning changed other files");
    let csv = with.join("train_captioning.csv");
    let rows = adiff::data::explanations::read_explanations(&csv).unwrap();
    let t = truth(&with);
    assert_eq!(rows.len(), 6);
    let prompts = adiff::text::prompts::PromptDatabase::bundled().unwrap();
    use adiff::text::prompts::PromptKind;
    for (i, r) in rows.iter().enumerate() {
        let (pair, pos) = (i / 2, i % 2);
        assert_eq!(r.filepath1, t[2 * pair].path);
        assert_eq!(r.filepath2, t[2 * pair + 1].path);
        assert_eq!(r.answer, t[2 * pair + pos].spec.attributes.caption());
        let kind = [PromptKind::CaptionFirst, PromptKind::CaptionSecond][pos];
        assert!(prompts.prompts(kind).contains(&r.input), "{}", r.input);
    }
    let examples = adiff::train::data::read_examples(&[csv]).unwrap();
    let kinds: Vec<_> = examples.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [PromptKind::CaptionFirst, PromptKind::CaptionSecond]
            .repeat(3)
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>()
    );
    build(&with, 3, 7, "train");
    assert!(
        files(&with) == fp,
        "a rebuild without --captioning left the file"
    );
    for d in [plain, with] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn written_clips_and_csvs_match_truth() {
    let dir = tmp("synth-truth");
    build(&dir, 12, 11, "train");
    let t = truth(&dir);
    assert_eq!(t.len(), 24);
    let mut worst: f64 = 0.0;
    for rec in &t {
        let decoded = adiff::audio::decode::decode_file(&dir.join(&rec.path)).unwrap();
        assert_eq!(decoded.sample_rate, SAMPLE_RATE);
        assert_eq!(decoded.channels, 1);
        worst = worst.max(check_clip(&decoded.samples, &rec.spec, &rec.path));
    }
    eprintln!("written clips: worst level error {worst:.2} dB");
    // The CSV rows name the clips of truth.jsonl, with their captions and a tier prompt.
    let prompts = adiff::text::prompts::PromptDatabase::bundled().unwrap();
    for (tier, tag) in [(1u8, "fewwords"), (2, "sentence"), (3, "detail")] {
        let rows = adiff::data::explanations::read_explanations(
            &dir.join(format!("train_{tag}_answer.csv")),
        )
        .unwrap();
        assert_eq!(rows.len(), 12);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.filepath1, t[2 * i].path);
            assert_eq!(r.filepath2, t[2 * i + 1].path);
            assert_eq!(r.caption1, t[2 * i].spec.attributes.caption());
            let kind = adiff::text::prompts::PromptKind::Tier(tier);
            assert!(prompts.prompts(kind).contains(&r.input), "{}", r.input);
            assert!(!r.answer.is_empty());
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn every_kind_pitch_and_loudness_measures_as_labelled() {
    let mut rng = pair_rng(split_seed(3, "measure"), 0);
    let mut worst: f64 = 0.0;
    let mut n = 0usize;
    for (k, kind) in SourceKind::ALL.into_iter().enumerate() {
        for (p, pitch) in Pitch::ALL.into_iter().enumerate() {
            for (l, loudness) in Loudness::ALL.into_iter().enumerate() {
                let attributes = Attributes {
                    kind,
                    pitch,
                    loudness,
                    pattern: Pattern::ALL[(k + p + l) % 3],
                    background: Background::ALL[(k + 2 * p + l) % 3],
                };
                // Draw pairs until the first clip has these labels, so that its f0, level and
                // timing come from the dataset's own draw.
                let spec = loop {
                    let pair = SyntheticPair::draw(&mut rng);
                    if pair.first.attributes == attributes {
                        break pair.first;
                    }
                };
                let what = format!("{attributes:?}");
                worst = worst.max(check_clip(&render(&spec), &spec, &what));
                n += 1;
            }
        }
    }
    assert_eq!(n, 63);
    eprintln!("{n} clips: worst level error {worst:.2} dB (tolerance {LEVEL_TOLERANCE_DB} dB)");
}

fn write_preds(src: &Path, dst: &Path, edit: impl Fn(usize, &str) -> String) {
    let mut rdr = csv::Reader::from_path(src).unwrap();
    let mut w = csv::Writer::from_path(dst).unwrap();
    let mut h: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    h.push("prediction".into());
    w.write_record(&h).unwrap();
    for (i, r) in rdr.records().enumerate() {
        let r = r.unwrap();
        let mut rec: Vec<String> = r.iter().map(String::from).collect();
        rec.push(edit(i, &r[6]));
        w.write_record(&rec).unwrap();
    }
    w.flush().unwrap();
}

fn eval_json(truth: &Path, preds: &Path, json: &Path) -> serde_json::Value {
    let o = adiff(&[
        "eval",
        "--synthetic",
        truth.to_str().unwrap(),
        preds.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        // Each call of this helper replaces the scores file of the call before.
        "--force",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("precision") && out.contains("recall") && out.contains("source kind"),
        "{out}"
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn scores(v: &serde_json::Value) -> BTreeMap<String, (u64, u64)> {
    v["files"][0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attribute"].as_str().unwrap().to_string(),
                (
                    a["asserted"].as_u64().unwrap(),
                    a["right"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn eval_synthetic_scores_templates_100_percent_and_catches_wrong_claims() {
    let dir = tmp("synth-eval");
    build(&dir, 40, 2, "test");
    let truth = dir.join("truth.jsonl");
    let json = dir.join("scores.json");
    for tag in ["fewwords", "sentence", "detail"] {
        let preds = dir.join(format!("preds_{tag}.csv"));
        write_preds(
            &dir.join(format!("test_{tag}_answer.csv")),
            &preds,
            |_, a| a.to_string(),
        );
        let v = eval_json(&truth, &preds, &json);
        assert_eq!(v["files"][0]["rows"], 40);
        assert_eq!(v["files"][0]["rows_without_claims"], 0);
        for (attr, (asserted, right)) in scores(&v) {
            assert!(asserted > 0, "{tag}: {attr} never asserted");
            assert_eq!(asserted, right, "{tag}: {attr}");
            if tag == "detail" {
                assert_eq!(asserted, 40, "{tag}: {attr}");
            }
        }
        // The templates name every difference: recall 100% for every attribute that differs
        // somewhere, and every pair has all its differences named.
        let f = &v["files"][0];
        for a in f["attributes"].as_array().unwrap() {
            let (differing, named) = (
                a["differing"].as_u64().unwrap(),
                a["named"].as_u64().unwrap(),
            );
            assert!(differing > 0, "{tag}: {a}");
            assert_eq!(named, differing, "{tag}: {a}");
        }
        assert_eq!(f["all_named"], f["pairs_differing"], "{tag}");
        assert_eq!(
            f["pairs_differing"], 40,
            "{tag}: every synthetic pair differs"
        );
    }

    // Wrong on purpose: the first row that compares loudness says the opposite, and the first
    // row that names two source kinds swaps them.
    let src = dir.join("test_sentence_answer.csv");
    let answers: Vec<String> = csv::Reader::from_path(&src)
        .unwrap()
        .records()
        .map(|r| r.unwrap()[6].to_string())
        .collect();
    let loud_row = answers
        .iter()
        .position(|a| a.contains("louder") || a.contains("quieter"))
        .unwrap();
    let kinds = ["a tone", "a buzz", "a chord", "noise", "clicks"];
    let kind_row = answers
        .iter()
        .position(|a| {
            a.split(" instead of ")
                .next()
                .is_some_and(|x| kinds.iter().any(|k| x.ends_with(k)))
        })
        .unwrap();
    let preds = dir.join("preds_wrong.csv");
    write_preds(&src, &preds, |i, a| {
        let mut s = a.to_string();
        if i == loud_row {
            s = s
                .replace("louder", "@")
                .replace("quieter", "louder")
                .replace('@', "quieter");
        }
        if i == kind_row {
            // "The second audio is ... X instead of Y ..." -> "... Y instead of X ...".
            let (before, after) = s.split_once(" instead of ").unwrap();
            let x = kinds.iter().find(|k| before.ends_with(*k)).unwrap();
            let y = [
                "a tone",
                "a buzz",
                "a chord",
                "noise",
                "clicks",
                "a rising chirp",
                "a falling chirp",
            ]
            .into_iter()
            .find(|k| after.starts_with(k))
            .unwrap();
            s = format!(
                "{}{y} instead of {x}{}",
                &before[..before.len() - x.len()],
                &after[y.len()..]
            );
        }
        s
    });
    let right = scores(&eval_json(&truth, &preds, &json));
    let good = scores(&eval_json(&truth, &dir.join("preds_sentence.csv"), &json));
    let (asserted, ok) = right["loudness"];
    assert_eq!((asserted, ok), (good["loudness"].0, good["loudness"].1 - 1));
    let (asserted, ok) = right["source kind"];
    assert_eq!(
        (asserted, ok),
        (good["source kind"].0, good["source kind"].1 - 1)
    );
    assert_eq!(right["pitch"], good["pitch"]);
    // Each wrong claim is a named difference lost (both rows' pairs differ in that attribute)
    // and, for the two rows, a pair no longer fully named.
    let wrong = eval_json(&truth, &preds, &json);
    let good = eval_json(&truth, &dir.join("preds_sentence.csv"), &json);
    let named = |v: &serde_json::Value, attr: &str| {
        v["files"][0]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["attribute"] == attr)
            .unwrap()["named"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(named(&wrong, "loudness"), named(&good, "loudness") - 1);
    assert_eq!(
        named(&wrong, "source kind"),
        named(&good, "source kind") - 1
    );
    let all = |v: &serde_json::Value| v["files"][0]["all_named"].as_u64().unwrap();
    let lost = if loud_row == kind_row { 1 } else { 2 };
    assert_eq!(all(&wrong), all(&good) - lost);
    std::fs::remove_dir_all(dir).ok();
}

fn one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle) && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn bad_input_gives_one_error_line() {
    let dir = tmp("synth-errors");
    let d = dir.to_str().unwrap();
    one_line_error(
        &adiff(&["build-dataset", "synthetic", "-o", d, "--split", "a/b"]),
        "--split 'a/b'",
    );
    one_line_error(
        &adiff(&["build-dataset", "synthetic", "-o", d, "--count", "0"]),
        "--count must be between 1 and 999999",
    );
    one_line_error(
        &adiff(&["build-dataset", "synthetic", "-o", d, "--count", "1000000"]),
        "--count must be between 1 and 999999",
    );
    build(&dir, 2, 0, "train");
    let preds = dir.join("preds.csv");
    std::fs::write(
        &preds,
        "filepath1,filepath2,prediction\naudio/train_000000_1.wav,audio/nope.wav,louder\n",
    )
    .unwrap();
    let truth = dir.join("truth.jsonl");
    one_line_error(
        &adiff(&[
            "eval",
            "--synthetic",
            truth.to_str().unwrap(),
            preds.to_str().unwrap(),
        ]),
        "line 2: audio 'audio/nope.wav' has no record",
    );
    std::fs::write(&preds, "filepath1,prediction\na,b\n").unwrap();
    one_line_error(
        &adiff(&[
            "eval",
            "--synthetic",
            truth.to_str().unwrap(),
            preds.to_str().unwrap(),
        ]),
        "no 'filepath2' column",
    );
    std::fs::write(&truth, "{\"path\": 3}\n").unwrap();
    one_line_error(
        &adiff(&[
            "eval",
            "--synthetic",
            truth.to_str().unwrap(),
            preds.to_str().unwrap(),
        ]),
        "line 1: not a truth record",
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `synthetic-remix` over the clips of two splits: pairs of those clips only, explanations that
/// `eval --synthetic` scores 100% against the clips' own truth records, identical files for the
/// same seed, and truth.jsonl and the audio left as they were.
#[test]
fn remixed_pairs_are_new_pairs_of_pool_clips_explained_truly() {
    let dir = tmp("synth-remix");
    build(&dir, 30, 1, "train");
    build(&dir, 20, 4, "extra");
    build(&dir, 10, 2, "test");
    let before = files(&dir);
    let d = dir.to_str().unwrap();
    let remix = |seed: &str, split: &str| {
        let o = adiff(&[
            "build-dataset",
            "synthetic-remix",
            "-o",
            d,
            "--from",
            "train,extra",
            "--count",
            "60",
            "--seed",
            seed,
            "--split",
            split,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    remix("7", "mix");
    let after = files(&dir);
    for (name, bytes) in &before {
        assert_eq!(after.get(name), Some(bytes), "{name} changed");
    }
    let pool: std::collections::HashSet<String> = truth(&dir)
        .into_iter()
        .filter(|r| r.split != "test")
        .map(|r| r.path)
        .collect();
    let rows = |tag: &str| -> Vec<csv::StringRecord> {
        csv::Reader::from_path(dir.join(format!("mix_{tag}_answer.csv")))
            .unwrap()
            .records()
            .map(Result::unwrap)
            .collect()
    };
    let sentence = rows("sentence");
    assert_eq!(sentence.len(), 60);
    // Not the pairs `synthetic` made: most first and second clips come from different pairs.
    let mut new_pairs = 0;
    for r in &sentence {
        assert!(pool.contains(&r[1]) && pool.contains(&r[2]), "{:?}", r);
        assert_ne!(&r[1], &r[2]);
        new_pairs += usize::from(r[1][..r[1].len() - 6] != r[2][..r[2].len() - 6]);
    }
    assert!(new_pairs >= 50, "{new_pairs} of 60 pairs are new");
    let truth_file = dir.join("truth.jsonl");
    let json = dir.join("scores.json");
    for tag in ["fewwords", "sentence", "detail"] {
        assert_eq!(rows(tag).len(), 60);
        let preds = dir.join(format!("preds_mix_{tag}.csv"));
        write_preds(
            &dir.join(format!("mix_{tag}_answer.csv")),
            &preds,
            |_, a| a.to_string(),
        );
        for (attr, (asserted, right)) in scores(&eval_json(&truth_file, &preds, &json)) {
            assert_eq!(asserted, right, "{tag}: {attr}");
        }
    }
    let first = std::fs::read(dir.join("mix_sentence_answer.csv")).unwrap();
    remix("7", "mix");
    assert_eq!(
        std::fs::read(dir.join("mix_sentence_answer.csv")).unwrap(),
        first
    );
    remix("8", "mix");
    assert_ne!(
        std::fs::read(dir.join("mix_sentence_answer.csv")).unwrap(),
        first
    );

    // A split that has clips would lose its CSVs; an unknown --from split is named.
    let base = [
        "build-dataset",
        "synthetic-remix",
        "-o",
        d,
        "--from",
        "train",
    ];
    one_line_error(
        &adiff(&[&base[..], &["--split", "test"]].concat()),
        "--split 'test' has clips",
    );
    one_line_error(
        &adiff(&[
            "build-dataset",
            "synthetic-remix",
            "-o",
            d,
            "--from",
            "nope",
        ]),
        "--from 'nope': no clips of that split",
    );
    one_line_error(
        &adiff(&[&base[..], &["--split", "a/b"]].concat()),
        "--split 'a/b'",
    );

    // --including pitch: every pair differs in pitch, and (with 1-3 differences drawn) some
    // pairs in more than pitch; the clips' truth records say so, not the answers.
    let o = adiff(
        &[
            &base[..],
            &["--split", "inc", "--including", "pitch", "--count", "60"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let labels: std::collections::HashMap<String, Attributes> = truth(&dir)
        .into_iter()
        .map(|r| (r.path, r.spec.attributes))
        .collect();
    let mut counts = [0usize; 6];
    for r in csv::Reader::from_path(dir.join("inc_sentence_answer.csv"))
        .unwrap()
        .records()
        .map(Result::unwrap)
    {
        let d = labels[&r[1]].differences(&labels[&r[2]]);
        assert!(d.contains(&Attribute::Pitch), "{:?}: {d:?}", r);
        counts[d.len()] += 1;
    }
    assert!(counts[1] > 0 && counts[2] + counts[3] > 0, "{counts:?}");
    assert_eq!(counts[4] + counts[5], 0, "{counts:?}");
    one_line_error(
        &adiff(
            &[
                &base[..],
                &[
                    "--split",
                    "inc2",
                    "--including",
                    "pitch,kind",
                    "--differences",
                    "1",
                ],
            ]
            .concat(),
        ),
        "--differences 1 is fewer than the 2 attributes of --including",
    );
    // A repeated attribute counts once: pitch,pitch with one difference is pitch-only pairs.
    let o = adiff(
        &[
            &base[..],
            &[
                "--split",
                "inc3",
                "--including",
                "pitch,pitch",
                "--differences",
                "1",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for r in csv::Reader::from_path(dir.join("inc3_sentence_answer.csv"))
        .unwrap()
        .records()
        .map(Result::unwrap)
    {
        let d = labels[&r[1]].differences(&labels[&r[2]]);
        assert_eq!(d, vec![Attribute::Pitch], "{:?}", r);
    }
    std::fs::remove_dir_all(dir).ok();
}

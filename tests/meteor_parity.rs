//! METEOR 1.5 parity with pycocoevalcap 1.2's meteor-1.5.jar (fixtures from
//! scripts/fixtures_meteor.py: 5 cases x 300 items of real ACD/CLD answers, 1 and 2 references;
//! from scripts/fixtures_meteor_generated.py: 2,850 generated items, 1-5 references, built to
//! reach what the real answers rarely do).
//!
//! Needs Meteor's language data, which is not committed: `$ADIFF_METEOR_DATA` must name
//! meteor-1.5.jar (with data/paraphrase-en.gz beside it) or a directory with the jar's data
//! extracted (the two forms `adiff eval --meteor-data` accepts). `.ci/run` fetches the
//! pycocoevalcap wheel and sets it. Without it the tests that need it say so and pass, unless
//! `$CI` is set: then they fail, so that a CI run without the data cannot look green.

mod common;

use std::path::{Path, PathBuf};

use adiff::metrics::meteor::{Meteor, MeteorData, MeteorStats};
use serde::Deserialize;

/// Whether `$CI` is set (to anything but empty, `0` or `false`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The data `$ADIFF_METEOR_DATA` names. Without it: None after a message, or a failure in CI.
fn meteor_data_or_skip(test: &str) -> Option<MeteorData> {
    let data = MeteorData::locate(None).expect("ADIFF_METEOR_DATA");
    if data.is_none() {
        // A CI run without the data would otherwise pass without checking METEOR at all.
        assert!(
            !in_ci(),
            "{test}: CI is set but ADIFF_METEOR_DATA is not: METEOR parity would not be checked \
             (scripts/fetch-meteor-data.sh DIR, then ADIFF_METEOR_DATA=DIR/meteor-1.5.jar)"
        );
        eprintln!(
            "SKIPPED {test}: set ADIFF_METEOR_DATA to meteor-1.5.jar (or a directory with its \
             extracted data) to run METEOR parity"
        );
    }
    data
}

/// The path `--meteor-data` takes for `data`, in the form it was given (jar or directory).
fn data_path(data: &MeteorData) -> &Path {
    match data {
        MeteorData::Jar(p) | MeteorData::Dir(p) => p,
    }
}

#[derive(Deserialize)]
struct Case {
    name: String,
    raw_hyps: Vec<String>,
    raw_refs: Vec<Vec<String>>,
    hyps: Vec<String>,
    refs: Vec<Vec<String>>,
    corpus: f64,
    items: Vec<f64>,
    stats: Vec<String>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

/// The jar's statistics line, in `MeteorStats.toString` order.
fn stats_line(s: &MeteorStats) -> Vec<f64> {
    let mut v = vec![
        s.test_length,
        s.reference_length,
        s.test_function_words,
        s.reference_function_words,
    ];
    let (mut tm, mut rm) = (0.0, 0.0);
    for i in 0..4 {
        tm += s.test_content[i] + s.test_function[i];
        rm += s.reference_content[i] + s.reference_function[i];
    }
    for i in 0..4 {
        v.extend([
            s.test_content[i],
            s.reference_content[i],
            s.test_function[i],
            s.reference_function[i],
        ]);
    }
    v.extend([s.chunks, tm, rm]);
    v
}

/// Item and corpus tolerance the issue asks for (the differences measured are ~1e-16).
const TOL: f64 = 1e-3;

#[test]
fn meteor_matches_pycocoevalcap() {
    let Some(data) = meteor_data_or_skip("meteor_matches_pycocoevalcap") else {
        return;
    };
    let text = std::fs::read_to_string(common::fixture("metrics/meteor.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    let mut worst_item: f64 = 0.0;
    let mut worst_corpus: f64 = 0.0;
    let mut stats_diff = Vec::new();
    for case in &fixture.cases {
        let t = std::time::Instant::now();
        let (meteor, texts) = Meteor::prepare(&data, &case.hyps, &case.refs).unwrap();
        let load = t.elapsed();
        let (scores, stats) = meteor.score(&texts.hyps, &texts.refs);
        for (i, s) in stats.iter().enumerate() {
            let ours = stats_line(s);
            let jar: Vec<f64> = case.stats[i]
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            if ours != jar {
                stats_diff.push(format!(
                    "{} item {i}: ours {ours:?}\n   jar {jar:?}\n   hyp {:?}\n   refs {:?}",
                    case.name, texts.hyps[i], texts.refs[i]
                ));
            }
            worst_item = worst_item.max((scores.items[i] - case.items[i]).abs());
        }
        let d = (scores.corpus - case.corpus).abs();
        worst_corpus = worst_corpus.max(d);
        println!(
            "{}: corpus ours {:.6} jar {:.6} (diff {d:.1e}); data load {:.2} s, {} paraphrases kept, scoring {:.3} s",
            case.name,
            scores.corpus,
            case.corpus,
            load.as_secs_f64(),
            meteor.resources.paraphrases.len(),
            (t.elapsed() - load).as_secs_f64()
        );
    }
    println!(
        "max item diff {worst_item:.2e}, max corpus diff {worst_corpus:.2e}, {} items with other statistics",
        stats_diff.len()
    );
    for d in stats_diff.iter().take(8) {
        println!("{d}");
    }
    assert!(worst_item <= TOL, "item METEOR differs by {worst_item}");
    assert!(
        worst_corpus <= TOL,
        "corpus METEOR differs by {worst_corpus}"
    );
    assert!(
        stats_diff.is_empty(),
        "{} items' statistics differ from the jar's",
        stats_diff.len()
    );
}

/// tests/fixtures/metrics/meteor_generated.json (scripts/fixtures_meteor_generated.py): seeded
/// items built to reach what the real answers rarely do. Texts are stored once; an item is
/// `[category index, hypothesis text index, [reference text indices]]`.
#[derive(Deserialize)]
struct Generated {
    categories: Vec<String>,
    texts: Vec<String>,
    items: Vec<(usize, usize, Vec<usize>)>,
    stats: Vec<String>,
    scores: Vec<f64>,
    corpus: f64,
}

/// Items of the generated fixture whose statistics adiff knowingly gets wrong (item id, jar's
/// line). Empty: every item matches; any new difference fails the test.
const GENERATED_KNOWN_DIFFERENCES: &[(usize, &str)] = &[];

/// Item and corpus tolerance of the generated fixture. The statistics are compared exactly:
/// they are counts (of words, function words, matches per module and word type, chunks) that
/// the jar prints as doubles ("26.0"), exactly representable, so any difference is a different
/// alignment or tokenization. The scores are the same closed formula of those counts in the
/// same order of operations, so they agree to rounding (~1e-16); 1e-9 is what the issue asks.
const GENERATED_TOL: f64 = 1e-9;

/// The jar's per-item statistics on ~2,800 generated items (long detailed answers, 2-5
/// references, numbers, hyphens, punctuation runs, stem / WordNet / paraphrase-only matches,
/// function and repeated words, empty and one-word hypotheses, mixed case): every item's SCORE
/// line exactly (but for the listed known differences), item scores and the corpus score within
/// 1e-9.
#[test]
fn meteor_generated_statistics_match_jar() {
    let Some(data) = meteor_data_or_skip("meteor_generated_statistics_match_jar") else {
        return;
    };
    let text = std::fs::read_to_string(common::fixture("metrics/meteor_generated.json")).unwrap();
    let g: Generated = serde_json::from_str(&text).unwrap();
    let hyps: Vec<&str> = g.items.iter().map(|it| g.texts[it.1].as_str()).collect();
    let refs: Vec<Vec<&str>> = g
        .items
        .iter()
        .map(|it| it.2.iter().map(|&r| g.texts[r].as_str()).collect())
        .collect();
    let (meteor, texts) = Meteor::prepare(&data, &hyps, &refs).unwrap();
    let (scores, stats) = meteor.score(&texts.hyps, &texts.refs);
    assert_eq!(stats.len(), g.stats.len());
    let mut per_cat = vec![(0usize, 0usize); g.categories.len()];
    let mut diffs = Vec::new();
    let mut worst_item: f64 = 0.0;
    for (i, s) in stats.iter().enumerate() {
        let ours = stats_line(s);
        let jar: Vec<f64> = g.stats[i]
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let cat = &mut per_cat[g.items[i].0];
        cat.1 += 1;
        if ours == jar {
            cat.0 += 1;
            // A NaN on either side counts as the largest difference (f64::max would drop it).
            let d = (scores.items[i] - g.scores[i]).abs();
            worst_item = worst_item.max(if d.is_nan() { f64::INFINITY } else { d });
        } else {
            diffs.push((i, ours, jar));
        }
    }
    let matched: usize = per_cat.iter().map(|c| c.0).sum();
    println!(
        "{matched} of {} generated items' statistics match the jar's",
        stats.len()
    );
    for (name, (m, n)) in g.categories.iter().zip(&per_cat) {
        println!("  {name}: {m} of {n}");
    }
    for (i, ours, jar) in &diffs {
        println!(
            "item {i} ({}): ours {ours:?}\n   jar {jar:?}\n   hyp {:?}\n   refs {:?}",
            g.categories[g.items[*i].0], texts.hyps[*i], texts.refs[*i]
        );
    }
    let corpus_diff = (scores.corpus - g.corpus).abs();
    println!(
        "corpus ours {:.12} jar {:.12} (diff {corpus_diff:.1e}); max item diff {worst_item:.1e}",
        scores.corpus, g.corpus
    );
    let known: Vec<(usize, &str)> = GENERATED_KNOWN_DIFFERENCES.to_vec();
    let found: Vec<(usize, &str)> = diffs.iter().map(|d| (d.0, g.stats[d.0].as_str())).collect();
    assert_eq!(found, known, "items whose statistics differ from the jar's");
    assert!(
        worst_item <= GENERATED_TOL,
        "item METEOR differs by {worst_item}"
    );
    if known.is_empty() {
        assert!(
            corpus_diff <= GENERATED_TOL,
            "corpus METEOR differs by {corpus_diff}"
        );
    }
}

/// The fixture case the CLI tests score.
fn cli_case() -> Case {
    let text = std::fs::read_to_string(common::fixture("metrics/meteor.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    fixture
        .cases
        .into_iter()
        .find(|c| c.name == "cld_sentence_2ref")
        .expect("case")
}

/// `adiff eval --meteor-data DATA` on an infer-style CSV of `case`; returns the corpus METEOR
/// of the JSON report.
fn eval_cli(case: &Case, data: &Path) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("cld_sentence_preds.csv");
    let mut w = csv::Writer::from_path(&csv_path).unwrap();
    w.write_record(["taskname", "answer", "answer_2", "prediction"])
        .unwrap();
    for (h, rs) in case.raw_hyps.iter().zip(&case.raw_refs) {
        w.write_record(["clothov21", &rs[0], &rs[1], h]).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let json = dir.path().join("scores.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adiff"))
        .env_remove("ADIFF_METEOR_DATA")
        .env_remove("ADIFF_SPICE_JAR")
        .args(["eval".as_ref(), csv_path.as_os_str()])
        .args(["--json".as_ref(), json.as_os_str()])
        .args(["--meteor-data".as_ref(), data.as_os_str()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(j["groups"][0]["unavailable"].get("METEOR").is_none(), "{j}");
    j["groups"][0]["meteor"].as_f64().expect("meteor number")
}

/// `adiff eval --meteor-data` prints the jar's corpus METEOR for an infer-style CSV, with the
/// data in the form `$ADIFF_METEOR_DATA` gives it (the jar or an extracted directory).
#[test]
fn eval_cli_meteor() {
    let Some(data) = meteor_data_or_skip("eval_cli_meteor") else {
        return;
    };
    let case = cli_case();
    let m = eval_cli(&case, data_path(&data));
    assert!(
        (m - case.corpus).abs() <= 1e-9,
        "cli METEOR {m} vs jar {}",
        case.corpus
    );
}

/// The jar's data extracted into `dir` (as `unzip meteor-1.5.jar -d dir` would), with the
/// paraphrase table linked in at `dir/data/paraphrase-en.gz`: the directory form.
fn extract_jar(jar: &Path, dir: &Path) -> PathBuf {
    let file = std::fs::File::open(jar).unwrap();
    zip::ZipArchive::new(file).unwrap().extract(dir).unwrap();
    let table = std::fs::canonicalize(MeteorData::Jar(jar.to_path_buf()).paraphrase_path())
        .expect("data/paraphrase-en.gz beside the jar");
    let dest = dir.join("data/paraphrase-en.gz");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&table, &dest).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(&table, &dest).unwrap();
    dir.to_path_buf()
}

/// The directory form, `--meteor-data DIR` (`ADIFF_METEOR_DATA=DIR` goes through the same
/// `MeteorData::locate`): the jar's corpus METEOR, as from the jar. (Before, only the jar form
/// was run: a directory in `ADIFF_METEOR_DATA` skipped the CLI test.)
#[test]
fn eval_cli_meteor_extracted_directory() {
    let Some(data) = meteor_data_or_skip("eval_cli_meteor_extracted_directory") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = match &data {
        MeteorData::Jar(jar) => extract_jar(jar, tmp.path()),
        MeteorData::Dir(dir) => dir.clone(),
    };
    assert!(
        matches!(MeteorData::locate(Some(&dir)), Ok(Some(MeteorData::Dir(_)))),
        "{} is not taken as a data directory",
        dir.display()
    );
    let case = cli_case();
    let m = eval_cli(&case, &dir);
    assert!(
        (m - case.corpus).abs() <= 1e-9,
        "cli METEOR {m} from the directory vs jar {}",
        case.corpus
    );
}

/// A wrong `--meteor-data` is one clear error line.
#[test]
fn eval_cli_meteor_bad_data() {
    let dir = common::Scratch::new("adiff-meteor-bad");
    let csv_path = dir.join("x_sentence_preds.csv");
    std::fs::write(&csv_path, "answer,prediction\na dog,a cat\n").unwrap();
    let not_jar = dir.join("meteor-1.5.jar");
    std::fs::write(&not_jar, b"not a zip").unwrap();
    for (data, needle) in [
        (dir.join("missing.jar"), "does not exist"),
        (not_jar.clone(), "is not a jar"),
        (dir.to_path_buf(), "nonbreaking/english.prefixes"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_adiff"))
            .env_remove("ADIFF_METEOR_DATA")
            .args(["eval".as_ref(), csv_path.as_os_str()])
            .args(["--group-by", "tier"])
            .args(["--meteor-data".as_ref(), data.as_os_str()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", data.display());
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

/// The paraphrase table's binary cache (`paraphrase_cache`): built beside the table at first use;
/// a second run reads it and scores the same; a table edited since (another size and hash) is
/// re-read, not served from the stale cache; a damaged cache is rebuilt. A small table written
/// here (gzip, the jar's three-line format) makes the paraphrase module decide the score: without
/// its entry "the zorp barks" matches only "the" and "barks" of "the blick barks" (made-up
/// words: no stem or synonym can match them).
#[test]
fn paraphrase_cache_is_built_reused_and_rebuilt_when_stale() {
    use adiff::metrics::meteor::paraphrase_cache::CACHE_NAME;
    use adiff::metrics::meteor::Meteor;
    use std::io::Write;
    let Some(data) = meteor_data_or_skip("paraphrase_cache_is_built_reused_and_rebuilt_when_stale")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = match &data {
        MeteorData::Jar(jar) => extract_jar(jar, tmp.path()),
        MeteorData::Dir(d) => {
            let copy = tmp.path().to_path_buf();
            for entry in ["function", "synonym", "nonbreaking"] {
                let (from, to) = (d.join(entry), copy.join(entry));
                std::fs::create_dir_all(&to).unwrap();
                for f in std::fs::read_dir(&from).unwrap() {
                    let f = f.unwrap().path();
                    std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
                }
            }
            copy
        }
    };
    let table = dir.join("data/paraphrase-en.gz");
    let cache = dir.join("data").join(CACHE_NAME);
    let write_table = |entries: &[(&str, &str)]| {
        let _ = std::fs::remove_file(&table);
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&table).unwrap(),
            flate2::Compression::default(),
        );
        for (a, b) in entries {
            writeln!(gz, "0.5\n{a}\n{b}").unwrap();
        }
        gz.finish().unwrap();
    };
    let hyps = vec!["the zorp barks".to_string()];
    let refs = vec![vec!["the blick barks".to_string()]];
    let score = || {
        let data = MeteorData::locate(Some(&dir)).unwrap().unwrap();
        let (m, texts) = Meteor::prepare(&data, &hyps, &refs).unwrap();
        let (scores, _) = m.score(&texts.hyps, &texts.refs);
        scores.corpus
    };
    // An unrelated entry only: no paraphrase match.
    write_table(&[("cat", "kitten")]);
    let plain = score();
    assert!(cache.is_file(), "no cache beside the table");
    let built = std::fs::read(&cache).unwrap();
    assert_eq!(score(), plain, "the cached table scores otherwise");
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        built,
        "a valid cache was rewritten"
    );
    // The table now pairs "zorp" with "blick": a stale cache would still miss it.
    write_table(&[("cat", "kitten"), ("zorp", "blick")]);
    let with_entry = score();
    assert!(
        with_entry > plain,
        "{with_entry} <= {plain}: the edited table was not read"
    );
    assert_ne!(
        std::fs::read(&cache).unwrap(),
        built,
        "the stale cache was kept"
    );
    // A damaged cache (cut in half) is rebuilt, and scores the same.
    let good = std::fs::read(&cache).unwrap();
    std::fs::write(&cache, &good[..good.len() / 2]).unwrap();
    assert_eq!(score(), with_entry);
    assert_eq!(std::fs::read(&cache).unwrap(), good);
}

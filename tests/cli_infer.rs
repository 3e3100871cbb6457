//! `adiff infer` end to end on the tiny fixture model: predictions equal the PyTorch reference
//! texts, broken rows are skipped and reported, and an interrupted run resumes.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{fixture, root, tiny_model_args};

fn infer(data: &Path, audio_root: &Path, out: &Path) -> Output {
    infer_with(
        data,
        audio_root,
        out,
        &["--max-tokens", "30", "--batch-size", "2"],
    )
}

/// `adiff infer` on the tiny model with `extra` options.
fn infer_with(data: &Path, audio_root: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adiff"));
    cmd.arg("infer")
        .arg(data)
        .arg("--audio-root")
        .arg(audio_root)
        .arg("-o")
        .arg(out);
    cmd.args(tiny_model_args());
    cmd.args(extra);
    cmd.current_dir(root()).output().unwrap()
}

fn read_predictions(path: &Path) -> Vec<(String, String, String, String)> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let h = rdr.headers().unwrap().clone();
    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        [
            "taskname",
            "filepath1",
            "filepath2",
            "caption1",
            "caption2",
            "input",
            "answer",
            "prediction"
        ]
    );
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[1].to_string(),
                r[2].to_string(),
                r[5].to_string(),
                r[7].to_string(),
            )
        })
        .collect()
}

#[test]
fn infer_writes_reference_predictions_skips_broken_rows_and_resumes() {
    let dir = common::Scratch::new("adiff-test-infer");
    let audio = dir.join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    std::fs::copy(fixture("htsat/clip_a.wav"), audio.join("a.wav")).unwrap();
    std::fs::copy(fixture("htsat/clip_b.wav"), audio.join("b.wav")).unwrap();
    std::fs::write(audio.join("broken.wav"), b"RIFF....WAVEnot audio").unwrap();
    let csv_path = dir.join("data.csv");
    std::fs::write(
        &csv_path,
        "taskname,filepath1,filepath2,caption1,caption2,input,answer\n\
         t,a.wav,b.wav,\"c1, with comma\",c2,explain the difference in detail,\"ref\nwith newline\"\n\
         t,b.wav,a.wav,c1,c2,explain the difference in few words,ref\n\
         t,a.wav,missing.wav,c1,c2,explain the difference in detail,ref\n\
         t,broken.wav,a.wav,c1,c2,explain the difference in detail,ref\n\
         t,a.wav,b.wav,c1,c2,explain the difference in detail,again\n",
    )
    .unwrap();
    let out = dir.join("preds.csv");
    let o = infer(&csv_path, &audio, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    // Rows were skipped: exit status 2 (some rows without a prediction), not success.
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("missing.wav") && err.contains("broken.wav"),
        "{err}"
    );
    assert!(err.contains("3 pair(s) explained, 2 skipped"), "{err}");

    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("adiff/adiff_tiny_expected.json")).unwrap(),
    )
    .unwrap();
    let text = |i: usize| {
        expected["rows"][i]["reference_text"]
            .as_str()
            .unwrap()
            .trim()
            .to_string()
    };
    let preds = read_predictions(&out);
    assert_eq!(preds.len(), 3);
    assert_eq!(preds[0].3, text(0));
    assert_eq!(preds[1].3, text(1));
    assert_eq!(preds[2].3, text(0));
    let complete = std::fs::read_to_string(&out).unwrap();

    // Nothing left to do.
    let o = infer(&csv_path, &audio, &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("0 pair(s) explained, 2 skipped (reasons above), 3 already"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), complete);

    // An interrupted run: the last row is cut mid-record; it is dropped and redone.
    std::fs::write(&out, &complete[..complete.len() - 10]).unwrap();
    let o = infer(&csv_path, &audio, &out);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(read_predictions(&out), preds);
}

#[test]
fn infer_names_a_missing_column() {
    let dir = common::Scratch::new("adiff-test-infer-cols");
    std::fs::create_dir_all(&dir).unwrap();
    let csv_path = dir.join("bad.csv");
    std::fs::write(
        &csv_path,
        "taskname,filepath1,filepath2,caption1,caption2,answer\nt,a,b,c,d,e\n",
    )
    .unwrap();
    let o = infer(&csv_path, &dir, &dir.join("out.csv"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("missing column 'input'") && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

/// Sampled predictions of `infer` at `--batch-size`, from the `prediction` column.
fn sampled(data: &Path, audio_root: &Path, out: &Path, batch: &str) -> Vec<String> {
    let o = infer_with(
        data,
        audio_root,
        out,
        &[
            "--max-tokens",
            "8",
            "--sample",
            "--seed",
            "5",
            "--batch-size",
            batch,
        ],
    );
    assert!(
        matches!(o.status.code(), Some(0) | Some(2)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut rdr = csv::Reader::from_path(out).unwrap();
    let col = rdr
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "prediction")
        .unwrap();
    rdr.records().map(|r| r.unwrap()[col].to_string()).collect()
}

/// Sampling was seeded by a row's position in its batch, so a pair's sampled explanation
/// changed with --batch-size, with skipped rows and after a resume. It is now seeded by the
/// row's index in the input CSV: the same text in all three cases.
#[test]
fn sampled_infer_does_not_depend_on_batching_skips_or_resume() {
    let dir = common::Scratch::new("adiff-test-infer-sample");
    let audio = fixture("htsat");
    let rows = |third: &str| {
        format!(
            "filepath1,filepath2,input\n\
             clip_a.wav,clip_b.wav,explain the difference in few words\n\
             clip_b.wav,clip_a.wav,explain the difference in few words\n\
             {third},clip_a.wav,explain the difference in one sentence\n\
             clip_a.wav,clip_b.wav,explain the difference in detail\n\
             clip_b.wav,clip_b.wav,explain the difference in few words\n"
        )
    };
    let all = dir.join("all.csv");
    std::fs::write(&all, rows("clip_a.wav")).unwrap();
    let one = sampled(&all, &audio, &dir.join("b1.csv"), "1");
    let eight = sampled(&all, &audio, &dir.join("b8.csv"), "8");
    assert_eq!(one.len(), 5);
    assert_eq!(one, eight, "batch size 1 and 8 differ");
    // The rows differ among themselves (the check above is not vacuous).
    assert_ne!(one[0], one[3]);

    // Row 3's audio missing: it is skipped, and every other row keeps its text.
    let holed = dir.join("holed.csv");
    std::fs::write(&holed, rows("missing.wav")).unwrap();
    let skipped = sampled(&holed, &audio, &dir.join("holed_out.csv"), "8");
    let mut want = one.clone();
    want.remove(2);
    assert_eq!(skipped, want, "a skipped row changed the others");

    // An interrupted run (two rows written) resumed: the same five texts.
    let full = std::fs::read_to_string(dir.join("b8.csv")).unwrap();
    let cut: Vec<&str> = full.lines().take(3).collect();
    std::fs::write(dir.join("b8.csv"), cut.join("\n") + "\n").unwrap();
    let resumed = sampled(&all, &audio, &dir.join("b8.csv"), "8");
    assert_eq!(resumed, one, "a resumed run differs");
}

/// `--batch-size auto` is 8 on the CPU (said on stderr) and predicts what a fixed batch size
/// predicts; a batch size of 0 or a word is one error line.
#[test]
fn batch_size_auto_on_the_cpu() {
    let dir = common::Scratch::new("adiff-test-infer-auto");
    let data = fixture("adiff/pairs.csv");
    let audio = fixture("htsat");
    let fixed = dir.join("fixed.csv");
    assert!(infer(&data, &audio, &fixed).status.success());
    let auto = dir.join("auto.csv");
    let o = infer_with(
        &data,
        &audio,
        &auto,
        &["--max-tokens", "30", "--batch-size", "auto"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("--batch-size auto: 8 on the CPU"), "{err}");
    assert_eq!(read_predictions(&fixed), read_predictions(&auto));
    for bad in ["0", "many"] {
        let o = infer_with(&data, &audio, &dir.join("bad.csv"), &["--batch-size", bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}"); // clap's usage error
        assert!(
            err.contains("a positive number of pairs, or 'auto'"),
            "{err}"
        );
    }
}

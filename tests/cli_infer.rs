//! `adiff infer` end to end on the tiny fixture model: predictions equal the PyTorch reference
//! texts, broken rows are skipped and reported, and an interrupted run resumes.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{fixture, root, tiny_model_args};

fn infer(data: &Path, audio_root: &Path, out: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adiff"));
    cmd.arg("infer")
        .arg(data)
        .arg("--audio-root")
        .arg(audio_root)
        .arg("-o")
        .arg(out);
    cmd.args(tiny_model_args());
    cmd.args(["--max-tokens", "30", "--batch-size", "2"]);
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
    let dir = std::env::temp_dir().join(format!("adiff-test-{}-infer", std::process::id()));
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
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn infer_names_a_missing_column() {
    let dir = std::env::temp_dir().join(format!("adiff-test-{}-infer-cols", std::process::id()));
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
    std::fs::remove_dir_all(dir).ok();
}

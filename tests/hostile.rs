//! Regression tests for what a hostile trial found (issue 28): one test per failure mode, each
//! run as a user would run the command, each asserting the clean one-line error (or the safe
//! behaviour) that replaced a panic, a silent success or lost data.

mod common;

use std::path::{Path, PathBuf};

use common::{adiff, assert_one_line_error, fixture, root};

fn tmp_dir(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("adiff-hostile-{name}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tiny config with one `audio` setting replaced.
fn tiny_config_with(dir: &Path, key: &str, value: serde_json::Value) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/tiny.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    cfg["audio"][key] = value;
    let path = dir.join(format!("tiny_{key}.json"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

/// `hop_length: 0` divided by zero (exit 101), `n_fft: 0` was accepted, `duration_s: 0` gave a
/// confusing message: each now names the setting.
#[test]
fn zero_sizes_in_a_config_are_named() {
    let dir = tmp_dir("config");
    let clip = fixture("htsat/clip_a.wav");
    let ckpt = fixture("htsat/htsat_tiny.ckpt");
    for key in ["hop_length", "n_fft", "duration_s", "sample_rate", "n_mels"] {
        let cfg = tiny_config_with(&dir, key, serde_json::json!(0));
        let out = adiff(&[
            "embed",
            s(&clip),
            "-c",
            s(&ckpt),
            "--config",
            s(&cfg),
            "-o",
            s(&dir.join("e.safetensors")),
        ]);
        assert_one_line_error(&out, &format!("audio.{key} must be a number above 0"));
    }
    let cfg = tiny_config_with(&dir, "n_fft", serde_json::json!(16));
    let out = adiff(&[
        "embed",
        s(&clip),
        "-c",
        s(&ckpt),
        "--config",
        s(&cfg),
        "-o",
        s(&dir.join("e.safetensors")),
    ]);
    assert_one_line_error(&out, "hop_length");
}

/// A WAV whose header declares a sample rate of 0 made symphonia panic; adiff caught it, but the
/// panic message and backtrace reached the terminal before the clean error.
#[test]
fn a_decoder_panic_prints_only_the_clean_error() {
    let dir = tmp_dir("rate0");
    let wav = dir.join("rate0.wav");
    // RIFF/WAVE, fmt: PCM, 1 channel, sample rate 0, 16-bit; 100 samples of data.
    let data = vec![0u8; 200];
    let mut b = Vec::new();
    b.extend(b"RIFF");
    b.extend(((36 + data.len()) as u32).to_le_bytes());
    b.extend(b"WAVEfmt ");
    b.extend(16u32.to_le_bytes());
    b.extend(1u16.to_le_bytes()); // PCM
    b.extend(1u16.to_le_bytes()); // channels
    b.extend(0u32.to_le_bytes()); // sample rate
    b.extend(0u32.to_le_bytes()); // byte rate
    b.extend(2u16.to_le_bytes()); // block align
    b.extend(16u16.to_le_bytes()); // bits per sample
    b.extend(b"data");
    b.extend((data.len() as u32).to_le_bytes());
    b.extend(&data);
    std::fs::write(&wav, b).unwrap();
    let out = adiff(&[
        "embed",
        s(&wav),
        "-c",
        s(&fixture("htsat/htsat_tiny.ckpt")),
        "--config",
        "configs/tiny.json",
        "-o",
        s(&dir.join("e.safetensors")),
    ]);
    assert_one_line_error(&out, "rate0.wav");
}

/// `explain --plot` named the demo model's event curves with AudioSet names ("Child speech")
/// while `--events` printed the model's own labels (kind=noise): the figure now draws the top
/// events under the names `--events` gives, and says which in the JSON report.
#[test]
fn plot_and_events_use_the_same_labels() {
    let dir = tmp_dir("plot");
    let fig = dir.join("fig.png");
    let out = adiff(&[
        "explain",
        "--model",
        "demo",
        "data/examples/demo_first.wav",
        "data/examples/demo_second.wav",
        "--tier",
        "1",
        "--events",
        "--json",
        "--plot",
        s(&fig),
    ]);
    let out = common::ok(out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/models/demo/labels.json")).unwrap(),
    )
    .unwrap();
    let known: Vec<&str> = labels["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for i in 0..2 {
        let plotted: Vec<&str> = r["plot"]["events"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let listed: Vec<&str> = r["events"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["label"].as_str().unwrap())
            .collect();
        assert_eq!(plotted.len(), 3, "{plotted:?}");
        assert_eq!(
            plotted,
            listed[..3],
            "audio {i}: figure and --events differ"
        );
        assert!(plotted.iter().all(|l| known.contains(l)), "{plotted:?}");
    }
    assert!(std::fs::metadata(&fig).unwrap().len() > 0);
}

/// `infer` exited 0 when it skipped rows, even every row (a wrong `--audio-root` gave a
/// header-only CSV and "success"): now 3 when no row was explained, 2 when some were not, with
/// each skipped row's line and reason.
#[test]
fn infer_exit_status_says_when_rows_were_skipped() {
    let dir = tmp_dir("infer");
    let csv = dir.join("pairs.csv");
    std::fs::write(
        &csv,
        "taskname,filepath1,filepath2,caption1,caption2,input,answer\n\
         t,clip_a.wav,clip_b.wav,c1,c2,explain the difference in few words,r\n\
         t,clip_b.wav,clip_a.wav,c1,c2,explain the difference in few words,r\n",
    )
    .unwrap();
    let run = |audio_root: &Path, out: &Path| {
        let mut args = vec![
            "infer".to_string(),
            s(&csv).into(),
            "--audio-root".into(),
            s(audio_root).into(),
            "-o".into(),
            s(out).into(),
            "--max-tokens".into(),
            "3".into(),
        ];
        args.extend(common::tiny_model_args());
        adiff(&args)
    };
    // A wrong audio root: nothing explained.
    let o = run(&dir.join("nowhere"), &dir.join("none.csv"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("skipped line 2") && err.contains("skipped line 3"),
        "{err}"
    );
    assert!(err.contains("file not found"), "{err}");
    // The right one: every row explained, success.
    let o = run(&fixture("htsat"), &dir.join("all.csv"));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `convert -o x.json` wrote the weights and then overwrote them with the config; `convert -o
/// m.safetensors` replaced a neighbouring m.json it had not written. Both are refused before
/// anything is written; --force replaces existing outputs.
#[test]
fn convert_never_overwrites_its_own_output_or_a_foreign_file() {
    let dir = tmp_dir("convert");
    let convert = |out: &Path, extra: &[&str]| {
        let mut args = vec!["convert".to_string(), "-o".into(), s(out).into()];
        args.extend(common::tiny_model_args());
        args.extend(extra.iter().map(|a| a.to_string()));
        adiff(&args)
    };
    let same = dir.join("x.json");
    assert_one_line_error(
        &convert(&same, &[]),
        "the config and the weights would be the same file",
    );
    assert!(!same.exists(), "nothing may be written");

    let out = dir.join("m.safetensors");
    let foreign = dir.join("m.json");
    std::fs::write(&foreign, "my notes\n").unwrap();
    assert_one_line_error(&convert(&out, &[]), "give --force to replace it");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "my notes\n");
    assert!(!out.exists());
    common::ok(convert(&out, &["--force"]));
    assert!(std::fs::read_to_string(&foreign)
        .unwrap()
        .contains("\"gpt2\""));
}

/// `eval --json` could overwrite its own input CSV.
#[test]
fn eval_json_never_overwrites_an_input() {
    let dir = tmp_dir("eval");
    let preds = dir.join("preds.csv");
    let text = "taskname,filepath1,filepath2,caption1,caption2,input,answer,prediction\n\
                t,a.wav,b.wav,c,d,explain the difference in few words,a dog barks,a dog barks\n";
    std::fs::write(&preds, text).unwrap();
    let out = adiff(&["eval", s(&preds), "--json", s(&preds), "--tier", "1"]);
    assert_one_line_error(&out, "would overwrite an input of this command");
    assert_eq!(std::fs::read_to_string(&preds).unwrap(), text);
}

/// A float WAV of samples 1e30 (finite, far beyond full scale) gave NaN event probabilities and
/// an explanation of "!!!!" with exit 0: such input is refused, naming the file and the sample.
#[test]
fn absurd_sample_levels_are_refused() {
    let dir = tmp_dir("level");
    let wav = dir.join("loud.wav");
    let n = 3200usize;
    let mut b = Vec::new();
    b.extend(b"RIFF");
    b.extend(((36 + 4 * n) as u32).to_le_bytes());
    b.extend(b"WAVEfmt ");
    b.extend(16u32.to_le_bytes());
    b.extend(3u16.to_le_bytes()); // IEEE float
    b.extend(1u16.to_le_bytes());
    b.extend(32_000u32.to_le_bytes());
    b.extend(128_000u32.to_le_bytes());
    b.extend(4u16.to_le_bytes());
    b.extend(32u16.to_le_bytes());
    b.extend(b"data");
    b.extend(((4 * n) as u32).to_le_bytes());
    for i in 0..n {
        b.extend((if i % 2 == 0 { 1e30f32 } else { -1e30 }).to_le_bytes());
    }
    std::fs::write(&wav, b).unwrap();
    let out = adiff(&[
        "embed",
        s(&wav),
        "-c",
        s(&fixture("htsat/htsat_tiny.ckpt")),
        "--config",
        "configs/tiny.json",
        "-o",
        s(&dir.join("e.safetensors")),
    ]);
    assert_one_line_error(
        &out,
        "loud.wav: sample 1000000000000000000000000000000 at frame 0",
    );
}

/// A checkpoint with NaN weights gave NaN probabilities and "!!!!" with exit 0: HTSAT's output
/// and GPT-2's logits are checked, and the error says where to look.
#[test]
fn nan_weights_are_an_error_that_names_the_part() {
    use adiff::model::checkpoint::{save_safetensors, Checkpoint};
    let dir = tmp_dir("nan");
    let poison = |src: &str, name_part: &str, dst: &Path| {
        let ckpt = Checkpoint::load(fixture(src)).unwrap();
        let mut tensors = std::collections::HashMap::new();
        let mut poisoned = 0;
        for n in ckpt.names() {
            let mut t = ckpt.get(n).unwrap().clone();
            if n.contains(name_part) && t.dtype() == candle_core::DType::F32 {
                t = (t * f64::NAN).unwrap();
                poisoned += 1;
            }
            tensors.insert(n.to_string(), t);
        }
        assert!(poisoned > 0, "no tensor named like {name_part}");
        save_safetensors(&tensors, None, dst).unwrap();
    };
    let explain = |htsat: &Path, gpt2: &Path| {
        adiff(&[
            "explain",
            s(&fixture("htsat/clip_a.wav")),
            s(&fixture("htsat/clip_b.wav")),
            "-c",
            s(htsat),
            "-c",
            s(gpt2),
            "-c",
            s(&fixture("adiff/adiff_tiny_rest.ckpt")),
            "--config",
            "configs/tiny.json",
            "--max-tokens",
            "3",
        ])
    };
    let bad_htsat = dir.join("htsat_nan.safetensors");
    poison(
        "htsat/htsat_tiny.ckpt",
        "patch_embed.proj.weight",
        &bad_htsat,
    );
    let good_gpt2 = fixture("gpt2/adiff_tiny.safetensors");
    assert_one_line_error(
        &explain(&bad_htsat, &good_gpt2),
        "HTSAT's output is not finite",
    );
    let bad_gpt2 = dir.join("gpt2_nan.safetensors");
    poison("gpt2/adiff_tiny.safetensors", "ln_f.weight", &bad_gpt2);
    let good_htsat = fixture("htsat/htsat_tiny.ckpt");
    assert_one_line_error(&explain(&good_htsat, &bad_gpt2), "GPT-2's logits are NaN");
}

/// `infer` required `taskname`, `caption1`, `caption2` and `answer` just to explain new pairs,
/// and dropped every other column: now `filepath1`, `filepath2` and a prompt (`input`, or
/// --tier / --prompt) are enough, and every column comes through unchanged and in order.
#[test]
fn infer_needs_only_the_pair_and_a_prompt_and_keeps_every_column() {
    let dir = tmp_dir("infer-cols");
    let csv = dir.join("pairs.csv");
    std::fs::write(
        &csv,
        "id,filepath1,filepath2,note\n\
         17,clip_a.wav,clip_b.wav,\"first, with comma\"\n\
         42,clip_b.wav,clip_a.wav,second\n",
    )
    .unwrap();
    let infer = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "infer".to_string(),
            s(&csv).into(),
            "--audio-root".into(),
            s(&fixture("htsat")).into(),
            "-o".into(),
            s(out).into(),
            "--max-tokens".into(),
            "3".into(),
        ];
        args.extend(common::tiny_model_args());
        args.extend(extra.iter().map(|a| a.to_string()));
        adiff(&args)
    };
    let out = dir.join("preds.csv");
    assert_one_line_error(
        &infer(&out, &[]),
        "missing column 'input' (the prompt; or give --tier",
    );
    common::ok(infer(&out, &["--tier", "1"]));
    let mut rdr = csv::Reader::from_path(&out).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "id",
            "filepath1",
            "filepath2",
            "note",
            "input",
            "prediction"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((&rows[0][0], &rows[0][3]), ("17", "first, with comma"));
    assert_eq!((&rows[1][0], &rows[1][3]), ("42", "second"));
    assert_eq!(&rows[0][4], "explain the difference in few words");
}

/// Resuming into an `-o` written by another model or with other decoding settings silently kept
/// the old predictions next to new ones: the run's settings are kept beside the output and a
/// resume with others is refused, naming what changed.
#[test]
fn infer_refuses_to_resume_with_other_settings() {
    let dir = tmp_dir("infer-settings");
    let csv = dir.join("pairs.csv");
    std::fs::write(
        &csv,
        "filepath1,filepath2,input\nclip_a.wav,clip_b.wav,explain the difference in few words\n",
    )
    .unwrap();
    let out = dir.join("preds.csv");
    let infer = |tokens: &str| {
        let mut args = vec![
            "infer".to_string(),
            s(&csv).into(),
            "--audio-root".into(),
            s(&fixture("htsat")).into(),
            "-o".into(),
            s(&out).into(),
            "--max-tokens".into(),
            tokens.into(),
        ];
        args.extend(common::tiny_model_args());
        adiff(&args)
    };
    common::ok(infer("3"));
    let written = std::fs::read_to_string(&out).unwrap();
    common::ok(infer("3")); // the same settings: nothing to redo
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
    assert_one_line_error(&infer("4"), "other settings (max_tokens (then 3, now 4))");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
    // An output without a settings file: who wrote it is unknown, so it is not added to.
    std::fs::remove_file(dir.join("preds.csv.settings.json")).unwrap();
    assert_one_line_error(&infer("3"), "has rows but no");
}

/// `tag -` said "-: file not found"; a huge path was echoed whole in the error.
#[test]
fn stdin_and_huge_paths_get_short_clear_errors() {
    let tag = |path: &str| {
        adiff(&[
            "tag",
            path,
            "-c",
            s(&fixture("htsat/htsat_tiny.ckpt")),
            "--config",
            "configs/tiny.json",
        ])
    };
    assert_one_line_error(&tag("-"), "standard input is not supported");
    let huge = "x".repeat(100_000);
    let out = tag(&huge);
    assert_one_line_error(&out, "(a path of 100000 characters)");
    assert!(
        out.stderr.len() < 1000,
        "{} bytes of error",
        out.stderr.len()
    );
}

/// METEOR on a 5 MB reference ran for minutes (its alignment is superquadratic): a text over
/// 1000 words is not scored by METEOR, which says so in the table and the JSON (the other
/// metrics are computed as always).
#[test]
fn meteor_is_not_run_on_absurdly_long_texts() {
    let dir = tmp_dir("meteor-long");
    let preds = dir.join("preds.csv");
    let long = "a dog barks ".repeat(400);
    std::fs::write(
        &preds,
        format!(
            "taskname,filepath1,filepath2,caption1,caption2,input,answer,prediction\n\
             t,a.wav,b.wav,c,d,explain the difference in few words,{long},a dog barks\n"
        ),
    )
    .unwrap();
    let json = dir.join("scores.json");
    let out = adiff(&[
        "eval",
        s(&preds),
        "--tier",
        "1",
        "--json",
        s(&json),
        "--meteor-data",
        s(&dir.join("no-such-meteor.jar")),
    ]);
    let out = common::ok(out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("over 1000 words"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let g = &v["groups"][0];
    assert!(g["meteor"].is_null(), "{g}");
    assert!(g["unavailable"]["METEOR"]
        .as_str()
        .unwrap()
        .contains("over 1000 words"));
    // The other metrics are still computed: ROUGE-L of the 3-word prediction inside the
    // 1200-word reference (LCS 3, precision 1, recall 3/1200, beta 1.2), by hand.
    let (p, r, b2) = (1.0, 3.0 / 1200.0, 1.2f64 * 1.2);
    let want = (1.0 + b2) * p * r / (r + b2 * p);
    let got = g["scores"]["rouge_l"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "ROUGE-L {got}, by hand {want}");
}

/// `--caption both` with the demo model (never trained on captioning) printed the difference
/// sentence twice as if they were captions: explain now warns that the two are one text.
#[test]
fn identical_captions_are_flagged() {
    let out = common::ok(adiff(&[
        "explain",
        "--model",
        "demo",
        "data/examples/demo_first.wav",
        "data/examples/demo_second.wav",
        "--caption",
        "both",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("both captions are the same text"), "{err}");
}

/// Outputs of embed, explain --plot and infer never land on an input of the same command, and
/// embed replaces an existing file only with --force.
#[test]
fn outputs_never_overwrite_inputs() {
    let dir = tmp_dir("outputs");
    let clip = dir.join("clip.wav");
    std::fs::copy(fixture("htsat/clip_a.wav"), &clip).unwrap();
    let before = std::fs::read(&clip).unwrap();
    let ckpt = fixture("htsat/htsat_tiny.ckpt");
    let embed = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "embed",
            s(&clip),
            "-c",
            s(&ckpt),
            "--config",
            "configs/tiny.json",
            "-o",
            s(out),
        ];
        args.extend(extra);
        adiff(&args)
    };
    assert_one_line_error(
        &embed(&clip, &[]),
        "would overwrite an input of this command",
    );
    assert_eq!(std::fs::read(&clip).unwrap(), before);
    let out = dir.join("e.safetensors");
    common::ok(embed(&out, &[]));
    assert_one_line_error(&embed(&out, &[]), "give --force to replace it");
    common::ok(embed(&out, &["--force"]));

    let mut args = vec![
        "explain".to_string(),
        s(&clip).into(),
        s(&fixture("htsat/clip_b.wav")).into(),
        "--max-tokens".into(),
        "2".into(),
        "--plot".into(),
        s(&clip).into(),
    ];
    args.extend(common::tiny_model_args());
    let o = adiff(&args);
    assert_one_line_error(&o, "the figure would overwrite an input");
    assert_eq!(std::fs::read(&clip).unwrap(), before);

    let csv = dir.join("pairs.csv");
    let text = "filepath1,filepath2,input\nclip.wav,clip.wav,explain the difference\n";
    std::fs::write(&csv, text).unwrap();
    let mut args = vec![
        "infer".to_string(),
        s(&csv).into(),
        "-o".into(),
        s(&csv).into(),
    ];
    args.extend(common::tiny_model_args());
    let o = adiff(&args);
    assert_one_line_error(&o, "the predictions would overwrite an input");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), text);
}

/// `adiff explain ... --json | head -c 1` panicked with "failed printing to stdout: Broken pipe"
/// when the reader closed the pipe before the report was written.
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    use std::process::{Command, Stdio};
    let mut args: Vec<String> = vec![
        "explain".into(),
        s(&fixture("htsat/clip_a.wav")).into(),
        s(&fixture("htsat/clip_b.wav")).into(),
        "--json".into(),
    ];
    args.extend(common::tiny_model_args());
    let mut child = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(&args)
        .current_dir(common::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the model has produced anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");
}

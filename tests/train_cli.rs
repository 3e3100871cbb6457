//! Training from the CLI on the tiny model and a small synthetic dataset: a run stopped (or
//! killed) and resumed ends with exactly the weights of an uninterrupted run, frozen tensors are
//! bit-for-bit the initial ones, trainable ones move, and misuse gives one clear error line.

mod common;

use common::ok;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};

fn adiff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
}

fn model_args() -> Vec<String> {
    common::tiny_model_args()
}

/// A synthetic dataset with its embedding cache, in a fresh scratch folder.
fn dataset(name: &str) -> common::Scratch {
    common::synthetic_dataset("adiff-train", name, 8, 3)
}

/// A training config: the tiny stage-2 one with `epochs` epochs.
fn config(dir: &Path, epochs: u64) -> PathBuf {
    edited_config(dir, epochs, "", |_| {})
}

/// [`config`] with `edit` applied, written as `stage2_<epochs><tag>.json`.
fn edited_config(
    dir: &Path,
    epochs: u64,
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let text =
        std::fs::read_to_string(common::root().join("configs/train/tiny_stage2.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["epochs"] = epochs.into();
    edit(&mut v);
    let p = dir.join(format!("stage2_{epochs}{tag}.json"));
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

fn stage2(dir: &Path, cfg: &Path, out: &str, extra: &[&str]) -> Command {
    let data = dir.join("data");
    let mut c = adiff();
    c.arg("train-stage2")
        .arg("--train")
        .arg(data.join("train_sentence_answer.csv"))
        .arg("--embed-cache")
        .arg(data.join("cache"))
        .args(model_args())
        .arg("--train-config")
        .arg(cfg)
        .arg("-o")
        .arg(dir.join(out))
        .arg("--quiet")
        .args(extra);
    c
}

fn load(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn identical(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims()
        && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_same_models(a: &Path, b: &Path) {
    let (ma, mb) = (load(a), load(b));
    assert_eq!(ma.len(), mb.len());
    for (k, t) in &ma {
        assert!(
            identical(t, &mb[k]),
            "{k} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn stopped_and_resumed_equals_uninterrupted_and_frozen_stays_frozen() {
    let dir = dataset("resume");
    let cfg = config(&dir, 3);
    ok(stage2(&dir, &cfg, "full", &[]).output().unwrap());
    // The written model config records the tiers of the training CSVs (sentence: tier 2).
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("full/config.json")).unwrap())
            .unwrap();
    assert_eq!(written["text"]["trained_tiers"], serde_json::json!([2]));
    // Stopped after 3 steps (mid-epoch), then twice resumed (the second time with more budget).
    let out = ok(stage2(&dir, &cfg, "parts", &["--stop-after-steps", "3"])
        .output()
        .unwrap());
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped after 3"));
    assert!(!dir.join("parts/model.safetensors").exists());
    ok(stage2(
        &dir,
        &cfg,
        "parts",
        &["--resume", "--stop-after-steps", "5"],
    )
    .output()
    .unwrap());
    ok(stage2(&dir, &cfg, "parts", &["--resume"]).output().unwrap());
    assert_same_models(
        &dir.join("full/model.safetensors"),
        &dir.join("parts/model.safetensors"),
    );

    // Frozen tensors (HTSAT, GPT-2) are bit-for-bit the initial ones; trained ones moved.
    let trained = load(&dir.join("full/model.safetensors"));
    let mut init = HashMap::new();
    for f in common::tiny_checkpoint_parts() {
        let c = adiff::model::checkpoint::Checkpoint::load(f).unwrap();
        for n in c.names() {
            init.insert(n.to_string(), c.get(n).unwrap().clone());
        }
    }
    let (mut frozen, mut moved) = (0, 0);
    for (name, t) in &trained {
        let t0 = &init[name];
        if name.starts_with("audio_encoder.base") || name.starts_with("caption_decoder.gpt") {
            assert!(identical(t, t0), "frozen tensor {name} changed");
            frozen += 1;
        } else if !identical(t, t0) {
            moved += 1;
        }
    }
    assert!(frozen > 100, "{frozen} frozen tensors checked");
    assert!(moved >= 100, "only {moved} trainable tensors moved");
    let log = std::fs::read_to_string(dir.join("parts/log.jsonl")).unwrap();
    assert_eq!(log.matches("\"event\":\"resume\"").count(), 2);
}

/// Weight averaging: the averages travel in the checkpoints (a stopped and resumed run exports
/// exactly the uninterrupted run's averaged model), and the export holds the averages, not the
/// last weights.
#[test]
fn weight_average_resumes_exactly_and_is_exported() {
    let dir = dataset("average");
    let plain = config(&dir, 3);
    let cfg = edited_config(&dir, 3, "_average", |v| {
        v["weight_average_decay"] = 0.9.into()
    });
    ok(stage2(&dir, &cfg, "full", &[]).output().unwrap());
    ok(stage2(&dir, &cfg, "parts", &["--stop-after-steps", "4"])
        .output()
        .unwrap());
    ok(stage2(&dir, &cfg, "parts", &["--resume"]).output().unwrap());
    assert_same_models(
        &dir.join("full/model.safetensors"),
        &dir.join("parts/model.safetensors"),
    );
    ok(stage2(&dir, &plain, "last", &[]).output().unwrap());
    let (avg, last) = (
        load(&dir.join("full/model.safetensors")),
        load(&dir.join("last/model.safetensors")),
    );
    let differ = avg
        .iter()
        .filter(|(k, t)| !identical(t, &last[k.as_str()]))
        .count();
    assert!(
        differ >= 100,
        "only {differ} tensors differ from the last weights"
    );
    let log = std::fs::read_to_string(dir.join("full/log.jsonl")).unwrap();
    assert!(log.contains("\"event\":\"weights_averaged\""));
}

/// Makes `path` a FIFO.
#[cfg(target_os = "linux")]
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// A FIFO at `path`, opened read-write and non-blocking: the open never waits for the run
/// that will write to it, and reads never see end-of-file.
#[cfg(target_os = "linux")]
fn open_fifo(path: &Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    mkfifo(path);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap()
}

/// Everything the pipe holds now.
#[cfg(target_os = "linux")]
fn drain(fifo: &mut std::fs::File) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match fifo.read(&mut buf) {
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
            r => panic!("reading the pipe: {r:?}"),
        }
    }
}

/// The highest step of the checkpoints in `dir` (complete files only: they are renamed into
/// place). Not `CheckpointDir::new`, which would delete a running writer's partial file.
#[cfg(target_os = "linux")]
fn latest_checkpoint(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .max()
}

/// A run SIGKILLed mid-run resumes to the uninterrupted run's weights. The kill is certain to
/// land mid-run, not timed: the killed run's log.jsonl is a FIFO whose pipe holds 8 KiB and
/// which nobody reads until the kill, so the run blocks in a log write once it has logged 8 KiB
/// (about step 19 of 60; its whole log is ~26 KB), after its step-4 checkpoint (~1.9 KB in)
/// and long before its end, however late this thread gets to run. (Before, the test polled
/// for step-000004, which `keep_last 2` deletes at step 8, so a starved poller failed, and a
/// kill after the run's end passed without testing a resume.)
#[cfg(target_os = "linux")]
#[test]
fn killed_and_resumed_equals_uninterrupted() {
    use std::os::unix::io::AsRawFd;
    use std::time::{Duration, Instant};

    let dir = dataset("kill");
    let cfg = config(&dir, 30);
    ok(stage2(&dir, &cfg, "full", &[]).output().unwrap());
    let out = dir.join("killed");
    let ckpts = out.join("checkpoints");
    std::fs::create_dir_all(&out).unwrap();
    let log_path = out.join("log.jsonl");
    // The pipe is sized before the run can write to it.
    let mut fifo = open_fifo(&log_path);
    // SAFETY: fcntl on an open descriptor; F_SETPIPE_SZ only resizes its pipe.
    let pipe_bytes = unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETPIPE_SZ, 8192) };
    assert_eq!(pipe_bytes, 8192, "{}", std::io::Error::last_os_error());
    let mut child = stage2(&dir, &cfg, "killed", &[]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let waited = loop {
        if latest_checkpoint(&ckpts).is_some_and(|s| s >= 4) {
            break Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("the run ended ({status}) before a checkpoint >= 4"));
        }
        if Instant::now() > deadline {
            break Err("no checkpoint >= 4 within 120 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Still running: the kill interrupts the run (it cannot finish, the log is full).
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL: no clean-up runs
    child.wait().unwrap();
    waited.unwrap();
    assert!(
        running,
        "the run ended before the kill: nothing was interrupted"
    );
    // What the run logged up to the kill: the pipe's contents.
    let logged = drain(&mut fifo);
    drop(fifo);
    std::fs::remove_file(&log_path).unwrap();
    std::fs::write(&log_path, &logged).unwrap();
    let killed_log = String::from_utf8_lossy(&logged).into_owned();
    assert!(!out.join("model.safetensors").exists(), "a final model");
    assert!(!killed_log.contains("\"event\":\"done\""), "{killed_log}");
    let ckpt_step = latest_checkpoint(&ckpts).unwrap();
    assert!((4..60).contains(&ckpt_step), "checkpoint {ckpt_step}");

    ok(stage2(&dir, &cfg, "killed", &["--resume"])
        .output()
        .unwrap());
    // The resumed run continued from that checkpoint (not from scratch) to the end. (The
    // killed run's last line may be cut off: the resume event can follow it on its line.)
    let log = std::fs::read_to_string(&log_path).unwrap();
    let resume = log
        .split('\n')
        .find_map(|l| l.find("{\"event\":\"resume\"").map(|at| &l[at..]))
        .expect("a resume event");
    let resume: serde_json::Value = serde_json::from_str(resume).unwrap();
    assert_eq!(resume["step"].as_u64(), Some(ckpt_step), "{resume}");
    assert_same_models(
        &dir.join("full/model.safetensors"),
        &dir.join("killed/model.safetensors"),
    );
}

#[test]
fn misuse_is_one_error_line() {
    let dir = dataset("errors");
    let cfg = config(&dir, 1);
    ok(stage2(&dir, &cfg, "run", &[]).output().unwrap());
    let one_line = |out: Output, needle: &str| {
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{needle}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains(needle), "{e}");
    };
    // Checkpoints exist: refuse to start over silently.
    one_line(stage2(&dir, &cfg, "run", &[]).output().unwrap(), "--resume");
    // Resume under another config.
    let other = config(&dir, 2);
    one_line(
        stage2(&dir, &other, "run", &["--resume"]).output().unwrap(),
        "another training config",
    );
    // A CSV row whose audio the cache does not hold.
    let csv = dir.join("extra_sentence.csv");
    std::fs::write(
        &csv,
        "taskname,filepath1,filepath2,caption1,caption2,input,answer\nx,nope.wav,nope2.wav,a,b,c,d\n",
    )
    .unwrap();
    let mut c = stage2(&dir, &cfg, "run2", &[]);
    c.arg("--val").arg(&csv);
    one_line(c.output().unwrap(), "nope.wav");
    // A broken training config.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"epochs": 1}"#).unwrap();
    one_line(
        stage2(&dir, &bad, "run3", &[]).output().unwrap(),
        "bad.json",
    );
}

/// `--resume` accepted a different `--train` CSV silently (it refused another model or config):
/// the data files' hash is kept in each checkpoint and a resume on other data is refused.
#[test]
fn resume_on_other_data_is_refused() {
    let dir = dataset("other-data");
    let cfg = config(&dir, 2);
    ok(stage2(&dir, &cfg, "run", &["--stop-after-steps", "1"])
        .output()
        .unwrap());
    let data = dir.join("data");
    let text = std::fs::read_to_string(data.join("train_sentence_answer.csv")).unwrap();
    let fewer: Vec<&str> = text.lines().collect();
    let other = data.join("other_sentence_answer.csv");
    std::fs::write(&other, fewer[..fewer.len() - 1].join("\n") + "\n").unwrap();
    let out = adiff()
        .arg("train-stage2")
        .arg("--train")
        .arg(&other)
        .arg("--embed-cache")
        .arg(data.join("cache"))
        .args(model_args())
        .arg("--train-config")
        .arg(&cfg)
        .arg("-o")
        .arg(dir.join("run"))
        .args(["--quiet", "--resume"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("was trained on other data"), "{err}");
    // The same files resume.
    ok(stage2(&dir, &cfg, "run", &["--resume"]).output().unwrap());
}

/// `adiff train` (stage 2 into stage 3 in one run) on the tiny recipes with `epochs` epochs.
fn train_both(dir: &Path, epochs: u64, out: &str, extra: &[&str]) -> Command {
    let data = dir.join("data");
    let cfg = |stage: &str| {
        let text = std::fs::read_to_string(
            common::root().join(format!("configs/train/tiny_{stage}.json")),
        )
        .unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["epochs"] = epochs.into();
        let p = dir.join(format!("{stage}_{epochs}.json"));
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let mut c = adiff();
    c.arg("train")
        .arg("--train")
        .arg(data.join("train_sentence_answer.csv"))
        .arg("--embed-cache")
        .arg(data.join("cache"))
        .args(model_args())
        .arg("--stage2-config")
        .arg(cfg("stage2"))
        .arg("--stage3-config")
        .arg(cfg("stage3"))
        .arg("-o")
        .arg(dir.join(out))
        .arg("--quiet")
        .args(extra);
    c
}

/// Both stages' models of two `adiff train` runs are bit-for-bit the same.
fn assert_same_runs(dir: &Path, a: &str, b: &str) {
    for stage in ["stage2", "stage3"] {
        assert_same_models(
            &dir.join(a).join(stage).join("model.safetensors"),
            &dir.join(b).join(stage).join("model.safetensors"),
        );
    }
}

/// `adiff train` runs stage 2 (GPT-2 frozen) into stage 3 (GPT-2 trained) from stage 2's model;
/// `train-stage3` from that model computes the same stage 3; a run stopped at the stage boundary
/// or inside stage 3 and resumed ends with the uninterrupted run's models.
#[test]
fn train_runs_stage_two_into_three_and_resumes_across_the_boundary() {
    let dir = dataset("both");
    // 6 training examples, 4 per step: 2 steps per epoch, 4 per stage.
    let out = ok(train_both(&dir, 2, "full", &[]).output().unwrap());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("stage2: 4 steps") && said.contains("stage3: 4 steps"),
        "{said}"
    );
    let (s2, s3) = (
        load(&dir.join("full/stage2/model.safetensors")),
        load(&dir.join("full/stage3/model.safetensors")),
    );
    let gpt = |m: &HashMap<String, Tensor>| {
        m.iter()
            .filter(|(k, _)| k.starts_with("caption_decoder.gpt"))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect::<HashMap<_, _>>()
    };
    let init =
        adiff::model::checkpoint::Checkpoint::load(&common::tiny_checkpoint_parts()[1]).unwrap();
    let (g2, g3) = (gpt(&s2), gpt(&s3));
    assert!(g2.len() > 20, "{} GPT-2 tensors", g2.len());
    for (k, t) in &g2 {
        assert!(
            identical(t, init.get(k).unwrap()),
            "stage 2 moved frozen {k}"
        );
    }
    let moved = g3.iter().filter(|(k, t)| !identical(t, &g2[*k])).count();
    assert!(
        moved * 2 > g3.len(),
        "stage 3 moved only {moved} of {} GPT-2 tensors",
        g3.len()
    );

    // train-stage3 from stage 2's model: the same stage 3.
    let data = dir.join("data");
    ok(adiff()
        .arg("train-stage3")
        .arg("--train")
        .arg(data.join("train_sentence_answer.csv"))
        .arg("--embed-cache")
        .arg(data.join("cache"))
        .arg("-c")
        .arg(dir.join("full/stage2/model.safetensors"))
        .args(common::tiny_config_args())
        .arg("--train-config")
        .arg(dir.join("stage3_2.json"))
        .arg("-o")
        .arg(dir.join("alone"))
        .arg("--quiet")
        .output()
        .unwrap());
    assert_same_models(
        &dir.join("full/stage3/model.safetensors"),
        &dir.join("alone/model.safetensors"),
    );

    // Stopped exactly at the boundary: stage 3 not started; the resume starts it.
    let out = ok(
        train_both(&dir, 2, "boundary", &["--stop-after-steps", "4"])
            .output()
            .unwrap(),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stage3: not started"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(dir.join("boundary/stage2/model.safetensors").exists());
    assert!(!dir.join("boundary/stage3").exists());
    ok(train_both(&dir, 2, "boundary", &["--resume"])
        .output()
        .unwrap());
    assert_same_runs(&dir, "full", "boundary");

    // Stopped inside stage 3 (step 2 of 4), resumed.
    ok(train_both(&dir, 2, "inside", &["--stop-after-steps", "6"])
        .output()
        .unwrap());
    assert!(!dir.join("inside/stage3/model.safetensors").exists());
    let ckpts = std::fs::read_dir(dir.join("inside/stage3/checkpoints"))
        .unwrap()
        .count();
    assert!(ckpts > 0, "no stage-3 checkpoint");
    ok(train_both(&dir, 2, "inside", &["--resume"])
        .output()
        .unwrap());
    assert_same_runs(&dir, "full", "inside");
    let log = std::fs::read_to_string(dir.join("inside/stage3/log.jsonl")).unwrap();
    assert!(log.contains("\"event\":\"resume\""), "{log}");
    assert!(log.contains("\"step\":2"), "{log}");
}

/// `adiff train` SIGKILLed at the stage boundary (stage 2's model written, stage 3 started but
/// not one step taken) resumes to the uninterrupted run's models. Not timed: stage 3's
/// log.jsonl is a FIFO whose pipe is filled beforehand, so stage 3's first log line blocks the
/// run right there until the kill.
#[cfg(target_os = "linux")]
#[test]
fn train_killed_at_the_stage_boundary_resumes_exactly() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    let dir = dataset("both-kill");
    ok(train_both(&dir, 2, "full", &[]).output().unwrap());
    let stage3 = dir.join("killed/stage3");
    std::fs::create_dir_all(&stage3).unwrap();
    let log_path = stage3.join("log.jsonl");
    let mut fifo = open_fifo(&log_path);
    // Fill the pipe: the run's first write to it blocks.
    let mut filled = 0usize;
    loop {
        match fifo.write(&[b'#'; 512]) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the pipe: {e}"),
        }
    }
    let mut child = train_both(&dir, 2, "killed", &[]).spawn().unwrap();
    // Stage 2's model appears before stage 3 opens its log; then the run can only block.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !dir.join("killed/stage2/model.safetensors").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(Instant::now() < deadline, "no stage-2 model within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    // However long this waits, stage 3 cannot take a step: its first log line is blocked.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run got past a full log"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let drained = drain(&mut fifo);
    assert_eq!(drained.len(), filled, "stage 3 logged past its start");
    drop(fifo);
    std::fs::remove_file(&log_path).unwrap();
    assert!(!stage3.join("model.safetensors").exists());
    assert!(
        std::fs::read_dir(stage3.join("checkpoints"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "stage 3 wrote a checkpoint before its first log line"
    );
    ok(train_both(&dir, 2, "killed", &["--resume"])
        .output()
        .unwrap());
    assert_same_runs(&dir, "full", "killed");
}

/// Per-step training losses from `log.jsonl`.
fn step_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "step")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

/// `precision: "bf16"` (mixed precision): the loss curve stays within a bf16 tolerance of the
/// f32 run's (measured 2026-12-06: worst 4.1e-4 relative over 6 steps; the bound, 2e-3, is
/// half a bf16 step, 2^-8), the exported model and the checkpoints hold f32 master weights
/// (and f32 AdamW moments), the weights moved differently from f32's (the setting is not
/// ignored), and a stopped and resumed bf16 run equals the uninterrupted one bit for bit.
#[test]
fn bf16_mixed_precision_tracks_f32_and_resumes_exactly() {
    let dir = dataset("bf16");
    let f32_cfg = config(&dir, 3);
    let bf16_cfg = edited_config(&dir, 3, "bf16", |v| v["precision"] = "bf16".into());
    ok(stage2(&dir, &f32_cfg, "f32", &[]).output().unwrap());
    ok(stage2(&dir, &bf16_cfg, "bf16", &[]).output().unwrap());
    let (a, b) = (
        step_losses(&dir.join("f32")),
        step_losses(&dir.join("bf16")),
    );
    assert_eq!(a.len(), b.len());
    assert!(a.len() >= 6, "{} steps", a.len());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) / x).abs())
        .fold(0f64, f64::max);
    eprintln!(
        "bf16 vs f32 losses over {} steps: worst relative {worst:.2e}",
        a.len()
    );
    assert!(worst <= 2e-3, "{worst:.2e}");
    assert!(worst > 0.0, "bf16 losses equal f32's: precision ignored?");
    let (mf, mb) = (
        load(&dir.join("f32/model.safetensors")),
        load(&dir.join("bf16/model.safetensors")),
    );
    let mut differ = 0;
    for (k, t) in &mb {
        assert_eq!(
            t.dtype(),
            candle_core::DType::F32,
            "{k} exported as {:?}",
            t.dtype()
        );
        differ += usize::from(!identical(t, &mf[k]));
    }
    assert!(
        differ >= 100,
        "only {differ} tensors differ from the f32 run"
    );
    // Checkpoints: every tensor (weights and AdamW state) in f32.
    let ckpts: Vec<PathBuf> = std::fs::read_dir(dir.join("bf16/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!ckpts.is_empty());
    for (k, t) in load(&ckpts[0]) {
        assert!(
            matches!(
                t.dtype(),
                candle_core::DType::F32
                    | candle_core::DType::U8
                    | candle_core::DType::U32
                    | candle_core::DType::I64
            ),
            "checkpoint tensor {k} is {:?}",
            t.dtype()
        );
    }
    ok(
        stage2(&dir, &bf16_cfg, "parts", &["--stop-after-steps", "4"])
            .output()
            .unwrap(),
    );
    ok(stage2(&dir, &bf16_cfg, "parts", &["--resume"])
        .output()
        .unwrap());
    assert_same_models(
        &dir.join("bf16/model.safetensors"),
        &dir.join("parts/model.safetensors"),
    );
}

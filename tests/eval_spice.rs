//! `adiff eval --spice-jar`: the SPICE protocol (input JSON, jar arguments, output JSON, mean of
//! item F-scores, SPIDEr) checked with a stand-in for `java` that records its input and returns a
//! prepared result, plus the error paths. The real spice-1.0.jar needs Stanford CoreNLP models
//! that cannot be fetched here, so its numbers are not part of CI.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adiff-spice-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn eval(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_adiff"))
        .env_remove("ADIFF_METEOR_DATA")
        .env_remove("ADIFF_SPICE_JAR")
        .arg("eval")
        .args(args)
        .output()
        .expect("run adiff")
}

fn preds_csv(dir: &Path) -> PathBuf {
    let p = dir.join("acd_sentence_preds.csv");
    std::fs::write(
        &p,
        "taskname,answer,prediction\n\
         audiocaps,A dog barks loudly.,A dog is barking.\n\
         audiocaps,Rain falls on a roof.,Heavy rain on a tin roof.\n",
    )
    .expect("csv");
    p
}

/// A `java` stand-in: `-jar -Xmx8G JAR IN -out OUT -subset -silent`; copies IN aside and writes
/// the prepared OUT.
fn fake_java(dir: &Path, result: &str, exit: i32) -> PathBuf {
    let out = dir.join("result.json");
    std::fs::write(&out, result).expect("result");
    let script = dir.join("java");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > '{args}'\ncp \"$4\" '{seen}'\ncp '{out}' \"$6\"\necho 'spice says no' >&2\nexit {exit}\n",
            args = dir.join("args.txt").display(),
            seen = dir.join("seen.json").display(),
            out = out.display(),
        ),
    )
    .expect("script");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    script
}

#[cfg(unix)]
#[test]
fn spice_protocol_and_spider() {
    let dir = scratch("ok");
    let csv = preds_csv(&dir);
    let jar = dir.join("spice-1.0.jar");
    std::fs::write(&jar, b"not really a jar").expect("jar");
    let java = fake_java(
        &dir,
        r#"[{"image_id": 1, "scores": {"All": {"pr": 0.5, "re": 0.5, "f": 0.5}}},
            {"image_id": 0, "scores": {"All": {"pr": 0.2, "re": 0.3, "f": 0.25}}}]"#,
        0,
    );
    let json = dir.join("scores.json");
    let out = eval(&[
        csv.as_os_str(),
        "--spice-jar".as_ref(),
        jar.as_os_str(),
        "--java".as_ref(),
        java.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The jar gets pycocoevalcap's arguments and the tokenized text.
    let args = std::fs::read_to_string(dir.join("args.txt")).expect("args");
    assert!(
        args.starts_with(&format!("-jar -Xmx8G {}", jar.display())),
        "{args}"
    );
    assert!(args.trim_end().ends_with("-subset -silent"), "{args}");
    let seen: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("seen.json")).expect("seen"))
            .expect("json");
    assert_eq!(seen[0]["image_id"], 0);
    assert_eq!(seen[0]["test"], "a dog is barking");
    assert_eq!(seen[0]["refs"][0], "a dog barks loudly");
    assert_eq!(seen[1]["test"], "heavy rain on a tin roof");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).unwrap();
    let g = &j["groups"][0];
    let spice = g["spice"].as_f64().expect("spice");
    assert!(
        (spice - 0.375).abs() < 1e-12,
        "mean of item F-scores: {spice}"
    );
    let cider = g["scores"]["cider_d"].as_f64().expect("cider");
    let spider = g["spider"].as_f64().expect("spider");
    assert!((spider - (cider + spice) / 2.0).abs() < 1e-12);
    assert!(g["unavailable"].get("SPICE").is_none());
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn spice_failures_are_one_line_errors() {
    let dir = scratch("bad");
    let csv = preds_csv(&dir);
    // Missing jar.
    let missing = dir.join("nope.jar");
    let out = eval(&[csv.as_os_str(), "--spice-jar".as_ref(), missing.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("nope.jar") && stderr.contains("no such file"),
        "{stderr}"
    );
    // The jar fails: its stderr is quoted.
    let jar = dir.join("spice-1.0.jar");
    std::fs::write(&jar, b"x").expect("jar");
    let java = fake_java(&dir, "[]", 3);
    let out = eval(&[
        csv.as_os_str(),
        "--spice-jar".as_ref(),
        jar.as_os_str(),
        "--java".as_ref(),
        java.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("spice says no"), "{stderr}");
    // Output without every item.
    let java = fake_java(
        &dir,
        r#"[{"image_id": 0, "scores": {"All": {"f": 0.1}}}]"#,
        0,
    );
    let out = eval(&[
        csv.as_os_str(),
        "--spice-jar".as_ref(),
        jar.as_os_str(),
        "--java".as_ref(),
        java.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no F-score for item 1"), "{stderr}");
    // No java at all.
    let out = eval(&[
        csv.as_os_str(),
        "--spice-jar".as_ref(),
        jar.as_os_str(),
        "--java".as_ref(),
        dir.join("no-java-here").as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot start"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

//! `adiff build-dataset pairs`: the appendix-E pairing rule, the three caption formats, the
//! template explainer, input validation, and the LLM client against a local mock
//! chat-completions server (success, 429, 5xx, malformed JSON, time-out, request budget, the API
//! key, kill-and-restart without lost or duplicated rows).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use adiff::data::captions::{read_captions, AudioNaming, CaptionFormat};
use adiff::data::explainer::llm::{LlmClient, LlmConfig, SYSTEM_PROMPT};
use adiff::data::explainer::template::TemplateExplainer;
use adiff::data::explainer::{ExplainError, Explainer};
use adiff::data::pairing::{in_excluded_window, pair_rows};
use adiff::text::prompts::{PromptDatabase, PromptKind};

const KEY: &str = "sk-test-0123456789-do-not-print";
const TIER_FILES: [&str; 3] = [
    "fewwords_answer.csv",
    "sentence_answer.csv",
    "detail_answer.csv",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/captions")
        .join(name)
}

// ---------------------------------------------------------------- mock chat-completions server

/// One request the mock server received.
#[derive(Debug, Clone)]
struct Request {
    headers: HashMap<String, String>,
    body: String,
}

impl Request {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
    /// The user message (captions and tier rule).
    fn user(&self) -> String {
        self.json()["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// What the mock answers.
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
    headers: Vec<(&'static str, String)>,
}

fn completion(text: &str) -> Reply {
    Reply {
        status: 200,
        body: serde_json::json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]
        })
        .to_string(),
        delay: Duration::ZERO,
        headers: vec![],
    }
}

fn status(code: u16, body: &str) -> Reply {
    Reply {
        status: code,
        body: body.to_string(),
        delay: Duration::ZERO,
        headers: vec![],
    }
}

/// A chat-completions server on 127.0.0.1 (port 0) that answers each request with
/// `handler(n, request)`, `n` counting requests from 0, and logs every request.
struct Mock {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Mock {
    fn start(handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let server_log = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, handler, count) = (server_log.clone(), handler.clone(), count.clone());
                std::thread::spawn(move || serve(stream, &log, &*handler, &count));
            }
        });
        Mock { addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

/// Where the mock's handlers hold replies back until the test opens it (or `max` passes): what
/// the client sees before then does not depend on timing.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self, max: Duration) {
        let (open, cv) = &*self.0;
        let open = open.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv.wait_timeout_while(open, max, |open| !*open);
    }

    fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

fn serve(
    stream: TcpStream,
    log: &Mutex<Vec<Request>>,
    handler: &(dyn Fn(usize, &Request) -> Reply + Send + Sync),
    count: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = HashMap::new();
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Request {
        headers,
        body: String::from_utf8(body).unwrap(),
    };
    log.lock().unwrap().push(req.clone());
    let n = count.fetch_add(1, Ordering::SeqCst);
    let reply = handler(n, &req);
    std::thread::sleep(reply.delay);
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // The client may have given up (time-out test): a failed write is fine.
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(reply.body.as_bytes());
}

fn client(
    mock: &Mock,
    max_retries: u32,
    timeout_ms: u64,
    max_requests: Option<usize>,
) -> LlmClient {
    LlmClient::new(LlmConfig {
        url: mock.url(),
        model: "mock-model".into(),
        api_key: Some(KEY.into()),
        timeout: Duration::from_millis(timeout_ms),
        max_retries,
        backoff: Duration::from_millis(5),
        temperature: 0.0,
        max_requests,
    })
}

// ---------------------------------------------------------------- LLM client

#[test]
fn llm_success_sends_prompts_and_bearer_key() {
    let mock = Mock::start(|_, _| completion("Audio 1 is rain, audio 2 is a dog."));
    let c = client(&mock, 0, 5000, None);
    let text = c.explain("Rain falls.", "A dog barks.", 2).unwrap();
    assert_eq!(text, "Audio 1 is rain, audio 2 is a dog.");
    assert_eq!(c.requests(), 1);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].headers["authorization"], format!("Bearer {KEY}"));
    let body = reqs[0].json();
    assert_eq!(body["model"], "mock-model");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][0]["content"], SYSTEM_PROMPT);
    let user = reqs[0].user();
    assert!(
        user.contains("Rain falls.") && user.contains("A dog barks."),
        "{user}"
    );
    assert!(
        user.contains("Tier 2") && user.contains("temporal order"),
        "{user}"
    );
}

#[test]
fn llm_retries_429_then_succeeds() {
    let mock = Mock::start(|n, _| {
        if n == 0 {
            let mut r = status(429, r#"{"error":"rate limited"}"#);
            r.headers.push(("Retry-After", "0".into()));
            r
        } else {
            completion("ok")
        }
    });
    let c = client(&mock, 3, 5000, None);
    assert_eq!(c.explain("a", "b", 1).unwrap(), "ok");
    assert_eq!((c.requests(), c.retries()), (2, 1));
}

#[test]
fn llm_500_is_retried_then_reported() {
    let mock = Mock::start(|_, _| status(500, "internal error"));
    let c = client(&mock, 2, 5000, None);
    let err = c.explain("a", "b", 3).unwrap_err();
    let ExplainError::Failed(msg) = err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains("HTTP 500") && msg.contains("gave up after 3 attempt(s)"),
        "{msg}"
    );
    assert!(!msg.contains(KEY));
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn llm_malformed_json_is_a_clear_error_not_retried() {
    for body in [
        "this is not json",
        r#"{"choices": []}"#,
        r#"{"choices":[{"message":{}}]}"#,
    ] {
        let mock = Mock::start(move |_, _| status(200, body));
        let c = client(&mock, 3, 5000, None);
        let err = c.explain("a", "b", 1).unwrap_err();
        assert!(
            err.to_string().contains("malformed response"),
            "{body}: {err}"
        );
        assert_eq!(mock.requests().len(), 1, "{body}");
    }
}

/// Time-outs are checked by what the client got, not by the wall clock: a held answer is
/// released only after the client has returned, so a client that waited for it (no time-out)
/// would return it, after 30 s, instead of the retry's.
#[test]
fn llm_time_out_is_retried() {
    let gate = Gate::default();
    let held = gate.clone();
    let mock = Mock::start(move |n, _| {
        if n == 0 {
            held.wait(Duration::from_secs(30));
            completion("too late")
        } else {
            completion("on time")
        }
    });
    let c = client(&mock, 1, 300, None);
    let text = c.explain("a", "b", 1);
    gate.open();
    assert_eq!(text.unwrap(), "on time");
    assert_eq!((c.requests(), c.retries()), (2, 1));
    assert_eq!(mock.requests().len(), 2);

    // Every attempt times out: reported after the retries.
    let gate = Gate::default();
    let held = gate.clone();
    let slow = Mock::start(move |_, _| {
        held.wait(Duration::from_secs(30));
        completion("too late")
    });
    let c = client(&slow, 1, 200, None);
    let err = c.explain("a", "b", 1);
    gate.open();
    let err = err.unwrap_err().to_string();
    assert!(err.contains("gave up after 2 attempt(s)"), "{err}");
    assert_eq!(slow.requests().len(), 2);
}

#[test]
fn llm_request_budget_is_a_hard_cap() {
    let mock = Mock::start(|_, _| status(503, "busy"));
    let c = client(&mock, 10, 5000, Some(3));
    assert_eq!(c.explain("a", "b", 1).unwrap_err(), ExplainError::Budget);
    assert_eq!(c.requests(), 3);
    assert_eq!(c.explain("a", "b", 1).unwrap_err(), ExplainError::Budget);
    assert_eq!(mock.requests().len(), 3);
}

// ---------------------------------------------------------------- pairing rule

#[test]
fn pairing_excludes_the_window_and_wraps_around() {
    for n in [6, 7, 11, 100, 1000] {
        for seed in 0..5 {
            let pairs = pair_rows(n, seed, |_, _| false).unwrap();
            assert_eq!(pairs.len(), n);
            for (i, p) in pairs.iter().enumerate() {
                assert_eq!(p.first, i);
                let forward = (p.second + n - i) % n;
                assert!(forward >= 5, "n {n} seed {seed}: {i} -> {}", p.second);
                assert!(!in_excluded_window(i, p.second, n));
            }
        }
    }
    // n = 6: row i's only candidate is i + 5 (mod 6), i.e. i - 1 with wrap-around.
    let pairs = pair_rows(6, 9, |_, _| false).unwrap();
    let seconds: Vec<usize> = pairs.iter().map(|p| p.second).collect();
    assert_eq!(seconds, [5, 0, 1, 2, 3, 4]);
}

#[test]
fn pairing_is_seeded_and_covers_the_candidates() {
    let a = pair_rows(200, 1, |_, _| false).unwrap();
    assert_eq!(a, pair_rows(200, 1, |_, _| false).unwrap());
    let b = pair_rows(200, 2, |_, _| false).unwrap();
    assert_ne!(a, b);
    // Uniform over the candidates: with 7 rows, row 0 draws from {5, 6} and sees both.
    let seen: std::collections::HashSet<usize> = (0..50)
        .map(|s| pair_rows(7, s, |_, _| false).unwrap()[0].second)
        .collect();
    assert_eq!(seen, [5, 6].into_iter().collect());
}

#[test]
fn pairing_needs_six_rows() {
    let e = pair_rows(5, 0, |_, _| false).unwrap_err().to_string();
    assert!(
        e.contains("at least 6 caption rows") && e.contains("got 5"),
        "{e}"
    );
}

#[test]
fn pairing_holds_for_all_three_formats() {
    for (file, format, rows) in [
        ("clotho.csv", CaptionFormat::Clotho, 20),
        ("audiocaps.csv", CaptionFormat::Audiocaps, 8),
        ("plain.csv", CaptionFormat::Csv, 7),
    ] {
        let c = read_captions(&fixture(file), format, &AudioNaming::default()).unwrap();
        assert_eq!(c.rows.len(), rows, "{file}");
        let pairs = pair_rows(c.rows.len(), 4, |i, j| c.rows[i].audio == c.rows[j].audio).unwrap();
        for p in &pairs {
            assert!(
                !in_excluded_window(p.first, p.second, rows),
                "{file}: {p:?}"
            );
            assert_ne!(c.rows[p.first].audio, c.rows[p.second].audio, "{file}");
        }
    }
}

// ---------------------------------------------------------------- CLI helpers

/// A temporary folder with audio files (empty: only their existence is checked) for the rows of
/// a caption fixture, and an output folder.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new(audio: &[&str]) -> Work {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("audio")).unwrap();
        for a in audio {
            std::fs::write(dir.path().join("audio").join(a), b"").unwrap();
        }
        Work { dir }
    }
    fn plain() -> Work {
        Work::new(&[
            "a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav", "g.wav",
        ])
    }
    fn audio(&self) -> PathBuf {
        self.dir.path().join("audio")
    }
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    fn file(&self, name: &str) -> PathBuf {
        self.out().join(name)
    }
}

fn pairs_cmd(captions: &Path, format: &str, work: &Work, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adiff"));
    cmd.args(["build-dataset", "pairs", "--captions"])
        .arg(captions)
        .args(["--format", format, "--audio-root"])
        .arg(work.audio())
        .arg("-o")
        .arg(work.out())
        .args(extra)
        .env_remove("ADIFF_LLM_API_KEY");
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let o: Output = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn read_rows(path: &Path) -> Vec<Vec<String>> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "taskname",
            "filepath1",
            "filepath2",
            "caption1",
            "caption2",
            "input",
            "answer"
        ]
    );
    rdr.records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

// ---------------------------------------------------------------- CLI: template explainer

#[test]
fn template_explainer_writes_three_tiers_deterministically() {
    let (a, b) = (Work::plain(), Work::plain());
    for w in [&a, &b] {
        let (ok, _, err) = run(&mut pairs_cmd(
            &fixture("plain.csv"),
            "csv",
            w,
            &["--explainer", "template", "--split", "val", "--seed", "3"],
        ));
        assert!(ok, "{err}");
        assert!(
            err.contains("7 caption rows, 7 pairs, 21 rows written"),
            "{err}"
        );
    }
    let db = PromptDatabase::bundled().unwrap();
    let captions = read_captions(
        &fixture("plain.csv"),
        CaptionFormat::Csv,
        &AudioNaming::default(),
    )
    .unwrap();
    for (t, name) in TIER_FILES.iter().enumerate() {
        let tier = t as u8 + 1;
        let name = format!("val_{name}");
        let bytes = std::fs::read(a.file(&name)).unwrap();
        assert_eq!(bytes, std::fs::read(b.file(&name)).unwrap(), "{name}");
        let rows = read_rows(&a.file(&name));
        assert_eq!(rows.len(), 7);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[0], "custom");
            assert_eq!(
                (&r[1], &r[3]),
                (&captions.rows[i].audio, &captions.rows[i].caption)
            );
            let expected = TemplateExplainer.explain(&r[3], &r[4], tier).unwrap();
            assert_eq!(r[6], expected);
            assert!(
                db.prompts(PromptKind::Tier(tier)).contains(&r[5]),
                "{}",
                r[5]
            );
        }
    }
    // Another seed, other pairs.
    let c = Work::plain();
    let (ok, _, err) = run(&mut pairs_cmd(
        &fixture("plain.csv"),
        "csv",
        &c,
        &["--explainer", "template", "--split", "val", "--seed", "4"],
    ));
    assert!(ok, "{err}");
    let second = |w: &Work| -> Vec<String> {
        read_rows(&w.file("val_fewwords_answer.csv"))
            .into_iter()
            .map(|r| r[2].clone())
            .collect()
    };
    assert_ne!(second(&a), second(&c));
}

#[test]
fn all_formats_captioning_and_tier_selection() {
    let clotho = Work::new(&[
        "rain on roof.wav",
        "city traffic.wav",
        "birds forest.wav",
        "door, creaky.wav",
    ]);
    let (ok, _, err) = run(&mut pairs_cmd(
        &fixture("clotho.csv"),
        "clotho",
        &clotho,
        &["--explainer", "template", "--tiers", "2", "--captioning"],
    ));
    assert!(ok, "{err}");
    assert!(!clotho.file("train_fewwords_answer.csv").exists());
    let rows = read_rows(&clotho.file("train_sentence_answer.csv"));
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|r| r[0] == "clothov21" && r[1] != r[2]));
    let cap = read_rows(&clotho.file("train_captioning.csv"));
    assert_eq!(cap.len(), 40);
    let db = PromptDatabase::bundled().unwrap();
    for pair in cap.chunks(2) {
        assert!(db.prompts(PromptKind::CaptionFirst).contains(&pair[0][5]));
        assert_eq!(pair[0][6], pair[0][3]);
        assert!(db.prompts(PromptKind::CaptionSecond).contains(&pair[1][5]));
        assert_eq!(pair[1][6], pair[1][4]);
    }

    let names = [
        "r1nicOVtvkQ_130.flac",
        "UDGBjjwyaqE_20.flac",
        "--0w1YA1Hm4_30.flac",
        "M-xg9SdaD6w_60.flac",
        "Xr5ZaxCUjxY_30.flac",
        "ZSvu4Y4nx8A_0.flac",
        "-1nXWVOKxk4_10.flac",
        "B9eVgNFXqfk_40.flac",
    ];
    let ac = Work::new(&names);
    let (ok, _, err) = run(&mut pairs_cmd(
        &fixture("audiocaps.csv"),
        "audiocaps",
        &ac,
        &[
            "--explainer",
            "template",
            "--tiers",
            "1",
            "--audio-ext",
            "flac",
        ],
    ));
    assert!(ok, "{err}");
    let rows = read_rows(&ac.file("train_fewwords_answer.csv"));
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0][1], "r1nicOVtvkQ_130.flac");
    assert!(rows.iter().all(|r| r[0] == "audiocaps"));
}

// ---------------------------------------------------------------- CLI: input validation

fn assert_one_error_line(err: &str) {
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_column_is_named_with_the_file() {
    let w = Work::plain();
    let csv = w.dir.path().join("bad.csv");
    std::fs::write(&csv, "file,text\na.wav,x\n").unwrap();
    let (ok, _, err) = run(&mut pairs_cmd(
        &csv,
        "csv",
        &w,
        &["--explainer", "template"],
    ));
    assert!(!ok);
    assert_one_error_line(&err);
    assert!(
        err.contains("bad.csv") && err.contains("missing column 'caption'"),
        "{err}"
    );
    // The wrong --format for a file names the column too.
    let (ok, _, err) = run(&mut pairs_cmd(
        &fixture("plain.csv"),
        "clotho",
        &w,
        &["--explainer", "template"],
    ));
    assert!(!ok && err.contains("missing column 'file_name'"), "{err}");
}

#[test]
fn missing_audio_is_counted_and_named() {
    let w = Work::new(&["a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav"]);
    let (ok, _, err) = run(&mut pairs_cmd(
        &fixture("plain.csv"),
        "csv",
        &w,
        &["--explainer", "template"],
    ));
    assert!(!ok);
    assert_one_error_line(&err);
    assert!(
        err.contains("1 of 7 audio file(s) missing") && err.contains("g.wav"),
        "{err}"
    );
    assert!(err.contains("--allow-missing"), "{err}");
    assert!(!w.file("train_fewwords_answer.csv").exists());

    // --allow-missing skips the row; 6 rows are still enough to pair.
    let (ok, _, err) = run(&mut pairs_cmd(
        &fixture("plain.csv"),
        "csv",
        &w,
        &["--explainer", "template", "--allow-missing"],
    ));
    assert!(ok, "{err}");
    assert_eq!(read_rows(&w.file("train_detail_answer.csv")).len(), 6);
}

#[test]
fn too_few_rows_duplicates_and_bad_options() {
    let w = Work::plain();
    let csv = w.dir.path().join("few.csv");
    std::fs::write(
        &csv,
        "file,caption\na.wav,x\nb.wav,y\na.wav,x\nc.wav,z\nd.wav,w\ne.wav,v\n",
    )
    .unwrap();
    let (ok, _, err) = run(&mut pairs_cmd(
        &csv,
        "csv",
        &w,
        &["--explainer", "template"],
    ));
    assert!(!ok);
    assert_one_error_line(&err);
    assert!(
        err.contains("1 duplicate row(s) dropped (first at line 4"),
        "{err}"
    );
    assert!(
        err.contains("at least 6 caption rows") && err.contains("got 5"),
        "{err}"
    );

    for (args, want) in [
        (
            vec!["--explainer", "template", "--tiers", "4"],
            "tier 4 does not exist",
        ),
        (vec!["--explainer", "template", "--split", "a/b"], "--split"),
        (
            vec!["--explainer", "llm"],
            "needs --llm-url and --llm-model",
        ),
        (vec!["--concurrency", "0"], "--concurrency must be 1 to"),
        (
            vec!["--concurrency", "100000"],
            "--concurrency must be 1 to",
        ),
        (vec!["--timeout", "1e30"], "--timeout must be a positive"),
        (vec!["--timeout", "NaN"], "--timeout must be a positive"),
    ] {
        let (ok, _, err) = run(&mut pairs_cmd(&fixture("plain.csv"), "csv", &w, &args));
        assert!(!ok, "{args:?}");
        assert_one_error_line(&err);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_record_cut_short_is_redone() {
    let w = Work::plain();
    let args = ["--explainer", "template", "--tiers", "3"];
    let (ok, _, err) = run(&mut pairs_cmd(&fixture("plain.csv"), "csv", &w, &args));
    assert!(ok, "{err}");
    let path = w.file("train_detail_answer.csv");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 40]).unwrap();
    let (ok, _, err) = run(&mut pairs_cmd(&fixture("plain.csv"), "csv", &w, &args));
    assert!(ok, "{err}");
    assert!(err.contains("dropped an incomplete last row"), "{err}");
    assert!(err.contains("1 rows written (6 already there)"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), full);

    // Another seed into the same folder would mix two plans: refused.
    let (ok, _, err) = run(&mut pairs_cmd(
        &fixture("plain.csv"),
        "csv",
        &w,
        &["--explainer", "template", "--tiers", "3", "--seed", "99"],
    ));
    assert!(!ok && err.contains("not part of this run's plan"), "{err}");
}

// ---------------------------------------------------------------- CLI: LLM explainer

fn llm_args(mock: &Mock) -> Vec<String> {
    [
        "--explainer",
        "llm",
        "--llm-url",
        &mock.url(),
        "--llm-model",
        "mock-model",
        "--backoff-ms",
        "5",
        "--timeout",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Answers with a text naming the pair, so every row's answer is checkable.
fn echo_handler(_: usize, req: &Request) -> Reply {
    completion(&format!(
        "EXPLANATION of {}",
        req.user().lines().next().unwrap_or("")
    ))
}

fn all_output(w: &Work) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(w.out()).unwrap() {
        s.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    s
}

/// Every planned row of every tier file exactly once, each with an answer from the server.
fn assert_complete_once(w: &Work, n: usize) {
    for name in TIER_FILES {
        let rows = read_rows(&w.file(&format!("train_{name}")));
        assert_eq!(rows.len(), n, "{name}");
        let mut firsts: Vec<&String> = rows.iter().map(|r| &r[1]).collect();
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), n, "{name}: a pair twice");
        for r in &rows {
            assert!(
                r[6].starts_with("EXPLANATION of Audio 1 caption: "),
                "{r:?}"
            );
            assert!(r[6].contains(&r[3]), "{r:?}");
        }
    }
}

#[test]
fn llm_cli_writes_every_row_and_never_shows_the_key() {
    let mock = Mock::start(echo_handler);
    let w = Work::plain();
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
    cmd.args(llm_args(&mock))
        .args(["--concurrency", "3"])
        .env("ADIFF_LLM_API_KEY", KEY);
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert!(
        err.contains("21 rows written (0 already there), 21 requests (0 retries), 0 failed"),
        "{err}"
    );
    assert_complete_once(&w, 7);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 21);
    assert!(reqs
        .iter()
        .all(|r| r.headers["authorization"] == format!("Bearer {KEY}")));
    for text in [&out, &err, &all_output(&w)] {
        assert!(
            !text.contains(KEY) && !text.contains("sk-test"),
            "key leaked"
        );
    }
    // Tier rules reach the server.
    for tier in 1..=3 {
        assert!(reqs
            .iter()
            .any(|r| r.user().contains(&format!("Tier {tier}"))));
    }
}

#[test]
fn llm_cli_failures_are_reported_and_redone_on_rerun() {
    // The pair whose first caption is "A clock ticks" gets malformed JSON, the one with "A baby
    // cries" a 500 every time: both reported, the other rows written.
    let mock = Mock::start(|n, req| {
        let user = req.user();
        if user.starts_with("Audio 1 caption: A clock ticks") && user.contains("Tier 1") {
            status(200, "{ not json")
        } else if user.starts_with("Audio 1 caption: A baby cries") && user.contains("Tier 3") {
            status(500, "boom")
        } else {
            echo_handler(n, req)
        }
    });
    let w = Work::plain();
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
    cmd.args(llm_args(&mock)).args(["--max-retries", "2"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok);
    assert_one_error_line(&err);
    assert!(err.contains("malformed response"), "{err}");
    assert!(
        err.contains("HTTP 500") && err.contains("gave up after 3 attempt(s)"),
        "{err}"
    );
    assert!(
        err.contains("19 rows written") && err.contains("2 failed"),
        "{err}"
    );
    assert!(
        err.contains("error: 2 row(s) not written (2 failed, 0 not attempted)"),
        "{err}"
    );

    // The server is fixed: a rerun makes only the two missing rows.
    let good = Mock::start(echo_handler);
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
    cmd.args(llm_args(&good));
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert!(
        err.contains("2 rows written (19 already there), 2 requests"),
        "{err}"
    );
    assert_complete_once(&w, 7);
}

#[test]
fn llm_cli_budget_stop_then_resume() {
    let mock = Mock::start(echo_handler);
    let w = Work::plain();
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
    cmd.args(llm_args(&mock))
        .args(["--max-requests", "8", "--concurrency", "2"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok);
    assert!(
        err.contains("8 rows written") && err.contains("8 requests"),
        "{err}"
    );
    assert!(
        err.contains("13 not attempted, --max-requests 8 reached"),
        "{err}"
    );
    assert_eq!(mock.requests().len(), 8);

    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
    cmd.args(llm_args(&mock));
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert!(
        err.contains("13 rows written (8 already there), 13 requests"),
        "{err}"
    );
    assert_eq!(mock.requests().len(), 21);
    assert_complete_once(&w, 7);
}

/// A killed run loses only the requests in flight, and a rerun makes exactly the rows not
/// written. The kill lands on a known state, not in a time window: the mock answers the first
/// `answered` requests and holds every later one until after the kill, so the run stops with
/// exactly `answered` rows written and one request per worker in flight. (Before, the kill had
/// to land in the ~0.5 s between the 5th and the 21st row.)
#[test]
fn llm_cli_kill_and_restart_loses_only_requests_in_flight() {
    let concurrency = 2;
    let answered = 5;
    let gate = Gate::default();
    let held = gate.clone();
    let slow = Mock::start(move |n, req| {
        if n >= answered {
            held.wait(Duration::from_secs(120));
        }
        echo_handler(n, req)
    });
    let w = Work::plain();
    let mut args = llm_args(&slow);
    // No time-out (and retry) while the requests are held, however late the kill.
    let t = args.iter().position(|a| a == "--timeout").unwrap();
    args[t + 1] = "600".into();
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
    cmd.args(args)
        .args(["--concurrency", &concurrency.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let written = |w: &Work| -> usize {
        TIER_FILES
            .iter()
            .map(|n| std::fs::read_to_string(w.file(&format!("train_{n}"))).unwrap_or_default())
            .map(|s| s.matches("EXPLANATION of").count())
            .sum()
    };
    // Wait until the answered rows are written and every worker waits on a held request.
    let deadline = Instant::now() + Duration::from_secs(60);
    let reached = loop {
        if written(&w) == answered && slow.requests().len() == answered + concurrency {
            break Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("the run ended ({status}) before the kill"));
        }
        if Instant::now() > deadline {
            break Err(format!(
                "after 60 s: {} rows written, {} requests",
                written(&w),
                slow.requests().len()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    gate.open();
    reached.unwrap();
    let before = written(&w);
    assert_eq!(before, answered);
    // Exactly the requests in flight were lost.
    assert_eq!(slow.requests().len(), before + concurrency);

    let fast = Mock::start(echo_handler);
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
    cmd.args(llm_args(&fast));
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert_eq!(fast.requests().len(), 21 - before, "{err}");
    assert_complete_once(&w, 7);
}

/// Answers every request with `reply(n, request)` and notes when (by the mock's own clock) each
/// request arrived, in arrival order.
fn timed_mock(
    reply: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
) -> (Mock, Arc<Mutex<Vec<Instant>>>) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let log = times.clone();
    let mock = Mock::start(move |n, req| {
        log.lock().unwrap().push(Instant::now());
        reply(n, req)
    });
    (mock, times)
}

/// How many times each distinct request body was sent.
fn sends_per_body(mock: &Mock) -> HashMap<String, usize> {
    let mut sends = HashMap::new();
    for r in mock.requests() {
        *sends.entry(r.body).or_insert(0) += 1;
    }
    sends
}

/// Catches a client error (HTTP 400, 401, 403) treated as retryable, or an auth failure
/// reported without the hint to check ADIFF_LLM_API_KEY: every row fails, each prompt is sent
/// exactly once although retries are allowed (the default 5), the run fails, and the
/// error names the status and, for 401/403 only, the key variable (never the key itself).
#[test]
fn llm_cli_client_errors_fail_at_once_with_the_key_hint() {
    for code in [400u16, 401, 403] {
        let mock = Mock::start(move |_, _| status(code, "{\"error\": \"nope\"}"));
        let w = Work::plain();
        let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &[]);
        cmd.args(llm_args(&mock))
            .args(["--concurrency", "2"])
            .env("ADIFF_LLM_API_KEY", KEY);
        let (ok, out, err) = run(&mut cmd);
        assert!(!ok, "HTTP {code}: the run succeeded\n{err}");
        assert_one_error_line(&err);
        let sends = sends_per_body(&mock);
        assert_eq!(sends.len(), 21, "HTTP {code}: distinct prompts\n{err}");
        assert!(
            sends.values().all(|&n| n == 1),
            "HTTP {code}: a prompt was retried: {sends:?}"
        );
        assert_eq!(mock.requests().len(), 21, "HTTP {code}");
        assert!(
            err.contains("21 requests (0 retries), 21 failed"),
            "HTTP {code}: {err}"
        );
        assert!(
            err.contains("error: 21 row(s) not written (21 failed, 0 not attempted)"),
            "HTTP {code}: {err}"
        );
        let failures: Vec<&str> = err.lines().filter(|l| l.starts_with("failed:")).collect();
        assert_eq!(failures.len(), 21, "HTTP {code}: {err}");
        for line in &failures {
            assert!(line.contains(&format!("HTTP {code}")), "{line}");
            assert!(!line.contains("gave up after"), "{line}");
            let hint = line.contains("ADIFF_LLM_API_KEY");
            assert_eq!(hint, code != 400, "HTTP {code}: key hint: {line}");
        }
        for text in [&out, &err] {
            assert!(!text.contains(KEY), "HTTP {code}: key leaked");
        }
    }
}

/// Catches a `Retry-After` header that is ignored (the retry comes after the 5 ms backoff
/// instead of the 1 s the server asked for) or a 429/503 that is not retried: the first try of a
/// prompt gets 429 and its retry 503, both with `Retry-After: 1`; the third try succeeds, each
/// try at least 1 s after the one before by the mock's own clock.
#[test]
fn llm_cli_retry_after_is_honoured_for_429_and_503() {
    let (mock, times) = timed_mock(|n, req| {
        let busy = |code: u16| Reply {
            headers: vec![("Retry-After", "1".to_string())],
            ..status(code, "busy")
        };
        match n {
            0 => busy(429),
            1 => busy(503),
            _ => echo_handler(n, req),
        }
    });
    let w = Work::plain();
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &["--tiers", "1"]);
    cmd.args(llm_args(&mock)).args(["--concurrency", "1"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert!(
        err.contains("7 rows written (0 already there), 9 requests (2 retries), 0 failed"),
        "{err}"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 9);
    // The two retries resend the first prompt.
    assert_eq!(reqs[1].body, reqs[0].body);
    assert_eq!(reqs[2].body, reqs[0].body);
    assert_eq!(sends_per_body(&mock).len(), 7);
    let t = times.lock().unwrap().clone();
    for i in 1..=2 {
        let gap = t[i] - t[i - 1];
        assert!(
            gap >= Duration::from_secs(1),
            "retry {i} came {gap:?} after the try before, Retry-After said 1 s"
        );
    }
}

/// Catches a retry count that is not bounded by the default `--max-retries` (5: six attempts
/// in all), a persistent 5xx retried forever or given up too early, and a backoff that does not
/// double: one prompt gets 503 on every try, the others are answered; that prompt is sent exactly
/// 6 times, each retry waiting at least 5, 10, 20, 40, 80 ms (from `--backoff-ms 5`), and the
/// row is reported failed after 6 attempts while the other rows are written.
#[test]
fn llm_cli_persistent_5xx_stops_at_the_default_retry_cap() {
    let (mock, times) = timed_mock(|n, req| {
        if req.user().starts_with("Audio 1 caption: A clock ticks") {
            status(503, "overloaded")
        } else {
            echo_handler(n, req)
        }
    });
    let w = Work::plain();
    let mut cmd = pairs_cmd(&fixture("plain.csv"), "csv", &w, &["--tiers", "1"]);
    cmd.args(llm_args(&mock)).args(["--concurrency", "1"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok, "{err}");
    assert_one_error_line(&err);
    assert!(
        err.contains("HTTP 503") && err.contains("gave up after 6 attempt(s)"),
        "{err}"
    );
    assert!(
        err.contains("6 rows written (0 already there), 12 requests (5 retries), 1 failed"),
        "{err}"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 12);
    let failing: Vec<usize> = (0..reqs.len())
        .filter(|&i| reqs[i].user().starts_with("Audio 1 caption: A clock ticks"))
        .collect();
    assert_eq!(failing.len(), 6, "attempts of the failing prompt");
    // With one worker the six attempts come one after another.
    assert_eq!(failing, (failing[0]..failing[0] + 6).collect::<Vec<_>>());
    let t = times.lock().unwrap().clone();
    for (k, pair) in failing.windows(2).enumerate() {
        let want = Duration::from_millis(5 << k);
        let gap = t[pair[1]] - t[pair[0]];
        assert!(
            gap >= want,
            "retry {}: waited {gap:?}, want >= {want:?}",
            k + 1
        );
    }
}

// ---------------------------------------------------------------- measurements (run by hand)

/// Throughput of the template explainer and of the LLM path against the local mock server.
/// `cargo test --release --test build_dataset_pairs -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_throughput() {
    let n = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("audio");
    std::fs::create_dir(&audio).unwrap();
    let mut csv = String::from("file,caption\n");
    for i in 0..n {
        std::fs::write(audio.join(format!("{i}.wav")), b"").unwrap();
        csv.push_str(&format!(
            "{i}.wav,Caption number {i} with a dog barking and rain\n"
        ));
    }
    let captions = dir.path().join("captions.csv");
    std::fs::write(&captions, csv).unwrap();
    let w = Work { dir };
    let t = Instant::now();
    let (ok, _, err) = run(&mut pairs_cmd(
        &captions,
        "csv",
        &w,
        &["--explainer", "template"],
    ));
    assert!(ok, "{err}");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "template: {n} pairs x 3 tiers in {secs:.2} s = {:.0} pairs/s ({:.0} rows/s)",
        n as f64 / secs,
        3.0 * n as f64 / secs
    );

    let mock = Mock::start(echo_handler);
    std::fs::remove_dir_all(w.out()).unwrap();
    let rows = 2_000;
    let small = w.dir.path().join("small.csv");
    let text = std::fs::read_to_string(&captions).unwrap();
    std::fs::write(
        &small,
        text.lines().take(rows + 1).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    for conc in ["1", "8"] {
        let _ = std::fs::remove_dir_all(w.out());
        let t = Instant::now();
        let mut cmd = pairs_cmd(&small, "csv", &w, &["--tiers", "1", "--concurrency", conc]);
        cmd.args(llm_args(&mock));
        let (ok, _, err) = run(&mut cmd);
        assert!(ok, "{err}");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "llm vs mock, concurrency {conc}: {rows} rows in {secs:.2} s = {:.0} rows/s",
            rows as f64 / secs
        );
    }
}

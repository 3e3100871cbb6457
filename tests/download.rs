//! `adiff download` against a tiny HTTP/1.1 server on 127.0.0.1 started by each test, and
//! named-checkpoint resolution. The real binary runs with `ADIFF_CACHE` = a temporary directory and
//! `ADIFF_DOWNLOAD_BASE_URL` = the test server. Checks are exact: the downloaded file must equal
//! the served bytes, checksums are compared as strings.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adiff::hub;
use sha2::{Digest, Sha256};

/// Size of the served file: several read chunks, still instant.
const BLOB_BYTES: usize = 300_000;
/// A test server stops by itself after this long even if requests are missing.
const SERVER_LIFETIME: Duration = Duration::from_secs(20);
/// Path the client must ask for (record 14706090, adiff_base.ckpt).
const BASE_REQUEST: &str = "GET /records/14706090/files/adiff_base.ckpt?download=1 HTTP/1.1";

/// What the server does with one request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 200, or 206 for `Range: bytes=N-` (416 when N is past the end).
    Serve,
    /// 200 with the whole file whatever the Range header says.
    IgnoreRange,
    /// 404.
    NotFound,
    /// Announces the whole (remaining) body, sends this many bytes, closes.
    CutAfter(usize),
}

struct Server {
    url: String,
    /// Request heads seen, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Deterministic pseudo-random bytes (an LCG), so a shifted or restarted copy never matches.
fn blob() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    Arc::new(
        (0..BLOB_BYTES)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves one request per entry of `plan`, then stops (or after [`SERVER_LIFETIME`]).
fn serve(body: Arc<Vec<u8>>, plan: Vec<Behaviour>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + SERVER_LIFETIME;
        let mut plan = plan.into_iter();
        let mut next = plan.next();
        while let Some(behaviour) = next {
            if Instant::now() > deadline {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    handle(stream, behaviour, &body, &seen);
                    next = plan.next();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => return,
            }
        }
    });
    Server { url, requests }
}

fn handle(mut stream: TcpStream, behaviour: Behaviour, body: &[u8], seen: &Mutex<Vec<String>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let range_start = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("range") {
            return None;
        }
        value
            .trim()
            .strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    });
    seen.lock().unwrap().push(head);

    let total = body.len();
    let (status, extra, payload, send): (&str, String, &[u8], usize) = match behaviour {
        Behaviour::NotFound => ("404 Not Found", String::new(), b"no such file", 12),
        Behaviour::IgnoreRange => ("200 OK", String::new(), body, total),
        Behaviour::Serve | Behaviour::CutAfter(_) => {
            let (status, extra, payload) = match range_start {
                Some(n) if n >= total => (
                    "416 Range Not Satisfiable",
                    format!("Content-Range: bytes */{total}\r\n"),
                    &body[..0],
                ),
                Some(n) => (
                    "206 Partial Content",
                    format!("Content-Range: bytes {n}-{}/{total}\r\n", total - 1),
                    &body[n..],
                ),
                None => ("200 OK", String::new(), body),
            };
            let send = match behaviour {
                Behaviour::CutAfter(k) => k.min(payload.len()),
                _ => payload.len(),
            };
            (status, extra, payload, send)
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        payload.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.write_all(&payload[..send]);
    let _ = stream.flush();
}

/// Runs the real binary with the cache in `cache` and downloads from `base_url`.
fn adiff(cache: &Path, base_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(args)
        .env(hub::CACHE_ENV, cache)
        .env(hub::BASE_URL_ENV, base_url)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failed run: exit status 1 and exactly one line on stderr, which is returned.
fn one_line_error(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

/// A URL on 127.0.0.1 whose port nothing listens on, for as long as this lives.
struct ClosedPort {
    url: String,
    /// Holds the port: bound, never listening, so connecting is refused.
    #[cfg(unix)]
    _socket: std::os::fd::OwnedFd,
}

/// A port bound by a socket that never listens: connections are refused, and while the
/// [`ClosedPort`] lives the OS cannot give the port to a server another test starts meanwhile
/// (as it could the port bound and released that this used to be, which that server would then
/// answer, or whose request would use up that server's plan).
#[cfg(unix)]
fn closed_port() -> ClosedPort {
    use std::os::fd::{FromRawFd, OwnedFd};
    let err = || std::io::Error::last_os_error();
    // SAFETY: plain socket calls on a descriptor this function owns, with a zeroed sockaddr_in
    // of the size passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", err());
        let socket = OwnedFd::from_raw_fd(fd);
        assert_eq!(
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC),
            0,
            "{}",
            err()
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let ptr = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::bind(fd, ptr, len), 0, "bind: {}", err());
        assert_eq!(libc::getsockname(fd, ptr, &mut len), 0, "{}", err());
        let port = u16::from_be(addr.sin_port);
        assert_ne!(port, 0);
        // Held: no server can bind it now (std's listeners too, which set SO_REUSEADDR).
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_err(),
            "port {port} not held"
        );
        ClosedPort {
            url: format!("http://127.0.0.1:{port}"),
            _socket: socket,
        }
    }
}

/// Elsewhere: a port bound, then released (another test's server may be given it).
#[cfg(not(unix))]
fn closed_port() -> ClosedPort {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    ClosedPort {
        url: format!("http://{addr}"),
    }
}

fn has_range(request: &str, start: usize) -> bool {
    request
        .lines()
        .any(|l| l.eq_ignore_ascii_case(&format!("range: bytes={start}-")))
}

#[test]
fn fresh_download_verifies_checksum_then_is_left_alone() {
    let body = blob();
    let sha = sha256_hex(&body);
    let server = serve(body.clone(), vec![Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();

    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &sha],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dest = cache.path().join("adiff_base.ckpt");
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    assert!(!cache.path().join("adiff_base.ckpt.partial").exists());
    assert!(
        stdout.contains(&format!("checksum ok (sha256:{sha})")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("sha256 {sha}  {}", dest.display())),
        "{stdout}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].starts_with(BASE_REQUEST), "{}", requests[0]);
    assert!(!requests[0].to_ascii_lowercase().contains("range:"));

    // Second run: already there and verified, the server is not asked again.
    let again = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &sha],
    );
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(stdout.contains("already in the cache"), "{stdout}");
    assert!(stdout.contains("checksum ok"), "{stdout}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn md5_checksum_is_accepted() {
    // md5 of the blob, from the library's digest (itself checked on the RFC 1321 vector).
    let body = blob();
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, &*body).unwrap();
    let md5 = hub::file_digests(&probe).unwrap().md5;
    let server = serve(body.clone(), vec![Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();
    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--md5", &md5],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("checksum ok (md5:{md5})")));
}

#[test]
fn resumes_from_a_partial_file_with_a_range_request() {
    let body = blob();
    let sha = sha256_hex(&body);
    let server = serve(body.clone(), vec![Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();
    let kept = 100_000;
    std::fs::write(cache.path().join("adiff_base.ckpt.partial"), &body[..kept]).unwrap();

    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &sha],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("resumed at byte {kept}")));
    assert_eq!(
        std::fs::read(cache.path().join("adiff_base.ckpt")).unwrap(),
        *body
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(has_range(&requests[0], kept), "{}", requests[0]);
}

#[test]
fn broken_transfer_keeps_the_partial_and_the_next_run_resumes() {
    let body = blob();
    let sha = sha256_hex(&body);
    let cut = 50_000;
    let server = serve(
        body.clone(),
        vec![Behaviour::CutAfter(cut), Behaviour::Serve],
    );
    let cache = tempfile::tempdir().unwrap();
    let partial = cache.path().join("adiff_base.ckpt.partial");

    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &sha],
    );
    let line = one_line_error(&out);
    assert!(
        line.contains("run the same command again to resume"),
        "{line}"
    );
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), cut as u64);
    assert!(!cache.path().join("adiff_base.ckpt").exists());

    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &sha],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(cache.path().join("adiff_base.ckpt")).unwrap(),
        *body
    );
    assert!(has_range(&server.requests()[1], cut));
}

#[test]
fn a_complete_partial_is_finished_on_416() {
    let body = blob();
    let sha = sha256_hex(&body);
    let server = serve(body.clone(), vec![Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("adiff_base.ckpt.partial"), &*body).unwrap();

    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &sha],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(cache.path().join("adiff_base.ckpt")).unwrap(),
        *body
    );
    assert!(has_range(&server.requests()[0], BLOB_BYTES));
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let body = blob();
    let sha = sha256_hex(&body);
    let server = serve(body.clone(), vec![Behaviour::IgnoreRange]);
    let cache = tempfile::tempdir().unwrap();
    // A prefix that does not match the file: kept, it would spoil the result.
    let stale = 1_000;
    std::fs::write(
        cache.path().join("adiff_base.ckpt.partial"),
        vec![0xFF; stale],
    )
    .unwrap();

    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &sha],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ignored the resume request"));
    assert_eq!(
        std::fs::read(cache.path().join("adiff_base.ckpt")).unwrap(),
        *body
    );
    assert!(has_range(&server.requests()[0], stale));
}

#[test]
fn checksum_mismatch_fails_and_removes_the_file() {
    let body = blob();
    let sha = sha256_hex(&body);
    let wrong = "0".repeat(64);
    let server = serve(body, vec![Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();

    let out = adiff(
        cache.path(),
        &server.url,
        &["download", "adiff-base", "--sha256", &wrong],
    );
    let line = one_line_error(&out);
    assert!(line.contains("checksum mismatch"), "{line}");
    assert!(line.contains(&format!("expected sha256:{wrong}")), "{line}");
    assert!(line.contains(&format!("got sha256:{sha}")), "{line}");
    assert!(!cache.path().join("adiff_base.ckpt").exists());
    assert!(!cache.path().join("adiff_base.ckpt.partial").exists());
}

#[test]
fn http_404_is_one_line_with_status_and_url() {
    let server = serve(blob(), vec![Behaviour::NotFound]);
    let cache = tempfile::tempdir().unwrap();
    let out = adiff(cache.path(), &server.url, &["download", "adiff-wavcaps"]);
    let line = one_line_error(&out);
    let url = format!(
        "{}/records/14706090/files/adiff_base_wavcaps.ckpt?download=1",
        server.url
    );
    assert!(line.contains("HTTP 404"), "{line}");
    assert!(line.contains(&url), "{line}");
    assert!(!cache.path().join("adiff_base_wavcaps.ckpt").exists());
}

#[test]
fn unreachable_server_says_what_to_download_by_hand_and_where() {
    let closed = closed_port();
    let base = &closed.url;
    let cache = tempfile::tempdir().unwrap();
    let out = adiff(cache.path(), base, &["download", "adiff-base"]);
    let line = one_line_error(&out);
    let url = format!("{base}/records/14706090/files/adiff_base.ckpt?download=1");
    let dest = cache.path().join("adiff_base.ckpt");
    assert!(line.contains("download it by hand"), "{line}");
    assert!(line.contains(&url), "{line}");
    assert!(line.contains(&dest.display().to_string()), "{line}");
}

#[test]
fn bad_checksum_argument_is_one_line() {
    let cache = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let out = adiff(
        cache.path(),
        &closed.url,
        &["download", "adiff-base", "--sha256", "xyz"],
    );
    let line = one_line_error(&out);
    assert!(line.contains("sha256"), "{line}");
}

#[test]
fn named_checkpoints_resolve_to_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dest = cache.path().join("adiff_base.ckpt");

    let err = hub::resolve_checkpoint_in("adiff-base", cache.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("run `adiff download adiff-base`"), "{err}");
    assert!(
        err.contains(&format!("put the file at {}", dest.display())),
        "{err}"
    );

    std::fs::write(&dest, b"x").unwrap();
    assert_eq!(
        hub::resolve_checkpoint_in("adiff-base", cache.path()).unwrap(),
        dest
    );
    // Anything that is not a known name is a path, untouched.
    assert_eq!(
        hub::resolve_checkpoint_in("models/adiff-base.ckpt", cache.path()).unwrap(),
        Path::new("models/adiff-base.ckpt")
    );
    assert_eq!(
        hub::resolve_checkpoint_in("./adiff-base", cache.path()).unwrap(),
        Path::new("./adiff-base")
    );
}

#[test]
fn model_commands_accept_a_checkpoint_name() {
    // `--checkpoint adiff-base` with an empty cache: the model commands name the fix.
    let cache = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let out = adiff(
        cache.path(),
        &closed.url,
        &[
            "embed",
            "--checkpoint",
            "adiff-base",
            "missing.wav",
            "-o",
            "unused.npz",
        ],
    );
    let line = one_line_error(&out);
    assert!(line.contains("run `adiff download adiff-base`"), "{line}");
    assert!(
        line.contains(&cache.path().join("adiff_base.ckpt").display().to_string()),
        "{line}"
    );
}

#[test]
fn gpt2_from_an_unreachable_hub_says_what_to_put_where() {
    let hf_home = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let out = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(["download", "gpt2"])
        .env("HF_HOME", hf_home.path())
        .env("HF_ENDPOINT", &closed.url)
        .output()
        .unwrap();
    let line = one_line_error(&out);
    assert!(line.contains("model.safetensors"), "{line}");
    assert!(line.contains("tokenizer.json"), "{line}");
    let repo_dir = hf_home.path().join("hub").join("models--gpt2");
    assert!(line.contains(&repo_dir.display().to_string()), "{line}");
}

#[test]
fn gpt2_files_placed_by_hand_are_found_offline() {
    // The layout the offline message describes is the one hf-hub reads.
    let hf_home = tempfile::tempdir().unwrap();
    let repo_dir = hf_home.path().join("hub").join("models--gpt2");
    let snapshot = repo_dir.join("snapshots").join("manual");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), "manual").unwrap();
    std::fs::write(snapshot.join("model.safetensors"), b"w").unwrap();
    std::fs::write(snapshot.join("tokenizer.json"), b"t").unwrap();
    let closed = closed_port();
    let out = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .args(["download", "gpt2"])
        .env("HF_HOME", hf_home.path())
        .env("HF_ENDPOINT", &closed.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&snapshot.join("model.safetensors").display().to_string()));
    assert!(stdout.contains(&snapshot.join("tokenizer.json").display().to_string()));
}

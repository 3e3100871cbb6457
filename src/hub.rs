//! Named checkpoints and downloads.
//!
//! The official ADIFF checkpoints live in a Zenodo record; `adiff download adiff-base` fetches one
//! into the cache directory (`$ADIFF_CACHE`, else the platform cache dir + `adiff/`) with resume
//! and a checksum check, and `--checkpoint adiff-base` then resolves to that cached file
//! ([`resolve_checkpoint`]). GPT-2 weights and tokenizer come from the Hugging Face hub through
//! hf-hub ([`hub_gpt2_files`]), which keeps its own cache (`$HF_HOME/hub`).
//!
//! FENSE's models (`adiff download fense`, [`download_fense`]): the Sentence-BERT and the
//! echecker's encoder config and vocabulary come from the hub; the echecker checkpoint from the
//! fixed GitHub release URL aac-metrics uses, checked against the sha256 aac-metrics pins, into
//! the cache directory's `fense/`. `adiff eval` finds them there without a network
//! ([`fense_cached`]).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::{AdiffError, Result};

/// Environment variable naming the cache directory (overrides the platform cache dir).
pub const CACHE_ENV: &str = "ADIFF_CACHE";
/// Environment variable replacing [`ZENODO_BASE_URL`] (tests, mirrors).
pub const BASE_URL_ENV: &str = "ADIFF_DOWNLOAD_BASE_URL";
/// Where the official checkpoints are published.
pub const ZENODO_BASE_URL: &str = "https://zenodo.org";
/// Sub-directory of the platform cache dir used when `$ADIFF_CACHE` is not set.
const CACHE_SUBDIR: &str = "adiff";
/// Suffix of a download in progress; it becomes the real file only once verified.
const PARTIAL_SUFFIX: &str = ".partial";
/// Read size while streaming a body or hashing a file.
const CHUNK_BYTES: usize = 1 << 16;
/// A server that does not accept the connection within this time is taken as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A transfer that stalls this long is broken off (the partial file is kept for a resume).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Hugging Face hub endpoint when `$HF_ENDPOINT` is not set (as hf-hub).
const HF_DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const HF_ENDPOINT_ENV: &str = "HF_ENDPOINT";
const HF_HOME_ENV: &str = "HF_HOME";
/// hf-hub's cache layout below `$HF_HOME`.
const HF_HUB_SUBDIR: &str = "hub";
/// Default `$HF_HOME` below the home directory (as hf-hub).
const HF_DEFAULT_HOME: [&str; 2] = [".cache", "huggingface"];
/// Revision hf-hub resolves (`refs/<revision>` holds the snapshot name).
const HF_REVISION: &str = "main";
/// Snapshot name suggested to users who place the GPT-2 files by hand.
const HF_MANUAL_SNAPSHOT: &str = "manual";
/// GPT-2 weight file in a hub repository.
pub const GPT2_WEIGHTS_FILE: &str = "model.safetensors";
/// GPT-2 tokenizer file in a hub repository.
pub const GPT2_TOKENIZER_FILE: &str = "tokenizer.json";
/// GPT-2 repositories `adiff download` knows by name (all have both files above).
pub const GPT2_REPOS: &[&str] = &["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"];

/// Sentence-BERT of FENSE (aac-metrics' `DEFAULT_SBERT_SIM_MODEL`).
pub const FENSE_SBERT_REPO: &str = "sentence-transformers/paraphrase-TinyBERT-L6-v2";
/// The encoder of fense's `echecker_clotho_audiocaps_base` (its checkpoint's `model_type`): only
/// its config and vocabulary are needed, the weights are in the checkpoint.
pub const FENSE_ECHECKER_BERT_REPO: &str = "prajjwal1/bert-medium";
/// Files of the Sentence-BERT repository; each entry lists alternatives, the first found is used.
const FENSE_SBERT_FILES: &[&[&str]] = &[
    &["config.json"],
    &["modules.json"],
    &["sentence_bert_config.json"],
    &["1_Pooling/config.json"],
    &["tokenizer.json", "vocab.txt"],
    &["model.safetensors", "pytorch_model.bin"],
];
/// Files of the echecker's encoder repository.
const FENSE_ECHECKER_BERT_FILES: &[&[&str]] = &[&["config.json"], &["vocab.txt"]];
/// The echecker checkpoint's file name (in `<cache>/fense/`, as aac-metrics names it).
pub const FENSE_ECHECKER_FILE: &str = "echecker_clotho_audiocaps_base.ckpt";
/// Where aac-metrics (`_PRETRAIN_ECHECKERS_DICT`) downloads it, below [`GITHUB_BASE_URL`].
pub const FENSE_ECHECKER_URL_PATH: &str =
    "/blmoistawinde/fense/releases/download/V0.1/echecker_clotho_audiocaps_base.ckpt";
/// The sha256 aac-metrics checks the downloaded echecker against.
pub const FENSE_ECHECKER_SHA256: &str =
    "1a719f090af70614bbdb9f9437530b7e133c48cfa4a58d964de0d47fc974a2fa";
/// Host of the echecker release (replaced by `$ADIFF_DOWNLOAD_BASE_URL` too, for mirrors and
/// tests).
pub const GITHUB_BASE_URL: &str = "https://github.com";
/// Sub-directory of the cache directory holding the echecker.
const FENSE_CACHE_SUBDIR: &str = "fense";

/// An official checkpoint that `adiff download NAME` and `--checkpoint NAME` know.
#[derive(Debug, Clone, Copy)]
pub struct KnownCheckpoint {
    /// The name users type (`adiff-base`).
    pub name: &'static str,
    /// File name in the record, and in the cache directory.
    pub file_name: &'static str,
    /// URL below the base URL ([`ZENODO_BASE_URL`] or `$ADIFF_DOWNLOAD_BASE_URL`).
    pub url_path: &'static str,
    /// Expected checksum, `md5:HEX` or `sha256:HEX` (see [`Checksum::parse`]). `None` until it is
    /// filled from the checksum the Zenodo record publishes (an md5): then the file is not
    /// verified, only its sha256 is printed.
    pub checksum: Option<&'static str>,
    /// One line for `--help`.
    pub description: &'static str,
}

/// Zenodo record 14706090 ("ADIFF", the paper's checkpoints).
///
/// The checksums are not known here (no network when this table was written): each must be filled
/// from the record's published md5 when known. The file name of `adiff-wavcaps` could not be
/// checked against the record either.
pub const KNOWN_CHECKPOINTS: &[KnownCheckpoint] = &[
    KnownCheckpoint {
        name: "adiff-base",
        file_name: "adiff_base.ckpt",
        url_path: "/records/14706090/files/adiff_base.ckpt?download=1",
        // TODO: fill from the record's published md5 ("md5:...") when known.
        checksum: None,
        description: "ADIFF base (Zenodo record 14706090, adiff_base.ckpt)",
    },
    KnownCheckpoint {
        name: "adiff-wavcaps",
        file_name: "adiff_base_wavcaps.ckpt",
        url_path: "/records/14706090/files/adiff_base_wavcaps.ckpt?download=1",
        // TODO: fill from the record's published md5 ("md5:...") when known.
        checksum: None,
        description: "ADIFF base trained with WavCaps (Zenodo record 14706090; the file name \
                      adiff_base_wavcaps.ckpt is unverified)",
    },
];

impl KnownCheckpoint {
    /// Full URL below `base` (no trailing slash needed).
    pub fn url(&self, base: &str) -> String {
        format!("{}{}", base.trim_end_matches('/'), self.url_path)
    }

    /// Where the file lives once downloaded.
    pub fn cached_path(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(self.file_name)
    }
}

/// The known checkpoint called `name`, if any.
pub fn known_checkpoint(name: &str) -> Option<&'static KnownCheckpoint> {
    KNOWN_CHECKPOINTS.iter().find(|k| k.name == name)
}

/// `$ADIFF_CACHE`, else the platform cache directory + `adiff/` (not created here).
pub fn cache_dir() -> Result<PathBuf> {
    match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => dirs::cache_dir()
            .map(|d| d.join(CACHE_SUBDIR))
            .ok_or_else(|| {
                AdiffError::Download(format!(
                    "no cache directory on this platform: set {CACHE_ENV}"
                ))
            }),
    }
}

/// `$ADIFF_DOWNLOAD_BASE_URL`, else [`ZENODO_BASE_URL`].
pub fn download_base_url() -> String {
    base_url_or(ZENODO_BASE_URL)
}

/// `$ADIFF_DOWNLOAD_BASE_URL`, else `default`.
fn base_url_or(default: &str) -> String {
    match std::env::var(BASE_URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => default.to_string(),
    }
}

/// Maps a `--checkpoint` value to a file: a known name (`adiff-base`, `adiff-wavcaps`) is the
/// cached official file, which must exist; anything else is a path, returned as is (to use a
/// local file that happens to be called `adiff-base`, write `./adiff-base`).
pub fn resolve_checkpoint(spec: &str) -> Result<PathBuf> {
    match known_checkpoint(spec) {
        Some(_) => resolve_checkpoint_in(spec, &cache_dir()?),
        None => Ok(PathBuf::from(spec)),
    }
}

/// [`resolve_checkpoint`] with an explicit cache directory.
pub fn resolve_checkpoint_in(spec: &str, cache_dir: &Path) -> Result<PathBuf> {
    let Some(known) = known_checkpoint(spec) else {
        return Ok(PathBuf::from(spec));
    };
    let path = known.cached_path(cache_dir);
    if path.is_file() {
        Ok(path)
    } else {
        Err(AdiffError::Download(format!(
            "checkpoint {spec} is not downloaded: run `adiff download {spec}` or put the file at {}",
            path.display()
        )))
    }
}

/// An expected checksum: Zenodo publishes md5, a user may give a sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// Lower-case hex, 32 digits.
    Md5(String),
    /// Lower-case hex, 64 digits.
    Sha256(String),
}

const MD5_HEX_DIGITS: usize = 32;
const SHA256_HEX_DIGITS: usize = 64;

impl Checksum {
    /// Parses `md5:HEX` or `sha256:HEX`.
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some(hex) = spec.strip_prefix("md5:") {
            Self::md5(hex)
        } else if let Some(hex) = spec.strip_prefix("sha256:") {
            Self::sha256(hex)
        } else {
            Err(AdiffError::Invalid(format!(
                "bad checksum '{spec}': expected md5:<{MD5_HEX_DIGITS} hex digits> or \
                 sha256:<{SHA256_HEX_DIGITS} hex digits>"
            )))
        }
    }

    /// A sha256 given as hex.
    pub fn sha256(hex: &str) -> Result<Self> {
        check_hex(hex, SHA256_HEX_DIGITS, "sha256").map(Checksum::Sha256)
    }

    /// An md5 given as hex.
    pub fn md5(hex: &str) -> Result<Self> {
        check_hex(hex, MD5_HEX_DIGITS, "md5").map(Checksum::Md5)
    }

    /// Whether `digests` match; returns the digest compared, for messages.
    fn check<'a>(&self, digests: &'a Digests) -> (bool, &'a str) {
        match self {
            Checksum::Md5(want) => (digests.md5 == *want, &digests.md5),
            Checksum::Sha256(want) => (digests.sha256 == *want, &digests.sha256),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "md5",
            Checksum::Sha256(_) => "sha256",
        }
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checksum::Md5(h) => write!(f, "md5:{h}"),
            Checksum::Sha256(h) => write!(f, "sha256:{h}"),
        }
    }
}

fn check_hex(hex: &str, digits: usize, kind: &str) -> Result<String> {
    let hex = hex.trim();
    if hex.len() == digits && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(AdiffError::Invalid(format!(
            "bad {kind} '{hex}': expected {digits} hex digits"
        )))
    }
}

/// Digests of a file, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: String,
}

/// sha256 and md5 of a file in one pass.
pub fn file_digests(path: &Path) -> Result<Digests> {
    let io_err = |e: std::io::Error| AdiffError::Download(format!("{}: {e}", path.display()));
    let mut file = File::open(path).map_err(io_err)?;
    let (mut sha, mut md5) = (Sha256::new(), Md5::new());
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    Ok(Digests {
        sha256: hex(&sha.finalize()),
        md5: hex(&md5.finalize()),
    })
}

/// Lower-case hexadecimal of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`download_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// The file was already in place; `verified` says whether a checksum was known to check it.
    AlreadyPresent { verified: bool },
    /// Fetched. `resumed_from`: bytes kept from an earlier partial download; `range_ignored`: a
    /// partial existed but the server sent the whole file, so it was restarted from byte 0;
    /// `replaced_bad`: a cached file that failed the checksum was replaced.
    Downloaded {
        resumed_from: u64,
        range_ignored: bool,
        replaced_bad: bool,
        verified: bool,
    },
}

/// A file in place after [`download_file`].
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub path: PathBuf,
    pub sha256: String,
    pub outcome: DownloadOutcome,
}

/// Downloads `url` to `dest`: into `dest.partial` (resumed with a Range request when it exists),
/// checked against `expected`, then renamed to `dest`. A `dest` already present and matching (or
/// with nothing to match against) is left alone. `progress` shows a byte progress bar on stderr
/// (hidden when stderr is not a terminal).
pub fn download_file(
    url: &str,
    dest: &Path,
    expected: Option<&Checksum>,
    progress: bool,
) -> Result<Downloaded> {
    let mut replaced_bad = false;
    if dest.is_file() {
        let digests = file_digests(dest)?;
        match expected.map(|c| c.check(&digests)) {
            Some((true, _)) | None => {
                return Ok(Downloaded {
                    path: dest.to_path_buf(),
                    sha256: digests.sha256,
                    outcome: DownloadOutcome::AlreadyPresent {
                        verified: expected.is_some(),
                    },
                })
            }
            Some((false, _)) => {
                fs::remove_file(dest).map_err(|e| io_error(dest, e))?;
                replaced_bad = true;
            }
        }
    }
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let partial = partial_path(dest);
    let agent = ureq::AgentBuilder::new()
        .try_proxy_from_env(true)
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .user_agent(concat!("adiff/", env!("CARGO_PKG_VERSION")))
        .build();

    let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let fetched = match fetch(&agent, url, dest, &partial, have, progress)? {
        Fetch::Done(f) => f,
        // The partial file does not fit what the server has: start again from byte 0.
        Fetch::Restart => {
            fs::remove_file(&partial).map_err(|e| io_error(&partial, e))?;
            match fetch(&agent, url, dest, &partial, 0, progress)? {
                Fetch::Done(f) => f,
                Fetch::Restart => {
                    return Err(AdiffError::Download(format!(
                        "{url}: the server refused a download from byte 0"
                    )))
                }
            }
        }
    };

    let digests = file_digests(&partial)?;
    if let Some(want) = expected {
        let (ok, got) = want.check(&digests);
        if !ok {
            let removed = fs::remove_file(&partial).is_ok();
            return Err(AdiffError::Download(format!(
                "checksum mismatch for {}: expected {want}, got {}:{got} ({})",
                dest.display(),
                want.kind(),
                if removed {
                    "the bad download was removed"
                } else {
                    "could not remove the bad download"
                }
            )));
        }
    }
    fs::rename(&partial, dest).map_err(|e| io_error(dest, e))?;
    Ok(Downloaded {
        path: dest.to_path_buf(),
        sha256: digests.sha256,
        outcome: DownloadOutcome::Downloaded {
            resumed_from: fetched.resumed_from,
            range_ignored: fetched.range_ignored,
            replaced_bad,
            verified: expected.is_some(),
        },
    })
}

/// `<dest>.partial`, beside `dest`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(PARTIAL_SUFFIX);
    dest.with_file_name(name)
}

struct Fetched {
    resumed_from: u64,
    range_ignored: bool,
}

enum Fetch {
    Done(Fetched),
    /// The partial file cannot be continued (416, or a range that starts elsewhere).
    Restart,
}

/// One GET of `url`, appending to `partial` from byte `have` when the server honours the range.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    partial: &Path,
    have: u64,
    progress: bool,
) -> Result<Fetch> {
    // Identity encoding: byte offsets must be those of the file itself.
    let mut request = agent.get(url).set("Accept-Encoding", "identity");
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, r)) if have > 0 => {
            // Range not satisfiable: complete already when the server's size is what we have.
            let total = r.header("Content-Range").and_then(content_range_total);
            return Ok(if total == Some(have) {
                Fetch::Done(Fetched {
                    resumed_from: have,
                    range_ignored: false,
                })
            } else {
                Fetch::Restart
            });
        }
        Err(ureq::Error::Status(code, r)) => {
            return Err(AdiffError::Download(format!(
                "HTTP {code} {} from {url}",
                r.status_text()
            )))
        }
        Err(ureq::Error::Transport(t)) => return Err(transport_error(&t, url, dest)),
    };

    let (offset, range_ignored) = match response.status() {
        206 if have > 0 => {
            let start = response
                .header("Content-Range")
                .and_then(content_range_start);
            if start != Some(have) {
                return Ok(Fetch::Restart);
            }
            (have, false)
        }
        200 => (0, have > 0),
        other => {
            return Err(AdiffError::Download(format!(
                "unexpected HTTP {other} {} from {url}",
                response.status_text()
            )))
        }
    };
    let body_len = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let total = body_len.map(|n| n + offset);

    let file = if offset > 0 {
        OpenOptions::new().append(true).open(partial)
    } else {
        File::create(partial)
    }
    .map_err(|e| io_error(partial, e))?;
    let mut out = BufWriter::new(file);
    let bar = crate::progress::bytes(total, offset, progress, dest);

    let mut reader = response.into_reader();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut written = offset;
    let broken = |written: u64, why: String| {
        AdiffError::Download(format!(
            "download of {url} broke off after {written} bytes ({why}); {} is kept: run the \
             same command again to resume",
            partial.display()
        ))
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.flush().map_err(|e| io_error(partial, e))?;
                bar.abandon();
                return Err(broken(written, one_line(&e.to_string())));
            }
        };
        out.write_all(&buf[..n]).map_err(|e| io_error(partial, e))?;
        written += n as u64;
        bar.set_position(written);
    }
    let file = out
        .into_inner()
        .map_err(|e| io_error(partial, e.into_error()))?;
    file.sync_all().map_err(|e| io_error(partial, e))?;
    if let Some(total) = total {
        if written != total {
            bar.abandon();
            return Err(broken(
                written,
                format!("the server announced {total} bytes"),
            ));
        }
    }
    bar.finish_and_clear();
    Ok(Fetch::Done(Fetched {
        resumed_from: offset,
        range_ignored,
    }))
}

/// `bytes START-END/TOTAL` -> START.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// `bytes START-END/TOTAL` or `bytes */TOTAL` -> TOTAL.
fn content_range_total(value: &str) -> Option<u64> {
    value.rsplit('/').next()?.trim().parse().ok()
}

/// Unreachable server -> what to fetch by hand and where to put it; anything else -> one line.
fn transport_error(t: &ureq::Transport, url: &str, dest: &Path) -> AdiffError {
    use ureq::ErrorKind as K;
    match t.kind() {
        K::Dns | K::ConnectionFailed | K::ProxyConnect => AdiffError::Download(format!(
            "cannot reach the server ({}): download it by hand from {url} and save it as {}",
            one_line(&t.kind().to_string()),
            dest.display()
        )),
        _ => AdiffError::Download(format!("{url}: {}", one_line(&t.to_string()))),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> AdiffError {
    AdiffError::Download(format!("{}: {e}", path.display()))
}

/// Error texts from the network stack may span lines; the CLI prints one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// hf-hub's cache: `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (computed here because
/// hf-hub panics when there is no home directory).
fn hf_cache_dir() -> Result<PathBuf> {
    let home = match std::env::var_os(HF_HOME_ENV) {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => {
            let mut home = dirs::home_dir().ok_or_else(|| {
                AdiffError::Download(format!(
                    "no home directory for the Hugging Face cache: set {HF_HOME_ENV}"
                ))
            })?;
            home.extend(HF_DEFAULT_HOME);
            home
        }
    };
    Ok(home.join(HF_HUB_SUBDIR))
}

/// hf-hub's API over its cache, and the endpoint it talks to (`$HF_ENDPOINT`, else the hub).
fn hub_api() -> Result<(hf_hub::api::sync::Api, PathBuf, String)> {
    let cache = hf_cache_dir()?;
    let endpoint = match std::env::var(HF_ENDPOINT_ENV) {
        Ok(e) if !e.is_empty() => e,
        _ => HF_DEFAULT_ENDPOINT.to_string(),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.clone()))
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| AdiffError::Download(format!("hf-hub: {}", one_line(&e.to_string()))))?;
    Ok((api, cache, endpoint))
}

/// GPT-2 weights (`model.safetensors`) and `tokenizer.json` of hub repository `repo` (`gpt2`,
/// `gpt2-medium`, ...), from hf-hub's cache or downloaded into it. Honours `HF_HOME` and
/// `HF_ENDPOINT`; when the hub cannot be reached the error says which files to put where.
pub fn hub_gpt2_files(repo: &str) -> Result<(PathBuf, PathBuf)> {
    let (api, cache, endpoint) = hub_api()?;
    let api_repo = api.model(repo.to_string());
    let wanted = format!("{GPT2_WEIGHTS_FILE} and {GPT2_TOKENIZER_FILE}");
    let get = |file: &str| {
        api_repo
            .get(file)
            .map_err(|e| hf_error(&e, repo, file, &wanted, &endpoint, &cache))
    };
    Ok((get(GPT2_WEIGHTS_FILE)?, get(GPT2_TOKENIZER_FILE)?))
}

/// "a, b, c (or d)" for the files of `groups` (alternatives in parentheses).
fn describe_files(groups: &[&[&str]]) -> String {
    groups
        .iter()
        .map(|alts| match alts {
            [first, rest @ ..] if !rest.is_empty() => format!("{first} (or {})", rest.join(", ")),
            _ => alts.join(", "),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The snapshot directory holding `path`, the cached copy of `file` (which may be nested,
/// `1_Pooling/config.json`).
fn snapshot_dir(path: &Path, file: &str) -> PathBuf {
    let mut dir = path.to_path_buf();
    for _ in 0..Path::new(file).components().count() {
        dir.pop();
    }
    dir
}

/// The files of hub repository `repo` (each group: the first alternative the cache has, else the
/// first the hub has), downloaded into hf-hub's cache when missing; returns the snapshot
/// directory. An alternative the hub does not have (404) is skipped for the next.
fn hub_repo_files(repo: &str, groups: &[&[&str]]) -> Result<PathBuf> {
    let (api, cache, endpoint) = hub_api()?;
    let cached = hf_hub::Cache::new(cache.clone()).model(repo.to_string());
    let api_repo = api.model(repo.to_string());
    let wanted = describe_files(groups);
    let mut dir = None;
    for alts in groups {
        let found = match alts.iter().find_map(|f| cached.get(f).map(|p| (p, *f))) {
            Some(hit) => hit,
            None => {
                let mut got = None;
                for (k, f) in alts.iter().enumerate() {
                    match api_repo.get(f) {
                        Ok(p) => {
                            got = Some((p, *f));
                            break;
                        }
                        Err(e) if k + 1 < alts.len() && is_not_found(&e) => continue,
                        Err(e) => return Err(hf_error(&e, repo, f, &wanted, &endpoint, &cache)),
                    }
                }
                got.ok_or_else(|| AdiffError::Download(format!("{repo}: none of {alts:?}")))?
            }
        };
        dir.get_or_insert_with(|| snapshot_dir(&found.0, found.1));
    }
    dir.ok_or_else(|| AdiffError::Download(format!("{repo}: no files asked for")))
}

fn is_not_found(e: &hf_hub::api::sync::ApiError) -> bool {
    matches!(e, hf_hub::api::sync::ApiError::RequestError(inner)
        if matches!(inner.as_ref(), ureq::Error::Status(404, _)))
}

/// Where FENSE's model files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FensePaths {
    /// Snapshot of [`FENSE_SBERT_REPO`] (a sentence-transformers directory).
    pub sbert_dir: PathBuf,
    /// The echecker checkpoint.
    pub echecker_ckpt: PathBuf,
    /// Snapshot of [`FENSE_ECHECKER_BERT_REPO`] (`config.json`, `vocab.txt`).
    pub echecker_bert_dir: PathBuf,
}

/// `<cache>/fense/echecker_clotho_audiocaps_base.ckpt`.
pub fn fense_echecker_path() -> Result<PathBuf> {
    Ok(cache_dir()?
        .join(FENSE_CACHE_SUBDIR)
        .join(FENSE_ECHECKER_FILE))
}

/// The echecker's URL: [`GITHUB_BASE_URL`] (or `$ADIFF_DOWNLOAD_BASE_URL`) +
/// [`FENSE_ECHECKER_URL_PATH`].
pub fn fense_echecker_url() -> String {
    format!(
        "{}{FENSE_ECHECKER_URL_PATH}",
        base_url_or(GITHUB_BASE_URL).trim_end_matches('/')
    )
}

/// FENSE's files from the caches, without any network access; an error listing what is
/// missing otherwise.
pub fn fense_cached() -> Result<FensePaths> {
    let cache = hf_hub::Cache::new(hf_cache_dir()?);
    let mut missing = Vec::new();
    let mut snapshot = |repo: &str, groups: &[&[&str]]| {
        let cached = cache.model(repo.to_string());
        let mut dir = None;
        for alts in groups {
            match alts.iter().find_map(|f| cached.get(f).map(|p| (p, *f))) {
                Some((p, f)) => {
                    dir.get_or_insert_with(|| snapshot_dir(&p, f));
                }
                None => missing.push(format!("{repo}/{}", alts[0])),
            }
        }
        dir.unwrap_or_default()
    };
    let sbert_dir = snapshot(FENSE_SBERT_REPO, FENSE_SBERT_FILES);
    let echecker_bert_dir = snapshot(FENSE_ECHECKER_BERT_REPO, FENSE_ECHECKER_BERT_FILES);
    let echecker_ckpt = fense_echecker_path()?;
    if !echecker_ckpt.is_file() {
        missing.push(echecker_ckpt.display().to_string());
    }
    if !missing.is_empty() {
        return Err(AdiffError::Download(format!(
            "FENSE's models are not downloaded (missing {}): run `adiff download fense`, or pass \
             --fense-model DIR (a directory with sbert/ and echecker/)",
            missing.join(", ")
        )));
    }
    Ok(FensePaths {
        sbert_dir,
        echecker_ckpt,
        echecker_bert_dir,
    })
}

/// What `adiff download fense` did: the files, and how the echecker download went.
pub struct FenseDownload {
    pub paths: FensePaths,
    pub echecker: Downloaded,
}

/// Downloads FENSE's models (the two hub repositories into hf-hub's cache, the echecker into
/// `<cache>/fense/`, checked against [`FENSE_ECHECKER_SHA256`]); files already there are kept.
pub fn download_fense(progress: bool) -> Result<FenseDownload> {
    let sbert_dir = hub_repo_files(FENSE_SBERT_REPO, FENSE_SBERT_FILES)?;
    let echecker_bert_dir = hub_repo_files(FENSE_ECHECKER_BERT_REPO, FENSE_ECHECKER_BERT_FILES)?;
    let dest = fense_echecker_path()?;
    let expected = Checksum::sha256(FENSE_ECHECKER_SHA256)?;
    let echecker = download_file(&fense_echecker_url(), &dest, Some(&expected), progress)?;
    Ok(FenseDownload {
        paths: FensePaths {
            sbert_dir,
            echecker_ckpt: echecker.path.clone(),
            echecker_bert_dir,
        },
        echecker,
    })
}

/// One line for a failed hub download of `file`; when the hub cannot be reached, which files
/// (`wanted`) to put where by hand.
fn hf_error(
    e: &hf_hub::api::sync::ApiError,
    repo: &str,
    file: &str,
    wanted: &str,
    endpoint: &str,
    cache: &Path,
) -> AdiffError {
    use hf_hub::api::sync::ApiError;
    let endpoint = endpoint.trim_end_matches('/');
    let url = format!("{endpoint}/{repo}/resolve/{HF_REVISION}/{file}");
    match e {
        ApiError::RequestError(inner) => match inner.as_ref() {
            ureq::Error::Transport(t)
                if matches!(
                    t.kind(),
                    ureq::ErrorKind::Dns
                        | ureq::ErrorKind::ConnectionFailed
                        | ureq::ErrorKind::ProxyConnect
                ) =>
            {
                let repo_dir = cache.join(hf_hub::Repo::model(repo.to_string()).folder_name());
                AdiffError::Download(format!(
                    "cannot reach {endpoint} ({}): download {wanted} by hand from \
                     {endpoint}/{repo}/tree/{HF_REVISION}, put them in {} and write \
                     `{HF_MANUAL_SNAPSHOT}` into {}",
                    one_line(&t.kind().to_string()),
                    repo_dir
                        .join("snapshots")
                        .join(HF_MANUAL_SNAPSHOT)
                        .display(),
                    repo_dir.join("refs").join(HF_REVISION).display()
                ))
            }
            ureq::Error::Status(code, r) => {
                AdiffError::Download(format!("HTTP {code} {} from {url}", r.status_text()))
            }
            ureq::Error::Transport(t) => {
                AdiffError::Download(format!("{url}: {}", one_line(&t.to_string())))
            }
        },
        other => AdiffError::Download(format!("{url}: {}", one_line(&other.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_vectors() {
        // FIPS 180-2 / RFC 1321 test vectors for "abc".
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        let d = file_digests(&p).unwrap();
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn checksum_parsing() {
        let md5 = "900150983CD24FB0D6963F7D28E17F72";
        assert_eq!(
            Checksum::parse(&format!("md5:{md5}")).unwrap(),
            Checksum::Md5(md5.to_ascii_lowercase())
        );
        assert!(Checksum::parse("sha256:abc").is_err());
        assert!(Checksum::parse(md5).is_err());
        assert!(Checksum::sha256(&"g".repeat(SHA256_HEX_DIGITS)).is_err());
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_total("bytes 100-199/200"), Some(200));
        assert_eq!(content_range_total("bytes */200"), Some(200));
        assert_eq!(content_range_start("bytes */200"), None);
    }

    #[test]
    fn fense_constants() {
        Checksum::sha256(FENSE_ECHECKER_SHA256).unwrap();
        assert!(FENSE_ECHECKER_URL_PATH.ends_with(FENSE_ECHECKER_FILE));
        assert_eq!(
            describe_files(&[&["a"], &["b", "c"]]),
            "a, b (or c)".to_string()
        );
        assert_eq!(
            snapshot_dir(
                Path::new("/s/1_Pooling/config.json"),
                "1_Pooling/config.json"
            ),
            PathBuf::from("/s")
        );
    }

    #[test]
    fn every_known_checksum_parses() {
        for k in KNOWN_CHECKPOINTS {
            if let Some(c) = k.checksum {
                Checksum::parse(c).unwrap();
            }
            assert!(k.url(ZENODO_BASE_URL).contains(k.file_name));
        }
    }
}

//! Explanations from an OpenAI-compatible chat-completions endpoint, seeded with the two human
//! captions (paper, appendix E): our own system prompt (audio, acoustics and psychoacoustics
//! expertise; sources, materials, acoustics, emotions) plus one rule per tier that limits what
//! the model may draw on and how long it may write.
//!
//! Requests that fail for a reason that may pass (HTTP 429, 5xx, a time-out or a broken
//! connection) are retried with exponential backoff; anything else fails the pair at once. Every
//! HTTP attempt counts against an optional request budget, so a run never spends more than
//! `--max-requests`. The API key is sent as `Authorization: Bearer` and appears nowhere else: not
//! in `Debug` output, not in error messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::{ExplainError, Explainer};

/// Default per-request time-out (seconds): long enough for a tier-3 paragraph from a slow model.
pub const DEFAULT_TIMEOUT_S: f64 = 120.0;
/// Default retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default wait before the first retry (ms); it doubles each retry.
pub const DEFAULT_BACKOFF_MS: u64 = 1000;
/// Longest wait between two attempts (ms), whatever the backoff or a `Retry-After` asks.
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// Default sampling temperature: some variety across pairs, as generated data needs.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
/// How much of an unexpected response body an error message quotes.
const BODY_SNIPPET_CHARS: usize = 200;
/// The path appended to `--llm-url` when it does not end with it already.
const CHAT_PATH: &str = "chat/completions";

/// The system prompt: who the model is and what it may use.
pub const SYSTEM_PROMPT: &str = "You are an expert in audio, acoustics and psychoacoustics. You \
know how sounds are produced by their sources and the materials involved, how they propagate and \
are shaped by the space around them (reverberation, distance, background noise), how their \
spectral and temporal properties (pitch, timbre, loudness, rhythm, duration) are perceived, and \
which emotions and impressions they evoke in a listener. You are given human-written captions of \
two audio recordings, audio 1 and audio 2. You cannot hear the recordings: reason only from the \
captions and general knowledge of sound sources, materials, acoustics and emotions, and never \
invent sound events that the captions do not support. Your task is to explain how audio 1 differs \
from audio 2. Refer to the recordings as audio 1 and audio 2, never as captions or descriptions. \
Answer with the explanation only: no preamble, no lists, no headings.";

/// The instruction of each tier, tier 1 first (paper, section 2).
const TIER_RULES: [&str; 3] = [
    "Tier 1, concise: in at most 25 words, name the main sound events or sources of each audio \
     and the key difference between them. Do not describe acoustics, signal properties or \
     emotions.",
    "Tier 2, one sentence: write exactly one long sentence (at most 60 words) that contrasts the \
     two audios by their sound events, sound sources, acoustic scene and the temporal order in \
     which the events occur.",
    "Tier 3, detailed: write one paragraph (120 to 200 words) that compares the two audios in \
     depth: their sound events and likely sources and materials, the acoustic scene, signal \
     characteristics such as pitch, timbre, loudness, dynamics, spectral content and rhythm, how \
     complex or engaging each one is, and the emotions or impressions each evokes in a listener.",
];

/// The user message for a pair at a tier.
pub fn user_prompt(caption1: &str, caption2: &str, tier: u8) -> Option<String> {
    let rule = TIER_RULES.get(usize::from(tier.checked_sub(1)?))?;
    Some(format!(
        "Audio 1 caption: {}\nAudio 2 caption: {}\n\n{rule}",
        caption1.trim(),
        caption2.trim()
    ))
}

/// Where and how to ask.
#[derive(Clone)]
pub struct LlmConfig {
    /// The chat-completions URL (a base URL gets `/chat/completions` appended).
    pub url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer`; none for local servers without authentication.
    pub api_key: Option<String>,
    /// Whole-request time-out (connect, send, read).
    pub timeout: Duration,
    /// Retries after the first attempt, for retryable failures only.
    pub max_retries: u32,
    /// Wait before the first retry; doubles each retry, capped at [`MAX_BACKOFF_MS`].
    pub backoff: Duration,
    pub temperature: f64,
    /// Most HTTP attempts (retries included) this client makes; `None`: no cap.
    pub max_requests: Option<usize>,
}

/// The key is never printed, not even in debug output.
impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("temperature", &self.temperature)
            .field("max_requests", &self.max_requests)
            .finish()
    }
}

/// A chat-completions client shared by the worker threads.
pub struct LlmClient {
    cfg: LlmConfig,
    endpoint: String,
    agent: ureq::Agent,
    /// HTTP attempts made (or reserved) so far.
    requests: AtomicUsize,
    /// Retries made so far (also counted in `requests`).
    retries: AtomicUsize,
}

/// What one attempt came to.
enum Attempt {
    Done(String),
    /// Worth another try; the server may say how long to wait.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    Fatal(String),
}

impl LlmClient {
    pub fn new(cfg: LlmConfig) -> Self {
        let endpoint = endpoint_url(&cfg.url);
        let agent = ureq::AgentBuilder::new().timeout(cfg.timeout).build();
        Self {
            cfg,
            endpoint,
            agent,
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        }
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// HTTP attempts made so far (first tries and retries).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Retries made so far.
    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::SeqCst)
    }

    /// Reserves one request of the budget; false when it is spent.
    fn take_request(&self) -> bool {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        match self.cfg.max_requests {
            Some(max) if n >= max => {
                // Undo, so `requests()` counts only requests actually sent.
                self.requests.fetch_sub(1, Ordering::SeqCst);
                false
            }
            _ => true,
        }
    }

    fn attempt(&self, body: &str) -> Attempt {
        let mut req = self
            .agent
            .post(&self.endpoint)
            .set("Content-Type", "application/json");
        if let Some(key) = &self.cfg.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_string(body) {
            Ok(resp) => match resp.into_string() {
                Ok(text) => match parse_content(&text) {
                    Ok(content) => Attempt::Done(content),
                    Err(why) => Attempt::Fatal(why),
                },
                // The body was cut off (time-out or dropped connection while reading).
                Err(e) => Attempt::Retry {
                    why: format!("reading the response: {e}"),
                    after: None,
                },
            },
            Err(ureq::Error::Status(code, resp)) => {
                let after = resp
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let snippet = snippet(&resp.into_string().unwrap_or_default());
                let why = format!("HTTP {code} from {}: {snippet}", self.endpoint);
                if code == 429 || code >= 500 {
                    Attempt::Retry { why, after }
                } else if code == 401 || code == 403 {
                    Attempt::Fatal(format!("{why} (is ADIFF_LLM_API_KEY set and valid?)"))
                } else {
                    Attempt::Fatal(why)
                }
            }
            // Connection refused or reset, DNS, time-out: may pass.
            Err(ureq::Error::Transport(t)) => Attempt::Retry {
                why: format!("request to {} failed: {t}", self.endpoint),
                after: None,
            },
        }
    }
}

impl Explainer for LlmClient {
    fn explain(&self, caption1: &str, caption2: &str, tier: u8) -> Result<String, ExplainError> {
        let user = user_prompt(caption1, caption2, tier).ok_or_else(|| {
            ExplainError::Failed(format!(
                "explanation tier {tier} does not exist (expected 1 to 3)"
            ))
        })?;
        let body = json!({
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
            "temperature": self.cfg.temperature,
        })
        .to_string();
        let mut wait = self.cfg.backoff;
        let mut attempt_no = 0u32;
        loop {
            if !self.take_request() {
                return Err(ExplainError::Budget);
            }
            match self.attempt(&body) {
                Attempt::Done(text) => return Ok(text),
                Attempt::Fatal(why) => return Err(ExplainError::Failed(why)),
                Attempt::Retry { why, after } => {
                    if attempt_no >= self.cfg.max_retries {
                        return Err(ExplainError::Failed(format!(
                            "{why} (gave up after {} attempt(s))",
                            attempt_no + 1
                        )));
                    }
                    let cap = Duration::from_millis(MAX_BACKOFF_MS);
                    std::thread::sleep(after.map_or(wait, |a| a.max(wait)).min(cap));
                    wait = wait.saturating_mul(2).min(cap);
                    attempt_no += 1;
                    self.retries.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}

/// `url` itself when it ends with `/chat/completions`, else `url` + `/chat/completions`.
fn endpoint_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.ends_with(CHAT_PATH) {
        url.to_string()
    } else {
        format!("{url}/{CHAT_PATH}")
    }
}

/// The text of `choices[0].message.content`, or why the response is not a usable completion.
pub fn parse_content(body: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| format!("malformed response (not JSON: {e}): {}", snippet(body)))?;
    let content = v
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!(
                "malformed response (no choices[0].message.content): {}",
                snippet(body)
            )
        })?;
    let content = content.trim();
    if content.is_empty() {
        return Err("malformed response: empty explanation".into());
    }
    Ok(content.to_string())
}

/// The start of a body on one line, for error messages.
fn snippet(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_SNIPPET_CHARS)
        .collect();
    if body.chars().count() > BODY_SNIPPET_CHARS {
        format!("{one_line}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_chat_path_once() {
        assert_eq!(endpoint_url("http://h/v1"), "http://h/v1/chat/completions");
        assert_eq!(
            endpoint_url("http://h/v1/chat/completions/"),
            "http://h/v1/chat/completions"
        );
    }

    #[test]
    fn content_is_parsed_or_explained() {
        let ok = r#"{"choices":[{"message":{"role":"assistant","content":" Hi. "}}]}"#;
        assert_eq!(parse_content(ok).unwrap(), "Hi.");
        assert!(parse_content("{\"choices\":[]}")
            .unwrap_err()
            .contains("no choices[0]"));
        assert!(parse_content("<html>").unwrap_err().contains("not JSON"));
        let long = "x".repeat(1000);
        assert!(parse_content(&long).unwrap_err().len() < 400);
    }

    #[test]
    fn debug_hides_the_key() {
        let cfg = LlmConfig {
            url: "u".into(),
            model: "m".into(),
            api_key: Some("sk-secret".into()),
            timeout: Duration::from_secs(1),
            max_retries: 0,
            backoff: Duration::ZERO,
            temperature: 0.0,
            max_requests: None,
        };
        assert!(!format!("{cfg:?}").contains("sk-secret"));
    }

    #[test]
    fn every_tier_has_a_rule() {
        for tier in 1..=3 {
            assert!(user_prompt("a", "b", tier)
                .unwrap()
                .contains(&format!("Tier {tier}")));
        }
        assert!(user_prompt("a", "b", 0).is_none() && user_prompt("a", "b", 4).is_none());
    }
}

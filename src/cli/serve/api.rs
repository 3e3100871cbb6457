//! `adiff serve`'s routes: `/v1/explain`, `/v1/tag`, `/health`, `/v1/models` (chat completions
//! are in `openai.rs`), and what every route shares: the API key, the body and time limits, the
//! request log and JSON errors `{"error": {"message", "type", "code"}}` (OpenAI's shape).
//!
//! A request's audio is decoded on tokio's blocking threads into clips `[clip_samples]`, its
//! prompts tokenized to `[prompt_length]` ids; then it waits for the engine's worker.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::explain::{default_prompts, CaptionTarget};
use super::super::tag::TaggedEvent;
use super::engine::{Coming, Done, Engine, ExplainWork, Outcome, SubmitError, TagWork, Work};
use crate::audio::mel::LogMelFrontEnd;
use crate::audio::{load_source_clip_span, AudioSource, ClipSpan, CropMode};
use crate::generate::{GenerateOptions, SamplingOptions, Strategy, DEFAULT_MAX_NEW_TOKENS};
use crate::model::config::AdiffConfig;
use crate::text::prompts::PromptDatabase;
use crate::text::tokenizer::Gpt2Tokenizer;

/// `tag`'s defaults: events listed, and the frame-wise probability above which one is active.
const DEFAULT_TOP: usize = 10;
const DEFAULT_THRESHOLD: f32 = 0.5;

/// What every handler reads.
pub struct Shared {
    pub engine: Engine,
    /// The model's log-mel front end, run on the HTTP side.
    pub front_end: Arc<LogMelFrontEnd>,
    pub tokenizer: Arc<Gpt2Tokenizer>,
    /// The bundled prompts, read once.
    pub prompts: PromptDatabase,
    pub cfg: AdiffConfig,
    pub model_name: String,
    /// Unix time the server started (the model's `created` in /v1/models).
    pub created: u64,
    /// Canonical folder JSON requests may name files in.
    pub allow_paths: Option<PathBuf>,
    pub api_key: Option<String>,
    /// Largest body in bytes, and the time a request may take.
    pub max_body: usize,
    pub timeout: Duration,
    /// Counter behind chat completion ids.
    pub ids: AtomicU64,
    /// Requests in progress (being read, decoded, waiting or in the model's batch) at most:
    /// `--queue` + `--max-batch`, so that the bodies and clips held stay bounded.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub max_in_flight: usize,
}

pub type AppState = Arc<Shared>;

/// An error answer: its status and one line that says what to change.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::REQUEST_TIMEOUT => "timeout_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "code": self.status.as_u16(),
        }});
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Runs around every route: the request log line, the API key, a declared body over the limit,
/// and the time limit (a request still unanswered then gets 408; its work is dropped unrun if
/// the model has not reached it).
pub async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = match check(&s, &req) {
        Err(e) => {
            // Read what the client sends (up to the limit) before answering: a client still
            // writing its body would otherwise see the connection reset instead of the answer.
            if e.status != StatusCode::PAYLOAD_TOO_LARGE {
                let _ = axum::body::to_bytes(req.into_body(), s.max_body).await;
            }
            e.into_response()
        }
        Ok(()) => match admit(&s, &req) {
            Err(e) => e.into_response(),
            Ok(permit) => {
                let deadline = tokio::time::Instant::now() + s.timeout;
                let timed_out = || {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "no answer within {:.3} s (the server's --timeout)",
                            s.timeout.as_secs_f64()
                        ),
                    )
                    .into_response()
                };
                // The body is read here, so that a request past the limit is answered only
                // once its body is in (a client still writing would see a reset otherwise).
                let response = match buffer_body(&s, req, deadline).await {
                    Buffered::Whole(req) => {
                        match tokio::time::timeout_at(deadline, next.run(*req)).await {
                            Ok(r) => r,
                            Err(_) => timed_out(),
                        }
                    }
                    Buffered::TimedOut => timed_out(),
                    Buffered::Failed(e) => e.into_response(),
                };
                drop(permit);
                response
            }
        },
    };
    eprintln!(
        "{method} {path} {} {:.3} s",
        response.status().as_u16(),
        started.elapsed().as_secs_f64()
    );
    response
}

/// A request whose body [`buffer_body`] read, or why it could not.
enum Buffered {
    Whole(Box<Request>),
    /// The deadline passed while the body was coming in (the rest was read and dropped).
    TimedOut,
    Failed(ApiError),
}

/// How long a request past its deadline may go on sending its body before the 408 goes out
/// anyway (reading it lets the client read the answer instead of a reset connection).
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the whole body (at most `max_body` bytes) before `deadline`, and hands the request on
/// with it. Past the deadline, the rest is read and dropped, for at most [`DRAIN_GRACE`].
async fn buffer_body(s: &Shared, req: Request, deadline: tokio::time::Instant) -> Buffered {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    // Sized once from Content-Length (capped by the limit): growing by doubling copied a 1 MB
    // upload several times over.
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut data = Vec::with_capacity(declared.min(s.max_body));
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                if let Ok(chunk) = frame.into_data() {
                    if data.len() + chunk.len() > s.max_body {
                        return Buffered::Failed(too_large(s, None));
                    }
                    data.extend_from_slice(&chunk);
                }
            }
            Ok(Some(Err(e))) => {
                return Buffered::Failed(ApiError::bad(format!("could not read the body: {e}")))
            }
            Err(_) => {
                let (mut drained, grace) = (data.len(), tokio::time::Instant::now() + DRAIN_GRACE);
                while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(grace, body.frame()).await {
                    drained += frame.data_ref().map_or(0, |c| c.len());
                    if drained > s.max_body {
                        break;
                    }
                }
                return Buffered::TimedOut;
            }
        }
    }
    Buffered::Whole(Box::new(Request::from_parts(
        parts,
        axum::body::Body::from(data),
    )))
}

/// A place among the requests in progress for a request that will use the model (/health and
/// /v1/models always answer), or 503 when all are taken.
fn admit(s: &Shared, req: &Request) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ApiError> {
    if req.method() == Method::GET {
        return Ok(None);
    }
    s.in_flight
        .clone()
        .try_acquire_owned()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                "the server is busy: {} requests are in progress (--queue + --max-batch); retry \
                 later",
                s.max_in_flight
            ),
            )
        })
}

/// The key (every route but /health) and the declared body size.
fn check(s: &Shared, req: &Request) -> Result<(), ApiError> {
    if let Some(key) = &s.api_key {
        if req.uri().path() != "/health" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Constant time in the key's content (a length mismatch ends early, which reveals
            // only the length).
            let ok: bool = subtle::ConstantTimeEq::ct_eq(key.as_bytes(), given.as_bytes()).into();
            if !ok {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong API key: send the header `Authorization: Bearer KEY`",
                ));
            }
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > s.max_body as u64) {
        return Err(too_large(s, Some(n)));
    }
    Ok(())
}

pub fn too_large(s: &Shared, declared: Option<u64>) -> ApiError {
    let size = declared.map_or(String::new(), |n| format!(" ({n} bytes)"));
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body too large{size}: the server takes at most {} bytes (--max-body-mb)",
            s.max_body
        ),
    )
}

pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {} {}: the routes are POST /v1/explain, POST /v1/tag, POST \
             /v1/chat/completions, GET /v1/models, GET /health",
            req.method(),
            req.uri().path()
        ),
    )
}

pub async fn method_not_allowed(req: Request) -> ApiError {
    let allowed = if req.method() == Method::GET {
        "POST"
    } else {
        "GET"
    };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} {} is not supported: use {allowed}",
            req.method(),
            req.uri().path()
        ),
    )
}

pub async fn health(State(s): State<AppState>) -> Json<Value> {
    let (waiting, running) = s.engine.load();
    let policy = s.engine.policy();
    let in_flight = s.max_in_flight - s.in_flight.available_permits();
    Json(json!({
        "status": "ok",
        "model": s.model_name,
        "in_flight": in_flight,
        "queue": {"waiting": waiting, "running": running, "capacity": policy.queue},
        "max_batch": policy.max_batch,
    }))
}

pub async fn models(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.model_name,
            "object": "model",
            "created": s.created,
            "owned_by": "adiff",
        }],
    }))
}

/// Options of `/v1/explain`, as `explain`'s flags (multipart fields or JSON keys).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainParams {
    tier: Option<u8>,
    prompt: Option<String>,
    caption: Option<Caption>,
    max_tokens: Option<usize>,
    sample: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    seed: Option<u64>,
    crop: Option<Crop>,
    crop_seed: Option<u64>,
    events: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Caption {
    First,
    Second,
    Both,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    #[default]
    Start,
    Center,
    Random,
}

/// `explain --crop` for the `index`-th file (a random crop's seed is `crop_seed + index`).
pub fn crop_mode(crop: Option<Crop>, crop_seed: Option<u64>, index: usize) -> CropMode {
    match crop.unwrap_or_default() {
        Crop::Start => CropMode::Start,
        Crop::Center => CropMode::Center,
        Crop::Random => CropMode::Random {
            seed: crop_seed.unwrap_or(0).wrapping_add(index as u64),
        },
    }
}

/// Options of `/v1/tag`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagParams {
    top: Option<usize>,
    threshold: Option<f32>,
    crop: Option<Crop>,
    crop_seed: Option<u64>,
}

/// Multipart fields holding text: kept as strings (a prompt of digits stays a prompt).
const TEXT_FIELDS: [&str; 3] = ["prompt", "caption", "crop"];

pub async fn explain(
    State(s): State<AppState>,
    req: Request,
) -> Result<Json<ExplainAnswer>, ApiError> {
    let coming = s.engine.coming();
    let (audio, params) = read_request(&s, req, &["audio1", "audio2"]).await?;
    let p: ExplainParams = params_from(params)?;
    let prompts = explain_prompts(
        &s.prompts,
        p.tier,
        p.prompt.as_deref(),
        p.caption.map(Into::into),
    )?;
    let opts = decoding_options(&s.cfg, &p)?;
    let crops = [
        crop_mode(p.crop, p.crop_seed, 0),
        crop_mode(p.crop, p.crop_seed, 1),
    ];
    let names = [display_name(&audio[0]), display_name(&audio[1])];
    let [(mel1, span1), (mel2, span2)] = hear(&s, audio, crops).await?;
    let done = explain_clips(
        &s,
        [mel1, mel2],
        [span1, span2],
        prompts,
        opts,
        p.events.unwrap_or(false),
        coming,
    )
    .await?;
    let seconds = Seconds::of(&done);
    let Outcome::Explain {
        answers, events, ..
    } = done.outcome
    else {
        return Err(internal("the model answered another kind of request"));
    };
    Ok(Json(ExplainAnswer {
        model: s.model_name.clone(),
        audio1: names[0].clone(),
        audio2: names[1].clone(),
        answers,
        events,
        clips_s: [[span1.start_s, span1.end_s], [span2.start_s, span2.end_s]],
        seconds,
        batch: done.batch,
    }))
}

/// `/v1/explain`'s answer: `explain --json`'s fields (typed, so that numbers print as the CLI
/// prints them), where each clip lies in its file, and where the time went.
#[derive(serde::Serialize)]
pub struct ExplainAnswer {
    model: String,
    audio1: String,
    audio2: String,
    answers: Vec<super::super::explain::Answer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<[Vec<TaggedEvent>; 2]>,
    clips_s: [[f64; 2]; 2],
    seconds: Seconds,
    batch: usize,
}

/// Seconds a request waited for the model, and its batch ran.
#[derive(serde::Serialize)]
pub struct Seconds {
    queue: f64,
    model: f64,
}

impl Seconds {
    fn of(done: &Done) -> Self {
        Self {
            queue: done.queue_s,
            model: done.run_s,
        }
    }
}

/// `/v1/tag`'s answer: `tag --json`'s fields and where the time went.
#[derive(serde::Serialize)]
pub struct TagAnswer {
    model: String,
    file: String,
    window_s: [f64; 2],
    events: Vec<TaggedEvent>,
    seconds: Seconds,
    batch: usize,
}

pub async fn tag(State(s): State<AppState>, req: Request) -> Result<Json<TagAnswer>, ApiError> {
    let coming = s.engine.coming();
    let (audio, params) = read_request(&s, req, &["audio"]).await?;
    let p: TagParams = params_from(params)?;
    if let Some(t) = p.threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::bad(format!(
                "threshold {t}: give a probability in [0, 1]"
            )));
        }
    }
    let name = display_name(&audio[0]);
    let [(mel, span)] = hear(&s, audio, [crop_mode(p.crop, p.crop_seed, 0)]).await?;
    let done = submit(
        &s,
        Work::Tag(TagWork {
            mel,
            span,
            top: p.top.unwrap_or(DEFAULT_TOP),
            threshold: p.threshold.unwrap_or(DEFAULT_THRESHOLD),
        }),
        coming,
    )
    .await?;
    let seconds = Seconds::of(&done);
    let Outcome::Tag { events } = done.outcome else {
        return Err(internal("the model answered another kind of request"));
    };
    Ok(Json(TagAnswer {
        model: s.model_name.clone(),
        file: name,
        window_s: [span.start_s, span.end_s],
        events,
        seconds,
        batch: done.batch,
    }))
}

pub fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// The prompts `explain --tier/--prompt/--caption` would use (the conflicts and the range clap
/// checks for the CLI are checked here).
pub fn explain_prompts(
    db: &PromptDatabase,
    tier: Option<u8>,
    prompt: Option<&str>,
    caption: Option<CaptionTarget>,
) -> Result<Vec<String>, ApiError> {
    let given = [tier.is_some(), prompt.is_some(), caption.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(ApiError::bad(
            "give one of tier, prompt and caption, not several",
        ));
    }
    if let Some(p) = prompt {
        if p.trim().is_empty() {
            return Err(ApiError::bad("prompt is empty"));
        }
        return Ok(vec![p.to_string()]);
    }
    if let Some(t) = tier.filter(|t| !(1..=3).contains(t)) {
        return Err(ApiError::bad(format!("tier {t}: give 1, 2 or 3")));
    }
    Ok(default_prompts(db, caption, tier))
}

impl From<Caption> for CaptionTarget {
    fn from(c: Caption) -> Self {
        match c {
            Caption::First => CaptionTarget::First,
            Caption::Second => CaptionTarget::Second,
            Caption::Both => CaptionTarget::Both,
        }
    }
}

/// `explain`'s decoding flags: greedy unless `sample`; temperature, top_k and top_p need it.
fn decoding_options(cfg: &AdiffConfig, p: &ExplainParams) -> Result<GenerateOptions, ApiError> {
    let sample = p.sample.unwrap_or(false);
    if !sample && (p.temperature.is_some() || p.top_k.is_some() || p.top_p.is_some()) {
        return Err(ApiError::bad(
            "temperature, top_k and top_p apply to sampling: add sample=true",
        ));
    }
    sampling_options(
        cfg,
        sample.then(|| SamplingOptions {
            temperature: p.temperature.unwrap_or(1.0),
            top_k: p.top_k,
            top_p: p.top_p,
            seed: p.seed.unwrap_or(0),
        }),
        p.max_tokens,
    )
}

/// Greedy (None) or sampled decoding with a token budget, checked.
pub fn sampling_options(
    cfg: &AdiffConfig,
    sample: Option<SamplingOptions>,
    max_tokens: Option<usize>,
) -> Result<GenerateOptions, ApiError> {
    let mut opts = GenerateOptions::new(&cfg.text);
    if let Some(s) = sample {
        opts.strategy = Strategy::Sample(s);
    }
    opts.max_new_tokens = max_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    opts.validate().map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(opts)
}

/// Tokenizes the prompts and queues the explanation.
pub async fn explain_clips(
    s: &Shared,
    mels: [Vec<f32>; 2],
    spans: [ClipSpan; 2],
    prompts: Vec<String>,
    opts: GenerateOptions,
    events: bool,
    coming: Coming,
) -> Result<Done, ApiError> {
    let prompt_ids = prompts
        .iter()
        .map(|p| s.tokenizer.encode_prompt(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad(format!("prompt: {e}")))?;
    submit(
        s,
        Work::Explain(ExplainWork {
            mels,
            spans,
            prompts,
            prompt_ids,
            opts,
            events,
        }),
        coming,
    )
    .await
}

/// Queues work for the model and waits for it.
async fn submit(s: &Shared, work: Work, coming: Coming) -> Result<Done, ApiError> {
    let rx = s.engine.submit(work, coming).map_err(|e| match e {
        SubmitError::Full => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server is busy: {} requests are waiting (--queue); retry later",
                s.engine.policy().queue
            ),
        ),
        SubmitError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
    })?;
    rx.await
        .map_err(|_| internal("the model's thread stopped"))?
        .map_err(internal)
}

/// Decodes each source into a clip and its log-mel `[frames * n_mels]`, on a blocking thread
/// (errors name the part).
pub async fn hear<const N: usize>(
    s: &Shared,
    sources: [(String, AudioSource); N],
    crops: [CropMode; N],
) -> Result<[(Vec<f32>, ClipSpan); N], ApiError> {
    let audio_cfg = s.cfg.audio.clone();
    let front_end = s.front_end.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(N);
        for ((field, source), crop) in sources.into_iter().zip(crops) {
            let (clip, span) = load_source_clip_span(&source, &audio_cfg, crop).map_err(|e| {
                if source.name() == Path::new(&field) {
                    ApiError::bad(e.to_string())
                } else {
                    ApiError::bad(format!("{field}: {e}"))
                }
            })?;
            let mel = front_end
                .log_mel(&clip)
                .map_err(|e| ApiError::bad(format!("{field}: {e}")))?;
            out.push((mel, span));
        }
        Ok::<_, ApiError>(out)
    })
    .await
    .map_err(|_| internal("audio decoding crashed"))??;
    decoded
        .try_into()
        .map_err(|_| internal("wrong number of decoded clips"))
}

/// How a request names a source in its answer: the uploaded file's name or the path given.
fn display_name(source: &(String, AudioSource)) -> String {
    source.1.name().display().to_string()
}

/// The audio parts (in the order of `audio_fields`) and the other fields of a multipart or JSON
/// request.
async fn read_request<const N: usize>(
    s: &Shared,
    req: Request,
    audio_fields: &[&str; N],
) -> Result<([(String, AudioSource); N], Map<String, Value>), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut audio: Vec<Option<AudioSource>> = vec![None; N];
    let mut fields = Map::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad(format!("multipart body: {}", e.body_text())))?;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(multipart_error(s, e)),
            };
            let name = field.name().unwrap_or("").to_string();
            let file_name = field.file_name().map(str::to_string);
            let data = field.bytes().await.map_err(|e| multipart_error(s, e))?;
            if let Some(i) = audio_fields.iter().position(|f| *f == name) {
                if audio[i].is_some() {
                    return Err(ApiError::bad(format!("part `{name}` given twice")));
                }
                audio[i] = Some(AudioSource::Memory {
                    name: PathBuf::from(file_name.unwrap_or_else(|| name.clone())),
                    bytes: Arc::from(data.to_vec()),
                });
            } else {
                let text = String::from_utf8(data.to_vec())
                    .map_err(|_| ApiError::bad(format!("field `{name}` is not UTF-8 text")))?;
                if fields.contains_key(&name) {
                    return Err(ApiError::bad(format!("field `{name}` given twice")));
                }
                fields.insert(name.clone(), field_value(&name, text));
            }
        }
    } else if content_type.starts_with("application/json") {
        let body = read_body(s, req).await?;
        fields = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(ApiError::bad("the JSON body must be an object")),
            Err(e) => return Err(ApiError::bad(format!("JSON body: {e}"))),
        };
        for (i, field) in audio_fields.iter().enumerate() {
            if let Some(v) = fields.remove(*field) {
                let Value::String(path) = v else {
                    return Err(ApiError::bad(format!(
                        "`{field}` must be a path (a string)"
                    )));
                };
                audio[i] = Some(server_file(s, field, &path)?);
            }
        }
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send multipart/form-data (audio parts {}) or application/json, not `{}`",
                audio_fields.join(", "),
                if content_type.is_empty() {
                    "no content type"
                } else {
                    &content_type
                }
            ),
        ));
    }
    let mut out = Vec::with_capacity(N);
    for (field, source) in audio_fields.iter().zip(audio) {
        let source = source.ok_or_else(|| {
            ApiError::bad(format!(
                "missing audio `{field}` (needed: {})",
                audio_fields.join(", ")
            ))
        })?;
        out.push((field.to_string(), source));
    }
    let out: [(String, AudioSource); N] = out
        .try_into()
        .map_err(|_| internal("wrong number of audio parts"))?;
    Ok((out, fields))
}

/// A multipart field's text as a JSON value: numbers and booleans parsed, text kept.
fn field_value(name: &str, text: String) -> Value {
    if TEXT_FIELDS.contains(&name) {
        return Value::String(text);
    }
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text),
    }
}

fn multipart_error(s: &Shared, e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(s, None)
    } else {
        ApiError::bad(format!("multipart body: {}", e.body_text()))
    }
}

/// The whole body, at most `max_body` bytes.
pub async fn read_body(s: &Shared, req: Request) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), s.max_body)
        .await
        .map_err(|_| too_large(s, None))
}

/// A file a JSON request names: inside the --allow-paths folder only (relative paths are taken
/// from it). A missing file and one outside give the same answer, so that a request cannot probe
/// the server's other files.
fn server_file(s: &Shared, field: &str, path: &str) -> Result<AudioSource, ApiError> {
    let Some(root) = &s.allow_paths else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{field}` names a file on the server, which needs `adiff serve --allow-paths \
                 DIR`; upload the audio as a multipart part instead"
            ),
        ));
    };
    let full = root.join(path);
    match full.canonicalize() {
        Ok(c) if c.starts_with(root) && c.is_file() => Ok(AudioSource::File(c)),
        _ => Err(ApiError::bad(format!(
            "`{field}`: no file {path} inside the server's --allow-paths folder"
        ))),
    }
}

/// Request options from fields: unknown names and wrong types are errors naming them.
fn params_from<T: serde::de::DeserializeOwned>(fields: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| ApiError::bad(format!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_fields_keep_text_and_parse_numbers() {
        assert_eq!(field_value("prompt", "123".into()), json!("123"));
        assert_eq!(field_value("tier", "2".into()), json!(2));
        assert_eq!(field_value("sample", "true".into()), json!(true));
        assert_eq!(field_value("crop_seed", "x".into()), json!("x"));
        let e = params_from::<ExplainParams>(
            json!({"tier": 2, "tire": 1}).as_object().cloned().unwrap(),
        )
        .unwrap_err();
        assert!(e.message.contains("unknown field `tire`"), "{}", e.message);
    }

    #[test]
    fn prompts_follow_explain_flags() {
        let db = PromptDatabase::bundled().unwrap();
        let none: Option<CaptionTarget> = None;
        assert!(explain_prompts(&db, Some(2), Some("x"), none).is_err());
        assert!(explain_prompts(&db, Some(4), None, none).is_err());
        assert_eq!(
            explain_prompts(&db, None, Some("say"), none).unwrap(),
            vec!["say"]
        );
        let both = explain_prompts(&db, None, None, Some(CaptionTarget::Both)).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(
            explain_prompts(&db, None, None, none).unwrap(),
            vec![db
                .default_prompt(crate::text::prompts::PromptKind::Tier(3))
                .to_string()]
        );
    }
}

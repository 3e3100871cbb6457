//! `adiff serve`: the model loaded once, behind an HTTP API (axum on tokio).
//!
//! - `api`: the routes (`/v1/explain`, `/v1/tag`, `/health`, `/v1/models`), request parsing,
//!   limits, the API key and JSON errors;
//! - `openai`: `/v1/chat/completions` in OpenAI's format;
//! - `engine`: the worker thread that owns the model and batches requests.
//!
//! Audio is decoded on tokio's blocking threads while the worker runs the model, so decoding the
//! next requests overlaps the current batch.

mod api;
mod engine;
mod openai;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::tag::model_labels;
use super::{Dtype, ModelArgs};
use crate::text::tokenizer::Gpt2Tokenizer;

/// Serve the model over HTTP: load it once, answer many requests.
///
/// Routes (JSON answers; every error is a JSON body {"error": {"message", "type", "code"}}):
///   POST /v1/explain            two audio files as multipart parts `audio1`, `audio2`, with
///                               optional fields tier, prompt, caption (first|second|both),
///                               max_tokens, sample, temperature, top_k, top_p, seed, crop
///                               (start|center|random), crop_seed, events; or a JSON body naming
///                               two files on the server {"audio1": PATH, "audio2": PATH, ...}
///                               when started with --allow-paths DIR
///   POST /v1/tag                one audio part `audio` (or {"audio": PATH}); top, threshold,
///                               crop, crop_seed
///   POST /v1/chat/completions   OpenAI's format: one user message with two `input_audio` parts
///                               (base64 WAV/MP3/FLAC/OGG) and an optional text part (the
///                               prompt; without one, tier 3's); temperature 0 or absent is
///                               greedy, as `explain`
///   GET  /v1/models             the served model, OpenAI's format
///   GET  /health                status and queue
///
/// Answers equal `adiff explain`'s for the same files and options. Requests that arrive
/// together run as one batch (up to --max-batch, waiting at most --batch-wait-ms for more);
/// beyond --queue + --max-batch requests in progress the server answers 503, a body over
/// --max-body-mb 413, and a request not answered within --timeout 408. SIGTERM or Ctrl-C stops
/// accepting connections and finishes the requests in flight.
///
/// Examples:
///   adiff serve --model demo --port 8080
///   curl -F audio1=@a.wav -F audio2=@b.wav -F tier=2 http://127.0.0.1:8080/v1/explain
///   curl -F audio=@a.wav http://127.0.0.1:8080/v1/tag
///   ADIFF_API_KEY=secret adiff serve -c adiff_base.ckpt --host 0.0.0.0
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision, as `explain --dtype` (default: bf16 on a GPU that has it, else as the file
    /// holds them).
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// GPT-2 tokenizer.json to use instead of the bundled one.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the line printed at start names it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The model's name in /v1/models and chat completions (default: the --model name or the
    /// checkpoint's file stem).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Let JSON requests name audio files on this machine, inside DIR only.
    #[arg(long, value_name = "DIR")]
    pub allow_paths: Option<PathBuf>,
    /// Require `Authorization: Bearer KEY` on every route but /health (compared in constant
    /// time). Prefer the environment variable: a command line is visible to other users.
    #[arg(long, env = "ADIFF_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Most requests run as one batch.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_batch: u64,
    /// Milliseconds the model waits for more requests after the first of a batch.
    #[arg(long, default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// Model threads, each running one batch at a time over the one copy of the model: while
    /// one runs a batch, the next gathers and runs the requests that arrived meanwhile (default:
    /// 2 on the CPU, 1 on a GPU).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: Option<u64>,
    /// Most requests waiting for the model; more are answered 503. At most --queue +
    /// --max-batch requests are in progress at once (being read, decoded, waiting or running).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue: u64,
    /// Largest request body in MiB; larger ones are answered 413.
    #[arg(long, default_value_t = 32.0)]
    pub max_body_mb: f64,
    /// Seconds a request may take, from its first byte to its answer; then 408.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.max_body_mb > 0.0 && args.max_body_mb.is_finite(),
        "--max-body-mb {}: give a size above 0",
        args.max_body_mb
    );
    anyhow::ensure!(
        args.timeout > 0.0 && args.timeout.is_finite(),
        "--timeout {}: give a number of seconds above 0",
        args.timeout
    );
    if let Some(key) = &args.api_key {
        anyhow::ensure!(!key.is_empty(), "--api-key is empty");
    }
    let allow_paths = match &args.allow_paths {
        Some(dir) => Some(
            dir.canonicalize()
                .with_context(|| format!("--allow-paths {}", dir.display()))?,
        ),
        None => None,
    };
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    let tokenizer = match &args.tokenizer {
        Some(p) => Gpt2Tokenizer::from_file(p, &cfg.text)?,
        None => Gpt2Tokenizer::bundled(&cfg.text)?,
    };
    let labels = model_labels(&args.model, &cfg)?;
    let model = super::load_model(args.model.load_checkpoint(&cfg)?, &cfg, &device, args.dtype)?;
    tokenizer.check_fits(model.config().gpt2.vocab_size)?;
    let tokenizer = Arc::new(tokenizer);
    let front_end = Arc::new(model.audio.front_end.clone());
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        args.model.model.clone().unwrap_or_else(|| {
            args.model
                .checkpoint
                .last()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "adiff".into())
        })
    });
    let policy = engine::BatchPolicy {
        max_batch: args.max_batch as usize,
        max_wait: Duration::from_millis(args.batch_wait_ms),
        queue: args.queue as usize,
        workers: args
            .workers
            .map_or(if device.is_cpu() { 2 } else { 1 }, |w| w as usize),
    };
    let (engine, workers) = engine::Engine::start(
        engine::WorkerParts {
            model,
            tokenizer: tokenizer.clone(),
            labels,
        },
        policy,
    )
    .context("cannot start the model's threads")?;
    let max_in_flight = (args.queue + args.max_batch) as usize;
    let state = api::Shared {
        engine,
        front_end,
        prompts: crate::text::prompts::PromptDatabase::bundled()?,
        tokenizer,
        cfg,
        model_name: name.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        allow_paths,
        api_key: args.api_key.clone(),
        max_body: (args.max_body_mb * 1024.0 * 1024.0) as usize,
        timeout: Duration::from_secs_f64(args.timeout),
        ids: Default::default(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
        max_in_flight,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local: SocketAddr = listener.local_addr()?;
        // The one line a script waits for (stdout, flushed), then logs go to stderr.
        println!("adiff serve: listening on http://{local} (model {name})");
        use std::io::Write;
        std::io::stdout().flush().ok();
        axum::serve(listener, router(Arc::new(state)))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("server error")
    })?;
    // Every handler has returned, and with them every sender of the queue: the workers end.
    drop(runtime);
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a model thread crashed"))?;
    }
    eprintln!("adiff serve: stopped");
    Ok(())
}

/// The routes (`api`, `openai`) behind `api::guard` (log, key, limits) and the body limit.
fn router(state: api::AppState) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/explain", post(api::explain))
        .route("/v1/tag", post(api::tag))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(api::models))
        .route("/health", get(api::health))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::guard,
        ))
        // The multipart reader stops at the limit; `guard` refuses a declared larger body first.
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the server then stops accepting connections and
/// finishes the requests in flight.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("adiff serve: shutting down; finishing the requests in flight");
}

//! The model behind `adiff serve`: worker threads share it and run queued requests in batches
//! (dynamic batching).
//!
//! A request arrives decoded, as the log-mel spectrogram of each clip (`[frames * n_mels]`,
//! computed on the HTTP side while the model runs other requests), and with its prompts
//! tokenized (`[prompt_length]` ids each). The worker takes the first waiting request, then whatever else
//! arrives within `max_wait`, up to `max_batch` requests, and runs them together:
//! - HTSAT: each request's clips as the batch `explain` / `tag` would give them (`[2, ...]` for a
//!   pair, `[1, ...]` for one clip), so every request hears exactly what the CLI hears;
//! - GPT-2: the answers of all requests that decode alike (same strategy, token budget and stop
//!   ids) as one batch `[rows, prefix, n_embd]`, each row sampled with its own request's seed.
//!
//! GPT-2's decoding is what a batch makes cheaper: at batch 1 each token reads all the weights
//! for one row. With several workers (`--workers`), one gathers the next batch and runs it while
//! another is still running its own: with one, the clients of a finished batch send their next
//! requests together, and the cores sat idle while the HTTP side decoded them and while GPT-2
//! decoded a small model's few rows (the server used 1.15 of 2 cores at concurrency 16). The
//! workers take turns at the queue (one gathers at a time), so a batch is never split between
//! them. The queue is bounded: [`Engine::submit`] refuses a request when it is full
//! (the HTTP layer answers 503), and a request whose client has gone is dropped unrun.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{IndexOp, Tensor};
use tokio::sync::oneshot;

use super::super::explain::{answer, audio_events, Answer};
use super::super::tag::{clip_events, TaggedEvent};
use crate::audio::ClipSpan;
use crate::generate::{generate_keyed, GenerateOptions, Strategy};
use crate::model::adiff::Adiff;
use crate::model::htsat::HtsatOutput;
use crate::text::tokenizer::Gpt2Tokenizer;

/// How the worker gathers batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most requests run together.
    pub max_batch: usize,
    /// How long the worker waits for more requests after the first of a batch.
    pub max_wait: Duration,
    /// Most requests waiting (not yet taken by the worker).
    pub queue: usize,
    /// Worker threads sharing the model (each runs one batch at a time).
    pub workers: usize,
}

/// One explanation request: two clips' log-mels and its prompts.
pub struct ExplainWork {
    /// `[frames * n_mels]` each.
    pub mels: [Vec<f32>; 2],
    pub spans: [ClipSpan; 2],
    pub prompts: Vec<String>,
    /// `[prompt_length]` ids per prompt.
    pub prompt_ids: Vec<Vec<u32>>,
    pub opts: GenerateOptions,
    /// List each clip's top events too.
    pub events: bool,
}

/// One tagging request.
pub struct TagWork {
    /// `[frames * n_mels]`.
    pub mel: Vec<f32>,
    pub span: ClipSpan,
    pub top: usize,
    pub threshold: f32,
}

pub enum Work {
    Explain(ExplainWork),
    Tag(TagWork),
}

#[derive(Debug)]
pub enum Outcome {
    Explain {
        answers: Vec<Answer>,
        events: Option<[Vec<TaggedEvent>; 2]>,
        /// GPT-2 positions before the first new token (audio prefix and prompt).
        prefix_positions: usize,
    },
    Tag {
        events: Vec<TaggedEvent>,
    },
}

/// A finished request and where its time went.
#[derive(Debug)]
pub struct Done {
    pub outcome: Outcome,
    /// Seconds waiting in the queue, and running (HTSAT and GPT-2) in its batch.
    pub queue_s: f64,
    pub run_s: f64,
    /// Requests in its batch.
    pub batch: usize,
}

pub type Reply = Result<Done, String>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Reply>,
    queued: Instant,
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds `BatchPolicy::queue` requests already.
    Full,
    /// The worker has stopped (the server is shutting down).
    Stopped,
}

/// The queue in front of the worker thread.
pub struct Engine {
    tx: SyncSender<Job>,
    /// Requests being read and decoded, not yet queued: the worker waits for them (up to
    /// `max_wait`) only when there are some, so a lone client never waits.
    coming: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    policy: BatchPolicy,
}

/// What the worker needs besides the model.
pub struct WorkerParts {
    pub model: Adiff,
    pub tokenizer: Arc<Gpt2Tokenizer>,
    /// Event names of the model's outputs (for `events` and tagging).
    pub labels: Vec<String>,
}

impl Engine {
    /// Starts the worker threads, which end once the engine is dropped and the queue is empty.
    pub fn start(
        parts: WorkerParts,
        policy: BatchPolicy,
    ) -> std::io::Result<(Self, Vec<std::thread::JoinHandle<()>>)> {
        let (engine, rx) = Self::queue(policy);
        let rx = Arc::new(Mutex::new(rx));
        let parts = Arc::new(parts);
        let handles = (0..policy.workers.max(1))
            .map(|i| {
                let counts = Counts {
                    coming: engine.coming.clone(),
                    waiting: engine.waiting.clone(),
                    running: engine.running.clone(),
                };
                let (rx, parts) = (rx.clone(), parts.clone());
                std::thread::Builder::new()
                    .name(format!("adiff-model-{i}"))
                    .spawn(move || worker(&rx, &parts, policy, &counts))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok((engine, handles))
    }

    /// The queue alone; its receiving end is the worker's.
    fn queue(policy: BatchPolicy) -> (Self, Receiver<Job>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(policy.queue.max(1));
        let engine = Self {
            tx,
            coming: Arc::new(AtomicUsize::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
            running: Arc::new(AtomicUsize::new(0)),
            policy,
        };
        (engine, rx)
    }

    /// Counts a request on its way until the guard is dropped (at [`Engine::submit`]).
    pub fn coming(&self) -> Coming {
        self.coming.fetch_add(1, Ordering::SeqCst);
        Coming(self.coming.clone())
    }

    /// Queues a request; the receiver gets its answer.
    pub fn submit(
        &self,
        work: Work,
        coming: Coming,
    ) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work,
            reply,
            queued: Instant::now(),
        };
        // Counted before it is visible to the worker, which subtracts when it takes it.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        drop(coming);
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    /// Requests waiting for a worker, and requests in the batches the workers are running.
    pub fn load(&self) -> (usize, usize) {
        (
            self.waiting.load(Ordering::SeqCst),
            self.running.load(Ordering::SeqCst),
        )
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }
}

/// A request on its way to the queue (see [`Engine::coming`]).
pub struct Coming(Arc<AtomicUsize>);

impl Drop for Coming {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The engine's counters, shared with the worker.
struct Counts {
    coming: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

/// Takes the next batch from the queue: the first request (waiting for one), whatever is queued
/// already, then, while requests are on their way, what arrives before `max_wait` has passed.
/// None once the queue is closed and empty.
fn gather(rx: &Receiver<Job>, policy: BatchPolicy, coming: &AtomicUsize) -> Option<Vec<Job>> {
    let first = rx.recv().ok()?;
    let mut jobs = vec![first];
    let deadline = Instant::now() + policy.max_wait;
    while jobs.len() < policy.max_batch {
        match rx.try_recv() {
            Ok(job) => {
                jobs.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= deadline || coming.load(Ordering::SeqCst) == 0 {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(job) => jobs.push(job),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(jobs)
}

fn worker(rx: &Mutex<Receiver<Job>>, parts: &WorkerParts, policy: BatchPolicy, counts: &Counts) {
    let Counts {
        coming,
        waiting,
        running,
    } = counts;
    loop {
        // One worker gathers at a time; the lock is released before the batch runs. (A worker
        // that panicked cannot hold it: batches run outside the lock, under catch_unwind.)
        let Some(mut jobs) = gather(
            &rx.lock().unwrap_or_else(|e| e.into_inner()),
            policy,
            coming,
        ) else {
            break;
        };
        waiting.fetch_sub(jobs.len(), Ordering::SeqCst);
        // A client that gave up (timed out, disconnected) costs nothing more.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let n = jobs.len();
        running.fetch_add(n, Ordering::SeqCst);
        let started = Instant::now();
        let queued: Vec<f64> = jobs
            .iter()
            .map(|j| started.duration_since(j.queued).as_secs_f64())
            .collect();
        let (works, replies): (Vec<Work>, Vec<_>) =
            jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
        // A panic inside the model fails this batch, not the server.
        let outcomes = std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(parts, works)))
            .unwrap_or_else(|_| {
                (0..n)
                    .map(|_| Err("internal error: the model crashed on this batch".into()))
                    .collect()
            });
        let run_s = started.elapsed().as_secs_f64();
        for ((reply, outcome), queue_s) in replies.into_iter().zip(outcomes).zip(queued) {
            // The client may have gone meanwhile; nothing to do then.
            let _ = reply.send(outcome.map(|outcome| Done {
                outcome,
                queue_s,
                run_s,
                batch: n,
            }));
        }
        running.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Where a clip's HTSAT outputs are: chunk `.0` of the batch's outputs, row `.1`.
type Row = (usize, usize);

/// An explanation request once HTSAT has heard its clips.
struct Heard {
    /// Index of the request in its batch.
    index: usize,
    rows: [Row; 2],
    work: ExplainWork,
}

/// Runs one batch; one outcome per request, in order. HTSAT hears every clip of the batch in
/// chunks of [`HTSAT_CHUNK`] (its activations grow with the batch); GPT-2 runs one batch per
/// group of requests that decode alike.
fn run_batch(parts: &WorkerParts, works: Vec<Work>) -> Vec<Result<Outcome, String>> {
    let model = &parts.model;
    let mut clips = Vec::new();
    let mut explains = Vec::new();
    let mut tags = Vec::new();
    for (index, work) in works.into_iter().enumerate() {
        match work {
            Work::Explain(mut w) => {
                let [a, b] = std::mem::take(&mut w.mels);
                let first = clips.len();
                clips.push(a);
                clips.push(b);
                explains.push((index, first, w));
            }
            Work::Tag(mut t) => {
                tags.push((index, clips.len(), t.top, t.threshold, t.span));
                clips.push(std::mem::take(&mut t.mel));
            }
        }
    }
    let n = explains.len() + tags.len();
    let mut outcomes: Vec<Option<Result<Outcome, String>>> = (0..n).map(|_| None).collect();
    let row = |clip: usize| (clip / HTSAT_CHUNK, clip % HTSAT_CHUNK);
    let mut outs = Vec::with_capacity(clips.len().div_ceil(HTSAT_CHUNK));
    for chunk in clips.chunks(HTSAT_CHUNK) {
        match encode(model, chunk) {
            Ok(out) => outs.push(out),
            Err(e) => {
                let msg = format!("audio encoder: {e}");
                return (0..n).map(|_| Err(msg.clone())).collect();
            }
        }
    }
    drop(clips);
    for (index, clip, top, threshold, span) in tags {
        let (c, r) = row(clip);
        let events = clip_events(
            &outs[c],
            r,
            &parts.labels,
            model.config(),
            top,
            threshold,
            span.start_s,
        );
        outcomes[index] = Some(
            events
                .map(|events| Outcome::Tag { events })
                .map_err(|e| format!("{e:#}")),
        );
    }
    let heard: Vec<Heard> = explains
        .into_iter()
        .map(|(index, first, work)| Heard {
            index,
            rows: [row(first), row(first + 1)],
            work,
        })
        .collect();
    // Requests that decode alike share one GPT-2 batch.
    let mut groups: Vec<(GenerateOptions, Vec<usize>)> = Vec::new();
    for (h, one) in heard.iter().enumerate() {
        let key = batch_options(&one.work.opts);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(h),
            None => groups.push((key, vec![h])),
        }
    }
    for (opts, members) in groups {
        match explain_group(parts, &outs, &heard, &members, &opts) {
            Ok(per_member) => {
                for (&h, outcome) in members.iter().zip(per_member) {
                    outcomes[heard[h].index] = Some(outcome);
                }
            }
            Err(e) => {
                for &h in &members {
                    outcomes[heard[h].index] = Some(Err(format!("text decoder: {e}")));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("internal error: request left unanswered".into())))
        .collect()
}

/// Clips HTSAT hears at once at most.
const HTSAT_CHUNK: usize = 8;

/// HTSAT on log-mels `[frames * n_mels]` each, as one batch `[B, frames, n_mels]`.
fn encode(model: &Adiff, mels: &[Vec<f32>]) -> anyhow::Result<HtsatOutput> {
    let n_mels = model.config().audio.n_mels;
    let frames = mels[0].len() / n_mels;
    anyhow::ensure!(
        mels.iter().all(|m| m.len() == frames * n_mels),
        "log-mels of different lengths in one batch"
    );
    let data: Vec<f32> = mels.concat();
    let logmel = Tensor::from_vec(data, (mels.len(), frames, n_mels), model.device())?;
    Ok(model.audio.encode_log_mel(&logmel)?)
}

/// The options a GPT-2 batch shares: a request's own, its seed moved into the rows' keys.
fn batch_options(opts: &GenerateOptions) -> GenerateOptions {
    let mut o = opts.clone();
    if let Strategy::Sample(s) = &mut o.strategy {
        s.seed = 0;
    }
    o
}

/// Sampling key of a request's prompt `k`: `explain` seeds its k-th answer with `seed + k`.
fn row_key(opts: &GenerateOptions, k: usize) -> u64 {
    match &opts.strategy {
        Strategy::Sample(s) => s.seed.wrapping_add(k as u64),
        Strategy::Greedy => k as u64,
    }
}

/// One GPT-2 batch over every prompt of the `members` (indices into `heard`): rows
/// `[sum of prompts, prefix, n_embd]`.
fn explain_group(
    parts: &WorkerParts,
    outs: &[HtsatOutput],
    heard: &[Heard],
    members: &[usize],
    opts: &GenerateOptions,
) -> anyhow::Result<Vec<Result<Outcome, String>>> {
    let model = &parts.model;
    let cfg = model.config();
    let device = model.device();
    let embedding = |(c, r): Row| outs[c].embedding.i(r..r + 1); // [1, D]
    let (mut emb1, mut emb2, mut ids, mut keys) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &h in members {
        let Heard { rows, work, .. } = &heard[h];
        for (k, p) in work.prompt_ids.iter().enumerate() {
            emb1.push(embedding(rows[0])?);
            emb2.push(embedding(rows[1])?);
            ids.extend_from_slice(p);
            keys.push(row_key(&work.opts, k));
        }
    }
    let n_rows = keys.len();
    let emb1 = Tensor::cat(&emb1, 0)?; // [rows, D]
    let emb2 = Tensor::cat(&emb2, 0)?;
    let ids = Tensor::from_vec(ids, (n_rows, cfg.text.prompt_length), device)?;
    let prefix = model.prefix(&emb1, &emb2, &ids)?.prefix; // [rows, T, C]
    let prefix_positions = prefix.dim(1)?;
    let mut gens = generate_keyed(&model.gpt, &prefix, None, opts, &keys)?.into_iter();
    let mut outcomes = Vec::with_capacity(members.len());
    for &h in members {
        let Heard { rows, work, .. } = &heard[h];
        let answers: anyhow::Result<Vec<Answer>> = work
            .prompts
            .iter()
            .map(|p| {
                let g = gens.next().expect("one generation per row");
                answer(p.clone(), &parts.tokenizer, &g)
            })
            .collect();
        let events = if work.events {
            audio_events(
                [(&outs[rows[0].0], rows[0].1), (&outs[rows[1].0], rows[1].1)],
                &parts.labels,
                cfg,
                [work.spans[0].start_s, work.spans[1].start_s],
            )
            .map(Some)
        } else {
            Ok(None)
        };
        outcomes.push(match (answers, events) {
            (Ok(answers), Ok(events)) => Ok(Outcome::Explain {
                answers,
                events,
                prefix_positions,
            }),
            (Err(e), _) | (_, Err(e)) => Err(format!("{e:#}")),
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(queue: usize) -> BatchPolicy {
        BatchPolicy {
            max_batch: 4,
            max_wait: Duration::from_millis(1),
            queue,
            workers: 1,
        }
    }

    fn tag_work() -> Work {
        Work::Tag(TagWork {
            mel: vec![0.0; 4],
            span: ClipSpan {
                duration_s: Some(1.0),
                start_s: 0.0,
                end_s: 1.0,
            },
            top: 1,
            threshold: 0.5,
        })
    }

    #[test]
    fn a_full_queue_refuses_and_counts_right() {
        // No worker takes from the queue: it fills at its capacity.
        let (engine, rx) = Engine::queue(policy(2));
        let _a = engine.submit(tag_work(), engine.coming()).unwrap();
        let coming = engine.coming();
        assert_eq!(engine.coming.load(Ordering::SeqCst), 1);
        let _b = engine.submit(tag_work(), coming).unwrap();
        assert_eq!(engine.coming.load(Ordering::SeqCst), 0);
        let full = engine.submit(tag_work(), engine.coming());
        assert_eq!(full.unwrap_err(), SubmitError::Full);
        assert_eq!(engine.load(), (2, 0));
        drop(rx);
        let stopped = engine.submit(tag_work(), engine.coming());
        assert_eq!(stopped.unwrap_err(), SubmitError::Stopped);
        assert_eq!(engine.load(), (2, 0));
        assert_eq!(engine.coming.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn sampling_keys_follow_explain() {
        use crate::generate::SamplingOptions;
        let mut o = GenerateOptions::new(&crate::model::config::AdiffConfig::tiny().text);
        assert_eq!(row_key(&o, 1), 1);
        o.strategy = Strategy::Sample(SamplingOptions {
            temperature: 0.7,
            top_k: None,
            top_p: Some(0.9),
            seed: 41,
        });
        // explain seeds answer k with seed + k; the batch's options carry seed 0.
        assert_eq!(row_key(&o, 1), 42);
        let b = batch_options(&o);
        let Strategy::Sample(s) = &b.strategy else {
            panic!("sampling expected")
        };
        assert_eq!((s.seed, s.temperature, s.top_p), (0, 0.7, Some(0.9)));
    }
}

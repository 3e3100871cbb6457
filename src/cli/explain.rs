//! `adiff explain`: how two recordings differ, in words.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{IndexOp, Tensor};
use serde::Serialize;

use super::tag::{model_labels, top_events, TaggedEvent};
use super::{answer_text, ClipArgs, DecodingArgs, ModelArgs};
use crate::audio::load_clip_span;
use crate::generate::{generate, FinishReason};
use crate::model::htsat::HtsatOutput;
use crate::text::prompts::{PromptDatabase, PromptKind};
use crate::text::tokenizer::Gpt2Tokenizer;

/// Explain how two audio recordings differ.
///
/// The prompt picks the kind of answer: --tier 1 (a few words), 2 (one sentence) or 3 (a detailed
/// paragraph, the default) use the first prompt of that tier in data/prompts/prompts.json;
/// --prompt gives your own; --caption first|second|both asks for a caption of one or both audios.
///
/// A file longer than the model's 10 s clip is heard through one window (--crop); with --window
/// the two files are explained window by window instead, the windows paired as --align says
/// (by default window i of the first against window i of the second, as many pairs as the
/// shorter file has windows), each answer with its spans; --plot then draws both whole files
/// with the windows marked.
///
/// Examples:
///   adiff explain a.wav b.wav -c adiff_base.ckpt --tier 1
///   adiff explain a.wav b.wav -c adiff_base.ckpt --sample --top-p 0.9 --seed 7 --json --events
///   adiff explain before.wav after.wav --model demo --tier 2 --window 10
///   adiff explain take1.wav take2.wav --model demo --window 10 --align stretch --plot fig.png
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ExplainArgs {
    /// First audio file.
    pub audio1: PathBuf,
    /// Second audio file.
    pub audio2: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// Precision. On the CPU the weight format of GPT-2, the mappers and the cross-projection:
    /// f32, f16 or i8 (int8 with per-block scales: about a quarter of f32's bytes to read per
    /// token; HTSAT's linears take f16 for both); default as the file holds them (f32, or what
    /// `adiff convert --dtype` wrote). On a GPU every weight and activation: bf16 (the default
    /// on compute capability 8.0+), f16 or f32; the front end, softmax and logits stay f32.
    #[arg(long, value_enum)]
    pub dtype: Option<super::Dtype>,
    /// Explanation tier: 1 = a few words, 2 = one sentence, 3 = a detailed paragraph (the
    /// default).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3), conflicts_with_all = ["prompt", "caption"])]
    pub tier: Option<u8>,
    /// Your own prompt instead of a tier's.
    #[arg(long, conflicts_with = "caption")]
    pub prompt: Option<String>,
    /// Caption the first audio, the second, or both (two answers).
    #[arg(long, value_enum)]
    pub caption: Option<CaptionTarget>,
    /// GPT-2 tokenizer.json to use instead of the bundled one.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list each audio's top events with the time spans where they are active (the
    /// model's own labels when it has them, e.g. a stage-1 model's labels.json; else AudioSet's).
    #[arg(long)]
    pub events: bool,
    /// Also write a PNG figure: each audio's log-mel spectrogram and its top 3 events over time
    /// (named as --events names them), under the explanation (like the paper's Figure 5). With
    /// --window: each whole file's log-mel spectrogram on its own time axis (averaged down to
    /// the figure's width), the explained windows' boundaries as white lines and each window
    /// numbered by the pair(s) that hold it, and the numbered explanations listed below.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// Explain the whole files window by window, windows of this many seconds (at most the
    /// model's clip; a shorter window is repeated to fill it) instead of one --crop clip each.
    #[arg(long, value_name = "SECONDS", conflicts_with = "crop")]
    pub window: Option<f64>,
    /// Seconds from one window's start to the next (default: the window, no overlap).
    #[arg(long, value_name = "SECONDS", requires = "window")]
    pub hop: Option<f64>,
    /// How --window pairs the two files' windows (default: index). Windows are counted from 0
    /// in time order. index: window i of the first file against window i of the second, as
    /// many pairs as the file with fewer windows has. stretch: as many pairs as the file with
    /// more windows has (n; the other has m; the first file on a tie): window i of that file
    /// against window round(i * (m - 1) / (n - 1)) of the other (halves rounded up; window 0
    /// when n = 1), so first meets first, last meets last and the windows between meet at the
    /// same relative position: two recordings of one scene of different lengths are compared
    /// end to end. stretch needs both window counts first: a lossless file's header gives its
    /// length, any other file is decoded once more just to count.
    #[arg(long, value_enum, value_name = "RULE", requires = "window")]
    pub align: Option<Align>,
    /// Window pairs per batch with --window (HTSAT and GPT-2 run them together).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
}

/// How `explain --window` pairs windows (see `--align`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    #[default]
    Index,
    Stretch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptionTarget {
    First,
    Second,
    Both,
}

/// Default explanation tier when no prompt option is given.
const DEFAULT_TIER: u8 = 3;
/// AudioSet events listed per audio with --events.
const EVENTS_PER_AUDIO: usize = 5;
/// Frame-wise probability above which an event counts as active in --events.
const EVENT_THRESHOLD: f32 = 0.5;

#[derive(Debug, Serialize)]
pub(super) struct Answer {
    pub prompt: String,
    pub explanation: String,
    pub tokens: usize,
    pub finish: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    audio1: String,
    audio2: String,
    answers: Vec<Answer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<[Vec<TaggedEvent>; 2]>,
    /// The figure written with --plot.
    #[serde(skip_serializing_if = "Option::is_none")]
    plot: Option<PlotReport>,
    seconds: Timing,
}

/// Where the --plot figure went and which events it draws per audio.
#[derive(Debug, Serialize)]
struct PlotReport {
    path: String,
    events: [Vec<String>; 2],
}

#[derive(Debug, Serialize)]
struct Timing {
    load: f64,
    audio: f64,
    generate: f64,
}

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    let started = Instant::now();
    let tokenizer = match &args.tokenizer {
        Some(p) => Gpt2Tokenizer::from_file(p, &cfg.text)?,
        None => Gpt2Tokenizer::bundled(&cfg.text)?,
    };
    let prompts = prompts_for(&args)?;
    if let Some(note) = tier_notice(&args, &cfg) {
        eprintln!("{note}");
    }
    let model = super::load_model(args.model.load_checkpoint(&cfg)?, &cfg, &device, args.dtype)?;
    tokenizer.check_fits(model.config().gpt2.vocab_size)?;
    let load_s = started.elapsed().as_secs_f64();
    if let Some(window) = args.window {
        return run_windows(&args, &model, &tokenizer, &prompts, window, load_s);
    }

    let started = Instant::now();
    let (clip1, span1) = load_clip_span(&args.audio1, &cfg.audio, args.clip.crop_mode(0))?;
    let (clip2, span2) = load_clip_span(&args.audio2, &cfg.audio, args.clip.crop_mode(1))?;
    args.clip.note_window(&args.audio1, &span1);
    args.clip.note_window(&args.audio2, &span2);
    // One HTSAT pass for both clips: [2, ...]
    let (logmel, out) = model.audio.encode(&[clip1, clip2])?;
    let audio_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let n = prompts.len();
    let mut ids = Vec::with_capacity(n * cfg.text.prompt_length);
    for p in &prompts {
        ids.extend(tokenizer.encode_prompt(p)?);
    }
    let prompt_ids = Tensor::from_vec(ids, (n, cfg.text.prompt_length), &device)?;
    let emb1 = out
        .embedding
        .i(0..1)?
        .broadcast_as((n, out.embedding.dim(1)?))?
        .contiguous()?;
    let emb2 = out
        .embedding
        .i(1..2)?
        .broadcast_as((n, out.embedding.dim(1)?))?
        .contiguous()?;
    let parts = model.prefix(&emb1, &emb2, &prompt_ids)?;
    let generations = generate(
        &model.gpt,
        &parts.prefix,
        None,
        &args.decoding.options(&cfg),
    )?;
    let generate_s = started.elapsed().as_secs_f64();

    let mut answers = Vec::with_capacity(n);
    for (prompt, g) in prompts.into_iter().zip(generations) {
        answers.push(answer(prompt, &tokenizer, &g)?);
    }
    // The model's event names, read once for --events and --plot alike.
    let labels = if args.events || args.plot.is_some() {
        model_labels(&args.model, &cfg)?
    } else {
        Vec::new()
    };
    let events = if args.events {
        Some(audio_events(
            [(&out, 0), (&out, 1)],
            &labels,
            &cfg,
            [span1.start_s, span2.start_s],
        )?)
    } else {
        None
    };
    // Two captions that are one and the same text: a model never trained on captioning answers
    // the caption prompts as a difference prompt (the demo model does).
    if matches!(args.caption, Some(CaptionTarget::Both))
        && answers.len() == 2
        && answers[0].explanation.trim() == answers[1].explanation.trim()
    {
        eprintln!(
            "warning: both captions are the same text; this model was probably not trained on \
             captioning (*_captioning.csv rows in stages 2 and 3), so it describes the difference"
        );
    }
    let plot = match &args.plot {
        Some(path) => {
            check_figure_path(&args, path)?;
            // The model's labels name its first K outputs: the figure draws only those, so it
            // names events as --events does.
            let k = labels.len();
            let figure = crate::plot::ExplanationFigure::from_outputs(
                &[
                    args.audio1.display().to_string(),
                    args.audio2.display().to_string(),
                ],
                &logmel,
                &out.framewise.narrow(2, 0, k)?,
                &out.clipwise.narrow(1, 0, k)?,
                &labels,
                answers.iter().map(|a| a.explanation.clone()).collect(),
                cfg.audio.duration_s as f32,
            )?;
            crate::plot::render_explanation_figure(path, &figure)?;
            let names = |i: usize| -> Vec<String> {
                figure.audios[i]
                    .events
                    .iter()
                    .map(|e| e.label.clone())
                    .collect()
            };
            Some(PlotReport {
                path: path.display().to_string(),
                events: [names(0), names(1)],
            })
        }
        None => None,
    };
    let report = Report {
        audio1: args.audio1.display().to_string(),
        audio2: args.audio2.display().to_string(),
        answers,
        events,
        plot,
        seconds: Timing {
            load: load_s,
            audio: audio_s,
            generate: generate_s,
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// A figure replaces the figure of an earlier run (force), never an input of the command.
fn check_figure_path(args: &ExplainArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let mut inputs = vec![args.audio1.as_path(), args.audio2.as_path()];
    inputs.extend(args.model.checkpoint.iter().map(PathBuf::as_path));
    inputs.extend(args.model.config.as_deref());
    super::check_outputs(&inputs, &[("figure", path)], true)
}

/// A one-line notice when the tier asked for (or the default one) is not among the tiers the
/// model's config says it was trained on.
fn tier_notice(args: &ExplainArgs, cfg: &crate::model::config::AdiffConfig) -> Option<String> {
    if args.prompt.is_some() || args.caption.is_some() {
        return None;
    }
    let tier = args.tier.unwrap_or(DEFAULT_TIER);
    let trained = cfg.text.trained_tiers.as_ref()?;
    if trained.contains(&tier) {
        return None;
    }
    let list: Vec<String> = trained.iter().map(u8::to_string).collect();
    Some(format!(
        "note: this model was trained on tier{} {} only; its tier-{tier} answers may read like \
         those (ask with --tier {})",
        if list.len() > 1 { "s" } else { "" },
        list.join(" and "),
        list.join(" or --tier ")
    ))
}

/// The prompt(s) the options ask for.
fn prompts_for(args: &ExplainArgs) -> anyhow::Result<Vec<String>> {
    if let Some(p) = &args.prompt {
        anyhow::ensure!(!p.trim().is_empty(), "--prompt is empty");
        return Ok(vec![p.clone()]);
    }
    Ok(default_prompts(
        &PromptDatabase::bundled()?,
        args.caption,
        args.tier,
    ))
}

/// The bundled prompt(s) for a caption target or a tier (the default tier without either);
/// `adiff serve` asks the same way.
pub(super) fn default_prompts(
    db: &PromptDatabase,
    caption: Option<CaptionTarget>,
    tier: Option<u8>,
) -> Vec<String> {
    let kinds = match caption {
        Some(CaptionTarget::First) => vec![PromptKind::CaptionFirst],
        Some(CaptionTarget::Second) => vec![PromptKind::CaptionSecond],
        Some(CaptionTarget::Both) => vec![PromptKind::CaptionFirst, PromptKind::CaptionSecond],
        None => vec![PromptKind::Tier(tier.unwrap_or(DEFAULT_TIER))],
    };
    kinds
        .into_iter()
        .map(|k| db.default_prompt(k).to_string())
        .collect()
}

/// Top events of both audios, from the HTSAT outputs of the explanation run (audio i is row
/// `rows[i].1` of `rows[i].0`), with their spans on each file's time axis (the clip starts at
/// `starts[i]` seconds of file i).
pub(super) fn audio_events(
    rows: [(&HtsatOutput, usize); 2],
    labels: &[String],
    cfg: &crate::model::config::AdiffConfig,
    starts: [f64; 2],
) -> anyhow::Result<[Vec<TaggedEvent>; 2]> {
    let clip = cfg.audio.duration_s;
    let events = |i: usize| {
        let (out, row) = rows[i];
        row_events(out, row, labels, cfg, [starts[i], starts[i] + clip])
    };
    Ok([events(0)?, events(1)?])
}

/// Top events of batch row `row`, whose clip holds `span` (seconds of its file; the clip starts
/// at span[0]), with their active spans moved onto the file's time axis and cut at span[1] (a
/// window shorter than the clip is repeated to fill it: what lies past it is a repeat).
pub(super) fn row_events(
    out: &HtsatOutput,
    row: usize,
    labels: &[String],
    cfg: &crate::model::config::AdiffConfig,
    span: [f64; 2],
) -> anyhow::Result<Vec<TaggedEvent>> {
    let clipwise = out.clipwise.i(row)?.to_vec1::<f32>()?;
    let framewise = out.framewise.i(row)?.to_vec2::<f32>()?;
    let sec = cfg.audio.duration_s as f32 / framewise.len() as f32;
    let mut events = top_events(
        &clipwise,
        &framewise,
        labels,
        EVENTS_PER_AUDIO,
        EVENT_THRESHOLD,
        sec,
    );
    let (start, end) = (span[0] as f32, span[1] as f32);
    for e in &mut events {
        e.spans = e
            .spans
            .iter()
            .map(|s| s.map(|t| (t + start).min(end)))
            .filter(|[a, b]| a < b)
            .collect();
    }
    Ok(events)
}

/// One pair of windows and its answers (`explain --window`).
#[derive(Debug, Serialize)]
struct WindowAnswers {
    /// Where each window lies in its file, in seconds.
    audio1_s: [f64; 2],
    audio2_s: [f64; 2],
    answers: Vec<Answer>,
    /// With --events: each window's top events, spans in seconds of its file.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<[Vec<TaggedEvent>; 2]>,
}

#[derive(Debug, Serialize)]
struct WindowsReport {
    audio1: String,
    audio2: String,
    /// Window length and hop in seconds, how the windows were paired, and each file's duration.
    window: f64,
    hop: f64,
    align: Align,
    duration_s: [Option<f64>; 2],
    windows: Vec<WindowAnswers>,
    /// The figure written with --plot.
    #[serde(skip_serializing_if = "Option::is_none")]
    plot: Option<WindowPlotReport>,
    seconds: Timing,
}

/// Where the `--window --plot` figure went, and its size in pixels.
#[derive(Debug, Serialize)]
struct WindowPlotReport {
    path: String,
    width: u32,
    height: u32,
}

/// Window `i` of the file with `n` windows meets window `round(i (m - 1) / (n - 1))` (halves
/// up) of the file with `m` windows under `--align stretch`.
fn stretch_index(i: u64, n: u64, m: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    (2 * i * (m.max(1) - 1) + (n - 1)) / (2 * (n - 1))
}

/// One pair of windows: each window's index in its file, and the window.
struct Pair {
    index: [u64; 2],
    windows: [crate::audio::Window; 2],
}

/// The window pairs of `explain --window`, read from the two files as they are needed (a
/// window that several pairs share, under `stretch`, is read once and kept until passed).
struct PairSource {
    readers: [crate::audio::WindowReader; 2],
    /// Under `stretch`: each file's window count.
    counts: Option<[u64; 2]>,
    /// The last window read of each file, with its index; windows read per file.
    last: [Option<(u64, crate::audio::Window)>; 2],
    read: [u64; 2],
    /// The last pair handed out's window indices, and the next pair's number.
    paired: Option<[u64; 2]>,
    next: u64,
}

impl PairSource {
    fn open(
        args: &ExplainArgs,
        cfg: &crate::model::config::AdiffConfig,
        window: f64,
        hop: f64,
    ) -> anyhow::Result<(Self, [Option<f64>; 2])> {
        use crate::audio::WindowReader;
        let readers = [
            WindowReader::open(&args.audio1, &cfg.audio, window, hop)?,
            WindowReader::open(&args.audio2, &cfg.audio, window, hop)?,
        ];
        let (counts, durations) = match args.align.unwrap_or_default() {
            Align::Index => (None, [None, None]),
            Align::Stretch => {
                let (a, b) = (readers[0].count()?, readers[1].count()?);
                (Some([a.0, b.0]), [Some(a.1), Some(b.1)])
            }
        };
        let source = Self {
            readers,
            counts,
            last: [None, None],
            read: [0, 0],
            paired: None,
            next: 0,
        };
        Ok((source, durations))
    }

    /// The window indices the next pair needs, or None past the last pair of `stretch`.
    fn wanted(&self) -> Option<[u64; 2]> {
        let i = self.next;
        let Some(c) = self.counts else {
            return Some([i, i]);
        };
        let long = usize::from(c[1] > c[0]);
        if i >= c[long] {
            return None;
        }
        let mut want = [i; 2];
        want[1 - long] = stretch_index(i, c[long], c[1 - long]);
        Some(want)
    }

    /// The next pair, or None after the last. Under `index` both files are read one window
    /// further each time (as they always were), and the pairs end with the shorter file; under
    /// `stretch` they end with the longer, and should the shorter end early (a count that the
    /// decoder did not keep to) its last window stands in.
    fn next_pair(&mut self) -> anyhow::Result<Option<Pair>> {
        let Some(want) = self.wanted() else {
            return Ok(None);
        };
        let mut ended = [false; 2];
        for (side, &w) in want.iter().enumerate() {
            while self.last[side].as_ref().is_none_or(|(i, _)| *i < w) {
                match self.readers[side].next_window()? {
                    Some(win) => {
                        self.last[side] = Some((self.read[side], win));
                        self.read[side] += 1;
                    }
                    None => {
                        ended[side] = true;
                        break;
                    }
                }
            }
        }
        let stretch = self.counts.is_some();
        let mut index = [0; 2];
        for side in 0..2 {
            match &self.last[side] {
                Some((i, _))
                    if *i == want[side]
                        || (stretch && ended[side] && side_is_short(self.counts, side)) =>
                {
                    index[side] = *i
                }
                _ => return Ok(None),
            }
        }
        let window = |side: usize| self.last[side].as_ref().expect("checked above").1.clone();
        let pair = Pair {
            index,
            windows: [window(0), window(1)],
        };
        self.paired = Some(index);
        self.next += 1;
        Ok(Some(pair))
    }

    /// The windows of file `side` that no pair holds, after the last pair (for the figure).
    fn rest(&mut self, side: usize) -> anyhow::Result<Option<crate::audio::Window>> {
        if let Some((i, w)) = self.last[side].take() {
            if self.paired.is_none_or(|p| p[side] != i) {
                return Ok(Some(w));
            }
        }
        Ok(self.readers[side].next_window()?)
    }
}

/// Whether file `side` is the one with fewer windows under `stretch` (the second on a tie).
fn side_is_short(counts: Option<[u64; 2]>, side: usize) -> bool {
    counts.is_some_and(|c| usize::from(c[1] > c[0]) != side)
}

/// What `--window --plot` gathers as the pairs go: each file's log-mel over its whole length
/// (bounded, see [`crate::plot::LogMelTimeline`]), and the windows that were explained.
struct WindowPlot {
    path: PathBuf,
    timelines: [crate::plot::LogMelTimeline; 2],
    marks: [Vec<crate::plot::WindowMark>; 2],
}

impl WindowPlot {
    fn new(path: PathBuf, cfg: &crate::model::config::AdiffConfig) -> Self {
        let sr = f64::from(cfg.audio.sample_rate);
        let (frame_s, edge_s) = (
            cfg.audio.hop_length as f64 / sr,
            cfg.audio.n_fft as f64 / 2.0 / sr,
        );
        let timeline = || crate::plot::LogMelTimeline::new(cfg.audio.n_mels, frame_s, edge_s);
        Self {
            path,
            timelines: [timeline(), timeline()],
            marks: [Vec::new(), Vec::new()],
        }
    }

    /// Adds the clips of one batch: `logmel` `[R, T, M]` of its distinct windows, row r the
    /// window of file `rows[r].0` at `rows[r].1` (each file's in time order).
    fn add_batch(&mut self, logmel: &Tensor, rows: &[(usize, [f64; 2])]) -> anyhow::Result<()> {
        let (r, t, m) = logmel.dims3()?;
        anyhow::ensure!(
            r == rows.len(),
            "figure: {r} log-mels for {} windows",
            rows.len()
        );
        let host = logmel
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for ((side, span), lm) in rows.iter().zip(host.chunks_exact(t * m)) {
            self.timelines[*side].push(span[0], span[1], lm)?;
        }
        Ok(())
    }

    /// Marks pair `number` (from 1) on both files: a window that the previous pair holds too
    /// (under `stretch`) takes the range of pair numbers.
    fn mark(&mut self, number: usize, spans: [[f64; 2]; 2]) {
        for (marks, span) in self.marks.iter_mut().zip(spans) {
            match marks.last_mut() {
                Some(m) if [m.start_s, m.end_s] == span => {
                    let first = m.label.split('-').next().unwrap_or_default().to_string();
                    m.label = format!("{first}-{number}");
                }
                _ => marks.push(crate::plot::WindowMark {
                    start_s: span[0],
                    end_s: span[1],
                    label: number.to_string(),
                }),
            }
        }
    }

    /// Reads the files' unexplained rest into the timelines (log-mel only) and writes the
    /// figure.
    fn finish(
        self,
        args: &ExplainArgs,
        model: &crate::model::adiff::Adiff,
        source: &mut PairSource,
        results: &[WindowAnswers],
        durations: [Option<f64>; 2],
    ) -> anyhow::Result<WindowPlotReport> {
        let Self {
            path,
            timelines,
            marks,
        } = self;
        let names = [&args.audio1, &args.audio2];
        let mut rows = Vec::with_capacity(2);
        for (side, (mut timeline, windows)) in timelines.into_iter().zip(marks).enumerate() {
            let mut end: f64 = 0.0;
            while let Some(w) = source.rest(side)? {
                let logmel = model.audio.log_mel(std::slice::from_ref(&w.clip))?;
                let host = logmel.to_dtype(candle_core::DType::F32)?.flatten_all()?;
                timeline.push(w.span.start_s, w.span.end_s, &host.to_vec1::<f32>()?)?;
                end = end.max(w.span.end_s);
            }
            let last = windows.last().map_or(0.0, |m| m.end_s).max(end);
            let duration = (source.readers[side].duration_s())
                .or(durations[side])
                .unwrap_or(last);
            rows.push(crate::plot::TimelineRow {
                panel: timeline.finish(names[side].display().to_string(), duration),
                duration_s: duration,
                windows,
            });
        }
        let explanations = results
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let ([a0, a1], [b0, b1]) = (w.audio1_s, w.audio2_s);
                let text = if w.answers.len() > 1 {
                    (w.answers.iter().enumerate())
                        .map(|(k, a)| format!("({}) {}", k + 1, a.explanation))
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    w.answers.iter().map(|a| a.explanation.clone()).collect()
                };
                format!("{}. [{a0:.2}-{a1:.2} s | {b0:.2}-{b1:.2} s] {text}", i + 1)
            })
            .collect();
        let figure = crate::plot::WindowFigure { rows, explanations };
        crate::plot::render_window_figure(&path, &figure)?;
        let (width, height) = crate::plot::window_figure_size(&figure)?;
        Ok(WindowPlotReport {
            path: path.display().to_string(),
            width,
            height,
        })
    }
}

/// `explain --window`: pairs of windows (as `--align` pairs them) in batches of
/// `--batch-size`: one HTSAT pass for the batch's distinct clips, one GPT-2 generation for all
/// its pairs and prompts. Sampling is keyed by window pair and prompt, so the text does not
/// depend on the batch size.
fn run_windows(
    args: &ExplainArgs,
    model: &crate::model::adiff::Adiff,
    tokenizer: &Gpt2Tokenizer,
    prompts: &[String],
    window: f64,
    load_s: f64,
) -> anyhow::Result<()> {
    let cfg = model.config();
    let device = model.device().clone();
    let hop = args.hop.unwrap_or(window);
    // Before the long run, not after it: the figure may not land on an input.
    if let Some(path) = &args.plot {
        check_figure_path(args, path)?;
    }
    let (mut source, counted) = PairSource::open(args, cfg, window, hop)?;
    let mut plot = args.plot.clone().map(|p| WindowPlot::new(p, cfg));
    let n = prompts.len();
    let mut prompt_ids = Vec::with_capacity(n * cfg.text.prompt_length);
    for p in prompts {
        prompt_ids.extend(tokenizer.encode_prompt(p)?);
    }
    let opts = args.decoding.options(cfg);
    let labels = if args.events {
        model_labels(&args.model, cfg)?
    } else {
        Vec::new()
    };
    let (mut audio_s, mut generate_s) = (0.0, 0.0);
    let mut results: Vec<WindowAnswers> = Vec::new();
    let batch = args.batch_size as usize;
    let mut done = false;
    while !done {
        let started = Instant::now();
        let mut pairs = Vec::with_capacity(batch);
        while pairs.len() < batch {
            match source.next_pair()? {
                Some(pair) => pairs.push(pair),
                None => {
                    done = true;
                    break;
                }
            }
        }
        if pairs.is_empty() {
            break;
        }
        let p = pairs.len();
        // The batch's distinct windows, the first file's then the second's (a window several
        // pairs share is encoded once); row_of[j][side] is pair j's row.
        let mut clips = Vec::with_capacity(2 * p);
        let mut row_spans = Vec::with_capacity(2 * p);
        let mut row_of = vec![[0usize; 2]; p];
        for side in 0..2 {
            let mut prev: Option<(u64, usize)> = None;
            for (pair, rows) in pairs.iter_mut().zip(row_of.iter_mut()) {
                let index = pair.index[side];
                rows[side] = match prev {
                    Some((i, row)) if i == index => row,
                    _ => {
                        let w = &mut pair.windows[side];
                        row_spans.push((side, [w.span.start_s, w.span.end_s]));
                        clips.push(std::mem::take(&mut w.clip));
                        clips.len() - 1
                    }
                };
                prev = Some((index, rows[side]));
            }
        }
        let (logmel, out) = model.audio.encode(&clips)?;
        drop(clips);
        if let Some(plot) = plot.as_mut() {
            plot.add_batch(&logmel, &row_spans)?;
        }
        drop(logmel);
        audio_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        // Rows: pair j, prompt k at j * n + k.
        let pick = |side: usize| -> anyhow::Result<Tensor> {
            let idx: Vec<u32> = (row_of.iter())
                .flat_map(|r| std::iter::repeat_n(r[side] as u32, n))
                .collect();
            let idx = Tensor::from_vec(idx, p * n, &device)?;
            Ok(out.embedding.index_select(&idx, 0)?.contiguous()?)
        };
        let (emb1, emb2) = (pick(0)?, pick(1)?);
        let ids: Vec<u32> = (0..p).flat_map(|_| prompt_ids.iter().copied()).collect();
        let ids = Tensor::from_vec(ids, (p * n, cfg.text.prompt_length), &device)?;
        let parts = model.prefix(&emb1, &emb2, &ids)?;
        let first = (results.len() * n) as u64;
        let keys: Vec<u64> = (first..first + (p * n) as u64).collect();
        let mut gens =
            crate::generate::generate_keyed(&model.gpt, &parts.prefix, None, &opts, &keys)?
                .into_iter();
        for (pair, rows) in pairs.iter().zip(&row_of) {
            let mut answers = Vec::with_capacity(n);
            for prompt in prompts {
                let g = gens.next().expect("one generation per pair and prompt");
                answers.push(answer(prompt.clone(), tokenizer, &g)?);
            }
            let [a, b] = &pair.windows;
            let (sa, sb) = (
                [a.span.start_s, a.span.end_s],
                [b.span.start_s, b.span.end_s],
            );
            let events = if args.events {
                Some([
                    row_events(&out, rows[0], &labels, cfg, sa)?,
                    row_events(&out, rows[1], &labels, cfg, sb)?,
                ])
            } else {
                None
            };
            if let Some(plot) = plot.as_mut() {
                plot.mark(results.len() + 1, [sa, sb]);
            }
            results.push(WindowAnswers {
                audio1_s: sa,
                audio2_s: sb,
                answers,
                events,
            });
        }
        generate_s += started.elapsed().as_secs_f64();
    }
    let plot = match plot {
        Some(plot) => Some(plot.finish(args, model, &mut source, &results, counted)?),
        None => None,
    };
    let duration = |side: usize| source.readers[side].duration_s().or(counted[side]);
    let report = WindowsReport {
        audio1: args.audio1.display().to_string(),
        audio2: args.audio2.display().to_string(),
        window,
        hop,
        align: args.align.unwrap_or_default(),
        duration_s: [duration(0), duration(1)],
        windows: results,
        plot,
        seconds: Timing {
            load: load_s,
            audio: audio_s,
            generate: generate_s,
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_windows_text(&report, n);
    }
    Ok(())
}

fn print_windows_text(report: &WindowsReport, n: usize) {
    for w in &report.windows {
        let [a0, a1] = w.audio1_s;
        let [b0, b1] = w.audio2_s;
        for a in &w.answers {
            if n > 1 {
                println!(
                    "[{a0:.2}-{a1:.2} s | {b0:.2}-{b1:.2} s] [{}] {}",
                    a.prompt, a.explanation
                );
            } else {
                println!("[{a0:.2}-{a1:.2} s | {b0:.2}-{b1:.2} s] {}", a.explanation);
            }
        }
        if let Some(events) = &w.events {
            for (name, ev) in [&report.audio1, &report.audio2].iter().zip(events) {
                println!("  events in {name}:");
                for e in ev {
                    println!("  {}", e.table_row());
                }
            }
        }
    }
}

pub(super) fn answer(
    prompt: String,
    tokenizer: &Gpt2Tokenizer,
    g: &crate::generate::Generation,
) -> anyhow::Result<Answer> {
    Ok(Answer {
        prompt,
        explanation: answer_text(tokenizer, g)?,
        tokens: g.ids.len(),
        finish: match g.finish {
            FinishReason::Stop => "stop",
            FinishReason::MaxNewTokens => "max_tokens",
            FinishReason::PositionLimit => "position_limit",
        },
    })
}

fn print_text(r: &Report) {
    for a in &r.answers {
        if r.answers.len() > 1 {
            println!("[{}]", a.prompt);
        }
        println!("{}", a.explanation);
    }
    if let Some(events) = &r.events {
        for (name, ev) in [&r.audio1, &r.audio2].iter().zip(events) {
            println!("\nevents in {name}:");
            for e in ev {
                println!("{}", e.table_row());
            }
        }
    }
}

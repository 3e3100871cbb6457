//! `adiff tag`: the top AudioSet events of one audio file, with the time spans where each event's
//! frame-wise probability is above a threshold.

use std::path::PathBuf;

use candle_core::IndexOp;
use serde::Serialize;

use super::{ClipArgs, ModelArgs};
use crate::audio::load_clip_span;
use crate::data::audioset::class_labels;
use crate::data::labels::{read_labels_file, LABELS_FILE};

/// Print the top AudioSet events of an audio file.
///
/// Events are ranked by clip-wise probability; for each, the spans (in seconds of the file; the
/// model hears a 10 s clip cut from it as --crop says, and a shorter file repeated to fill it)
/// where its frame-wise probability is above --threshold are listed. HTSAT resolves time in
/// steps of 10 s / 32 = 0.3125 s.
///
/// With --window, the whole file is tagged: HTSAT runs on every window (batched), an event's
/// probability is its highest in any window, and its spans are stitched on the file's time
/// axis (active where any window covering the moment says so). Memory does not grow with the
/// file's length.
///
/// Examples: adiff tag dog.wav --checkpoint adiff.ckpt --top 5
///           adiff tag concert.mp3 --model demo --window 10 --hop 5
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TagArgs {
    /// Audio file (WAV, FLAC, MP3, OGG/Vorbis).
    pub input: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// Precision. On the CPU HTSAT's weight format: f32, or f16 / i8, which both hold its Swin
    /// linears as f16 (half their memory; int8 would not speed up its compute-bound products);
    /// default as the file holds them. On a GPU every weight and activation: bf16 (the default
    /// on compute capability 8.0+), f16 or f32; the front end and the outputs stay f32.
    #[arg(long, value_enum)]
    pub dtype: Option<super::Dtype>,
    /// How many events to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Frame-wise probability above which an event counts as active.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Tag the whole file in windows of this many seconds (at most the model's clip; a shorter
    /// window is repeated to fill the clip) instead of one --crop clip.
    #[arg(long, value_name = "SECONDS", conflicts_with = "crop")]
    pub window: Option<f64>,
    /// Seconds from one window's start to the next (default: the window, no overlap).
    #[arg(long, value_name = "SECONDS", requires = "window")]
    pub hop: Option<f64>,
    /// Windows per HTSAT batch with --window.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
}

#[derive(Debug, Serialize)]
pub struct TaggedEvent {
    pub index: usize,
    pub label: String,
    pub probability: f32,
    /// `[start_s, end_s]` spans where the frame-wise probability is above the threshold.
    pub spans: Vec<[f32; 2]>,
}

#[derive(Debug, Serialize)]
struct TagReport {
    file: String,
    /// The part of the file the clip was cut from (the whole file with --window), in seconds.
    window_s: [f64; 2],
    /// With --window: how the file was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    windows: Option<WindowsReport>,
    events: Vec<TaggedEvent>,
}

#[derive(Debug, Serialize)]
struct WindowsReport {
    seconds: f64,
    hop: f64,
    count: usize,
}

pub fn run(args: TagArgs) -> anyhow::Result<()> {
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    let labels = model_labels(&args.model, &cfg)?;
    let ckpt = args.model.load_checkpoint(&cfg)?;
    let encoder = super::load_encoder(ckpt, &cfg, &device, args.dtype)?;
    if let Some(window) = args.window {
        return run_windows(&args, &cfg, &encoder, &labels, window);
    }
    let (clip, span) = load_clip_span(&args.input, &cfg.audio, args.clip.crop_mode(0))?;
    args.clip.note_window(&args.input, &span);
    let (_, out) = encoder.encode(&[clip])?;
    let events = clip_events(
        &out,
        0,
        &labels,
        &cfg,
        args.top,
        args.threshold,
        span.start_s,
    )?;

    let report = TagReport {
        file: args.input.display().to_string(),
        window_s: [span.start_s, span.end_s],
        windows: None,
        events,
    };
    print_report(&args, &report)
}

fn print_report(args: &TagArgs, report: &TagReport) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        match &report.windows {
            Some(w) => println!(
                "{} ({:.1} s, {} windows of {} s every {} s)",
                report.file, report.window_s[1], w.count, w.seconds, w.hop
            ),
            None => println!("{}", report.file),
        }
        for e in &report.events {
            println!("{}", e.table_row());
        }
    }
    Ok(())
}

/// `tag --window`: every window of the file through HTSAT, `batch_size` at a time; an event's
/// probability is its maximum over the windows, its spans the union of each window's (within the
/// window's own samples, not its repeats), on the file's time axis.
fn run_windows(
    args: &TagArgs,
    cfg: &crate::model::config::AdiffConfig,
    encoder: &crate::model::audio_encoder::AudioEncoder,
    labels: &[String],
    window: f64,
) -> anyhow::Result<()> {
    let hop = args.hop.unwrap_or(window);
    let classes = cfg.htsat.num_classes;
    let mut best = vec![0f32; classes];
    let mut spans: Vec<Vec<[f64; 2]>> = vec![Vec::new(); classes];
    let mut pending: Vec<crate::audio::Window> = Vec::new();
    let mut count = 0usize;
    let mut flush = |pending: &mut Vec<crate::audio::Window>| -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let clips: Vec<Vec<f32>> = pending
            .iter_mut()
            .map(|w| std::mem::take(&mut w.clip))
            .collect();
        let (_, out) = encoder.encode(&clips)?;
        for (i, w) in pending.iter().enumerate() {
            let clipwise = out.clipwise.i(i)?.to_vec1::<f32>()?;
            let framewise = out.framewise.i(i)?.to_vec2::<f32>()?; // [frames, classes]
            let spf = cfg.audio.duration_s / framewise.len() as f64;
            // Frames of the window's own samples (a short window is repeated to fill the clip).
            let real =
                (((w.span.end_s - w.span.start_s) / spf).round() as usize).min(framewise.len());
            for c in 0..classes.min(clipwise.len()) {
                best[c] = best[c].max(clipwise[c]);
                let active: Vec<bool> = framewise[..real]
                    .iter()
                    .map(|r| r[c] > args.threshold)
                    .collect();
                for (a, b) in active_spans(&active) {
                    spans[c].push([
                        w.span.start_s + a as f64 * spf,
                        w.span.start_s + b as f64 * spf,
                    ]);
                }
            }
        }
        count += pending.len();
        pending.clear();
        Ok(())
    };
    let batch = args.batch_size as usize;
    let duration = crate::audio::for_each_window(&args.input, &cfg.audio, window, hop, |w| {
        pending.push(w);
        if pending.len() == batch {
            flush(&mut pending).map_err(|e| crate::error::AdiffError::Invalid(e.to_string()))?;
        }
        Ok(())
    })?;
    flush(&mut pending)?;
    let mut order: Vec<usize> = (0..classes.min(labels.len())).collect();
    order.sort_by(|&a, &b| best[b].total_cmp(&best[a]));
    let events = order
        .into_iter()
        .take(args.top)
        .map(|k| TaggedEvent {
            index: k,
            label: labels[k].clone(),
            probability: best[k],
            spans: merge_spans(std::mem::take(&mut spans[k]))
                .into_iter()
                .map(|[a, b]| [a as f32, b as f32])
                .collect(),
        })
        .collect();
    let report = TagReport {
        file: args.input.display().to_string(),
        window_s: [0.0, duration],
        windows: Some(WindowsReport {
            seconds: window,
            hop,
            count,
        }),
        events,
    };
    print_report(args, &report)
}

/// Sorted union of `[start, end]` spans (overlapping or touching ones joined).
fn merge_spans(mut spans: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    /// Spans closer than this (seconds) touch: window edges land on the same frame boundary up to
    /// rounding.
    const TOUCH: f64 = 1e-6;
    spans.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let mut out: Vec<[f64; 2]> = Vec::new();
    for s in spans {
        match out.last_mut() {
            Some(last) if s[0] <= last[1] + TOUCH => last[1] = last[1].max(s[1]),
            _ => out.push(s),
        }
    }
    out
}

impl TaggedEvent {
    /// One line of the text table: probability, label, active spans (`-` when none).
    pub fn table_row(&self) -> String {
        let spans: Vec<String> = self
            .spans
            .iter()
            .map(|[a, b]| format!("{a:.2}-{b:.2}s"))
            .collect();
        let spans = if spans.is_empty() {
            "-".to_string()
        } else {
            spans.join(", ")
        };
        format!("  {:>6.3}  {:<40}  {}", self.probability, self.label, spans)
    }
}

/// The model's event names: `labels.json` from `adiff train-stage1 --part encoder` in the
/// `--model` folder or beside a `--checkpoint` file (the last one that has it), naming the first K
/// outputs (the only ones that model was trained on); otherwise the shipped AudioSet labels,
/// checked against the model's number of classes.
pub fn model_labels(
    args: &ModelArgs,
    cfg: &crate::model::config::AdiffConfig,
) -> anyhow::Result<Vec<String>> {
    let beside = match &args.model {
        Some(name) => vec![super::shipped_model(name)?.join(LABELS_FILE)],
        None => args
            .checkpoint
            .iter()
            .rev()
            .map(|c| c.with_file_name(LABELS_FILE))
            .collect(),
    };
    if let Some(path) = beside.iter().find(|p| p.is_file()) {
        let names = read_labels_file(path)?;
        anyhow::ensure!(
            !names.is_empty() && names.len() <= cfg.htsat.num_classes,
            "{}: {} labels for a model with {} outputs",
            path.display(),
            names.len(),
            cfg.htsat.num_classes
        );
        return Ok(names);
    }
    let labels = class_labels()?;
    anyhow::ensure!(
        labels.len() == cfg.htsat.num_classes,
        "the model has {} classes but {} AudioSet labels are shipped",
        cfg.htsat.num_classes,
        labels.len()
    );
    Ok(labels)
}

/// The `top` events of batch row `row` of `out`, whose clip starts `start_s` seconds into its
/// file, with their active spans on the file's time axis (`adiff serve` tags the same way).
#[allow(clippy::too_many_arguments)]
pub(super) fn clip_events(
    out: &crate::model::htsat::HtsatOutput,
    row: usize,
    labels: &[String],
    cfg: &crate::model::config::AdiffConfig,
    top: usize,
    threshold: f32,
    start_s: f64,
) -> anyhow::Result<Vec<TaggedEvent>> {
    let clipwise = out.clipwise.i(row)?.to_vec1::<f32>()?;
    let framewise = out.framewise.i(row)?.to_vec2::<f32>()?;
    let seconds_per_frame = cfg.audio.duration_s as f32 / framewise.len() as f32;
    let mut events = top_events(
        &clipwise,
        &framewise,
        labels,
        top,
        threshold,
        seconds_per_frame,
    );
    for e in &mut events {
        for s in &mut e.spans {
            *s = s.map(|t| t + start_s as f32);
        }
    }
    Ok(events)
}

/// The `top` events by clip-wise probability, with their active spans.
pub fn top_events(
    clipwise: &[f32],
    framewise: &[Vec<f32>],
    labels: &[String],
    top: usize,
    threshold: f32,
    seconds_per_frame: f32,
) -> Vec<TaggedEvent> {
    // Only outputs with a name (a stage-1 model names its first K outputs).
    let mut order: Vec<usize> = (0..clipwise.len().min(labels.len())).collect();
    order.sort_by(|&a, &b| clipwise[b].total_cmp(&clipwise[a]));
    order
        .into_iter()
        .take(top)
        .map(|k| {
            let active: Vec<bool> = framewise.iter().map(|row| row[k] > threshold).collect();
            TaggedEvent {
                index: k,
                label: labels[k].clone(),
                probability: clipwise[k],
                spans: active_spans(&active)
                    .into_iter()
                    .map(|(a, b)| [a as f32 * seconds_per_frame, b as f32 * seconds_per_frame])
                    .collect(),
            }
        })
        .collect()
}

/// Half-open `[start, end)` index ranges of consecutive `true` values.
fn active_spans(active: &[bool]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, &a) in active.iter().chain(std::iter::once(&false)).enumerate() {
        match (a, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_spans_join_overlaps_and_touching_ones() {
        let s = vec![[5.0, 6.0], [0.0, 1.0], [0.5, 2.0], [2.0, 3.0], [3.5, 4.0]];
        assert_eq!(merge_spans(s), vec![[0.0, 3.0], [3.5, 4.0], [5.0, 6.0]]);
    }

    #[test]
    fn spans_are_half_open_runs() {
        let a = [false, true, true, false, true];
        assert_eq!(active_spans(&a), vec![(1, 3), (4, 5)]);
        assert!(active_spans(&[false, false]).is_empty());
    }
}

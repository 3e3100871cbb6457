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
/// where its frame-wise probability is above --threshold are listed. HTSAT resolves time in steps of 10 s / 32 = 0.3125 s.
///
/// Example: adiff tag dog.wav --checkpoint adiff.ckpt --top 5
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TagArgs {
    /// Audio file (WAV, FLAC, MP3, OGG/Vorbis).
    pub input: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// HTSAT's weight format on the CPU: f32, or f16 / i8, which both hold its Swin linears as
    /// f16 (half their memory; int8 would not speed up its compute-bound products). Default: as
    /// the file holds them.
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
    /// The part of the file the clip was cut from, in seconds.
    window_s: [f64; 2],
    events: Vec<TaggedEvent>,
}

pub fn run(args: TagArgs) -> anyhow::Result<()> {
    let cfg = args.model.config()?;
    let device = args.model.device()?;
    let labels = model_labels(&args.model, &cfg)?;
    let ckpt = args.model.load_checkpoint(&cfg)?;
    let encoder = super::load_encoder(ckpt, &cfg, &device, args.dtype)?;
    let (clip, span) = load_clip_span(&args.input, &cfg.audio, args.clip.crop_mode(0))?;
    args.clip.note_window(&args.input, &span);
    let (_, out) = encoder.encode(&[clip])?;
    let clipwise = out.clipwise.i(0)?.to_vec1::<f32>()?;
    let framewise = out.framewise.i(0)?.to_vec2::<f32>()?;
    let seconds_per_frame = cfg.audio.duration_s as f32 / framewise.len() as f32;
    let mut events = top_events(
        &clipwise,
        &framewise,
        &labels,
        args.top,
        args.threshold,
        seconds_per_frame,
    );
    // Spans on the file's time axis, not the clip's.
    for e in &mut events {
        for s in &mut e.spans {
            *s = s.map(|t| t + span.start_s as f32);
        }
    }

    if args.json {
        let report = TagReport {
            file: args.input.display().to_string(),
            window_s: [span.start_s, span.end_s],
            events,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", args.input.display());
        for e in &events {
            println!("{}", e.table_row());
        }
    }
    Ok(())
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
    fn spans_are_half_open_runs() {
        let a = [false, true, true, false, true];
        assert_eq!(active_spans(&a), vec![(1, 3), (4, 5)]);
        assert!(active_spans(&[false, false]).is_empty());
    }
}

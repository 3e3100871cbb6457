//! `explain --plot`'s figure: rendered from synthetic data (no model) and decoded back, plus an
//! end-to-end run of `adiff explain --plot` on the tiny fixture model.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use adiff::plot::{
    figure_size, render_explanation_figure, AudioPanel, EventTrack, ExplanationFigure,
    FIGURE_WIDTH, TOP_EVENTS,
};
use common::{root, tiny_model_args};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adiff-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Shapes of the real model: 1001 log-mel frames x 64 bins, 1024 event frames.
const MEL_FRAMES: usize = 1001;
const MEL_BINS: usize = 64;
const EVENT_FRAMES: usize = 1024;

/// A panel with a rising chirp in the spectrogram and three bumps of event probability.
fn panel(name: &str, shift: f32) -> AudioPanel {
    let mut logmel = Vec::with_capacity(MEL_FRAMES * MEL_BINS);
    for t in 0..MEL_FRAMES {
        let chirp = (t as f32 / MEL_FRAMES as f32 + shift).fract() * MEL_BINS as f32;
        for m in 0..MEL_BINS {
            let d = m as f32 - chirp;
            logmel.push(-90.0 + 80.0 * (-d * d / 20.0).exp() - m as f32 * 0.2);
        }
    }
    let labels = ["Speech", "Dog", "Vehicle horn, car horn, honking"];
    let events = labels
        .iter()
        .enumerate()
        .map(|(k, label)| {
            let centre = (k as f32 + 1.0) / 4.0 + shift * 0.1;
            EventTrack {
                label: label.to_string(),
                clip_probability: 0.9 - k as f32 * 0.3,
                framewise: (0..EVENT_FRAMES)
                    .map(|f| {
                        let d = f as f32 / EVENT_FRAMES as f32 - centre;
                        (-d * d / 0.005).exp() * (0.95 - k as f32 * 0.25)
                    })
                    .collect(),
            }
        })
        .collect();
    AudioPanel {
        name: name.to_string(),
        logmel,
        mel_frames: MEL_FRAMES,
        mel_bins: MEL_BINS,
        events,
    }
}

fn figure(explanation: &str) -> ExplanationFigure {
    ExplanationFigure {
        explanations: vec![explanation.to_string()],
        duration_s: 10.0,
        audios: vec![panel("first.wav", 0.0), panel("second.wav", 0.5)],
    }
}

const LONG: &str =
    "The first audio features a dog barking loudly in a quiet suburban street while a \
man speaks calmly in the background, whereas the second audio is dominated by heavy traffic with \
repeated car horns honking, creating a tense and chaotic urban atmosphere; the first sound is \
closer and clearer, the second is distant and reverberant, and the emotional tone shifts from \
relaxed to stressed as the recording moves from a residential setting to a busy intersection.";

/// Decoded RGB8 image: (width, height, pixels).
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn figure_decodes_with_the_expected_size_and_content() {
    let dir = tmp_dir("plot");
    let path = dir.join("figure.png");
    let fig = figure(LONG);
    render_explanation_figure(&path, &fig).unwrap();
    let (w, h, px) = decode(&path);
    assert_eq!((w, h), figure_size(&fig).unwrap());
    assert_eq!(w, FIGURE_WIDTH);

    // Not blank: many distinct colours and a large pixel variance (a white page has 0).
    let n = px.len() as f64;
    let mean = px.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = px.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(var > 1000.0, "pixel variance {var}");
    let colours: std::collections::HashSet<&[u8]> = px.chunks(3).collect();
    assert!(colours.len() > 200, "{} colours", colours.len());

    // A longer explanation wraps onto more lines: the figure grows, the width does not.
    let short = figure("Two sounds.");
    let (ws, hs) = figure_size(&short).unwrap();
    assert_eq!(ws, w);
    assert!(hs < h, "short {hs} vs long {h}");

    // No temp file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_path_is_an_error_naming_it() {
    let dir = tmp_dir("plot-bad");
    let missing = dir.join("no/such/dir/figure.png");
    let err = render_explanation_figure(&missing, &figure("x")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
    // A directory in the way of the file.
    let err = render_explanation_figure(&dir, &figure("x")).unwrap_err();
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_data_is_an_error_not_a_panic() {
    let dir = tmp_dir("plot-malformed");
    let path = dir.join("figure.png");
    let mut fig = figure("x");
    fig.audios[1].logmel.pop();
    let msg = render_explanation_figure(&path, &fig)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("second.wav") && msg.contains("log-mel"),
        "{msg}"
    );

    let mut fig = figure("x");
    fig.audios[0].events[1].framewise[3] = f32::NAN;
    let msg = render_explanation_figure(&path, &fig)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("first.wav") && msg.contains("Dog"), "{msg}");

    let mut fig = figure("x");
    fig.audios.clear();
    assert!(render_explanation_figure(&path, &fig).is_err());
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn from_outputs_keeps_the_top_events_by_clip_probability() {
    use candle_core::{Device, Tensor};
    let (b, t, m, f, c) = (2, 5, 4, 6, 7);
    let labels: Vec<String> = (0..c).map(|k| format!("class {k}")).collect();
    let logmel = Tensor::arange(0f32, (b * t * m) as f32, &Device::Cpu)
        .unwrap()
        .reshape((b, t, m))
        .unwrap();
    // Frame-wise probability of class k in audio i at frame j: (i*100 + j*10 + k) / 1000.
    let fw: Vec<f32> = (0..b * f * c)
        .map(|n| {
            let (i, j, k) = (n / (f * c), n / c % f, n % c);
            (i * 100 + j * 10 + k) as f32 / 1000.0
        })
        .collect();
    let framewise = Tensor::from_vec(fw, (b, f, c), &Device::Cpu).unwrap();
    // Audio 0 ranks classes 3 > 6 > 0; audio 1 ranks 1 > 2 > 5.
    let clipwise = Tensor::from_vec(
        vec![
            0.5f32, 0.1, 0.2, 0.9, 0.0, 0.3, 0.7, //
            0.0, 0.8, 0.6, 0.1, 0.2, 0.4, 0.3,
        ],
        (b, c),
        &Device::Cpu,
    )
    .unwrap();
    let names = vec!["a.wav".to_string(), "b.wav".to_string()];
    let fig = ExplanationFigure::from_outputs(
        &names,
        &logmel,
        &framewise,
        &clipwise,
        &labels,
        vec!["text".into()],
        10.0,
    )
    .unwrap();
    assert_eq!(fig.audios.len(), 2);
    let a1 = &fig.audios[1];
    assert_eq!((a1.mel_frames, a1.mel_bins), (t, m));
    assert_eq!(a1.logmel[0], (t * m) as f32);
    let got: Vec<&str> = a1.events.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(got, ["class 1", "class 2", "class 5"]);
    assert_eq!(fig.audios[0].events[0].label, "class 3");
    assert_eq!(fig.audios[0].events.len(), TOP_EVENTS);
    assert_eq!(a1.events[0].clip_probability, 0.8);
    let want: Vec<f32> = (0..f).map(|j| (100 + j * 10 + 1) as f32 / 1000.0).collect();
    assert_eq!(a1.events[0].framewise, want);

    // Labels that do not match the model's classes are refused.
    let err = ExplanationFigure::from_outputs(
        &names,
        &logmel,
        &framewise,
        &clipwise,
        &labels[..c - 1],
        vec![],
        10.0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("labels"), "{err}");
}

#[test]
fn explain_cli_writes_the_plot() {
    let dir = tmp_dir("plot-cli");
    let out_path = dir.join("explain.png");
    let out = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .current_dir(root())
        .args([
            "explain",
            "tests/fixtures/htsat/clip_a.wav",
            "tests/fixtures/htsat/clip_b.wav",
            "--max-tokens",
            "10",
            "--plot",
            out_path.to_str().unwrap(),
        ])
        .args(tiny_model_args())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {err}");
    let (w, h, px) = decode(&out_path);
    assert_eq!(w, FIGURE_WIDTH);
    assert!(h > 0);
    assert!(px.chunks(3).any(|p| p != [255, 255, 255]));

    // An unwritable --plot path: exit 1, one line naming it.
    let bad = dir.join("missing/explain.png");
    let out = Command::new(env!("CARGO_BIN_EXE_adiff"))
        .current_dir(root())
        .args([
            "explain",
            "tests/fixtures/htsat/clip_a.wav",
            "tests/fixtures/htsat/clip_b.wav",
            "--max-tokens",
            "2",
            "--plot",
            bad.to_str().unwrap(),
        ])
        .args(tiny_model_args())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

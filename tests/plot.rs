//! `explain --plot`'s figure: rendered from synthetic data (no model) and decoded back, plus an
//! end-to-end run of `adiff explain --plot` on the tiny fixture model.

use std::path::Path;
use std::process::Command;

mod common;

use adiff::plot::{
    figure_size, render_explanation_figure, AudioPanel, EventTrack, ExplanationFigure,
    LogMelTimeline, FIGURE_WIDTH, TIMELINE_COLUMNS, TOP_EVENTS,
};
use common::{root, tiny_model_args};

fn tmp_dir(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("adiff-test-{name}"))
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

/// A pixel rectangle, `[x0, x1) x [y0, y1)`.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Rect {
    fn inset(self, d: u32) -> Rect {
        Rect {
            x0: self.x0 + d,
            y0: self.y0 + d,
            x1: self.x1 - d,
            y1: self.y1 - d,
        }
    }
}

/// Where `src/plot.rs` puts things (its layout constants: margin 24, title lines of 32, per
/// column a header of 40, a spectrogram of 330 and a probability plot of 250 with 70 for the
/// y labels, 50 for the x labels and 100 for the colour bar on the right, legend rows of 26,
/// columns 40 apart). The title's line count follows from the figure's height.
struct Layout {
    title_lines: u32,
    top: u32,
    col_x: Vec<u32>,
    col_w: u32,
}

impl Layout {
    fn new(w: u32, h: u32, panels: u32, legend_rows: u32) -> Layout {
        assert_eq!(w, FIGURE_WIDTH);
        let fixed = 24 + 24 + 40 + 330 + 250 + legend_rows * 26 + 24;
        assert_eq!((h - fixed) % 32, 0, "height {h}: not whole title lines");
        let title_lines = (h - fixed) / 32;
        let col_w = (w - 48 - 40 * (panels - 1)) / panels;
        Layout {
            title_lines,
            top: 24 + title_lines * 32 + 24,
            col_x: (0..panels).map(|i| 24 + i * (col_w + 40)).collect(),
            col_w,
        }
    }
    fn title_line(&self, i: u32) -> Rect {
        let y0 = 24 + i * 32;
        Rect {
            x0: 24,
            y0,
            x1: FIGURE_WIDTH - 24,
            y1: y0 + 32,
        }
    }
    fn header(&self, c: usize) -> Rect {
        let x = self.col_x[c];
        Rect {
            x0: x + 70,
            y0: self.top,
            x1: x + self.col_w - 100,
            y1: self.top + 40,
        }
    }
    /// The spectrogram's plotting area.
    fn spec(&self, c: usize) -> Rect {
        let x = self.col_x[c];
        Rect {
            x0: x + 70,
            y0: self.top + 40,
            x1: x + self.col_w - 100,
            y1: self.top + 40 + 330 - 50,
        }
    }
    fn colorbar(&self, c: usize) -> Rect {
        let s = self.spec(c);
        Rect {
            x0: s.x1 + 12,
            x1: s.x1 + 12 + 18,
            ..s
        }
    }
    /// The probability plot's plotting area.
    fn prob(&self, c: usize) -> Rect {
        let x = self.col_x[c];
        let y = self.top + 40 + 330;
        Rect {
            x0: x + 70,
            y0: y + 24,
            x1: x + self.col_w - 100,
            y1: y + 250 - 50,
        }
    }
    /// Legend row `k`: its line sample and its text.
    fn legend(&self, c: usize, k: u32) -> (Rect, Rect) {
        let (x, y) = (self.col_x[c] + 70, self.top + 40 + 330 + 250 + k * 26);
        let line = Rect {
            x0: x,
            y0: y + 13 - 2,
            x1: x + 36,
            y1: y + 13 + 3,
        };
        let text = Rect {
            x0: x + 36 + 12,
            y0: y,
            x1: self.col_x[c] + self.col_w,
            y1: y + 26,
        };
        (line, text)
    }
    /// The gap right of column `c` (and the figure's right margin after the last).
    fn gap_after(&self, c: usize, h: u32) -> Rect {
        let x0 = self.col_x[c] + self.col_w;
        Rect {
            x0,
            y0: self.top,
            x1: (x0 + 40).min(FIGURE_WIDTH),
            y1: h,
        }
    }
}

struct Image {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

impl Image {
    fn load(path: &Path) -> Image {
        let (w, h, px) = decode(path);
        Image { w, h, px }
    }
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }
    /// Fraction of the rectangle's pixels that satisfy `f`.
    fn share(&self, r: Rect, f: impl Fn([u8; 3]) -> bool) -> f64 {
        assert!(
            r.x1 <= self.w && r.y1 <= self.h && r.x0 < r.x1 && r.y0 < r.y1,
            "{r:?}"
        );
        let mut n = 0;
        for y in r.y0..r.y1 {
            for x in r.x0..r.x1 {
                n += usize::from(f(self.at(x, y)));
            }
        }
        n as f64 / f64::from((r.x1 - r.x0) * (r.y1 - r.y0))
    }
}

fn white(p: [u8; 3]) -> bool {
    p.iter().all(|&v| v >= 250)
}

/// Text and frames: dark grey to black.
fn dark(p: [u8; 3]) -> bool {
    p.iter().all(|&v| v < 110)
}

/// A colour-map pixel: clearly coloured (viridis has no grey).
fn coloured(p: [u8; 3]) -> bool {
    p.iter().max().unwrap() - p.iter().min().unwrap() > 30
}

fn near(c: [u8; 3]) -> impl Fn([u8; 3]) -> bool {
    move |p| p.iter().zip(c).all(|(&a, b)| a.abs_diff(b) <= 40)
}

const EVENT_RGB: [[u8; 3]; 3] = [[31, 119, 180], [255, 127, 14], [44, 160, 44]];

/// What every figure shows where: title text on each of its lines; per column a header, a
/// spectrogram filled with the colour map, a colour bar, a framed probability plot with curves
/// in the event colours, one legend row per event; white margins and column gaps.
fn check_layout(img: &Image, panels: u32, events: u32) -> Layout {
    let l = Layout::new(img.w, img.h, panels, events);
    assert!(l.title_lines >= 1);
    for i in 0..l.title_lines {
        let s = img.share(l.title_line(i), dark);
        assert!(s > 0.005, "title line {i}: {s} dark");
    }
    // (A glyph's bearing may reach a pixel or two into the margin.)
    let margins = [
        Rect {
            x0: 0,
            y0: 0,
            x1: 20,
            y1: img.h,
        },
        Rect {
            x0: img.w - 20,
            y0: 0,
            x1: img.w,
            y1: img.h,
        },
        Rect {
            x0: 0,
            y0: 0,
            x1: img.w,
            y1: 24,
        },
        Rect {
            x0: 0,
            y0: img.h - 24,
            x1: img.w,
            y1: img.h,
        },
    ];
    for r in margins {
        assert_eq!(img.share(r, white), 1.0, "margin {r:?} not blank");
    }
    for c in 0..panels as usize {
        let what = |part: &str| format!("panel {c}: {part}");
        let s = img.share(l.header(c), dark);
        assert!(s > 0.01, "{}: {s} dark", what("header"));
        let s = img.share(l.spec(c).inset(2), coloured);
        assert!(s > 0.99, "{}: {s} coloured", what("spectrogram"));
        let s = img.share(l.colorbar(c).inset(2), coloured);
        assert!(s > 0.99, "{}: {s} coloured", what("colour bar"));
        let prob = l.prob(c);
        // Framed: the y axis at the left edge; the x axis at the bottom (where the curves lie
        // on it near 0 they cover it).
        let left = Rect {
            x0: prob.x0 - 1,
            x1: prob.x0 + 1,
            ..prob
        };
        assert!(
            img.share(left, dark) > 0.4,
            "{}",
            what("probability y axis")
        );
        let bottom = Rect {
            y0: prob.y1 - 4,
            y1: prob.y1 + 1,
            ..prob
        };
        let on_axis = |p| dark(p) || EVENT_RGB.iter().any(|&c| near(c)(p));
        assert!(
            img.share(bottom, on_axis) > 0.18,
            "{}",
            what("probability x axis")
        );
        for k in 0..events {
            let colour = near(EVENT_RGB[k as usize]);
            let curves = Rect {
                x0: prob.x0 + 2,
                x1: prob.x1 - 2,
                y1: prob.y1 + 1,
                ..prob
            };
            let s = img.share(curves, &colour);
            assert!(
                s > 0.001,
                "{}: {s} in event {k}'s colour",
                what("probability")
            );
            let (line, text) = l.legend(c, k);
            let s = img.share(line, &colour);
            assert!(s > 0.5, "{}: {s}", what(&format!("legend line {k}")));
            let s = img.share(text, dark);
            assert!(s > 0.01, "{}: {s}", what(&format!("legend text {k}")));
        }
        let gap = l.gap_after(c, img.h);
        assert_eq!(
            img.share(gap, white),
            1.0,
            "{}",
            what("gap right of it not blank")
        );
    }
    l
}

#[test]
fn figure_layout_puts_each_panel_in_its_place() {
    let dir = tmp_dir("plot-layout");
    let path = dir.join("figure.png");
    let fig = figure(LONG);
    render_explanation_figure(&path, &fig).unwrap();
    let img = Image::load(&path);
    let l = check_layout(&img, 2, TOP_EVENTS as u32);
    assert!(l.title_lines >= 3, "{} title lines", l.title_lines);
    // Left panel is the first audio: its chirp sits at mel bin 64 * (t / 10 s + shift) (shift
    // 0 and 0.5), and its event k peaks at 0.95 - 0.25 k at (k + 1) / 4 + shift / 10 of the time.
    for (c, shift) in [(0usize, 0.0f64), (1, 0.5)] {
        let spec = l.spec(c);
        let (w, h) = (f64::from(spec.x1 - spec.x0), f64::from(spec.y1 - spec.y0));
        for t in [0.1, 0.25, 0.4] {
            let x = spec.x0 + (t * w) as u32;
            // The brightest pixel of the column (viridis' yellow end).
            let y = (spec.y0..spec.y1)
                .max_by_key(|&y| {
                    let p = img.at(x, y);
                    u32::from(p[0]) + u32::from(p[1])
                })
                .unwrap();
            let bin = ((t + shift) % 1.0) * 64.0;
            let want = f64::from(spec.y1) - (bin + 0.5) / 64.0 * h;
            assert!(
                (f64::from(y) - want).abs() <= 2.0 * h / 64.0,
                "panel {c}, t {t}: chirp at row {y}, expected {want:.0}"
            );
        }
        let prob = l.prob(c);
        let (w, h) = (f64::from(prob.x1 - prob.x0), f64::from(prob.y1 - prob.y0));
        for (k, &rgb) in EVENT_RGB.iter().enumerate().take(TOP_EVENTS) {
            let x = f64::from(prob.x0) + ((k as f64 + 1.0) / 4.0 + shift / 10.0) * w;
            let y = f64::from(prob.y1) - (0.95 - 0.25 * k as f64) * h;
            let around = Rect {
                x0: x as u32 - 4,
                y0: y as u32 - 4,
                x1: x as u32 + 5,
                y1: y as u32 + 5,
            };
            let s = img.share(around, near(rgb));
            assert!(
                s > 0.05,
                "panel {c}: event {k} has no peak near ({x:.0}, {y:.0})"
            );
        }
    }
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
    let msg = render_explanation_figure(&path, &fig)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no audio to draw"), "{msg}");
    assert!(!path.exists());
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
    assert!(
        err.to_string().contains(&format!(
            "{} labels but {c} framewise and {c} clipwise classes",
            c - 1
        )),
        "{err}"
    );
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
    // Both audios' panels, each with its events, under the explanation.
    check_layout(&Image::load(&out_path), 2, TOP_EVENTS as u32);

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
}

/// Frame spacing and half FFT window of the real front end (hop 320, FFT 1024, 32 kHz).
const FRAME_S: f64 = 0.01;
const EDGE_S: f64 = 0.016;
/// What the synthetic log-mels below put where no value should come from: the clip's repeat
/// past a short window, and a frame whose FFT reaches past the window's end.
const REPEAT: f32 = 1e6;
const EDGE: f32 = 1e5;

/// A window's clip log-mel as `LogMelTimeline::push` gets it (10 s: 1001 frames, 2 mel bins):
/// bin 0 holds the file time the frame is centred on (plus [`EDGE`] for a frame whose FFT
/// reaches past the window's end; [`REPEAT`] past the window), bin 1 is -50.
fn window_logmel(start: f64, end: f64) -> Vec<f32> {
    (0..1001)
        .flat_map(|f| {
            let t = f as f64 * FRAME_S;
            let v = if t >= end - start - 1e-9 {
                REPEAT
            } else if t + EDGE_S > end - start + 1e-9 {
                EDGE + (start + t) as f32
            } else {
                (start + t) as f32
            };
            [v, -50.0]
        })
        .collect()
}

/// The reader's windows of a file of `d` seconds: every `hop` while they fit, then one
/// ending at the file's end.
fn windows(d: f64, win: f64, hop: f64) -> Vec<(f64, f64)> {
    let mut w: Vec<(f64, f64)> = (0..)
        .map(|k| k as f64 * hop)
        .take_while(|s| s + win <= d + 1e-9)
        .map(|s| (s, s + win))
        .collect();
    if w.last().is_none_or(|l| l.1 < d - 1e-9) {
        w.push(((d - win).max(0.0), d));
    }
    w
}

fn timeline(d: f64, win: f64, hop: f64) -> AudioPanel {
    let mut t = LogMelTimeline::new(2, FRAME_S, EDGE_S);
    for (s, e) in windows(d, win, hop) {
        t.push(s, e, &window_logmel(s, e)).unwrap();
    }
    t.finish("x.wav".into(), d)
}

/// An hour of overlapping windows, 20 s of touching ones and one 5 s window: always
/// [`TIMELINE_COLUMNS`] columns, each holding the file time at its centre (to within its own
/// width), so every moment is taken once, in place, from a window that holds it whole, never
/// from a clip's repeat; only the file's very end keeps its edge frame (no window follows).
#[test]
fn timeline_takes_each_moment_once_from_a_window_that_holds_it_whole() {
    for (d, win, hop) in [(3600.0, 10.0, 7.0), (20.0, 10.0, 10.0), (5.0, 5.0, 5.0)] {
        let p = timeline(d, win, hop);
        assert_eq!((p.mel_frames, p.mel_bins), (TIMELINE_COLUMNS, 2));
        let col = d / TIMELINE_COLUMNS as f64;
        let touching = hop >= win;
        for c in 0..TIMELINE_COLUMNS {
            let (t0, t1) = (c as f64 * col, (c + 1) as f64 * col);
            let (v, other) = (f64::from(p.logmel[2 * c]), p.logmel[2 * c + 1]);
            assert!((other + 50.0).abs() < 1e-3, "{d} s, column {c}: {other}");
            // Where windows touch, the frame before each boundary has no later window to take
            // it from (as at the file's end).
            let ends = if touching {
                windows(d, win, hop).iter().map(|w| w.1).collect()
            } else {
                vec![d]
            };
            let edge_near = (ends.iter()).any(|&b| t0 <= b + FRAME_S && b - 2.0 * FRAME_S <= t1);
            if edge_near {
                continue;
            }
            let centre = (t0 + t1) / 2.0;
            assert!(
                (v - centre).abs() <= col.max(FRAME_S) + 1e-3,
                "{d} s, column {c} ({t0:.3}-{t1:.3} s): {v}"
            );
        }
    }
}

/// Windows with gaps between them (a hop longer than the window): the time no window heard
/// is NaN (drawn grey), the rest is filled.
#[test]
fn timeline_leaves_unheard_time_empty() {
    let p = timeline(20.0, 5.0, 8.0);
    let col = 20.0 / TIMELINE_COLUMNS as f64;
    for c in 0..TIMELINE_COLUMNS {
        let centre = (c as f64 + 0.5) * col;
        let heard = [(0.0, 5.0), (8.0, 13.0), (15.0, 20.0)]
            .iter()
            .any(|&(s, e)| s - col <= centre && centre <= e + col);
        let far = [(0.0, 5.0), (8.0, 13.0), (15.0, 20.0)]
            .iter()
            .all(|&(s, e)| centre < s - 2.0 * col || centre > e + 2.0 * col);
        let v = p.logmel[2 * c];
        if far {
            assert!(v.is_nan(), "column {c} at {centre:.3} s: {v}");
        } else if heard && [5.0, 13.0, 20.0].iter().all(|e| (centre - e).abs() > 0.1) {
            assert!(
                v.is_finite() && (f64::from(v) - centre).abs() < 2.0 * col,
                "column {c}: {v}"
            );
        }
    }
}

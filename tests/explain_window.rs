//! `explain --window` with `--plot` and `--align`, on the shipped demo model and long WAV files
//! built from the example clips: the figure draws both whole files with each window's
//! boundaries at the pixel columns its spans predict; `--align stretch` pairs a 20 s file with
//! a 40 s one end to end, each pair answered as `explain` answers its two clips; `--align
//! index` is the unchanged default.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_one_line_error, ok, root, write_pcm16_wav};
use serde_json::{json, Value};

/// PCM16 bytes of one 10 s, 32 kHz example clip.
const CLIP_BYTES: usize = 10 * 32_000 * 2;

fn adiff() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adiff"));
    // The shipped models of this tree, whatever the environment says.
    c.env_remove("ADIFF_MODELS").current_dir(root());
    c
}

fn explain(args: &[&str]) -> Output {
    adiff()
        .args(["explain", "--model", "demo", "--tier", "2"])
        .args(args)
        .output()
        .unwrap()
}

fn explain_json(args: &[&str]) -> Value {
    let out = ok(explain(&[args, &["--json"]].concat()));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The samples of an example clip (its RIFF `data` chunk, found by walking the chunks).
fn clip_pcm(name: &str) -> Vec<u8> {
    let b = std::fs::read(root().join("data/examples").join(name)).unwrap();
    let mut at = 12;
    loop {
        let size = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        if &b[at..at + 4] == b"data" {
            assert_eq!(
                size, CLIP_BYTES,
                "{name}: not a 10 s mono 32 kHz PCM16 clip"
            );
            return b[at + 8..at + 8 + size].to_vec();
        }
        at += 8 + size + size % 2;
    }
}

/// A = first, second (20 s); B = second, first, second, first (40 s), in a fresh folder.
struct Files {
    dir: PathBuf,
    a: PathBuf,
    b: PathBuf,
    pcm: [Vec<u8>; 2],
}

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("adiff-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (f, s) = (clip_pcm("demo_first.wav"), clip_pcm("demo_second.wav"));
        let pcm = [
            [f.clone(), s.clone()].concat(),
            [s.clone(), f.clone(), s, f].concat(),
        ];
        let (a, b) = (dir.join("a.wav"), dir.join("b.wav"));
        write_pcm16_wav(&a, &pcm[0]);
        write_pcm16_wav(&b, &pcm[1]);
        Files { dir, a, b, pcm }
    }
    fn paths(&self) -> [&str; 2] {
        [self.a.to_str().unwrap(), self.b.to_str().unwrap()]
    }
    /// Window `w` (10 s) of file `side`, cut out as a file of its own.
    fn cut(&self, side: usize, w: usize) -> PathBuf {
        let path = self.dir.join(format!("cut-{side}-{w}.wav"));
        write_pcm16_wav(&path, &self.pcm[side][w * CLIP_BYTES..(w + 1) * CLIP_BYTES]);
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn spans(v: &Value) -> Vec<Value> {
    v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| json!([w["audio1_s"], w["audio2_s"]]))
        .collect()
}

fn explanations(v: &Value) -> Vec<String> {
    v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["answers"][0]["explanation"].as_str().unwrap().to_string())
        .collect()
}

/// `--align stretch` on a 20 s file (2 windows) against a 40 s one (4): 4 pairs, window i of
/// the longer against window round(i / 3) of the shorter, whichever file comes first, each
/// answer exactly `explain`'s on the two windows cut out as files.
#[test]
fn align_stretch_pairs_the_windows_end_to_end() {
    let files = Files::new("window-stretch");
    let [a, b] = files.paths();
    let v = explain_json(&[a, b, "--window", "10", "--align", "stretch"]);
    assert_eq!(v["align"], "stretch");
    assert_eq!(v["duration_s"], json!([20.0, 40.0]));
    let short_of = [0, 0, 1, 1];
    let want: Vec<Value> = (0..4)
        .map(|i| {
            let s = short_of[i] as f64 * 10.0;
            let l = i as f64 * 10.0;
            json!([[s, s + 10.0], [l, l + 10.0]])
        })
        .collect();
    assert_eq!(spans(&v), want, "{v}");
    let got = explanations(&v);
    for (i, got) in got.iter().enumerate() {
        let (x, y) = (files.cut(0, short_of[i]), files.cut(1, i));
        let one = explain_json(&[x.to_str().unwrap(), y.to_str().unwrap()]);
        assert_eq!(
            got,
            one["answers"][0]["explanation"].as_str().unwrap(),
            "pair {i}"
        );
    }
    // Not a rule that gives the same pairs whatever the files: the demo model tells the pairs
    // (first, second) and (second, first) apart.
    assert_ne!(got[0], got[3]);

    // The longer file first: the same pairs, sides swapped.
    let swapped = explain_json(&[b, a, "--window", "10", "--align", "stretch"]);
    let want: Vec<Value> = want.iter().map(|p| json!([p[1], p[0]])).collect();
    assert_eq!(spans(&swapped), want);
    assert_eq!(swapped["duration_s"], json!([40.0, 20.0]));

    // Text output: one line per pair with its spans.
    let out = ok(explain(&[a, b, "--window", "10", "--align", "stretch"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (i, line) in lines.iter().enumerate() {
        let s = short_of[i] * 10;
        let l = i * 10;
        let head = format!(
            "[{s}.00-{}.00 s | {l}.00-{}.00 s] {}",
            s + 10,
            l + 10,
            got[i]
        );
        assert_eq!(*line, head);
    }
}

/// `--align index` is the default, unchanged: window i against window i, as many pairs as
/// the shorter file has; the same text with and without it, and with --plot.
#[test]
fn align_index_is_the_unchanged_default() {
    let files = Files::new("window-index");
    let [a, b] = files.paths();
    let text = |extra: &[&str]| {
        let out = ok(explain(&[&[a, b, "--window", "10"], extra].concat()));
        String::from_utf8(out.stdout).unwrap()
    };
    let plain = text(&[]);
    assert_eq!(plain, text(&["--align", "index"]));
    let fig = files.dir.join("fig.png");
    assert_eq!(plain, text(&["--plot", fig.to_str().unwrap()]));
    let v = explain_json(&[a, b, "--window", "10"]);
    assert_eq!(v["align"], "index");
    assert_eq!(
        spans(&v),
        vec![
            json!([[0.0, 10.0], [0.0, 10.0]]),
            json!([[10.0, 20.0], [10.0, 20.0]])
        ]
    );
    assert!(v.get("plot").is_none(), "{v}");
    let lines: Vec<String> = plain.lines().map(str::to_string).collect();
    let got = explanations(&v);
    assert_eq!(
        lines,
        vec![
            format!("[0.00-10.00 s | 0.00-10.00 s] {}", got[0]),
            format!("[10.00-20.00 s | 10.00-20.00 s] {}", got[1]),
        ]
    );

    // --align needs --window; --plot may not overwrite an input.
    let out = explain(&[a, b, "--align", "stretch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--window"));
    let before = std::fs::read(&files.a).unwrap();
    let out = explain(&[a, b, "--window", "10", "--plot", a]);
    assert_one_line_error(&out, "would overwrite an input");
    assert_eq!(std::fs::read(&files.a).unwrap(), before);
}

/// Decoded RGB8 PNG: (width, height, pixels).
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::fs::File::open(path).unwrap())
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight)
    );
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

// Where src/plot.rs puts a window figure's parts (its layout constants): margins of 24; per
// row a header of 40, a label strip of 26 and a spectrogram chart of 330 (50 of it x labels,
// 70 left of it y labels, 100 right of it for the colour bar), rows 24 apart; then the list,
// lines of 24.
const PLOT_X: std::ops::Range<u32> = 94..1476;
const ROW_STEP: u32 = 40 + 26 + 330 + 24;
const LIST_TOP: u32 = 24 + 2 * (40 + 26 + 330) + 24 + 24;
const LIST_LINE: u32 = 24;

/// Row `r`'s label strip and spectrogram plotting area (pixel rows).
fn strip_rows(r: u32) -> std::ops::Range<u32> {
    let top = 24 + r * ROW_STEP + 40;
    top..top + 26
}
fn spec_rows(r: u32) -> std::ops::Range<u32> {
    let top = 24 + r * ROW_STEP + 40 + 26;
    top..top + 330 - 50
}

/// The pixel column of time `t` on an axis of `d` seconds: the column whose time holds it.
fn column(t: f64, d: f64) -> u32 {
    let w = f64::from(PLOT_X.end - PLOT_X.start);
    (PLOT_X.start + (t / d * w).floor() as u32).min(PLOT_X.end - 1)
}

struct Image {
    w: u32,
    px: Vec<u8>,
}

impl Image {
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }
    fn share(
        &self,
        xs: std::ops::Range<u32>,
        ys: std::ops::Range<u32>,
        f: impl Fn([u8; 3]) -> bool,
    ) -> f64 {
        let n = (xs.len() * ys.len()) as f64;
        let hits = ys
            .flat_map(|y| xs.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| f(self.at(x, y)))
            .count();
        hits as f64 / n
    }
    /// Mean colour of each pixel row of `ys` over columns `xs`.
    fn profile(&self, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>) -> Vec<[f64; 3]> {
        ys.map(|y| {
            let mut m = [0.0; 3];
            for x in xs.clone() {
                for (m, v) in m.iter_mut().zip(self.at(x, y)) {
                    *m += f64::from(v) / xs.len() as f64;
                }
            }
            m
        })
        .collect()
    }
}

fn white(p: [u8; 3]) -> bool {
    p == [255, 255, 255]
}
fn dark(p: [u8; 3]) -> bool {
    p.iter().all(|&v| v < 110)
}

/// Mean absolute difference of two colour profiles.
fn distance(a: &[[f64; 3]], b: &[[f64; 3]]) -> f64 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .flat_map(|(p, q)| p.iter().zip(q).map(|(x, y)| (x - y).abs()))
        .sum();
    sum / (3 * a.len()) as f64
}

/// `--window 10 --align stretch --plot`: a figure of the promised size, reported in --json;
/// each file's row draws the whole file in order (the 20 s file's first half looks like the
/// 40 s file's second quarter, both the first example clip); white lines at exactly the pixel
/// columns of the window boundaries and nowhere else; each window numbered by its pairs; one
/// list line per pair.
#[test]
fn window_plot_draws_both_whole_files_with_the_windows_marked() {
    let files = Files::new("window-plot");
    let [a, b] = files.paths();
    let fig = files.dir.join("fig.png");
    let v = explain_json(&[
        a,
        b,
        "--window",
        "10",
        "--align",
        "stretch",
        "--plot",
        fig.to_str().unwrap(),
    ]);
    let (w, h, px) = decode(&fig);
    assert_eq!(
        v["plot"],
        json!({"path": fig.to_str().unwrap(), "width": w, "height": h})
    );
    // Four short answers: one list line each.
    assert_eq!((w, h), (1600, LIST_TOP + 4 * LIST_LINE + 24));
    let img = Image { w, px };
    for k in 0..4 {
        let y = LIST_TOP + k * LIST_LINE;
        assert!(
            img.share(24..800, y..y + LIST_LINE, dark) > 0.01,
            "list line {k}"
        );
    }
    assert_eq!(img.share(0..w, h - 24..h, white), 1.0, "bottom margin");

    // (duration, window boundaries in s, window labels at their starts) per row.
    let rows = [
        (
            20.0,
            vec![0.0, 10.0, 20.0],
            vec![(0.0, "1-2"), (10.0, "3-4")],
        ),
        (
            40.0,
            vec![0.0, 10.0, 20.0, 30.0, 40.0],
            vec![(0.0, "1"), (10.0, "2"), (20.0, "3"), (30.0, "4")],
        ),
    ];
    for (r, (d, bounds, labels)) in rows.iter().enumerate() {
        let ys = spec_rows(r as u32);
        let lines: Vec<u32> = bounds.iter().map(|&t| column(t, *d)).collect();
        for x in PLOT_X {
            let s = img.share(x..x + 1, ys.clone(), white);
            if lines.contains(&x) {
                assert_eq!(s, 1.0, "row {r}: column {x} should be a boundary line");
            } else {
                assert!(s < 0.5, "row {r}: column {x} is {s} white, not a boundary");
            }
        }
        // Each label beside its window's start, in the strip above.
        for &(t, label) in labels {
            let x = column(t, *d);
            let width = 9 * label.len() as u32 + 4;
            let s = img.share(x + 2..x + 2 + width, strip_rows(r as u32), dark);
            assert!(s > 0.02, "row {r}: label {label} at {x}: {s} dark");
            // Nothing in the strip halfway through the window.
            let mid = column(t + 5.0, *d);
            let s = img.share(mid..mid + width, strip_rows(r as u32), dark);
            assert_eq!(s, 0.0, "row {r}: strip at {mid} not blank");
        }
        // Everything between the lines is spectrogram colour.
        let coloured = |p: [u8; 3]| p.iter().max().unwrap() - p.iter().min().unwrap() > 30;
        for pair in lines.windows(2) {
            let s = img.share(pair[0] + 2..pair[1] - 1, ys.clone(), coloured);
            assert!(s > 0.99, "row {r}: {pair:?} {s} coloured");
        }
    }
    // The whole files, in order: A = first, second; B = second, first, second, first.
    let part = |r: u32, d: f64, t0: f64| {
        img.profile(column(t0, d) + 4..column(t0 + 10.0, d) - 4, spec_rows(r))
    };
    let (a_first, a_second) = (part(0, 20.0, 0.0), part(0, 20.0, 10.0));
    let (b_second, b_first) = (part(1, 40.0, 0.0), part(1, 40.0, 10.0));
    let apart = distance(&a_first, &a_second);
    assert!(apart > 20.0, "the two clips look alike: {apart}");
    for (same, what) in [
        (distance(&a_first, &b_first), "first"),
        (distance(&a_second, &b_second), "second"),
        (distance(&b_first, &part(1, 40.0, 30.0)), "first (B's 4th)"),
    ] {
        assert!(same < apart / 4.0, "{what}: {same} vs {apart} apart");
    }
}

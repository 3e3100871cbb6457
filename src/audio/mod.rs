//! Audio front end: decode any supported file, mix to mono, resample, cut a fixed-length clip and
//! compute HTSAT's log-mel spectrogram. A file is decoded packet by packet: a crop
//! ([`load_clip_span`]) or a run of windows ([`WindowReader`]) holds only the samples it needs,
//! so an hour-long file costs no more memory than a 10 s one.

pub mod clip;
pub mod config;
pub mod decode;
pub mod mel;
pub mod resample;
pub mod rfft;

use std::path::Path;

pub use clip::CropMode;

use crate::audio::config::AudioConfig;
use crate::error::{AdiffError, Result};

/// Loads one model input: decode -> mono (channel mean) -> resample to `cfg.sample_rate` ->
/// exactly `cfg.clip_samples()` samples (tiled if short, cropped per `crop` if long).
pub fn load_clip(path: &Path, cfg: &AudioConfig, crop: CropMode) -> Result<Vec<f32>> {
    Ok(load_clip_span(path, cfg, crop)?.0)
}

/// The part of a file a clip holds, in seconds of the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipSpan {
    /// The file's duration; None when `--crop start` stopped reading a file whose header does
    /// not give an exact length (it is then longer than the clip).
    pub duration_s: Option<f64>,
    /// Start and end of the samples the clip was cut from (for a file shorter than the clip,
    /// the whole file, tiled).
    pub start_s: f64,
    pub end_s: f64,
}

impl ClipSpan {
    /// Whether the clip leaves part of the file out.
    pub fn is_crop(&self) -> bool {
        self.duration_s
            .is_none_or(|d| self.end_s - self.start_s < d)
    }
}

/// Input samples kept on each side of a crop's window before resampling, per unit of the rate
/// ratio: several sinc filter lengths, so that the window's edges (where the resampler sees
/// zeros instead of the rest of the file) fall outside the clip.
const RESAMPLE_MARGIN: u64 = 4 * resample::SINC_LEN as u64;

/// How output samples (at the model's rate) map onto a file's input samples, for cutting a
/// window out of the file before resampling it.
#[derive(Debug, Clone, Copy)]
struct Grid {
    from: u32,
    to: u32,
    /// [`RESAMPLE_MARGIN`] scaled by the rate ratio.
    margin: u64,
    /// One period of the two rates, in input and in output samples.
    p_in: u64,
    p_out: u64,
}

impl Grid {
    fn new(from: u32, to: u32) -> Self {
        let g = gcd(from, to);
        Self {
            from,
            to,
            margin: RESAMPLE_MARGIN * u64::from(from.div_ceil(to)).max(1),
            p_in: u64::from(from / g),
            p_out: u64::from(to / g),
        }
    }

    /// Input frames that cover `n` output samples, rounded up.
    fn input_for(&self, n: u64) -> u64 {
        (n as u128 * self.from as u128).div_ceil(self.to as u128) as u64
    }

    /// Output samples of `n` input frames.
    fn len_out(&self, n: u64) -> u64 {
        resample::output_len(n as usize, self.from, self.to) as u64
    }

    /// The input range [lo, hi) that output samples [start, start + len) need (capped at the
    /// file's length when known), and the output index of input `lo`. `lo` is on a whole period
    /// of the two rates, so that the range's resampled samples fall on the whole file's grid.
    fn window(&self, start: u64, len: u64, len_in: Option<u64>) -> (u64, u64, u64) {
        let lo = self.input_for(start).saturating_sub(self.margin) / self.p_in * self.p_in;
        let hi = self.input_for(start + len) + self.margin;
        (
            lo,
            len_in.map_or(hi, |n| hi.min(n)),
            lo / self.p_in * self.p_out,
        )
    }
}

/// [`load_clip`], and where in the file the clip lies. Only the samples the clip needs are
/// held: a file longer than the clip is decoded packet by packet and everything outside the
/// window (plus a resampling margin) is dropped as it goes, so memory does not grow with the
/// file's length. The window is the one the whole file would give: `--crop start` stops
/// decoding after it; `center` and `random` take the length from a lossless header, or else
/// from a first decoding pass that only counts. The clip equals the whole-file path's exactly
/// at the model's own rate, and up to the resampler's edge effects (kept outside the clip by
/// the margin) otherwise.
pub fn load_clip_span(
    path: &Path,
    cfg: &AudioConfig,
    crop: CropMode,
) -> Result<(Vec<f32>, ClipSpan)> {
    load_source_clip_span(&AudioSource::File(path.to_path_buf()), cfg, crop)
}

/// Where audio comes from: a file, or a file's bytes held in memory (an upload to `adiff
/// serve`), with the name errors give it (its extension, if any, hints the container).
#[derive(Debug, Clone)]
pub enum AudioSource {
    File(std::path::PathBuf),
    Memory {
        name: std::path::PathBuf,
        bytes: std::sync::Arc<[u8]>,
    },
}

impl AudioSource {
    /// The name errors give: the file's path, or the upload's name.
    pub fn name(&self) -> &Path {
        match self {
            Self::File(p) => p,
            Self::Memory { name, .. } => name,
        }
    }

    fn open(&self) -> Result<decode::Stream> {
        match self {
            Self::File(p) => decode::Stream::open(p),
            Self::Memory { name, bytes } => decode::Stream::open_bytes(name, bytes.clone()),
        }
    }
}

/// [`load_clip_span`] from a file or from bytes in memory.
pub fn load_source_clip_span(
    source: &AudioSource,
    cfg: &AudioConfig,
    crop: CropMode,
) -> Result<(Vec<f32>, ClipSpan)> {
    let path = source.name();
    let target = cfg.clip_samples();
    let to = cfg.sample_rate;
    let mut stream = source.open()?;
    let from = stream.sample_rate()?;
    let grid = Grid::new(from, to);
    // The input length, when the crop's position needs it.
    let len_in = match crop {
        CropMode::Start => None,
        _ => Some(match stream.exact_frames() {
            Some(n) => n,
            None => count_samples(source)?,
        }),
    };
    // The input window [lo, hi) and the output index its first sample lands on.
    let (lo, hi, out_base, offset) = match len_in {
        Some(len) if grid.len_out(len) > target as u64 => {
            let offset = clip::crop_offset(grid.len_out(len) as usize, target, crop) as u64;
            let (lo, hi, base) = grid.window(offset, target as u64, Some(len));
            (lo, hi, base, offset)
        }
        // Whole file (short: tiled), or the start.
        _ => (0, grid.window(0, target as u64, None).1, 0, 0),
    };
    // Packets are decoded straight into `window`; those wholly before `lo` are dropped as they
    // come (memory stays one packet plus the window), the rest is trimmed to [lo, hi) once.
    let mut window = Vec::new();
    let mut read = 0u64; // input frames seen
    let mut dropped = 0u64; // input frames before window[0]
    let mut ended = false;
    while read < hi {
        let before = window.len();
        if !stream.next_into(&mut window)? {
            ended = true;
            break;
        }
        read += (window.len() - before) as u64;
        if read <= lo {
            window.clear();
            dropped = read;
        }
    }
    if lo > dropped {
        window.drain(..(lo - dropped) as usize);
    }
    window.truncate((hi - lo) as usize);
    // A short file is read to its end; was it shorter than the clip?
    let total = if ended { Some(read) } else { len_in };
    if total.is_some_and(|n| grid.len_out(n) <= target as u64) {
        // Short: the whole file (all of it is in `window`, which started at 0), tiled.
        let window_len = window.len();
        let resampled = resample::resample_owned(window, from, to)
            .map_err(|e| AdiffError::audio(path, e.to_string()))?;
        if resampled.is_empty() {
            return Err(AdiffError::audio(
                path,
                format!("too short: {window_len} samples at {from} Hz leave nothing at {to} Hz"),
            ));
        }
        let duration_s = window_len as f64 / f64::from(from);
        let clip = clip::fixed_length_owned(resampled, target, crop);
        let span = ClipSpan {
            duration_s: Some(duration_s),
            start_s: 0.0,
            end_s: duration_s,
        };
        return finite(path, clip).map(|c| (c, span));
    }
    let mut clip = resample::resample_owned(window, from, to)
        .map_err(|e| AdiffError::audio(path, e.to_string()))?;
    let local = (offset - out_base) as usize;
    if clip.len() < local + target {
        return Err(AdiffError::audio(
            path,
            format!("decoded {read} sample frames, fewer than the header's count: truncated file"),
        ));
    }
    clip.truncate(local + target);
    clip.drain(..local);
    // The duration: known when the file was read to its end or its length was counted;
    // `--crop start` stops early, and then knows it from a lossless header only.
    let duration_frames = total.or(stream.exact_frames());
    let span = ClipSpan {
        duration_s: duration_frames.map(|n| n as f64 / f64::from(from)),
        start_s: offset as f64 / f64::from(to),
        end_s: (offset + target as u64) as f64 / f64::from(to),
    };
    finite(path, clip).map(|c| (c, span))
}

/// One window of a file read by [`for_each_window`].
#[derive(Debug, Clone)]
pub struct Window {
    /// The model's clip: the window's samples at `cfg.sample_rate`, repeated to the clip's length
    /// when the window is shorter than it (as a short file is).
    pub clip: Vec<f32>,
    /// Where the window lies in the file (`duration_s` is None until the file's end is known).
    pub span: ClipSpan,
}

/// Cuts a whole file into windows of `window_s` seconds every `hop_s` seconds and calls `f`
/// with each in time order (see [`WindowReader`]). Returns the file's duration in seconds.
pub fn for_each_window(
    path: &Path,
    cfg: &AudioConfig,
    window_s: f64,
    hop_s: f64,
    mut f: impl FnMut(Window) -> Result<()>,
) -> Result<f64> {
    let mut reader = WindowReader::open(path, cfg, window_s, hop_s)?;
    while let Some(w) = reader.next_window()? {
        f(w)?;
    }
    Ok(reader.duration_s().unwrap_or(0.0))
}

/// Windows of `window_s` seconds every `hop_s` seconds of a whole file, read in one pass that
/// holds only the samples of the current window (plus `hop_s` and a resampling margin).
/// Windows start at 0, `hop_s`, `2 hop_s`, ... while they fit in the file; if the last of those
/// ends before the file does, one more window ends at the file's end, so that every sample is
/// heard. A file no longer than a window is one window holding the whole file. Each window's
/// samples equal the whole file's resampled samples at its position (exactly at the model's
/// rate; up to the resampler's edge effects, kept outside the window by the margin, otherwise).
/// `window_s` may not exceed the model's clip.
pub struct WindowReader {
    path: std::path::PathBuf,
    stream: decode::Stream,
    grid: Grid,
    clip_samples: usize,
    /// Window and hop in output samples.
    win: u64,
    hop: u64,
    /// Input samples from input index `buf_at` on; `read` input samples decoded so far.
    buf: Vec<f32>,
    buf_at: u64,
    read: u64,
    /// Output start of the next regular window, and the end of the last window handed out.
    next: u64,
    last_end: Option<u64>,
    /// The file's length in input samples, once its end was reached.
    len_in: Option<u64>,
    queue: std::collections::VecDeque<Window>,
    finished: bool,
}

impl WindowReader {
    pub fn open(path: &Path, cfg: &AudioConfig, window_s: f64, hop_s: f64) -> Result<Self> {
        let bad = |m: String| AdiffError::Invalid(m);
        if !(window_s > 0.0 && window_s <= cfg.duration_s) {
            return Err(bad(format!(
                "--window {window_s}: give a window of more than 0 and at most the model's {} s \
                 clip",
                cfg.duration_s
            )));
        }
        if !(hop_s > 0.0 && hop_s.is_finite()) {
            return Err(bad(format!(
                "--hop {hop_s}: give a hop of more than 0 seconds"
            )));
        }
        let to = cfg.sample_rate;
        let stream = decode::Stream::open(path)?;
        let from = stream.sample_rate()?;
        Ok(Self {
            path: path.to_path_buf(),
            stream,
            grid: Grid::new(from, to),
            clip_samples: cfg.clip_samples(),
            win: (window_s * f64::from(to)).round() as u64,
            hop: ((hop_s * f64::from(to)).round() as u64).max(1),
            buf: Vec::new(),
            buf_at: 0,
            read: 0,
            next: 0,
            last_end: None,
            len_in: None,
            queue: std::collections::VecDeque::new(),
            finished: false,
        })
    }

    /// The file's duration, once its end was reached.
    pub fn duration_s(&self) -> Option<f64> {
        self.len_in.map(|n| n as f64 / f64::from(self.grid.from))
    }

    /// The next window, or None after the last.
    pub fn next_window(&mut self) -> Result<Option<Window>> {
        loop {
            if let Some(w) = self.queue.pop_front() {
                return Ok(Some(w));
            }
            if self.finished {
                return Ok(None);
            }
            self.advance()?;
        }
    }

    fn len_out(&self, n: u64) -> u64 {
        self.grid.len_out(n)
    }

    /// Input range [lo, hi) that the output window starting at `start` needs, and the output
    /// index of input `lo` (see [`Grid::window`]).
    fn needs(&self, start: u64) -> (u64, u64, u64) {
        self.grid.window(start, self.win, self.len_in)
    }

    /// Decodes one packet and queues the windows it completes (all of them at the end).
    fn advance(&mut self) -> Result<()> {
        let mut chunk = Vec::new();
        let more = self.stream.next_into(&mut chunk)?;
        self.buf.extend_from_slice(&chunk);
        self.read += chunk.len() as u64;
        if !more {
            self.len_in = Some(self.read);
        }
        // Regular windows whose input is complete.
        loop {
            if let Some(n) = self.len_in {
                if self.next + self.win > self.len_out(n) {
                    break;
                }
            } else if self.read < self.needs(self.next).1 {
                break;
            }
            let start = self.next;
            self.cut(start)?;
            self.last_end = Some(start + self.win);
            self.next += self.hop;
            // Keep the input from the earliest window still to come: the next regular one, or
            // one ending at the file's end (which starts after the window just cut).
            let keep = self.needs(self.next.min(start + 1)).0;
            if keep > self.buf_at {
                let drop = ((keep - self.buf_at) as usize).min(self.buf.len());
                self.buf.drain(..drop);
                self.buf_at = keep;
            }
        }
        let Some(n) = self.len_in else {
            return Ok(());
        };
        self.finished = true;
        let len_out = self.len_out(n);
        match self.last_end {
            // No longer than a window: the whole file (all of it is still in `buf`, which starts
            // at 0), repeated to the clip.
            None => {
                let resampled = self.resample(&self.buf)?;
                if resampled.is_empty() {
                    return Err(AdiffError::audio(
                        &self.path,
                        format!(
                            "too short: {n} samples at {} Hz leave nothing at {} Hz",
                            self.grid.from, self.grid.to
                        ),
                    ));
                }
                let clip = clip::fixed_length(&resampled, self.clip_samples, CropMode::Start);
                self.queue.push_back(Window {
                    clip: finite(&self.path, clip)?,
                    span: ClipSpan {
                        duration_s: self.duration_s(),
                        start_s: 0.0,
                        end_s: len_out as f64 / f64::from(self.grid.to),
                    },
                });
            }
            Some(end) if end < len_out => self.cut(len_out - self.win)?,
            Some(_) => {}
        }
        Ok(())
    }

    fn resample(&self, input: &[f32]) -> Result<Vec<f32>> {
        resample::resample(input, self.grid.from, self.grid.to)
            .map_err(|e| AdiffError::audio(&self.path, e.to_string()))
    }

    /// Queues the window starting at output sample `start`.
    fn cut(&mut self, start: u64) -> Result<()> {
        let (lo, hi, base) = self.needs(start);
        let end = hi.min(self.buf_at + self.buf.len() as u64);
        let input = &self.buf[(lo - self.buf_at) as usize..(end - self.buf_at) as usize];
        let resampled = self.resample(input)?;
        let local = (start - base) as usize;
        let real = resampled
            .get(local..local + self.win as usize)
            .ok_or_else(|| {
                AdiffError::audio(&self.path, "decoded fewer samples than the window needs")
            })?;
        // A window shorter than the clip is repeated to fill it, as a short file is.
        let clip = clip::fixed_length(real, self.clip_samples, CropMode::Start);
        let sr = f64::from(self.grid.to);
        self.queue.push_back(Window {
            clip: finite(&self.path, clip)?,
            span: ClipSpan {
                duration_s: self.duration_s(),
                start_s: start as f64 / sr,
                end_s: (start + self.win) as f64 / sr,
            },
        });
        Ok(())
    }
}

/// Decoding already rejects NaN/Inf; this re-checks the resampler's output, the last step
/// before the model, so that no non-finite value can reach the spectrogram.
fn finite(path: &Path, clip: Vec<f32>) -> Result<Vec<f32>> {
    if let Some(i) = clip.iter().position(|s| !s.is_finite()) {
        return Err(AdiffError::audio(
            path,
            format!("non-finite sample at clip position {i} after resampling"),
        ));
    }
    Ok(clip)
}

/// Mono sample frames of the whole file, counted by decoding it (nothing kept).
fn count_samples(source: &AudioSource) -> Result<u64> {
    let mut stream = source.open()?;
    let (mut n, mut chunk) = (0u64, Vec::new());
    loop {
        chunk.clear();
        if !stream.next_into(&mut chunk)? {
            return Ok(n);
        }
        n += chunk.len() as u64;
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// How many windows [`WindowReader`] cuts from a file of `len_out` samples at the model's rate
/// with windows of `win` samples every `hop`: the regular windows that fit, one more ending at
/// the file's end when the last of those ends before it, and one for a file shorter than a
/// window.
fn windows_in(len_out: u64, win: u64, hop: u64) -> u64 {
    if len_out < win {
        return 1;
    }
    let regular = (len_out - win) / hop + 1;
    let last_end = (regular - 1) * hop + win;
    regular + u64::from(last_end < len_out)
}

impl WindowReader {
    /// The file's window count and its duration in seconds, before its windows are read (for
    /// pairing the windows of two files of different lengths): from a lossless header's exact
    /// length, else from a first decoding pass that only counts (as `--crop center` does).
    pub fn count(&self) -> Result<(u64, f64)> {
        let n = match self.stream.exact_frames() {
            Some(n) => n,
            None => count_samples(&AudioSource::File(self.path.clone()))?,
        };
        let windows = windows_in(self.grid.len_out(n), self.win, self.hop);
        Ok((windows, n as f64 / f64::from(self.grid.from)))
    }
}

//! HTSAT's log-mel front end, computed with a real FFT instead of the reference's STFT-as-convolution.
//!
//! Reference (torchlibrosa `Spectrogram` + `LogmelFilterBank`): periodic Hann window of `n_fft`
//! samples, centred frames with **reflect** padding of `n_fft/2` on each side, power spectrum
//! `re^2 + im^2`, slaney-normalised slaney-scale mel filters (librosa `filters.mel(htk=False)`),
//! then `10*log10(max(mel, amin))` with no reference offset and no `top_db` clipping.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::audio::config::{AudioConfig, MelScale};
use crate::audio::rfft::LowBinsFft;
use crate::error::{AdiffError, Result};

/// Computes `[frames, n_mels]` log-mel spectrograms for fixed-length clips.
///
/// The window, the FFT plan and the mel matrix are built once and reused for every clip.
#[derive(Clone)]
pub struct LogMelFrontEnd {
    cfg: AudioConfig,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    /// `[n_bins, n_mels]`, row-major (same layout as the checkpoint's `melW`).
    mel_matrix: Vec<f32>,
    /// Per mel band, its first FFT bin with a non-zero weight and the weights from there to its
    /// last: a triangular filter spans a few bins and none reaches above `fmax`, so the
    /// projection runs over those bins only (in ascending bin order, as a dense sum would add
    /// them: the sums are bit-identical, only exact zeros are skipped).
    mel_filters: Vec<(usize, Vec<f32>)>,
    /// The bins the mel bands read (`0..used`) when they all lie in the lowest quarter: the
    /// real FFT's post-processing then runs for those bins only (bit-identical, see
    /// [`crate::audio::rfft`]).
    low: Option<LowBinsFft>,
}

impl LogMelFrontEnd {
    /// Front end with the filterbank `cfg.mel_scale` names: librosa's
    /// `filters.mel(htk=False, norm="slaney")` by default.
    pub fn new(cfg: &AudioConfig) -> Self {
        let (sr, n_fft, n_mels) = (cfg.sample_rate as f64, cfg.n_fft, cfg.n_mels);
        let mel = match cfg.mel_scale {
            MelScale::Slaney => slaney_mel_matrix(sr, n_fft, n_mels, cfg.fmin, cfg.fmax),
            MelScale::Log => log_filterbank(sr, n_fft, n_mels, cfg.fmin, cfg.fmax),
        };
        Self::with_mel_matrix_unchecked(cfg, mel)
    }

    /// Front end using a mel matrix taken from a checkpoint (`logmel_extractor.melW`, `[n_bins, n_mels]`).
    pub fn with_mel_matrix(cfg: &AudioConfig, mel_w: &Tensor) -> Result<Self> {
        let want = (cfg.num_bins(), cfg.n_mels);
        if mel_w.dims() != [want.0, want.1] {
            return Err(AdiffError::Invalid(format!(
                "melW has shape {:?}, expected [{}, {}]",
                mel_w.dims(),
                want.0,
                want.1
            )));
        }
        let mel = mel_w
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::with_mel_matrix_unchecked(cfg, mel))
    }

    fn with_mel_matrix_unchecked(cfg: &AudioConfig, mel_matrix: Vec<f32>) -> Self {
        let n = cfg.n_fft;
        // Periodic Hann (scipy `get_window("hann", n, fftbins=True)`): 0.5 - 0.5 cos(2 pi k / n).
        let window = (0..n)
            .map(|k| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / n as f64).cos()) as f32)
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let mels = cfg.n_mels.max(1);
        let bins = mel_matrix.len() / mels;
        let mel_filters = (0..mels)
            .map(|m| {
                let column: Vec<f32> = (0..bins).map(|b| mel_matrix[b * mels + m]).collect();
                let nonzero = |w: &f32| *w != 0.0;
                match (
                    column.iter().position(nonzero),
                    column.iter().rposition(nonzero),
                ) {
                    (Some(lo), Some(hi)) => (lo, column[lo..=hi].to_vec()),
                    _ => (0, Vec::new()),
                }
            })
            .collect::<Vec<_>>();
        let low = LowBinsFft::new(n, used_bins(&mel_filters));
        Self {
            cfg: cfg.clone(),
            window,
            fft,
            mel_matrix,
            mel_filters,
            low,
        }
    }

    pub fn config(&self) -> &AudioConfig {
        &self.cfg
    }

    /// The `[n_bins, n_mels]` mel matrix in use, row-major.
    pub fn mel_matrix(&self) -> &[f32] {
        &self.mel_matrix
    }

    /// Largest absolute difference between a checkpoint's STFT convolution kernels
    /// (`conv_real`/`conv_imag`, `[n_bins, 1, n_fft]`, i.e. `window * cos` and `-window * sin`)
    /// and the windowed DFT this front end computes. Every 8th bin is checked, which is enough to
    /// catch a different window or size at a fraction of the cost.
    pub fn stft_kernel_error(&self, conv_real: &Tensor, conv_imag: &Tensor) -> Result<f32> {
        let (n, bins) = (self.cfg.n_fft, self.cfg.num_bins());
        for t in [conv_real, conv_imag] {
            if t.dims() != [bins, 1, n] {
                return Err(AdiffError::Invalid(format!(
                    "STFT kernel has shape {:?}, expected [{bins}, 1, {n}]",
                    t.dims()
                )));
            }
        }
        let re = conv_real
            .to_dtype(candle_core::DType::F32)?
            .reshape((bins, n))?
            .to_vec2::<f32>()?;
        let im = conv_imag
            .to_dtype(candle_core::DType::F32)?
            .reshape((bins, n))?
            .to_vec2::<f32>()?;
        let mut worst = 0f32;
        for k in (0..bins).step_by(8).chain(std::iter::once(bins - 1)) {
            for j in 0..n {
                // Reduce k*j mod n first so the angle stays accurate in f64.
                let angle = 2.0 * std::f64::consts::PI * ((k * j) % n) as f64 / n as f64;
                let w = self.window[j] as f64;
                worst = worst
                    .max((re[k][j] as f64 - w * angle.cos()).abs() as f32)
                    .max((im[k][j] as f64 + w * angle.sin()).abs() as f32);
            }
        }
        Ok(worst)
    }

    /// Number of frames produced for `n` samples (centred frames).
    pub fn num_frames(&self, n: usize) -> usize {
        1 + n / self.cfg.hop_length
    }

    /// Power spectrogram `[frames][n_bins]` (row-major, flattened) of one clip.
    pub fn power_spectrogram(&self, samples: &[f32]) -> Result<Vec<f32>> {
        let bins = self.cfg.num_bins();
        let mut out = Vec::new();
        self.frames(samples, bins, |spectrum| {
            out.extend(spectrum[..bins].iter().map(|c| c.re * c.re + c.im * c.im));
        })?;
        Ok(out)
    }

    /// Calls `each` with the spectrum of every frame in turn (at least its first `bins` bins):
    /// reflect padding, the window, one real FFT per frame.
    fn frames(
        &self,
        samples: &[f32],
        bins: usize,
        mut each: impl FnMut(&[Complex<f32>]),
    ) -> Result<()> {
        let n_fft = self.cfg.n_fft;
        let pad = n_fft / 2;
        if samples.len() <= pad {
            return Err(AdiffError::Invalid(format!(
                "clip of {} samples is too short for reflect padding of {pad}",
                samples.len()
            )));
        }
        let mut edge = Vec::new();
        let low = self.low.as_ref().filter(|l| l.bins() >= bins);
        // The windowed frame for realfft (the low-bins FFT windows as it reads).
        let mut input = match low {
            Some(_) => Vec::new(),
            None => self.fft.make_input_vec(),
        };
        let mut low_scratch = low.map(|l| l.make_scratch());
        let mut spectrum = match low {
            Some(l) => vec![Complex::new(0.0, 0.0); l.bins()],
            None => self.fft.make_output_vec(),
        };
        let mut scratch = match low {
            Some(_) => Vec::new(),
            None => self.fft.make_scratch_vec(),
        };
        for f in 0..self.num_frames(samples.len()) {
            let frame = padded_frame(samples, pad, f * self.cfg.hop_length, n_fft, &mut edge);
            match (low, low_scratch.as_mut()) {
                // The window is applied as the low-bins FFT reads the frame.
                (Some(l), Some(ls)) => l.process_windowed(frame, &self.window, &mut spectrum, ls),
                _ => {
                    for ((x, &s), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                        *x = s * w;
                    }
                    self.fft
                        .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                        .map_err(|e| AdiffError::Invalid(format!("fft: {e}")))?
                }
            }
            each(&spectrum);
        }
        Ok(())
    }

    /// Log-mel spectrogram `[frames][n_mels]` (row-major, flattened) of one clip, in dB.
    ///
    /// Frame by frame, and only the power of the bins some mel band reads (the demo's 4 kHz top
    /// band reads a quarter of them): the same sums as over [`Self::power_spectrogram`], without
    /// its `[frames, num_bins]` matrix (4 MB per 10 s clip for the demo), which made the front
    /// end a quarter of `adiff serve`'s CPU time under load. The band sums run over
    /// [`MEL_FRAMES`] frames at once, one frame per lane, each lane adding its products in
    /// ascending bin order exactly as a sum for one frame does (bit-identical, tested): one
    /// frame's band sum is a chain of dependent additions, and 16 chains side by side fill the
    /// vector units instead of waiting on each other.
    pub fn log_mel(&self, samples: &[f32]) -> Result<Vec<f32>> {
        let mels = self.cfg.n_mels;
        let amin = self.cfg.log_amin as f32;
        let used = used_bins(&self.mel_filters);
        // [used bins, MEL_FRAMES] power of the block's frames, lane f = frame f of the block.
        let mut power = vec![0f32; used * MEL_FRAMES];
        let mut in_block = 0;
        let mut out = Vec::with_capacity(self.num_frames(samples.len()) * mels);
        let filters = &self.mel_filters;
        self.frames(samples, used, |spectrum| {
            for (b, c) in spectrum[..used].iter().enumerate() {
                power[b * MEL_FRAMES + in_block] = c.re * c.re + c.im * c.im;
            }
            in_block += 1;
            if in_block == MEL_FRAMES {
                push_log_mels(filters, &power, in_block, amin, &mut out);
                in_block = 0;
            }
        })?;
        if in_block > 0 {
            push_log_mels(filters, &power, in_block, amin, &mut out);
        }
        Ok(out)
    }

    /// Log-mel spectrograms of a batch of equal-length clips as a `[B, frames, n_mels]` tensor.
    pub fn log_mel_batch(&self, clips: &[Vec<f32>], device: &Device) -> Result<Tensor> {
        let Some(first) = clips.first() else {
            return Err(AdiffError::Invalid("no audio clips given".into()));
        };
        let frames = self.num_frames(first.len());
        let mut data = Vec::with_capacity(clips.len() * frames * self.cfg.n_mels);
        for clip in clips {
            if clip.len() != first.len() {
                return Err(AdiffError::Invalid(
                    "clips in a batch must have the same length".into(),
                ));
            }
            data.extend(self.log_mel(clip)?);
        }
        Ok(Tensor::from_vec(
            data,
            (clips.len(), frames, self.cfg.n_mels),
            device,
        )?)
    }
}

/// Frames whose band sums [`LogMelFrontEnd::log_mel`] computes side by side.
const MEL_FRAMES: usize = 16;

/// Appends the log-mels `[frames][n_mels]` of the first `frames` lanes of `power`
/// (`[bins, MEL_FRAMES]`): `o[f, m] = 10 log10(max(sum_b p[b, f] W[b, m], amin))` over band
/// m's bins only, each lane's sum in ascending bin order (no fused multiply-add: Rust does not
/// contract `a * b + c`).
fn push_log_mels(
    filters: &[(usize, Vec<f32>)],
    power: &[f32],
    frames: usize,
    amin: f32,
    out: &mut Vec<f32>,
) {
    let mels = filters.len();
    let base = out.len();
    out.resize(base + frames * mels, 0.0);
    for (m, (lo, w)) in filters.iter().enumerate() {
        let mut sum = [0f32; MEL_FRAMES];
        for (b, &wb) in w.iter().enumerate() {
            let p = &power[(lo + b) * MEL_FRAMES..(lo + b + 1) * MEL_FRAMES];
            for (s, &p) in sum.iter_mut().zip(p) {
                *s += p * wb;
            }
        }
        for (f, s) in sum[..frames].iter().enumerate() {
            out[base + f * mels + m] = 10.0 * s.max(amin).log10();
        }
    }
}

/// The FFT bins `0..used` some band of `filters` reads.
fn used_bins(filters: &[(usize, Vec<f32>)]) -> usize {
    filters
        .iter()
        .map(|(lo, w)| lo + w.len())
        .max()
        .unwrap_or(0)
}

/// Samples `start..start + n` of `x` reflect-padded by `pad` on each side ([`reflect_pad`]),
/// without padding the whole clip: a frame inside the clip is a slice of it, one that reaches
/// into the padding is built in `edge`.
fn padded_frame<'a>(
    x: &'a [f32],
    pad: usize,
    start: usize,
    n: usize,
    edge: &'a mut Vec<f32>,
) -> &'a [f32] {
    let len = x.len();
    if start >= pad && start + n <= pad + len {
        return &x[start - pad..start - pad + n];
    }
    edge.clear();
    edge.extend((start..start + n).map(|p| {
        if p < pad {
            x[pad - p]
        } else if p < pad + len {
            x[p - pad]
        } else {
            x[len - 2 - (p - pad - len)]
        }
    }));
    edge
}

/// numpy/torch `reflect` padding (the reference [`padded_frame`] is tested against) (the edge sample is not repeated).
#[cfg(test)]
fn reflect_pad(x: &[f32], pad: usize) -> Vec<f32> {
    let n = x.len();
    let mut out = Vec::with_capacity(n + 2 * pad);
    out.extend((1..=pad).rev().map(|i| x[i]));
    out.extend_from_slice(x);
    out.extend((0..pad).map(|i| x[n - 2 - i]));
    out
}

/// Slaney mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// librosa `filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")`, transposed to
/// `[n_bins, n_mels]` row-major. Computed in f64 like librosa, stored as f32 like torchlibrosa.
pub fn slaney_mel_matrix(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Vec<f32> {
    let (mmin, mmax) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(mmin + (mmax - mmin) * i as f64 / (n_mels + 1) as f64))
        .collect();
    triangles(sr, n_fft, &edges)
}

/// Triangular bands as [`slaney_mel_matrix`]'s (slaney area normalisation), their edges and
/// centres spaced evenly in `ln(f)` from `fmin` to `fmax` (`fmin > 0`).
pub fn log_filterbank(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Vec<f32> {
    let (lmin, lmax) = (fmin.ln(), fmax.ln());
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| (lmin + (lmax - lmin) * i as f64 / (n_mels + 1) as f64).exp())
        .collect();
    triangles(sr, n_fft, &edges)
}

/// `[n_bins, n_mels]` triangles over the FFT bins: band `m` rises from `edges[m]` to
/// `edges[m + 1]` and falls to `edges[m + 2]`, scaled to area 1 (librosa's `norm="slaney"`).
fn triangles(sr: f64, n_fft: usize, edges: &[f64]) -> Vec<f32> {
    let n_mels = edges.len() - 2;
    let mel_f = edges;
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins).map(|i| i as f64 * sr / n_fft as f64).collect();
    let mut w = vec![0f32; n_bins * n_mels];
    for m in 0..n_mels {
        let (lo, ce, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (b, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / (ce - lo);
            let upper = (hi - f) / (hi - ce);
            let v = lower.min(upper).max(0.0);
            w[b * n_mels + m] = (v * enorm) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_pad_matches_numpy() {
        // np.pad([1,2,3,4,5], 2, mode="reflect") == [3,2,1,2,3,4,5,4,3]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            reflect_pad(&x, 2),
            vec![3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0]
        );
    }

    /// The blocked, low-bins `log_mel` against the plain route (every bin of realfft's
    /// spectrum, one frame at a time, a dense sum over all bins in ascending order), bit for
    /// bit: the demo's front end (log bands, the low-bins FFT) and a full-size one (slaney
    /// bands to 14 kHz, the full FFT), over frame counts that end in a partial block.
    #[test]
    fn log_mel_is_bit_identical_to_the_plain_route() {
        let demo = AudioConfig {
            sample_rate: 32000,
            duration_s: 1.0,
            n_fft: 4096,
            hop_length: 640,
            n_mels: 32,
            fmin: 50.0,
            fmax: 4000.0,
            log_amin: 1e-10,
            mel_scale: MelScale::Log,
        };
        let full = AudioConfig {
            n_fft: 1024,
            hop_length: 320,
            n_mels: 64,
            fmin: 50.0,
            fmax: 14000.0,
            mel_scale: MelScale::Slaney,
            ..demo.clone()
        };
        for (cfg, seconds) in [(&demo, 1.3), (&full, 0.7)] {
            let fe = LogMelFrontEnd::new(cfg);
            let mut state = 7u64;
            let n = (seconds * cfg.sample_rate as f64) as usize;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let got = fe.log_mel(&x).unwrap();
            let bins = cfg.num_bins();
            let power = fe.power_spectrogram(&x).unwrap();
            let frames = power.len() / bins;
            assert!(
                !frames.is_multiple_of(MEL_FRAMES),
                "the test wants a partial block"
            );
            let (mels, w) = (cfg.n_mels, fe.mel_matrix());
            assert_eq!(got.len(), frames * mels);
            for f in 0..frames {
                for m in 0..mels {
                    let mut sum = 0f32;
                    for b in 0..bins {
                        sum += power[f * bins + b] * w[b * mels + m];
                    }
                    let want = 10.0 * sum.max(cfg.log_amin as f32).log10();
                    assert_eq!(
                        got[f * mels + m].to_bits(),
                        want.to_bits(),
                        "frame {f} band {m}"
                    );
                }
            }
        }
    }

    /// Every frame, at the edges and inside, is the slice of the whole padded clip.
    #[test]
    fn padded_frames_are_slices_of_the_reflect_padded_clip() {
        for (len, n, hop) in [(9, 8, 2), (5, 8, 1), (1000, 64, 7), (65, 128, 16)] {
            let pad = n / 2;
            let x: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let padded = reflect_pad(&x, pad);
            let mut edge = Vec::new();
            for start in (0..=padded.len() - n).step_by(hop) {
                let got = padded_frame(&x, pad, start, n, &mut edge).to_vec();
                assert_eq!(
                    got,
                    padded[start..start + n],
                    "len {len} n {n} start {start}"
                );
            }
        }
    }

    #[test]
    fn mel_scale_round_trips() {
        for hz in [50.0, 500.0, 999.0, 1000.0, 4000.0, 14000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
    }

    /// The demo's front end: 32 kHz, 4096-point FFT, 32 bands over 50 Hz - 4 kHz.
    const DEMO: (f64, usize, usize, f64, f64) = (32000.0, 4096, 32, 50.0, 4000.0);

    #[test]
    fn log_bands_are_geometric_slaney_triangles() {
        let (sr, n_fft, n, lo, hi) = DEMO;
        let w = log_filterbank(sr, n_fft, n, lo, hi);
        // Edges from a constant ratio (powf, not the exp of evenly spaced logs the code uses).
        let ratio = (hi / lo).powf(1.0 / (n + 1) as f64);
        let edges: Vec<f64> = (0..n + 2).map(|i| lo * ratio.powi(i as i32)).collect();
        let bins = n_fft / 2 + 1;
        for b in 0..bins {
            let f = b as f64 * sr / n_fft as f64;
            for m in 0..n {
                let (l, c, h) = (edges[m], edges[m + 1], edges[m + 2]);
                let tri = ((f - l) / (c - l)).min((h - f) / (h - c)).max(0.0);
                let want = tri * 2.0 / (h - l);
                let got = w[b * n + m] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * want.max(1e-3),
                    "bin {b} band {m}: {got} vs {want}"
                );
            }
        }
    }

    /// Frequency (Hz) of the FFT bin where band `m` peaks.
    fn centre(w: &[f32], n: usize, sr: f64, n_fft: usize, m: usize) -> f64 {
        let bins = n_fft / 2 + 1;
        let b = (0..bins)
            .max_by(|&i, &j| w[i * n + m].total_cmp(&w[j * n + m]))
            .unwrap();
        b as f64 * sr / n_fft as f64
    }

    #[test]
    fn log_bands_sample_a_low_chord_more_finely_than_slaney_bands() {
        // The lowest synthetic chord (crate::data::synthetic: root 150 Hz, ratios 1, 1.25, 1.5)
        // spans 150-225 Hz: three log bands peak inside it (one per partial, about), one slaney
        // band does (its bands are ~69 Hz apart below 1 kHz, as wide as the whole chord's span).
        let (sr, n_fft, n, lo, hi) = DEMO;
        let inside = |w: &[f32]| {
            (0..n)
                .filter(|&m| (150.0..=225.0).contains(&centre(w, n, sr, n_fft, m)))
                .count()
        };
        assert!(inside(&log_filterbank(sr, n_fft, n, lo, hi)) >= 3);
        assert!(inside(&slaney_mel_matrix(sr, n_fft, n, lo, hi)) <= 1);
    }
}

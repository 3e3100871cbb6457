//! Band-limited sample-rate conversion (rubato's windowed-sinc resampler).
//!
//! The reference uses `torchaudio.transforms.Resample` (a windowed sinc as well); rubato with a long
//! filter gives the same band-limited result up to the filters' transition bands, which lie above
//! 0.95 x the lower Nyquist frequency, i.e. above what HTSAT's mel bank (fmax 14 kHz) looks at.

use rubato::{
    calculate_cutoff, Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::error::{AdiffError, Result};

/// Sinc filter length in input samples: 256 taps with a Blackman-Harris^2 window reach well over
/// 100 dB stop-band attenuation, far below 16-bit quantisation noise.
pub const SINC_LEN: usize = 256;
/// Window of the sinc; Blackman-Harris^2 trades a wider transition band for the best stop band.
const WINDOW: WindowFunction = WindowFunction::BlackmanHarris2;
/// Number of precomputed sinc phases between two input samples. With cubic interpolation between
/// phases the phase error of 256 phases is negligible next to the filter's own error, and the
/// table (256 x 256 floats = 256 KiB) stays cheap to build once per call.
const OVERSAMPLING: usize = 256;
/// Input frames handed to rubato per call: large enough to amortise the per-call overhead, small
/// enough that the zero-padded tail of a short clip costs little.
const CHUNK: usize = 1024;

/// Largest number of leading outputs [`alignment`] may drop to cancel rubato's fractional offset.
const ALIGN_SEARCH: usize = 4096;
/// An alignment must beat the best one so far by this many input samples to replace it, so that
/// the smallest `skip` wins among (numerically) equal residuals.
const ALIGN_TOLERANCE: f64 = 1e-9;

/// [`resample`] taking the samples by value: at equal rates they come back as they are, with
/// no copy.
pub fn resample_owned(samples: Vec<f32>, from_hz: u32, to_hz: u32) -> Result<Vec<f32>> {
    if from_hz == to_hz && from_hz != 0 {
        return Ok(samples);
    }
    resample(&samples, from_hz, to_hz)
}

/// Resamples a mono waveform from `from_hz` to `to_hz`.
///
/// The output has `round(len * to_hz / from_hz)` samples and is time-aligned with the input: sample
/// `n` of the output is the band-limited input evaluated at time `n / to_hz`. The filter delay is
/// removed and the tail is flushed with zeros, so nothing is lost at either end. Equal rates return
/// a copy of the input.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>> {
    if from_hz == 0 || to_hz == 0 {
        return Err(AdiffError::Invalid(format!(
            "resample: sample rates must be positive (got {from_hz} Hz -> {to_hz} Hz)"
        )));
    }
    if from_hz == to_hz {
        return Ok(samples.to_vec());
    }
    let out_len = output_len(samples.len(), from_hz, to_hz);
    if out_len == 0 {
        return Ok(Vec::new());
    }

    let ratio = to_hz as f64 / from_hz as f64;
    let params = SincInterpolationParameters {
        sinc_len: SINC_LEN,
        // The highest cutoff (~0.95 of Nyquist for this length and window) whose transition band
        // still ends at Nyquist, so nothing aliases; rubato scales it by the ratio when downsampling.
        f_cutoff: calculate_cutoff(SINC_LEN, WINDOW),
        oversampling_factor: OVERSAMPLING,
        interpolation: SincInterpolationType::Cubic,
        window: WINDOW,
    };
    // The ratio is fixed, so the allowed relative ratio change is 1 (none).
    let mut resampler = SincFixedIn::<f32>::new(ratio, 1.0, params, CHUNK, 1)
        .map_err(|e| AdiffError::Invalid(format!("resample {from_hz} Hz -> {to_hz} Hz: {e}")))?;

    // rubato evaluates output `n` at input time `n * T + lead` (T = from/to); pad `pad` zeros in
    // front and drop `skip` outputs so that output `k` lands on input time `k * T`.
    let (pad, skip) = alignment(from_hz, to_hz);
    let needed = skip + out_len;
    let mut out = Vec::with_capacity(needed + resampler.output_frames_max());
    let mut chunk_in = vec![vec![0.0f32; CHUNK]];
    let mut chunk_out = resampler.output_buffer_allocate(true);
    // Position in the virtual input `[0; pad] ++ samples ++ [0; ...]`; the trailing zeros flush
    // the filter's tail.
    let mut pos = 0;
    while out.len() < needed {
        fill_chunk(&mut chunk_in[0], samples, pad, pos);
        pos += CHUNK;
        let (_, produced) = resampler
            .process_into_buffer(&chunk_in, &mut chunk_out, None)
            .map_err(|e| {
                AdiffError::Invalid(format!("resample {from_hz} Hz -> {to_hz} Hz: {e}"))
            })?;
        out.extend_from_slice(&chunk_out[0][..produced]);
    }
    out.drain(..skip);
    out.truncate(out_len);
    Ok(out)
}

/// Copies virtual input frames `pos..pos + buf.len()` of `[0; pad] ++ samples ++ [0; ...]` into `buf`.
fn fill_chunk(buf: &mut [f32], samples: &[f32], pad: usize, pos: usize) {
    buf.fill(0.0);
    let end = pos + buf.len();
    // Overlap of [pos, end) with the real samples, which occupy [pad, pad + len).
    let lo = pos.max(pad);
    let hi = end.min(pad + samples.len());
    if lo < hi {
        buf[lo - pos..hi - pos].copy_from_slice(&samples[lo - pad..hi - pad]);
    }
}

/// Leading zeros and dropped outputs that cancel rubato's time offset.
///
/// `SincFixedIn` starts with its read index at `-sinc_len / 2` and advances it by `T = from / to`
/// before each output; its windowed-sinc table puts phase `s` at `s + 1` sub-steps. Together,
/// output `n` is the band-limited input at time `n * T + lead` with `lead = T - 1 + 1/OVERSAMPLING`
/// input samples (checked by the click and sine-phase tests). With `pad` zeros in front and the
/// first `skip` outputs dropped, output `k` sits at `k * T + (skip * T + lead - pad)`; we pick the
/// smallest `skip` (below [`ALIGN_SEARCH`]) that makes that residual nearly zero. `skip * T` is
/// periodic modulo 1 with period `to / gcd(from, to)`, so for common rates (period 320 for
/// 44.1 kHz -> 32 kHz) the residual is below a thousandth of an input sample.
fn alignment(from_hz: u32, to_hz: u32) -> (usize, usize) {
    let t = from_hz as f64 / to_hz as f64;
    let lead = t - 1.0 + 1.0 / OVERSAMPLING as f64;
    let mut best = (0usize, 0usize, f64::INFINITY);
    for skip in 0..ALIGN_SEARCH {
        let offset = skip as f64 * t + lead;
        let pad = offset.round().max(0.0);
        let residual = (offset - pad).abs();
        if residual < best.2 - ALIGN_TOLERANCE {
            best = (pad as usize, skip, residual);
        }
    }
    (best.0, best.1)
}

/// `round(len * to / from)` in integer arithmetic (halves round up), without overflow.
pub fn output_len(len: usize, from_hz: u32, to_hz: u32) -> usize {
    let num = len as u128 * to_hz as u128;
    let den = from_hz as u128;
    ((2 * num + den) / (2 * den)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Time offset, in input samples, of a resampled sine relative to the ideal one (least-squares
    /// phase fit over the middle half, away from the edges).
    fn sine_offset(from_hz: u32, to_hz: u32, freq: f64) -> f64 {
        let len = from_hz as usize / 2;
        let x: Vec<f32> = (0..len)
            .map(|k| (2.0 * PI * freq * k as f64 / from_hz as f64).sin() as f32)
            .collect();
        let y = resample(&x, from_hz, to_hz).unwrap();
        let (mut ss, mut sc, mut cc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (n, &v) in y.iter().enumerate().take(3 * y.len() / 4).skip(y.len() / 4) {
            let w = 2.0 * PI * freq * n as f64 / to_hz as f64;
            let (s, c) = w.sin_cos();
            ss += s * s;
            sc += s * c;
            cc += c * c;
            ys += v as f64 * s;
            yc += v as f64 * c;
        }
        let det = ss * cc - sc * sc;
        let a = (ys * cc - yc * sc) / det;
        let b = (yc * ss - ys * sc) / det;
        // y = sin(w + phi) = cos(phi) sin(w) + sin(phi) cos(w)
        let phi = b.atan2(a);
        phi / (2.0 * PI * freq) * from_hz as f64
    }

    #[test]
    fn output_is_time_aligned() {
        for &(from, to) in &[
            (44_100u32, 32_000u32),
            (48_000, 32_000),
            (16_000, 32_000),
            (22_050, 32_000),
            (8_000, 32_000),
            (96_000, 32_000),
        ] {
            let off = sine_offset(from, to, 1000.0);
            println!(
                "{from}->{to}: offset {off:.5} input samples, align {:?}",
                alignment(from, to)
            );
            assert!(off.abs() < 0.01, "{from}->{to}: offset {off} input samples");
        }
    }

    #[test]
    fn output_length_rounds() {
        assert_eq!(output_len(44_100, 44_100, 32_000), 32_000);
        assert_eq!(output_len(3, 48_000, 32_000), 2);
        assert_eq!(resample(&[0.5; 3], 48_000, 32_000).unwrap().len(), 2);
        assert!(resample(&[], 48_000, 32_000).unwrap().is_empty());
        assert_eq!(
            resample(&[0.1, -0.2], 32_000, 32_000).unwrap(),
            vec![0.1, -0.2]
        );
        assert!(resample(&[1.0], 48_000, 0).is_err());
    }
}

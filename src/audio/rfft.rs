//! The lowest bins of a real FFT, bit for bit what `realfft` computes for them, for the cost of
//! those bins only.
//!
//! Tensors: frame and window `[n]` real samples, output `[bins]` complex, `bins <= n/4`.
//!
//! A real FFT of even length `n` is a complex FFT `Z` of length `n/2` over the samples taken in
//! pairs, then a post-processing pass that builds each bin `X[k]` from `Z[k]`, `Z[n/2-k]` and a
//! twiddle. `realfft` runs that pass over all `n/2+1` bins, in scalar code: for the demo's
//! 4096-point frames it cost as much as the complex FFT itself (8% of `adiff serve`'s CPU under
//! load), while the demo's mel bands (up to 4 kHz of 16) read only the lowest quarter of the
//! bins. This runs the same complex FFT (same planner, same plan) and the same post-processing
//! expressions, in the same order, for bins `0..bins` only: the results are bit-identical
//! (tested against `realfft` below).

use std::sync::Arc;

use realfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// Bins `0..bins` of the real FFT of length `n`.
#[derive(Clone)]
pub struct LowBinsFft {
    n: usize,
    bins: usize,
    /// The complex FFT of length `n/2`, planned as `realfft` plans it.
    fft: Arc<dyn Fft<f32>>,
    /// `twiddles[k - 1]` for bin `k` in `1..bins`: `realfft`'s own values,
    /// `0.5 * exp(-2 pi i k / n)` rounded from f64.
    twiddles: Vec<Complex<f32>>,
}

/// Reusable buffers for [`LowBinsFft::process`].
pub struct LowBinsScratch {
    pairs: Vec<Complex<f32>>,
    z: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl LowBinsFft {
    /// None when the shortcut does not apply: `n` odd or not a multiple of 4, or `bins` above
    /// `n/4` (the post-processing of a bin past `n/4` is `realfft`'s mirrored formula; a caller
    /// needing those bins runs the full real FFT).
    pub fn new(n: usize, bins: usize) -> Option<Self> {
        if n == 0 || !n.is_multiple_of(4) || bins > n / 4 {
            return None;
        }
        let fft = FftPlanner::<f32>::new().plan_fft_forward(n / 2);
        let twiddles = (1..bins.max(1))
            .map(|k| {
                let angle = -2f64 * std::f64::consts::PI / n as f64 * k as f64;
                Complex::new(angle.cos() as f32, angle.sin() as f32) * 0.5f32
            })
            .collect();
        Some(Self {
            n,
            bins,
            fft,
            twiddles,
        })
    }

    /// Number of bins computed.
    pub fn bins(&self) -> usize {
        self.bins
    }

    pub fn make_scratch(&self) -> LowBinsScratch {
        LowBinsScratch {
            pairs: vec![Complex::new(0.0, 0.0); self.n / 2],
            z: vec![Complex::new(0.0, 0.0); self.n / 2],
            scratch: vec![Complex::new(0.0, 0.0); self.fft.get_outofplace_scratch_len()],
        }
    }

    /// `out[k] = X[k]` for `k < bins`, where `X` is the real FFT of `frame * window`
    /// (elementwise, `[n]` each), the window applied as the frame is read into the FFT's input.
    /// Panics on mis-sized slices (callers size them from `self`).
    pub fn process_windowed(
        &self,
        frame: &[f32],
        window: &[f32],
        out: &mut [Complex<f32>],
        s: &mut LowBinsScratch,
    ) {
        assert!(
            frame.len() == self.n && window.len() == self.n,
            "LowBinsFft frame length"
        );
        for ((z, p), w) in s
            .pairs
            .iter_mut()
            .zip(frame.chunks_exact(2))
            .zip(window.chunks_exact(2))
        {
            *z = Complex::new(p[0] * w[0], p[1] * w[1]);
        }
        self.finish(out, s);
    }

    /// The complex FFT of `s.pairs` and the post-processing of bins `0..bins` into `out`.
    fn finish(&self, out: &mut [Complex<f32>], s: &mut LowBinsScratch) {
        assert!(out.len() >= self.bins, "LowBinsFft output length");
        if self.bins == 0 {
            return;
        }
        self.fft
            .process_outofplace_with_scratch(&mut s.pairs, &mut s.z, &mut s.scratch);
        let z = &s.z;
        let half_n = self.n / 2;
        // Bin 0: the sum of the first value's parts (realfft's first element).
        out[0] = Complex::new(z[0].re + z[0].im, 0.0);
        let half = 0.5f32;
        for k in 1..self.bins {
            let (a, b, tw) = (z[k], z[half_n - k], self.twiddles[k - 1]);
            // realfft's expressions, term for term (no fused multiply-add: same rounding).
            let sum = a + b;
            let diff = a - b;
            let twiddled_re_sum = sum * tw.re;
            let twiddled_im_sum = sum * tw.im;
            let twiddled_re_diff = diff * tw.re;
            let twiddled_im_diff = diff * tw.im;
            let half_sum_re = half * sum.re;
            let half_diff_im = half * diff.im;
            let output_twiddled_real = twiddled_re_sum.im + twiddled_im_diff.re;
            let output_twiddled_im = twiddled_im_sum.im - twiddled_re_diff.re;
            out[k] = Complex::new(
                half_sum_re + output_twiddled_real,
                half_diff_im + output_twiddled_im,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use realfft::RealFftPlanner;

    /// Bit-identical to realfft's bins 0..bins, for the demo's and a smaller length.
    #[test]
    fn low_bins_match_realfft_bit_for_bit() {
        for (n, bins) in [(4096, 1024), (4096, 513), (1024, 200), (8, 2), (8, 1)] {
            let fast = LowBinsFft::new(n, bins).unwrap();
            let full = RealFftPlanner::<f32>::new().plan_fft_forward(n);
            let mut state = 12345u64 ^ n as u64;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            let mut want = full.make_output_vec();
            full.process(&mut x.clone(), &mut want).unwrap();
            let mut got = vec![Complex::new(f32::NAN, f32::NAN); bins];
            // A window of ones: x * 1 is x exactly.
            let ones = vec![1f32; n];
            fast.process_windowed(&x, &ones, &mut got, &mut fast.make_scratch());
            for k in 0..bins {
                assert_eq!(
                    (got[k].re.to_bits(), got[k].im.to_bits()),
                    (want[k].re.to_bits(), want[k].im.to_bits()),
                    "n {n}, bin {k}: {:?} vs {:?}",
                    got[k],
                    want[k]
                );
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_do_exactly() {
        assert!(LowBinsFft::new(4096, 1025).is_none());
        assert!(LowBinsFft::new(4098, 10).is_none());
        assert!(LowBinsFft::new(0, 0).is_none());
    }
}

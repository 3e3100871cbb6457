//! Cut a waveform to the model's fixed clip length.
//!
//! Mirrors the reference's `load_audio_into_tensor`: a clip no longer than the target is tiled
//! (`repeat(ceil(target / len))`) and then sliced to `[:target]`; a longer clip is cropped. The
//! reference crops at `random.randrange(len - target)`; we default to a deterministic start or
//! centre crop so that the same file always gives the same description, and offer a seeded random
//! crop with the reference's offset range (`0..len - target`, upper bound excluded).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where a clip longer than the target length is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropMode {
    /// Keep the first `target` samples.
    Start,
    /// Keep the middle `target` samples (offset `(len - target) / 2`, rounded down).
    Center,
    /// Offset drawn uniformly from `0..len - target` with a `StdRng` seeded by `seed`, like the
    /// reference's `random.randrange`; the same seed always gives the same crop.
    Random { seed: u64 },
}

/// Returns exactly `target` samples: tiled-then-trimmed when `samples.len() <= target`, cropped
/// according to `mode` otherwise.
///
/// An empty input has nothing to tile, so it yields `target` zeros (silence); callers that treat
/// an empty waveform as an error (as [`crate::audio::load_clip`] does) check before calling.
pub fn fixed_length(samples: &[f32], target: usize, mode: CropMode) -> Vec<f32> {
    let len = samples.len();
    if len == 0 {
        return vec![0.0; target];
    }
    if len <= target {
        // np.tile / torch.repeat then [:target]: whole copies followed by a prefix of the clip.
        let mut out = Vec::with_capacity(target);
        while out.len() < target {
            let take = (target - out.len()).min(len);
            out.extend_from_slice(&samples[..take]);
        }
        return out;
    }
    let offset = crop_offset(len, target, mode);
    samples[offset..offset + target].to_vec()
}

/// [`fixed_length`] taking the samples by value: a clip already `target` long comes back as it
/// is, with no copy.
pub fn fixed_length_owned(samples: Vec<f32>, target: usize, mode: CropMode) -> Vec<f32> {
    if samples.len() == target {
        return samples;
    }
    fixed_length(&samples, target, mode)
}

/// Where [`fixed_length`] starts the crop of a `len`-sample waveform longer than `target`.
pub fn crop_offset(len: usize, target: usize, mode: CropMode) -> usize {
    let slack = len.saturating_sub(target);
    match mode {
        _ if slack == 0 => 0,
        CropMode::Start => 0,
        CropMode::Center => slack / 2,
        CropMode::Random { seed } => StdRng::seed_from_u64(seed).random_range(0..slack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_short_clip_like_np_tile() {
        let x = [1.0, 2.0, 3.0];
        assert_eq!(
            fixed_length(&x, 8, CropMode::Start),
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]
        );
        assert_eq!(fixed_length(&x, 3, CropMode::Center), x.to_vec());
    }

    #[test]
    fn crops_long_clip() {
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        assert_eq!(
            fixed_length(&x, 4, CropMode::Start),
            vec![0.0, 1.0, 2.0, 3.0]
        );
        assert_eq!(
            fixed_length(&x, 4, CropMode::Center),
            vec![3.0, 4.0, 5.0, 6.0]
        );
        let a = fixed_length(&x, 4, CropMode::Random { seed: 7 });
        assert_eq!(a, fixed_length(&x, 4, CropMode::Random { seed: 7 }));
    }
}

//! Facts about the device a model runs on that pick its dtype and batch size: a CUDA GPU's
//! compute capability (bf16 needs 8.0, Ampere) and its free memory. Without the `cuda` feature,
//! or on the CPU, there are none.

use candle_core::Device;

use crate::error::Result;

/// Compute capability `(major, minor)` of a CUDA device; None on the CPU.
pub fn cuda_capability(device: &Device) -> Result<Option<(i32, i32)>> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        let stream = cuda.cuda_stream();
        let cap = stream
            .context()
            .compute_capability()
            .map_err(|e| crate::error::AdiffError::Invalid(format!("{device:?}: {e}")))?;
        return Ok(Some(cap));
    }
    let _ = device;
    Ok(None)
}

/// `(free, total)` bytes of a CUDA device's memory; None on the CPU.
pub fn cuda_memory(device: &Device) -> Result<Option<(usize, usize)>> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        let stream = cuda.cuda_stream();
        let mem = stream
            .context()
            .mem_get_info()
            .map_err(|e| crate::error::AdiffError::Invalid(format!("{device:?}: {e}")))?;
        return Ok(Some(mem));
    }
    let _ = device;
    Ok(None)
}

/// Whether a GPU of compute capability `cap` runs bf16 (Ampere, 8.0, and later).
pub fn supports_bf16(cap: (i32, i32)) -> bool {
    cap.0 >= 8
}

/// Safety factor over [`pair_bytes`]'s count of live tensors: the allocator's rounding and
/// caching, and temporaries the count leaves out.
const ESTIMATE_FACTOR: usize = 2;

/// Estimated peak device memory, in bytes, that one more pair adds to a batch of `explain` /
/// `infer` with activations of `dtype_bytes` bytes: both clips through HTSAT (when `audio`; not
/// when the embeddings come from a cache) and GPT-2's prefix pass, key/value cache and logits
/// for `max_new_tokens`. It counts the largest tensors live at once (Swin stage 1's window
/// attention and MLP; the prefix's attention and MLP; the cache), times [`ESTIMATE_FACTOR`].
pub fn pair_bytes(
    cfg: &crate::model::config::AdiffConfig,
    dtype_bytes: usize,
    max_new_tokens: usize,
    audio: bool,
) -> usize {
    const F32: usize = 4;
    let db = dtype_bytes;
    let h = &cfg.htsat;
    let htsat = if audio {
        let tokens = h.patch_grid() * h.patch_grid();
        let (c, heads) = (h.embed_dim, h.num_heads.first().copied().unwrap_or(1));
        let window = h.window_size * h.window_size;
        let hidden = (c as f64 * h.mlp_ratio) as usize;
        // x, norm, windows, qkv (3C), q, k, v, attention output, projection: ~10C per token;
        // scores in the dtype and widened to f32 twice (plus softmax); the MLP's hidden twice.
        let per_clip = tokens * c * 10 * db
            + tokens * heads * window * (2 * db + 2 * F32)
            + 2 * tokens * hidden * db
            + h.spec_size * h.spec_size * F32;
        2 * per_clip
    } else {
        0
    };
    let g = &cfg.gpt2;
    let prefix = cfg.prefix_tokens();
    let capacity = (prefix + max_new_tokens).min(g.n_positions);
    let kv = 2 * g.n_layer * capacity * g.n_embd * db;
    let prefix_pass = prefix * g.n_embd * 12 * db + g.n_head * prefix * prefix * (db + 2 * F32);
    let logits = g.vocab_size * (db + 2 * F32);
    ESTIMATE_FACTOR * (htsat + kv + prefix_pass + logits)
}

/// The batch size `--batch-size auto` picks on a device with `free` bytes free: what fits in
/// `free` less a margin (a tenth of `total`, at least 512 MiB) at `per_pair` bytes a pair,
/// between 1 and `max`.
pub fn auto_batch(free: usize, total: usize, per_pair: usize, max: usize) -> usize {
    const MIN_MARGIN: usize = 512 << 20;
    let margin = (total / 10).max(MIN_MARGIN);
    (free.saturating_sub(margin) / per_pair.max(1)).clamp(1, max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full-size model in bf16 with 200 new tokens: tens of MB a pair (HTSAT dominates),
    /// so an 80 GB card takes hundreds of pairs and a full card takes one.
    #[test]
    fn auto_batch_fits_the_free_memory() {
        let cfg = crate::model::config::AdiffConfig::base();
        let per_pair = pair_bytes(&cfg, 2, 200, true);
        assert!((20 << 20..400 << 20).contains(&per_pair), "{per_pair}");
        assert!(
            pair_bytes(&cfg, 2, 200, false) < per_pair / 2,
            "the cache saves HTSAT"
        );
        let gib = 1usize << 30;
        let b = auto_batch(70 * gib, 80 * gib, per_pair, 4096);
        assert_eq!(b, (70 * gib - 8 * gib) / per_pair);
        assert_eq!(auto_batch(100 << 20, 80 * gib, per_pair, 4096), 1);
        assert_eq!(auto_batch(70 * gib, 80 * gib, per_pair, 7), 7);
    }
}

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

//! Layer norm and softmax that keep gradients when training needs them.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` kernels are fast but have no backward
//! pass. The model calls these wrappers instead: when any input is part of an autograd graph
//! (`track_op`: a trainable `Var` or something computed from one) they use the composition of
//! differentiable ops; otherwise (inference) the fused kernels.

use candle_core::{Result, Tensor, D};
use candle_nn::{LayerNorm, Module};

/// `ln(x)` over the last dimension, differentiable when `x` or the norm's weights are tracked.
pub fn layer_norm(ln: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    let tracked = x.track_op() || ln.weight().track_op() || ln.bias().is_some_and(Tensor::track_op);
    match (tracked, ln.bias()) {
        (true, Some(bias)) => {
            candle_nn::ops::layer_norm_slow(x, ln.weight(), bias, ln.eps() as f32)
        }
        _ => ln.forward(x),
    }
}

/// Softmax over the last dimension, differentiable when `x` is tracked.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The differentiable path gives the fused kernels' values and real gradients.
    #[test]
    fn differentiable_paths_match_fused_kernels() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 8, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 8, &dev)?;
        let ln = LayerNorm::new(w, b, 1e-5);
        let fused = layer_norm(&ln, &x)?;
        let xv = Var::from_tensor(&x)?;
        let slow = layer_norm(&ln, xv.as_tensor())?;
        let diff = (fused - &slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "layer norm paths differ by {diff}");
        let grads = slow.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(xv.as_tensor()).is_some());

        let s_fused = softmax_last_dim(&x)?;
        let s_slow = softmax_last_dim(xv.as_tensor())?;
        let diff = (s_fused - &s_slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "softmax paths differ by {diff}");
        let _ = DType::F32;
        Ok(())
    }
}

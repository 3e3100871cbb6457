//! The vendored candle-core's patched CPU paths (`vendor/README.md`) against plain loops written
//! here: sums over leading or middle dimensions (patch 3) are bit-identical to adding each
//! output element's terms in source order, which is what the published crate computes.

use candle_core::{Device, Tensor};

/// `x` (row-major, `dims`) summed over `reduce` (sorted), each output element's terms added in
/// source order, as f32.
fn sum_in_order(x: &[f32], dims: &[usize], reduce: &[usize]) -> Vec<f32> {
    let out_dims: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if reduce.contains(&i) { 1 } else { d })
        .collect();
    let mut out = vec![0f32; out_dims.iter().product()];
    for (i, &v) in x.iter().enumerate() {
        // Source index -> coordinates -> output index.
        let mut rest = i;
        let mut coords = vec![0; dims.len()];
        for k in (0..dims.len()).rev() {
            coords[k] = rest % dims[k];
            rest /= dims[k];
        }
        let mut o = 0;
        for k in 0..dims.len() {
            o = o * out_dims[k] + if reduce.contains(&k) { 0 } else { coords[k] };
        }
        out[o] += v;
    }
    out
}

#[test]
fn sums_over_leading_and_middle_dims_are_bit_identical() {
    let dev = Device::Cpu;
    let cases: [(&[usize], &[usize]); 7] = [
        (&[3, 5, 7], &[0, 1]),    // a bias gradient: runs of 7
        (&[3, 5, 7], &[0]),       // runs of 35
        (&[3, 5, 7], &[1]),       // a middle dimension
        (&[2, 3, 4, 5], &[0, 2]), // two reduced dims apart: runs of 5
        (&[2, 3, 4, 5], &[1, 2]), // runs of 5
        (&[4, 6], &[1]),          // trailing: candle's own fast path
        (&[2, 3, 4, 5], &[1, 3]), // the last dim reduced too: per element
    ];
    for (dims, reduce) in cases {
        let n: usize = dims.iter().product();
        // Values of mixed magnitude, so that the order of additions shows in the bits.
        let x: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.731).sin() * 10f32.powi((i % 7) as i32 - 3))
            .collect();
        let t = Tensor::from_vec(x.clone(), dims, &dev).unwrap();
        let got = t
            .sum_keepdim(reduce)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = sum_in_order(&x, dims, reduce);
        let same = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{dims:?} over {reduce:?}: {got:?} vs {want:?}");
    }
}

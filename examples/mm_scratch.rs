use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (m, k, n) in [(640, 768, 2304), (640, 768, 3072), (640, 3072, 768), (100, 768, 50257)] {
        let a = Tensor::randn(0f32, 1., (m, k), &dev)?;
        let b = Tensor::randn(0f32, 1., (k, n), &dev)?;
        let bt = Tensor::randn(0f32, 1., (n, k), &dev)?;
        for _ in 0..3 { a.matmul(&b)?; }
        let r = 10;
        let t = Instant::now();
        for _ in 0..r { a.matmul(&b)?; }
        let dt = t.elapsed().as_secs_f64() / r as f64;
        let t = Instant::now();
        for _ in 0..r { a.matmul(&bt.t()?)?; }
        let dt2 = t.elapsed().as_secs_f64() / r as f64;
        println!("{m} {k} {n}: {:.1} GFLOP/s, with transposed rhs {:.1}", 2.0 * (m * k * n) as f64 / dt / 1e9, 2.0 * (m * k * n) as f64 / dt2 / 1e9);
    }
    // elementwise
    let x = Tensor::randn(0f32, 1., (640, 3072), &dev)?;
    let t = Instant::now();
    for _ in 0..10 { x.gelu()?; }
    println!("gelu 640x3072: {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    let t = Instant::now();
    for _ in 0..10 { (&x + &x)?; }
    println!("add 640x3072: {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    let y = Tensor::randn(0f32, 1., (4, 160, 12, 64), &dev)?;
    let t = Instant::now();
    for _ in 0..10 { y.transpose(1, 2)?.contiguous()?; }
    println!("transpose copy 4x160x12x64: {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    Ok(())
}

//! Benchmark (not a test): GPT-2's head + next-token loss in training, forward and backward, the
//! fused op (`train::loss::head_cross_entropy`, no `[N, V]` logits) against the unfused path the
//! trainer took before it (logits `[N, V]` from `model::ops::linear` for a trained head, or
//! `ops::linear_frozen` with the transposed copy for a frozen one, as `Proj` does, then
//! `train::loss::cross_entropy`), rounds alternating, with the load average printed and the
//! ratio per shape.
//!
//! ```text
//! cargo bench --bench head_loss -- [--rounds 5] [--shapes N:C,N:C,...]
//! ```
//!
//! Default shapes: the demo model (C 64) at stage 3's batch of 16 answers (N 250 answer tokens),
//! and the full-size model (C 768) at stage 3's batches 4 and 8 (N 128 and 256), each with the
//! head trained (stage 3: the tied `wte` gets a gradient) and frozen (stage 2). V is GPT-2's
//! 50257. Times are the median over rounds, in milliseconds.

use std::time::Instant;

use adiff::model::ops::{linear, linear_frozen, WeightLayout};
use adiff::train::loss::{cross_entropy, head_cross_entropy};
use candle_core::{Device, Tensor, Var};

/// GPT-2's vocabulary.
const VOCAB: usize = 50257;

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One forward + backward; returns milliseconds.
/// `w_t` is the frozen head's transposed copy (`Proj` makes it once), None when trained.
fn step(
    fused: bool,
    h: &Var,
    (w, w_t): (&Tensor, Option<&Tensor>),
    targets: &Tensor,
) -> Result<f64, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let loss = if fused {
        head_cross_entropy(h.as_tensor(), w, targets)?
    } else {
        let logits = match w_t {
            None => linear(h.as_tensor(), w, None, WeightLayout::OutIn),
            Some(w_t) => linear_frozen(h.as_tensor(), w_t, w, None),
        }?;
        cross_entropy(&logits, targets)?
    };
    let grads = loss.backward()?;
    std::hint::black_box(grads);
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(5);
    let shapes: Vec<(usize, usize)> = arg("--shapes")
        .unwrap_or_else(|| "250:64,128:768,256:768".into())
        .split(',')
        .filter_map(|s| {
            let (n, c) = s.split_once(':')?;
            Some((n.parse().ok()?, c.parse().ok()?))
        })
        .collect();
    println!(
        "machine: {} threads; load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    println!("| N | C | head | unfused ms | fused ms | fused speed-up |");
    println!("|---|---|---|---|---|---|");
    let dev = Device::Cpu;
    for &(n, c) in &shapes {
        for trained in [true, false] {
            let wave = |len: usize, a: f32, b: f32| -> Vec<f32> {
                (0..len).map(|i| (i as f32 * a).sin() * b).collect()
            };
            let h = Var::from_vec(wave(n * c, 0.31, 1.0), (n, c), &dev)?;
            let w_var = Var::from_vec(wave(VOCAB * c, 0.17, 0.05), (VOCAB, c), &dev)?;
            let (w, w_t) = if trained {
                (w_var.as_tensor().clone(), None)
            } else {
                let w = w_var.as_tensor().detach();
                let w_t = w.t()?.contiguous()?;
                (w, Some(w_t))
            };
            let w = (&w, w_t.as_ref());
            let ids: Vec<u32> = (0..n).map(|r| ((r * 977) % VOCAB) as u32).collect();
            let targets = Tensor::new(ids.as_slice(), &dev)?;
            // Warm-up of both paths.
            step(false, &h, w, &targets)?;
            step(true, &h, w, &targets)?;
            let (mut plain, mut fused) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                plain.push(step(false, &h, w, &targets)?);
                fused.push(step(true, &h, w, &targets)?);
            }
            let (p, f) = (median(plain), median(fused));
            println!(
                "| {n} | {c} | {} | {p:.1} | {f:.1} | {:.2}x |",
                if trained { "trained" } else { "frozen" },
                p / f
            );
        }
    }
    println!("load average after: {}", load());
    Ok(())
}

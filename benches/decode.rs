//! Batch-1 decoding speed of full-size GPT-2 (random weights): a 121-token prefix, then 200 new
//! tokens, greedy, nothing stops early. Prints tokens/s for each weight format and how far the
//! reduced-precision logits move from f32.
//!
//! `cargo bench --bench decode [-- --weights DIR] [--formats f32,f16,i8,q8_0] [--tokens N]`
//! DIR holds `model.safetensors` (hub layout, e.g. from `scripts/bench_decode.py`) and optionally
//! `prefix.safetensors` (tensor `prefix` [1, 121, 768]). Without it, random weights are made here.
//! `RESULT rust_<format>_tok_s=...` lines are what `scripts/bench_decode.sh` reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use adiff::generate::{generate, GenerateOptions, Strategy};
use adiff::model::config::AdiffConfig;
use adiff::model::gpt2::{Gpt2, WeightFormat};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// Standard deviation of the random weights when no file is given (GPT-2's initializer_range).
const INIT_STD: f32 = 0.02;
const DEFAULT_NEW_TOKENS: usize = 200;
/// Timed runs per format; the fastest is reported (the machine is shared).
const DEFAULT_REPEATS: usize = 2;

struct Args {
    weights: Option<PathBuf>,
    formats: Vec<WeightFormat>,
    tokens: usize,
    repeats: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        weights: None,
        formats: vec![
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::I8,
            WeightFormat::Q8_0,
        ],
        tokens: DEFAULT_NEW_TOKENS,
        repeats: DEFAULT_REPEATS,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--weights" => args.weights = it.next().map(PathBuf::from),
            "--tokens" => {
                args.tokens = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--tokens needs a value"))?
                    .parse()?
            }
            "--repeats" => {
                args.repeats = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--repeats needs a value"))?
                    .parse::<usize>()?
                    .max(1)
            }
            "--formats" => {
                let v = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--formats needs a value"))?;
                args.formats = v
                    .split(',')
                    .map(|f| match f {
                        "f32" => Ok(WeightFormat::F32),
                        "f16" => Ok(WeightFormat::F16),
                        "i8" => Ok(WeightFormat::I8),
                        "q8_0" => Ok(WeightFormat::Q8_0),
                        other => Err(anyhow::anyhow!("unknown format {other}")),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--bench" => {} // added by `cargo bench`
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let cfg = AdiffConfig::base();
    let g = &cfg.gpt2;
    let dev = Device::Cpu;
    let (vb, prefix) = match &args.weights {
        Some(dir) => {
            // SAFETY: the benchmark's weight file is not modified while it runs.
            let vb = unsafe {
                VarBuilder::from_mmaped_safetensors(
                    &[dir.join("model.safetensors")],
                    DType::F32,
                    &dev,
                )?
            };
            let p = dir.join("prefix.safetensors");
            let prefix = if p.exists() {
                candle_core::safetensors::load(&p, &dev)?
                    .remove("prefix")
                    .ok_or_else(|| anyhow::anyhow!("{}: no tensor 'prefix'", p.display()))?
            } else {
                Tensor::randn(0f32, 1.0, (1, cfg.prefix_tokens(), g.n_embd), &dev)?
            };
            (vb, prefix)
        }
        None => (
            random_weights(g, &dev)?,
            Tensor::randn(0f32, 1.0, (1, cfg.prefix_tokens(), g.n_embd), &dev)?,
        ),
    };
    let t0 = Instant::now();
    let base = Gpt2::load(vb, g)?;
    println!(
        "loaded full-size GPT-2 in {:.2} s; prefix {:?}; threads {}",
        t0.elapsed().as_secs_f64(),
        prefix.dims(),
        candle_core::utils::get_num_threads()
    );
    let opts = GenerateOptions {
        strategy: Strategy::Greedy,
        max_new_tokens: args.tokens,
        stop_tokens: vec![],
    };
    // Warm-up (page in the weights, size the allocator).
    generate(
        &base,
        &prefix,
        None,
        &GenerateOptions {
            max_new_tokens: 4,
            ..opts.clone()
        },
    )?;
    let (ref_logits, _) = base.start(&prefix, None, prefix.dim(1)?)?;
    let mut ref_ids = Vec::new();
    for format in &args.formats {
        let model = base.clone().with_weight_format(*format)?;
        if *format != WeightFormat::F32 {
            generate(
                &model,
                &prefix,
                None,
                &GenerateOptions {
                    max_new_tokens: 4,
                    ..opts.clone()
                },
            )?;
        }
        let t = Instant::now();
        let (logits, _) = model.start(&prefix, None, prefix.dim(1)?)?;
        let prefix_s = t.elapsed().as_secs_f64();
        let mut secs = f64::INFINITY;
        let mut out = Vec::new();
        for _ in 0..args.repeats {
            let t = Instant::now();
            out = generate(&model, &prefix, None, &opts)?;
            secs = secs.min(t.elapsed().as_secs_f64());
        }
        let n = out[0].ids.len();
        let rate = n as f64 / secs;
        let decode_rate = n.saturating_sub(1) as f64 / (secs - prefix_s);
        let drift = (&logits - &ref_logits)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        let scale = ref_logits
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        let same = if ref_ids.is_empty() {
            ref_ids = out[0].ids.clone();
            n
        } else {
            ref_ids
                .iter()
                .zip(&out[0].ids)
                .take_while(|(a, b)| a == b)
                .count()
        };
        println!(
            "rust {format:?}: {n} new tokens in {secs:.2} s (incl. the {}-token prefix, {prefix_s:.3} s alone) = {rate:.1} tok/s ({decode_rate:.1} tok/s after the prefix); \
             prefix logits max |diff| vs f32 {drift:.2e} (max |logit| {scale:.2e}); greedy ids equal to f32 for the first {same}/{n}",
            prefix.dim(1)?
        );
        println!(
            "RESULT rust_{}_tok_s={rate:.3}",
            format!("{format:?}").to_lowercase()
        );
        if *format == WeightFormat::F32 {
            println!(
                "IDS {}",
                out[0]
                    .ids
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    Ok(())
}

/// Full-size random weights in the hub layout (for running without Python).
fn random_weights(
    g: &adiff::model::config::Gpt2Config,
    dev: &Device,
) -> anyhow::Result<VarBuilder<'static>> {
    let c = g.n_embd;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: &[usize], init: Option<f32>| -> anyhow::Result<()> {
        let x = match init {
            Some(v) => Tensor::full(v, shape, dev)?,
            None => Tensor::randn(0f32, INIT_STD, shape, dev)?,
        };
        t.insert(name, x);
        Ok(())
    };
    put("wte.weight".into(), &[g.vocab_size, c], None)?;
    put("wpe.weight".into(), &[g.n_positions, c], None)?;
    for i in 0..g.n_layer {
        let p = format!("h.{i}");
        for ln in ["ln_1", "ln_2"] {
            put(format!("{p}.{ln}.weight"), &[c], Some(1.0))?;
            put(format!("{p}.{ln}.bias"), &[c], Some(0.0))?;
        }
        for (name, i_dim, o_dim) in [
            ("attn.c_attn", c, 3 * c),
            ("attn.c_proj", c, c),
            ("mlp.c_fc", c, 4 * c),
            ("mlp.c_proj", 4 * c, c),
        ] {
            put(format!("{p}.{name}.weight"), &[i_dim, o_dim], None)?;
            put(format!("{p}.{name}.bias"), &[o_dim], Some(0.0))?;
        }
    }
    put("ln_f.weight".into(), &[c], Some(1.0))?;
    put("ln_f.bias".into(), &[c], Some(0.0))?;
    Ok(VarBuilder::from_tensors(t, DType::F32, dev))
}

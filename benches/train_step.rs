//! Profile of one stage-2 or stage-3 training step of the full-size ADIFF, block by block (a
//! profile, not a test; the adiff/PyTorch throughput ratio comes from `scripts/bench_train.sh`,
//! the PyTorch side of this table from `scripts/profile_train_step.py`, which cuts the same way).
//!
//! ```text
//! cargo bench --bench train_step -- --ckpt adiff_full.ckpt [--stage 2|3] [--batch 4]
//!     [--answer-tokens 32] [--steps 3]
//! ```
//!
//! Method: the graph is cut between segments. Each segment's input is a fresh `Var` holding the
//! previous segment's output, so each forward is timed alone; the backward then runs segment by
//! segment from the loss down, each fed the gradient of its output (`sum(out * grad)`), so each
//! segment's backward is timed alone too. Segments:
//!
//! ```text
//! mappers     embeddings [B, E] x2, prompt ids [B, 40] -> projection, the three mappers
//!             -> joint prefix [B, 121, C] (the separator is a constant)
//! cross-proj  the cross-projection transformer: joint -> prefix [B, 121, C]
//! input       [prefix, wte(answer[:-1])] + positions -> x [B, 121+L-1, C]
//! blocks a-b  GPT-2 blocks a..=b: x -> x
//! head+loss   ln_f, lm_head at the answer positions [N, V], cross-entropy -> scalar
//! clip        gradient clipping to norm 1.0: the global norm (the trainer scales the
//!             gradients inside AdamW's pass; PyTorch's row is clip_grad_norm_, scaling included)
//! adamw       the AdamW update of the trainable tensors
//! ```
//!
//! Times are the median over `--steps` steps after one warm-up step, in milliseconds.

use std::path::PathBuf;
use std::time::Instant;

use adiff::model::checkpoint::Checkpoint;
use adiff::model::config::AdiffConfig;
use adiff::model::gpt2::Gpt2;
use adiff::model::ops;
use adiff::train::config::TrainConfig;
use adiff::train::model::TrainableAdiff;
use adiff::train::optim::{clip_scale, grad_norm, AdamW};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

/// GPT-2 blocks per profiled group.
const GROUP: usize = 4;

struct Args {
    ckpt: PathBuf,
    stage: u32,
    batch: usize,
    answer_tokens: usize,
    steps: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        ckpt: PathBuf::new(),
        stage: 2,
        batch: 4,
        answer_tokens: 32,
        steps: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{k} needs a value"))
        };
        match k.as_str() {
            "--ckpt" => a.ckpt = v()?.into(),
            "--stage" => a.stage = v()?.parse()?,
            "--batch" => a.batch = v()?.parse()?,
            "--answer-tokens" => a.answer_tokens = v()?.parse()?,
            "--steps" => a.steps = v()?.parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(!a.ckpt.as_os_str().is_empty(), "give --ckpt");
    anyhow::ensure!(matches!(a.stage, 2 | 3), "--stage is 2 or 3");
    Ok(a)
}

/// A segment's input: a fresh leaf holding `t`'s values.
fn leaf(t: &Tensor) -> anyhow::Result<Var> {
    Ok(Var::from_tensor(&t.detach())?)
}

/// Backward of one segment: gradients of `sum(out * grad_out)` (as the trainer runs it).
fn backward(out: &Tensor, grad_out: &Tensor) -> anyhow::Result<GradStore> {
    Ok(ops::backward(&(out * grad_out)?.sum_all()?)?)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    adiff::alloc::keep_freed_memory(); // as the `adiff` binary does
    adiff::alloc::park_idle_threads();
    let a = parse()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = AdiffConfig::from_file(root.join("configs/base.json"))?;
    let tcfg = TrainConfig::from_file(&root.join(format!("configs/train/stage{}.json", a.stage)))?;
    let dev = Device::Cpu;
    let ckpt = Checkpoint::load(&a.ckpt)?;
    let model = TrainableAdiff::build(&ckpt, &cfg, &tcfg.trainable, None, &dev)?;
    let m = &model.model;
    let gpt: &Gpt2 = &m.gpt;
    let (b, l) = (a.batch, a.answer_tokens);
    let e = cfg.projection.in_dim;
    let v = cfg.gpt2.vocab_size as u32;
    // Deterministic inputs: random embeddings, token ids spread over the vocabulary.
    let emb1 = Tensor::randn(0f32, 1.0, (b, e), &dev)?;
    let emb2 = Tensor::randn(0f32, 1.0, (b, e), &dev)?;
    let pl = cfg.text.prompt_length;
    let prompt: Vec<u32> = (0..b * pl).map(|i| (i as u32 * 7919) % v).collect();
    let prompt = Tensor::from_vec(prompt, (b, pl), &dev)?;
    let answers: Vec<u32> = (0..b * l).map(|i| (i as u32 * 104_729 + 13) % v).collect();
    let answers = Tensor::from_vec(answers, (b, l), &dev)?;
    let mut opt = AdamW::new(model.vars.clone(), tcfg.optimizer.clone())?;
    let nb = gpt.num_blocks();
    let groups: Vec<(usize, usize)> = (0..nb)
        .step_by(GROUP)
        .map(|s| (s, (s + GROUP).min(nb) - 1))
        .collect();
    let mut names = vec![
        "mappers".to_string(),
        "cross-proj".to_string(),
        "input".to_string(),
    ];
    names.extend(groups.iter().map(|(s, e)| format!("blocks {s}-{e}")));
    names.push("head+loss".into());
    // [step][segment] forward and backward milliseconds, and the optimizer's.
    let mut fwd = vec![];
    let mut bwd = vec![];
    let mut optim = vec![];
    let mut totals = vec![];
    for _ in 0..=a.steps {
        let started = Instant::now();
        let mut f = vec![];
        // Forward, segment by segment; `outs[i]` is segment i's output, `ins[i]` its input leaf.
        let t = Instant::now();
        let joint = m.mapped_prefix(&emb1, &emb2, &prompt)?.joint; // [B, 121, C]
        f.push(ms(t));
        let t = Instant::now();
        let j_in = leaf(&joint)?;
        let prefix = m.cross_project(j_in.as_tensor())?; // [B, 121, C]
        f.push(ms(t));
        let mut ins = vec![j_in];
        let mut outs = vec![joint, prefix.clone()];
        let t = Instant::now();
        let p_in = leaf(&prefix)?;
        let ans = gpt.embed_ids(&answers.narrow(1, 0, l - 1)?)?; // [B, L-1, C]
        let x = gpt.add_positions(&Tensor::cat(&[p_in.as_tensor(), &ans], 1)?)?; // [B, T, C]
        let tt = x.dim(1)?;
        let mask = Gpt2::causal_mask(tt, &dev)?;
        f.push(ms(t));
        ins.push(p_in);
        outs.push(x.clone());
        for &(s, e) in &groups {
            let t = Instant::now();
            let x_in = leaf(outs.last().expect("an output"))?;
            let mut x = x_in.as_tensor().clone();
            for i in s..=e {
                x = gpt.block_forward(i, &x, &mask)?;
            }
            f.push(ms(t));
            ins.push(x_in);
            outs.push(x);
        }
        let t = Instant::now();
        let h_in = leaf(outs.last().expect("an output"))?;
        let p = prefix.dim(1)?;
        let c = cfg.gpt2.n_embd;
        // [B, L, C] at the positions that predict answer tokens 0..L-1 (every row L long here).
        let hidden = gpt
            .final_norm(h_in.as_tensor())?
            .narrow(1, p - 1, l)?
            .reshape((b * l, c))?;
        let logits = gpt.logits(&hidden.unsqueeze(0)?)?.squeeze(0)?; // [N, V]
        let loss = adiff::train::loss::cross_entropy(&logits, &answers.flatten_all()?)?;
        let _ = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        f.push(ms(t));
        ins.push(h_in);
        // Backward, from the loss down.
        let mut bk = vec![0.0; f.len()];
        let t = Instant::now();
        // Every trainable tensor's gradient is gathered into this store for the optimizer.
        let mut all = ops::backward(&loss)?; // gathers every trainable gradient
        bk[f.len() - 1] = ms(t);
        let mut g = all
            .get(ins.last().expect("an input").as_tensor())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no gradient reached the head's input"))?;
        for seg in (0..f.len() - 1).rev() {
            let t = Instant::now();
            let grads = backward(&outs[seg], &g)?;
            bk[seg] = ms(t);
            keep(&model.vars, &grads, &mut all);
            if seg > 0 {
                g = grads
                    .get(ins[seg - 1].as_tensor())
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no gradient reached segment {seg}"))?;
            }
        }
        let t = Instant::now();
        // As the trainer: the norm, then the scaling inside AdamW's pass.
        let scale = clip_scale(grad_norm(&model.vars, &all)?, 1.0);
        let clip = ms(t);
        let t = Instant::now();
        opt.step_scaled(&all, 1e-6, scale)?;
        optim.push((clip, ms(t)));
        fwd.push(f);
        bwd.push(bk);
        totals.push(ms(started));
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let col = |rows: &[Vec<f64>], i: usize| median(rows[1..].iter().map(|r| r[i]).collect());
    println!(
        "adiff stage {} batch {b}, answer {l} tokens, {} threads, median of {} steps (ms)",
        a.stage,
        rayon::current_num_threads(),
        a.steps
    );
    println!("{:<12} {:>10} {:>10}", "segment", "forward", "backward");
    let mut json = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        let (fw, bw) = (col(&fwd, i), col(&bwd, i));
        println!("{n:<12} {fw:>10.1} {bw:>10.1}");
        json.insert(
            n.clone(),
            serde_json::json!({"forward": fw, "backward": bw}),
        );
    }
    let clip = median(optim[1..].iter().map(|o| o.0).collect());
    let adamw = median(optim[1..].iter().map(|o| o.1).collect());
    let total = median(totals[1..].to_vec());
    println!("{:<12} {:>10.1}", "clip", clip);
    println!("{:<12} {:>10.1}", "adamw", adamw);
    println!("{:<12} {:>10.1}", "step", total);
    json.insert("clip".into(), serde_json::json!(clip));
    json.insert("adamw".into(), serde_json::json!(adamw));
    json.insert("step".into(), serde_json::json!(total));
    println!("JSON {}", serde_json::Value::Object(json));
    Ok(())
}

/// Moves the trainable tensors' gradients of one segment's store into `all`.
fn keep(vars: &[(String, Var)], grads: &GradStore, all: &mut GradStore) {
    for (_, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            all.insert(v.as_tensor(), g.clone());
        }
    }
}

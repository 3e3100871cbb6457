//! Text generation from a GPT-2 prefix: greedy or sampled decoding with a KV cache.
//!
//! ADIFF's reference loop re-runs the whole sequence every step, takes the argmax (its top-p
//! filter never changes the argmax) and stops on id 220, the first token of `" <|endoftext|>"`.
//! Here the prefix runs once and each step costs one token. Rows of a batch that finish are
//! dropped from the cache, so they stop costing work.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{AdiffError, Result};
use crate::model::gpt2::Gpt2;
use crate::text::config::TextConfig;

/// New tokens per answer unless asked otherwise (the reference example's `max_len`).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 300;

/// Random sampling (Hugging Face semantics: temperature, then top-k, then top-p).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Logits are divided by it; must be > 0.
    pub temperature: f64,
    /// Keep only the k most likely tokens (None: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p (None: all).
    pub top_p: Option<f64>,
    /// Row r of a batch draws from a generator seeded with `seed + r` (or `seed + keys[r]` with
    /// [`generate_keyed`]): the same seed gives the same text, and row 0 of a batch matches a
    /// batch of one.
    pub seed: u64,
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Argmax (first index on ties), what ADIFF's reference does.
    Greedy,
    Sample(SamplingOptions),
}

/// Everything that steers [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub strategy: Strategy,
    /// Upper bound on new tokens; it is further capped so that prefix + new <= n_positions.
    pub max_new_tokens: usize,
    /// Generation of a row ends after it emits one of these (the id is kept in the output).
    pub stop_tokens: Vec<u32>,
}

impl GenerateOptions {
    /// The reference's settings: greedy, 300 new tokens, stop on `text.stop_token_id` (220).
    pub fn new(text: &TextConfig) -> Self {
        Self {
            strategy: Strategy::Greedy,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            stop_tokens: vec![text.stop_token_id],
        }
    }

    /// Checks the sampling parameters.
    pub fn validate(&self) -> Result<()> {
        if let Strategy::Sample(s) = &self.strategy {
            if !(s.temperature.is_finite() && s.temperature > 0.0) {
                return Err(AdiffError::Invalid(format!(
                    "temperature must be a positive number, got {}",
                    s.temperature
                )));
            }
            if s.top_k == Some(0) {
                return Err(AdiffError::Invalid("top_k must be at least 1".into()));
            }
            if let Some(p) = s.top_p {
                if !(p > 0.0 && p <= 1.0) {
                    return Err(AdiffError::Invalid(format!(
                        "top_p must lie in (0, 1], got {p}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It emitted a stop token (the last id).
    Stop,
    /// It reached `max_new_tokens`.
    MaxNewTokens,
    /// It reached GPT-2's position limit before `max_new_tokens`.
    PositionLimit,
}

/// The generated ids of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub finish: FinishReason,
}

/// Generates a continuation of each row's prefix.
///
/// `embeds` [B, T, C] are GPT-2 `inputs_embeds` from position 0 (ADIFF's prefix). With
/// `lengths`, row b's prefix is its first `lengths[b]` positions (right padding). Returns one
/// [`Generation`] per row, in order.
pub fn generate(
    model: &Gpt2,
    embeds: &Tensor,
    lengths: Option<&[usize]>,
    opts: &GenerateOptions,
) -> Result<Vec<Generation>> {
    let b = embeds.dims().first().copied().unwrap_or(0) as u64;
    generate_keyed(model, embeds, lengths, opts, &(0..b).collect::<Vec<_>>())
}

/// [`generate`] with row r sampled from a generator seeded with `seed + keys[r]`, so that a
/// row's sampled text depends on its key (e.g. its index in a CSV), not on which batch or which
/// position of a batch it lands in. Greedy decoding ignores the keys.
pub fn generate_keyed(
    model: &Gpt2,
    embeds: &Tensor,
    lengths: Option<&[usize]>,
    opts: &GenerateOptions,
    keys: &[u64],
) -> Result<Vec<Generation>> {
    // On a rayon worker: see `ops::on_pool` (i8 decoding 1.2-1.3x as fast).
    crate::model::ops::on_pool(|| generate_on_pool(model, embeds, lengths, opts, keys))
}

fn generate_on_pool(
    model: &Gpt2,
    embeds: &Tensor,
    lengths: Option<&[usize]>,
    opts: &GenerateOptions,
    keys: &[u64],
) -> Result<Vec<Generation>> {
    opts.validate()?;
    let (b, t, _) = embeds.dims3().map_err(|_| {
        AdiffError::Invalid(format!(
            "inputs_embeds must be [batch, time, width], got {:?}",
            embeds.dims()
        ))
    })?;
    let n_positions = model.config().n_positions;
    if t > n_positions {
        return Err(AdiffError::Invalid(format!(
            "prefix of {t} positions exceeds GPT-2's limit of {n_positions}"
        )));
    }
    // Rows are padded to the longest prefix, so T bounds every row's positions.
    let budget = opts.max_new_tokens.min(n_positions - t);
    let out_of_room = if budget < opts.max_new_tokens {
        FinishReason::PositionLimit
    } else {
        FinishReason::MaxNewTokens
    };
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            ids: Vec::new(),
            finish: out_of_room,
        })
        .collect();
    if budget == 0 {
        // Still validate the inputs the way a real run would.
        model.start(embeds, lengths, t)?;
        return Ok(out);
    }
    // The last new token is never fed back, so it needs no cache slot.
    let capacity = t + budget - 1;
    let (mut logits, mut cache) = model.start(embeds, lengths, capacity)?; // [B, V]
    if keys.len() != b {
        return Err(AdiffError::Invalid(format!(
            "{} sampling keys for a batch of {b}",
            keys.len()
        )));
    }
    let mut rngs: Vec<Option<StdRng>> = (0..b)
        .map(|r| match &opts.strategy {
            Strategy::Sample(s) => Some(StdRng::seed_from_u64(s.seed.wrapping_add(keys[r]))),
            Strategy::Greedy => None,
        })
        .collect();
    let mut active: Vec<usize> = (0..b).collect(); // original row of each cache row
    for step in 0..budget {
        let rows = logits.to_vec2::<f32>()?; // [active, V]
        if rows.iter().flatten().any(|v| v.is_nan()) {
            return Err(AdiffError::Invalid(format!(
                "GPT-2's logits are NaN at step {step}: the checkpoint's weights (GPT-2 or the \
                 mappers) hold non-finite values"
            )));
        }
        let mut next = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (i, (&row, row_logits)) in active.iter().zip(rows.iter()).enumerate() {
            let id = match (&opts.strategy, rngs[row].as_mut()) {
                (Strategy::Sample(s), Some(rng)) => sample(row_logits, s, rng),
                _ => argmax(row_logits),
            };
            out[row].ids.push(id);
            if opts.stop_tokens.contains(&id) {
                out[row].finish = FinishReason::Stop;
            } else {
                keep.push(i);
                next.push(id);
            }
        }
        if keep.is_empty() || step + 1 == budget {
            break;
        }
        if keep.len() < active.len() {
            cache = cache.select_rows(&keep)?;
            active = keep.iter().map(|&i| active[i]).collect();
        }
        logits = model.step(&next, &mut cache)?; // [active, V]
    }
    Ok(out)
}

/// Index of the largest logit (the first one on ties, like `torch.argmax`).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws one id: logits / temperature, keep top-k, keep top-p, sample from the softmax.
fn sample(logits: &[f32], s: &SamplingOptions, rng: &mut StdRng) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Descending by logit; stable so ties keep the lower id first.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let keep_k = s.top_k.unwrap_or(order.len()).min(order.len());
    order.truncate(keep_k.max(1));
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / s.temperature).exp())
        .collect();
    if let Some(p) = s.top_p {
        let total: f64 = probs.iter().sum();
        let mut cum = 0.0;
        let mut cut = probs.len();
        for (j, q) in probs.iter().enumerate() {
            cum += q / total;
            if cum >= p {
                cut = j + 1;
                break;
            }
        }
        probs.truncate(cut);
        order.truncate(cut);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (j, q) in probs.iter().enumerate() {
        if u < *q {
            return order[j] as u32;
        }
        u -= q;
    }
    order[order.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(top_k: Option<usize>, top_p: Option<f64>) -> SamplingOptions {
        SamplingOptions {
            temperature: 1.0,
            top_k,
            top_p,
            seed: 7,
        }
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.1, 2.0, 1.9, -3.0];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            assert_eq!(sample(&logits, &opts(Some(1), None), &mut rng), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // softmax([10, 0, 0, 0]) puts > 0.99 on id 0: top_p 0.9 leaves only id 0.
        let logits = [10.0, 0.0, 0.0, 0.0];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            assert_eq!(sample(&logits, &opts(None, Some(0.9)), &mut rng), 0);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two equally likely tokens, the rest impossible: both appear, nothing else does.
        let logits = [0.0, f32::MIN, 0.0, f32::MIN];
        let mut rng = StdRng::seed_from_u64(11);
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            counts[sample(&logits, &opts(None, None), &mut rng) as usize] += 1;
        }
        assert_eq!(counts[1] + counts[3], 0);
        // Binomial(2000, 0.5): 5 standard deviations is about 112.
        assert!((counts[0] as i64 - 1000).abs() < 112, "{counts:?}");
    }

    #[test]
    fn invalid_sampling_parameters_are_errors() {
        let mut o = GenerateOptions::new(&crate::model::config::AdiffConfig::tiny().text);
        o.strategy = Strategy::Sample(SamplingOptions {
            temperature: 0.0,
            ..opts(None, None)
        });
        assert!(o.validate().is_err());
        o.strategy = Strategy::Sample(opts(None, Some(1.5)));
        assert!(o.validate().is_err());
        o.strategy = Strategy::Sample(opts(Some(0), None));
        assert!(o.validate().is_err());
    }
}

//! New pairs of synthetic clips that are already rendered (`adiff build-dataset synthetic-remix`).
//!
//! Stages 2 and 3 read a clip only through its cached HTSAT embedding, so pairing the same clips
//! anew gives any number of fresh training pairs at no audio cost. A model that sees each pair a
//! handful of times can learn the answers by heart; with pairs drawn anew it has to read the
//! audio. The pairs follow [`SyntheticPair::draw`]'s law where the pool allows: the first clip
//! uniformly, 1-3 attributes (uniformly many, uniformly which) that differ, and a second clip
//! drawn uniformly among the pool's clips that differ from the first in exactly those.
//!
//! [`SyntheticPair::draw`]: crate::data::synthetic::SyntheticPair::draw

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::data::synthetic::{Attribute, Attributes, DIFFERING_ATTRIBUTES};
use crate::error::{AdiffError, Result};

/// Draws of a first clip and a set of differences before a pool is declared too small for the
/// law asked (a pool of a few clips can lack every partner of some clip).
const MAX_DRAWS_PER_PAIR: usize = 1000;

/// Which attributes the two clips of a remixed pair differ in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Differences {
    /// 1-3 attributes, uniformly many, uniformly which (the law of `build-dataset synthetic`).
    Drawn,
    /// Exactly this many attributes, uniformly which.
    Count(usize),
    /// Exactly these attributes.
    Exactly(Vec<Attribute>),
    /// These attributes and as many others, uniformly which, as make up the total: `Some(n)`
    /// differences in all, or 1-3 drawn uniformly (never fewer than the attributes named). A
    /// lesson on one attribute whose pairs also differ elsewhere, so that a model learns to name
    /// every difference and not only the lesson's.
    Including(Vec<Attribute>, Option<usize>),
}

/// One remixed pair: indices into the pool of its first and second clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemixedPair {
    pub first: usize,
    pub second: usize,
}

/// The pool's clips grouped by their five labels, for the partner search.
struct PoolIndex {
    groups: Vec<(Attributes, Vec<usize>)>,
}

/// Bit `k` is set when the clips differ in `Attribute::ALL[k]`.
fn difference_mask(a: &Attributes, b: &Attributes) -> u8 {
    Attribute::ALL
        .iter()
        .enumerate()
        .filter(|(_, &attr)| a.value_index(attr) != b.value_index(attr))
        .fold(0, |m, (k, _)| m | (1 << k))
}

impl PoolIndex {
    fn new(pool: &[Attributes]) -> Self {
        let mut by_labels: HashMap<Attributes, Vec<usize>> = HashMap::new();
        for (i, a) in pool.iter().enumerate() {
            by_labels.entry(*a).or_default().push(i);
        }
        let mut groups: Vec<(Attributes, Vec<usize>)> = by_labels.into_iter().collect();
        // HashMap order is not stable across runs; the draws must be.
        groups.sort_unstable_by_key(|(_, clips)| clips[0]);
        Self { groups }
    }

    /// The clips that differ from `a` in exactly the attributes of `mask`.
    fn partners(&self, a: &Attributes, mask: u8) -> Vec<usize> {
        self.groups
            .iter()
            .filter(|(labels, _)| difference_mask(a, labels) == mask)
            .flat_map(|(_, clips)| clips.iter().copied())
            .collect()
    }
}

/// Draws `count` pairs from a pool of clips (their labels), from one seeded generator in pair
/// order, so the same pool, seed and law give the same pairs. A pair's two clips always differ
/// in at least one attribute. Errors when the pool has no clip pair of the law asked for.
pub fn remix_pairs(
    pool: &[Attributes],
    count: usize,
    differences: &Differences,
    rng: &mut StdRng,
) -> Result<Vec<RemixedPair>> {
    if pool.len() < 2 {
        return Err(AdiffError::Invalid(format!(
            "remixing needs at least 2 clips in the pool, got {}",
            pool.len()
        )));
    }
    if let Differences::Exactly(attrs) | Differences::Including(attrs, _) = differences {
        if attrs.is_empty() {
            return Err(AdiffError::Invalid(
                "remixed pairs must differ in at least one attribute".into(),
            ));
        }
    }
    let index = PoolIndex::new(pool);
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let mut pair = None;
        for _ in 0..MAX_DRAWS_PER_PAIR {
            let first = rng.random_range(0..pool.len());
            let attrs: Vec<Attribute> = match differences {
                Differences::Exactly(attrs) => attrs.clone(),
                Differences::Count(_) | Differences::Drawn => {
                    let n = match differences {
                        Differences::Count(n) => (*n).clamp(1, Attribute::ALL.len()),
                        _ => rng.random_range(DIFFERING_ATTRIBUTES),
                    };
                    let mut all = Attribute::ALL;
                    all.shuffle(rng);
                    all[..n].to_vec()
                }
                Differences::Including(named, total) => {
                    let n = total
                        .unwrap_or_else(|| rng.random_range(DIFFERING_ATTRIBUTES))
                        .clamp(named.len(), Attribute::ALL.len());
                    let mut others: Vec<Attribute> = Attribute::ALL
                        .into_iter()
                        .filter(|a| !named.contains(a))
                        .collect();
                    others.shuffle(rng);
                    let mut attrs = named.clone();
                    attrs.extend(others.into_iter().take(n.saturating_sub(named.len())));
                    attrs
                }
            };
            let mask = Attribute::ALL
                .iter()
                .enumerate()
                .filter(|(_, a)| attrs.contains(a))
                .fold(0u8, |m, (k, _)| m | (1 << k));
            let partners = index.partners(&pool[first], mask);
            if !partners.is_empty() {
                let second = partners[rng.random_range(0..partners.len())];
                pair = Some(RemixedPair { first, second });
                break;
            }
        }
        let pair = pair.ok_or_else(|| {
            AdiffError::Invalid(format!(
                "pair {i}: found no two clips in the pool ({} clips) that differ as asked \
                 ({differences:?}) in {MAX_DRAWS_PER_PAIR} draws; remix a larger pool",
                pool.len()
            ))
        })?;
        pairs.push(pair);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::data::synthetic::{pair_rng, split_seed, SyntheticPair};

    /// The clips of `n` pairs of `build-dataset synthetic`'s law.
    fn pool(n: usize) -> Vec<Attributes> {
        let base = split_seed(5, "train");
        (0..n)
            .flat_map(|i| {
                let p = SyntheticPair::draw(&mut pair_rng(base, i));
                [p.first.attributes, p.second.attributes]
            })
            .collect()
    }

    #[test]
    fn remixed_pairs_differ_as_asked_and_are_seeded() {
        let pool = pool(500);
        let draw = |d: &Differences, seed: u64| {
            remix_pairs(&pool, 400, d, &mut StdRng::seed_from_u64(seed)).unwrap()
        };
        let drawn = draw(&Differences::Drawn, 1);
        assert_eq!(drawn, draw(&Differences::Drawn, 1));
        assert_ne!(drawn, draw(&Differences::Drawn, 2));
        let mut counts = [0usize; 6];
        for p in &drawn {
            let n = pool[p.first].differences(&pool[p.second]).len();
            assert!(DIFFERING_ATTRIBUTES.contains(&n), "{n} differences");
            counts[n] += 1;
        }
        // 1, 2 and 3 differences each about a third of the time (400 pairs).
        for (n, &c) in counts.iter().enumerate().skip(1).take(3) {
            assert!((90..=180).contains(&c), "{c} pairs with {n} differences");
        }
        for p in draw(&Differences::Count(2), 3) {
            assert_eq!(pool[p.first].differences(&pool[p.second]).len(), 2);
        }
        let kind_pitch = vec![Attribute::Pitch, Attribute::Kind];
        for p in draw(
            &Differences::Exactly(vec![Attribute::Kind, Attribute::Pitch]),
            4,
        ) {
            assert_eq!(pool[p.first].differences(&pool[p.second]), kind_pitch);
        }
        // Including kind: kind always differs, 1-3 differences in all, each count about a third.
        let mut counts = [0usize; 6];
        let mut others = [0usize; 5];
        for p in draw(&Differences::Including(vec![Attribute::Kind], None), 5) {
            let d = pool[p.first].differences(&pool[p.second]);
            assert!(d.contains(&Attribute::Kind), "{d:?}");
            counts[d.len()] += 1;
            for (k, a) in Attribute::ALL.iter().enumerate() {
                others[k] += usize::from(d.contains(a) && *a != Attribute::Kind);
            }
        }
        for (n, &c) in counts.iter().enumerate().skip(1).take(3) {
            assert!((90..=180).contains(&c), "{c} pairs with {n} differences");
        }
        assert_eq!(counts[4] + counts[5], 0);
        // The other four attributes share the extra differences (400 pairs, 400 extras expected:
        // about 100 each).
        for (k, a) in Attribute::ALL.iter().enumerate() {
            if *a != Attribute::Kind {
                assert!((60..=140).contains(&others[k]), "{a:?} extra {}", others[k]);
            }
        }
        for p in draw(&Differences::Including(vec![Attribute::Pitch], Some(2)), 6) {
            let d = pool[p.first].differences(&pool[p.second]);
            assert!(d.len() == 2 && d.contains(&Attribute::Pitch), "{d:?}");
        }
        // Pairs come from across the pool, not from a few clips.
        let firsts: std::collections::HashSet<usize> = drawn.iter().map(|p| p.first).collect();
        assert!(firsts.len() > 250, "{} distinct first clips", firsts.len());
    }

    #[test]
    fn a_pool_without_such_pairs_is_an_error() {
        let a = pool(1)[0];
        let mut rng = StdRng::seed_from_u64(0);
        // Two identical clips differ in nothing.
        let err = remix_pairs(&[a, a], 1, &Differences::Drawn, &mut rng).unwrap_err();
        assert!(err.to_string().contains("differ as asked"), "{err}");
        let err = remix_pairs(&[a], 1, &Differences::Drawn, &mut rng).unwrap_err();
        assert!(err.to_string().contains("at least 2 clips"), "{err}");
        let none = Differences::Exactly(vec![]);
        assert!(remix_pairs(&[a, a], 1, &none, &mut rng).is_err());
        let none = Differences::Including(vec![], None);
        assert!(remix_pairs(&[a, a], 1, &none, &mut rng).is_err());
    }
}

//! Which caption rows are compared with which (paper, appendix E, step 2).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{AdiffError, Result};

/// Rows excluded as partners of row `i`: `i, i+1, .., i+4` (the paper's rule). Neighbouring rows
/// of a flattened caption file are often the same recording (Clotho has five captions per audio),
/// so they would make a "difference" between a clip and itself.
pub const EXCLUDED_WINDOW: usize = 5;

/// Fewest rows that leave row `i` at least one partner.
pub const MIN_ROWS: usize = EXCLUDED_WINDOW + 1;

/// Rejection draws before falling back to listing the candidates explicitly (reached only when
/// nearly every row shares row `i`'s audio).
const MAX_REJECTIONS: usize = 64;

/// One pair: row `first` is audio 1, row `second` audio 2. There is one pair per row, and
/// `first` is the pair's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub first: usize,
    pub second: usize,
}

/// Pairs every row `i` of `n` with a partner `j` drawn uniformly among all rows except
/// `i, i+1, .., i+4` (indices wrap around modulo `n`, so the last rows also lose five candidates
/// and every row has the same `n - 5` of them), as the paper's appendix E does.
///
/// Beyond the paper, `j` must not be the same audio file as `i` (`same_audio(i, j)`): with
/// Clotho's five captions per audio, rows `i-4 .. i-1` can be the same recording, and a pair of a
/// clip with itself has no difference to explain. If every candidate is the same audio, the row
/// is an error.
///
/// One seeded generator is drawn from in row order: the same `seed` and rows give the same pairs,
/// on every platform (rand's `StdRng`, fixed for a given rand version).
pub fn pair_rows(
    n: usize,
    seed: u64,
    same_audio: impl Fn(usize, usize) -> bool,
) -> Result<Vec<Pair>> {
    if n < MIN_ROWS {
        return Err(AdiffError::Invalid(format!(
            "pairing needs at least {MIN_ROWS} caption rows (each row's partner is drawn from the \
             rows other than itself and the next {}), got {n}",
            EXCLUDED_WINDOW - 1
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let candidates = n - EXCLUDED_WINDOW;
    // Candidate k (0-based) of row i is row (i + 5 + k) mod n: the rows outside the window.
    let candidate = |i: usize, k: usize| (i + EXCLUDED_WINDOW + k) % n;
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let mut second = None;
        for _ in 0..MAX_REJECTIONS {
            let j = candidate(i, rng.random_range(0..candidates));
            if !same_audio(i, j) {
                second = Some(j);
                break;
            }
        }
        let second = match second {
            Some(j) => j,
            None => {
                let valid: Vec<usize> = (0..candidates)
                    .map(|k| candidate(i, k))
                    .filter(|&j| !same_audio(i, j))
                    .collect();
                if valid.is_empty() {
                    return Err(AdiffError::Invalid(format!(
                        "caption row {} has no partner: every row outside it and the next {} \
                         is the same audio file",
                        i + 1,
                        EXCLUDED_WINDOW - 1
                    )));
                }
                valid[rng.random_range(0..valid.len())]
            }
        };
        pairs.push(Pair { first: i, second });
    }
    Ok(pairs)
}

/// Whether `j` is inside row `i`'s excluded window `i..=i+4` (modulo `n`).
pub fn in_excluded_window(i: usize, j: usize, n: usize) -> bool {
    (j + n - i) % n < EXCLUDED_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_wraps() {
        assert!(in_excluded_window(8, 0, 10));
        assert!(in_excluded_window(8, 2, 10));
        assert!(!in_excluded_window(8, 3, 10));
        assert!(!in_excluded_window(8, 7, 10));
    }

    #[test]
    fn fallback_finds_the_rare_other_audio() {
        // Rows 0 and 30 are audio 1, the other 58 rows audio 0: rejection often gives up and the
        // explicit list must still find row 0 or 30.
        let audio = |i: usize| usize::from(i == 0 || i == 30);
        let pairs = pair_rows(60, 3, |i, j| audio(i) == audio(j)).unwrap();
        for p in &pairs {
            assert_ne!(audio(p.first), audio(p.second), "{p:?}");
            assert!(!in_excluded_window(p.first, p.second, 60), "{p:?}");
        }
    }

    #[test]
    fn a_row_without_partner_is_an_error() {
        // Row 5's candidates (0..=4) are all its own audio.
        let audio = |i: usize| usize::from(i == 9);
        let e = pair_rows(10, 3, |i, j| audio(i) == audio(j))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no partner"), "{e}");
    }
}

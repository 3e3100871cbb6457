//! Meteor 1.5's aligner (`edu.cmu.meteor.aligner`): candidate matches from the exact, stem,
//! synonym and paraphrase modules, one-to-one non-overlapping matches fixed, then a left-to-right
//! beam search over the reference positions for the alignment with the most (search-weighted)
//! matched words, then the fewest chunks, then the smallest distance.
//!
//! Reproduced faithfully, quirks included, because they change scores: words are compared by
//! Java `String.hashCode`; the search weights are accumulated into an `int` (Java's `+=` on an
//! int truncates, so a one-word non-exact match adds nothing); and when a path branches, the
//! match distance is added to the *parent* path, not the branch.

use rust_stemmers::{Algorithm, Stemmer};

use super::resources::MeteorResources;

/// Module order of Meteor's English task (indices into the weight arrays).
pub const MODULE_EXACT: usize = 0;
pub const MODULE_STEM: usize = 1;
pub const MODULE_SYNONYM: usize = 2;
pub const MODULE_PARAPHRASE: usize = 3;
pub const MODULES: usize = 4;

/// A candidate match: `length` reference words from `start` to `match_length` hypothesis words
/// from `match_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub start: usize,
    pub length: usize,
    pub match_start: usize,
    pub match_length: usize,
    pub module: usize,
}

/// Counts the scorer needs from one alignment (hypothesis = line 1, reference = line 2).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlignmentCounts {
    pub content1: [u32; MODULES],
    pub content2: [u32; MODULES],
    pub function1: [u32; MODULES],
    pub function2: [u32; MODULES],
    pub function_words1: u32,
    pub function_words2: u32,
    pub chunks: u32,
}

/// Java's `String.hashCode` (UTF-16 code units), Meteor's word key.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// A path of the beam search. Its per-word state lives in one buffer so that branching costs
/// one allocation: the chosen match per reference position (arena index + 1, 0 for none), then
/// a used flag per hypothesis word, then one per reference word.
#[derive(Clone)]
struct PartialAlignment {
    state: Vec<u32>,
    n1: usize,
    n2: usize,
    matches1: i32,
    matches2: i32,
    chunks: i32,
    idx: usize,
    last_match_end: Option<usize>,
    distance: i32,
}

impl PartialAlignment {
    fn new(n1: usize, n2: usize) -> Self {
        Self {
            state: vec![0; n2 + n1 + n2],
            n1,
            n2,
            matches1: 0,
            matches2: 0,
            chunks: 0,
            idx: 0,
            last_match_end: None,
            distance: 0,
        }
    }

    /// A copy whose buffer comes from `pool` (the buffers of paths the beam dropped) when it
    /// has one: branching then allocates only while the pool is empty.
    fn clone_from_pool(&self, pool: &mut Vec<Vec<u32>>) -> Self {
        let state = match pool.pop() {
            Some(mut buf) => {
                buf.clear();
                buf.extend_from_slice(&self.state);
                buf
            }
            None => self.state.clone(),
        };
        Self { state, ..*self }
    }

    fn chosen(&self, j: usize) -> Option<usize> {
        self.state[j].checked_sub(1).map(|k| k as usize)
    }

    fn choose(&mut self, j: usize, arena_idx: usize) {
        self.state[j] = arena_idx as u32 + 1;
    }

    fn used2(&self, j: usize) -> bool {
        self.state[self.n2 + self.n1 + j] != 0
    }

    fn is_used(&self, m: &Match) -> bool {
        let u1 = self.n2 + m.match_start;
        let u2 = self.n2 + self.n1 + m.start;
        self.state[u2..u2 + m.length].iter().any(|&u| u != 0)
            || self.state[u1..u1 + m.match_length].iter().any(|&u| u != 0)
    }

    fn set_used(&mut self, m: &Match) {
        let u1 = self.n2 + m.match_start;
        let u2 = self.n2 + self.n1 + m.start;
        self.state[u2..u2 + m.length].fill(1);
        self.state[u1..u1 + m.match_length].fill(1);
    }

    /// Java: `matches1 += matchLength * weight` on an int field (truncating cast).
    fn add_weighted(&mut self, m: &Match, w: f64) {
        self.matches1 = (f64::from(self.matches1) + m.match_length as f64 * w) as i32;
        self.matches2 = (f64::from(self.matches2) + m.length as f64 * w) as i32;
    }

    fn extend_chunk(&mut self, m: &Match) {
        if self.last_match_end.is_some_and(|e| e != m.match_start) {
            self.chunks += 1;
        }
        self.idx = m.start + m.length;
        self.last_match_end = Some(m.match_start + m.match_length);
    }

    /// `Constants.PARTIAL_COMPARE_TOTAL`: more weighted matches, then fewer chunks, then less
    /// distance.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.matches1 + other.matches2)
            .cmp(&(self.matches1 + self.matches2))
            .then(self.chunks.cmp(&other.chunks))
            .then(self.distance.cmp(&other.distance))
    }
}

fn distance(m: &Match) -> i32 {
    (m.start as i32 - m.match_start as i32).abs()
}

/// What the matchers need to know of a word, computed once per distinct word.
#[derive(Debug, Clone)]
pub struct WordInfo {
    /// Java hash of the word (Meteor's exact-match key).
    key: i32,
    /// Java hash of its Snowball stem.
    stem: i32,
    /// Its WordNet synsets and those of its base form, sorted.
    synsets: Vec<u32>,
    function: bool,
    /// Id in the paraphrase table, if any entry uses the word.
    para: Option<u32>,
}

/// Whether two sorted id lists share an element.
fn intersects(a: &[u32], b: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// Aligns one hypothesis with one reference (both already normalised and split into words).
pub struct Aligner<'a> {
    pub resources: &'a MeteorResources,
    pub stemmer: Stemmer,
    /// Weights used only to rank partial alignments (Meteor's scorer sets 1, .5, .5, .5).
    pub search_weights: [f64; MODULES],
    pub beam_size: usize,
}

/// Candidate matches (`arena`), listed per reference position in the order found (`at`), with
/// the number of candidates covering each word.
struct Candidates {
    arena: Vec<Match>,
    at: Vec<Vec<usize>>,
    cov1: Vec<u32>,
    cov2: Vec<u32>,
}

impl Candidates {
    fn new(n1: usize, n2: usize) -> Self {
        Self {
            arena: Vec::new(),
            at: vec![Vec::new(); n2],
            cov1: vec![0; n1],
            cov2: vec![0; n2],
        }
    }

    /// Coverage counts every word a match spans (a phrase covers all of its words).
    fn add(&mut self, m: Match) {
        self.cov1[m.match_start..m.match_start + m.match_length]
            .iter_mut()
            .for_each(|c| *c += 1);
        self.cov2[m.start..m.start + m.length]
            .iter_mut()
            .for_each(|c| *c += 1);
        self.at[m.start].push(self.arena.len());
        self.arena.push(m);
    }

    /// One-word matches of a module: every (reference j, hypothesis i) pair, j outer, for
    /// which `accept` holds.
    fn add_pairs(
        &mut self,
        w1: &[&WordInfo],
        w2: &[&WordInfo],
        module: usize,
        accept: impl Fn(&WordInfo, &WordInfo) -> bool,
    ) {
        for (j, b) in w2.iter().enumerate() {
            for (i, a) in w1.iter().enumerate() {
                if accept(a, b) {
                    self.add(Match {
                        start: j,
                        length: 1,
                        match_start: i,
                        match_length: 1,
                        module,
                    });
                }
            }
        }
    }
}

impl<'a> Aligner<'a> {
    pub fn new(
        resources: &'a MeteorResources,
        search_weights: [f64; MODULES],
        beam_size: usize,
    ) -> Self {
        Self {
            resources,
            stemmer: Stemmer::create(Algorithm::English),
            search_weights,
            beam_size,
        }
    }

    /// The matchers' view of a word.
    pub fn word_info(&self, word: &str) -> WordInfo {
        let mut synsets: Vec<u32> = self
            .resources
            .synonyms
            .all_synsets(word)
            .into_iter()
            .collect();
        synsets.sort_unstable();
        WordInfo {
            key: java_hash(word),
            stem: java_hash(&self.stemmer.stem(word)),
            synsets,
            function: self.resources.function_words.contains(&word.to_lowercase()),
            para: self.resources.paraphrases.word_id(word),
        }
    }

    /// Candidate matches in Meteor's order (module by module; within a module, reference
    /// position then hypothesis position).
    fn candidates(&self, w1: &[&WordInfo], w2: &[&WordInfo]) -> Candidates {
        let mut c = Candidates::new(w1.len(), w2.len());
        c.add_pairs(w1, w2, MODULE_EXACT, |a, b| a.key == b.key);
        // Identical sentences need exact matches only (prevents beam search errors).
        let identical = w1.len() == w2.len() && w1.iter().zip(w2).all(|(a, b)| a.key == b.key);
        if identical {
            return c;
        }
        // Stem: same stem, different word. Synonym: a shared synset, different word.
        c.add_pairs(w1, w2, MODULE_STEM, |a, b| {
            a.stem == b.stem && a.key != b.key
        });
        c.add_pairs(w1, w2, MODULE_SYNONYM, |a, b| {
            a.key != b.key && intersects(&a.synsets, &b.synsets)
        });
        // Paraphrase: a phrase of one line whose paraphrase occurs in the other.
        let pt = &self.resources.paraphrases;
        let l1: Vec<Option<u32>> = w1.iter().map(|w| w.para).collect();
        let l2: Vec<Option<u32>> = w2.iter().map(|w| w.para).collect();
        let occurrences = |line: &[Option<u32>], words: &[u32]| -> Vec<usize> {
            (0..line.len())
                .filter(|&at| {
                    at + words.len() <= line.len()
                        && words.iter().zip(&line[at..]).all(|(w, l)| *l == Some(*w))
                })
                .collect()
        };
        for j in 0..l2.len() {
            for (len, words) in pt.paths(&l2, j) {
                for i in occurrences(&l1, words) {
                    c.add(Match {
                        start: j,
                        length: len,
                        match_start: i,
                        match_length: words.len(),
                        module: MODULE_PARAPHRASE,
                    });
                }
            }
        }
        for i in 0..l1.len() {
            for (len, words) in pt.paths(&l1, i) {
                for j in occurrences(&l2, words) {
                    c.add(Match {
                        start: j,
                        length: words.len(),
                        match_start: i,
                        match_length: len,
                        module: MODULE_PARAPHRASE,
                    });
                }
            }
        }
        c
    }

    /// Aligns hypothesis `w1` with reference `w2` and counts matches by module and word type.
    pub fn align(&self, w1: &[&WordInfo], w2: &[&WordInfo]) -> AlignmentCounts {
        let c = self.candidates(w1, w2);
        let mut start = PartialAlignment::new(w1.len(), w2.len());
        // One-to-one, non-overlapping matches are definite.
        for (i, ms) in c.at.iter().enumerate() {
            if let [k] = ms.as_slice() {
                let m = &c.arena[*k];
                let overlap = c.cov2[i..i + m.length].iter().any(|&n| n != 1)
                    || c.cov1[m.match_start..m.match_start + m.match_length]
                        .iter()
                        .any(|&n| n != 1);
                if !overlap {
                    start.choose(i, *k);
                    start.set_used(m);
                }
            }
        }
        let best = self.resolve(&c, start);
        let chosen: Vec<Option<Match>> = (0..w2.len())
            .map(|j| best.chosen(j).map(|k| c.arena[k]))
            .collect();

        let mut counts = AlignmentCounts {
            function_words1: w1.iter().filter(|w| w.function).count() as u32,
            function_words2: w2.iter().filter(|w| w.function).count() as u32,
            ..Default::default()
        };
        for m in chosen.iter().flatten() {
            for w in &w1[m.match_start..m.match_start + m.match_length] {
                if w.function {
                    counts.function1[m.module] += 1;
                } else {
                    counts.content1[m.module] += 1;
                }
            }
            for w in &w2[m.start..m.start + m.length] {
                if w.function {
                    counts.function2[m.module] += 1;
                } else {
                    counts.content2[m.module] += 1;
                }
            }
        }
        counts.chunks = count_chunks(&chosen);
        counts
    }

    /// Beam search for the best alignment (`Aligner.resolve`), Java's stable sort included.
    fn resolve(&self, c: &Candidates, start: PartialAlignment) -> PartialAlignment {
        let w = &self.search_weights;
        let n2 = c.at.len();
        let mut next = vec![start];
        let mut pool: Vec<Vec<u32>> = Vec::new();
        for current in 0..=n2 {
            let mut paths = std::mem::take(&mut next);
            paths.sort_by(|a, b| a.cmp(b));
            if paths.len() > self.beam_size {
                pool.extend(paths.drain(self.beam_size..).map(|p| p.state));
            }
            // Meteor keeps the best path when no path can continue (it warns).
            let fallback = paths[0].clone_from_pool(&mut pool);
            for mut path in paths {
                if current == n2 {
                    // Complete: close the last chunk.
                    if path.last_match_end.is_some() {
                        path.chunks += 1;
                    }
                    next.push(path);
                    continue;
                }
                if path.used2(current) {
                    if current < path.idx {
                        // Still inside a match.
                        next.push(path);
                    } else if let Some(k) = path.chosen(path.idx) {
                        // A fixed match.
                        let m = &c.arena[k];
                        path.add_weighted(m, w[m.module]);
                        path.extend_chunk(m);
                        path.distance += distance(m);
                        next.push(path);
                    }
                    continue;
                }
                for &k in &c.at[current] {
                    let m = &c.arena[k];
                    if path.is_used(m) {
                        continue;
                    }
                    let mut branch = path.clone_from_pool(&mut pool);
                    branch.set_used(m);
                    branch.choose(current, k);
                    branch.add_weighted(m, w[m.module]);
                    branch.extend_chunk(m);
                    // Meteor adds the distance to the parent path, not the branch.
                    path.distance += distance(m);
                    next.push(branch);
                }
                // Try skipping this position.
                if path.last_match_end.is_some() {
                    path.chunks += 1;
                    path.last_match_end = None;
                }
                path.idx += 1;
                next.push(path);
            }
            if next.is_empty() {
                next.push(fallback);
            } else {
                pool.push(fallback.state);
            }
        }
        next.sort_by(|a, b| a.cmp(b));
        next.swap_remove(0)
    }
}

/// Chunks of a final alignment (`getCountAndChunks`).
fn count_chunks(matches: &[Option<Match>]) -> u32 {
    let mut chunks = 0;
    let mut idx = 0;
    let mut last_end: Option<usize> = None;
    while idx < matches.len() {
        match &matches[idx] {
            None => {
                if last_end.is_some() {
                    chunks += 1;
                    last_end = None;
                }
                idx += 1;
            }
            Some(m) => {
                if last_end.is_some_and(|e| e != m.match_start) {
                    chunks += 1;
                }
                idx = m.start + m.length;
                last_end = Some(m.match_start + m.match_length);
            }
        }
    }
    if last_end.is_some() {
        chunks += 1;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::java_hash;

    #[test]
    fn java_string_hash() {
        // Values from Java's "…".hashCode().
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99162322);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
    }
}

//! Meteor's paraphrase table in a compact binary form, cached on disk so that scoring does not
//! inflate and parse the 62 MB `paraphrase-en.gz` at every run (it took ~1.4 s of a 1.56 s
//! `eval` of 500 items). Built from the table at first use, written atomically beside it (or in
//! adiff's cache directory when that folder is read-only), and used only while the source file's
//! size and SHA-256 match the ones it records; otherwise it is rebuilt.
//!
//! Layout (little-endian): magic `ADIFFPT1`, u64 size and 32-byte SHA-256 of the source, u32
//! word count W, u32 entry count E, u32 id count I; W + 1 u32 offsets into the word bytes, then
//! the words (sorted, so a word's id is its rank); E pairs of u16 (reference and paraphrase
//! phrase lengths, in words); I u32 word ids, the phrases of each entry in file order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{AdiffError, Result};

const MAGIC: &[u8; 8] = b"ADIFFPT1";
/// Magic, source size, source hash, three counts.
const HEADER: usize = 8 + 8 + 32 + 12;
/// The cache's file name, beside `paraphrase-en.gz` or under `<cache dir>/meteor/`.
pub const CACHE_NAME: &str = "paraphrase-en.adiff-cache";

/// The whole table, every entry (the texts' filter is applied when it is read, see [`Cached`]).
#[derive(Debug, Default)]
pub struct FullTable {
    /// Word -> first-seen id while parsing.
    vocab: HashMap<Vec<u8>, u32>,
    /// (reference, paraphrase) phrase lengths per entry.
    lens: Vec<[u16; 2]>,
    /// The phrases' word ids, flat.
    ids: Vec<u32>,
}

impl FullTable {
    /// Adds one entry: its reference and paraphrase lines, split into words by `split`.
    pub fn push<'a>(
        &mut self,
        reference: impl Iterator<Item = &'a [u8]>,
        paraphrase: impl Iterator<Item = &'a [u8]>,
    ) -> Result<()> {
        let mut lens = [0u16; 2];
        for (k, phrase) in [
            Box::new(reference) as Box<dyn Iterator<Item = &[u8]>>,
            Box::new(paraphrase),
        ]
        .into_iter()
        .enumerate()
        {
            for w in phrase {
                let n = self.vocab.len() as u32;
                let id = *self.vocab.entry(w.to_vec()).or_insert(n);
                self.ids.push(id);
                lens[k] = lens[k].checked_add(1).ok_or_else(|| {
                    AdiffError::Invalid("METEOR data: a paraphrase of over 65535 words".into())
                })?;
            }
        }
        self.lens.push(lens);
        Ok(())
    }

    /// The cache file's bytes for a source of `size` bytes and hash `sha`.
    pub fn encode(self, size: u64, sha: &[u8; 32]) -> Vec<u8> {
        // Ids by rank of the sorted words.
        let mut words: Vec<(Vec<u8>, u32)> = self.vocab.into_iter().collect();
        words.sort_unstable();
        let mut rank = vec![0u32; words.len()];
        for (r, (_, id)) in words.iter().enumerate() {
            rank[*id as usize] = r as u32;
        }
        let word_bytes: usize = words.iter().map(|(w, _)| w.len()).sum();
        let mut out = Vec::with_capacity(
            HEADER + 4 * (words.len() + 1) + word_bytes + 4 * self.lens.len() + 4 * self.ids.len(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(sha);
        for n in [words.len(), self.lens.len(), self.ids.len()] {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        let mut at = 0u32;
        out.extend_from_slice(&at.to_le_bytes());
        for (w, _) in &words {
            at += w.len() as u32;
            out.extend_from_slice(&at.to_le_bytes());
        }
        for (w, _) in &words {
            out.extend_from_slice(w);
        }
        for [r, p] in &self.lens {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&p.to_le_bytes());
        }
        for id in &self.ids {
            out.extend_from_slice(&rank[*id as usize].to_le_bytes());
        }
        out
    }
}

/// A cache file's contents, checked against its source.
pub struct Cached<'a> {
    offsets: &'a [u8],
    words: &'a [u8],
    lens: &'a [u8],
    ids: &'a [u8],
    n_words: usize,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

impl<'a> Cached<'a> {
    /// The cache in `bytes` if it is one, intact, and made from a source of `size` bytes
    /// hashing to `sha`; None otherwise (then it is rebuilt).
    pub fn parse(bytes: &'a [u8], size: u64, sha: &[u8; 32]) -> Option<Self> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return None;
        }
        if bytes[8..16] != size.to_le_bytes() || &bytes[16..48] != sha {
            return None;
        }
        let count = |i: usize| u32_at(&bytes[48..60], i) as usize;
        let (n_words, n_entries, n_ids) = (count(0), count(1), count(2));
        let offsets_end = HEADER.checked_add(4 * (n_words + 1))?;
        let offsets = bytes.get(HEADER..offsets_end)?;
        let word_bytes = u32_at(offsets, n_words) as usize;
        let words_end = offsets_end.checked_add(word_bytes)?;
        let lens_end = words_end.checked_add(4 * n_entries)?;
        let ids_end = lens_end.checked_add(4 * n_ids)?;
        if ids_end != bytes.len() {
            return None;
        }
        Some(Self {
            offsets,
            words: &bytes[offsets_end..words_end],
            lens: &bytes[words_end..lens_end],
            ids: &bytes[lens_end..ids_end],
            n_words,
        })
    }

    /// The word of id `i`.
    pub fn word(&self, i: usize) -> &'a [u8] {
        let (a, b) = (
            u32_at(self.offsets, i) as usize,
            u32_at(self.offsets, i + 1) as usize,
        );
        &self.words[a.min(b)..b.min(self.words.len())]
    }

    /// The id of `word`, if the table uses it.
    pub fn id(&self, word: &[u8]) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.n_words);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.word(mid).cmp(word) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    pub fn n_words(&self) -> usize {
        self.n_words
    }

    /// Calls `f(reference ids, paraphrase ids)` for every entry in file order whose reference
    /// phrase has only words `keep` marks (each other entry costs one look at its first word,
    /// most of the time); None if the lengths run past the ids or an id past the words (a
    /// damaged file).
    pub fn for_each_entry(&self, keep: &[bool], mut f: impl FnMut(&[u32], &[u32])) -> Option<()> {
        let n_ids = self.ids.len() / 4;
        let known = |id: u32| keep.get(id as usize).copied();
        let (mut pos, mut buf) = (0usize, Vec::new());
        for e in self.lens.chunks_exact(4) {
            let r = u16::from_le_bytes([e[0], e[1]]) as usize;
            let p = u16::from_le_bytes([e[2], e[3]]) as usize;
            let end = pos + r + p;
            if end > n_ids {
                return None;
            }
            let mut wanted = true;
            for i in pos..pos + r {
                if !known(u32_at(self.ids, i))? {
                    wanted = false;
                    break;
                }
            }
            if wanted {
                buf.clear();
                for i in pos..end {
                    let id = u32_at(self.ids, i);
                    if id as usize >= self.n_words {
                        return None;
                    }
                    buf.push(id);
                }
                f(&buf[..r], &buf[r..]);
            }
            pos = end;
        }
        (pos == n_ids).then_some(())
    }
}

/// Where the cache of `source` may live, in order of preference.
pub fn locations(source: &Path) -> Vec<PathBuf> {
    let mut v = vec![source.with_file_name(CACHE_NAME)];
    if let Ok(dir) = crate::hub::cache_dir() {
        v.push(dir.join("meteor").join(CACHE_NAME));
    }
    v
}

/// Size and SHA-256 of the source table's bytes.
pub fn fingerprint(source: &[u8]) -> (u64, [u8; 32]) {
    (source.len() as u64, Sha256::digest(source).into())
}

/// Writes `bytes` to the first location that takes it (a temporary file renamed into place, so
/// a reader never sees half a cache); false if none does.
pub fn store(locations: &[PathBuf], bytes: &[u8]) -> bool {
    for path in locations {
        let Some(dir) = path.parent() else { continue };
        if std::fs::create_dir_all(dir).is_err() {
            continue;
        }
        // Unique per writer: two threads (or processes) building at once each rename a whole file.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_ok() {
            return true;
        }
        let _ = std::fs::remove_file(&tmp);
    }
    false
}

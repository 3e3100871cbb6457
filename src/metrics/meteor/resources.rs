//! Meteor 1.5's English language data, read at run time from the user's copy (never bundled):
//! either `meteor-1.5.jar` itself (function words, synonyms and nonbreaking prefixes are entries
//! of the jar; the paraphrase table is `data/paraphrase-en.gz` beside it, as pycocoevalcap ships
//! them) or a directory holding the extracted files in the same layout.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::normalize::{java_tokens, parse_nonbreaking, Nonbreaking};
use super::paraphrase_cache::{self, Cached, FullTable};
use crate::error::{AdiffError, Result};

/// Java `StringTokenizer`'s delimiters, as bytes.
const JAVA_DELIMS: &[u8] = b" \t\n\r\x0c";
/// Inflated bytes per block handed from the inflating thread to the parser.
const BLOCK_BYTES: usize = 4 << 20;
/// Blocks queued between the two threads.
const BLOCKS_IN_FLIGHT: usize = 4;

/// Fills `buf` as far as the reader allows (a short count only at the end of the stream).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Entries of the jar (or paths under a data directory).
const FUNCTION_WORDS: &str = "function/english.words";
const SYN_EXCEPTIONS: &str = "synonym/english.exceptions";
const SYN_SYNSETS: &str = "synonym/english.synsets";
const NONBREAKING: &str = "nonbreaking/english.prefixes";
/// The paraphrase table, relative to the jar's directory or the data directory.
const PARAPHRASES: &str = "data/paraphrase-en.gz";
/// Environment variable naming the data when `--meteor-data` is not given.
pub const METEOR_DATA_ENV: &str = "ADIFF_METEOR_DATA";

/// WordNet synsets and the morphological exceptions Meteor's synonym module uses.
#[derive(Debug, Default)]
pub struct SynonymDictionary {
    word_to_bases: HashMap<String, Vec<String>>,
    word_to_synsets: HashMap<String, HashSet<u32>>,
}

/// WordNet 3's detachment rules, in Meteor's order (noun, verb, adjective suffixes).
const MORPH_SUFFIXES: [(&str, &str); 20] = [
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("s", ""),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
];

impl SynonymDictionary {
    fn parse(exceptions: &str, synsets: &str) -> Result<Self> {
        let mut word_to_bases: HashMap<String, Vec<String>> = HashMap::new();
        let mut lines = exceptions.lines();
        while let Some(base) = lines.next() {
            let forms = lines.next().unwrap_or("");
            for form in java_tokens(forms) {
                word_to_bases
                    .entry(form.to_string())
                    .or_default()
                    .push(base.to_string());
            }
        }
        let mut word_to_synsets = HashMap::new();
        let mut lines = synsets.lines();
        while let Some(word) = lines.next() {
            let ids = lines.next().unwrap_or("");
            let set = java_tokens(ids)
                .map(|t| {
                    t.parse::<u32>().map_err(|_| {
                        AdiffError::Invalid(format!(
                            "METEOR data: bad synset id {t:?} for {word:?} in {SYN_SYNSETS}"
                        ))
                    })
                })
                .collect::<Result<HashSet<u32>>>()?;
            word_to_synsets.insert(word.to_string(), set);
        }
        Ok(Self {
            word_to_bases,
            word_to_synsets,
        })
    }

    fn synsets(&self, word: &str) -> impl Iterator<Item = u32> + '_ {
        self.word_to_synsets
            .get(word)
            .into_iter()
            .flatten()
            .copied()
    }

    /// Synsets of the word and of its base form (`getSynSets` + `getStemSynSets`).
    pub fn all_synsets(&self, word: &str) -> HashSet<u32> {
        let mut set: HashSet<u32> = self.synsets(word).collect();
        match self.word_to_bases.get(word) {
            Some(bases) => {
                for b in bases {
                    set.extend(self.synsets(b));
                }
            }
            None => set.extend(self.synsets(&self.morph(word))),
        }
        set
    }

    /// Meteor's WordNet-style base form (`SynonymDictionary.morph`), quirks included: words
    /// ending in "ss" or of <= 2 chars are their own base, a "-ful" word gets "ful" appended to
    /// its base, and "" means no base found.
    fn morph(&self, word: &str) -> String {
        let end = if word.ends_with("ful") { "ful" } else { "" };
        if word.ends_with("ss") || word.encode_utf16().count() <= 2 {
            return word.to_string();
        }
        for (suffix, add) in MORPH_SUFFIXES {
            if let Some(stem) = word.strip_suffix(suffix) {
                let base = format!("{stem}{add}");
                if self.word_to_synsets.contains_key(&base) {
                    return base + end;
                }
            }
        }
        String::new()
    }
}

/// Meteor's paraphrase table, reduced to the entries that can match the given vocabulary: an
/// entry matches only when every word of both phrases occurs in the texts, so the others are
/// dropped while reading (the order of the kept ones, which the aligner depends on, is kept).
#[derive(Debug, Default)]
pub struct ParaphraseTable {
    /// Reference phrase -> indices into `paraphrases`, in file order.
    by_phrase: HashMap<Vec<u32>, Vec<u32>>,
    paraphrases: Vec<Vec<u32>>,
    /// Word ids (only the words of the texts are ever given ids).
    vocab: HashMap<String, u32>,
    max_len: usize,
}

/// The file's bytes, memory-mapped (read-only; the cache is only ever replaced by a rename, so
/// a mapped copy never changes under the reader).
fn map(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = File::open(path)?;
    // SAFETY: the mapping is read-only and dropped before this load returns; adiff never writes
    // either file in place (a truncation by another program would be a bus error, as for any
    // memory-mapped reader).
    unsafe { memmap2::Mmap::map(&file) }
}

impl ParaphraseTable {
    /// The table at `path` (gzip text) filtered to `words`, read through its binary cache
    /// ([`paraphrase_cache`]), which is built and stored at first use and rebuilt whenever the
    /// table's size or SHA-256 no longer match.
    fn load(path: &Path, words: &HashSet<String>) -> Result<Self> {
        let err = |e: String| {
            AdiffError::Invalid(format!(
                "METEOR data: paraphrase table {}: {e}",
                path.display()
            ))
        };
        let source = map(path).map_err(|e| err(e.to_string()))?;
        let (size, sha) = paraphrase_cache::fingerprint(&source);
        let places = paraphrase_cache::locations(path);
        for place in &places {
            let Ok(bytes) = map(place) else {
                continue;
            };
            if let Some(table) = Cached::parse(&bytes, size, &sha)
                .and_then(|cached| Self::from_cached(&cached, words))
            {
                return Ok(table);
            }
        }
        let bytes = Self::parse_full(source.to_vec())?.encode(size, &sha);
        // A read-only data folder and cache dir only cost the next run the same parse.
        paraphrase_cache::store(&places, &bytes);
        Cached::parse(&bytes, size, &sha)
            .and_then(|cached| Self::from_cached(&cached, words))
            .ok_or_else(|| err("the table's own cache does not read back".into()))
    }

    /// Every entry of the gzip table: one thread inflates blocks of whole lines while this one
    /// splits them (inflating alone takes about as long as parsing, so the two overlap).
    fn parse_full(gz: Vec<u8>) -> Result<FullTable> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(BLOCKS_IN_FLIGHT);
        let inflater = std::thread::spawn(move || {
            let mut gz = MultiGzDecoder::new(std::io::Cursor::new(gz));
            let mut carry: Vec<u8> = Vec::new();
            loop {
                let mut block = std::mem::take(&mut carry);
                let filled = block.len();
                block.resize(filled + BLOCK_BYTES, 0);
                let n = match read_full(&mut gz, &mut block[filled..]) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                block.truncate(filled + n);
                if n == 0 {
                    if !block.is_empty() {
                        let _ = tx.send(Ok(block));
                    }
                    return;
                }
                // Keep the unfinished last line for the next block.
                if let Some(cut) = block.iter().rposition(|&b| b == b'\n') {
                    carry = block.split_off(cut + 1);
                }
                if tx.send(Ok(block)).is_err() {
                    return;
                }
            }
        });
        let words = |line: &[u8]| {
            line.split(|b| JAVA_DELIMS.contains(b))
                .filter(|w| !w.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        let mut table = FullTable::default();
        // Lines come in threes: probability, phrase, paraphrase.
        let mut line_no: u64 = 0;
        let mut reference: Vec<Vec<u8>> = Vec::new();
        for block in rx {
            let block = block.map_err(|e| {
                AdiffError::Invalid(format!(
                    "METEOR data: {PARAPHRASES} is not readable gzip text: {e}"
                ))
            })?;
            // Blocks hold whole lines; the final '\n' does not start another line.
            let body = block.strip_suffix(b"\n").unwrap_or(&block);
            for line in body.split(|&b| b == b'\n') {
                match line_no % 3 {
                    0 => {}
                    1 => reference = words(line),
                    _ => {
                        let par = words(line);
                        table.push(
                            reference.iter().map(Vec::as_slice),
                            par.iter().map(Vec::as_slice),
                        )?;
                    }
                }
                line_no += 1;
            }
        }
        inflater
            .join()
            .map_err(|_| AdiffError::Invalid("METEOR data: the inflating thread failed".into()))?;
        Ok(table)
    }

    /// The entries of `cached` whose words all occur in `words`, in file order, with word ids
    /// given in order of first use (as reading the text table does: a reference phrase whose
    /// words all occur gives its words ids even when its paraphrase is dropped). None when the
    /// cache is damaged.
    fn from_cached(cached: &Cached, words: &HashSet<String>) -> Option<Self> {
        let mut known = vec![false; cached.n_words()];
        for w in words {
            if let Some(id) = cached.id(w.as_bytes()) {
                known[id as usize] = true;
            }
        }
        let mut table = ParaphraseTable::default();
        let mut ours = vec![u32::MAX; cached.n_words()];
        let mut assign = |table: &mut ParaphraseTable, ids: &[u32]| -> Vec<u32> {
            ids.iter()
                .map(|&i| {
                    let slot = &mut ours[i as usize];
                    if *slot == u32::MAX {
                        *slot = table.vocab.len() as u32;
                        let w = String::from_utf8_lossy(cached.word(i as usize)).into_owned();
                        table.vocab.insert(w, *slot);
                    }
                    *slot
                })
                .collect()
        };
        cached.for_each_entry(&known, |r, p| {
            let ref_ids = assign(&mut table, r);
            if p.iter().all(|&i| known[i as usize]) {
                let par_ids = assign(&mut table, p);
                if !ref_ids.is_empty() {
                    table.max_len = table.max_len.max(ref_ids.len());
                    let idx = table.paraphrases.len() as u32;
                    table.paraphrases.push(par_ids);
                    table.by_phrase.entry(ref_ids).or_default().push(idx);
                }
            }
        })?;
        Some(table)
    }

    /// Word id, or None for a word no kept entry uses (Meteor's -1).
    pub fn word_id(&self, word: &str) -> Option<u32> {
        self.vocab.get(word).copied()
    }

    /// `getReferencePaths`: (phrase length, paraphrase) for every entry whose reference phrase
    /// starts at `start`, shortest first, file order within a length.
    pub fn paths(&self, line: &[Option<u32>], start: usize) -> Vec<(usize, &[u32])> {
        let mut out = Vec::new();
        let mut key = Vec::new();
        for w in line[start..].iter().take(self.max_len) {
            let Some(w) = w else { break };
            key.push(*w);
            if let Some(idx) = self.by_phrase.get(&key) {
                out.extend(
                    idx.iter()
                        .map(|&i| (key.len(), self.paraphrases[i as usize].as_slice())),
                );
            }
        }
        out
    }

    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.paraphrases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paraphrases.is_empty()
    }
}

/// Everything the English aligner and normaliser read from Meteor's data.
#[derive(Debug)]
pub struct MeteorResources {
    pub function_words: HashSet<String>,
    pub synonyms: SynonymDictionary,
    pub nonbreaking: HashMap<String, Nonbreaking>,
    /// Loaded separately, once the texts' vocabulary is known ([`MeteorData::paraphrases`]).
    pub paraphrases: ParaphraseTable,
}

/// Where Meteor's data lives: the jar (with `data/` beside it) or an extracted directory.
#[derive(Debug, Clone)]
pub enum MeteorData {
    Jar(PathBuf),
    Dir(PathBuf),
}

impl MeteorData {
    /// `--meteor-data PATH`, else `$ADIFF_METEOR_DATA`; Ok(None) when neither is set.
    pub fn locate(arg: Option<&Path>) -> Result<Option<Self>> {
        let path = match arg {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(METEOR_DATA_ENV) {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => return Ok(None),
            },
        };
        if path.is_dir() {
            Ok(Some(Self::Dir(path)))
        } else if path.is_file() {
            Ok(Some(Self::Jar(path)))
        } else {
            Err(AdiffError::Invalid(format!(
                "METEOR data {} does not exist (give meteor-1.5.jar, e.g. from the pycocoevalcap \
                 wheel, or a directory with its extracted data)",
                path.display()
            )))
        }
    }

    fn read_entry(&self, name: &str) -> Result<String> {
        let err = |e: String| AdiffError::Invalid(format!("METEOR data: {name}: {e}"));
        match self {
            Self::Dir(dir) => {
                std::fs::read_to_string(dir.join(name)).map_err(|e| err(format!("{e}")))
            }
            Self::Jar(jar) => {
                let file = File::open(jar).map_err(|e| err(format!("{}: {e}", jar.display())))?;
                let mut zip = zip::ZipArchive::new(file)
                    .map_err(|e| err(format!("{} is not a jar: {e}", jar.display())))?;
                let mut entry = zip
                    .by_name(name)
                    .map_err(|_| err(format!("no such entry in {}", jar.display())))?;
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(|e| err(format!("{e}")))?;
                Ok(text)
            }
        }
    }

    /// Path of the paraphrase table.
    pub fn paraphrase_path(&self) -> PathBuf {
        match self {
            Self::Dir(dir) => dir.join(PARAPHRASES),
            Self::Jar(jar) => jar
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(PARAPHRASES),
        }
    }

    /// Loads the language data; the paraphrase table is filtered to `words` (the normalised
    /// words of every text to be scored).
    pub fn load(&self, words: &HashSet<String>) -> Result<MeteorResources> {
        let path = self.paraphrase_path();
        // The paraphrase table (hashing its 62 MB, scanning the cache) on a thread of its own
        // while this one reads the jar's entries.
        std::thread::scope(|scope| {
            let paraphrases = scope.spawn(|| ParaphraseTable::load(&path, words));
            let rest = (|| -> Result<_> {
                let function_words = self
                    .read_entry(FUNCTION_WORDS)?
                    .lines()
                    .map(str::to_string)
                    .collect();
                let synonyms = SynonymDictionary::parse(
                    &self.read_entry(SYN_EXCEPTIONS)?,
                    &self.read_entry(SYN_SYNSETS)?,
                )?;
                let nonbreaking = parse_nonbreaking(&self.read_entry(NONBREAKING)?);
                Ok((function_words, synonyms, nonbreaking))
            })();
            let paraphrases = paraphrases.join().map_err(|_| {
                AdiffError::Invalid("METEOR data: the paraphrase table's reader failed".into())
            })?;
            let (function_words, synonyms, nonbreaking) = rest?;
            Ok(MeteorResources {
                function_words,
                synonyms,
                nonbreaking,
                paraphrases: paraphrases?,
            })
        })
    }

    /// Only the nonbreaking prefixes (needed to normalise texts before the rest is loaded).
    pub fn nonbreaking(&self) -> Result<HashMap<String, Nonbreaking>> {
        Ok(parse_nonbreaking(&self.read_entry(NONBREAKING)?))
    }
}

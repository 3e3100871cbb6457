//! The user-prompt database (paper, appendix H): about 100 phrasings per explanation tier plus
//! the position-captioning prompts (section 5.4). ADIFF is trained on prompts sampled from such a
//! database so that it follows free-form requests; at inference `adiff explain --tier N` uses the
//! first prompt of a list, which is the exact string of the released data (`input` column of the
//! ACD/CLD CSVs), because that is the phrasing the checkpoint has seen most.
//!
//! The database ships in `data/prompts/prompts.json` (compiled in); users may supply their own
//! file with the same five keys.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rand::Rng;
use serde::Deserialize;

use crate::error::{AdiffError, Result};

/// The bundled database, compiled into the binary so that `adiff` needs no data directory.
const BUNDLED_JSON: &str = include_str!("../../data/prompts/prompts.json");
/// How error messages name the bundled database.
const BUNDLED_NAME: &str = "bundled data/prompts/prompts.json";

/// ADIFF's tokenizer registers `!` as its pad token, so a `!` inside a prompt would be encoded as
/// padding and silently change what the model reads.
const PAD_CHAR: char = '!';

/// Explanation tiers the paper defines (1 = few words, 2 = a sentence, 3 = detail).
const TIERS: std::ops::RangeInclusive<u8> = 1..=3;

/// JSON keys of the lists, in the order of [`PromptKind::ALL`].
const KEYS: [&str; 5] = ["tier1", "tier2", "tier3", "caption_first", "caption_second"];

/// What the user asks the model for: a tier of difference explanation, or the caption of the
/// audio in one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptKind {
    /// Difference explanation of tier 1..=3. Build it with [`PromptKind::tier`] or `FromStr`,
    /// which check the range; the database's accessors panic on a tier outside 1..=3.
    Tier(u8),
    /// "caption the first audio".
    CaptionFirst,
    /// "caption the second audio".
    CaptionSecond,
}

impl PromptKind {
    /// All kinds, in the order of the JSON file.
    pub const ALL: [PromptKind; 5] = [
        PromptKind::Tier(1),
        PromptKind::Tier(2),
        PromptKind::Tier(3),
        PromptKind::CaptionFirst,
        PromptKind::CaptionSecond,
    ];

    /// A tier kind, checked to be 1..=3 (for `--tier N` style arguments).
    pub fn tier(tier: u8) -> Result<Self> {
        if TIERS.contains(&tier) {
            Ok(PromptKind::Tier(tier))
        } else {
            Err(AdiffError::Invalid(format!(
                "explanation tier {tier} does not exist (expected {} to {})",
                TIERS.start(),
                TIERS.end()
            )))
        }
    }

    /// The key of this kind's list in the JSON database.
    ///
    /// # Panics
    /// On `PromptKind::Tier(t)` with `t` outside 1..=3.
    pub fn key(self) -> &'static str {
        KEYS[self.slot()]
    }

    /// Position of this kind's list in [`PromptKind::ALL`] and in the database.
    fn slot(self) -> usize {
        match self {
            PromptKind::Tier(t) if TIERS.contains(&t) => usize::from(t - TIERS.start()),
            PromptKind::Tier(t) => panic!("PromptKind::Tier({t}) is outside 1..=3"),
            PromptKind::CaptionFirst => TIERS.len(),
            PromptKind::CaptionSecond => TIERS.len() + 1,
        }
    }
}

/// Parses "tier1".."tier3", "first", "second" (also the JSON keys "caption_first" and
/// "caption_second"), ignoring ASCII case, so clap can take it as an argument value.
impl FromStr for PromptKind {
    type Err = AdiffError;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "first" | "caption_first" => Ok(PromptKind::CaptionFirst),
            "second" | "caption_second" => Ok(PromptKind::CaptionSecond),
            _ => lower
                .strip_prefix("tier")
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|t| TIERS.contains(t))
                .map(PromptKind::Tier)
                .ok_or_else(|| {
                    AdiffError::Invalid(format!(
                        "unknown prompt kind {s:?} (expected tier1, tier2, tier3, first or second)"
                    ))
                }),
        }
    }
}

/// Writes the short form `FromStr` reads back ("tier2", "first", "second").
impl fmt::Display for PromptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptKind::Tier(t) => write!(f, "tier{t}"),
            PromptKind::CaptionFirst => f.write_str("first"),
            PromptKind::CaptionSecond => f.write_str("second"),
        }
    }
}

/// The JSON layout; unknown keys are rejected so that a misspelt list is not silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    tier1: Vec<String>,
    tier2: Vec<String>,
    tier3: Vec<String>,
    caption_first: Vec<String>,
    caption_second: Vec<String>,
}

/// Validated prompt lists, one per [`PromptKind`]; every list is non-empty, so lookups and
/// sampling cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptDatabase {
    /// Indexed by `PromptKind::slot`.
    lists: [Vec<String>; PromptKind::ALL.len()],
}

impl PromptDatabase {
    /// The database shipped with adiff.
    pub fn bundled() -> Result<Self> {
        Self::from_json(BUNDLED_JSON, BUNDLED_NAME)
    }

    /// A user database: a JSON object with exactly the keys `tier1`, `tier2`, `tier3`,
    /// `caption_first`, `caption_second`, each a list of prompts (the first is the default).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| AdiffError::Invalid(format!("prompt database {}: {e}", path.display())))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and validates JSON text; `source` names it in error messages.
    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let raw: RawDatabase = serde_json::from_str(text)
            .map_err(|e| AdiffError::Invalid(format!("prompt database {source}: {e}")))?;
        let lists = [
            raw.tier1,
            raw.tier2,
            raw.tier3,
            raw.caption_first,
            raw.caption_second,
        ];
        for (kind, list) in PromptKind::ALL.iter().zip(&lists) {
            validate_list(list, kind.key(), source)?;
        }
        Ok(Self { lists })
    }

    /// All prompts of a kind, the default first.
    ///
    /// # Panics
    /// On `PromptKind::Tier(t)` with `t` outside 1..=3 (build kinds with [`PromptKind::tier`]).
    pub fn prompts(&self, kind: PromptKind) -> &[String] {
        &self.lists[kind.slot()]
    }

    /// The prompt used at inference: the first of the list, the released data's exact phrasing.
    ///
    /// # Panics
    /// On `PromptKind::Tier(t)` with `t` outside 1..=3.
    pub fn default_prompt(&self, kind: PromptKind) -> &str {
        &self.prompts(kind)[0]
    }

    /// A uniformly drawn prompt of a kind, as the training code samples them (reproducible for a
    /// seeded `rng`).
    ///
    /// # Panics
    /// On `PromptKind::Tier(t)` with `t` outside 1..=3.
    pub fn sample(&self, kind: PromptKind, rng: &mut impl Rng) -> &str {
        let list = self.prompts(kind);
        &list[rng.random_range(0..list.len())]
    }
}

/// Checks one list: non-empty, no blank prompt, no pad character, no prompt twice.
fn validate_list(list: &[String], key: &str, source: &str) -> Result<()> {
    let fail = |msg: String| {
        Err(AdiffError::Invalid(format!(
            "prompt database {source}: {msg}"
        )))
    };
    if list.is_empty() {
        return fail(format!("list \"{key}\" is empty"));
    }
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    for prompt in list {
        // `{:?}` keeps the message on one line even if a prompt holds a newline.
        if prompt.trim().is_empty() {
            return fail(format!("list \"{key}\" has a blank prompt {prompt:?}"));
        }
        if prompt.contains(PAD_CHAR) {
            return fail(format!(
                "list \"{key}\": prompt {prompt:?} contains '{PAD_CHAR}', ADIFF's pad token"
            ));
        }
        if !seen.insert(prompt.as_str()) {
            return fail(format!("list \"{key}\": prompt {prompt:?} appears twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn db_json(tier1: &str) -> String {
        format!(
            r#"{{"tier1": {tier1}, "tier2": ["b"], "tier3": ["c"],
                "caption_first": ["d"], "caption_second": ["e"]}}"#
        )
    }

    #[test]
    fn kind_parses_and_round_trips() {
        for kind in PromptKind::ALL {
            assert_eq!(kind.to_string().parse::<PromptKind>().unwrap(), kind);
            assert_eq!(kind.key().parse::<PromptKind>().unwrap(), kind);
        }
        assert_eq!(
            " Tier2 ".parse::<PromptKind>().unwrap(),
            PromptKind::Tier(2)
        );
        assert_eq!(
            "FIRST".parse::<PromptKind>().unwrap(),
            PromptKind::CaptionFirst
        );
        for bad in ["tier0", "tier4", "tier", "tier-1", "third", "", "tier300"] {
            let err = bad.parse::<PromptKind>().unwrap_err().to_string();
            assert!(err.contains("unknown prompt kind"), "{bad}: {err}");
        }
    }

    #[test]
    fn tier_constructor_checks_range() {
        assert_eq!(PromptKind::tier(3).unwrap(), PromptKind::Tier(3));
        assert!(PromptKind::tier(0).is_err());
        assert!(PromptKind::tier(4)
            .unwrap_err()
            .to_string()
            .contains("tier 4"));
    }

    #[test]
    #[should_panic(expected = "outside 1..=3")]
    fn out_of_range_tier_panics_as_documented() {
        let db = PromptDatabase::from_json(&db_json(r#"["a"]"#), "t").unwrap();
        let _ = db.default_prompt(PromptKind::Tier(4));
    }

    #[test]
    fn slots_are_distinct_and_follow_all() {
        for (i, kind) in PromptKind::ALL.iter().enumerate() {
            assert_eq!(kind.slot(), i);
        }
    }

    #[test]
    fn lists_are_kept_in_order() {
        let db = PromptDatabase::from_json(&db_json(r#"["a", "a2"]"#), "t").unwrap();
        assert_eq!(db.prompts(PromptKind::Tier(1)), ["a", "a2"]);
        assert_eq!(db.default_prompt(PromptKind::Tier(1)), "a");
        assert_eq!(db.default_prompt(PromptKind::Tier(2)), "b");
        assert_eq!(db.default_prompt(PromptKind::Tier(3)), "c");
        assert_eq!(db.default_prompt(PromptKind::CaptionFirst), "d");
        assert_eq!(db.default_prompt(PromptKind::CaptionSecond), "e");
    }

    #[test]
    fn validation_names_list_and_prompt() {
        let err = |tier1: &str| {
            PromptDatabase::from_json(&db_json(tier1), "my.json")
                .unwrap_err()
                .to_string()
        };
        let e = err("[]");
        assert!(
            e.contains("my.json") && e.contains("\"tier1\" is empty"),
            "{e}"
        );
        let e = err(r#"["ok", "wow!"]"#);
        assert!(
            e.contains("\"tier1\"") && e.contains("\"wow!\"") && e.contains("pad"),
            "{e}"
        );
        let e = err(r#"["x", "y", "x"]"#);
        assert!(
            e.contains("\"tier1\"") && e.contains("\"x\" appears twice"),
            "{e}"
        );
        let e = err(r#"["  "]"#);
        assert!(e.contains("blank prompt"), "{e}");
        let e = err(r#"["a\nb!"]"#);
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn sampling_is_seeded_and_in_list() {
        let db = PromptDatabase::from_json(&db_json(r#"["a", "b", "c", "d"]"#), "t").unwrap();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..32)
                .map(|_| db.sample(PromptKind::Tier(1), &mut rng).to_string())
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert!(a.iter().all(|p| ["a", "b", "c", "d"].contains(&p.as_str())));
        assert!(a.iter().any(|p| p != &a[0]));
    }

    #[test]
    fn clap_takes_kind_as_value() {
        use clap::Parser;
        #[derive(Parser)]
        struct Args {
            #[arg(long)]
            kind: PromptKind,
        }
        let args = Args::try_parse_from(["x", "--kind", "tier3"]).unwrap();
        assert_eq!(args.kind, PromptKind::Tier(3));
        assert!(Args::try_parse_from(["x", "--kind", "tier9"]).is_err());
    }
}

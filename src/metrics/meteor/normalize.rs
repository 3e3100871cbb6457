//! Meteor 1.5's `-norm` text normalisation (`edu.cmu.meteor.util.Normalizer`, English): a
//! Moses-style tokenizer plus Meteor's own quote/dash normalisation and dash splitting, then
//! lower-casing. Reimplemented rule by rule so that the words the aligner sees are the jar's.
//!
//! Java regex classes are ASCII unless told otherwise: `\p{Digit}` is `[0-9]`, `\p{Lower}` is
//! `[a-z]` and `\s` is `[ \t\n\x0B\f\r]`; the patterns below spell them out.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// Letters Meteor treats as word characters (Latin-1 + Latin Extended-A subset, Cyrillic).
const ALPHA: &str = "A-Za-zŠŽšžŸÀ-ÖØ-öø-žЀ-ӿԀ-ԧꙀ-ꙮ꙾-ꚗᴀ-ᵿ";
/// Java's `\s` (ASCII whitespace) inside a character class.
const JAVA_SPACE: &str = " \\t\\n\\x0B\\x0C\\r";
/// The whitespace runs Meteor collapses to one space (ASCII space and the Unicode spaces).
const WHITE: &str = "[ \u{2000}-\u{200a}\u{202f}\u{205f}\u{3000}\u{a0}]+";

/// How a nonbreaking prefix (from `nonbreaking/english.prefixes`) keeps its final dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nonbreaking {
    /// Always (e.g. "Mr.").
    Any,
    /// Only before a number (e.g. "No. 5").
    NumericOnly,
}

struct Patterns {
    sep_other: Regex,
    multi_dot: Regex,
    multi_dot2: Regex,
    comma: Regex,
    comma2: Regex,
    comma3: Regex,
    quote: Regex,
    quote2: Regex,
    rm_dash: Regex,
    cont_en: Regex,
    cont_en2: Regex,
    cont_en3: Regex,
    cont_en4: Regex,
    cont_en5: Regex,
    has_alpha: Regex,
    white: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let alnum = format!("0-9{ALPHA}");
    let re = |p: &str| Regex::new(p).expect("static Meteor normaliser pattern");
    Patterns {
        sep_other: re(&format!("([^{alnum}{JAVA_SPACE}\\.'`,\\-‘’])")),
        multi_dot: re(r"\.([\.]+)"),
        multi_dot2: re(r"DOTMULTI\.([^\.])"),
        comma: re("([^0-9]),([^0-9])"),
        comma2: re("([0-9]),([^0-9])"),
        comma3: re("([^0-9]),([0-9])"),
        quote: re("([`‘’])"),
        quote2: re("([“”]|'')"),
        rm_dash: re(&format!("([{alnum}\\.])[\\-]([{alnum}])")),
        cont_en: re(&format!("([^{ALPHA}])[']([^{ALPHA}])")),
        cont_en2: re(&format!("([^{ALPHA}0-9])[']([{ALPHA}])")),
        cont_en3: re(&format!("([{ALPHA}])[']([^{ALPHA}])")),
        cont_en4: re(&format!("([{ALPHA}])[']([{ALPHA}])")),
        cont_en5: re("([0-9])[']([s])"),
        has_alpha: re(&format!("[{ALPHA}]")),
        white: re(WHITE),
    }
});

/// Java's `String.trim()`: strips code points <= U+0020 (not Unicode whitespace).
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// Java's `StringTokenizer` default delimiters.
pub(crate) fn java_tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split([' ', '\t', '\n', '\r', '\u{0C}'])
        .filter(|w| !w.is_empty())
}

/// `Normalizer.normalizeLine(line, LANG_EN, keepPunctuation = true)` followed by the scorer's
/// lower-casing: what `-norm` does to each hypothesis and reference.
pub fn normalize_line(line: &str, nonbreaking: &HashMap<String, Nonbreaking>) -> String {
    let p = &*PATTERNS;
    let mut w = format!(" {line} ");
    // Separate all non-alphanumeric characters that are not special cases.
    w = p.sep_other.replace_all(&w, " ${1} ").into_owned();
    // Escape runs of dots.
    w = p.multi_dot.replace_all(&w, " DOTMULTI${1}").into_owned();
    while w.contains("DOTMULTI.") {
        w = p
            .multi_dot2
            .replace_all(&w, "DOTDOTMULTI ${1}")
            .into_owned();
        w = w.replace("DOTMULTI.", "DOTDOTMULTI");
    }
    // Separate commas except inside numbers.
    for r in [&p.comma, &p.comma2, &p.comma3] {
        w = r.replace_all(&w, "${1} , ${2}").into_owned();
    }
    // Quotes and dashes.
    w = p.quote.replace_all(&w, "'").into_owned();
    w = p.quote2.replace_all(&w, " \" ").into_owned();
    w = w.replace('–', "-").replace("--", "-");
    // Split dashes between words so that parts get credit.
    w = p.rm_dash.replace_all(&w, "${1} ${2}").into_owned();
    // English contractions split to the right.
    for r in [&p.cont_en, &p.cont_en2, &p.cont_en3] {
        w = r.replace_all(&w, "${1} ' ${2}").into_owned();
    }
    for r in [&p.cont_en4, &p.cont_en5] {
        w = r.replace_all(&w, "${1} '${2}").into_owned();
    }
    // Rebuild, splitting final dots unless the word is a nonbreaking prefix.
    let words: Vec<&str> = java_tokens(&w).collect();
    let mut out = String::with_capacity(w.len() + 8);
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1);
        if word.chars().count() > 1 && word.ends_with('.') {
            let pre = &word[..word.len() - 1];
            let kind = nonbreaking.get(pre).copied();
            if pre.contains('.') && p.has_alpha.is_match(pre) {
                // Mixed (U.S.): drop the dots.
                out.push_str(&word.replace('.', ""));
            } else if kind == Some(Nonbreaking::Any)
                || next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_lowercase()))
                || (kind == Some(Nonbreaking::NumericOnly)
                    && next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())))
            {
                // Always nonbreaking, followed by lower case (catches unlisted "Inc."), or a
                // numeric-only prefix followed by a number: keep the dot.
                out.push_str(word);
            } else {
                out.push_str(pre);
                out.push_str(" .");
            }
        } else {
            out.push_str(word);
        }
        out.push(' ');
    }
    w = out;
    // Unescape dot runs.
    while w.contains("DOTDOTMULTI") {
        w = w.replace("DOTDOTMULTI", "DOTMULTI.");
    }
    w = w.replace("DOTMULTI", ".");
    let w = p.white.replace_all(&w, " ");
    java_trim(&w).to_lowercase()
}

/// Reads `nonbreaking/english.prefixes`: one prefix per line, `#NUMERIC_ONLY#` as a second
/// token for prefixes that only keep their dot before numbers; `#` starts a comment.
pub fn parse_nonbreaking(text: &str) -> HashMap<String, Nonbreaking> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut tok = java_tokens(line);
        let Some(pre) = tok.next() else { continue };
        if pre.starts_with('#') {
            continue;
        }
        let kind = if tok.next() == Some("#NUMERIC_ONLY#") {
            Nonbreaking::NumericOnly
        } else {
            Nonbreaking::Any
        };
        map.insert(pre.to_string(), kind);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let nbp = parse_nonbreaking("Mr\nNo #NUMERIC_ONLY#\n# comment\n");
        normalize_line(s, &nbp)
    }

    #[test]
    fn splits_like_meteor() {
        assert_eq!(
            norm("a high-pitched dog's bark"),
            "a high pitched dog 's bark"
        );
        assert_eq!(norm("it does n't stop"), "it does n 't stop");
        assert_eq!(norm("1,000 dogs, cats"), "1,000 dogs , cats");
        assert_eq!(norm("the u.s. army"), "the us army");
        assert_eq!(norm("see Mr. Smith"), "see mr. smith");
        assert_eq!(norm("wait... ok"), "wait ... ok");
        assert_eq!(norm("a (b) c"), "a ( b ) c");
    }
}

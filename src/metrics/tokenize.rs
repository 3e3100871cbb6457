//! The text normalisation coco-caption applies before scoring: Stanford PTBTokenizer
//! (CoreNLP 3.4.1, `-preserveLines -lowerCase`), then removal of punctuation tokens.
//!
//! Reimplemented (not a port of the JFlex grammar) for the constructs that occur in ADIFF
//! explanations: words, hyphenated and slashed compounds, numbers, contractions, abbreviations,
//! brackets and quotes. Quirks of the Java lexer are kept on purpose, because scores must match
//! pycocoevalcap: `0.1-0.5` becomes `0.1-0 .5`, `(` becomes `-lrb-` (lower-cased, so it is NOT
//! removed by the punctuation filter), `can't` becomes `ca n't`.

/// Tokens coco-caption drops after tokenizing (compared after lower-casing, so `-LRB-` etc. never
/// match: their lower-cased forms survive, as in pycocoevalcap).
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Abbreviations the lexer keeps together with their final period (lower-case; matched
/// case-insensitively). Only the ones whose period would otherwise be split off matter.
const ABBREVIATIONS: [&str; 37] = [
    "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "inc", "ltd", "co", "corp",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "rev",
    "gen", "col", "lt", "sgt", "capt", "mt", "ft", "ave", "est", "al",
];

/// Abbreviations kept with their period only before a number (`ca. 5 seconds`).
const ABBREVIATIONS_BEFORE_NUMBER: [&str; 3] = ["ca", "fig", "no"];

/// Tokenizes one caption the way pycocoevalcap does and returns the kept tokens joined by single
/// spaces (lower-cased, punctuation tokens removed). Newlines count as spaces, as the Python
/// wrapper replaces them before calling Java.
pub fn coco_tokenize(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for tok in ptb_tokens(text) {
        let lower = tok.to_lowercase();
        if !PUNCTUATIONS.contains(&lower.as_str()) {
            out.push(lower);
        }
    }
    out.join(" ")
}

fn is_alnum(c: char) -> bool {
    c.is_alphanumeric()
}

fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '\u{058A}' | '\u{2010}' | '\u{2011}')
}

fn is_apos(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{0092}' | '\u{00B4}')
}

/// Length of the longest prefix of `s` matching `[digit]*([.:,][digit]+)*` (a PTB number).
fn match_num(s: &[char]) -> usize {
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    loop {
        if i + 1 < s.len() && matches!(s[i], '.' | ':' | ',') && s[i + 1].is_ascii_digit() {
            let mut j = i + 1;
            while j < s.len() && s[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        } else {
            return i;
        }
    }
}

/// Hyphenated word: `[alnum][alnum.,]*(-[alnum]+)+` (the first part may hold a number with
/// separators; later parts may not — hence `0.1-0` + `.5`).
fn match_hyphenated(s: &[char]) -> usize {
    if s.is_empty() || !is_alnum(s[0]) {
        return 0;
    }
    let mut i = 1;
    while i < s.len() && (is_alnum(s[i]) || s[i] == '.' || s[i] == ',') {
        i += 1;
    }
    // The first part cannot end in a separator.
    while i > 1 && !is_alnum(s[i - 1]) {
        i -= 1;
    }
    let mut end = 0;
    while i + 1 < s.len() && is_hyphen(s[i]) && is_alnum(s[i + 1]) {
        let mut j = i + 1;
        while j < s.len() && is_alnum(s[j]) {
            j += 1;
        }
        i = j;
        end = i;
    }
    end
}

/// `alnum+(-alpha+){0,2}(/alnum+(-alpha+){0,2}){1,2}`: slashed alternatives such as `on/off`.
fn match_slashed(s: &[char]) -> usize {
    fn part(s: &[char], mut i: usize) -> Option<usize> {
        let start = i;
        while i < s.len() && is_alnum(s[i]) {
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in 0..2 {
            if i + 1 < s.len() && is_hyphen(s[i]) && s[i + 1].is_alphabetic() {
                let mut j = i + 1;
                while j < s.len() && s[j].is_alphabetic() {
                    j += 1;
                }
                i = j;
            } else {
                break;
            }
        }
        Some(i)
    }
    let Some(mut i) = part(s, 0) else { return 0 };
    let mut n = 0;
    while n < 2 && i < s.len() && s[i] == '/' {
        match part(s, i + 1) {
            Some(j) => {
                i = j;
                n += 1;
            }
            None => break,
        }
    }
    if n == 0 {
        0
    } else {
        i
    }
}

/// Acronym with periods (`e.g.`, `i.e.`, `U.S.`): `[A-Za-z](\.[A-Za-z])+\.`.
fn match_acronym(s: &[char]) -> usize {
    let mut i = 0;
    let mut letters = 0;
    while i < s.len() && s[i].is_ascii_alphabetic() {
        if i + 1 < s.len() && s[i + 1] == '.' {
            letters += 1;
            i += 2;
        } else {
            return 0;
        }
    }
    if letters >= 2 {
        i
    } else {
        0
    }
}

/// Splits text into PTB tokens (before lower-casing and punctuation removal).
fn ptb_tokens(text: &str) -> Vec<String> {
    let s: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() || c == '\u{00A0}' {
            i += 1;
            continue;
        }
        let rest = &s[i..];
        if is_alnum(c) {
            let n = i + word_len(rest);
            let word: String = s[i..n].iter().collect();
            i = n + push_word(&mut toks, &word, &s[n..]);
            continue;
        }
        let (tok, len): (String, usize) = match c {
            '(' => ("-LRB-".into(), 1),
            ')' => ("-RRB-".into(), 1),
            '[' => ("-LSB-".into(), 1),
            ']' => ("-RSB-".into(), 1),
            '{' => ("-LCB-".into(), 1),
            '}' => ("-RCB-".into(), 1),
            '"' | '\u{201C}' | '\u{201D}' | '\u{201E}' => ("''".into(), 1),
            '\u{2013}' | '\u{2014}' | '\u{2015}' => ("--".into(), 1),
            '\u{2026}' => ("...".into(), 1),
            '.' | ',' | ':' if rest.len() > 1 && rest[1].is_ascii_digit() => {
                let n = match_num(rest);
                (rest[..n].iter().collect(), n)
            }
            '.' => {
                let n = rest.iter().take_while(|&&d| d == '.').count();
                if n >= 3 {
                    ("...".into(), n)
                } else {
                    (".".into(), 1)
                }
            }
            '-' | '+'
                if rest.len() > 1
                    && (rest[1].is_ascii_digit() || rest[1] == '.')
                    && match_num(&rest[1..]) > 0 =>
            {
                // A signed number: `-5`, `+3`.
                let n = 1 + match_num(&rest[1..]);
                (rest[..n].iter().collect(), n)
            }
            _ if is_hyphen(c) => {
                let n = rest.iter().take_while(|&&d| is_hyphen(d)).count();
                (if n >= 2 { "--".into() } else { "-".into() }, n)
            }
            _ if is_apos(c) || c == '`' || c == '\u{2018}' => {
                // A contraction after a space ('s, 're) is one token; otherwise a quote.
                let n = contraction_len(rest)
                    .max(decade_len(rest))
                    .max(apos_n_len(rest));
                if n > 0 {
                    let t: String = rest[..n].iter().map(|&d| norm_apos(d)).collect();
                    (t, n)
                } else {
                    ("'".into(), 1)
                }
            }
            _ => (c.to_string(), 1),
        };
        toks.push(tok);
        i += len;
    }
    toks
}

fn norm_apos(c: char) -> char {
    if is_apos(c) {
        '\''
    } else {
        c
    }
}

/// Length of `'n'` / `'n` (as in `rock 'n' roll`) at the start of `s`, else 0.
fn apos_n_len(s: &[char]) -> usize {
    if s.len() < 2 || !is_apos(s[0]) || !matches!(s[1], 'n' | 'N') {
        return 0;
    }
    match s.get(2) {
        Some(&c) if is_apos(c) => 3,
        Some(&c) if c.is_alphanumeric() => 0,
        _ => 2,
    }
}

/// Length of a decade written `'90s` at the start of `s` (0 when there is none).
fn decade_len(s: &[char]) -> usize {
    let is_decade = s.len() >= 4
        && is_apos(s[0])
        && matches!(s[1], '1'..='9')
        && s[2] == '0'
        && s[3] == 's'
        && s.get(4).is_none_or(|c| !is_alnum(*c));
    if is_decade {
        4
    } else {
        0
    }
}

/// Length of `'s 'm 'd 're 've 'll` at the start of `s`, when not followed by a letter.
fn contraction_len(s: &[char]) -> usize {
    if s.is_empty() || !is_apos(s[0]) {
        return 0;
    }
    let lower: String = s[1..].iter().take(3).collect::<String>().to_lowercase();
    let lc: Vec<char> = lower.chars().collect();
    for suffix in ["s", "m", "d", "re", "ve", "ll"] {
        let k = suffix.len();
        if lc.len() >= k
            && lc[..k].iter().copied().eq(suffix.chars())
            && (lc.len() == k || !lc[k].is_alphabetic())
        {
            return 1 + k;
        }
    }
    0
}

/// Length of the word-like token starting at `s[0]` (alphanumeric): the longest of a number,
/// a hyphenated or slashed compound, an acronym, an abbreviation or a plain word.
fn word_len(s: &[char]) -> usize {
    let plain = s.iter().take_while(|&&c| is_alnum(c)).count();
    let mut best = plain;
    // A word starting with a letter runs on through `.`, `!` or `?` followed by a letter
    // (`louder.Audio` stays one token, as in the Java lexer).
    if s[0].is_alphabetic() {
        let mut i = plain;
        while i + 1 < s.len() && matches!(s[i], '.' | '!' | '?') && s[i + 1].is_alphabetic() {
            i += 1;
            while i < s.len() && is_alnum(s[i]) {
                i += 1;
            }
        }
        best = best.max(i);
    }
    // One letter (not i or y), an apostrophe and 2+ letters: `o'clock`, `d'ye`.
    if plain == 1
        && !matches!(s[0], 'i' | 'I' | 'y' | 'Y')
        && s.len() > 3
        && is_apos(s[1])
        && s[2].is_alphabetic()
        && s[3].is_alphabetic()
    {
        best = best.max(2 + s[2..].iter().take_while(|c| c.is_alphabetic()).count());
    }
    best = best.max(match_num(s));
    best = best.max(match_hyphenated(s));
    best = best.max(match_slashed(s));
    best = best.max(match_acronym(s));
    if plain == best && s.get(plain) == Some(&'.') {
        let w: String = s[..plain].iter().collect::<String>().to_lowercase();
        let before_number = s.get(plain + 1).is_some_and(|c| c.is_whitespace())
            && s.get(plain + 2).is_some_and(|c| c.is_ascii_digit());
        if ABBREVIATIONS.contains(&w.as_str())
            || (before_number && ABBREVIATIONS_BEFORE_NUMBER.contains(&w.as_str()))
        {
            best = plain + 1;
        }
    }
    best
}

/// Pushes a word, splitting a trailing `n't` (`don't` -> `do n't`) and the special forms
/// `cannot`, `gonna`, `wanna`, `gotta`. Returns how many characters after the word it consumed.
fn push_word(toks: &mut Vec<String>, word: &str, after: &[char]) -> usize {
    // n't: the word ends in n and is followed by 't + non-letter.
    let nt = word.len() > 1
        && word.ends_with(['n', 'N'])
        && after.len() >= 2
        && is_apos(after[0])
        && matches!(after[1], 't' | 'T')
        && after.get(2).is_none_or(|c| !c.is_alphabetic())
        && word.chars().all(|c| c.is_alphabetic());
    if nt {
        let (stem, n) = word.split_at(word.len() - 1);
        toks.push(stem.to_string());
        toks.push(format!("{n}'{}", after[1]));
        return 2;
    }
    let lower = word.to_lowercase();
    for (whole, a) in [
        ("cannot", 3),
        ("gonna", 3),
        ("wanna", 3),
        ("gotta", 3),
        ("gimme", 3),
        ("lemme", 3),
    ] {
        if lower == whole {
            toks.push(word[..a].to_string());
            toks.push(word[a..].to_string());
            return 0;
        }
    }
    toks.push(word.to_string());
    0
}

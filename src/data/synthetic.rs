//! A small synthetic world of sounds with known attributes, for training and checking a model
//! end to end on data whose differences are known exactly (`adiff build-dataset synthetic`).
//!
//! Every clip is 10 s of 32 kHz mono audio: one foreground source over a background. Five
//! attributes describe it, each with a few well-separated values:
//!
//! | attribute  | values | how it is rendered |
//! |---|---|---|
//! | source kind | tone, buzz, chord, noise, clicks, rising chirp, falling chirp | [`SourceKind`] |
//! | pitch      | low, mid, high | fundamental drawn log-uniformly in [`PITCH_RANGES_HZ`] |
//! | loudness   | quiet, moderately loud, loud | RMS while sounding at [`LOUDNESS_LEVELS_DBFS`] ± [`LEVEL_JITTER_DB`] |
//! | pattern    | continuous, pulsing, a single event | an on/off envelope ([`PULSE_PERIOD_S`], [`SINGLE_EVENT_S`]) |
//! | background | silence, a hum, a hiss | [`HUM_HZ`] hum or white hiss at [`BACKGROUND_LEVEL_DBFS`] |
//!
//! A pair is two clips that differ in 1 to 3 attributes ([`DIFFERING_ATTRIBUTES`]); its
//! explanations (three tiers) state what differs, always from the second audio's point of view,
//! in the fixed vocabulary below, which `metrics::synthetic` parses back:
//!
//! * loudness: "louder" / "quieter"; the same: "the same loudness"
//! * pitch: "higher in pitch" / "lower in pitch" (tier 1: "higher pitch"); the same: "the same pitch"
//! * source, pattern, background: "X instead of Y" (X the second audio's, Y the first's), e.g. "a
//!   chord instead of a tone", "pulsing instead of continuous", "a hum instead of silence"; the
//!   same: "the same source (a tone)", "the same pattern (pulsing)", "the same background (silence)"
//!
//! Everything is drawn from a seeded generator: the same seed, split and index give the same
//! pair, bit for bit, independently of the order clips are rendered in.

use std::cmp::Ordering;
use std::f64::consts::{PI, SQRT_2};
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Sample rate of the rendered clips (Hz): the model's input rate, so no resampling happens.
pub const SAMPLE_RATE: u32 = 32_000;
/// Length of every clip in seconds: the model's window, so no tiling or cropping happens.
pub const CLIP_SECONDS: f64 = 10.0;
/// Samples in one clip.
pub const CLIP_SAMPLES: usize = 320_000;

/// Range of the fundamental frequency (Hz) of each pitch class (low, mid, high); the fundamental
/// of a clip is drawn log-uniformly inside. Each range's top is at most half the next one's
/// bottom, so the bands of [`pitch_band_hz`] (the range widened by [`BAND_SPREAD`] on both sides)
/// touch but never overlap: a clip's energy sits in the band of its class.
pub const PITCH_RANGES_HZ: [(f64, f64); 3] = [(150.0, 230.0), (460.0, 720.0), (1440.0, 2250.0)];
/// Half-width, as a frequency ratio, of band noise and chirp sweeps around the fundamental: noise
/// fills `[f0 / BAND_SPREAD, f0 * BAND_SPREAD]` (one octave), a chirp sweeps that octave.
pub const BAND_SPREAD: f64 = SQRT_2;

/// RMS level (dBFS) of the foreground while it sounds, per loudness class (quiet, moderately
/// loud, loud): 11 dB apart, so even with [`LEVEL_JITTER_DB`] classes stay 8 dB apart.
pub const LOUDNESS_LEVELS_DBFS: [f64; 3] = [-40.0, -29.0, -18.0];
/// The level of a clip is its class level plus a uniform offset in `±LEVEL_JITTER_DB`.
pub const LEVEL_JITTER_DB: f64 = 1.5;
/// RMS level (dBFS) of a hum or hiss background: 12 dB under the quietest foreground.
pub const BACKGROUND_LEVEL_DBFS: f64 = -52.0;
/// Mains hum fundamental (Hz); the hum is this plus its second harmonic.
pub const HUM_HZ: f64 = 50.0;
/// Amplitude of the hum's second harmonic relative to its fundamental.
pub const HUM_SECOND_HARMONIC_GAIN: f64 = 0.5;

/// A buzz is a band-limited sawtooth (harmonic n at amplitude 1/n) with at most this many
/// harmonics...
pub const BUZZ_MAX_HARMONICS: usize = 40;
/// ...and none above this frequency (Hz), well under the 16 kHz Nyquist limit.
pub const BUZZ_MAX_FREQ_HZ: f64 = 12_000.0;
/// A chord is a just major triad: frequency ratios to the fundamental...
pub const CHORD_RATIOS: [f64; 3] = [1.0, 1.25, 1.5];
/// ...and amplitudes (the root loudest, so the chord's energy sits in its pitch band).
pub const CHORD_GAINS: [f64; 3] = [1.0, 0.7, 0.7];
/// Clicks: decaying sine bursts at the fundamental, this many per second...
pub const CLICK_RATE_HZ: f64 = 8.0;
/// ...each decaying with this time constant (s).
pub const CLICK_DECAY_S: f64 = 0.02;
/// A chirp sweeps one octave (see [`BAND_SPREAD`]) in this many seconds, then starts again.
pub const CHIRP_SWEEP_S: f64 = 0.5;

/// Pulsing: the source is on for [`PULSE_ON_S`] of every `PULSE_PERIOD_S` seconds (random phase).
pub const PULSE_PERIOD_S: f64 = 1.0;
/// On-time of each pulse (s).
pub const PULSE_ON_S: f64 = 0.5;
/// A single event lasts this long (s)...
pub const SINGLE_EVENT_S: f64 = 2.0;
/// ...and starts at a time drawn uniformly in this range (s).
pub const SINGLE_EVENT_ONSET_S: (f64, f64) = (1.0, 7.0);
/// Raised-cosine fade at every on/off edge (s), so that gating adds no clicks.
pub const RAMP_S: f64 = 0.01;
/// The foreground's level is measured over the samples where its envelope is at least this open.
pub const SOUNDING_GATE: f64 = 0.5;
/// How many attributes a pair's two clips differ in (drawn uniformly).
pub const DIFFERING_ATTRIBUTES: std::ops::RangeInclusive<usize> = 1..=3;
/// `taskname` of the rows written by `adiff build-dataset synthetic`.
pub const TASKNAME: &str = "synthetic";

/// What makes the sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A pure sine at the fundamental.
    Tone,
    /// A band-limited sawtooth.
    Buzz,
    /// A major triad of sines.
    Chord,
    /// White noise filtered to one octave around the fundamental.
    Noise,
    /// Decaying sine bursts, [`CLICK_RATE_HZ`] per second.
    Clicks,
    /// Repeated upward one-octave sweeps.
    ChirpUp,
    /// Repeated downward one-octave sweeps.
    ChirpDown,
}

/// Pitch class (ordered low < mid < high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pitch {
    Low,
    Mid,
    High,
}

/// Loudness class (ordered quiet < medium < loud).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loudness {
    Quiet,
    Medium,
    Loud,
}

/// When the source sounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// All 10 s.
    Continuous,
    /// [`PULSE_ON_S`] on in every [`PULSE_PERIOD_S`].
    Pulsing,
    /// Once, for [`SINGLE_EVENT_S`].
    Single,
}

/// What is under the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    Silence,
    Hum,
    Hiss,
}

impl SourceKind {
    pub const ALL: [SourceKind; 7] = [
        SourceKind::Tone,
        SourceKind::Buzz,
        SourceKind::Chord,
        SourceKind::Noise,
        SourceKind::Clicks,
        SourceKind::ChirpUp,
        SourceKind::ChirpDown,
    ];
    /// The words of the vocabulary, without article.
    pub fn phrase(self) -> &'static str {
        match self {
            SourceKind::Tone => "tone",
            SourceKind::Buzz => "buzz",
            SourceKind::Chord => "chord",
            SourceKind::Noise => "noise",
            SourceKind::Clicks => "clicks",
            SourceKind::ChirpUp => "rising chirp",
            SourceKind::ChirpDown => "falling chirp",
        }
    }
    /// With its article where English wants one ("a tone", "noise", "clicks").
    pub fn with_article(self) -> String {
        match self {
            SourceKind::Noise | SourceKind::Clicks => self.phrase().to_string(),
            _ => format!("a {}", self.phrase()),
        }
    }
}

impl Pitch {
    pub const ALL: [Pitch; 3] = [Pitch::Low, Pitch::Mid, Pitch::High];
    /// Caption word ("low" -> "a low-pitched tone").
    pub fn phrase(self) -> &'static str {
        match self {
            Pitch::Low => "low",
            Pitch::Mid => "mid",
            Pitch::High => "high",
        }
    }
}

impl Loudness {
    pub const ALL: [Loudness; 3] = [Loudness::Quiet, Loudness::Medium, Loudness::Loud];
    /// Caption words.
    pub fn phrase(self) -> &'static str {
        match self {
            Loudness::Quiet => "quiet",
            Loudness::Medium => "moderately loud",
            Loudness::Loud => "loud",
        }
    }
}

impl Pattern {
    pub const ALL: [Pattern; 3] = [Pattern::Continuous, Pattern::Pulsing, Pattern::Single];
    /// The words of the vocabulary, without article.
    pub fn phrase(self) -> &'static str {
        match self {
            Pattern::Continuous => "continuous",
            Pattern::Pulsing => "pulsing",
            Pattern::Single => "single event",
        }
    }
    pub fn with_article(self) -> String {
        match self {
            Pattern::Single => format!("a {}", self.phrase()),
            _ => self.phrase().to_string(),
        }
    }
    /// How a caption says it ("a tone pulsing over silence").
    fn caption_phrase(self) -> &'static str {
        match self {
            Pattern::Continuous => "sounding continuously",
            Pattern::Pulsing => "pulsing",
            Pattern::Single => "sounding once",
        }
    }
}

impl Background {
    pub const ALL: [Background; 3] = [Background::Silence, Background::Hum, Background::Hiss];
    /// The words of the vocabulary, without article.
    pub fn phrase(self) -> &'static str {
        match self {
            Background::Silence => "silence",
            Background::Hum => "hum",
            Background::Hiss => "hiss",
        }
    }
    pub fn with_article(self) -> String {
        match self {
            Background::Silence => self.phrase().to_string(),
            _ => format!("a {}", self.phrase()),
        }
    }
}

/// The five attributes, in the order explanations mention them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    Loudness,
    Pitch,
    Kind,
    Pattern,
    Background,
}

impl Attribute {
    pub const ALL: [Attribute; 5] = [
        Attribute::Loudness,
        Attribute::Pitch,
        Attribute::Kind,
        Attribute::Pattern,
        Attribute::Background,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Attribute::Loudness => "loudness",
            Attribute::Pitch => "pitch",
            Attribute::Kind => "source kind",
            Attribute::Pattern => "pattern",
            Attribute::Background => "background",
        }
    }
    /// The attribute named `name` ("loudness", "pitch", "kind" or "source kind", "pattern",
    /// "background").
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            "kind" => Some(Attribute::Kind),
            n => Attribute::ALL.into_iter().find(|a| a.name() == n),
        }
    }
    /// Whether the values are ordered (compared as louder/quieter, higher/lower).
    pub fn is_ordinal(self) -> bool {
        matches!(self, Attribute::Loudness | Attribute::Pitch)
    }
    /// Number of values.
    pub fn cardinality(self) -> usize {
        match self {
            Attribute::Loudness => Loudness::ALL.len(),
            Attribute::Pitch => Pitch::ALL.len(),
            Attribute::Kind => SourceKind::ALL.len(),
            Attribute::Pattern => Pattern::ALL.len(),
            Attribute::Background => Background::ALL.len(),
        }
    }
}

/// The labels of one clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attributes {
    pub kind: SourceKind,
    pub pitch: Pitch,
    pub loudness: Loudness,
    pub pattern: Pattern,
    pub background: Background,
}

impl Attributes {
    /// Index of this clip's value of `attr` in that attribute's `ALL` list.
    pub fn value_index(&self, attr: Attribute) -> usize {
        match attr {
            Attribute::Loudness => self.loudness as usize,
            Attribute::Pitch => self.pitch as usize,
            Attribute::Kind => self.kind as usize,
            Attribute::Pattern => self.pattern as usize,
            Attribute::Background => self.background as usize,
        }
    }

    /// The attributes in which `other` differs from `self`, in [`Attribute::ALL`] order.
    pub fn differences(&self, other: &Attributes) -> Vec<Attribute> {
        Attribute::ALL
            .into_iter()
            .filter(|&a| self.value_index(a) != other.value_index(a))
            .collect()
    }

    fn draw(rng: &mut StdRng) -> Self {
        Self {
            kind: pick(&SourceKind::ALL, rng),
            pitch: pick(&Pitch::ALL, rng),
            loudness: pick(&Loudness::ALL, rng),
            pattern: pick(&Pattern::ALL, rng),
            background: pick(&Background::ALL, rng),
        }
    }

    /// Changes `attr` to a different value, drawn uniformly.
    fn change(&mut self, attr: Attribute, rng: &mut StdRng) {
        fn other<T: Copy + PartialEq>(all: &[T], cur: T, rng: &mut StdRng) -> T {
            let rest: Vec<T> = all.iter().copied().filter(|&v| v != cur).collect();
            pick(&rest, rng)
        }
        match attr {
            Attribute::Loudness => self.loudness = other(&Loudness::ALL, self.loudness, rng),
            Attribute::Pitch => self.pitch = other(&Pitch::ALL, self.pitch, rng),
            Attribute::Kind => self.kind = other(&SourceKind::ALL, self.kind, rng),
            Attribute::Pattern => self.pattern = other(&Pattern::ALL, self.pattern, rng),
            Attribute::Background => {
                self.background = other(&Background::ALL, self.background, rng)
            }
        }
    }

    /// One-line caption, e.g. "a loud high-pitched buzz pulsing over a hum".
    pub fn caption(&self) -> String {
        let article = match self.kind {
            SourceKind::Noise | SourceKind::Clicks => "",
            _ => "a ",
        };
        format!(
            "{article}{} {}-pitched {} {} over {}",
            self.loudness.phrase(),
            self.pitch.phrase(),
            self.kind.phrase(),
            self.pattern.caption_phrase(),
            self.background.with_article()
        )
    }
}

fn pick<T: Copy>(values: &[T], rng: &mut StdRng) -> T {
    values[rng.random_range(0..values.len())]
}

/// Everything needed to render one clip: its labels and the continuous parameters drawn for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipSpec {
    #[serde(flatten)]
    pub attributes: Attributes,
    /// Fundamental frequency (Hz), inside the pitch class's range.
    pub f0_hz: f64,
    /// RMS level of the foreground while it sounds (dBFS).
    pub level_dbfs: f64,
    /// Pulsing: phase of the pulse train (s); single event: onset (s); continuous: unused (0).
    pub pattern_offset_s: f64,
    /// Seed of the clip's noise (band noise, hiss).
    pub noise_seed: u64,
}

impl ClipSpec {
    /// Draws the continuous parameters of a clip with the given labels.
    fn draw(attributes: Attributes, rng: &mut StdRng) -> Self {
        let (lo, hi) = PITCH_RANGES_HZ[attributes.pitch as usize];
        let f0_hz = (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp();
        let level_dbfs = LOUDNESS_LEVELS_DBFS[attributes.loudness as usize]
            + rng.random_range(-LEVEL_JITTER_DB..=LEVEL_JITTER_DB);
        let pattern_offset_s = match attributes.pattern {
            Pattern::Continuous => 0.0,
            Pattern::Pulsing => rng.random_range(0.0..PULSE_PERIOD_S),
            Pattern::Single => rng.random_range(SINGLE_EVENT_ONSET_S.0..=SINGLE_EVENT_ONSET_S.1),
        };
        Self {
            attributes,
            f0_hz,
            level_dbfs,
            pattern_offset_s,
            noise_seed: rng.random(),
        }
    }
}

/// The band (Hz) that holds the energy of a clip of pitch class `p`: its fundamental range
/// widened by [`BAND_SPREAD`] on both sides. The three bands are contiguous and disjoint.
pub fn pitch_band_hz(p: Pitch) -> (f64, f64) {
    let (lo, hi) = PITCH_RANGES_HZ[p as usize];
    (lo / BAND_SPREAD, hi * BAND_SPREAD)
}

/// One pair of clips: the first and the second audio of an explanation row.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticPair {
    pub first: ClipSpec,
    pub second: ClipSpec,
}

/// SplitMix64 finaliser: a well-mixed 64-bit value from a seed and a counter.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The base seed of a split: `seed` mixed with the split name (FNV-1a), so that `train` and
/// `test` built with the same `--seed` hold different clips.
pub fn split_seed(seed: u64, split: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in split.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(seed, h)
}

/// The random generator of pair `index` of a split (see [`split_seed`]).
pub fn pair_rng(split_seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(mix(split_seed, index as u64))
}

impl SyntheticPair {
    /// Draws a pair from `rng` (use [`pair_rng`] for pair `index` of a split): the first clip's
    /// labels uniformly, then 1-3 attributes (uniformly many, uniformly which) changed to a
    /// different value for the second clip.
    pub fn draw(rng: &mut StdRng) -> Self {
        let a = Attributes::draw(rng);
        let n = rng.random_range(DIFFERING_ATTRIBUTES);
        Self::with_changes(a, n, rng)
    }

    /// As [`SyntheticPair::draw`] with exactly `n` differing attributes (clamped to 1..=5).
    pub fn draw_differing_in(rng: &mut StdRng, n: usize) -> Self {
        let a = Attributes::draw(rng);
        Self::with_changes(a, n.clamp(1, Attribute::ALL.len()), rng)
    }

    /// A pair whose clips differ in exactly the attributes `attrs` (each changed to a different
    /// value drawn uniformly) and agree in all others: the per-attribute lessons of a curriculum.
    pub fn draw_differing_exactly(rng: &mut StdRng, attrs: &[Attribute]) -> Self {
        let a = Attributes::draw(rng);
        let mut b = a;
        for (i, &attr) in attrs.iter().enumerate() {
            // A repeated attribute is changed once (twice could bring it back).
            if !attrs[..i].contains(&attr) {
                b.change(attr, rng);
            }
        }
        let first = ClipSpec::draw(a, rng);
        let second = ClipSpec::draw(b, rng);
        Self { first, second }
    }

    fn with_changes(a: Attributes, n: usize, rng: &mut StdRng) -> Self {
        let mut attrs = Attribute::ALL;
        attrs.shuffle(rng);
        let mut b = a;
        for &attr in &attrs[..n] {
            b.change(attr, rng);
        }
        let first = ClipSpec::draw(a, rng);
        let second = ClipSpec::draw(b, rng);
        Self { first, second }
    }

    /// The reference explanation of a tier (1: a few words, 2: a sentence, 3: a paragraph).
    pub fn explanation(&self, tier: u8) -> String {
        explanation(&self.first.attributes, &self.second.attributes, tier)
    }
}

/// Relation word of an ordinal attribute for the second audio ("louder", "higher in pitch").
fn relation_phrase(attr: Attribute, ord: Ordering, short: bool) -> &'static str {
    match (attr, ord, short) {
        (Attribute::Loudness, Ordering::Greater, _) => "louder",
        (Attribute::Loudness, _, _) => "quieter",
        (_, Ordering::Greater, true) => "higher pitch",
        (_, _, true) => "lower pitch",
        (_, Ordering::Greater, false) => "higher in pitch",
        (_, _, false) => "lower in pitch",
    }
}

/// "X instead of Y" for a categorical attribute (second audio's value first).
fn instead_phrase(attr: Attribute, a: &Attributes, b: &Attributes, articles: bool) -> String {
    let (x, y) = match (attr, articles) {
        (Attribute::Kind, true) => (b.kind.with_article(), a.kind.with_article()),
        (Attribute::Pattern, true) => (b.pattern.with_article(), a.pattern.with_article()),
        (Attribute::Background, true) => (b.background.with_article(), a.background.with_article()),
        (Attribute::Kind, false) => (b.kind.phrase().into(), a.kind.phrase().into()),
        (Attribute::Pattern, false) => (b.pattern.phrase().into(), a.pattern.phrase().into()),
        (_, false) => (b.background.phrase().into(), a.background.phrase().into()),
        (_, true) => unreachable!("ordinal attributes have no 'instead of' phrase"),
    };
    format!("{x} instead of {y}")
}

/// Joins phrases as English lists: "a", "a and b", "a, b and c".
fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn ordering(attr: Attribute, a: &Attributes, b: &Attributes) -> Ordering {
    b.value_index(attr).cmp(&a.value_index(attr))
}

/// The template explanation of how `b` (the second audio) differs from `a` (the first).
///
/// * tier 1: the differences, comma-separated ("louder, higher pitch, chord instead of tone")
/// * tier 2: one sentence ("The second audio is louder, higher in pitch and a chord instead of a tone.")
/// * tier 3: both captions, one sentence per difference, and what stays the same.
///
/// Tiers outside 1..=3 are treated as 3.
pub fn explanation(a: &Attributes, b: &Attributes, tier: u8) -> String {
    let diffs = a.differences(b);
    let part = |attr: Attribute, short: bool| -> String {
        if attr.is_ordinal() {
            relation_phrase(attr, ordering(attr, a, b), short).to_string()
        } else if attr == Attribute::Background && !short {
            format!("over {}", instead_phrase(attr, a, b, true))
        } else {
            instead_phrase(attr, a, b, !short)
        }
    };
    match tier {
        1 => diffs
            .iter()
            .map(|&d| part(d, true))
            .collect::<Vec<_>>()
            .join(", "),
        2 => {
            let parts: Vec<String> = diffs.iter().map(|&d| part(d, false)).collect();
            format!("The second audio is {}.", join_and(&parts))
        }
        _ => {
            let mut text = format!(
                "The first audio is {}, while the second audio is {}.",
                a.caption(),
                b.caption()
            );
            for &d in &diffs {
                let sentence = match d {
                    Attribute::Loudness | Attribute::Pitch => format!(
                        "The second audio is {} than the first.",
                        relation_phrase(d, ordering(d, a, b), false)
                    ),
                    Attribute::Kind => format!(
                        "The sound source changes: the second audio is {}.",
                        instead_phrase(d, a, b, true)
                    ),
                    Attribute::Pattern => format!(
                        "The temporal pattern changes: the second audio is {}.",
                        instead_phrase(d, a, b, true)
                    ),
                    Attribute::Background => format!(
                        "The background changes: the second audio has {} behind it.",
                        instead_phrase(d, a, b, true)
                    ),
                };
                text.push(' ');
                text.push_str(&sentence);
            }
            let same: Vec<String> = Attribute::ALL
                .into_iter()
                .filter(|x| !diffs.contains(x))
                .map(|x| match x {
                    Attribute::Loudness => "the same loudness".to_string(),
                    Attribute::Pitch => "the same pitch".to_string(),
                    Attribute::Kind => format!("the same source ({})", a.kind.with_article()),
                    Attribute::Pattern => {
                        format!("the same pattern ({})", a.pattern.with_article())
                    }
                    Attribute::Background => {
                        format!("the same background ({})", a.background.with_article())
                    }
                })
                .collect();
            if !same.is_empty() {
                text.push_str(&format!(" Both audios share {}.", join_and(&same)));
            }
            text
        }
    }
}

fn db_to_amplitude(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Raised-cosine ramp value for a time `d` (s) from the nearest on/off edge, inside the on part.
fn ramp(d: f64) -> f64 {
    if d >= RAMP_S {
        1.0
    } else {
        0.5 - 0.5 * (PI * d.max(0.0) / RAMP_S).cos()
    }
}

/// The on/off envelope of a pattern at time `t` (s).
fn gate(spec: &ClipSpec, t: f64) -> f64 {
    match spec.attributes.pattern {
        Pattern::Continuous => ramp(t.min(CLIP_SECONDS - t)),
        Pattern::Pulsing => {
            let local = (t - spec.pattern_offset_s).rem_euclid(PULSE_PERIOD_S);
            if local < PULSE_ON_S {
                ramp(local.min(PULSE_ON_S - local)).min(ramp(t.min(CLIP_SECONDS - t)))
            } else {
                0.0
            }
        }
        Pattern::Single => {
            let local = t - spec.pattern_offset_s;
            if (0.0..SINGLE_EVENT_S).contains(&local) {
                ramp(local.min(SINGLE_EVENT_S - local))
            } else {
                0.0
            }
        }
    }
}

/// Uniform white noise of unit RMS (a uniform variable on [-1, 1) has RMS 1/sqrt(3)).
fn white_noise(n: usize, rng: &mut StdRng) -> Vec<f64> {
    let scale = 3f64.sqrt();
    (0..n)
        .map(|_| rng.random_range(-1.0..1.0) * scale)
        .collect()
}

/// White noise band-limited (brick wall in the FFT domain) to `[lo, hi]` Hz.
fn band_noise(n: usize, lo: f64, hi: f64, rng: &mut StdRng) -> Vec<f64> {
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let mut input = white_noise(n, rng);
    let mut spectrum = forward.make_output_vec();
    forward
        .process(&mut input, &mut spectrum)
        .expect("FFT buffers have the planned sizes");
    let bin_hz = f64::from(SAMPLE_RATE) / n as f64;
    for (k, c) in spectrum.iter_mut().enumerate() {
        let f = k as f64 * bin_hz;
        if f < lo || f > hi {
            *c = realfft::num_complex::Complex::new(0.0, 0.0);
        }
    }
    let mut out = inverse.make_output_vec();
    inverse
        .process(&mut spectrum, &mut out)
        .expect("FFT buffers have the planned sizes");
    out
}

/// The foreground source, before gating and level scaling.
fn source(spec: &ClipSpec, rng: &mut StdRng) -> Vec<f64> {
    let sr = f64::from(SAMPLE_RATE);
    let f0 = spec.f0_hz;
    let t = |i: usize| i as f64 / sr;
    match spec.attributes.kind {
        SourceKind::Tone => (0..CLIP_SAMPLES)
            .map(|i| (2.0 * PI * f0 * t(i)).sin())
            .collect(),
        SourceKind::Buzz => {
            let harmonics = ((BUZZ_MAX_FREQ_HZ / f0).floor() as usize).clamp(1, BUZZ_MAX_HARMONICS);
            (0..CLIP_SAMPLES)
                .map(|i| {
                    // sin(n w) by rotation: one sin/cos per sample instead of one per harmonic.
                    let w = 2.0 * PI * f0 * t(i);
                    let (s1, c1) = w.sin_cos();
                    let (mut s, mut c) = (s1, c1);
                    let mut acc = 0.0;
                    for n in 1..=harmonics {
                        acc += s / n as f64;
                        (s, c) = (s * c1 + c * s1, c * c1 - s * s1);
                    }
                    acc
                })
                .collect()
        }
        SourceKind::Chord => (0..CLIP_SAMPLES)
            .map(|i| {
                CHORD_RATIOS
                    .iter()
                    .zip(CHORD_GAINS)
                    .map(|(r, g)| g * (2.0 * PI * f0 * r * t(i)).sin())
                    .sum()
            })
            .collect(),
        SourceKind::Noise => band_noise(CLIP_SAMPLES, f0 / BAND_SPREAD, f0 * BAND_SPREAD, rng),
        SourceKind::Clicks => {
            let period = 1.0 / CLICK_RATE_HZ;
            (0..CLIP_SAMPLES)
                .map(|i| {
                    let local = t(i).rem_euclid(period);
                    (-local / CLICK_DECAY_S).exp() * (2.0 * PI * f0 * local).sin()
                })
                .collect()
        }
        SourceKind::ChirpUp | SourceKind::ChirpDown => {
            let up = spec.attributes.kind == SourceKind::ChirpUp;
            let mut phase: f64 = 0.0;
            (0..CLIP_SAMPLES)
                .map(|i| {
                    let u = t(i).rem_euclid(CHIRP_SWEEP_S) / CHIRP_SWEEP_S;
                    let octave = if up { u } else { 1.0 - u };
                    // From f0 / BAND_SPREAD to f0 * BAND_SPREAD (one octave) and back again.
                    let f = f0 / BAND_SPREAD * (BAND_SPREAD * BAND_SPREAD).powf(octave);
                    let s = phase.sin();
                    phase = (phase + 2.0 * PI * f / sr) % (2.0 * PI);
                    s
                })
                .collect()
        }
    }
}

/// The background, at [`BACKGROUND_LEVEL_DBFS`] (silence: zeros).
fn background(spec: &ClipSpec, rng: &mut StdRng) -> Vec<f64> {
    let amp = db_to_amplitude(BACKGROUND_LEVEL_DBFS);
    let sr = f64::from(SAMPLE_RATE);
    match spec.attributes.background {
        Background::Silence => vec![0.0; CLIP_SAMPLES],
        Background::Hum => {
            let g2 = HUM_SECOND_HARMONIC_GAIN;
            let rms = ((1.0 + g2 * g2) / 2.0).sqrt();
            (0..CLIP_SAMPLES)
                .map(|i| {
                    let w = 2.0 * PI * HUM_HZ * i as f64 / sr;
                    amp / rms * (w.sin() + g2 * (2.0 * w).sin())
                })
                .collect()
        }
        Background::Hiss => white_noise(CLIP_SAMPLES, rng)
            .into_iter()
            .map(|x| x * amp)
            .collect(),
    }
}

/// Renders a clip: [`CLIP_SAMPLES`] samples in [-1, 1]. The foreground's RMS over the samples
/// where its envelope is at least [`SOUNDING_GATE`] open equals `spec.level_dbfs`.
pub fn render(spec: &ClipSpec) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(spec.noise_seed);
    let src = source(spec, &mut rng);
    let sr = f64::from(SAMPLE_RATE);
    let env: Vec<f64> = (0..CLIP_SAMPLES)
        .map(|i| gate(spec, i as f64 / sr))
        .collect();
    let (mut power, mut count) = (0.0, 0usize);
    for (s, g) in src.iter().zip(&env) {
        if *g >= SOUNDING_GATE {
            power += (s * g).powi(2);
            count += 1;
        }
    }
    let rms = (power / count.max(1) as f64).sqrt();
    let scale = if rms > 0.0 {
        db_to_amplitude(spec.level_dbfs) / rms
    } else {
        0.0
    };
    let bg = background(spec, &mut rng);
    src.iter()
        .zip(&env)
        .zip(&bg)
        .map(|((s, g), b)| ((s * g * scale + b) as f32).clamp(-1.0, 1.0))
        .collect()
}

/// Writes mono 16-bit PCM WAV (samples clamped to [-1, 1], rounded to the nearest step).
pub fn write_wav_pcm16(path: &Path, samples: &[f32], sample_rate: u32) -> std::io::Result<()> {
    let data_len = u32::try_from(samples.len() * 2)
        .map_err(|_| std::io::Error::other("too many samples for a WAV file"))?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"RIFF")?;
    w.write_all(&(36 + data_len).to_le_bytes())?;
    w.write_all(b"WAVEfmt ")?;
    w.write_all(&16u32.to_le_bytes())?; // fmt chunk size
    w.write_all(&1u16.to_le_bytes())?; // PCM
    w.write_all(&1u16.to_le_bytes())?; // mono
    w.write_all(&sample_rate.to_le_bytes())?;
    w.write_all(&(sample_rate * 2).to_le_bytes())?; // byte rate
    w.write_all(&2u16.to_le_bytes())?; // block align
    w.write_all(&16u16.to_le_bytes())?; // bits per sample
    w.write_all(b"data")?;
    w.write_all(&data_len.to_le_bytes())?;
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush()
}

/// One line of `truth.jsonl`: a clip's path (relative to the dataset folder), split, labels and
/// rendering parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRecord {
    pub path: String,
    pub split: String,
    #[serde(flatten)]
    pub spec: ClipSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kind: SourceKind, pitch: Pitch, loudness: Loudness) -> Attributes {
        Attributes {
            kind,
            pitch,
            loudness,
            pattern: Pattern::Pulsing,
            background: Background::Hum,
        }
    }

    #[test]
    fn constants_match_the_model_input() {
        let a = crate::model::config::AdiffConfig::base().audio;
        assert_eq!(a.sample_rate, SAMPLE_RATE);
        assert_eq!(a.duration_s, CLIP_SECONDS);
        assert_eq!(a.clip_samples(), CLIP_SAMPLES);
        for w in PITCH_RANGES_HZ.windows(2) {
            assert!(w[0].1 * 2.0 <= w[1].0, "pitch bands overlap");
        }
    }

    #[test]
    fn templates_use_the_vocabulary() {
        let a = attrs(SourceKind::Tone, Pitch::Low, Loudness::Quiet);
        let mut b = attrs(SourceKind::Chord, Pitch::High, Loudness::Loud);
        b.background = Background::Silence;
        assert_eq!(
            explanation(&a, &b, 1),
            "louder, higher pitch, chord instead of tone, silence instead of hum"
        );
        assert_eq!(
            explanation(&a, &b, 2),
            "The second audio is louder, higher in pitch, a chord instead of a tone and over \
             silence instead of a hum."
        );
        let t3 = explanation(&a, &b, 3);
        assert!(t3.starts_with(
            "The first audio is a quiet low-pitched tone pulsing over a hum, while the second \
             audio is a loud high-pitched chord pulsing over silence."
        ));
        assert!(
            t3.ends_with("Both audios share the same pattern (pulsing)."),
            "{t3}"
        );
    }

    #[test]
    fn pairs_differ_in_exactly_the_named_attributes() {
        let base = split_seed(3, "lesson");
        let lessons: [&[Attribute]; 3] = [
            &[Attribute::Pitch],
            &[Attribute::Loudness, Attribute::Kind],
            &[Attribute::Background, Attribute::Background],
        ];
        for attrs in lessons {
            let mut want: Vec<Attribute> = attrs.to_vec();
            want.sort();
            want.dedup();
            for i in 0..100 {
                let p = SyntheticPair::draw_differing_exactly(&mut pair_rng(base, i), attrs);
                assert_eq!(p.first.attributes.differences(&p.second.attributes), want);
            }
        }
        assert_eq!(Attribute::from_name("kind"), Some(Attribute::Kind));
        assert_eq!(Attribute::from_name("source kind"), Some(Attribute::Kind));
        assert_eq!(Attribute::from_name("pitch"), Some(Attribute::Pitch));
        assert_eq!(Attribute::from_name("timbre"), None);
    }

    #[test]
    fn pairs_differ_in_one_to_three_attributes_and_are_seeded() {
        let base = split_seed(7, "train");
        assert_ne!(base, split_seed(7, "test"));
        for i in 0..200 {
            let p = SyntheticPair::draw(&mut pair_rng(base, i));
            assert_eq!(p, SyntheticPair::draw(&mut pair_rng(base, i)));
            let n = p.first.attributes.differences(&p.second.attributes).len();
            assert!(DIFFERING_ATTRIBUTES.contains(&n), "{n}");
            for k in 1..=3 {
                let q = SyntheticPair::draw_differing_in(&mut pair_rng(base, i), k);
                assert_eq!(
                    q.first.attributes.differences(&q.second.attributes).len(),
                    k
                );
            }
        }
    }
}

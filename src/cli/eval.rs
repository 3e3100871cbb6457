//! `adiff eval`: captioning metrics of an `adiff infer` predictions CSV, per dataset and tier, as
//! coco-caption computes them (BLEU-1..4, ROUGE-L, CIDEr-D). METEOR and SPICE/SPIDEr are reported
//! as unavailable rather than approximated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;

use crate::error::{AdiffError, Result};
use crate::metrics::{score_corpus, CorpusScores, MetricsConfig};

/// Why the metrics that are not computed have no number (shown in the table and the JSON).
const METEOR_STATUS: &str = "not yet supported";
const SPICE_STATUS: &str = "unavailable: needs --spice-jar";
const SPIDER_STATUS: &str = "unavailable: needs SPICE";
/// Empty-prediction line numbers listed before "...".
const MAX_LISTED_LINES: usize = 10;

/// Score a predictions CSV (from `adiff infer`) against its reference answers.
///
/// The CSV needs `prediction` and `answer` columns; `answer_2`, `answer_3`, ... are more
/// references. Text is tokenized as coco-caption does (PTBTokenizer, lower-cased, punctuation
/// removed); BLEU-1..4, ROUGE-L and CIDEr-D equal pycocoevalcap 1.2's. An empty prediction is
/// scored as an empty string and reported. Each group (dataset x tier by default) is its own
/// corpus, as in the paper's tables.
///
/// Example: adiff eval acd_test_fewwords_preds.csv cld_test_fewwords_preds.csv --json scores.json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct EvalArgs {
    /// Predictions CSV(s) written by `adiff infer`.
    #[arg(required = true)]
    pub preds: Vec<PathBuf>,
    /// Also write the scores as JSON here (for CI).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Score each group separately: any of `taskname`, `tier` (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "taskname,tier"
    )]
    pub group_by: Vec<GroupKey>,
    /// Tier of every file (default: from the file name: `fewwords`, `sentence` or `detail`).
    #[arg(long, value_enum)]
    pub tier: Option<Tier>,
    /// Instead of captioning metrics, score the attributes the predictions assert (louder,
    /// higher in pitch, "a chord instead of a tone", ...) against this `truth.jsonl` from
    /// `adiff build-dataset synthetic`: per-attribute accuracy, with chance and majority levels.
    #[arg(long, value_name = "TRUTH_JSONL")]
    pub synthetic: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupKey {
    Taskname,
    Tier,
}

/// The three explanation tiers of ADIFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Tier 1: a few words.
    #[value(alias = "1")]
    Fewwords,
    /// Tier 2: a sentence.
    #[value(alias = "2")]
    Sentence,
    /// Tier 3: in detail.
    #[value(alias = "3")]
    Detail,
}

impl Tier {
    pub fn number(self) -> u8 {
        match self {
            Tier::Fewwords => 1,
            Tier::Sentence => 2,
            Tier::Detail => 3,
        }
    }

    /// The tier named in a file name (`..._fewwords_...`), if exactly one is.
    pub fn from_file_name(path: &Path) -> Option<Tier> {
        let name = path.file_name()?.to_string_lossy().to_lowercase();
        let found: Vec<Tier> = [Tier::Fewwords, Tier::Sentence, Tier::Detail]
            .into_iter()
            .filter(|t| name.contains(t.file_tag()))
            .collect();
        match found[..] {
            [t] => Some(t),
            _ => None,
        }
    }

    fn file_tag(self) -> &'static str {
        match self {
            Tier::Fewwords => "fewwords",
            Tier::Sentence => "sentence",
            Tier::Detail => "detail",
        }
    }
}

/// One scored row: the prediction and its non-empty references.
#[derive(Debug, Clone)]
pub struct PredictionRow {
    /// 1-based CSV line of the record (header = 1).
    pub line: u64,
    pub taskname: Option<String>,
    pub prediction: String,
    pub references: Vec<String>,
}

/// Reads an `adiff infer` output: `prediction`, `answer` and any `answer_N` columns; `taskname`
/// when present. A row without any reference is an error naming its line.
pub fn read_predictions(path: &Path) -> Result<Vec<PredictionRow>> {
    let err = |m: String| AdiffError::Invalid(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut rdr = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    let headers = rdr.headers().map_err(|e| err(e.to_string()))?.clone();
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let pred_col = find("prediction")
        .ok_or_else(|| err("no 'prediction' column (is it an `adiff infer` output?)".into()))?;
    let answer_col = find("answer").ok_or_else(|| err("no 'answer' column".into()))?;
    let task_col = find("taskname");
    // answer, then answer_2, answer_3, ... in number order.
    let mut extra: Vec<(u32, usize)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let n = h.trim().strip_prefix("answer_")?.parse::<u32>().ok()?;
            Some((n, i))
        })
        .collect();
    extra.sort_unstable();
    let ref_cols: Vec<usize> = std::iter::once(answer_col)
        .chain(extra.into_iter().map(|(_, i)| i))
        .collect();
    let mut rows = Vec::new();
    let mut lines = crate::data::explanations::RecordLines::new(&bytes);
    for rec in rdr.records() {
        let rec = rec.map_err(|e| err(e.to_string()))?;
        let line = lines.line_of(&rec);
        let field = |i: usize| rec.get(i).unwrap_or("").to_string();
        let references: Vec<String> = ref_cols
            .iter()
            .map(|&i| field(i))
            .filter(|r| !r.trim().is_empty())
            .collect();
        if references.is_empty() {
            return Err(err(format!("line {line}: no reference answer")));
        }
        rows.push(PredictionRow {
            line,
            taskname: task_col.map(field),
            prediction: field(pred_col),
            references,
        });
    }
    if rows.is_empty() {
        return Err(err("no rows to score".into()));
    }
    Ok(rows)
}

/// The scores of one group, as printed and written to JSON.
#[derive(Debug, serde::Serialize)]
pub struct GroupReport {
    pub taskname: Option<String>,
    pub tier: Option<Tier>,
    pub files: Vec<String>,
    pub items: usize,
    /// Rows whose prediction was empty (scored as empty strings), as `file:line`.
    pub empty_predictions: Vec<String>,
    pub scores: CorpusScores,
    /// Metrics without a number, and why.
    pub unavailable: BTreeMap<&'static str, &'static str>,
}

/// Dataset label of the paper for a taskname (ACD is built on AudioCaps, CLD on Clotho).
fn dataset_label(taskname: &str) -> String {
    match taskname {
        "audiocaps" => "ACD".into(),
        t if t.starts_with("clotho") => "CLD".into(),
        t => t.into(),
    }
}

type GroupId = (Option<String>, Option<Tier>);
/// The files of a group and its rows, each with the file it came from.
type GroupRows = (Vec<String>, Vec<(String, PredictionRow)>);

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(truth) = &args.synthetic {
        let report = crate::metrics::synthetic::evaluate(truth, &args.preds)?;
        print!("{}", report.table());
        if let Some(p) = &args.json {
            std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        return Ok(());
    }
    let by_task = args.group_by.contains(&GroupKey::Taskname);
    let by_tier = args.group_by.contains(&GroupKey::Tier);
    // (group) -> (files, rows with their file)
    let mut groups: BTreeMap<GroupId, GroupRows> = BTreeMap::new();
    for path in &args.preds {
        let tier = match args.tier.or_else(|| Tier::from_file_name(path)) {
            Some(t) => Some(t),
            None if by_tier => anyhow::bail!(
                "{}: cannot tell the tier (the file name has none of fewwords/sentence/detail); \
                 pass --tier",
                path.display()
            ),
            None => None,
        };
        let rows = read_predictions(path)?;
        let file = path.display().to_string();
        for row in rows {
            let task = if by_task {
                Some(row.taskname.clone().with_context(|| {
                    format!("{file}: no 'taskname' column to group by (use --group-by tier)")
                })?)
            } else {
                None
            };
            let key = (task, if by_tier { tier } else { None });
            let entry = groups.entry(key).or_default();
            if !entry.0.contains(&file) {
                entry.0.push(file.clone());
            }
            entry.1.push((file.clone(), row));
        }
    }
    let cfg = MetricsConfig::default();
    let mut reports = Vec::new();
    for ((taskname, tier), (files, rows)) in groups {
        let preds: Vec<&str> = rows.iter().map(|(_, r)| r.prediction.as_str()).collect();
        let refs: Vec<Vec<&str>> = rows
            .iter()
            .map(|(_, r)| r.references.iter().map(String::as_str).collect())
            .collect();
        let scores = score_corpus(&preds, &refs, &cfg)?;
        let empty_predictions = rows
            .iter()
            .filter(|(_, r)| r.prediction.trim().is_empty())
            .map(|(f, r)| format!("{f}:{}", r.line))
            .collect();
        reports.push(GroupReport {
            taskname,
            tier,
            files,
            items: rows.len(),
            empty_predictions,
            scores,
            unavailable: BTreeMap::from([
                ("METEOR", METEOR_STATUS),
                ("SPICE", SPICE_STATUS),
                ("SPIDEr", SPIDER_STATUS),
            ]),
        });
    }
    print_table(&reports);
    if let Some(p) = &args.json {
        let json = serde_json::json!({
            "tokenizer": "coco-caption PTBTokenizer (-lowerCase, punctuation removed), Rust reimplementation",
            "groups": reports,
        });
        std::fs::write(p, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// One row per group, columns as the paper's detailed tables (BLEU-1..4, METEOR, ROUGE-L, CIDEr,
/// SPICE, SPIDEr); metrics without a number show `-` and are explained below the table.
fn print_table(reports: &[GroupReport]) {
    println!(
        "{:<12} {:>4} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "Task",
        "Tier",
        "Items",
        "BLEU-1",
        "BLEU-2",
        "BLEU-3",
        "BLEU-4",
        "METEOR",
        "ROUGE-L",
        "CIDEr-D",
        "SPICE",
        "SPIDEr"
    );
    for r in reports {
        let task = r.taskname.as_deref().map_or("all".into(), dataset_label);
        let tier = r.tier.map_or("all".into(), |t| t.number().to_string());
        let b = |k: usize| {
            r.scores
                .bleu
                .get(k)
                .map_or("-".into(), |x| format!("{x:.3}"))
        };
        println!(
            "{:<12} {:>4} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            task,
            tier,
            r.items,
            b(0),
            b(1),
            b(2),
            b(3),
            "-",
            format!("{:.3}", r.scores.rouge_l),
            format!("{:.3}", r.scores.cider_d),
            "-",
            "-"
        );
    }
    println!("METEOR: {METEOR_STATUS}. SPICE: {SPICE_STATUS}. SPIDEr: {SPIDER_STATUS}.");
    println!("CIDEr-D is coco-caption's CIDEr (pycocoevalcap's `Cider`), x10 as there.");
    for r in reports.iter().filter(|r| !r.empty_predictions.is_empty()) {
        let shown: Vec<&str> = r
            .empty_predictions
            .iter()
            .take(MAX_LISTED_LINES)
            .map(String::as_str)
            .collect();
        let more = if r.empty_predictions.len() > MAX_LISTED_LINES {
            ", ..."
        } else {
            ""
        };
        eprintln!(
            "{} empty prediction(s), scored as empty strings: {}{more}",
            r.empty_predictions.len(),
            shown.join(", ")
        );
    }
}

//! `adiff eval`: captioning metrics of an `adiff infer` predictions CSV, per dataset and tier, as
//! coco-caption computes them (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr). METEOR needs
//! Meteor's language data and SPICE its jar; without them they are reported as unavailable (with
//! the reason) rather than approximated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;

use crate::error::{AdiffError, Result};
use crate::metrics::meteor::{Meteor, MeteorData, MeteorScores};
use crate::metrics::spice::{locate_jar, spice};
use crate::metrics::tokenize::coco_tokenize;
use crate::metrics::{score_tokenized_items, CorpusScores, ItemScores, MetricsConfig};

/// Why the metrics that are not computed have no number (shown in the table and the JSON).
const METEOR_STATUS: &str =
    "unavailable: needs Meteor's data (--meteor-data meteor-1.5.jar or $ADIFF_METEOR_DATA)";
/// Longest text (in words) METEOR is computed on: its alignment search grows faster than the
/// square of the length (a 5 MB reference ran for minutes), and real captions and explanations
/// are far shorter (the detail tier's answers: ~100 words).
const METEOR_MAX_WORDS: usize = 1000;
const METEOR_TOO_LONG: &str =
    "not computed: a prediction or reference is over 1000 words (METEOR's alignment would take minutes)";
const SPICE_STATUS: &str = "unavailable: needs the SPICE jar (--spice-jar or $ADIFF_SPICE_JAR)";
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
    /// Also write every row's scores here (CSV, input order, for error analysis): file, line,
    /// the group's taskname and tier, the prediction, BLEU-1..4 (each row's own brevity
    /// penalty), METEOR, ROUGE-L, CIDEr-D (document frequencies of the row's group) and SPICE
    /// (empty when not computed), as pycocoevalcap's per-item scores.
    #[arg(long, value_name = "FILE.csv")]
    pub per_item: Option<PathBuf>,
    /// Replace the --json and --per-item files if they exist.
    #[arg(long)]
    pub force: bool,
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
    /// Meteor 1.5's data for METEOR: meteor-1.5.jar (data/paraphrase-en.gz beside it) or a
    /// directory with the jar's extracted files [env: ADIFF_METEOR_DATA].
    #[arg(long)]
    pub meteor_data: Option<PathBuf>,
    /// spice-1.0.jar (with its lib/ of Stanford CoreNLP jars) for SPICE and SPIDEr
    /// [env: ADIFF_SPICE_JAR].
    #[arg(long)]
    pub spice_jar: Option<PathBuf>,
    /// Java launcher used for SPICE.
    #[arg(long, default_value = "java")]
    pub java: PathBuf,
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
    let mut lines = crate::data::csv_schema::RecordLines::new(&bytes);
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
    /// METEOR 1.5 (corpus score, as the jar's last line), when Meteor's data was given.
    pub meteor: Option<f64>,
    /// SPICE (mean item F-score) and SPIDEr, when the SPICE jar was given.
    pub spice: Option<f64>,
    pub spider: Option<f64>,
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
    let mut outputs: Vec<(&str, &Path)> = Vec::new();
    outputs.extend(args.json.as_deref().map(|p| ("JSON scores", p)));
    outputs.extend(args.per_item.as_deref().map(|p| ("per-item CSV", p)));
    if !outputs.is_empty() {
        let mut inputs: Vec<&std::path::Path> = args.preds.iter().map(PathBuf::as_path).collect();
        inputs.extend(args.synthetic.as_deref());
        inputs.extend(args.meteor_data.as_deref());
        inputs.extend(args.spice_jar.as_deref());
        super::check_outputs(&inputs, &outputs, args.force)?;
    }
    if args.synthetic.is_some() && args.per_item.is_some() {
        anyhow::bail!("--per-item writes captioning metrics; it does not apply to --synthetic");
    }
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
    // Input position (over all files) of each group's rows, for the per-item CSV.
    let mut order: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
    let mut n_rows = 0usize;
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
            order.entry(key.clone()).or_default().push(n_rows);
            n_rows += 1;
            let entry = groups.entry(key).or_default();
            if !entry.0.contains(&file) {
                entry.0.push(file.clone());
            }
            entry.1.push((file.clone(), row));
        }
    }
    let cfg = MetricsConfig::default();
    // Tokenize every group once (coco-caption's PTB tokenisation feeds every metric).
    let tokenized: Vec<(Vec<String>, Vec<Vec<String>>)> = groups
        .values()
        .map(|(_, rows)| {
            let hyp = rows
                .iter()
                .map(|(_, r)| coco_tokenize(&r.prediction))
                .collect();
            let refs = rows
                .iter()
                .map(|(_, r)| r.references.iter().map(|x| coco_tokenize(x)).collect())
                .collect();
            (hyp, refs)
        })
        .collect();
    let meteor = meteor_scores(args.meteor_data.as_deref(), &tokenized)?;
    let spice_jar = locate_jar(args.spice_jar.as_deref());
    let mut reports = Vec::new();
    let mut per_item: Vec<Option<ItemRow>> = Vec::new();
    if args.per_item.is_some() {
        per_item.resize_with(n_rows, || None);
    }
    let order: Vec<Vec<usize>> = order.into_values().collect();
    for (g, ((taskname, tier), (files, rows))) in groups.into_iter().enumerate() {
        let (hyp, refs) = &tokenized[g];
        let (scores, items) = score_tokenized_items(hyp, refs, &cfg)?;
        let spice_scores = match &spice_jar {
            Some(jar) => Some(spice(&args.java, jar, hyp, refs)?),
            None => None,
        };
        let spice = spice_scores.as_ref().map(|s| s.corpus);
        if args.per_item.is_some() {
            let meteor_items = match &meteor {
                MeteorResult::Scores(m) => Some(&m[g].items),
                _ => None,
            };
            for (i, (file, row)) in rows.iter().enumerate() {
                per_item[order[g][i]] = Some(ItemRow::new(
                    file,
                    row,
                    (taskname.as_deref(), tier),
                    (&items, i),
                    meteor_items.map(|m| m[i]),
                    spice_scores.as_ref().map(|s| s.items[i]),
                ));
            }
        }
        let spider = spice.map(|s| (scores.cider_d + s) / 2.0);
        let empty_predictions = rows
            .iter()
            .filter(|(_, r)| r.prediction.trim().is_empty())
            .map(|(f, r)| format!("{f}:{}", r.line))
            .collect();
        let mut unavailable = BTreeMap::new();
        match &meteor {
            MeteorResult::Scores(_) => {}
            MeteorResult::NoData => {
                unavailable.insert("METEOR", METEOR_STATUS);
            }
            MeteorResult::TooLong => {
                unavailable.insert("METEOR", METEOR_TOO_LONG);
            }
        }
        if spice.is_none() {
            unavailable.insert("SPICE", SPICE_STATUS);
            unavailable.insert("SPIDEr", SPIDER_STATUS);
        }
        reports.push(GroupReport {
            taskname,
            tier,
            files,
            items: rows.len(),
            empty_predictions,
            scores,
            meteor: match &meteor {
                MeteorResult::Scores(m) => Some(m[g].corpus),
                _ => None,
            },
            spice,
            spider,
            unavailable,
        });
    }
    print_table(&reports);
    if let Some(p) = &args.per_item {
        write_per_item(p, &per_item)?;
    }
    if let Some(p) = &args.json {
        let json = serde_json::json!({
            "tokenizer": "coco-caption PTBTokenizer (-lowerCase, punctuation removed), Rust reimplementation",
            "metric_versions": metric_versions(&cfg),
            "groups": reports,
        });
        std::fs::write(p, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// A score with three decimals, or `-` when it was not computed.
fn num(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.3}"))
}

/// What each metric is (the JSON's `metric_versions`): the reference implementation and the
/// settings the scores reproduce.
fn metric_versions(cfg: &MetricsConfig) -> serde_json::Value {
    serde_json::json!({
        "tokenizer": "PTBTokenizer as pycocoevalcap 1.2 runs it (Stanford CoreNLP 3.4.1, -preserveLines -lowerCase) + its punctuation filter; Rust reimplementation",
        "bleu": format!("pycocoevalcap 1.2 BleuScorer, BLEU-1..{}, option \"closest\" (closest reference length, ties to the shorter); corpus from summed counts, per item with the item's own brevity penalty", cfg.max_n),
        "rouge_l": format!("pycocoevalcap 1.2 Rouge, LCS F-measure beta {}, mean over items", cfg.rouge_beta),
        "cider_d": format!("pycocoevalcap 1.2 Cider (CIDEr-D: sigma {}, clipped, Gaussian length penalty, x{}), document frequencies from each group's references", cfg.cider_sigma, cfg.cider_scale),
        "meteor": "Meteor 1.5 as pycocoevalcap 1.2 runs it (-l en -norm, task rank), Rust reimplementation; corpus score from summed statistics (the jar's last line)",
        "spice": "SPICE 1.0 jar as pycocoevalcap 1.2 runs it (-subset), mean of the items' All F-scores",
        "spider": "(CIDEr-D + SPICE) / 2",
    })
}

/// One row of the --per-item CSV.
#[derive(serde::Serialize)]
struct ItemRow {
    file: String,
    line: u64,
    taskname: Option<String>,
    tier: Option<Tier>,
    prediction: String,
    bleu_1: f64,
    bleu_2: f64,
    bleu_3: f64,
    bleu_4: f64,
    meteor: Option<f64>,
    rouge_l: f64,
    cider_d: f64,
    spice: Option<f64>,
}

impl ItemRow {
    fn new(
        file: &str,
        row: &PredictionRow,
        (taskname, tier): (Option<&str>, Option<Tier>),
        (items, i): (&ItemScores, usize),
        meteor: Option<f64>,
        spice: Option<f64>,
    ) -> Self {
        let bleu = |k: usize| items.bleu.get(k).map_or(f64::NAN, |b| b[i]);
        Self {
            file: file.to_string(),
            line: row.line,
            taskname: taskname.map(str::to_string),
            tier,
            prediction: row.prediction.clone(),
            bleu_1: bleu(0),
            bleu_2: bleu(1),
            bleu_3: bleu(2),
            bleu_4: bleu(3),
            meteor,
            rouge_l: items.rouge_l[i],
            cider_d: items.cider_d[i],
            spice,
        }
    }
}

/// Writes the --per-item CSV (rows in input order).
fn write_per_item(path: &Path, rows: &[Option<ItemRow>]) -> anyhow::Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    let mut w = csv::Writer::from_path(path).with_context(ctx)?;
    for r in rows.iter().flatten() {
        w.serialize(r).with_context(ctx)?;
    }
    w.flush().with_context(ctx)?;
    Ok(())
}

/// METEOR of every group, or why it was not computed.
enum MeteorResult {
    Scores(Vec<MeteorScores>),
    NoData,
    TooLong,
}

/// METEOR of every group (corpus and item scores), loading Meteor's data once for all of them;
/// not computed without the data or when a text is over [`METEOR_MAX_WORDS`].
fn meteor_scores(
    arg: Option<&Path>,
    groups: &[(Vec<String>, Vec<Vec<String>>)],
) -> Result<MeteorResult> {
    let words = |t: &String| t.split_whitespace().count();
    let longest = groups
        .iter()
        .flat_map(|(h, r)| h.iter().map(words).chain(r.iter().flatten().map(words)))
        .max()
        .unwrap_or(0);
    if longest > METEOR_MAX_WORDS {
        eprintln!("warning: METEOR {METEOR_TOO_LONG} (the longest has {longest})");
        return Ok(MeteorResult::TooLong);
    }
    let Some(data) = MeteorData::locate(arg)? else {
        return Ok(MeteorResult::NoData);
    };
    let hyps: Vec<&String> = groups.iter().flat_map(|(h, _)| h).collect();
    let refs: Vec<Vec<&String>> = groups
        .iter()
        .flat_map(|(_, r)| r.iter().map(|rs| rs.iter().collect()))
        .collect();
    let (meteor, texts) = Meteor::prepare(&data, &hyps, &refs)?;
    let mut out = Vec::with_capacity(groups.len());
    let mut start = 0;
    for (h, _) in groups {
        let end = start + h.len();
        let (scores, _) = meteor.score(&texts.hyps[start..end], &texts.refs[start..end]);
        out.push(scores);
        start = end;
    }
    Ok(MeteorResult::Scores(out))
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
            num(r.meteor),
            format!("{:.3}", r.scores.rouge_l),
            format!("{:.3}", r.scores.cider_d),
            num(r.spice),
            num(r.spider)
        );
    }
    let mut why: BTreeMap<&str, &str> = BTreeMap::new();
    for r in reports {
        why.extend(r.unavailable.iter().map(|(k, v)| (*k, *v)));
    }
    for (metric, reason) in why {
        println!("{metric}: {reason}.");
    }
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

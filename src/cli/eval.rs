//! `adiff eval`: captioning metrics of an `adiff infer` predictions CSV, per dataset and tier, as
//! coco-caption computes them (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr). METEOR needs
//! Meteor's language data and SPICE its jar; without them they are reported as unavailable (with
//! the reason) rather than approximated. `--metrics` picks other sets: FENSE (SBERT-sim with the
//! fluency error penalty), SPIDEr-FL and DCASE 2024's ranking metrics, with their BERT models run
//! natively (src/metrics/fense.rs), as aac-metrics 0.6 computes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;

use crate::error::{AdiffError, Result};
use crate::metrics::fense::{penalize, FenseConfig, FenseFiles};
use crate::metrics::fer::{self, Echecker, FerScores, ERROR_INDEX, ERROR_NAMES};
use crate::metrics::meteor::{Meteor, MeteorData, MeteorScores};
use crate::metrics::sbert_sim::{sbert_sim, SbertSimScores, SentenceBert};
use crate::metrics::spice::{locate_jar, spice};
use crate::metrics::spider_fl::{spider_fl, SpiderFlScores};
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
const SPIDER_FL_STATUS: &str = "unavailable: needs SPICE (--spice-jar or $ADIFF_SPICE_JAR)";
/// Environment variable naming FENSE's model directory (as `--fense-model`).
const FENSE_MODEL_ENV: &str = "ADIFF_FENSE_MODEL";
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
    /// Metrics to compute (comma-separated): sets `coco` (the default: BLEU-1..4, METEOR,
    /// ROUGE-L, CIDEr-D, SPICE, SPIDEr), `fense` (FENSE, SBERT-sim, fluency error rate),
    /// `spider-fl`, `dcase2024` (METEOR, SPIDEr-FL, FENSE, vocabulary size), or single metrics.
    /// FENSE and SPIDEr-FL are aac-metrics 0.6's, on the tokenized text (as its `evaluate`).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub metrics: Option<Vec<MetricSet>>,
    /// FENSE's models: a directory with `sbert/` (a sentence-transformers model) and `echecker/`
    /// (fense's .ckpt with its encoder's config.json and vocab.txt) [env: ADIFF_FENSE_MODEL];
    /// default: the files `adiff download fense` put in the caches.
    #[arg(long, value_name = "DIR")]
    pub fense_model: Option<PathBuf>,
    /// Instead of captioning metrics, score the attributes the predictions assert (louder,
    /// higher in pitch, "a chord instead of a tone", ...) against this `truth.jsonl` from
    /// `adiff build-dataset synthetic`: per-attribute accuracy, with chance and majority levels.
    #[arg(long, value_name = "TRUTH_JSONL")]
    pub synthetic: Option<PathBuf>,
}

/// What `--metrics` accepts: metric sets and single metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricSet {
    /// BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr (the default).
    Coco,
    /// SBERT-sim, fluency error rate and FENSE.
    Fense,
    /// SPIDEr-FL: SPIDEr with the fluency penalty (needs SPICE).
    SpiderFl,
    /// DCASE 2024's ranking: METEOR, SPIDEr-FL, FENSE and vocabulary size.
    Dcase2024,
    Bleu,
    Meteor,
    RougeL,
    CiderD,
    Spice,
    Spider,
    SbertSim,
    Fer,
    Vocab,
}

/// One column of the table (and of the per-item CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    /// BLEU-(k+1).
    Bleu(usize),
    Meteor,
    RougeL,
    CiderD,
    Spice,
    Spider,
    SbertSim,
    Fer,
    Fense,
    SpiderFl,
    Vocab,
}

impl MetricSet {
    fn columns(self) -> Vec<Col> {
        match self {
            MetricSet::Coco => vec![
                Col::Bleu(0),
                Col::Bleu(1),
                Col::Bleu(2),
                Col::Bleu(3),
                Col::Meteor,
                Col::RougeL,
                Col::CiderD,
                Col::Spice,
                Col::Spider,
            ],
            MetricSet::Fense => vec![Col::SbertSim, Col::Fer, Col::Fense],
            MetricSet::SpiderFl => vec![Col::SpiderFl],
            MetricSet::Dcase2024 => vec![Col::Meteor, Col::SpiderFl, Col::Fense, Col::Vocab],
            MetricSet::Bleu => (0..4).map(Col::Bleu).collect(),
            MetricSet::Meteor => vec![Col::Meteor],
            MetricSet::RougeL => vec![Col::RougeL],
            MetricSet::CiderD => vec![Col::CiderD],
            MetricSet::Spice => vec![Col::Spice],
            MetricSet::Spider => vec![Col::Spider],
            MetricSet::SbertSim => vec![Col::SbertSim],
            MetricSet::Fer => vec![Col::Fer],
            MetricSet::Vocab => vec![Col::Vocab],
        }
    }
}

/// The columns of `--metrics` (coco's without it), each once, in the order asked.
fn columns(sets: Option<&[MetricSet]>) -> Vec<Col> {
    let mut out: Vec<Col> = Vec::new();
    for c in sets
        .unwrap_or(&[MetricSet::Coco])
        .iter()
        .flat_map(|s| s.columns())
    {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

impl Col {
    fn header(self) -> String {
        match self {
            Col::Bleu(k) => format!("BLEU-{}", k + 1),
            Col::Meteor => "METEOR".into(),
            Col::RougeL => "ROUGE-L".into(),
            Col::CiderD => "CIDEr-D".into(),
            Col::Spice => "SPICE".into(),
            Col::Spider => "SPIDEr".into(),
            Col::SbertSim => "SBERT-sim".into(),
            Col::Fer => "FER".into(),
            Col::Fense => "FENSE".into(),
            Col::SpiderFl => "SPIDEr-FL".into(),
            Col::Vocab => "Vocab".into(),
        }
    }

    /// Column names in the per-item CSV (FER adds the error probability).
    fn csv_names(self) -> Vec<String> {
        match self {
            Col::Bleu(k) => vec![format!("bleu_{}", k + 1)],
            Col::Meteor => vec!["meteor".into()],
            Col::RougeL => vec!["rouge_l".into()],
            Col::CiderD => vec!["cider_d".into()],
            Col::Spice => vec!["spice".into()],
            Col::Spider => vec!["spider".into()],
            Col::SbertSim => vec!["sbert_sim".into()],
            Col::Fer => vec!["fer".into(), "fluency_error_prob".into()],
            Col::Fense => vec!["fense".into()],
            Col::SpiderFl => vec!["spider_fl".into()],
            Col::Vocab => vec!["vocab".into()],
        }
    }

    /// The group's corpus value, when computed.
    fn corpus(self, r: &GroupReport) -> Option<f64> {
        match self {
            Col::Bleu(k) => r.scores.bleu.get(k).copied(),
            Col::Meteor => r.meteor,
            Col::RougeL => Some(r.scores.rouge_l),
            Col::CiderD => Some(r.scores.cider_d),
            Col::Spice => r.spice,
            Col::Spider => r.spider,
            Col::SbertSim => r.sbert_sim,
            Col::Fer => r.fer,
            Col::Fense => r.fense,
            Col::SpiderFl => r.spider_fl,
            Col::Vocab => r.vocab,
        }
    }

    /// The table cell: three decimals (a count for the vocabulary), `-` when not computed.
    fn cell(self, r: &GroupReport) -> String {
        match (self, self.corpus(r)) {
            (Col::Vocab, Some(v)) => format!("{v:.0}"),
            (_, x) => num(x),
        }
    }
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
    /// SBERT-sim, fluency error rate (share of flagged predictions) with the detector's mean
    /// probabilities, and FENSE (`--metrics fense`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbert_sim: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fer: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fluency_error_probs: Option<BTreeMap<&'static str, f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fense: Option<f64>,
    /// SPIDEr-FL (`--metrics spider-fl`), when SPICE was computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spider_fl: Option<f64>,
    /// Distinct tokens of the predictions (`--metrics vocab`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab: Option<f64>,
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
        inputs.extend(args.fense_model.as_deref());
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
            let preds: Vec<&str> = rows.iter().map(|(_, r)| r.prediction.as_str()).collect();
            let refs: Vec<Vec<&str>> = rows
                .iter()
                .map(|(_, r)| r.references.iter().map(String::as_str).collect())
                .collect();
            crate::metrics::tokenize_corpus(&preds, &refs)
        })
        .collect();
    let cols = columns(args.metrics.as_deref());
    let want = |c: Col| cols.contains(&c);
    let meteor = if want(Col::Meteor) {
        meteor_scores(args.meteor_data.as_deref(), &tokenized)?
    } else {
        MeteorResult::NotAsked
    };
    let spice_jar = if want(Col::Spice) || want(Col::Spider) || want(Col::SpiderFl) {
        locate_jar(args.spice_jar.as_deref())
    } else {
        None
    };
    let (sbert, echecker) = fense_models(
        args.fense_model.as_deref(),
        want(Col::SbertSim) || want(Col::Fense),
        want(Col::Fer) || want(Col::Fense) || want(Col::SpiderFl),
    )?;
    let fense_cfg = FenseConfig::default();
    let mut reports = Vec::new();
    // Without --metrics the per-item CSV keeps its fixed columns (ItemRow); with it, the
    // columns asked for.
    let mut per_item: Vec<Option<ItemRow>> = Vec::new();
    let mut per_item_cells: Vec<Option<Vec<Cell>>> = Vec::new();
    if args.per_item.is_some() {
        if args.metrics.is_none() {
            per_item.resize_with(n_rows, || None);
        } else {
            per_item_cells.resize_with(n_rows, || None);
        }
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
        // FENSE and SPIDEr-FL on the tokenized text, as aac-metrics' evaluate(preprocess=True).
        let sim = sbert
            .as_ref()
            .map(|m| sbert_sim(m, hyp, refs))
            .transpose()?;
        let fer_scores = echecker
            .as_ref()
            .map(|e| fer::fer(e, hyp, fense_cfg.error_threshold))
            .transpose()?;
        let fense_items: Option<Vec<f64>> = match (&sim, &fer_scores) {
            (Some(s), Some(f)) if want(Col::Fense) => Some(
                s.items
                    .iter()
                    .zip(&f.items)
                    .map(|(&s, &f)| penalize(s, f, fense_cfg.penalty))
                    .collect(),
            ),
            _ => None,
        };
        let spider_fl_scores = match (&spice_scores, &fer_scores) {
            (Some(sp), Some(f)) if want(Col::SpiderFl) => Some(spider_fl(
                &items.cider_d,
                &sp.items,
                &f.items,
                fense_cfg.penalty,
            )?),
            _ => None,
        };
        let vocab = want(Col::Vocab).then(|| crate::metrics::vocab::vocab_size(hyp));
        if args.per_item.is_some() && args.metrics.is_some() {
            let meteor_items = match &meteor {
                MeteorResult::Scores(m) => Some(&m[g].items[..]),
                _ => None,
            };
            let group_items = GroupItems {
                items: &items,
                meteor: meteor_items,
                spice: spice_scores.as_ref().map(|s| &s.items[..]),
                sbert_sim: sim.as_ref(),
                fer: fer_scores.as_ref(),
                fense: fense_items.as_deref(),
                spider_fl: spider_fl_scores.as_ref(),
                vocab: vocab.as_ref().map(|v| &v.1[..]),
            };
            for (i, (file, row)) in rows.iter().enumerate() {
                let mut cells = vec![
                    Cell::Text(file.clone()),
                    Cell::Line(row.line),
                    Cell::Task(taskname.clone()),
                    Cell::Tier(tier),
                    Cell::Text(row.prediction.clone()),
                ];
                for c in &cols {
                    cells.extend(group_items.values(*c, i).into_iter().map(Cell::Num));
                }
                per_item_cells[order[g][i]] = Some(cells);
            }
        } else if args.per_item.is_some() {
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
            MeteorResult::NotAsked => {}
        }
        if spice.is_none() {
            if want(Col::Spice) {
                unavailable.insert("SPICE", SPICE_STATUS);
            }
            if want(Col::Spider) {
                unavailable.insert("SPIDEr", SPIDER_STATUS);
            }
            if want(Col::SpiderFl) {
                unavailable.insert("SPIDEr-FL", SPIDER_FL_STATUS);
            }
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
            sbert_sim: sim.as_ref().map(|s| s.corpus),
            fer: fer_scores.as_ref().map(|f| f.corpus),
            fluency_error_probs: fer_scores.as_ref().map(|f| {
                ERROR_NAMES
                    .iter()
                    .zip(f.corpus_probs)
                    .map(|(n, p)| (*n, p))
                    .collect()
            }),
            fense: fense_items.as_deref().map(crate::metrics::mean),
            spider_fl: spider_fl_scores.as_ref().map(|s| s.corpus),
            vocab: vocab.map(|v| v.0),
            unavailable,
        });
    }
    print_table(&reports, &cols);
    if let Some(p) = &args.per_item {
        if args.metrics.is_none() {
            write_per_item(p, &per_item)?;
        } else {
            write_per_item_cells(p, &cols, &per_item_cells)?;
        }
    }
    if let Some(p) = &args.json {
        let json = serde_json::json!({
            "tokenizer": "coco-caption PTBTokenizer (-lowerCase, punctuation removed), Rust reimplementation",
            "metric_versions": metric_versions(&cfg, &cols),
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
fn metric_versions(cfg: &MetricsConfig, cols: &[Col]) -> serde_json::Value {
    let mut v = serde_json::json!({
        "tokenizer": "PTBTokenizer as pycocoevalcap 1.2 runs it (Stanford CoreNLP 3.4.1, -preserveLines -lowerCase) + its punctuation filter; Rust reimplementation",
        "bleu": format!("pycocoevalcap 1.2 BleuScorer, BLEU-1..{}, option \"closest\" (closest reference length, ties to the shorter); corpus from summed counts, per item with the item's own brevity penalty", cfg.max_n),
        "rouge_l": format!("pycocoevalcap 1.2 Rouge, LCS F-measure beta {}, mean over items", cfg.rouge_beta),
        "cider_d": format!("pycocoevalcap 1.2 Cider (CIDEr-D: sigma {}, clipped, Gaussian length penalty, x{}), document frequencies from each group's references", cfg.cider_sigma, cfg.cider_scale),
        "meteor": "Meteor 1.5 as pycocoevalcap 1.2 runs it (-l en -norm, task rank), Rust reimplementation; corpus score from summed statistics (the jar's last line)",
        "spice": "SPICE 1.0 jar as pycocoevalcap 1.2 runs it (-subset), mean of the items' All F-scores",
        "spider": "(CIDEr-D + SPICE) / 2",
    });
    let fense = FenseConfig::default();
    let extra = [
        (Col::SbertSim, "sbert_sim", "aac-metrics 0.6 sbert_sim on the tokenized text: sentence-transformers/paraphrase-TinyBERT-L6-v2 (or --fense-model), mean pooling, unit-length embeddings; per item the mean cosine similarity with its references, mean over items".to_string()),
        (Col::Fer, "fer", format!("aac-metrics 0.6 fer on the tokenized text: fense's echecker_clotho_audiocaps_base (BERT + linear, sigmoid); a prediction has a fluency error when its error probability is over {}; share of predictions flagged", fense.error_threshold)),
        (Col::Fense, "fense", format!("aac-metrics 0.6 fense: per item SBERT-sim x (1 - {} x fluency error), mean over items", fense.penalty)),
        (Col::SpiderFl, "spider_fl", format!("aac-metrics 0.6 spider_fl: per item SPIDEr x (1 - {} x fluency error), mean over items", fense.penalty)),
        (Col::Vocab, "vocab", "aac-metrics 0.6 vocab (vocab.cands): distinct tokens of the group's tokenized predictions".to_string()),
    ];
    for (col, key, text) in extra {
        if cols.contains(&col) {
            v[key] = serde_json::Value::String(text);
        }
    }
    v
}

/// FENSE's models, those needed: the Sentence-BERT (`sbert`) and the fluency error detector
/// (`echecker`), from `--fense-model`, `$ADIFF_FENSE_MODEL` or the download caches.
fn fense_models(
    arg: Option<&Path>,
    sbert: bool,
    echecker: bool,
) -> anyhow::Result<(Option<SentenceBert>, Option<Echecker>)> {
    if !sbert && !echecker {
        return Ok((None, None));
    }
    let env = std::env::var_os(FENSE_MODEL_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let files = match arg.map(Path::to_path_buf).or(env) {
        Some(dir) => FenseFiles::from_dir(&dir)?,
        None => {
            let p = crate::hub::fense_cached()?;
            FenseFiles {
                sbert_dir: p.sbert_dir,
                echecker_ckpt: p.echecker_ckpt,
                echecker_bert_dir: p.echecker_bert_dir,
            }
        }
    };
    let s = sbert
        .then(|| SentenceBert::load(&files.sbert_dir))
        .transpose()?;
    let e = echecker
        .then(|| Echecker::load(&files.echecker_ckpt, &files.echecker_bert_dir))
        .transpose()?;
    Ok((s, e))
}

/// One field of a `--metrics` per-item row.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Cell {
    Text(String),
    Line(u64),
    Task(Option<String>),
    Tier(Option<Tier>),
    Num(Option<f64>),
}

/// The per-item scores of one group, those computed.
struct GroupItems<'a> {
    items: &'a ItemScores,
    meteor: Option<&'a [f64]>,
    spice: Option<&'a [f64]>,
    sbert_sim: Option<&'a SbertSimScores>,
    fer: Option<&'a FerScores>,
    fense: Option<&'a [f64]>,
    spider_fl: Option<&'a SpiderFlScores>,
    vocab: Option<&'a [f64]>,
}

impl GroupItems<'_> {
    /// Item `i`'s values of column `c` (as many as [`Col::csv_names`]).
    fn values(&self, c: Col, i: usize) -> Vec<Option<f64>> {
        let at = |v: Option<&[f64]>| v.map(|v| v[i]);
        match c {
            Col::Bleu(k) => vec![self.items.bleu.get(k).map(|b| b[i])],
            Col::Meteor => vec![at(self.meteor)],
            Col::RougeL => vec![Some(self.items.rouge_l[i])],
            Col::CiderD => vec![Some(self.items.cider_d[i])],
            Col::Spice => vec![at(self.spice)],
            Col::Spider => vec![at(self.spice).map(|s| (self.items.cider_d[i] + s) / 2.0)],
            Col::SbertSim => vec![self.sbert_sim.map(|s| s.items[i])],
            Col::Fer => vec![
                self.fer.map(|f| f.items[i]),
                self.fer.map(|f| f64::from(f.probs[i][ERROR_INDEX])),
            ],
            Col::Fense => vec![at(self.fense)],
            Col::SpiderFl => vec![self.spider_fl.map(|s| s.items[i])],
            Col::Vocab => vec![at(self.vocab)],
        }
    }
}

/// Writes the `--metrics` per-item CSV: file, line, taskname, tier, prediction, then the
/// columns asked for (empty when not computed), rows in input order.
fn write_per_item_cells(
    path: &Path,
    cols: &[Col],
    rows: &[Option<Vec<Cell>>],
) -> anyhow::Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    let mut w = csv::Writer::from_path(path).with_context(ctx)?;
    let mut header: Vec<String> = ["file", "line", "taskname", "tier", "prediction"]
        .map(String::from)
        .to_vec();
    header.extend(cols.iter().flat_map(|c| c.csv_names()));
    w.write_record(&header).with_context(ctx)?;
    for r in rows.iter().flatten() {
        w.serialize(r).with_context(ctx)?;
    }
    w.flush().with_context(ctx)?;
    Ok(())
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
    /// METEOR is not among `--metrics`.
    NotAsked,
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

/// One row per group, one column per metric (the paper's detailed tables by default: BLEU-1..4,
/// METEOR, ROUGE-L, CIDEr, SPICE, SPIDEr); metrics without a number show `-` and are explained
/// below the table.
fn print_table(reports: &[GroupReport], cols: &[Col]) {
    let width = |c: &Col| c.header().len().max(7);
    let mut head = format!("{:<12} {:>4} {:>6}", "Task", "Tier", "Items");
    for c in cols {
        head.push_str(&format!(" {:>w$}", c.header(), w = width(c)));
    }
    println!("{head}");
    for r in reports {
        let task = r.taskname.as_deref().map_or("all".into(), dataset_label);
        let tier = r.tier.map_or("all".into(), |t| t.number().to_string());
        let mut line = format!("{:<12} {:>4} {:>6}", task, tier, r.items);
        for c in cols {
            line.push_str(&format!(" {:>w$}", c.cell(r), w = width(c)));
        }
        println!("{line}");
    }
    let mut why: BTreeMap<&str, &str> = BTreeMap::new();
    for r in reports {
        why.extend(r.unavailable.iter().map(|(k, v)| (*k, *v)));
    }
    for (metric, reason) in why {
        println!("{metric}: {reason}.");
    }
    if cols.contains(&Col::CiderD) {
        println!("CIDEr-D is coco-caption's CIDEr (pycocoevalcap's `Cider`), x10 as there.");
    }
    if cols
        .iter()
        .any(|c| matches!(c, Col::SbertSim | Col::Fer | Col::Fense | Col::SpiderFl))
    {
        println!(
            "FENSE, SBERT-sim, FER and SPIDEr-FL are aac-metrics 0.6's, on the tokenized text; FER \
             is the share of predictions with a fluency error."
        );
    }
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

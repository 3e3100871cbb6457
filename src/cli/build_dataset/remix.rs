//! `adiff build-dataset synthetic-remix`: new explanation pairs of synthetic clips that are
//! already rendered (no audio is written).

use std::path::PathBuf;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::synthetic::{
    check_count_and_split, parse_attribute, parse_truth_lines, write_tier_csvs, TierRow, TRUTH_FILE,
};
use crate::data::remix::{remix_pairs, Differences};
use crate::data::synthetic::{pair_rng, split_seed, Attribute, TruthRecord};
use crate::text::prompts::{PromptDatabase, PromptKind};

/// Pair already-rendered synthetic clips anew: explanations of new pairs, no new audio.
///
/// Reads OUT_DIR/truth.jsonl (written by `adiff build-dataset synthetic`), takes the clips of
/// the --from splits as a pool and draws --count pairs from it with the law of `synthetic`: the
/// first clip uniformly, 1 to 3 attributes (uniformly many, uniformly which) that differ, and a
/// second clip drawn uniformly among the pool's clips that differ from the first in exactly
/// those. --differences and --differ-in narrow the law as they do for `synthetic`; --including
/// makes every pair differ in the attributes named and in others as the law draws (a lesson on
/// one attribute whose pairs still differ in 1-3 attributes).
///
/// Written to OUT_DIR: {split}_fewwords_answer.csv, {split}_sentence_answer.csv and
/// {split}_detail_answer.csv, in the format of `synthetic`'s (paths of the existing clips, prompts
/// drawn from the prompt database). truth.jsonl and the audio are not touched: the clips keep
/// their records, so `adiff eval --synthetic` scores remixed pairs too.
///
/// Why: stages 2 and 3 read a clip only through its cached HTSAT embedding (`build-dataset
/// embed-cache`), so fresh pairs of cached clips cost no audio, no encoding and no disk. A model
/// trained on a few thousand fixed pairs can learn their answers by heart; pairs drawn anew make
/// it read the audio. Remix only training clips: a validation or test clip in the pool leaks it.
///
/// The same pool, --seed and --split give identical files.
///
/// Example:
///   adiff build-dataset synthetic -o data/synth --count 2000 --seed 1 --split train
///   adiff build-dataset synthetic-remix -o data/synth --from train --count 20000 --seed 1 --split remix
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RemixArgs {
    /// Dataset folder of `build-dataset synthetic` (holds truth.jsonl); the CSVs go there too.
    #[arg(long, short = 'o', value_name = "OUT_DIR")]
    pub output: PathBuf,
    /// The splits whose clips are paired anew (comma-separated), e.g. `--from train,extra`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub from: Vec<String>,
    /// Number of pairs to write.
    #[arg(long, default_value_t = 10000)]
    pub count: usize,
    /// Random seed: the same pool, seed and split give identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Name of the new split, used in the CSV names; it must not be a split that has clips in
    /// truth.jsonl (its CSVs would be overwritten).
    #[arg(long, default_value = "remix")]
    pub split: String,
    /// Every pair differs in exactly this many attributes (1-3) instead of 1-3 drawn uniformly.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub differences: Option<u8>,
    /// Every pair differs in exactly these attributes and agrees in the others (comma-separated:
    /// loudness, pitch, kind, pattern, background).
    #[arg(long, value_delimiter = ',', value_parser = parse_attribute, conflicts_with = "differences")]
    pub differ_in: Vec<Attribute>,
    /// Every pair differs in these attributes (comma-separated) and in as many others, drawn
    /// uniformly, as make up the number of differences (1-3 drawn, or --differences); e.g.
    /// `--including kind` for a kind lesson that still teaches to name every difference.
    #[arg(long, value_delimiter = ',', value_parser = parse_attribute, conflicts_with = "differ_in")]
    pub including: Vec<Attribute>,
}

pub fn run(args: RemixArgs) -> anyhow::Result<()> {
    check_count_and_split(args.count, &args.split)?;
    let out = &args.output;
    let truth_path = out.join(TRUTH_FILE);
    let text = std::fs::read_to_string(&truth_path).with_context(|| {
        format!(
            "cannot read {} (build clips first with `adiff build-dataset synthetic -o {}`)",
            truth_path.display(),
            out.display()
        )
    })?;
    let records: Vec<TruthRecord> = parse_truth_lines(&truth_path, &text)?
        .into_iter()
        .map(|(_, rec)| rec)
        .collect();
    anyhow::ensure!(
        records.iter().all(|r| r.split != args.split),
        "--split '{}' has clips in {}: name the remixed split differently (its CSVs would replace \
         that split's)",
        args.split,
        truth_path.display()
    );
    for s in &args.from {
        anyhow::ensure!(
            records.iter().any(|r| &r.split == s),
            "--from '{s}': no clips of that split in {}",
            truth_path.display()
        );
    }
    let pool: Vec<&TruthRecord> = records
        .iter()
        .filter(|r| args.from.contains(&r.split))
        .collect();
    let labels: Vec<_> = pool.iter().map(|r| r.spec.attributes).collect();
    // A repeated attribute counts once ("--including pitch,pitch" is pitch).
    let mut including = args.including.clone();
    including.sort();
    including.dedup();
    let differences = match (args.differences, &args.differ_in[..], &including[..]) {
        (n, [], [_, ..]) => {
            let n = n.map(usize::from);
            anyhow::ensure!(
                n.is_none_or(|n| n >= including.len()),
                "--differences {} is fewer than the {} attributes of --including",
                n.unwrap_or(0),
                including.len()
            );
            Differences::Including(including.clone(), n)
        }
        (Some(n), _, _) => Differences::Count(usize::from(n)),
        (None, [_, ..], _) => Differences::Exactly(args.differ_in.clone()),
        (None, [], []) => Differences::Drawn,
    };
    let base = split_seed(args.seed, &args.split);
    let pairs = remix_pairs(
        &labels,
        args.count,
        &differences,
        &mut StdRng::seed_from_u64(base),
    )?;
    let db = PromptDatabase::bundled()?;
    let prompts: Vec<[String; 3]> = (0..pairs.len())
        .map(|i| {
            let mut rng = pair_rng(base, i);
            [1u8, 2, 3].map(|t| db.sample(PromptKind::Tier(t), &mut rng).to_string())
        })
        .collect();
    let rows: Vec<TierRow> = pairs
        .iter()
        .zip(&prompts)
        .map(|(p, prompts)| TierRow {
            paths: [&pool[p.first].path, &pool[p.second].path],
            first: &pool[p.first].spec.attributes,
            second: &pool[p.second].spec.attributes,
            prompts,
        })
        .collect();
    write_tier_csvs(out, &args.split, &rows)?;
    eprintln!(
        "wrote {} remixed pair(s) of split '{}' from {} clips of {} to {}",
        pairs.len(),
        args.split,
        pool.len(),
        args.from.join(", "),
        out.display()
    );
    Ok(())
}

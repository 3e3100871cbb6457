//! `adiff download`: official checkpoints from Zenodo, GPT-2 from the Hugging Face hub, FENSE's
//! models (hub + fense's GitHub release).

use clap::builder::{PossibleValue, PossibleValuesParser};

use crate::hub::{self, Checksum, DownloadOutcome};

/// Details for `adiff download --help` (the one-line summary is the `Command` variant's).
const LONG_HELP: &str = "\
Checkpoints go to $ADIFF_CACHE (else the platform cache directory + adiff/), through
<file>.partial: a broken transfer resumes where it stopped when the command is run again. The
file is checked against its checksum when one is known (built in, or --sha256 / --md5) and its
sha256 is always printed. `--checkpoint adiff-base` then means the cached file.
$ADIFF_DOWNLOAD_BASE_URL replaces https://zenodo.org (mirrors, tests).

GPT-2 files go to hf-hub's cache ($HF_HOME/hub, else ~/.cache/huggingface/hub); $HF_ENDPOINT
replaces https://huggingface.co.

`fense` (for `adiff eval --metrics fense/spider-fl/dcase2024`): the Sentence-BERT
sentence-transformers/paraphrase-TinyBERT-L6-v2 and the config and vocabulary of
prajjwal1/bert-medium go to hf-hub's cache; fense's fluency error detector
echecker_clotho_audiocaps_base.ckpt comes from the fense GitHub release aac-metrics uses
(https://github.com/blmoistawinde/fense/releases/download/V0.1/..., replaced by
$ADIFF_DOWNLOAD_BASE_URL too), is checked against aac-metrics' sha256 and goes to
$ADIFF_CACHE/fense/.

Not yet verified against the Zenodo record (record 14706090): the published checksums (none is
built in, so nothing is checked unless you pass --sha256 or --md5) and the file name of
adiff-wavcaps (adiff_base_wavcaps.ckpt).";

/// Arguments of `adiff download`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = LONG_HELP)]
pub struct DownloadArgs {
    /// What to fetch.
    #[arg(value_parser = name_parser())]
    pub name: String,
    /// Expected SHA-256 (64 hex digits) of the checkpoint, checked instead of the built-in one.
    #[arg(long, value_name = "HEX", conflicts_with = "md5")]
    pub sha256: Option<String>,
    /// Expected MD5 (32 hex digits) of the checkpoint, as the Zenodo record publishes it.
    #[arg(long, value_name = "HEX")]
    pub md5: Option<String>,
}

/// Every name `adiff download` accepts, with its description in `--help`.
fn name_parser() -> PossibleValuesParser {
    let checkpoints = hub::KNOWN_CHECKPOINTS
        .iter()
        .map(|k| PossibleValue::new(k.name).help(k.description));
    let gpt2 = hub::GPT2_REPOS.iter().map(|r| {
        PossibleValue::new(*r).help("GPT-2 model.safetensors + tokenizer.json (Hugging Face hub)")
    });
    let fense =
        std::iter::once(PossibleValue::new(FENSE).help(
            "FENSE's Sentence-BERT and fluency error detector (hub + fense's GitHub release)",
        ));
    PossibleValuesParser::new(checkpoints.chain(gpt2).chain(fense))
}

/// The name that fetches FENSE's models.
const FENSE: &str = "fense";

/// `adiff download fense`: the hub files, then the echecker (checksum-checked).
fn run_fense() -> anyhow::Result<()> {
    let done = hub::download_fense(true)?;
    match done.echecker.outcome {
        DownloadOutcome::AlreadyPresent { .. } => {
            println!("{} is already in the cache", hub::FENSE_ECHECKER_FILE)
        }
        DownloadOutcome::Downloaded { .. } => println!("downloaded {}", hub::fense_echecker_url()),
    }
    println!("checksum ok (sha256:{})", hub::FENSE_ECHECKER_SHA256);
    println!("{}", done.paths.sbert_dir.display());
    println!("{}", done.paths.echecker_bert_dir.display());
    println!("{}", done.paths.echecker_ckpt.display());
    Ok(())
}

pub fn run(args: DownloadArgs) -> anyhow::Result<()> {
    if args.name == FENSE {
        anyhow::ensure!(
            args.sha256.is_none() && args.md5.is_none(),
            "--sha256/--md5 apply to ADIFF checkpoints; the echecker of fense is checked against \
             aac-metrics' sha256"
        );
        return run_fense();
    }
    let Some(known) = hub::known_checkpoint(&args.name) else {
        anyhow::ensure!(
            args.sha256.is_none() && args.md5.is_none(),
            "--sha256/--md5 apply to ADIFF checkpoints, not to {} (hf-hub checks its own files)",
            args.name
        );
        let (weights, tokenizer) = hub::hub_gpt2_files(&args.name)?;
        println!("{}", weights.display());
        println!("{}", tokenizer.display());
        return Ok(());
    };

    let expected = match (&args.sha256, &args.md5, known.checksum) {
        (Some(hex), _, _) => Some(Checksum::sha256(hex)?),
        (_, Some(hex), _) => Some(Checksum::md5(hex)?),
        (_, _, Some(builtin)) => Some(Checksum::parse(builtin)?),
        _ => None,
    };
    let dest = known.cached_path(&hub::cache_dir()?);
    let url = known.url(&hub::download_base_url());
    let done = hub::download_file(&url, &dest, expected.as_ref(), true)?;
    let verified = match done.outcome {
        DownloadOutcome::AlreadyPresent { verified } => {
            println!("{} is already in the cache", known.name);
            verified
        }
        DownloadOutcome::Downloaded {
            resumed_from,
            range_ignored,
            replaced_bad,
            verified,
        } => {
            if replaced_bad {
                println!("the cached file did not match the checksum and was downloaded again");
            }
            if range_ignored {
                println!("the server ignored the resume request: downloaded from the start");
            } else if resumed_from > 0 {
                println!("resumed at byte {resumed_from}");
            }
            println!("downloaded {url}");
            verified
        }
    };
    match (&expected, verified) {
        (Some(c), true) => println!("checksum ok ({c})"),
        _ => println!(
            "not verified: no published checksum is known for {}",
            known.name
        ),
    }
    println!("sha256 {}  {}", done.sha256, done.path.display());
    Ok(())
}

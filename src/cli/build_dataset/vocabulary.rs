//! `adiff build-dataset vocabulary`: a model config whose GPT-2 keeps only the tokens of a
//! dataset (`text.vocabulary`, see `text/vocabulary.rs`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;

use crate::model::config::AdiffConfig;
use crate::text::prompts::{PromptDatabase, PromptKind};
use crate::text::tokenizer::Gpt2Tokenizer;
use crate::train::data::{read_examples, ANSWER_SUFFIX};

/// Give a model from scratch its own vocabulary: the GPT-2 tokens of a dataset's texts.
///
/// Tokenizes, with GPT-2's tokenizer, every answer, prompt and caption of the explanation CSVs,
/// every prompt of the prompt database (training draws prompts from it; `explain` uses the first
/// of each list) and the config's special tokens, and writes --config again with the GPT-2 ids
/// found as `text.vocabulary` (in GPT-2's order: model id i is the i-th), `gpt2.vocab_size` set
/// to their number and the special ids renumbered. Train with the written config from
/// `train-stage1 --init-missing` on: every stage copies it into its output folder.
///
/// Why: a small GPT-2 trained from scratch spends most of a training step on its head, the
/// 50257-row `wte` multiplied with every answer position three times (logits, the gradient to
/// the hidden state and to `wte`), and most of AdamW's work on the rows of tokens it never
/// sees. The demo's texts use 437 of them.
///
/// The model then reads and writes only these tokens: `explain --prompt` with a word outside
/// them is refused with an error that names the token. Not for pretrained GPT-2 weights, which
/// have a row for every token (loading them into such a config fails on `wte`'s shape).
///
/// Example:
///   adiff build-dataset vocabulary --config configs/demo.json -o work/config.json \
///     data/synth/train_fewwords_answer.csv data/synth/train_sentence_answer.csv
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct VocabularyArgs {
    /// Explanation CSVs (the columns of `build-dataset synthetic`'s or the ACD/CLD files).
    #[arg(required = true, value_name = "CSV")]
    pub csvs: Vec<PathBuf>,
    /// The model config to give a vocabulary (one without `text.vocabulary`).
    #[arg(long)]
    pub config: PathBuf,
    /// Prompt database whose prompts are kept too (default: the bundled one).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Where the new config goes.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Replace --output if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: VocabularyArgs) -> anyhow::Result<()> {
    let mut inputs: Vec<&std::path::Path> = args.csvs.iter().map(|p| p.as_path()).collect();
    inputs.push(&args.config);
    if let Some(p) = &args.prompts {
        inputs.push(p);
    }
    crate::cli::check_outputs(&inputs, &[("config", &args.output)], args.force)?;
    let mut cfg = AdiffConfig::from_file(&args.config)?;
    if cfg.text.vocabulary.is_some() {
        anyhow::bail!(
            "{}: already has a text.vocabulary; give the config it was made from",
            args.config.display()
        );
    }
    let prompts = match &args.prompts {
        Some(p) => PromptDatabase::from_file(p)?,
        None => PromptDatabase::bundled()?,
    };
    let examples = read_examples(&args.csvs)?;
    // GPT-2's own numbering: the config as given has no vocabulary.
    let tokenizer = Gpt2Tokenizer::bundled(&cfg.text)?;
    let mut kept: BTreeSet<u32> = cfg.text.special_ids().iter().map(|&(_, id)| id).collect();
    // Each text alone (captions, prompts for the caption-prefix decoder) and as training and
    // `explain` encode prompts and answers, followed by " <|endoftext|>".
    let mut add = |text: &str, origin: &str| -> anyhow::Result<()> {
        for t in [text.to_string(), format!("{text}{ANSWER_SUFFIX}")] {
            let ids = tokenizer
                .encode(&t)
                .with_context(|| format!("{origin}: cannot tokenize"))?;
            kept.extend(ids);
        }
        Ok(())
    };
    let mut n_prompts = 0;
    for kind in PromptKind::ALL {
        for p in prompts.prompts(kind) {
            add(p, "prompt database")?;
            n_prompts += 1;
        }
    }
    for ex in &examples {
        for text in [&ex.input, &ex.answer, &ex.caption1, &ex.caption2] {
            add(text, &ex.origin)?;
        }
    }
    let vocabulary: Vec<u32> = kept.into_iter().collect();
    let renumber = |id: u32| vocabulary.binary_search(&id).expect("kept above") as u32;
    let t = &mut cfg.text;
    t.separator_token_id = renumber(t.separator_token_id);
    t.pad_token_id = renumber(t.pad_token_id);
    t.stop_token_id = renumber(t.stop_token_id);
    t.eos_token_id = renumber(t.eos_token_id);
    cfg.gpt2.vocab_size = vocabulary.len();
    let n = vocabulary.len();
    cfg.text.vocabulary = Some(vocabulary);
    cfg.validate()?;
    let json = serde_json::to_string_pretty(&cfg)? + "\n";
    let tmp = args.output.with_extension("json.partial");
    std::fs::write(&tmp, json).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "{}: {n} GPT-2 tokens (of {}) from {} rows of {} CSV(s) and {n_prompts} prompts",
        args.output.display(),
        tokenizer.vocab_size(),
        examples.len(),
        args.csvs.len()
    );
    Ok(())
}

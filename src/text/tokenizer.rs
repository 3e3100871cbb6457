//! The GPT-2 BPE tokenizer with ADIFF's prompt encoding.
//!
//! ADIFF's wrapper loads the hub `gpt2` tokenizer and calls `add_special_tokens({'pad_token': '!'})`.
//! `!` is already id 0, so padding uses id 0, but `!` also becomes a *special added token*: every
//! `!` in a prompt is split out before BPE and becomes id 0 on its own (`"wow!!"` -> `[42773, 0, 0]`,
//! not `[42773, 3228]`). Prompts are `prompt + " <|endoftext|>"`, truncated and padded to 40 ids.
//!
//! A model with its own vocabulary (`text.vocabulary`, see [`crate::text::vocabulary`]) gets its
//! ids renumbered here: [`Gpt2Tokenizer::encode`] returns model ids and refuses a token the model
//! does not have, [`Gpt2Tokenizer::decode`] takes model ids.

use std::path::Path;

use tokenizers::{AddedToken, Tokenizer};

use crate::error::{AdiffError, Result};
use crate::text::config::TextConfig;
use crate::text::vocabulary::Vocabulary;

/// The shipped `data/gpt2/tokenizer.json` (see `data/README.md` for where it came from), compiled
/// in so the CLI needs no extra file.
const BUNDLED_TOKENIZER: &[u8] = include_bytes!("../../data/gpt2/tokenizer.json");

/// What the reference puts between the prompt and `<|endoftext|>` (`prompt + ' <|endoftext|>'`).
const PROMPT_EOS_SEPARATOR: &str = " ";

/// Hugging Face's `clean_up_tokenization` replacements, in its order: spaces before punctuation
/// and English contractions are removed.
const CLEAN_UP_REPLACEMENTS: [(&str, &str); 10] = [
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
];

/// GPT-2 tokenizer set up like ADIFF's (with `!` as a special pad token).
#[derive(Clone)]
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
    text: TextConfig,
    /// `" <|endoftext|>"`, appended to every prompt.
    prompt_suffix: String,
    /// Number of model ids.
    vocab_size: usize,
    /// The model's own vocabulary; `None`: model ids are GPT-2 ids.
    vocabulary: Option<Vocabulary>,
}

impl Gpt2Tokenizer {
    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>, text: &TextConfig) -> Result<Self> {
        let path = path.as_ref();
        let inner = Tokenizer::from_file(path)
            .map_err(|e| AdiffError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(inner, text)
    }

    /// The tokenizer shipped in `data/gpt2/tokenizer.json`.
    pub fn bundled(text: &TextConfig) -> Result<Self> {
        let inner = Tokenizer::from_bytes(BUNDLED_TOKENIZER)
            .map_err(|e| AdiffError::Tokenizer(format!("bundled tokenizer.json: {e}")))?;
        Self::new(inner, text)
    }

    fn new(mut inner: Tokenizer, text: &TextConfig) -> Result<Self> {
        let gpt2_size = inner.get_vocab_size(true);
        let vocabulary = text.vocabulary()?;
        if let Some(v) = &vocabulary {
            if let Some(&bad) = v.gpt2_ids().iter().find(|&&g| g as usize >= gpt2_size) {
                return Err(AdiffError::Tokenizer(format!(
                    "text.vocabulary lists GPT-2 id {bad}, but the tokenizer has {gpt2_size} ids"
                )));
            }
        }
        // The config's special ids are model ids; the tokenizer needs their GPT-2 ids.
        let gpt2_id = |id: u32| match &vocabulary {
            Some(v) => v.to_gpt2(id),
            None => Some(id),
        };
        let name = |id: u32, what: &str| {
            gpt2_id(id)
                .and_then(|g| inner.id_to_token(g))
                .ok_or_else(|| {
                    AdiffError::Tokenizer(format!("{what} id {id} is not in the vocabulary"))
                })
        };
        let pad = name(text.pad_token_id, "pad")?;
        let eos = name(text.eos_token_id, "eos")?;
        // The pad token string comes from the vocabulary ("!" for id 0), registered as special.
        inner.add_special_tokens(&[AddedToken::from(pad.clone(), true)]);
        if inner.token_to_id(&pad) != gpt2_id(text.pad_token_id) {
            return Err(AdiffError::Tokenizer(format!(
                "pad token {pad:?} did not keep id {}",
                text.pad_token_id
            )));
        }
        let vocab_size = match &vocabulary {
            Some(v) => v.len(),
            None => inner.get_vocab_size(true),
        };
        Ok(Self {
            inner,
            text: text.clone(),
            prompt_suffix: format!("{PROMPT_EOS_SEPARATOR}{eos}"),
            vocab_size,
            vocabulary,
        })
    }

    /// Number of model ids (GPT-2's, added tokens included, or the model's own vocabulary's).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Checks that this vocabulary fits a GPT-2 with `model_vocab` token embeddings.
    pub fn check_fits(&self, model_vocab: usize) -> Result<()> {
        if self.vocab_size != model_vocab {
            return Err(AdiffError::Tokenizer(format!(
                "the tokenizer has {} tokens but the model's GPT-2 has {model_vocab}; they do not belong together",
                self.vocab_size
            )));
        }
        Ok(())
    }

    /// Plain encoding (no padding or truncation), `!` split out as the pad id; model ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| AdiffError::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        let ids = enc.get_ids();
        let Some(v) = &self.vocabulary else {
            return Ok(ids.to_vec());
        };
        ids.iter()
            .map(|&g| {
                v.to_model(g).ok_or_else(|| {
                    let token = self.inner.decode(&[g], false).unwrap_or_default();
                    AdiffError::Tokenizer(format!(
                        "the model's vocabulary ({} tokens) has no token {token:?} (GPT-2 id {g}), \
                         needed for {text:?}",
                        v.len()
                    ))
                })
            })
            .collect()
    }

    /// ADIFF's prompt ids: `prompt + " <|endoftext|>"`, cut to the first `prompt_length` ids
    /// (so a long prompt loses its end marker, as in the reference), then padded with the pad id.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(&format!("{prompt}{}", self.prompt_suffix))?;
        ids.truncate(self.text.prompt_length);
        ids.resize(self.text.prompt_length, self.text.pad_token_id);
        Ok(ids)
    }

    /// Model ids back to text exactly (`skip_special_tokens=False`, no clean-up).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(AdiffError::Tokenizer(format!(
                "cannot decode id {bad}: the vocabulary has {} ids",
                self.vocab_size
            )));
        }
        let mapped: Vec<u32>;
        let ids = match &self.vocabulary {
            // In range (checked above), so every id maps.
            Some(v) => {
                mapped = ids.iter().filter_map(|&i| v.to_gpt2(i)).collect();
                &mapped[..]
            }
            None => ids,
        };
        self.inner
            .decode(ids, false)
            .map_err(|e| AdiffError::Tokenizer(format!("cannot decode: {e}")))
    }

    /// Ids back to text the way ADIFF's wrapper printed them: `tokenizer.decode(ids)` under
    /// transformers 4.28, whose default `clean_up_tokenization_spaces=True` removes the space
    /// before punctuation and contractions.
    pub fn decode_clean(&self, ids: &[u32]) -> Result<String> {
        Ok(clean_up_tokenization(&self.decode(ids)?))
    }
}

/// Hugging Face's `PreTrainedTokenizerBase.clean_up_tokenization`.
pub fn clean_up_tokenization(text: &str) -> String {
    CLEAN_UP_REPLACEMENTS
        .iter()
        .fold(text.to_string(), |s, (from, to)| s.replace(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's text settings (the `text` section of `configs/base.json`).
    fn tok() -> Gpt2Tokenizer {
        let base: serde_json::Value =
            serde_json::from_str(include_str!("../../configs/base.json")).unwrap();
        let text: TextConfig = serde_json::from_value(base["text"].clone()).unwrap();
        Gpt2Tokenizer::bundled(&text).unwrap()
    }

    #[test]
    fn reference_prompt_ids() {
        // Ids from data/gpt2 README (checked there against transformers' GPT2TokenizerFast).
        let ids = tok()
            .encode_prompt("Explain the difference between the two audios in detail.")
            .unwrap();
        let mut want = vec![
            18438, 391, 262, 3580, 1022, 262, 734, 2709, 4267, 287, 3703, 13, 220, 50256,
        ];
        want.resize(40, 0);
        assert_eq!(ids, want);
    }

    #[test]
    fn bang_is_its_own_pad_token() {
        assert_eq!(tok().encode("wow!!").unwrap(), vec![42773, 0, 0]);
    }

    #[test]
    fn empty_and_overlong_prompts() {
        let t = tok();
        let e = t.encode_prompt("").unwrap();
        assert_eq!(&e[..2], &[220, 50256]);
        assert_eq!(e.len(), 40);
        let long = "word ".repeat(100);
        let l = t.encode_prompt(&long).unwrap();
        assert_eq!(l.len(), 40);
        assert!(!l.contains(&50256));
    }

    #[test]
    fn decode_rejects_unknown_ids() {
        let e = tok().decode(&[1, 999_999]).unwrap_err().to_string();
        assert!(e.contains("999999"), "{e}");
    }

    /// The base text settings with a vocabulary of the reference prompt's tokens: model ids
    /// 0-2 are `<|endoftext|>`, `!` and a bare space, the prompt's words follow.
    fn tok_with_vocabulary() -> (Gpt2Tokenizer, Vec<u32>) {
        let base: serde_json::Value =
            serde_json::from_str(include_str!("../../configs/base.json")).unwrap();
        let mut text: TextConfig = serde_json::from_value(base["text"].clone()).unwrap();
        let words = [18438, 391, 262, 3580, 1022, 734, 2709, 4267, 287, 3703, 13];
        let mut vocabulary = vec![50256, 0, 220];
        vocabulary.extend(words);
        text.vocabulary = Some(vocabulary.clone());
        (text.separator_token_id, text.eos_token_id) = (0, 0);
        (text.pad_token_id, text.stop_token_id) = (1, 2);
        (Gpt2Tokenizer::bundled(&text).unwrap(), vocabulary)
    }

    #[test]
    fn a_vocabulary_renumbers_prompts_and_decodes_back() {
        let (t, vocabulary) = tok_with_vocabulary();
        assert_eq!(t.vocab_size(), 14);
        let prompt = "Explain the difference between the two audios in detail.";
        let ids = t.encode_prompt(prompt).unwrap();
        // The GPT-2 ids of `reference_prompt_ids`, each replaced by its position in the list.
        let gpt2 = [
            18438, 391, 262, 3580, 1022, 262, 734, 2709, 4267, 287, 3703, 13, 220, 50256,
        ];
        let mut want: Vec<u32> = gpt2
            .iter()
            .map(|g| vocabulary.iter().position(|v| v == g).unwrap() as u32)
            .collect();
        want.resize(40, 1);
        assert_eq!(ids, want);
        assert_eq!(t.decode(&ids[..12]).unwrap(), prompt);
        let e = t.decode(&[14]).unwrap_err().to_string();
        assert!(
            e.contains("cannot decode id 14: the vocabulary has 14 ids"),
            "{e}"
        );
    }

    #[test]
    fn a_vocabulary_refuses_a_token_it_lacks() {
        let (t, _) = tok_with_vocabulary();
        let e = t.encode("Explain the two dogs").unwrap_err().to_string();
        assert!(
            e.contains("the model's vocabulary (14 tokens) has no token \" dogs\" (GPT-2 id 6844)"),
            "{e}"
        );
    }
}

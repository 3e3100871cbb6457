//! Text side: the GPT-2 tokenizer with ADIFF's prompt encoding, and a model's own vocabulary.

pub mod config;
pub mod prompts;
pub mod tokenizer;
pub mod vocabulary;

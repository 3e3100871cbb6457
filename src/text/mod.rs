//! Text side: the GPT-2 tokenizer with ADIFF's prompt encoding.

pub mod config;
pub mod prompts;
pub mod tokenizer;

//! Offline, deterministic "explanations" built from the two captions by fixed templates. They
//! are not real difference explanations (nothing compares the recordings' content): they exist
//! so that the pipeline can be tested and dry-run without an LLM, and their length grows with the
//! tier like the real ones.

use super::{ExplainError, Explainer};

/// The template explainer (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateExplainer;

impl Explainer for TemplateExplainer {
    fn explain(&self, caption1: &str, caption2: &str, tier: u8) -> Result<String, ExplainError> {
        let (a, b) = (clause(caption1), clause(caption2));
        match tier {
            1 => Ok(format!("Audio 1: {a}; audio 2: {b}.")),
            2 => Ok(format!(
                "Audio 1 contains {a}, whereas audio 2 contains {b}, so the two recordings \
                 differ in their sound events, sources and scene."
            )),
            3 => Ok(format!(
                "The first audio contains {a}. The second audio contains {b}. The two recordings \
                 therefore differ in their sound events and sources, in the acoustic scene they \
                 suggest and in how the sounds unfold over time. These differences are taken from \
                 the captions alone; signal characteristics and the listener's response are not \
                 analysed."
            )),
            t => Err(ExplainError::Failed(format!(
                "explanation tier {t} does not exist (expected 1 to 3)"
            ))),
        }
    }
}

/// A caption as a clause inside a sentence: trimmed, without its final full stop, first letter in
/// lower case unless the first word looks like an acronym or a name with more capitals.
fn clause(caption: &str) -> String {
    let c = caption.trim().trim_end_matches('.').trim_end();
    let first_word = c.split_whitespace().next().unwrap_or("");
    let keep_case =
        first_word.chars().filter(|ch| ch.is_uppercase()).count() > 1 || first_word == "I";
    let mut chars = c.chars();
    match chars.next() {
        Some(f) if !keep_case => f.to_lowercase().chain(chars).collect(),
        _ => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_grow_and_use_both_captions() {
        let t = TemplateExplainer;
        let texts: Vec<String> = (1..=3)
            .map(|tier| t.explain("A dog barks.", "TV noise plays", tier).unwrap())
            .collect();
        assert_eq!(texts[0], "Audio 1: a dog barks; audio 2: TV noise plays.");
        assert!(texts
            .iter()
            .all(|s| s.contains("a dog barks") && s.contains("TV noise")));
        assert!(texts[0].len() < texts[1].len() && texts[1].len() < texts[2].len());
        assert!(t.explain("a", "b", 4).is_err());
    }
}

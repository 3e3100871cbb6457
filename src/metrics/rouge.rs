//! ROUGE-L as coco-caption's `rouge.py` computes it: per item, the best precision and the best
//! recall of the longest common subsequence over the references, combined into an F-measure;
//! the corpus score is the mean over items.

/// Mean ROUGE-L. Sentences are split on single spaces as in Python's `split(" ")`, so an empty
/// sentence is one empty token (an empty prediction against an empty reference scores 1).
pub fn rouge_l(hyp: &[String], refs: &[Vec<String>], beta: f64) -> f64 {
    rouge_l_with_items(hyp, refs, beta).0
}

/// Mean ROUGE-L and each item's (pycocoevalcap's per-item array).
pub fn rouge_l_with_items(hyp: &[String], refs: &[Vec<String>], beta: f64) -> (f64, Vec<f64>) {
    let items: Vec<f64> = hyp
        .iter()
        .zip(refs)
        .map(|(h, rs)| rouge_l_item(h, rs, beta))
        .collect();
    let total: f64 = items.iter().sum();
    (total / hyp.len() as f64, items)
}

/// ROUGE-L of one candidate against its references.
pub fn rouge_l_item(hyp: &str, refs: &[String], beta: f64) -> f64 {
    let c: Vec<&str> = hyp.split(' ').collect();
    let (mut prec_max, mut rec_max) = (0.0f64, 0.0f64);
    for r in refs {
        let r: Vec<&str> = r.split(' ').collect();
        let lcs = lcs_len(&r, &c) as f64;
        prec_max = prec_max.max(lcs / c.len() as f64);
        rec_max = rec_max.max(lcs / r.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        let b2 = beta * beta;
        ((1.0 + b2) * prec_max * rec_max) / (rec_max + b2 * prec_max)
    } else {
        0.0
    }
}

/// Length of the longest common subsequence (one DP row, O(len(a) * len(b)) time).
fn lcs_len(a: &[&str], b: &[&str]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

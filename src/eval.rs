//! Detection quality figures from scores and labels: ROC AUC, precision and recall at a
//! threshold, recall at a false-positive rate. Used by `gatewatch backtest`.

/// ROC AUC of `scores` for telling `positive` rows from the others: the probability that a
/// random positive scores above a random negative, ties counting one half (the
/// Mann–Whitney U statistic). `None` when either class is empty.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' ranks, with tied groups sharing their mean rank.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if positive[k] {
                rank_sum += mean_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum - (n_pos as f64) * (n_pos as f64 + 1.0) / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Precision and recall when rows scoring at least `threshold` are flagged.
pub fn precision_recall_at(scores: &[f32], positive: &[bool], threshold: f32) -> (f64, f64) {
    let (mut tp, mut fp, mut pos) = (0u64, 0u64, 0u64);
    for (s, p) in scores.iter().zip(positive) {
        if *p {
            pos += 1;
        }
        if *s >= threshold {
            if *p {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    let precision = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = if pos == 0 {
        0.0
    } else {
        tp as f64 / pos as f64
    };
    (precision, recall)
}

/// Recall at the lowest threshold whose false-positive rate (share of negatives scoring
/// at or above it) does not exceed `max_fpr`. Returns `(recall, threshold)`; a threshold
/// above every score (nothing flagged) when even the top score breaks the budget.
pub fn recall_at_fpr(scores: &[f32], positive: &[bool], max_fpr: f64) -> Option<(f64, f32)> {
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let budget = (max_fpr * n_neg as f64).floor() as u64;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut best = (0.0, f32::INFINITY);
    let mut i = 0;
    while i < idx.len() {
        // Take a whole group of tied scores or none of it.
        let s = scores[idx[i]];
        let mut j = i;
        let (mut gtp, mut gfp) = (0u64, 0u64);
        while j < idx.len() && scores[idx[j]] == s {
            if positive[idx[j]] {
                gtp += 1;
            } else {
                gfp += 1;
            }
            j += 1;
        }
        if fp + gfp > budget {
            break;
        }
        tp += gtp;
        fp += gfp;
        best = (tp as f64 / n_pos as f64, s);
        i = j;
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_cases() {
        let pos = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &pos), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &pos), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &pos), Some(0.5));
        // One of four pairs misordered.
        assert_eq!(roc_auc(&[0.1, 0.6, 0.5, 0.9], &pos), Some(0.75));
        assert_eq!(roc_auc(&[0.1], &[true]), None);
    }

    #[test]
    fn precision_recall() {
        let pos = [false, false, true, true];
        assert_eq!(
            precision_recall_at(&[0.1, 0.7, 0.8, 0.2], &pos, 0.5),
            (0.5, 0.5)
        );
    }

    #[test]
    fn recall_at_fpr_respects_the_budget_and_ties() {
        // 100 negatives at 0..99, 10 positives at 95..104.
        let mut s: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let mut p = vec![false; 100];
        for i in 95..105 {
            s.push(i as f32);
            p.push(true);
        }
        // 1 % of 100 negatives: one negative may score at or above the threshold (99).
        let (r, t) = recall_at_fpr(&s, &p, 0.01).unwrap();
        assert_eq!(t, 99.0);
        assert!((r - 0.6).abs() < 1e-9, "{r}");
        // A tie between a negative and positives is taken whole or not at all.
        let s2 = [1.0, 1.0, 1.0, 0.0];
        let p2 = [true, true, false, false];
        let (r, _) = recall_at_fpr(&s2, &p2, 0.0).unwrap();
        assert_eq!(r, 0.0);
        let (r, _) = recall_at_fpr(&s2, &p2, 0.5).unwrap();
        assert_eq!(r, 1.0);
    }
}

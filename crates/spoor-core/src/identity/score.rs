//! Pairwise precision/recall of a clustering against labelled truth — how identity
//! resolution quality is measured on labelled data.
//!
//! A pair of records is "predicted together" when both land in one predicted cluster and
//! "truly together" when both share a truth cluster. Counting pairs directly is O(n²); the
//! same numbers follow from cluster sizes: with `n_ij` records in truth cluster i and predicted
//! cluster j, true positives = Σ C(n_ij, 2), predicted pairs = Σ C(b_j, 2), true pairs =
//! Σ C(a_i, 2). That is one pass with hash maps, O(n).

use std::collections::HashMap;
use std::hash::Hash;

fn pairs(n: u64) -> u128 {
    u128::from(n) * u128::from(n.saturating_sub(1)) / 2
}

/// `(precision, recall, f1)` over the records present in both inputs (a key appearing twice
/// in one input counts once, first occurrence wins). With no predicted pairs precision is 1;
/// with no true pairs recall is 1 — nothing was claimed, or nothing could be found.
pub fn pairwise_scores<K, T, P>(truth: &[(K, T)], predicted: &[(K, P)]) -> (f64, f64, f64)
where
    K: Eq + Hash,
    T: Eq + Hash,
    P: Eq + Hash,
{
    let mut truth_of: HashMap<&K, &T> = HashMap::with_capacity(truth.len());
    for (k, t) in truth {
        truth_of.entry(k).or_insert(t);
    }
    let mut seen: HashMap<&K, ()> = HashMap::with_capacity(predicted.len());
    let mut cells: HashMap<(&T, &P), u64> = HashMap::new();
    let mut truth_sizes: HashMap<&T, u64> = HashMap::new();
    let mut pred_sizes: HashMap<&P, u64> = HashMap::new();
    for (k, p) in predicted {
        let Some(t) = truth_of.get(k) else { continue };
        if seen.insert(k, ()).is_some() {
            continue;
        }
        *cells.entry((*t, p)).or_default() += 1;
        *truth_sizes.entry(*t).or_default() += 1;
        *pred_sizes.entry(p).or_default() += 1;
    }
    let tp: u128 = cells.values().map(|&n| pairs(n)).sum();
    let pred: u128 = pred_sizes.values().map(|&n| pairs(n)).sum();
    let real: u128 = truth_sizes.values().map(|&n| pairs(n)).sum();
    let ratio = |num: u128, den: u128| {
        if den == 0 {
            1.0
        } else {
            num as f64 / den as f64
        }
    };
    let precision = ratio(tp, pred);
    let recall = ratio(tp, real);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(truth: &[(u32, u8)], pred: &[(u32, u8)]) -> (f64, f64, f64) {
        let t: HashMap<u32, u8> = truth.iter().rev().copied().collect();
        let mut p: Vec<(u32, u8)> = Vec::new();
        for (k, c) in pred {
            if t.contains_key(k) && !p.iter().any(|(pk, _)| pk == k) {
                p.push((*k, *c));
            }
        }
        let (mut tp, mut pp, mut rp) = (0u64, 0u64, 0u64);
        for i in 0..p.len() {
            for j in i + 1..p.len() {
                let same_p = p[i].1 == p[j].1;
                let same_t = t[&p[i].0] == t[&p[j].0];
                tp += u64::from(same_p && same_t);
                pp += u64::from(same_p);
                rp += u64::from(same_t);
            }
        }
        let r = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let (pr, re) = (r(tp, pp), r(tp, rp));
        let f = if pr + re == 0.0 {
            0.0
        } else {
            2.0 * pr * re / (pr + re)
        };
        (pr, re, f)
    }

    #[test]
    fn perfect_and_known_cases() {
        let truth = [(1, 'a'), (2, 'a'), (3, 'b'), (4, 'b')];
        assert_eq!(pairwise_scores(&truth, &truth), (1.0, 1.0, 1.0));
        // Everything in one cluster: 2 true pairs out of 6 predicted.
        let all = [(1, 0), (2, 0), (3, 0), (4, 0)];
        let (p, r, _) = pairwise_scores(&truth, &all);
        assert!((p - 2.0 / 6.0).abs() < 1e-12 && r == 1.0);
        // All singletons: nothing claimed, nothing found.
        let single = [(1, 1), (2, 2), (3, 3), (4, 4)];
        assert_eq!(pairwise_scores(&truth, &single), (1.0, 0.0, 0.0));
    }

    proptest! {
        #[test]
        fn matches_the_quadratic_definition(
            truth in prop::collection::vec((0u32..40, 0u8..6), 0..40),
            pred in prop::collection::vec((0u32..40, 0u8..6), 0..40),
        ) {
            // Both implementations keep the first occurrence of a key.
            let mut t: Vec<(u32, u8)> = Vec::new();
            for (k, c) in &truth {
                if !t.iter().any(|(tk, _)| tk == k) { t.push((*k, *c)); }
            }
            let fast = pairwise_scores(&t, &pred);
            let slow = brute(&t, &pred);
            prop_assert!((fast.0 - slow.0).abs() < 1e-12);
            prop_assert!((fast.1 - slow.1).abs() < 1e-12);
            prop_assert!((fast.2 - slow.2).abs() < 1e-12);
        }
    }
}

//! The glob engine: the same answers as a reference matcher, linear work on the patterns
//! that make backtracking matchers quadratic, and a per-evaluation cost budget that stops
//! the patterns that are inherently expensive.

use std::collections::BTreeMap;

use flagstate_core::query::{ImageContext, QueryLimits};
use flagstate_core::{IndexQuery, Pattern, Platform, QueryError};
use proptest::prelude::*;

/// Size of the label values of the pathological case (60 KB).
const LABEL_BYTES: usize = 60 * 1024;
/// Size of the pathological globs: about 8 KB, as long as the query length limit allows.
const PATTERN_BYTES: usize = 8000;

/// Limits roomy enough to let an 8 KB glob through parsing, so that its matching cost
/// can be observed; the budget stays the default unless a test sets it.
fn roomy() -> QueryLimits {
    QueryLimits {
        max_pattern_bytes: 16 * 1024,
        max_pattern_wildcards: 16 * 1024,
        ..QueryLimits::default()
    }
}

/// Evaluates `raw` metered by `budget` against `images` images whose label `k` is
/// `value`; returns how many matched and the budget afterwards.
fn run(
    raw: &str,
    limits: &QueryLimits,
    value: &str,
    images: usize,
) -> (usize, flagstate_core::query::CostBudget) {
    let (query, budget) = IndexQuery::parse_with(raw, limits)
        .unwrap_or_else(|e| panic!("{raw:.80}: {e}"))
        .metered(limits.max_match_cost);
    let labels = BTreeMap::from([("k".to_owned(), value.to_owned())]);
    let annotations = BTreeMap::new();
    let platform = Platform::new("linux", "amd64");
    let tags = vec![value.to_owned()];
    let ctx = ImageContext {
        repository: "r",
        tags: &tags,
        platform: &platform,
        labels: &labels,
        annotations: &annotations,
    };
    let matched = (0..images).filter(|_| query.matches(&ctx)).count();
    (matched, budget)
}

#[test]
fn pathological_globs_cost_linear_work() {
    let label = "a".repeat(LABEL_BYTES);
    // `*aaa…ab`: quadratic for a backtracking matcher (pattern × value per image).
    let suffix = format!("label:k:matches=*{}b", "a".repeat(PATTERN_BYTES - 2));
    // `*a*a*…*b`: thousands of segments, each found at once.
    let stars = format!("label:k:matches={}b", "*a".repeat(PATTERN_BYTES / 2 - 1));
    // The same as an infix search and on tags.
    let infix = format!("tag:matches=*{}b*", "a".repeat(PATTERN_BYTES - 3));
    for raw in [suffix, stars, infix] {
        let (matched, budget) = run(&raw, &roomy(), &label, 5);
        assert_eq!(matched, 0, "{raw:.40}");
        budget.check().unwrap();
        // Linear: a few passes over value and pattern per image, not their product.
        let linear = 5 * 4 * (LABEL_BYTES + PATTERN_BYTES) as u64;
        assert!(
            budget.spent() < linear,
            "{raw:.40}: spent {} of at most {linear}",
            budget.spent()
        );
    }
}

#[test]
fn expensive_globs_exhaust_the_budget_and_name_the_parameter() {
    // A segment mixing literals and `?` is re-checked at each occurrence of its first
    // literal: about pattern × value work, which the budget stops.
    let label = "a".repeat(LABEL_BYTES);
    let raw = format!("label:k:matches=*{}b*", "a?".repeat(120));
    let limits = QueryLimits {
        max_match_cost: 4 * 1024 * 1024,
        ..QueryLimits::default()
    };
    let (matched, budget) = run(&raw, &limits, &label, 5);
    assert_eq!(matched, 0);
    assert_eq!(
        budget.check(),
        Err(QueryError::TooExpensive {
            parameter: "label:k:matches".into(),
            limit: limits.max_match_cost,
        })
    );
    assert!(budget.is_exhausted());
    // It stops within one comparison step of the limit, not after the whole evaluation.
    assert!(
        budget.spent() <= limits.max_match_cost + LABEL_BYTES as u64,
        "spent {}",
        budget.spent()
    );
    let e = budget.check().unwrap_err().to_string();
    assert!(e.contains("\"label:k:matches\""), "{e}");

    // With a budget large enough, the same query gives the correct answer.
    let generous = QueryLimits {
        max_match_cost: 1 << 40,
        ..limits
    };
    let short = "a".repeat(4 * 1024);
    let (matched, budget) = run(&raw, &generous, &short, 1);
    assert_eq!(matched, 0);
    budget.check().unwrap();
    assert!(
        budget.spent() > 100 * short.len() as u64,
        "{}",
        budget.spent()
    );
    let matching = format!("{short}b");
    let (matched, budget) = run(&raw, &generous, &matching, 1);
    assert_eq!(matched, 1);
    budget.check().unwrap();
}

#[test]
fn budget_is_shared_by_clones_and_per_evaluation() {
    let limits = QueryLimits {
        max_match_cost: 10_000,
        ..QueryLimits::default()
    };
    let value = "x".repeat(1000);
    // Each comparison scans the value for `y`: about 1000 units.
    let (matched, budget) = run("label:k:matches=*y*", &limits, &value, 5);
    assert_eq!(matched, 0);
    budget.check().unwrap();
    assert!((5000..6000).contains(&budget.spent()), "{}", budget.spent());
    let (_, budget) = run("label:k:matches=*y*", &limits, &value, 20);
    assert!(matches!(
        budget.check(),
        Err(QueryError::TooExpensive { .. })
    ));
    // Clones spend the same budget; an unmetered query has none.
    let (query, budget) = IndexQuery::parse("tag:matches=a*").unwrap().metered(7);
    assert_eq!(query.clone().budget().map(|b| b.spent()), Some(0));
    assert!(
        IndexQuery::parse("tag:matches=a*")
            .unwrap()
            .budget()
            .is_none()
    );
    assert_eq!(budget.spent(), 0);
    // The budget is not part of what the query asks.
    assert_eq!(query, IndexQuery::parse("tag:matches=a*").unwrap());
}

#[test]
fn unmetered_matching_has_no_budget() {
    let label = "a".repeat(LABEL_BYTES);
    let raw = format!("*{}b*", "a?".repeat(20));
    assert!(!Pattern::new(&raw).matches(&label));
    assert!(Pattern::new(&raw).matches(&format!("{label}b")));
}

#[path = "support/glob.rs"]
mod reference;
use reference::glob;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn matches_the_reference_glob(
        pattern in "[ab*?é]{0,10}",
        text in "[abé]{0,12}",
    ) {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(Pattern::new(&pattern).matches(&text), glob(&p, &t));
    }

    #[test]
    fn matches_wildmatch_on_longer_input(
        pattern in "[abc*?ü]{0,24}",
        text in "[abcü]{0,64}",
    ) {
        prop_assert_eq!(
            Pattern::new(&pattern).matches(&text),
            wildmatch::WildMatch::new(&pattern).matches(&text),
            "{:?} on {:?}", pattern, text
        );
    }
}

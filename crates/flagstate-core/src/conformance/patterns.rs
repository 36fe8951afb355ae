//! Glob matching (`tag:matches`, `label:K:matches`, `annotation:K:matches`) where SQL
//! backends are easily tempted into mistakes: `LIKE`'s `_` and `%`, `GLOB`'s `[…]`,
//! escapes, case folding, and `?` on multi-byte characters. Only `*` and `?` are
//! wildcards; everything else matches itself, case-sensitively.

use super::fixtures::{image, load, repo};
use super::queries::expect_images;
use crate::model::Image;
use crate::store::Store;

const VALUES: &[&str] = &[
    "a_b", "axb", "a%b", "a%%b", "a[b]c", "abc", "a\\b", "A_B", "ü", "ab", "a*b", "a?b",
];

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The images whose value matches `pattern`, by the glob's own meaning.
fn expected<'a>(images: &'a [Image], pattern: &str) -> Vec<(&'static str, &'a Image)> {
    let pattern = crate::query::Pattern::new(pattern);
    VALUES
        .iter()
        .zip(images)
        .filter(|(value, _)| pattern.matches(value))
        .map(|(_, image)| ("app", image))
        .collect()
}

/// SQL wildcard and escape characters in patterns and values are literal; matching is
/// case-sensitive and `?` is one character, for tags, labels and annotations alike.
pub async fn glob_metacharacters_are_literal(store: &dyn Store) {
    let images: Vec<Image> = VALUES
        .iter()
        .map(|v| {
            image(&format!("glob {v}"))
                .label("k", v)
                .annotation("k", v)
                .build()
        })
        .collect();
    // Tags cannot hold these characters; give each image a tag that keeps `_`.
    let tags: Vec<String> = (0..VALUES.len()).map(|i| format!("t_{i}")).collect();
    let mut snapshot = repo("app");
    for (tag, img) in tags.iter().zip(&images) {
        snapshot = snapshot.image(tag, img);
    }
    load(store, &[snapshot.build()]).await;
    let patterns = [
        "a_b", "a%b", "a%", "a[b]c", "a[bx]b", "a\\b", "a\\*", "A*", "a*", "?", "??", "a?b", "*b",
        "a*b", "*%*", "*_*", "*[*", "a\\_b",
    ];
    for pattern in patterns {
        let want = expected(&images, pattern);
        for prefix in ["label:k", "annotation:k"] {
            let raw = format!("{prefix}:matches={}", encode(pattern));
            expect_images(store, &raw, &want).await;
        }
    }
    // On tags: `_` is literal there too.
    expect_images(store, "tag:matches=t_1", &[("app", &images[1])]).await;
    expect_images(store, "tag:matches=t%5F1", &[("app", &images[1])]).await;
    expect_images(store, "tag:matches=T_1", &[]).await;
    expect_images(store, "tag:matches=t?1", &[("app", &images[1])]).await;
    let ten_and_up: Vec<_> = (10..VALUES.len()).map(|i| ("app", &images[i])).collect();
    expect_images(store, "tag:matches=t_1?", &ten_and_up).await;
}

//! Translates an [`IndexQuery`] into SQL that narrows the candidates: the tags whose
//! (repository, manifest) pair can possibly match, and for a list the children that can.
//! The final answer is always built by [`IndexQuery::evaluate_repository`] over those
//! candidates, so this translation only has to be a superset that indexes can serve; it
//! never decides the exact semantics.
//!
//! A label or annotation filter needs its key present, tested on the `label_keys` /
//! `annotation_keys` arrays (GIN-indexed): the planner has element statistics for them
//! (for jsonb `labels ? K` it can only guess), and no candidate's labels are read just to
//! learn that a key is present.
//!
//! Every value from the query is a bound parameter; the SQL text is assembled only from the
//! fixed fragments in this module.

use flagstate_core::IndexQuery;
use flagstate_core::query::{Filter, Pattern, ValueTest};
use sqlx::{Postgres, QueryBuilder};

/// Column names a content predicate tests: a directly tagged image, or a child of a list
/// (matched with its effective platform).
struct Columns {
    os: &'static str,
    architecture: &'static str,
    labels: &'static str,
    label_keys: &'static str,
    annotations: &'static str,
    annotation_keys: &'static str,
}

const IMAGE: Columns = Columns {
    os: "m.os",
    architecture: "m.architecture",
    labels: "m.labels",
    label_keys: "m.label_keys",
    annotations: "m.annotations",
    annotation_keys: "m.annotation_keys",
};

const CHILD: Columns = Columns {
    os: "e.effective_os",
    architecture: "e.effective_architecture",
    labels: "c.labels",
    label_keys: "c.label_keys",
    annotations: "c.annotations",
    annotation_keys: "c.annotation_keys",
};

/// Whether [`candidate_tags`] names, in its fourth column, the children of candidate
/// lists that may match: then only those need loading. Otherwise every child of a
/// candidate list may match, and the column is NULL.
pub(crate) fn names_children(query: &IndexQuery) -> bool {
    query.filters().iter().any(is_content)
}

/// Builds `SELECT repository name, tag, digest, child` for every tag whose manifest may
/// match. All tags of a candidate manifest in its repository are returned, because the
/// answer lists them all. `child` is NULL for images, and for lists either a child that
/// may match (one row per such child, see [`names_children`]) or NULL for all of them.
pub(crate) fn candidate_tags(query: &IndexQuery) -> QueryBuilder<Postgres> {
    let filters = query.filters();
    let content: Vec<&Filter> = filters.iter().filter(|f| is_content(f)).collect();
    let tag_level: Vec<&Filter> = filters.iter().filter(|f| !is_content(f)).collect();
    let only_repositories = tag_level.iter().all(|f| matches!(f, Filter::Repository(_)));

    let mut b = QueryBuilder::new("");
    if content.is_empty() && only_repositories {
        // No per-image test: every tag of the admitted repositories is a candidate.
        b.push(
            "SELECT r.name, t.name, t.digest, NULL::text FROM tags t \
             JOIN repositories r ON r.id = t.repository_id WHERE true",
        );
        push_tag_conditions(&mut b, &tag_level);
        return b;
    }

    b.push("WITH candidates AS (");
    if content.is_empty() {
        b.push("SELECT t.repository_id, t.digest, NULL::text AS child FROM tags t WHERE true");
        push_tag_conditions(&mut b, &tag_level);
    } else {
        // Images tagged directly, matched with their config platform …
        b.push(
            "SELECT t.repository_id, t.digest, NULL::text AS child FROM tags t \
             JOIN manifests m ON m.digest = t.digest WHERE NOT m.is_list",
        );
        push_content_conditions(&mut b, &content, &IMAGE);
        push_tag_conditions(&mut b, &tag_level);
        // … and lists with each child that matches with its effective platform (the
        // child's row is needed only to test labels or annotations).
        b.push(
            " UNION SELECT t.repository_id, t.digest, e.child FROM tags t \
             JOIN list_entries e ON e.list = t.digest",
        );
        if content
            .iter()
            .any(|f| matches!(f, Filter::Label { .. } | Filter::Annotation { .. }))
        {
            b.push(" JOIN manifests c ON c.digest = e.child");
        }
        b.push(" WHERE true");
        push_content_conditions(&mut b, &content, &CHILD);
        push_tag_conditions(&mut b, &tag_level);
    }
    b.push(
        ") SELECT r.name, t.name, t.digest, k.child FROM candidates k \
         JOIN tags t ON t.repository_id = k.repository_id AND t.digest = k.digest \
         JOIN repositories r ON r.id = k.repository_id",
    );
    b
}

/// Filters that test the image itself rather than where it is tagged.
fn is_content(filter: &Filter) -> bool {
    matches!(
        filter,
        Filter::Os(_) | Filter::Architecture(_) | Filter::Label { .. } | Filter::Annotation { .. }
    )
}

/// Conditions on `t` (a tag row): repository, tag and tag glob filters.
fn push_tag_conditions(b: &mut QueryBuilder<Postgres>, filters: &[&Filter]) {
    for filter in filters {
        match filter {
            Filter::Repository(names) => {
                b.push(" AND t.repository_id IN (SELECT id FROM repositories WHERE name = ANY(");
                b.push_bind(names.iter().cloned().collect::<Vec<String>>());
                b.push("))");
            }
            Filter::Tag(tags) => {
                // Restricting the row itself is exact: candidates are (repository, digest)
                // pairs, and a pair qualifies through any one of its tags.
                b.push(" AND t.name = ANY(");
                b.push_bind(tags.iter().cloned().collect::<Vec<String>>());
                b.push(")");
            }
            Filter::TagMatches(patterns) => {
                b.push(
                    " AND EXISTS (SELECT 1 FROM tags q WHERE q.repository_id = t.repository_id \
                     AND q.digest = t.digest AND (false",
                );
                for pattern in patterns {
                    b.push(" OR q.name LIKE ");
                    b.push_bind(like_pattern(pattern));
                    b.push(" ESCAPE '\\'");
                }
                b.push("))");
            }
            _ => {}
        }
    }
}

/// Conditions on one image (all must hold for the same image).
fn push_content_conditions(b: &mut QueryBuilder<Postgres>, filters: &[&Filter], cols: &Columns) {
    for filter in filters {
        match filter {
            Filter::Os(values) => {
                b.push(format_args!(" AND {} = ANY(", cols.os));
                b.push_bind(values.iter().cloned().collect::<Vec<String>>());
                b.push(")");
            }
            Filter::Architecture(values) => {
                b.push(format_args!(" AND {} = ANY(", cols.architecture));
                b.push_bind(values.iter().cloned().collect::<Vec<String>>());
                b.push(")");
            }
            Filter::Label { key, test } => {
                push_key_present(b, cols.label_keys, key);
                push_value_test(b, cols.labels, key, test);
            }
            Filter::Annotation { key, test } => {
                push_key_present(b, cols.annotation_keys, key);
                push_value_test(b, cols.annotations, key, test);
            }
            _ => {}
        }
    }
}

/// The image has `key` among its label or annotation keys (`keys`, a `text[]` column
/// with a GIN index the planner may start from).
fn push_key_present(b: &mut QueryBuilder<Postgres>, keys: &str, key: &str) {
    b.push(format_args!(" AND {keys} @> "));
    b.push_bind(vec![key.to_owned()]);
}

/// The value test of a label/annotation filter whose key is present: `@>` for equality
/// (which the GIN index on the jsonb column can serve), `LIKE` for globs, nothing for
/// presence.
fn push_value_test(b: &mut QueryBuilder<Postgres>, column: &str, key: &str, test: &ValueTest) {
    match test {
        ValueTest::Exists => {}
        ValueTest::Equals(values) => {
            b.push(" AND (false");
            for value in values {
                let mut object = serde_json::Map::new();
                object.insert(key.to_owned(), serde_json::Value::String(value.clone()));
                b.push(format_args!(" OR {column} @> "));
                b.push_bind(serde_json::Value::Object(object));
            }
            b.push(")");
        }
        ValueTest::Matches(patterns) => {
            b.push(" AND (false");
            for pattern in patterns {
                b.push(format_args!(" OR ({column} ->> "));
                b.push_bind(key.to_owned());
                b.push(") LIKE ");
                b.push_bind(like_pattern(pattern));
                b.push(" ESCAPE '\\'");
            }
            b.push(")");
        }
    }
}

/// Translates a glob (`*`, `?`, everything else literal) into a LIKE pattern with `\` as
/// the escape character. Both `?` and `_` match exactly one character.
fn like_pattern(pattern: &Pattern) -> String {
    let mut out = String::with_capacity(pattern.as_str().len() + 4);
    for c in pattern.as_str().chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(like_pattern(&Pattern::new("v1.*")), "v1.%");
        assert_eq!(like_pattern(&Pattern::new("a?c")), "a_c");
        assert_eq!(like_pattern(&Pattern::new("50%_\\")), "50\\%\\_\\\\");
    }

    #[test]
    fn values_are_bound_not_inlined() {
        let query = IndexQuery::parse(
            "repository=x%27%3B%20DROP&label:a%27b:exists=1&tag:matches=%27*&os=linux",
        )
        .unwrap();
        let b = candidate_tags(&query);
        let sql = b.sql().as_str().to_owned();
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(!sql.contains("a'b"), "{sql}");
        assert!(sql.contains("$1"), "{sql}");
    }
}

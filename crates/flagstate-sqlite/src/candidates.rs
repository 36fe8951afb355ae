//! Translating an [`IndexQuery`] into SQL that narrows it to candidate tags.
//!
//! The SQL returns every `(repository, tag, manifest)` row whose tagged manifest might
//! match: a directly tagged image passing the filters, or a list with at least one child
//! passing them — together with those children, so that only they are loaded (a child
//! that is not loaded is skipped by the reference evaluation, exactly like a child that
//! does not match). It may return more than what matches — glob filters are narrowed by
//! their literal prefix, and `tag:matches` is left to the final check when `tag=` is also
//! given — but never less; the final answer comes from
//! [`IndexQuery::evaluate_repository`] over exactly these rows, so the semantics are the
//! reference semantics by construction.
//!
//! Only the *shape* of the SQL depends on the query (which filters, how many values);
//! every value is a bound `?` parameter.
//!
//! When the query has label or annotation filters, one of them (the most selective kind:
//! equality, then prefix globs, then existence) drives the plan through the
//! `properties (kind, key, value)` index and `CROSS JOIN` fixes the join order, because
//! without statistics SQLite would rather walk the `tag` index, which for the Flatpak
//! query (`tag=latest`) visits every repository instead of the few Flatpak images.

use flagstate_core::query::{Filter, IndexQuery, Pattern, ValueTest};
use rusqlite::types::Value;

use crate::write::{ANNOTATION, LABEL};

/// SQL text with its parameters in order.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<Value>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.text.push('?');
        self.params.push(value.into());
        self
    }

    fn bind_all<'a>(&mut self, values: impl IntoIterator<Item = &'a String>) -> &mut Self {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value.clone());
        }
        self.push(")")
    }
}

/// A SQLite GLOB pattern equivalent to `pattern`: both know only `*` and `?`, except that
/// GLOB also gives `[` a meaning, so it is written as the one-character class `[[]`.
fn glob(pattern: &Pattern) -> String {
    pattern.as_str().replace('[', "[[]")
}

/// The smallest string greater than every string starting with `prefix`, if any.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // UTF-8 byte order is code point order, so the next code point bounds the range.
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `column` matches one of `patterns`: a GLOB per pattern, with a range on its literal
/// prefix so an index on `column` can be used.
fn push_globs<'a>(sql: &mut Sql, column: &str, patterns: impl IntoIterator<Item = &'a Pattern>) {
    sql.push("(");
    for (i, pattern) in patterns.into_iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        let prefix = pattern.literal_prefix();
        if !prefix.is_empty() {
            sql.push(column)
                .push(" >= ")
                .bind(prefix.to_owned())
                .push(" AND ");
            if let Some(end) = prefix_end(prefix) {
                sql.push(column).push(" < ").bind(end).push(" AND ");
            }
        }
        sql.push(column)
            .push(" GLOB ")
            .bind(glob(pattern))
            .push(")");
    }
    sql.push(")");
}

/// A property filter: its kind, key and test.
struct PropertyFilter<'q> {
    kind: i64,
    key: &'q str,
    test: &'q ValueTest,
}

impl PropertyFilter<'_> {
    /// Lower is more selective, so better at driving the plan.
    fn cost(&self) -> u8 {
        match self.test {
            ValueTest::Equals(_) => 0,
            ValueTest::Matches(p) if p.iter().all(|p| !p.literal_prefix().is_empty()) => 1,
            ValueTest::Exists => 2,
            ValueTest::Matches(_) => 3,
        }
    }

    /// `SELECT manifest_id FROM properties WHERE …` for this filter.
    fn push_select(&self, sql: &mut Sql) {
        sql.push("SELECT manifest_id FROM properties WHERE kind = ")
            .bind(self.kind)
            .push(" AND key = ")
            .bind(self.key.to_owned());
        match self.test {
            ValueTest::Exists => {}
            ValueTest::Equals(values) => {
                sql.push(" AND value IN ").bind_all(values);
            }
            ValueTest::Matches(patterns) => {
                sql.push(" AND ");
                push_globs(sql, "value", patterns);
            }
        }
    }
}

/// Conditions on one candidate branch: which columns hold the image's id and platform.
struct Branch {
    image_id: &'static str,
    os: &'static str,
    architecture: &'static str,
}

const DIRECT: Branch = Branch {
    image_id: "m.id",
    os: "m.os",
    architecture: "m.architecture",
};
const LISTED: Branch = Branch {
    image_id: "e.child_id",
    os: "e.os",
    architecture: "e.architecture",
};

/// Appends ` AND …` for every filter on the tag row `t` and the image of `branch`, except
/// the property filter that drives the plan.
fn push_conditions(
    sql: &mut Sql,
    query: &IndexQuery,
    branch: &Branch,
    properties: &[PropertyFilter<'_>],
) {
    let has_tag = query.filters().iter().any(|f| matches!(f, Filter::Tag(_)));
    for filter in query.filters() {
        match filter {
            Filter::Repository(names) => {
                sql.push(" AND t.repository_id IN (SELECT id FROM repositories WHERE name IN ")
                    .bind_all(names)
                    .push(")");
            }
            Filter::Tag(tags) => {
                sql.push(" AND t.tag IN ").bind_all(tags);
            }
            // One tag row cannot carry both tests when an image has several tags, so with
            // `tag=` present the glob is left to the final check.
            Filter::TagMatches(patterns) if !has_tag => {
                sql.push(" AND ");
                push_globs(sql, "t.tag", patterns);
            }
            Filter::TagMatches(_) => {}
            Filter::Os(values) => {
                sql.push(" AND ")
                    .push(branch.os)
                    .push(" IN ")
                    .bind_all(values);
            }
            Filter::Architecture(values) => {
                sql.push(" AND ")
                    .push(branch.architecture)
                    .push(" IN ")
                    .bind_all(values);
            }
            Filter::Label { .. } | Filter::Annotation { .. } => {}
        }
    }
    for property in properties.iter().skip(1) {
        sql.push(" AND ").push(branch.image_id).push(" IN (");
        property.push_select(sql);
        sql.push(")");
    }
}

/// SQL returning `(repository name, tag, manifest id, child id)` for every tag of every
/// candidate. For a list, `child id` names a child that may match (one row per such
/// child); it is NULL for images, and for lists when every child is a candidate.
pub(crate) fn candidate_tags(query: &IndexQuery) -> Sql {
    let mut sql = Sql::default();
    let mut properties: Vec<PropertyFilter<'_>> = query
        .filters()
        .iter()
        .filter_map(|f| match f {
            Filter::Label { key, test } => Some(PropertyFilter {
                kind: LABEL,
                key,
                test,
            }),
            Filter::Annotation { key, test } => Some(PropertyFilter {
                kind: ANNOTATION,
                key,
                test,
            }),
            _ => None,
        })
        .collect();
    properties.sort_by_key(PropertyFilter::cost);

    if query.filters().is_empty() {
        sql.push(
            "SELECT r.name, t.tag, t.manifest_id, NULL FROM tags t
             JOIN repositories r ON r.id = t.repository_id",
        );
        return sql;
    }

    sql.push("WITH ");
    if let Some(driver) = properties.first() {
        sql.push("seed (id) AS (");
        driver.push_select(&mut sql);
        sql.push("), ");
        sql.push(
            "candidates (repository_id, manifest_id, child_id) AS (
               SELECT t.repository_id, t.manifest_id, NULL FROM seed
               CROSS JOIN manifests m ON m.id = seed.id
               CROSS JOIN tags t ON t.manifest_id = seed.id
               WHERE m.is_list = 0",
        );
        push_conditions(&mut sql, query, &DIRECT, &properties);
        sql.push(
            " UNION
               SELECT t.repository_id, t.manifest_id, e.child_id FROM seed
               CROSS JOIN list_entries e ON e.child_id = seed.id
               CROSS JOIN tags t ON t.manifest_id = e.list_id
               WHERE 1",
        );
        push_conditions(&mut sql, query, &LISTED, &properties);
    } else {
        sql.push(
            "candidates (repository_id, manifest_id, child_id) AS (
               SELECT t.repository_id, t.manifest_id, NULL FROM tags t
               JOIN manifests m ON m.id = t.manifest_id
               WHERE m.is_list = 0",
        );
        push_conditions(&mut sql, query, &DIRECT, &properties);
        sql.push(
            " UNION
               SELECT t.repository_id, t.manifest_id, e.child_id FROM tags t
               JOIN list_entries e ON e.list_id = t.manifest_id
               WHERE 1",
        );
        push_conditions(&mut sql, query, &LISTED, &properties);
    }
    sql.push(
        ")
         SELECT r.name, t.tag, t.manifest_id, c.child_id FROM candidates c
         CROSS JOIN tags t ON t.repository_id = c.repository_id AND t.manifest_id = c.manifest_id
         JOIN repositories r ON r.id = c.repository_id",
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_every_extension() {
        assert_eq!(prefix_end("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_end("").as_deref(), None);
        let max = char::MAX.to_string();
        assert_eq!(prefix_end(&format!("a{max}")).as_deref(), Some("b"));
        assert_eq!(prefix_end(&max), None);
        // Skips the surrogate gap.
        assert_eq!(prefix_end("\u{d7ff}").as_deref(), Some("\u{e000}"));
        for s in ["abc", "abc\u{10ffff}", "abcz", "abc\u{e9}"] {
            assert!(s < prefix_end("abc").unwrap().as_str(), "{s}");
        }
    }

    #[test]
    fn glob_escapes_brackets_only() {
        assert_eq!(glob(&Pattern::new("a[b]*?")), "a[[]b]*?");
    }

    #[test]
    fn values_are_bound_never_inlined() {
        let query = IndexQuery::parse(
            "label:x%27%3B%20DROP%20TABLE%20tags%3B--=1&tag=%27&annotation:k:matches=a%5B*&os=linux",
        )
        .unwrap();
        let sql = candidate_tags(&query);
        assert!(!sql.text.contains("DROP"), "{}", sql.text);
        assert!(!sql.text.contains('\''), "{}", sql.text);
        assert_eq!(
            sql.text.matches('?').count(),
            sql.params.len(),
            "{}",
            sql.text
        );
    }
}

//! Full-text search: one weighted `tsvector` per repository (name words A, titles B,
//! descriptions C), a GIN index over it, prefix `tsquery` terms, `ts_rank` ordering.
//!
//! Words and documents follow the shared rules of [`flagstate_core::search`]: words are
//! cut in Rust and handed to PostgreSQL as ready-made lexemes through the
//! `tsvector` / `tsquery` input syntax, each [`Field`] under its own weight label. That bypasses PostgreSQL's text-search parser, whose
//! idea of a word depends on the database locale (under the C locale every non-ASCII
//! letter is a separator) and which keeps tokens such as `a.b` or `/usr/bin` whole; using
//! it would make hits differ from the other stores for the same data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use flagstate_core::model::Description;
use flagstate_core::search::{Field, SearchDocument, words};
use flagstate_core::{SearchHit, SearchPage, StoreError};
use sqlx::{PgConnection, PgPool};

use crate::error::SqlContext;

/// Largest position a `tsvector` records.
const MAX_POSITION: usize = 16_383;
/// Most positions kept per lexeme (PostgreSQL's limit).
const MAX_POSITIONS_PER_LEXEME: usize = 256;
/// Longest lexeme PostgreSQL accepts, in bytes (exclusive).
const MAX_LEXEME_BYTES: usize = 2_047;
/// Budget for one document, well below the 1 MB `tsvector` limit.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// The `tsvector` weight label of a field. Labels rank A > B > C under `ts_rank`'s
/// default weights, the order of [`Field::ALL`].
fn label(field: Field) -> char {
    match field {
        Field::Name => 'A',
        Field::Title => 'B',
        Field::Description => 'C',
    }
}

/// Quotes a lexeme for `tsvector` / `tsquery` input.
fn quote(lexeme: &str, out: &mut String) {
    out.push('\'');
    for c in lexeme.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
}

/// A `tsvector` literal for a repository's search document.
fn tsvector(doc: &SearchDocument) -> String {
    let mut lexemes: BTreeMap<String, Vec<(usize, char)>> = BTreeMap::new();
    let mut position = 0usize;
    for field in Field::ALL {
        for word in doc.words(field) {
            position = (position + 1).min(MAX_POSITION);
            if word.len() >= MAX_LEXEME_BYTES {
                continue;
            }
            let positions = lexemes.entry(word).or_default();
            if positions.len() < MAX_POSITIONS_PER_LEXEME {
                positions.push((position, label(field)));
            }
        }
    }
    let mut out = String::new();
    for (lexeme, positions) in lexemes {
        if out.len() + lexeme.len() > MAX_DOCUMENT_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        quote(&lexeme, &mut out);
        for (i, (pos, weight)) in positions.iter().enumerate() {
            out.push(if i == 0 { ':' } else { ',' });
            // Writing into a String cannot fail.
            let _ = write!(out, "{pos}{weight}");
        }
    }
    out
}

/// A `tsquery` literal requiring every word of `text` as a prefix, or `None` when `text`
/// has no words (or a word no lexeme can start with).
fn prefix_query(text: &str) -> Option<String> {
    let terms: BTreeSet<String> = words(text).collect();
    if terms.is_empty() || terms.iter().any(|t| t.len() >= MAX_LEXEME_BYTES) {
        return None;
    }
    let mut out = String::new();
    for term in terms {
        if !out.is_empty() {
            out.push_str(" & ");
        }
        quote(&term, &mut out);
        out.push_str(":*");
    }
    Some(out)
}

/// Rebuilds the search document, title and description of one repository from its
/// current tags. Images are visited in tag order (lists: their children in list order);
/// [`SearchDocument`] counts each once and picks the title and description shown.
pub(crate) async fn refresh(
    conn: &mut PgConnection,
    repository_id: i64,
    name: &str,
) -> Result<(), StoreError> {
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT m.digest, m.title, m.description FROM (\
             SELECT t.name AS tag, 0 AS position, t.digest FROM tags t \
             JOIN manifests i ON i.digest = t.digest \
             WHERE t.repository_id = $1 AND NOT i.is_list \
             UNION ALL \
             SELECT t.name, e.position + 1, e.child FROM tags t \
             JOIN list_entries e ON e.list = t.digest WHERE t.repository_id = $1\
         ) v JOIN manifests m ON m.digest = v.digest \
         ORDER BY v.tag COLLATE \"C\", v.position",
    )
    .bind(repository_id)
    .fetch_all(&mut *conn)
    .await
    .during("reading descriptive text")?;
    let reached = rows
        .into_iter()
        .map(|(digest, title, description)| (digest, Description { title, description }));
    let doc = SearchDocument::new(name, reached);
    sqlx::query(
        "UPDATE repositories SET title = $2, description = $3, search = $4::tsvector \
         WHERE id = $1",
    )
    .bind(repository_id)
    .bind(doc.title())
    .bind(doc.description())
    .bind(tsvector(&doc))
    .execute(&mut *conn)
    .await
    .during("updating the search document")?;
    Ok(())
}

/// name, title, description, score, total number of hits.
type HitRow = (String, Option<String>, Option<String>, f64, i64);

/// Runs a search: every term must match as a word prefix; best `ts_rank` first, ties by
/// name.
pub(crate) async fn search(
    pool: &PgPool,
    text: &str,
    offset: u64,
    limit: u64,
) -> Result<SearchPage, StoreError> {
    let Some(tsquery) = prefix_query(text) else {
        return Ok(SearchPage::default());
    };
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<HitRow> = sqlx::query_as(
        "WITH hits AS (\
             SELECT name, title, description, ts_rank(search, $1::tsquery)::float8 AS score \
             FROM repositories WHERE search @@ $1::tsquery) \
         SELECT name, title, description, score, count(*) OVER () FROM hits \
         ORDER BY score DESC, name LIMIT $2 OFFSET $3",
    )
    .bind(&tsquery)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
    .during("searching")?;
    let total = match rows.first() {
        Some(row) => row.4,
        // The page is past the end (or there are no hits): count separately.
        None => {
            let (count,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM repositories WHERE search @@ $1::tsquery")
                    .bind(&tsquery)
                    .fetch_one(pool)
                    .await
                    .during("counting search hits")?;
            count
        }
    };
    Ok(SearchPage {
        total: u64::try_from(total).unwrap_or(0),
        hits: rows
            .into_iter()
            .map(|(repository, title, description, score, _)| SearchHit {
                repository,
                title,
                description,
                score,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `tsvector` of repository `name` with one image per title/description pair.
    fn document(name: &str, titles: &[&str], descriptions: &[&str]) -> String {
        let described = (0..titles.len().max(descriptions.len())).map(|i| {
            let description = Description {
                title: titles.get(i).map(|t| (*t).to_owned()),
                description: descriptions.get(i).map(|d| (*d).to_owned()),
            };
            (i, description)
        });
        tsvector(&SearchDocument::new(name, described))
    }

    #[test]
    fn documents_are_weighted_lexemes() {
        assert_eq!(
            document("fedora/flatpak-runtime", &["Runtime"], &["It's a base"]),
            "'a':7C 'base':8C 'fedora':1A 'flatpak':2A 'it':5C 'runtime':3A,4B 's':6C"
        );
        assert_eq!(document("", &[], &[]), "");
    }

    #[test]
    fn queries_are_prefix_conjunctions_of_words() {
        assert_eq!(prefix_query("  "), None);
        assert_eq!(
            prefix_query("Flat-PAK o'brien"),
            Some("'brien':* & 'flat':* & 'o':* & 'pak':*".to_owned())
        );
        assert_eq!(prefix_query("Ünïcode"), Some("'ünïcode':*".to_owned()));
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        let mut out = String::new();
        quote("a'b\\c", &mut out);
        assert_eq!(out, "'a''b\\\\c'");
    }
}

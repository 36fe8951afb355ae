//! Full-text search over repositories with SQLite FTS5.
//!
//! Each repository has one row in the `search` table (rowid = repository id) holding the
//! words of its name and of the titles and descriptions of its tagged images (directly
//! tagged, and the children of tagged lists). The row is rewritten in the transaction
//! that changes the repository's tags, so search never disagrees with the tags.
//!
//! Words and documents follow the shared rules of [`flagstate_core::search`]: words are
//! cut in Rust and stored space-separated, one column per [`Field`]; the FTS5 tokenizer
//! is configured to treat every such character as part of a token, so FTS5 sees exactly
//! those words. Queries are built from the same words, each quoted and marked as a prefix
//! (`"term"*`), so user text can never be read as FTS5 syntax. Ranking is FTS5's bm25
//! with the column weights of [`Field::weight`].

use flagstate_core::model::Description;
use flagstate_core::search::{Field, SearchDocument, words};
use flagstate_core::{SearchHit, SearchPage};
use rusqlite::{Connection, Transaction, params};

use crate::error::Result;

/// The bm25 ranking expression: one weight per column, in [`Field::ALL`] order (the
/// column order of the `search` table).
fn rank() -> String {
    let weights: Vec<String> = Field::ALL
        .iter()
        .map(|f| format!("{:?}", f.weight()))
        .collect();
    format!("bm25(search, {})", weights.join(", "))
}

/// A manifest a tag points at.
struct Tagged {
    tag: String,
    id: i64,
    is_list: bool,
    described: Description,
}

/// The search document of a repository: the images its tags reach, tags in bytewise
/// order and list children in list order.
fn document(tx: &Transaction<'_>, repository_id: i64, name: &str) -> Result<SearchDocument> {
    let mut tags_stmt = tx.prepare_cached(
        "SELECT t.tag, m.id, m.is_list, m.title, m.description
         FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repository_id = ?1",
    )?;
    let mut tagged: Vec<Tagged> = tags_stmt
        .query_map([repository_id], |r| {
            Ok(Tagged {
                tag: r.get(0)?,
                id: r.get(1)?,
                is_list: r.get(2)?,
                described: Description {
                    title: r.get(3)?,
                    description: r.get(4)?,
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Sorted here rather than by SQL so the order is bytewise whatever the collation.
    tagged.sort_by(|a, b| a.tag.as_bytes().cmp(b.tag.as_bytes()));
    let mut children_stmt = tx.prepare_cached(
        "SELECT c.id, c.title, c.description
         FROM list_entries e JOIN manifests c ON c.id = e.child_id
         WHERE e.list_id = ?1 ORDER BY e.position",
    )?;
    let mut reached = Vec::new();
    for manifest in tagged {
        if manifest.is_list {
            let children = children_stmt.query_map([manifest.id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Description {
                        title: r.get(1)?,
                        description: r.get(2)?,
                    },
                ))
            })?;
            for child in children {
                reached.push(child?);
            }
        } else {
            reached.push((manifest.id, manifest.described));
        }
    }
    Ok(SearchDocument::new(name, reached))
}

/// The words of one field as the `search` table stores them: space-separated.
fn column(doc: &SearchDocument, field: Field) -> String {
    doc.words(field).join(" ")
}

/// Rewrites the search row and the shown title/description of a repository.
pub(crate) fn refresh(tx: &Transaction<'_>, repository_id: i64, name: &str) -> Result<()> {
    let doc = document(tx, repository_id, name)?;
    tx.prepare_cached("UPDATE repositories SET title = ?2, description = ?3 WHERE id = ?1")?
        .execute(params![repository_id, doc.title(), doc.description()])?;
    forget(tx, repository_id)?;
    tx.prepare_cached(
        "INSERT INTO search (rowid, name, titles, descriptions) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        repository_id,
        column(&doc, Field::Name),
        column(&doc, Field::Title),
        column(&doc, Field::Description)
    ])?;
    Ok(())
}

/// Drops the search row of a repository.
pub(crate) fn forget(tx: &Transaction<'_>, repository_id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM search WHERE rowid = ?1")?
        .execute([repository_id])?;
    Ok(())
}

/// The FTS5 query for `text`: every word as a quoted prefix term, all required. `None`
/// when the text has no words.
fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = words(text).map(|w| format!("\"{w}\"*")).collect();
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

/// See [`Store::search`](flagstate_core::Store::search).
pub(crate) fn search(conn: &Connection, text: &str, offset: u64, limit: u64) -> Result<SearchPage> {
    let Some(query) = fts_query(text) else {
        return Ok(SearchPage::default());
    };
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM search WHERE search MATCH ?1")?
        .query_row([&query], |r| r.get(0))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let rank = rank();
    let sql = format!(
        "SELECT r.name, r.title, r.description, -{rank} AS score
         FROM search JOIN repositories r ON r.id = search.rowid
         WHERE search MATCH ?1
         ORDER BY score DESC, r.name COLLATE BINARY
         LIMIT ?2 OFFSET ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let hits = stmt
        .query_map(params![query, limit, offset], |r| {
            Ok(SearchHit {
                repository: r.get(0)?,
                title: r.get(1)?,
                description: r.get(2)?,
                score: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(SearchPage {
        total: u64::try_from(total).unwrap_or_default(),
        hits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_weighs_columns_by_field() {
        assert_eq!(rank(), "bm25(search, 3.0, 2.0, 1.0)");
    }
}

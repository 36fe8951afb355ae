-- flagstate PostgreSQL schema, version 4.
--
-- What the discovery listings need: when each repository appeared and last changed, when
-- each tag started pointing at its digest, and the history of the digests every tag
-- pointed at. Times are milliseconds since the Unix epoch (`bigint`), the integer
-- `flagstate_core::Timestamp` holds, so they compare and page exactly as in Rust.
--
-- Rows stored before this version are stamped with the time of the upgrade: nothing
-- better is known, and it is never later than anything a writer stamps afterwards. The
-- default is `now()` (stable within the migration's transaction: one instant for every
-- row), which PostgreSQL records once instead of rewriting the tables; it is dropped
-- right away, so every writer states its times explicitly.
ALTER TABLE repositories
    ADD COLUMN created bigint NOT NULL DEFAULT floor(extract(epoch FROM now()) * 1000)::bigint,
    ADD COLUMN updated bigint NOT NULL DEFAULT floor(extract(epoch FROM now()) * 1000)::bigint;
ALTER TABLE repositories ALTER COLUMN created DROP DEFAULT, ALTER COLUMN updated DROP DEFAULT;
ALTER TABLE tags
    ADD COLUMN updated bigint NOT NULL DEFAULT floor(extract(epoch FROM now()) * 1000)::bigint;
ALTER TABLE tags ALTER COLUMN updated DROP DEFAULT;

-- One row per digest a tag pointed at, from `since`. `seq` orders a tag's entries:
-- entries of the same millisecond keep the order they were written in, which the time
-- cannot tell. History outlives a deleted tag, so it names the tag by text rather than
-- referencing `tags`, and the digest by text rather than referencing `manifests`, because
-- garbage collection deletes manifests no tag references any more. It goes with its
-- repository.
CREATE TABLE tag_history (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    tag text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL,
    since bigint NOT NULL
);
-- A tag's history in order; also serves the cascade from `repositories` and pruning,
-- which ranks each tag's entries newest first.
CREATE INDEX tag_history_by_tag ON tag_history (repository_id, tag, seq);

-- Every existing tag starts its history at its current digest.
INSERT INTO tag_history (repository_id, tag, digest, since)
    SELECT repository_id, name, digest, updated FROM tags ORDER BY repository_id, name;

-- Keyset pages in time order: `(updated, name) > ($1, $2)` is an index range, and newest
-- first reads the same index backwards (PostgreSQL sorts only the ties within one
-- millisecond). Name order uses the unique indexes on `repositories (name)` and
-- `tags (repository_id, name)`.
CREATE INDEX repositories_by_updated ON repositories (updated, name);
CREATE INDEX tags_by_updated ON tags (repository_id, updated, name);

ANALYZE repositories, tags, tag_history;

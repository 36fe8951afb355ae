-- flagstate PostgreSQL schema, version 9.
--
-- Tags pointing at artifacts (manifests that are neither images nor image lists), kept
-- apart from `tags` so that no query path meets them. Each names a digest of
-- `pushed_manifests` of its repository, which holds what the artifact is. Before this
-- version such tags were not kept; the next scan finds them.
CREATE TABLE artifact_tags (
    repository_id bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL,
    updated bigint NOT NULL,
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX artifact_tags_by_updated ON artifact_tags (repository_id, updated, name);
CREATE INDEX artifact_tags_by_digest ON artifact_tags (repository_id, digest);

-- flagstate PostgreSQL schema, version 7.
--
-- Manifest sizes, and the manifests repositories hold by digest alone (pushed without a
-- tag). Manifests stored before this version have no size (NULL): the next scan reads
-- them again and fills it in. A pushed manifest names its digest by text rather than
-- referencing `manifests`, which holds indexable images and lists only; it goes with its
-- repository.
ALTER TABLE manifests ADD COLUMN size bigint;

CREATE TABLE pushed_manifests (
    repository_id bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest text COLLATE "C" NOT NULL,
    media_type text NOT NULL,
    size bigint NOT NULL,
    pushed bigint NOT NULL,
    -- What the referrers listing selects on: the manifest's `artifactType` (else its
    -- config's media type) and `subject`, with the annotations it answers.
    artifact_type text,
    subject text COLLATE "C",
    annotations jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX pushed_manifests_by_subject ON pushed_manifests (repository_id, subject)
    WHERE subject IS NOT NULL;

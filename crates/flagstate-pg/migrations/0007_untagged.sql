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
    PRIMARY KEY (repository_id, digest)
);

-- flagstate PostgreSQL schema, version 3.
--
-- The keys of every manifest's labels and annotations as arrays, computed by the server
-- from the jsonb maps (for the rows stored so far when this runs, and for every row a
-- writer stores), with GIN indexes. `label:K:…` and `annotation:K:…` filters test
-- `label_keys @> ARRAY[K]`: the planner estimates that from the column's element
-- statistics, where for jsonb `labels ? K` it can only guess a fixed selectivity, and
-- testing it reads a short array instead of decompressing every candidate's labels.
CREATE FUNCTION flagstate_keys(object jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT coalesce(array_agg(k.key), '{}') FROM jsonb_object_keys(object) AS k(key) $$;

ALTER TABLE manifests
    ADD COLUMN label_keys text[] NOT NULL GENERATED ALWAYS AS (flagstate_keys(labels)) STORED,
    ADD COLUMN annotation_keys text[] NOT NULL
        GENERATED ALWAYS AS (flagstate_keys(annotations)) STORED;

-- Without the pending list (`fastupdate`), a query never scans unmerged entries, which
-- only vacuum or a full list would merge.
CREATE INDEX manifests_label_keys ON manifests USING gin (label_keys) WITH (fastupdate = off);
CREATE INDEX manifests_annotation_keys ON manifests USING gin (annotation_keys)
    WITH (fastupdate = off);

ANALYZE manifests;

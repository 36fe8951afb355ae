-- flagstate PostgreSQL schema, version 1.
--
-- Names, tags and digests use COLLATE "C" so that every ORDER BY and comparison is
-- bytewise, whatever locale the database was created with.

-- The generation counter: exactly one row, bumped in the same transaction as the change
-- it announces.
CREATE TABLE meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL CHECK (generation >= 0)
);
INSERT INTO meta (singleton, generation) VALUES (true, 0);

-- Every bump is announced to replicas on one channel per database; the payload names the
-- schema so that several stores can share a database.
CREATE FUNCTION flagstate_announce_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flagstate_generation', TG_TABLE_SCHEMA || ':' || NEW.generation);
    RETURN NEW;
END;
$$;
CREATE TRIGGER meta_announce AFTER UPDATE OF generation ON meta
    FOR EACH ROW WHEN (OLD.generation IS DISTINCT FROM NEW.generation)
    EXECUTE FUNCTION flagstate_announce_generation();

-- Immutable manifests, shared by every repository that tags them.
CREATE TABLE manifests (
    digest text COLLATE "C" PRIMARY KEY,
    media_type text NOT NULL CHECK (media_type <> ''),
    is_list boolean NOT NULL,
    -- Platform from the image config (images only).
    os text,
    architecture text,
    variant text,
    labels jsonb NOT NULL DEFAULT '{}',
    annotations jsonb NOT NULL DEFAULT '{}',
    created text,
    config_digest text,
    -- Resolved descriptive text (images only), kept so that search documents can be
    -- rebuilt without re-reading labels.
    title text,
    description text
);
-- jsonb_ops (not jsonb_path_ops): `label:K:exists` needs the `?` operator.
CREATE INDEX manifests_labels ON manifests USING gin (labels);
CREATE INDEX manifests_annotations ON manifests USING gin (annotations);

-- The children of image lists, in list order.
CREATE TABLE list_entries (
    list text COLLATE "C" NOT NULL REFERENCES manifests (digest) ON DELETE CASCADE,
    position integer NOT NULL,
    child text COLLATE "C" NOT NULL REFERENCES manifests (digest),
    -- Platform as the list states it; all NULL when it states none.
    os text,
    architecture text,
    variant text,
    -- The platform queries match the child with (list's, else config's); derived at
    -- insert time because both sides are immutable.
    effective_os text NOT NULL,
    effective_architecture text NOT NULL,
    PRIMARY KEY (list, position)
);
CREATE INDEX list_entries_child ON list_entries (child);

CREATE TABLE repositories (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    -- First title / description among the repository's tagged images.
    title text,
    description text,
    -- Weighted lexemes: name (A), titles (B), descriptions (C).
    search tsvector NOT NULL DEFAULT ''::tsvector
);
CREATE INDEX repositories_search ON repositories USING gin (search);

CREATE TABLE tags (
    repository_id bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL REFERENCES manifests (digest),
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX tags_digest ON tags (digest, repository_id);
CREATE INDEX tags_name ON tags (name);

-- flagstate PostgreSQL schema, version 5.
--
-- The change log: one row per visible change, keyed by the generation of its transaction
-- and its position within it (the change cursor). Generations are assigned under the
-- generation row's lock, so cursors grow in commit order and a reader that has read up
-- to a cursor never finds an older row later. A database upgraded to this version
-- starts its log at its current generation (`change_floor_*`): a reader cannot ask for
-- changes from before the log existed.
CREATE TABLE change_log (
    generation bigint NOT NULL,
    position integer NOT NULL,
    time bigint NOT NULL,
    kind smallint NOT NULL,
    repository text COLLATE "C" NOT NULL,
    tag text COLLATE "C",
    digest text COLLATE "C",
    previous_digest text COLLATE "C",
    media_type text,
    PRIMARY KEY (generation, position)
);

ALTER TABLE meta
    ADD COLUMN change_floor_generation bigint NOT NULL DEFAULT 0,
    ADD COLUMN change_floor_position bigint NOT NULL DEFAULT 4294967295;
UPDATE meta SET change_floor_generation = generation;

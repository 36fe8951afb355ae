-- flagstate PostgreSQL schema, version 6.
--
-- Where the change log's deliveries to each webhook endpoint stand: per endpoint name,
-- the change cursor up to which it acknowledged the log (the two columns of
-- `change_log`'s key). Written by the writer only; never part of the generation.
CREATE TABLE deliveries (
    endpoint text COLLATE "C" PRIMARY KEY,
    generation bigint NOT NULL,
    position bigint NOT NULL
);

-- flagstate PostgreSQL schema, version 2.
--
-- The public registry URL the writer serves the index with (the `Registry` of every
-- answer), so read-only replicas of the same schema name the same one. NULL until a
-- writer stores it.
ALTER TABLE meta ADD COLUMN registry_url text;

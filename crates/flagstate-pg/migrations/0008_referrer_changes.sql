-- flagstate PostgreSQL schema, version 8.
--
-- Change records of referrers carry the manifest they refer to (its OCI 1.1 subject) and
-- their artifact type. Records written before this version have neither (NULL), as they
-- had then.
ALTER TABLE change_log
    ADD COLUMN subject text COLLATE "C",
    ADD COLUMN artifact_type text;

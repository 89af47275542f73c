-- The changelog: a table's shape changes (ALTER TABLE). A new Schema entry
-- comes before the next Modification after a change of columns, types, key
-- or name, and only then: DDL that changes none of them sends none.
CREATE SCHEMA ren;
CREATE TABLE ren.t (id int PRIMARY KEY, a text, b int);
SELECT pgsink.add_table('ren.t', import => false);
INSERT INTO ren.t VALUES (1, 'a1', 1);
INSERT INTO ren.t VALUES (2, 'a2', 2);
-- ADD COLUMN (a fast default: existing rows are not rewritten).
ALTER TABLE ren.t ADD COLUMN c date DEFAULT '2024-01-01';
INSERT INTO ren.t VALUES (3, 'a3', 3, '2024-03-03');
UPDATE ren.t SET b = 10 WHERE id = 1;
-- DROP COLUMN.
ALTER TABLE ren.t DROP COLUMN b;
UPDATE ren.t SET a = 'a1 again' WHERE id = 1;
-- RENAME COLUMN.
ALTER TABLE ren.t RENAME COLUMN a TO alpha;
DELETE FROM ren.t WHERE id = 2;
-- ALTER COLUMN TYPE (a rewrite).
ALTER TABLE ren.t ALTER COLUMN c TYPE timestamp;
INSERT INTO ren.t VALUES (4, 'a4', '2024-04-04 04:04:04');
-- RENAME TABLE: the new name, in the Schema entry and the Modifications.
ALTER TABLE ren.t RENAME TO renamed;
INSERT INTO ren.renamed VALUES (5, 'a5', NULL);
-- Nothing that matters to the changelog: no new Schema entry.
CREATE INDEX renamed_alpha ON ren.renamed (alpha);
ALTER TABLE ren.renamed ALTER COLUMN alpha SET STATISTICS 500;
ALTER TABLE ren.renamed SET (fillfactor = 90);
COMMENT ON TABLE ren.renamed IS 'renamed';
VACUUM FULL ren.renamed;
INSERT INTO ren.renamed VALUES (6, 'a6', NULL);
-- The key changes: renaming the key column, then a new primary key.
ALTER TABLE ren.renamed RENAME COLUMN id TO key;
UPDATE ren.renamed SET alpha = 'a1, key renamed' WHERE key = 1;
ALTER TABLE ren.renamed DROP CONSTRAINT t_pkey,
                        ADD PRIMARY KEY (key, alpha);
UPDATE ren.renamed SET c = '2024-01-02' WHERE key = 1;
-- DDL and writes in one transaction: the Schema entry comes where the
-- shape changes, within the transaction.
BEGIN;
INSERT INTO ren.renamed VALUES (7, 'a7', NULL);
ALTER TABLE ren.renamed ADD COLUMN d int;
INSERT INTO ren.renamed VALUES (8, 'a8', NULL, 8);
ALTER TABLE ren.renamed ADD COLUMN e int;
ALTER TABLE ren.renamed DROP COLUMN e;
INSERT INTO ren.renamed VALUES (9, 'a9', NULL, 9);
COMMIT;
-- SET SCHEMA: the new namespace.
CREATE SCHEMA ren_moved;
ALTER TABLE ren.renamed SET SCHEMA ren_moved;
INSERT INTO ren_moved.renamed VALUES (10, 'a10', NULL, 10);
-- Renaming the schema renames the table's namespace.
ALTER SCHEMA ren_moved RENAME TO ren_moved_again;
INSERT INTO ren_moved_again.renamed VALUES (11, 'a11', NULL, 11);

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{ren.*,ren_moved.*,ren_moved_again.*}');
\pset format aligned
-- Every Schema entry carries the table's OID (relid): a rename (or a move to
-- another schema) keeps it, so a reader can tell a renamed table from a new one.
SELECT count(DISTINCT entry->'schema'->>'namespace') AS names,
       count(DISTINCT entry->>'relid') AS relids,
       min(entry->>'relid') = 'ren_moved_again.renamed'::regclass::oid::text AS relid_is_the_oid
  FROM regress_changelog()
 WHERE entry ? 'schema' AND entry->'schema'->>'namespace' IN
       (SELECT regress_avro_name(n, r) FROM (VALUES ('ren', 't'), ('ren', 'renamed'),
               ('ren_moved', 'renamed'), ('ren_moved_again', 'renamed')) v(n, r));

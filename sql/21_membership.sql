-- The changelog: which changes are captured. A table's changes are captured
-- from the transaction that adds it on and up to the one that removes it,
-- exactly, in the middle of a stream of other transactions.
CREATE SCHEMA mem;
CREATE TABLE mem.t (id int PRIMARY KEY, v text);
CREATE TABLE mem.other (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('mem.other', import => false);

INSERT INTO mem.t VALUES (1, 'before add_table');
INSERT INTO mem.other VALUES (1, 'other 1');
SELECT pgsink.add_table('mem.t', import => false);
INSERT INTO mem.t VALUES (2, 'captured');
BEGIN;
INSERT INTO mem.other VALUES (2, 'other 2');
INSERT INTO mem.t VALUES (3, 'captured');
UPDATE mem.t SET v = 'before add_table, updated' WHERE id = 1;
COMMIT;
SELECT pgsink.remove_table('mem.t');
INSERT INTO mem.t VALUES (4, 'after remove_table');
BEGIN;
INSERT INTO mem.other VALUES (3, 'other 3');
INSERT INTO mem.t VALUES (5, 'after remove_table');
INSERT INTO mem.other VALUES (4, 'other 4');
COMMIT;
DELETE FROM mem.t WHERE id = 2;
-- Added again: captured again; the Schema entry is not repeated, since it
-- did not change.
SELECT pgsink.add_table('mem.t', import => false);
INSERT INTO mem.t VALUES (6, 'added again');
-- Added again after its shape changed while it was not captured.
SELECT pgsink.remove_table('mem.t');
ALTER TABLE mem.t ADD COLUMN w int;
SELECT pgsink.add_table('mem.t', import => false);
INSERT INTO mem.t VALUES (7, 'added again, new column', 7);

-- A captured table dropped: no error, nothing more from it, and the others
-- still flow. A new table of the same name is a new table, not captured.
CREATE TABLE mem.doomed (id int PRIMARY KEY);
SELECT pgsink.add_table('mem.doomed', import => false);
INSERT INTO mem.doomed VALUES (1);
DROP TABLE mem.doomed;
INSERT INTO mem.other VALUES (5, 'after drop');
CREATE TABLE mem.doomed (id int PRIMARY KEY);
INSERT INTO mem.doomed VALUES (2);
-- Written to and dropped in one transaction: the write, made while the table
-- was captured, is in the changelog.
CREATE TABLE mem.doomed2 (id int PRIMARY KEY);
SELECT pgsink.add_table('mem.doomed2', import => false);
BEGIN;
INSERT INTO mem.doomed2 VALUES (1);
INSERT INTO mem.other VALUES (6, 'with drop');
DROP TABLE mem.doomed2;
INSERT INTO mem.other VALUES (7, 'with drop');
COMMIT;
-- Dropped with its schema.
CREATE SCHEMA mem_doomed;
CREATE TABLE mem_doomed.t (id int PRIMARY KEY);
SELECT pgsink.add_table('mem_doomed.t', import => false);
INSERT INTO mem_doomed.t VALUES (1);
DROP SCHEMA mem_doomed CASCADE;
INSERT INTO mem.other VALUES (8, 'after drop schema');
-- Any role may log a message with any prefix, and no role but pgsink's
-- trigger may record a drop: neither makes a drop entry, or a watermark.
CREATE ROLE regress_mem_nobody;
SET ROLE regress_mem_nobody;
SELECT pg_logical_emit_message(true, 'pgsink-drop', 'mem other') IS NOT NULL AS logged;
SELECT pg_logical_emit_message(false, 'pgsink-import', 'L 1 1 0') IS NOT NULL AS logged;
INSERT INTO pgsink.dropped_tables VALUES ('mem.other'::regclass, 'mem', 'other');
RESET ROLE;
DROP ROLE regress_mem_nobody;
INSERT INTO mem.other VALUES (9, 'after forged messages');

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{mem.*,mem_doomed.*}');
\pset format aligned
SELECT state, last_error FROM pgsink.status;
SELECT "table" FROM pgsink.tables WHERE schema_name LIKE 'mem%' ORDER BY "table"::text;

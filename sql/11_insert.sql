-- The changelog: inserts.
CREATE SCHEMA ins;
CREATE TABLE ins.items (
    id int PRIMARY KEY,
    name text,
    qty int DEFAULT 1,
    price numeric(10,2),
    since date DEFAULT '2024-01-01',
    note text
);
SELECT pgsink.add_table('ins.items', import => false);

-- One row.
INSERT INTO ins.items VALUES (1, 'one', 10, 1.50, '2024-02-29', 'first');
-- Several rows in one statement.
INSERT INTO ins.items (id, name, price) VALUES (2, 'two', 2), (3, 'three', 3.333), (4, NULL, NULL);
-- Defaults, and NULLs where no default.
INSERT INTO ins.items (id) VALUES (5);
-- Several statements in one transaction: sequence counts them all.
BEGIN;
INSERT INTO ins.items (id, name) VALUES (6, 'six');
INSERT INTO ins.items (id, name) VALUES (7, 'seven'), (8, 'eight');
INSERT INTO ins.items (id, name) SELECT i, 'gen ' || i FROM generate_series(9, 11) i;
COMMIT;
-- A rolled back transaction leaves nothing; a rolled back savepoint leaves
-- only what survived it.
BEGIN;
INSERT INTO ins.items (id, name) VALUES (100, 'rolled back');
ROLLBACK;
BEGIN;
INSERT INTO ins.items (id, name) VALUES (12, 'before savepoint');
SAVEPOINT s;
INSERT INTO ins.items (id, name) VALUES (101, 'rolled back to savepoint');
ROLLBACK TO SAVEPOINT s;
INSERT INTO ins.items (id, name) VALUES (13, 'after savepoint');
COMMIT;
-- A transaction that also writes to an uncaptured table: only the captured
-- table's rows, numbered without holes.
CREATE TABLE ins.uncaptured (id int PRIMARY KEY);
BEGIN;
INSERT INTO ins.uncaptured VALUES (1);
INSERT INTO ins.items (id, name) VALUES (14, 'with uncaptured');
INSERT INTO ins.uncaptured VALUES (2);
INSERT INTO ins.items (id, name) VALUES (15, 'with uncaptured');
COMMIT;

-- Generated keys: bigserial (int8, a string), identity, DEFAULT VALUES.
CREATE TABLE ins.serials (id bigserial PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY,
                          doubled int GENERATED ALWAYS AS (n * 2) STORED,
                          at_default text DEFAULT 'dflt');
SELECT pgsink.add_table('ins.serials', import => false);
INSERT INTO ins.serials DEFAULT VALUES;
INSERT INTO ins.serials (at_default) VALUES (NULL), ('given');

-- A table added after rows were inserted: the earlier rows are not in the
-- stream (that is what imports are for), the later ones are.
CREATE TABLE ins.late (id int PRIMARY KEY, v text);
INSERT INTO ins.late VALUES (1, 'before add_table'), (2, 'before add_table');
SELECT pgsink.add_table('ins.late', import => false);
INSERT INTO ins.late VALUES (3, 'after add_table');

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{ins.*}');
\pset format aligned

-- The keys left out above: one transaction's lsn is the start of its commit
-- record, its xid the transaction's, its timestamp the commit time.
CREATE EXTENSION pg_walinspect;
CREATE TABLE ins.meta (id int PRIMARY KEY);
SELECT pgsink.add_table('ins.meta', import => false);
SELECT pg_current_wal_insert_lsn() AS lsn_before, clock_timestamp() AS time_before \gset
BEGIN;
INSERT INTO ins.meta VALUES (1), (2);
SELECT pg_current_xact_id() AS xid \gset
COMMIT;
SELECT pg_current_wal_insert_lsn() AS lsn_after, clock_timestamp() AS time_after \gset
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
SELECT count(*) AS entries,
       count(DISTINCT entry->>'lsn') AS lsns,
       count(DISTINCT entry->>'timestamp') AS timestamps,
       bool_and((entry->>'lsn')::pg_lsn BETWEEN :'lsn_before' AND :'lsn_after') AS lsn_in_range,
       bool_and((entry->>'timestamp')::timestamptz BETWEEN :'time_before' AND :'time_after')
           AS time_in_range,
       bool_and(entry->>'xid' IS NULL OR (entry->>'xid')::bigint = (:'xid'::xid8)::text::bigint % 4294967296)
           AS xid_is_the_transactions
  FROM regress_changelog()
 WHERE regress_entry_matches(entry, '{ins.meta}');
SELECT w.resource_manager, w.record_type, w.xid::text::bigint = (:'xid'::xid8)::text::bigint % 4294967296 AS same_xid
  FROM (SELECT DISTINCT (entry->>'lsn')::pg_lsn AS lsn FROM regress_changelog()
         WHERE regress_entry_matches(entry, '{ins.meta}')) e,
       LATERAL pg_get_wal_record_info(e.lsn) w;
DROP EXTENSION pg_walinspect;

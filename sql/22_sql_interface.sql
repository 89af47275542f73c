-- The output plugin through the SQL interface: a slot created with plugin
-- pgsink gives, as text rows of pg_logical_slot_get_changes(), exactly the
-- entries the stream worker writes to its sink (same lsn, xid, timestamp),
-- whatever the settings of the session that decodes (pg_regress sets
-- TimeZone and DateStyle; IntervalStyle is set here).
CREATE SCHEMA sqli;
CREATE TABLE sqli.t (id int PRIMARY KEY, v text, n numeric, at timestamptz, r tstzrange,
                     iv interval, d date);
CREATE TABLE sqli.u (id bigint PRIMARY KEY, j jsonb);
CREATE TABLE sqli.uncaptured (id int PRIMARY KEY);
SELECT pgsink.add_table('sqli.t', import => false);
SELECT pgsink.add_table('sqli.u', import => false);
SELECT 'created' FROM pg_create_logical_replication_slot('regress_sql', 'pgsink');

SET IntervalStyle = 'sql_standard';
INSERT INTO sqli.t VALUES (1, 'one', 1.5, '2024-02-29 12:00:00+00',
                           '[2024-01-01 00:00+00,2024-01-02 00:00+00)', '1 day 02:03:04', '2024-02-29'),
                          (2, 'two', NULL, NULL, NULL, NULL, NULL);
BEGIN;
UPDATE sqli.t SET v = 'ONE' WHERE id = 1;
INSERT INTO sqli.uncaptured VALUES (1);
INSERT INTO sqli.u VALUES (1, '{"a": [1, 2]}');
DELETE FROM sqli.t WHERE id = 2;
COMMIT;
ALTER TABLE sqli.t ADD COLUMN w int;
INSERT INTO sqli.t VALUES (3, 'three', 3, NULL, NULL, NULL, NULL, 3);
TRUNCATE sqli.u, sqli.uncaptured;
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;

-- Options are refused.
SELECT * FROM pg_logical_slot_peek_changes('regress_sql', NULL, NULL, 'include-xids', '1');
-- The slot's rows, without the keys that differ from run to run.
\pset format unaligned
SELECT regress_without_keys(data::json, '{timestamp,lsn,xid,relid}') AS data
  FROM pg_logical_slot_peek_changes('regress_sql', NULL, NULL);
\pset format aligned
-- Row for row the lines of the file (for these tables).
WITH s AS (SELECT row_number() OVER () AS n, data
             FROM pg_logical_slot_peek_changes('regress_sql', NULL, NULL)),
     f AS (SELECT row_number() OVER (ORDER BY lineno) AS n, raw::text AS data
             FROM regress_changelog()
            WHERE regress_entry_matches(entry, '{sqli.*}'))
SELECT count(s.n) AS slot_rows, count(f.n) AS file_lines,
       count(*) FILTER (WHERE s.data IS DISTINCT FROM f.data) AS different
  FROM s FULL JOIN f USING (n);
-- (Where they differ, which keys do.)
WITH s AS (SELECT row_number() OVER () AS n, data::jsonb AS data
             FROM pg_logical_slot_peek_changes('regress_sql', NULL, NULL)),
     f AS (SELECT row_number() OVER (ORDER BY lineno) AS n, entry AS data
             FROM regress_changelog()
            WHERE regress_entry_matches(entry, '{sqli.*}'))
SELECT n, k, s.data->k AS slot, f.data->k AS file
  FROM s JOIN f USING (n), jsonb_object_keys(s.data) k
 WHERE s.data->k IS DISTINCT FROM f.data->k;
-- get_changes consumes them; nothing is left.
SELECT count(*) FROM pg_logical_slot_get_changes('regress_sql', NULL, NULL);
SELECT count(*) FROM pg_logical_slot_get_changes('regress_sql', NULL, NULL);
-- A new session decoding later changes starts with Schema entries again.
INSERT INTO sqli.t VALUES (4, 'four', 4, NULL, NULL, NULL, NULL, 4);
\pset format unaligned
SELECT regress_without_keys(data::json, '{timestamp,lsn,xid,relid}') AS data
  FROM pg_logical_slot_get_changes('regress_sql', NULL, NULL);
\pset format aligned
SELECT pg_drop_replication_slot('regress_sql');
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
SELECT state, last_error FROM pgsink.status;

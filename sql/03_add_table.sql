-- pgsink.add_table() and pgsink.remove_table(): which relations can be
-- captured, with which key, and the messages for those that cannot.

-- A plain table with a primary key.
CREATE TABLE public.orders (id bigint PRIMARY KEY, note text);
SELECT pgsink.add_table('public.orders');
-- Adding it again is not an error: it returns false and says so.
SELECT pgsink.add_table('public.orders');
-- import => false is remembered.
CREATE TABLE public.no_import (id int PRIMARY KEY);
SELECT pgsink.add_table('public.no_import', import => false);
-- NULL arguments: the functions are STRICT.
SELECT pgsink.add_table(NULL);
SELECT pgsink.remove_table(NULL);
-- A relation that does not exist: regclass says so.
SELECT pgsink.add_table('public.no_such_table');

-- A composite primary key: key columns in the key's order, not the table's.
CREATE TABLE public.order_lines (
    line int,
    note text,
    order_id bigint,
    PRIMARY KEY (order_id, line)
);
SELECT pgsink.add_table('public.order_lines');

-- No primary key but REPLICA IDENTITY FULL: accepted (the whole old row is the
-- key), without an import, which needs a key to page through: a NOTICE says so.
CREATE TABLE public.events (at timestamptz, payload text);
ALTER TABLE public.events REPLICA IDENTITY FULL;
SELECT pgsink.add_table('public.events');

-- REPLICA IDENTITY USING INDEX on a unique index: accepted, keyed by that index.
CREATE TABLE public.people (id int PRIMARY KEY, email text NOT NULL, name text);
CREATE UNIQUE INDEX people_email ON public.people (email);
ALTER TABLE public.people REPLICA IDENTITY USING INDEX people_email;
CREATE TABLE public.tags (tag text NOT NULL, owner int NOT NULL);
CREATE UNIQUE INDEX tags_owner_tag ON public.tags (owner, tag);
ALTER TABLE public.tags REPLICA IDENTITY USING INDEX tags_owner_tag;
SELECT pgsink.add_table('public.people');
SELECT pgsink.add_table('public.tags');

-- A partitioned table (with a primary key) is accepted.
CREATE TABLE public.measurements (id bigint, taken date, value float8,
                                  PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken);
CREATE TABLE public.measurements_2024 PARTITION OF public.measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
SELECT pgsink.add_table('public.measurements');

-- Identifiers that need quoting work, and are quoted in messages.
CREATE SCHEMA "Weird Schema";
CREATE TABLE "Weird Schema"."Mixed Case" ("Key" int PRIMARY KEY, "Some Value" text);
SELECT pgsink.add_table('"Weird Schema"."Mixed Case"');
SELECT pgsink.add_table('"Weird Schema"."Mixed Case"');

-- (import_state moves on as the worker imports: only whether one was requested is stable)
SELECT "table", schema_name, table_name, key_columns, replica_identity,
       import_state <> 'not requested' AS import_requested,
       added_by = current_user AS added_by_me
  FROM pgsink.tables
 ORDER BY schema_name, table_name;

-- Refused, each with the reason and what to do instead.
\set VERBOSITY default
CREATE VIEW public.orders_view AS SELECT * FROM public.orders;
SELECT pgsink.add_table('public.orders_view');
CREATE MATERIALIZED VIEW public.orders_mv AS SELECT * FROM public.orders;
SELECT pgsink.add_table('public.orders_mv');
CREATE SEQUENCE public.a_sequence;
SELECT pgsink.add_table('public.a_sequence');
CREATE FOREIGN DATA WRAPPER regress_dummy_fdw;
CREATE SERVER regress_dummy_server FOREIGN DATA WRAPPER regress_dummy_fdw;
CREATE FOREIGN TABLE public.remote_orders (id bigint) SERVER regress_dummy_server;
SELECT pgsink.add_table('public.remote_orders');
-- (The temporary schema's name, pg_temp_N, depends on the backend: it is masked.)
CREATE TEMPORARY TABLE scratch (id int PRIMARY KEY);
DO $$
DECLARE
    msg text;
    hint text;
BEGIN
    PERFORM pgsink.add_table('scratch');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RAISE NOTICE 'ERROR: %', regexp_replace(msg, 'pg_temp_[0-9]+', 'pg_temp_N');
    RAISE NOTICE 'HINT: %', hint;
END
$$;
CREATE UNLOGGED TABLE public.cache (id int PRIMARY KEY);
SELECT pgsink.add_table('public.cache');
SELECT pgsink.add_table('pg_catalog.pg_class');
SELECT pgsink.add_table('information_schema.sql_features');
SELECT pgsink.add_table('pgsink.captured_tables');
CREATE TABLE public.no_key (a int, b text);
SELECT pgsink.add_table('public.no_key');
CREATE TABLE public.nothing (id int PRIMARY KEY);
ALTER TABLE public.nothing REPLICA IDENTITY NOTHING;
SELECT pgsink.add_table('public.nothing');
CREATE INDEX orders_note ON public.orders (note);
SELECT pgsink.add_table('public.orders_note');
CREATE TABLE "Weird Schema"."No Key" (x int);
SELECT pgsink.add_table('"Weird Schema"."No Key"');

-- None of the refused relations was recorded.
SELECT count(*) AS captured FROM pgsink.captured_tables;

-- remove_table: true once, then false with a NOTICE.
SELECT pgsink.remove_table('public.events');
SELECT pgsink.remove_table('public.events');
SELECT pgsink.remove_table('"Weird Schema"."Mixed Case"');
SELECT pgsink.remove_table('"Weird Schema"."Mixed Case"');
-- Removing a table that can never be captured is just "not captured".
SELECT pgsink.remove_table('public.orders_view');

-- The imports scheduled above run in the background: their transactions
-- would be "transactions older than this call" to the add_table() calls
-- without an import below, which say so (a NOTICE). Wait for them.
CREATE PROCEDURE pg_temp.wait_for_imports() LANGUAGE plpgsql AS $$ BEGIN
  FOR i IN 1..600 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM pgsink.import_jobs WHERE state IN ('scheduled', 'running'));
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
CALL pg_temp.wait_for_imports();

-- A table added and removed in a rolled-back transaction is unchanged.
BEGIN;
SELECT pgsink.add_table('public.events');
ROLLBACK;
SELECT count(*) AS events_captured FROM pgsink.tables WHERE table_name = 'events';

-- DROP TABLE of a captured table removes it from pgsink.tables (event trigger),
-- also when the table goes with its schema.
SELECT pgsink.add_table('"Weird Schema"."Mixed Case"');
DROP TABLE public.order_lines;
DROP SCHEMA "Weird Schema" CASCADE;
SELECT "table" FROM pgsink.tables ORDER BY "table"::text;
-- Dropping a table that was never captured is unaffected.
DROP TABLE public.no_key;

-- A captured table that loses its key: the DDL warns, pgsink.tables says so
-- until it has a key again (or REPLICA IDENTITY FULL).
CREATE TABLE public.losing_key (id int PRIMARY KEY, v text);
CALL pg_temp.wait_for_imports();
SELECT pgsink.add_table('public.losing_key', import => false);
ALTER TABLE public.losing_key DROP CONSTRAINT losing_key_pkey;
SELECT capture_state LIKE 'capturing without a key%' AS without_key FROM pgsink.tables
 WHERE "table" = 'public.losing_key'::regclass;
ALTER TABLE public.losing_key ADD PRIMARY KEY (id);
SELECT capture_state LIKE 'capturing without a key%' AS without_key FROM pgsink.tables
 WHERE "table" = 'public.losing_key'::regclass;
ALTER TABLE public.losing_key REPLICA IDENTITY NOTHING;
ALTER TABLE public.losing_key REPLICA IDENTITY FULL;
CREATE UNIQUE INDEX losing_key_v ON public.losing_key (id, v);
ALTER TABLE public.losing_key ALTER v SET NOT NULL, REPLICA IDENTITY USING INDEX losing_key_v;
DROP INDEX public.losing_key_v;
SELECT capture_state LIKE 'capturing without a key%' AS without_key FROM pgsink.tables
 WHERE "table" = 'public.losing_key'::regclass;
-- Other DDL says nothing once the key is back.
ALTER TABLE public.losing_key REPLICA IDENTITY DEFAULT;
ALTER TABLE public.losing_key ADD COLUMN w int;
DROP TABLE public.losing_key;

-- Clean up for the tests that follow.
SELECT pgsink.remove_table("table") FROM pgsink.tables ORDER BY 1;
SELECT count(*) AS captured FROM pgsink.captured_tables;
DROP TABLE public.orders, public.no_import, public.events, public.people, public.tags,
    public.measurements, public.cache, public.nothing CASCADE;
DROP SEQUENCE public.a_sequence;
DROP FOREIGN TABLE public.remote_orders;
DROP SERVER regress_dummy_server;
DROP FOREIGN DATA WRAPPER regress_dummy_fdw;

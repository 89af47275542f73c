-- OIDs that name no relation: a regclass typed as a number, or the row of a
-- table that was dropped while event triggers did not fire. The functions
-- must answer, never crash the server. (Last in the schedule, so that a
-- crash here cannot take the other tests down with it.)

-- add_table: a clean error.
SELECT pgsink.add_table(999999::oid::regclass);

-- remove_table of an OID that was never captured: false, nothing else.
SET client_min_messages = warning;
SELECT pgsink.remove_table(999999::oid::regclass);
RESET client_min_messages;

-- A captured table dropped with event triggers disabled
-- (session_replication_role = replica) leaves its row behind...
CREATE TABLE public.dropped_quietly (id int PRIMARY KEY);
SELECT pgsink.add_table('public.dropped_quietly');
SELECT 'public.dropped_quietly'::regclass::oid AS stale_oid \gset
SET session_replication_role = replica;
DROP TABLE public.dropped_quietly;
RESET session_replication_role;
SELECT count(*) AS stale_rows FROM pgsink.captured_tables WHERE relid = :stale_oid;
-- ...which pgsink.tables does not show...
SELECT count(*) AS shown FROM pgsink.tables;
-- ...and which remove_table() removes.
SELECT pgsink.remove_table(:stale_oid::oid::regclass);
SELECT count(*) AS stale_rows FROM pgsink.captured_tables WHERE relid = :stale_oid;

SELECT 'still connected' AS after_unknown_relations;

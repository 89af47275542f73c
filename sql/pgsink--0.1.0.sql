-- pgsink 0.1.0: install script. Run by CREATE EXTENSION pgsink.
\echo Use "CREATE EXTENSION pgsink" to load this file. \quit

-- Who may manage capture: superusers and members of pgsink_admin. Roles are
-- cluster-wide, so the role outlives DROP EXTENSION; it is only created here
-- when it does not exist yet.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgsink_admin') THEN
        CREATE ROLE pgsink_admin NOLOGIN;
    END IF;
END
$$;

-- The tables pgsink captures. A user catalog table: the output plugin reads
-- it with the historic snapshot of each decoded transaction, so a table added
-- by a transaction that commits at LSN X is captured from exactly X on.
CREATE TABLE pgsink.captured_tables (
    relid oid PRIMARY KEY,
    added_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    added_by name NOT NULL DEFAULT CURRENT_USER,
    import_requested boolean NOT NULL
) WITH (user_catalog_table = true);

COMMENT ON TABLE pgsink.captured_tables IS
    'Tables pgsink captures; change with pgsink.add_table() and pgsink.remove_table()';

-- Import (backfill) jobs: one per add_table(import => true) or reimport().
-- The stream worker reads each table in keyset pages over its key, one short
-- transaction per chunk, and persists the cursor once a chunk is durable.
CREATE TABLE pgsink.import_jobs (
    id bigserial PRIMARY KEY,
    relid oid NOT NULL,
    state text NOT NULL DEFAULT 'scheduled'
        CHECK (state IN ('scheduled', 'running', 'complete', 'failed', 'expired', 'cancelled')),
    cursor text[],                   -- key of the last row delivered; NULL: from the start
    cursor_key text,                 -- the key the cursor is of (columns, types, collations)
    rows_imported bigint NOT NULL DEFAULT 0,
    chunks bigint NOT NULL DEFAULT 0,
    chunk_rows integer,              -- the current, adaptive, chunk size
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at timestamptz,
    finished_at timestamptz,
    error text,
    error_count integer NOT NULL DEFAULT 0,
    next_retry_at timestamptz
);
CREATE INDEX import_jobs_unfinished ON pgsink.import_jobs (id)
    WHERE state IN ('scheduled', 'running', 'failed');

COMMENT ON TABLE pgsink.import_jobs IS
    'Import (backfill) jobs; see the view pgsink.imports';

CREATE FUNCTION pgsink.add_table(rel regclass, import boolean DEFAULT true)
RETURNS boolean
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_add_table';

COMMENT ON FUNCTION pgsink.add_table(regclass, boolean) IS
    'Start capturing the changes of a table; returns false if it already was';

CREATE FUNCTION pgsink.remove_table(rel regclass)
RETURNS boolean
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_remove_table';

COMMENT ON FUNCTION pgsink.remove_table(regclass) IS
    'Stop capturing the changes of a table; returns false if it was not captured';

CREATE FUNCTION pgsink.reimport(rel regclass)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_reimport';

COMMENT ON FUNCTION pgsink.reimport(regclass) IS
    'Schedule a new import of a captured table (expiring an unfinished one); returns its job id';

CREATE FUNCTION pgsink.cancel_import(rel regclass)
RETURNS boolean
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_cancel_import';

COMMENT ON FUNCTION pgsink.cancel_import(regclass) IS
    'Cancel the unfinished import of a table; returns false if there was none';

CREATE FUNCTION pgsink.status(
    OUT worker_pid integer,
    OUT launcher_pid integer,
    OUT state text,
    OUT database text,
    OUT slot_name text,
    OUT slot_active boolean,
    OUT confirmed_lsn pg_lsn,
    OUT lag_bytes bigint,
    OUT retained_wal_bytes bigint,
    OUT entries_delivered bigint,
    OUT transactions_delivered bigint,
    OUT last_commit_time timestamptz,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT worker_started_at timestamptz,
    OUT worker_restarts integer,
    OUT next_start_at timestamptz,
    OUT sink_retry_at timestamptz,
    OUT config_problem text)
RETURNS record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_status';

COMMENT ON FUNCTION pgsink.status() IS
    'State of the pgsink stream worker and its replication slot';

CREATE VIEW pgsink.status AS SELECT * FROM pgsink.status();

CREATE FUNCTION pgsink.wait_for_delivery(timeout interval DEFAULT '30 seconds')
RETURNS pg_lsn
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_wait_for_delivery';

COMMENT ON FUNCTION pgsink.wait_for_delivery(interval) IS
    'Wait until every transaction committed before the call is durable in the sink';

-- Every import job, with its progress.
CREATE VIEW pgsink.imports AS
SELECT j.id,
       j.relid::regclass AS "table",
       j.state,
       j.cursor,
       j.rows_imported,
       j.chunks,
       j.chunk_rows,
       greatest(r.reltuples, 0)::bigint AS estimated_rows,
       CASE WHEN j.state = 'complete' THEN 100.0
            WHEN r.reltuples > 0
            THEN least(99.9, round(100.0 * j.rows_imported / r.reltuples::numeric, 1))
       END AS percent,
       j.created_at,
       j.started_at,
       j.finished_at,
       -- An unfinished job also waits on the stream: while the sink fails, the
       -- worker failed and restarts later, or the server is misconfigured,
       -- that is its error (and next try).
       CASE WHEN j.state NOT IN ('scheduled', 'running') THEN j.error
            WHEN s.state = 'sink retrying'
            THEN 'the sink is failing: ' || coalesce(s.last_error, 'unknown error')
            WHEN s.state = 'backing off'
            THEN 'the stream worker failed: ' || coalesce(s.last_error, 'unknown error')
            WHEN s.state = 'misconfigured'
            THEN 'the stream worker cannot run: '
                 || coalesce(s.config_problem, s.last_error, 'misconfigured')
            ELSE j.error
       END AS error,
       j.error_count,
       CASE WHEN j.state NOT IN ('scheduled', 'running') THEN j.next_retry_at
            WHEN s.state = 'sink retrying' THEN s.sink_retry_at
            WHEN s.state = 'backing off' THEN s.next_start_at
            ELSE j.next_retry_at
       END AS next_retry_at
  FROM pgsink.import_jobs j
  LEFT JOIN pg_catalog.pg_class r ON r.oid = j.relid
 CROSS JOIN pgsink.status() s;

COMMENT ON VIEW pgsink.imports IS 'Import (backfill) jobs and their progress';

-- Every captured table, its key and its state.
CREATE VIEW pgsink.tables AS
SELECT c.relid::regclass AS "table",
       n.nspname AS schema_name,
       r.relname AS table_name,
       c.added_at,
       c.added_by,
       (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)
          FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indexrelid = (SELECT i2.indexrelid FROM pg_catalog.pg_index i2
                                WHERE i2.indrelid = c.relid
                                  AND (i2.indisprimary OR (r.relreplident = 'i' AND i2.indisreplident))
                                ORDER BY (r.relreplident = 'i' AND i2.indisreplident) DESC,
                                         i2.indisprimary DESC
                                LIMIT 1)) AS key_columns,
       CASE r.relreplident WHEN 'd' THEN 'default' WHEN 'f' THEN 'full'
                           WHEN 'i' THEN 'index' WHEN 'n' THEN 'nothing' END AS replica_identity,
       CASE WHEN s.state = 'streaming' THEN 'capturing' ELSE 'paused: ' || s.state END
           AS capture_state,
       coalesce((SELECT j.state FROM pgsink.import_jobs j
                  WHERE j.relid = c.relid ORDER BY j.id DESC LIMIT 1),
                'not requested') AS import_state
  FROM pgsink.captured_tables c
  JOIN pg_catalog.pg_class r ON r.oid = c.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
  CROSS JOIN pgsink.status() s;

COMMENT ON VIEW pgsink.tables IS 'Tables pgsink captures, with their keys and state';

-- A dropped table stops being captured: its membership row goes with it.
CREATE FUNCTION pgsink._forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgsink.captured_tables c
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objsubid = 0
       AND d.objid = c.relid;
    UPDATE pgsink.import_jobs j
       SET state = 'expired', finished_at = pg_catalog.now(),
           error = 'the table was dropped'
      FROM pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objsubid = 0
       AND d.objid = j.relid
       AND j.state IN ('scheduled', 'running', 'failed');
END
$$;

CREATE EVENT TRIGGER pgsink_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION pgsink._forget_dropped_tables();

-- Exercises the C++/PostgreSQL error boundary (regression tests).
CREATE FUNCTION pgsink._selftest_boundary(mode text)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_selftest_boundary';

-- Privileges: nothing for PUBLIC; pgsink_admin manages capture; pg_monitor
-- (and pgsink_admin) may watch.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgsink FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgsink FROM PUBLIC;
GRANT USAGE ON SCHEMA pgsink TO pgsink_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION pgsink.add_table(regclass, boolean) TO pgsink_admin;
GRANT EXECUTE ON FUNCTION pgsink.remove_table(regclass) TO pgsink_admin;
GRANT EXECUTE ON FUNCTION pgsink.reimport(regclass) TO pgsink_admin;
GRANT EXECUTE ON FUNCTION pgsink.cancel_import(regclass) TO pgsink_admin;
GRANT EXECUTE ON FUNCTION pgsink.status() TO pgsink_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION pgsink.wait_for_delivery(interval) TO pgsink_admin;
GRANT SELECT ON pgsink.status, pgsink.tables, pgsink.imports TO pgsink_admin, pg_monitor;

-- pgsink 0.1.0 -> 0.2.0. Also run by CREATE EXTENSION pgsink, after the
-- 0.1.0 script: every install takes the upgrade path.
\echo Use "ALTER EXTENSION pgsink UPDATE TO '0.2.0'" to load this file. \quit

-- Never read: whether a table was imported is in pgsink.import_jobs.
ALTER TABLE pgsink.captured_tables DROP COLUMN import_requested;

-- An import scheduled by add_table() waits for the transactions that were
-- running when add_table() was called: their changes made before the call
-- were not captured, and the import's snapshot must see their rows. The
-- first transaction id that started after the call (a 64-bit xid); NULL:
-- nothing to wait for.
ALTER TABLE pgsink.import_jobs ADD COLUMN wait_for_xid bigint;

-- The import cursor holds key values: show it only to roles that may read
-- every row of the table (SELECT, and no row-level security in their way).
CREATE OR REPLACE VIEW pgsink.imports AS
SELECT j.id,
       j.relid::regclass AS "table",
       j.state,
       CASE WHEN pg_catalog.has_table_privilege(j.relid, 'SELECT')
                 AND NOT pg_catalog.row_security_active(j.relid)
            THEN j.cursor
       END AS cursor,
       j.rows_imported,
       j.chunks,
       j.chunk_rows,
       greatest(r.reltuples, 0)::bigint AS estimated_rows,
       CASE WHEN j.state OPERATOR(pg_catalog.=) 'complete' THEN 100.0
            WHEN r.reltuples OPERATOR(pg_catalog.>) 0
            THEN least(99.9, pg_catalog.round(100.0 OPERATOR(pg_catalog.*) j.rows_imported
                                              OPERATOR(pg_catalog./) r.reltuples::numeric, 1))
       END AS percent,
       j.created_at,
       j.started_at,
       j.finished_at,
       -- An unfinished job also waits on the stream: while the sink fails, the
       -- worker failed and restarts later, or the server is misconfigured,
       -- that is its error (and next try).
       CASE WHEN j.state NOT IN ('scheduled', 'running') THEN j.error
            WHEN s.state OPERATOR(pg_catalog.=) 'sink retrying'
            THEN 'the sink is failing: ' OPERATOR(pg_catalog.||)
                 coalesce(s.last_error, 'unknown error')
            WHEN s.state OPERATOR(pg_catalog.=) 'backing off'
            THEN 'the stream worker failed: ' OPERATOR(pg_catalog.||)
                 coalesce(s.last_error, 'unknown error')
            WHEN s.state OPERATOR(pg_catalog.=) 'misconfigured'
            THEN 'the stream worker cannot run: ' OPERATOR(pg_catalog.||)
                 coalesce(s.config_problem, s.last_error, 'misconfigured')
            ELSE j.error
       END AS error,
       j.error_count,
       CASE WHEN j.state NOT IN ('scheduled', 'running') THEN j.next_retry_at
            WHEN s.state OPERATOR(pg_catalog.=) 'sink retrying' THEN s.sink_retry_at
            WHEN s.state OPERATOR(pg_catalog.=) 'backing off' THEN s.next_start_at
            ELSE j.next_retry_at
       END AS next_retry_at
  FROM pgsink.import_jobs j
  LEFT JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) j.relid
 CROSS JOIN pgsink.status() s;

-- A captured table that loses its key (its primary key dropped, REPLICA
-- IDENTITY set to NOTHING, its replica identity index dropped) can no longer
-- say which row an update or a delete changed. Warn at the DDL that did it;
-- pgsink.tables shows it until it is fixed.
CREATE FUNCTION pgsink._keyless_captured_tables()
RETURNS SETOF regclass
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.relid::pg_catalog.regclass
      FROM pgsink.captured_tables c
      JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) c.relid
     WHERE r.relreplident OPERATOR(pg_catalog.<>) 'f'
       AND NOT EXISTS (
           SELECT FROM pg_catalog.pg_index i
            WHERE i.indrelid OPERATOR(pg_catalog.=) c.relid
              AND ((r.relreplident OPERATOR(pg_catalog.=) 'd' AND i.indisprimary)
                   OR (r.relreplident OPERATOR(pg_catalog.=) 'i' AND i.indisreplident)))
$$;

CREATE FUNCTION pgsink._warn_keyless_tables()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
BEGIN
    -- ALTER TABLE: the tables it altered; DROP INDEX: any captured table.
    FOR t IN SELECT k FROM pgsink._keyless_captured_tables() k
              WHERE TG_TAG OPERATOR(pg_catalog.<>) 'ALTER TABLE'
                 OR k::pg_catalog.oid IN (SELECT c.objid
                                            FROM pg_catalog.pg_event_trigger_ddl_commands() c)
    LOOP
        RAISE WARNING 'pgsink captures table %, which has no key any more', t
            USING DETAIL = 'Its updates carry no old key and its deletes carry nothing: '
                           'sinks cannot tell which row they changed.',
                  HINT = 'Add a primary key again (or a replica identity index), or set '
                         'ALTER TABLE ... REPLICA IDENTITY FULL.';
    END LOOP;
END
$$;

CREATE EVENT TRIGGER pgsink_warn_keyless_tables ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'DROP INDEX')
    EXECUTE FUNCTION pgsink._warn_keyless_tables();

REVOKE ALL ON FUNCTION pgsink._keyless_captured_tables() FROM PUBLIC;
-- pgsink.tables calls it as the querying role.
GRANT EXECUTE ON FUNCTION pgsink._keyless_captured_tables() TO pgsink_admin, pg_monitor;
REVOKE ALL ON FUNCTION pgsink._warn_keyless_tables() FROM PUBLIC;

CREATE OR REPLACE VIEW pgsink.tables AS
SELECT c.relid::regclass AS "table",
       n.nspname AS schema_name,
       r.relname AS table_name,
       c.added_at,
       c.added_by,
       (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)
          FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                                       AND a.attnum OPERATOR(pg_catalog.=) k.attnum
         WHERE i.indexrelid OPERATOR(pg_catalog.=) (
               SELECT i2.indexrelid FROM pg_catalog.pg_index i2
                WHERE i2.indrelid OPERATOR(pg_catalog.=) c.relid
                  AND (i2.indisprimary OR (r.relreplident OPERATOR(pg_catalog.=) 'i'
                                           AND i2.indisreplident))
                ORDER BY (r.relreplident OPERATOR(pg_catalog.=) 'i' AND i2.indisreplident) DESC,
                         i2.indisprimary DESC
                LIMIT 1)) AS key_columns,
       CASE r.relreplident WHEN 'd' THEN 'default' WHEN 'f' THEN 'full'
                           WHEN 'i' THEN 'index' WHEN 'n' THEN 'nothing' END AS replica_identity,
       CASE WHEN c.relid IN (SELECT * FROM pgsink._keyless_captured_tables())
            THEN 'capturing without a key: add a primary key or set REPLICA IDENTITY FULL'
            WHEN s.state OPERATOR(pg_catalog.=) 'streaming' THEN 'capturing'
            ELSE 'paused: ' OPERATOR(pg_catalog.||) s.state
       END AS capture_state,
       coalesce((SELECT j.state FROM pgsink.import_jobs j
                  WHERE j.relid OPERATOR(pg_catalog.=) c.relid ORDER BY j.id DESC LIMIT 1),
                'not requested') AS import_state
  FROM pgsink.captured_tables c
  JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) c.relid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.relnamespace
  CROSS JOIN pgsink.status() s;

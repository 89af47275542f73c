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

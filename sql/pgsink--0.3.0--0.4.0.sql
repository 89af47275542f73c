-- pgsink 0.3.0 -> 0.4.0: pause and resume, counters per table, lag in
-- seconds, errors and retries per sink, and metrics in Prometheus' text
-- format. Also run by CREATE EXTENSION pgsink: every install takes the
-- upgrade path.
\echo Use "ALTER EXTENSION pgsink UPDATE TO '0.4.0'" to load this file. \quit

-- pgsink.resync(): an import that opens and closes a resync in the
-- changelog ("resync_start" at its first chunk's low watermark, "resync_end"
-- after its last chunk's rows, with resync_since: where it opened, saved once
-- that chunk is durable).
ALTER TABLE pgsink.import_jobs ADD COLUMN resync boolean NOT NULL DEFAULT false;
ALTER TABLE pgsink.import_jobs ADD COLUMN resync_since pg_lsn;

-- pgsink.status() gains lag_seconds and paused_since; the views on it are
-- made again (pgsink.tables with counters, pgsink.imports with resync).
DROP VIEW pgsink.tables;
DROP VIEW pgsink.imports;
DROP VIEW pgsink.status;
DROP FUNCTION pgsink.status();

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
    OUT config_problem text,
    OUT lag_seconds double precision,
    OUT paused_since timestamptz)
RETURNS record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_status';

COMMENT ON FUNCTION pgsink.status() IS
    'State of the pgsink stream worker and its replication slot';

CREATE VIEW pgsink.status AS SELECT * FROM pgsink.status();

CREATE FUNCTION pgsink.table_counts(
    OUT relid oid,
    OUT entries bigint,
    OUT bytes bigint,
    OUT last_change_time timestamptz)
RETURNS SETOF record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_table_counts';

COMMENT ON FUNCTION pgsink.table_counts() IS
    'Entries and bytes the stream worker put in the spool per table since the server started (relid 0: tables beyond the 511 counted apart)';

CREATE VIEW pgsink.imports AS
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
       END AS next_retry_at,
       j.resync
  FROM pgsink.import_jobs j
  LEFT JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) j.relid
 CROSS JOIN pgsink.status() s;

CREATE VIEW pgsink.tables AS
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
            WHEN s.state OPERATOR(pg_catalog.=) 'paused'
            THEN 'paused: pgsink.pause() since ' OPERATOR(pg_catalog.||) s.paused_since
            ELSE 'paused: ' OPERATOR(pg_catalog.||) s.state
       END AS capture_state,
       coalesce((SELECT j.state FROM pgsink.import_jobs j
                  WHERE j.relid OPERATOR(pg_catalog.=) c.relid ORDER BY j.id DESC LIMIT 1),
                'not requested') AS import_state,
       coalesce(t.entries, 0) AS entries_captured,
       coalesce(t.bytes, 0) AS bytes_captured,
       t.last_change_time
  FROM pgsink.captured_tables c
  JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) c.relid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.relnamespace
  CROSS JOIN pgsink.status() s
  LEFT JOIN pgsink.table_counts() t ON t.relid OPERATOR(pg_catalog.=) c.relid;

COMMENT ON VIEW pgsink.imports IS 'Import (backfill) jobs and their progress';
COMMENT ON VIEW pgsink.tables IS 'Tables pgsink captures, with their keys, state and counters';

-- pgsink.sinks() gains errors, retries and paused_since.
DROP VIEW pgsink.sinks;
DROP FUNCTION pgsink.sinks();

CREATE FUNCTION pgsink.sinks(
    OUT sink text,
    OUT state text,
    OUT pid integer,
    OUT cursor_offset bigint,
    OUT delivered_lsn pg_lsn,
    OUT last_delivered_commit_time timestamptz,
    OUT lag_entries bigint,
    OUT lag_bytes bigint,
    OUT lag_seconds double precision,
    OUT entries_delivered bigint,
    OUT bytes_delivered bigint,
    OUT dead_letters bigint,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT next_retry_at timestamptz,
    OUT worker_started_at timestamptz,
    OUT worker_restarts integer,
    OUT next_start_at timestamptz,
    OUT errors bigint,
    OUT retries bigint,
    OUT paused_since timestamptz)
RETURNS SETOF record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_sinks';

COMMENT ON FUNCTION pgsink.sinks() IS
    'One row per sink in pgsink.sink: its delivery worker, cursor, lag and last error';

CREATE VIEW pgsink.sinks AS SELECT * FROM pgsink.sinks();

-- Resync one captured table, or every one with a key (NULL): re-import it
-- between a "resync_start" and a "resync_end" entry, so that every sink ends
-- up holding exactly the table's rows, those deleted while changes were lost
-- removed (the changelog's resync rule). Returns the job ids.
CREATE FUNCTION pgsink._resync_table(rel regclass)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_resync_table';

CREATE FUNCTION pgsink.resync(rel regclass DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
BEGIN
    IF rel IS NOT NULL THEN
        RETURN NEXT pgsink._resync_table(rel);
        RETURN;
    END IF;
    FOR t IN SELECT v."table" FROM pgsink.tables v ORDER BY v."table"::oid LOOP
        IF (SELECT key_columns IS NULL FROM pgsink.tables v WHERE v."table" = t) THEN
            RAISE NOTICE 'table % has no key to page through: not resynced', t
                USING HINT = 'Add a primary key (or a replica identity index), then call pgsink.resync() for it.';
        ELSE
            RETURN NEXT pgsink._resync_table(t);
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION pgsink.resync(regclass) IS
    'Re-import a captured table (or all) so that every sink holds exactly its rows, removing those deleted while changes were lost';

-- A dropped captured table: the changelog gets a "drop" entry in the
-- dropping transaction, so sinks can drop or archive their copy. The event
-- trigger records the drop here, and the decoder turns the insert into the
-- entry; only pgsink writes this table (a logical message would do, but any
-- role may write one with any prefix).
CREATE TABLE pgsink.dropped_tables (
    relid oid NOT NULL,
    schema_name name NOT NULL,
    table_name name NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    dropped_by name NOT NULL DEFAULT session_user
);

COMMENT ON TABLE pgsink.dropped_tables IS
    'Captured tables that were dropped (each also a drop entry in the changelog)';

CREATE OR REPLACE FUNCTION pgsink._forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO pgsink.dropped_tables (relid, schema_name, table_name)
    SELECT d.objid, d.schema_name, d.object_name
      FROM pg_catalog.pg_event_trigger_dropped_objects() d
      JOIN pgsink.captured_tables c ON c.relid OPERATOR(pg_catalog.=) d.objid
     WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objsubid OPERATOR(pg_catalog.=) 0;
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

-- Pause and resume: decoding (no sink), or one sink's delivery.
CREATE FUNCTION pgsink.pause(sink text DEFAULT NULL)
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_pause';

COMMENT ON FUNCTION pgsink.pause(text) IS
    'Pause decoding (no sink: the slot keeps the WAL) or a sink''s delivery (the spool keeps its entries) until pgsink.resume(); survives restarts. True if it was not paused';

CREATE FUNCTION pgsink.resume(sink text DEFAULT NULL)
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_resume';

COMMENT ON FUNCTION pgsink.resume(text) IS
    'Resume what pgsink.pause() paused. True if it was paused';

-- A label value in Prometheus' text format: backslash, double quote and
-- newline escaped (table names may hold any of them).
CREATE FUNCTION pgsink._prometheus_label(value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
SELECT replace(replace(replace(value, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
$$;

-- Every metric in Prometheus' text exposition format (version 0.0.4), for
-- a scraper: through pgsink.metrics_listen, or postgres_exporter's custom
-- queries. Counters count since the server started.
CREATE FUNCTION pgsink.metrics()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
WITH st AS (SELECT * FROM pgsink.status()),
sk AS (SELECT * FROM pgsink.sinks()),
sp AS (SELECT * FROM pgsink.spool()),
tc AS (SELECT CASE WHEN t.relid = 0 THEN '(other tables)' ELSE t.relid::regclass::text END AS tbl,
              t.entries, t.bytes, t.last_change_time
         FROM pgsink.table_counts() t
        WHERE t.relid = 0 OR EXISTS (SELECT FROM pg_class c WHERE c.oid = t.relid)),
im AS (SELECT DISTINCT ON (i."table") i."table"::text AS tbl, i.state, i.rows_imported,
              i.estimated_rows
         FROM pgsink.imports i
        WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = i."table")
        ORDER BY i."table", i.id DESC),
dl AS (SELECT sink, sum(entries) AS entries FROM pgsink.dead_letter_counts GROUP BY sink),
families(ord, family, kind, help) AS (VALUES
  (1, 'pgsink_up', 'gauge', 'Whether the stream worker runs (1) or not (0).'),
  (2, 'pgsink_state', 'gauge', 'The stream worker''s state: 1 for the current one.'),
  (3, 'pgsink_paused', 'gauge', 'Whether decoding is paused by pgsink.pause() (1) or not (0).'),
  (4, 'pgsink_entries_total', 'counter', 'Changelog entries put in the spool (durable).'),
  (5, 'pgsink_transactions_total', 'counter', 'Transactions put in the spool (durable).'),
  (6, 'pgsink_worker_restarts_total', 'counter', 'Restarts of the stream worker after a failure.'),
  (7, 'pgsink_slot_lag_bytes', 'gauge', 'WAL flushed but not yet confirmed by pgsink''s replication slot, in bytes.'),
  (8, 'pgsink_retained_wal_bytes', 'gauge', 'WAL the replication slot keeps from removal, in bytes.'),
  (9, 'pgsink_lag_seconds', 'gauge', 'Decoding lag: 0 when caught up, else at most the age of the last transaction put in the spool.'),
  (10, 'pgsink_last_commit_timestamp_seconds', 'gauge', 'Commit time of the last transaction put in the spool (Unix time).'),
  (11, 'pgsink_spool_bytes', 'gauge', 'Disk used by the spool''s segments, in bytes.'),
  (12, 'pgsink_spool_segments', 'gauge', 'Segment files in the spool.'),
  (13, 'pgsink_spool_max_bytes', 'gauge', 'pgsink.spool_max_size in bytes (0: no limit).'),
  (14, 'pgsink_spool_full', 'gauge', 'Whether the spool reached pgsink.spool_max_size and decoding waits (1) or not (0).'),
  (15, 'pgsink_spool_oldest_commit_timestamp_seconds', 'gauge', 'Commit time of the oldest transaction the spool retains (Unix time).'),
  (20, 'pgsink_sink_up', 'gauge', 'Whether the sink''s delivery worker runs (1) or not (0).'),
  (21, 'pgsink_sink_state', 'gauge', 'The sink''s state: 1 for the current one.'),
  (22, 'pgsink_sink_paused', 'gauge', 'Whether the sink''s delivery is paused by pgsink.pause() (1) or not (0).'),
  (23, 'pgsink_sink_entries_delivered_total', 'counter', 'Entries the sink acknowledged.'),
  (24, 'pgsink_sink_bytes_delivered_total', 'counter', 'Bytes of entries the sink acknowledged.'),
  (25, 'pgsink_sink_errors_total', 'counter', 'Failed delivery attempts and delivery worker failures.'),
  (26, 'pgsink_sink_retries_total', 'counter', 'Delivery attempts made again after a retryable failure.'),
  (27, 'pgsink_sink_dead_letters_total', 'counter', 'Entries the sink refused, parked in pgsink.dead_letters.'),
  (28, 'pgsink_sink_dead_letters', 'gauge', 'Entries of the sink waiting in pgsink.dead_letters.'),
  (29, 'pgsink_sink_lag_bytes', 'gauge', 'Spool bytes the sink has not delivered yet.'),
  (30, 'pgsink_sink_lag_entries', 'gauge', 'Spool entries the sink has not delivered yet.'),
  (31, 'pgsink_sink_lag_seconds', 'gauge', 'Age of the oldest change the sink has not delivered (at most), 0 when caught up.'),
  (32, 'pgsink_sink_last_delivered_commit_timestamp_seconds', 'gauge', 'Commit time of the newest change the sink delivered (Unix time).'),
  (33, 'pgsink_sink_worker_restarts_total', 'counter', 'Restarts of the sink''s delivery worker after a failure.'),
  (40, 'pgsink_table_entries_total', 'counter', 'Entries of the table put in the spool.'),
  (41, 'pgsink_table_bytes_total', 'counter', 'Bytes of entries of the table put in the spool.'),
  (42, 'pgsink_table_last_change_timestamp_seconds', 'gauge', 'Commit time of the table''s last change put in the spool (Unix time).'),
  (50, 'pgsink_import_rows_imported', 'gauge', 'Rows the table''s latest import has read.'),
  (51, 'pgsink_import_estimated_rows', 'gauge', 'Rows the table holds, as last estimated by PostgreSQL (reltuples).'),
  (52, 'pgsink_import_state', 'gauge', 'The state of the table''s latest import: 1 for the current one.')),
samples(family, labels, value) AS (
  SELECT 'pgsink_up', '', (st.worker_pid IS NOT NULL)::int::text FROM st
  UNION ALL SELECT 'pgsink_state', format('{state="%s"}', pgsink._prometheus_label(st.state)), '1' FROM st
  UNION ALL SELECT 'pgsink_paused', '', (st.paused_since IS NOT NULL)::int::text FROM st
  UNION ALL SELECT 'pgsink_entries_total', '', st.entries_delivered::text FROM st
  UNION ALL SELECT 'pgsink_transactions_total', '', st.transactions_delivered::text FROM st
  UNION ALL SELECT 'pgsink_worker_restarts_total', '', st.worker_restarts::text FROM st
  UNION ALL SELECT 'pgsink_slot_lag_bytes', '', st.lag_bytes::text FROM st WHERE st.lag_bytes IS NOT NULL
  UNION ALL SELECT 'pgsink_retained_wal_bytes', '', st.retained_wal_bytes::text FROM st WHERE st.retained_wal_bytes IS NOT NULL
  UNION ALL SELECT 'pgsink_lag_seconds', '', st.lag_seconds::text FROM st WHERE st.lag_seconds IS NOT NULL
  UNION ALL SELECT 'pgsink_last_commit_timestamp_seconds', '', extract(epoch FROM st.last_commit_time)::text FROM st WHERE st.last_commit_time IS NOT NULL
  UNION ALL SELECT 'pgsink_spool_bytes', '', sp.bytes::text FROM sp WHERE sp.bytes IS NOT NULL
  UNION ALL SELECT 'pgsink_spool_segments', '', sp.segments::text FROM sp WHERE sp.segments IS NOT NULL
  UNION ALL SELECT 'pgsink_spool_max_bytes', '', coalesce(sp.max_bytes, 0)::text FROM sp
  UNION ALL SELECT 'pgsink_spool_full', '', coalesce(sp."full", false)::int::text FROM sp
  UNION ALL SELECT 'pgsink_spool_oldest_commit_timestamp_seconds', '', extract(epoch FROM sp.oldest_commit_time)::text FROM sp WHERE sp.oldest_commit_time IS NOT NULL
  UNION ALL SELECT 'pgsink_sink_up', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), (sk.pid IS NOT NULL)::int::text FROM sk
  UNION ALL SELECT 'pgsink_sink_state', format('{sink="%s",state="%s"}', pgsink._prometheus_label(sk.sink), pgsink._prometheus_label(sk.state)), '1' FROM sk
  UNION ALL SELECT 'pgsink_sink_paused', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), (sk.paused_since IS NOT NULL)::int::text FROM sk
  UNION ALL SELECT 'pgsink_sink_entries_delivered_total', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.entries_delivered::text FROM sk
  UNION ALL SELECT 'pgsink_sink_bytes_delivered_total', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.bytes_delivered::text FROM sk
  UNION ALL SELECT 'pgsink_sink_errors_total', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.errors::text FROM sk
  UNION ALL SELECT 'pgsink_sink_retries_total', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.retries::text FROM sk
  UNION ALL SELECT 'pgsink_sink_dead_letters_total', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.dead_letters::text FROM sk
  UNION ALL SELECT 'pgsink_sink_dead_letters', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), coalesce(dl.entries, 0)::text FROM sk LEFT JOIN dl ON dl.sink = sk.sink
  UNION ALL SELECT 'pgsink_sink_lag_bytes', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.lag_bytes::text FROM sk WHERE sk.lag_bytes IS NOT NULL
  UNION ALL SELECT 'pgsink_sink_lag_entries', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.lag_entries::text FROM sk WHERE sk.lag_entries IS NOT NULL
  UNION ALL SELECT 'pgsink_sink_lag_seconds', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.lag_seconds::text FROM sk WHERE sk.lag_seconds IS NOT NULL
  UNION ALL SELECT 'pgsink_sink_last_delivered_commit_timestamp_seconds', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), extract(epoch FROM sk.last_delivered_commit_time)::text FROM sk WHERE sk.last_delivered_commit_time IS NOT NULL
  UNION ALL SELECT 'pgsink_sink_worker_restarts_total', format('{sink="%s"}', pgsink._prometheus_label(sk.sink)), sk.worker_restarts::text FROM sk
  UNION ALL SELECT 'pgsink_table_entries_total', format('{table="%s"}', pgsink._prometheus_label(tc.tbl)), tc.entries::text FROM tc
  UNION ALL SELECT 'pgsink_table_bytes_total', format('{table="%s"}', pgsink._prometheus_label(tc.tbl)), tc.bytes::text FROM tc
  UNION ALL SELECT 'pgsink_table_last_change_timestamp_seconds', format('{table="%s"}', pgsink._prometheus_label(tc.tbl)), extract(epoch FROM tc.last_change_time)::text FROM tc WHERE tc.last_change_time IS NOT NULL
  UNION ALL SELECT 'pgsink_import_rows_imported', format('{table="%s"}', pgsink._prometheus_label(im.tbl)), im.rows_imported::text FROM im
  UNION ALL SELECT 'pgsink_import_estimated_rows', format('{table="%s"}', pgsink._prometheus_label(im.tbl)), im.estimated_rows::text FROM im
  UNION ALL SELECT 'pgsink_import_state', format('{table="%s",state="%s"}', pgsink._prometheus_label(im.tbl), pgsink._prometheus_label(im.state)), '1' FROM im)
SELECT string_agg(format(E'# HELP %s %s\n# TYPE %s %s\n', f.family, f.help, f.family, f.kind)
                  || coalesce(s.lines, ''), '' ORDER BY f.ord)
  FROM families f
  LEFT JOIN (SELECT family, string_agg(family || labels || ' ' || value || E'\n', ''
                                       ORDER BY labels) AS lines
               FROM samples GROUP BY family) s ON s.family = f.family
$$;

COMMENT ON FUNCTION pgsink.metrics() IS
    'pgsink''s metrics in Prometheus'' text exposition format';

REVOKE ALL ON FUNCTION pgsink.status(), pgsink.sinks(), pgsink.table_counts(),
    pgsink.pause(text), pgsink.resume(text), pgsink._prometheus_label(text),
    pgsink.metrics() FROM PUBLIC;
REVOKE ALL ON pgsink.status, pgsink.tables, pgsink.imports, pgsink.sinks,
    pgsink.dropped_tables FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgsink.status(), pgsink.sinks(), pgsink.table_counts(),
    pgsink._prometheus_label(text), pgsink.metrics() TO pgsink_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION pgsink.pause(text), pgsink.resume(text) TO pgsink_admin;
REVOKE ALL ON FUNCTION pgsink._resync_table(regclass), pgsink.resync(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgsink._resync_table(regclass), pgsink.resync(regclass) TO pgsink_admin;
GRANT SELECT ON pgsink.status, pgsink.tables, pgsink.imports, pgsink.sinks,
    pgsink.dropped_tables TO pgsink_admin, pg_monitor;

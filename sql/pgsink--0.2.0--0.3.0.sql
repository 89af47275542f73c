-- pgsink 0.2.0 -> 0.3.0: the spool. The stream worker appends to a durable
-- local changelog (pgsink.spool_directory); one delivery worker per sink
-- (pgsink.sink is a list) reads it from its own cursor. Also run by CREATE
-- EXTENSION pgsink: every install takes the upgrade path.
\echo Use "ALTER EXTENSION pgsink UPDATE TO '0.3.0'" to load this file. \quit

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
    OUT next_start_at timestamptz)
RETURNS SETOF record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_sinks';

COMMENT ON FUNCTION pgsink.sinks() IS
    'One row per sink in pgsink.sink: its delivery worker, cursor, lag and last error';

CREATE VIEW pgsink.sinks AS SELECT * FROM pgsink.sinks();

CREATE FUNCTION pgsink.spool(
    OUT directory text,
    OUT bytes bigint,
    OUT segments integer,
    OUT max_bytes bigint,
    OUT "full" boolean,
    OUT full_since timestamptz,
    OUT retention interval,
    OUT oldest_offset bigint,
    OUT oldest_lsn pg_lsn,
    OUT oldest_commit_time timestamptz,
    OUT durable_offset bigint,
    OUT durable_entries bigint,
    OUT durable_lsn pg_lsn,
    OUT newest_commit_time timestamptz)
RETURNS record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'pgsink_spool';

COMMENT ON FUNCTION pgsink.spool() IS
    'The spool: disk use, the oldest position retained and the durable end';

CREATE VIEW pgsink.spool AS SELECT * FROM pgsink.spool();

CREATE FUNCTION pgsink.rewind_sink(sink text, since timestamptz)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_rewind_sink_time';

COMMENT ON FUNCTION pgsink.rewind_sink(text, timestamptz) IS
    'Deliver again to a sink every entry the spool holds committed at or after since '
    '(''-infinity'': the oldest retained); returns the new cursor';

CREATE FUNCTION pgsink.rewind_sink_to_lsn(sink text, lsn pg_lsn)
RETURNS bigint
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgsink_rewind_sink_lsn';

COMMENT ON FUNCTION pgsink.rewind_sink_to_lsn(text, pg_lsn) IS
    'Deliver again to a sink every entry the spool holds whose lsn is at or after lsn; '
    'returns the new cursor';

COMMENT ON FUNCTION pgsink.wait_for_delivery(interval) IS
    'Wait until every transaction committed before the call is durable in every sink';

REVOKE ALL ON FUNCTION pgsink.sinks(), pgsink.spool(),
    pgsink.rewind_sink(text, timestamptz), pgsink.rewind_sink_to_lsn(text, pg_lsn) FROM PUBLIC;
REVOKE ALL ON pgsink.sinks, pgsink.spool FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgsink.sinks(), pgsink.spool() TO pgsink_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION pgsink.rewind_sink(text, timestamptz),
    pgsink.rewind_sink_to_lsn(text, pg_lsn) TO pgsink_admin;
GRANT SELECT ON pgsink.sinks, pgsink.spool TO pgsink_admin, pg_monitor;

-- Entries a sink rejected for good (an HTTP 4xx other than 408 and 429),
-- isolated by bisecting their batch, parked here before the sink's cursor
-- moves past them (pgsink.on_rejection = 'dead_letter'). They hold row
-- values: only superusers read this table; others see the counts.
CREATE TABLE pgsink.dead_letters (
    id bigserial PRIMARY KEY,
    sink text NOT NULL,
    entry text NOT NULL,                 -- the changelog entry, as it was sent
    entry_key text NOT NULL,             -- SHA-256 of entry: parked once per sink
    lsn pg_lsn,
    "table" text,                        -- schema.table of the entry
    http_status integer,
    response text,                       -- the start of the receiver's answer
    attempts integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    retry_requested boolean NOT NULL DEFAULT false,
    UNIQUE (sink, entry_key)
);
CREATE INDEX dead_letters_retry ON pgsink.dead_letters (sink, id) WHERE retry_requested;
SELECT pg_catalog.pg_extension_config_dump('pgsink.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('pgsink.dead_letters_id_seq', '');

CREATE VIEW pgsink.dead_letter_counts AS
SELECT sink, "table", pg_catalog.count(*) AS entries, pg_catalog.sum(attempts) AS attempts,
       pg_catalog.min(first_failed_at) AS first_failed_at,
       pg_catalog.max(last_failed_at) AS last_failed_at,
       pg_catalog.count(*) FILTER (WHERE retry_requested) AS retry_requested
  FROM pgsink.dead_letters
 GROUP BY sink, "table";

-- Ask the sinks' delivery workers to send parked entries again (all, or
-- those ids); they do within a second of being caught up with the spool,
-- and remove each one the sink accepts. Returns how many were asked for.
CREATE FUNCTION pgsink.retry_dead_letters(ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH asked AS (
        UPDATE pgsink.dead_letters SET retry_requested = true
         WHERE ids IS NULL OR id OPERATOR(pg_catalog.=) ANY (ids)
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM asked;
$$;

REVOKE ALL ON pgsink.dead_letters, pgsink.dead_letters_id_seq FROM PUBLIC;
REVOKE ALL ON pgsink.dead_letter_counts FROM PUBLIC;
REVOKE ALL ON FUNCTION pgsink.retry_dead_letters(bigint[]) FROM PUBLIC;
GRANT SELECT ON pgsink.dead_letter_counts TO pgsink_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION pgsink.retry_dead_letters(bigint[]) TO pgsink_admin;

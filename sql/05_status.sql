-- pgsink.status: its columns, and the values that do not depend on timing
-- (no pids, timestamps or LSNs are printed).

-- The workers start with the server; give them a few seconds.
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        EXIT WHEN (SELECT launcher_pid IS NOT NULL AND worker_pid IS NOT NULL
                     FROM pgsink.status());
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a
 WHERE a.attrelid = 'pgsink.status'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;

-- The view and the function agree on their columns.
SELECT (SELECT array_agg(column_name::text ORDER BY ordinal_position)
          FROM information_schema.columns
         WHERE table_schema = 'pgsink' AND table_name = 'status')
     = (SELECT array_agg(name ORDER BY ord)
          FROM unnest((SELECT proargnames FROM pg_proc
                        WHERE oid = 'pgsink.status()'::regprocedure))
               WITH ORDINALITY AS u(name, ord)) AS same_columns;

-- One row, always.
SELECT count(*) AS rows FROM pgsink.status;

-- The test instance runs pgsink in this database with the default slot name,
-- configured correctly (test/conf/regress.conf).
SELECT database,
       database = current_database() AS is_this_database,
       slot_name,
       launcher_pid IS NOT NULL AS launcher_running,
       config_problem,
       worker_restarts >= 0 AS restarts_counted,
       entries_delivered >= 0 AS entries_counted,
       transactions_delivered >= 0 AS transactions_counted
  FROM pgsink.status;

-- The pids are those of a live launcher, and of a stream worker in this database.
SELECT a.backend_type
  FROM pgsink.status s JOIN pg_stat_activity a ON a.pid = s.launcher_pid;
SELECT a.backend_type, a.datname = current_database() AS in_this_database
  FROM pgsink.status s JOIN pg_stat_activity a ON a.pid = s.worker_pid;

-- State is one of the documented states.
SELECT state IN ('stopped', 'starting', 'waiting for database', 'waiting for extension',
                 'misconfigured', 'streaming', 'sink retrying', 'backing off') AS known_state
  FROM pgsink.status;

-- The view and the function return the same thing.
SELECT (SELECT database FROM pgsink.status) = (SELECT database FROM pgsink.status())
       AS view_matches_function;

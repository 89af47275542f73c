-- Attacks on pgsink's elevated rights, each of which once worked:
--   1. a table owner's domain CHECK runs during an import (the cursor is cast
--      to the key's type) and must not run as the worker's superuser;
--   2. a pgsink_admin member's operator, found through their search_path,
--      must not run as the extension owner in add_table()/remove_table();
--   3. pgsink.imports.cursor holds key values: roles that may not read the
--      table's rows (no SELECT, or row-level security) must not see it.
-- Each attack tries to make its role a superuser; the test checks it did not.

ALTER SYSTEM SET pgsink.import_chunk_rows = 100;
SELECT pg_reload_conf();

CREATE FUNCTION sec_wait(rel text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s text;
    deadline constant timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        SELECT state INTO s FROM pgsink.imports WHERE "table"::text = rel ORDER BY id DESC LIMIT 1;
        IF s IN ('complete', 'failed') OR clock_timestamp() > deadline THEN
            RETURN coalesce(s, '(no job)');
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

-- 1. A table owner with no pgsink role at all. (Its function also tries to
-- leave a setting behind in the worker: the import would then fail.)
CREATE ROLE regress_mallory;
CREATE SCHEMA mal AUTHORIZATION regress_mallory;
SET ROLE regress_mallory;
CREATE FUNCTION mal.escalate(v int) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE regress_mallory SUPERUSER';
    END IF;
    -- In the stream worker: leave a setting behind in the superuser's
    -- session (every later transaction of the worker would be read-only).
    IF (SELECT backend_type FROM pg_catalog.pg_stat_activity
         WHERE pid = pg_catalog.pg_backend_pid()) = 'pgsink stream' THEN
        PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);
    END IF;
    RETURN true;
END
$$;
CREATE DOMAIN mal.key AS int CHECK (mal.escalate(VALUE));
CREATE TABLE mal.t (id mal.key PRIMARY KEY, v text);
INSERT INTO mal.t SELECT g, 'row ' || g FROM generate_series(1, 250) g;
RESET ROLE;
-- Captured by a superuser; the import reads 3 chunks, casting the cursor to mal.key twice.
SELECT pgsink.add_table('mal.t');
SELECT sec_wait('mal.t');
SELECT rows_imported, chunks, error FROM pgsink.imports WHERE "table" = 'mal.t'::regclass;
SELECT rolsuper AS mallory_became_superuser FROM pg_roles WHERE rolname = 'regress_mallory';

-- 2. A pgsink_admin member who can create objects in a schema of their own.
CREATE ROLE regress_eve IN ROLE pgsink_admin;
CREATE SCHEMA evil AUTHORIZATION regress_eve;
CREATE TABLE public.sec_t (id int PRIMARY KEY);
GRANT SELECT ON public.sec_t TO regress_eve;
SET ROLE regress_eve;
CREATE FUNCTION evil.escalate() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE regress_eve SUPERUSER';
    END IF;
END
$$;
-- Look-alikes of the equality operators pgsink's statements use.
CREATE FUNCTION evil.escalate_eq(a oid, b oid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM evil.escalate();
    RETURN a OPERATOR(pg_catalog.=) b;
END
$$;
CREATE OPERATOR evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = evil.escalate_eq);
CREATE FUNCTION evil.escalate_text_eq(a text, b text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM evil.escalate();
    RETURN a OPERATOR(pg_catalog.=) b;
END
$$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.escalate_text_eq);
SET search_path = evil, pg_catalog;
SELECT pgsink.add_table('public.sec_t');
SELECT pgsink.reimport('public.sec_t') > 0 AS reimport_scheduled;
SELECT pgsink.cancel_import('public.sec_t');
SELECT pgsink.remove_table('public.sec_t');
RESET search_path;
RESET ROLE;
SELECT rolsuper AS eve_became_superuser FROM pg_roles WHERE rolname = 'regress_eve';

-- 3. A monitoring role sees the cursor only of tables whose rows it may read.
CREATE ROLE regress_watcher IN ROLE pg_monitor;
SET ROLE regress_watcher;
SELECT "table", state, cursor FROM pgsink.imports WHERE "table"::text = 'mal.t';
RESET ROLE;
GRANT USAGE ON SCHEMA mal TO regress_watcher;
GRANT SELECT ON mal.t TO regress_watcher;
SET ROLE regress_watcher;
SELECT "table", state, cursor FROM pgsink.imports WHERE "table"::text = 'mal.t';
RESET ROLE;
-- Row-level security would hide rows from it: so is the cursor.
ALTER TABLE mal.t ENABLE ROW LEVEL SECURITY;
SET ROLE regress_watcher;
SELECT "table", state, cursor FROM pgsink.imports WHERE "table"::text = 'mal.t';
RESET ROLE;
-- A superuser sees it.
SELECT "table", state, cursor FROM pgsink.imports WHERE "table"::text = 'mal.t';

-- Clean up.
SELECT pgsink.remove_table('mal.t');
DROP SCHEMA mal CASCADE;
DROP SCHEMA evil CASCADE;
DROP TABLE public.sec_t;
DROP FUNCTION sec_wait(text);
DROP ROLE regress_mallory, regress_eve, regress_watcher;
ALTER SYSTEM RESET pgsink.import_chunk_rows;
SELECT pg_reload_conf();

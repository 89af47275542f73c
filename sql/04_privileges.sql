-- Who may do what. Nothing is granted to PUBLIC; members of pgsink_admin
-- manage capture of tables they can read; members of pg_monitor watch.

-- Every function in schema pgsink: nobody but the listed roles may execute it.
SELECT p.oid::regprocedure AS function,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('pgsink_admin', p.oid, 'EXECUTE') AS pgsink_admin,
       has_function_privilege('pg_monitor', p.oid, 'EXECUTE') AS pg_monitor
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'pgsink'
 ORDER BY p.oid::regprocedure::text;
-- ...and every table and view.
SELECT c.oid::regclass AS relation, c.relkind,
       has_table_privilege('public', c.oid, 'SELECT') AS public_select,
       has_table_privilege('pgsink_admin', c.oid, 'SELECT') AS admin_select,
       has_table_privilege('pgsink_admin', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
           AS admin_write,
       has_table_privilege('pg_monitor', c.oid, 'SELECT') AS monitor_select
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'pgsink' AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
 ORDER BY c.oid::regclass::text;
SELECT has_schema_privilege('public', 'pgsink', 'USAGE') AS public_usage,
       has_schema_privilege('public', 'pgsink', 'CREATE') AS public_create;

CREATE ROLE regress_nobody;
CREATE ROLE regress_admin IN ROLE pgsink_admin;
CREATE ROLE regress_monitor IN ROLE pg_monitor;

CREATE TABLE public.priv_readable (id int PRIMARY KEY);
CREATE TABLE public.priv_secret (id int PRIMARY KEY);
GRANT SELECT ON public.priv_readable TO regress_admin;

-- PUBLIC: nothing.
SET ROLE regress_nobody;
SELECT pgsink.add_table('public.priv_readable');
SELECT pgsink.remove_table('public.priv_readable');
SELECT * FROM pgsink.status();
SELECT count(*) FROM pgsink.status;
SELECT count(*) FROM pgsink.tables;
SELECT count(*) FROM pgsink.captured_tables;
RESET ROLE;

-- pgsink_admin: may capture a table it can SELECT...
SET ROLE regress_admin;
SELECT pgsink.add_table('public.priv_readable');
-- added_by is the role that called add_table, not the extension's owner.
SELECT "table", added_by FROM pgsink.tables;
SELECT database, slot_name FROM pgsink.status;
-- Every column of the views (capture_state calls a function).
SELECT count(*) FROM (SELECT * FROM pgsink.tables) t;
SELECT count(*) FROM (SELECT * FROM pgsink.imports) i;
-- ...not one it cannot read...
\set VERBOSITY default
SELECT pgsink.add_table('public.priv_secret');
-- ...and gets no direct access to pgsink's own table: the functions are the way in.
INSERT INTO pgsink.captured_tables (relid, added_by)
    VALUES ('public.priv_secret'::regclass, current_user);
DELETE FROM pgsink.captured_tables;
-- Nor to the test-only function.
SELECT pgsink._selftest_boundary('ok');
SELECT pgsink.remove_table('public.priv_readable');
RESET ROLE;

-- pg_monitor: may watch, not change.
SELECT pgsink.add_table('public.priv_secret');
SET ROLE regress_monitor;
SELECT database, slot_name, launcher_pid IS NOT NULL AS launcher_running FROM pgsink.status;
SELECT database, slot_name FROM pgsink.status();
SELECT "table" FROM pgsink.tables;
SELECT count(*) FROM (SELECT * FROM pgsink.tables) t;
SELECT count(*) FROM (SELECT * FROM pgsink.imports) i;
SELECT pgsink.add_table('public.priv_readable');
SELECT pgsink.remove_table('public.priv_secret');
RESET ROLE;

-- A superuser may capture anything capturable; added_by records who did.
SELECT "table", added_by = current_user AS added_by_me FROM pgsink.tables ORDER BY "table"::text;

-- Clean up.
SELECT pgsink.remove_table('public.priv_secret');
DROP TABLE public.priv_readable, public.priv_secret;
DROP ROLE regress_nobody, regress_admin, regress_monitor;

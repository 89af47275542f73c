-- The upgrade path: a server with 0.1.0 installed runs ALTER EXTENSION
-- pgsink UPDATE and gets exactly what CREATE EXTENSION installs now.
CREATE TEMP TABLE objects_now AS
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgsink');
SELECT extversion FROM pg_extension WHERE extname = 'pgsink';

DROP EXTENSION pgsink;
CREATE EXTENSION pgsink VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pgsink';
ALTER EXTENSION pgsink UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pgsink';

-- The same objects as a fresh install...
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgsink')
EXCEPT SELECT object FROM objects_now;
SELECT object FROM objects_now
EXCEPT
SELECT pg_describe_object(classid, objid, objsubid)
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgsink');
-- ...with the 0.2.0 columns, and working views.
SELECT attname FROM pg_attribute
 WHERE attrelid = 'pgsink.import_jobs'::regclass AND attname = 'wait_for_xid';
SELECT count(*) FROM pg_attribute
 WHERE attrelid = 'pgsink.captured_tables'::regclass AND attname = 'import_requested'
   AND NOT attisdropped;
SELECT count(*) AS tables FROM pgsink.tables;
SELECT count(*) AS imports FROM pgsink.imports;
DROP TABLE objects_now;
-- ...and the 0.3.0 views of the spool and its sinks.
SELECT sink FROM pgsink.sinks;
SELECT directory, retention FROM pgsink.spool;

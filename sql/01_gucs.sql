-- pgsink's settings: every pgsink.* GUC, its value here, its default and
-- when it can change; invalid values refused with a message saying why.
-- (pgsink.database and pgsink.file_path are set by test/conf/regress.conf.)
SELECT name, setting, boot_val, unit, context, vartype
  FROM pg_settings
 WHERE name LIKE 'pgsink.%'
 ORDER BY name;

-- Enum values on offer.
SELECT name, enumvals FROM pg_settings WHERE vartype = 'enum' AND name LIKE 'pgsink.%' ORDER BY 1;

-- Invalid values are refused before anything is written to postgresql.auto.conf.
ALTER SYSTEM SET pgsink.slot_name = 'Bad-Name';
ALTER SYSTEM SET pgsink.slot_name = '';
ALTER SYSTEM SET pgsink.slot_name = 'a_slot_name_that_is_much_too_long_for_a_replication_slot_name_xxxxx';
ALTER SYSTEM SET pgsink.database = '';
ALTER SYSTEM SET pgsink.database = 'a_database_name_that_is_much_too_long_for_postgresql_identifiers_x';
ALTER SYSTEM SET pgsink.file_path = '';
ALTER SYSTEM SET pgsink.file_path = 'dir/';
ALTER SYSTEM SET pgsink.batch_rows = 0;
ALTER SYSTEM SET pgsink.batch_bytes = '1kB';
ALTER SYSTEM SET pgsink.sink = 'kafka';
-- pgsink.sink is a list of sinks: each known, none twice, none empty.
ALTER SYSTEM SET pgsink.sink = 'file, kafka';
ALTER SYSTEM SET pgsink.sink = 'file, FILE';
ALTER SYSTEM SET pgsink.sink = 'file,';
ALTER SYSTEM SET pgsink.sink = '';
ALTER SYSTEM SET pgsink.sink = 'a_sink_name_longer_than_31_bytes_x';
ALTER SYSTEM SET pgsink.spool_directory = '';
-- Elasticsearch index names are lower case and may not start with _ - +.
ALTER SYSTEM SET pgsink.elasticsearch_index_prefix = 'PgSink-';
ALTER SYSTEM SET pgsink.elasticsearch_index_prefix = '_pgsink';
ALTER SYSTEM SET pgsink.elasticsearch_index_prefix = 'pg sink';
ALTER SYSTEM SET pgsink.spool_max_size = '-1';
ALTER SYSTEM SET pgsink.spool_segment_size = '0';
ALTER SYSTEM SET pgsink.flush_interval = '-1';
ALTER SYSTEM SET pgsink.poll_interval = 0;
ALTER SYSTEM SET pgsink.retry_max_interval = '10ms';
ALTER SYSTEM SET pgsink.no_such_setting = 1;

-- Valid values are accepted (and not applied: no reload here).
ALTER SYSTEM SET pgsink.slot_name = 'pgsink_2';
ALTER SYSTEM SET pgsink.batch_rows = 500;
ALTER SYSTEM SET pgsink.flush_interval = '1s';
ALTER SYSTEM SET pgsink.file_path = '/tmp/pgsink/out.jsonl';
-- (slot_name needs a restart, hence "could not be applied" until then.)
SELECT name, setting, error FROM pg_file_settings
 WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY name;
ALTER SYSTEM RESET ALL;
SELECT count(*) AS left_in_auto_conf FROM pg_file_settings
 WHERE sourcefile LIKE '%postgresql.auto.conf';

-- Settings are server-wide: a session cannot SET them.
SET pgsink.batch_rows = 5;
SET pgsink.database = 'postgres';
SET pgsink.slot_name = 'other';
-- The "pgsink." prefix is reserved: a misspelt setting is an error, not a new placeholder.
SET pgsink.batch_row = 5;

-- pgsink.file_path is superuser-only: an unprivileged role cannot read it.
CREATE ROLE regress_unpriv;
SET ROLE regress_unpriv;
SHOW pgsink.file_path;
SELECT current_setting('pgsink.file_path');
SELECT name FROM pg_settings WHERE name LIKE 'pgsink.%' ORDER BY 1;
SHOW pgsink.batch_rows;
RESET ROLE;
DROP ROLE regress_unpriv;

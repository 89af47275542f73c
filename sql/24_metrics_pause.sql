-- pgsink.metrics(): Prometheus' text format, counters per table and sink;
-- pgsink.pause() / pgsink.resume(): who may, what they say, what they check.
CREATE SCHEMA met;
-- A hostile name: a quote, a backslash and a newline, which the text format
-- must escape in a label value (else a fake metric line gets in).
CREATE TABLE met."a""b\c
fake_metric 1" (id int PRIMARY KEY, v text);
CREATE TABLE met.plain (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('met."a""b\c
fake_metric 1"', import => false);
SELECT pgsink.add_table('met.plain', import => false);
INSERT INTO met."a""b\c
fake_metric 1" SELECT g, 'x' FROM generate_series(1, 3) g;
INSERT INTO met.plain SELECT g, 'y' FROM generate_series(1, 5) g;
UPDATE met.plain SET v = 'z' WHERE id = 1;
SELECT pgsink.wait_for_delivery('60s') IS NOT NULL AS delivered;

-- Per-table counters in pgsink.tables: entries, bytes, time of the last change.
SELECT table_name, entries_captured, bytes_captured > 0 AS bytes,
       last_change_time > now() - interval '1 hour' AS recent
  FROM pgsink.tables WHERE schema_name = 'met' ORDER BY 1;

-- Every line is a HELP or TYPE comment or a sample "name{labels} value",
-- and every sample's family has both.
CREATE TEMP TABLE m AS
SELECT n, line FROM regexp_split_to_table(pgsink.metrics(), E'\n') WITH ORDINALITY AS l(line, n);
SELECT count(*) AS malformed FROM m
 WHERE line <> ''
   AND line !~ '^# (HELP|TYPE) [a-z_]+ '
   AND line !~ '^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)+\})? -?[0-9.]+(e[-+][0-9]+)?$';
SELECT DISTINCT substring(line FROM '^[a-z_]+') AS family_without_help FROM m
 WHERE line ~ '^[a-z]'
   AND NOT EXISTS (SELECT FROM m h WHERE h.line LIKE '# HELP ' || substring(m.line FROM '^[a-z_]+') || ' %')
   AND NOT EXISTS (SELECT FROM m t WHERE t.line LIKE '# TYPE ' || substring(m.line FROM '^[a-z_]+') || ' %');
SELECT count(*) AS last_line_ends_with_newline FROM m WHERE n = (SELECT max(n) FROM m) AND line = '';
-- The hostile name, escaped: one line, no fake metric.
SELECT line FROM m WHERE line LIKE 'pgsink_table_entries_total{table="met.%' ORDER BY line;
SELECT count(*) AS fake FROM m WHERE line LIKE 'fake_metric%';
-- The sink's counters and state.
SELECT line FROM m WHERE line ~ '^pgsink_sink_(up|state|paused|errors_total|retries_total)\{sink="file"' ORDER BY 1;

-- Pause and resume: only pgsink_admin members (and superusers).
CREATE ROLE regress_met_nobody;
CREATE ROLE regress_met_admin IN ROLE pgsink_admin;
CREATE ROLE regress_met_monitor IN ROLE pg_monitor;
SET ROLE regress_met_nobody;
SELECT pgsink.pause();
SELECT pgsink.metrics() IS NOT NULL;
RESET ROLE;
SET ROLE regress_met_monitor;
SELECT pgsink.metrics() LIKE '%pgsink_up %' AS monitor_reads_metrics;
SELECT pgsink.pause();
RESET ROLE;
SET ROLE regress_met_admin;
SELECT pgsink.pause('nosuch');
SELECT pgsink.pause('FILE') AS paused, pgsink.pause('file') AS again;
SELECT sink, paused_since IS NOT NULL AS paused FROM pgsink.sinks;
SELECT pgsink.resume('file') AS resumed, pgsink.resume('file') AS again;
SELECT pgsink.pause() AS decoding_paused;
SELECT paused_since IS NOT NULL AS paused FROM pgsink.status;
RESET ROLE;
-- Changes made while decoding is paused wait in the WAL...
INSERT INTO met.plain VALUES (100, 'while paused');
SELECT pg_sleep(0.5);
SELECT count(*) AS in_file FROM regress_changelog() WHERE entry::text LIKE '%while paused%';
SELECT state FROM pgsink.status;
SELECT line FROM regexp_split_to_table(pgsink.metrics(), E'\n') AS line
 WHERE line LIKE 'pgsink_paused %' OR line LIKE 'pgsink_state{%';
-- ...and come once it resumes.
SET ROLE regress_met_admin;
SELECT pgsink.resume() AS decoding_resumed;
RESET ROLE;
SELECT pgsink.wait_for_delivery('60s') IS NOT NULL AS delivered;
SELECT count(*) AS in_file FROM regress_changelog() WHERE entry::text LIKE '%while paused%';
SELECT paused_since IS NULL AS running, state FROM pgsink.status;

SELECT pgsink.remove_table('met."a""b\c
fake_metric 1"');
SELECT pgsink.remove_table('met.plain');
DROP SCHEMA met CASCADE;
DROP ROLE regress_met_nobody, regress_met_admin, regress_met_monitor;

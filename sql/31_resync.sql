-- pgsink.resync(): an import between a resync_start entry (at its first
-- chunk's low watermark, alone) and a resync_end entry (after its last
-- chunk's rows, with resync_since: the lsn of resync_start). The resync
-- rule: a row of the table not written since resync_start is gone at
-- resync_end.
CREATE SCHEMA rs;
CREATE TABLE rs.t (id int PRIMARY KEY, v text);
CREATE TABLE rs.nokey (v text);
ALTER TABLE rs.nokey REPLICA IDENTITY FULL;
SELECT pgsink.add_table('rs.t', import => false);
SELECT pgsink.add_table('rs.nokey');
INSERT INTO rs.t VALUES (1, 'one'), (2, 'two'), (3, 'three');
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;

CREATE FUNCTION rs_wait(rel regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    s text;
    deadline constant timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        SELECT state INTO s FROM pgsink.imports WHERE "table" = rel ORDER BY id DESC LIMIT 1;
        IF s = 'complete' OR clock_timestamp() > deadline THEN
            RETURN s;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

-- One table; a table without a key cannot be resynced.
SELECT count(*) AS jobs FROM pgsink.resync('rs.t');
SELECT pgsink.resync('rs.nokey');
SELECT rs_wait('rs.t');
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
SELECT "table", state, rows_imported, resync FROM pgsink.imports WHERE "table" = 'rs.t'::regclass;
SELECT regress_without_keys(raw, '{timestamp,lsn,xid,resync_since}') AS entry
  FROM regress_changelog() WHERE regress_entry_matches(entry, '{rs.t}')
   AND entry->>'op' IN ('import', 'resync_start', 'resync_end') ORDER BY lineno;
-- resync_end says where its resync opened: the lsn of resync_start.
SELECT e.entry->>'resync_since' = s.entry->>'lsn' AS since_is_start
  FROM regress_changelog() e, regress_changelog() s
 WHERE e.entry->>'op' = 'resync_end' AND s.entry->>'op' = 'resync_start'
   AND e.entry->>'name' = 't' AND s.entry->>'name' = 't';
-- A resync_end's lsn is its import's (after its rows); resync_start is alone at its lsn.
SELECT count(DISTINCT entry->>'lsn') AS lsns FROM regress_changelog()
 WHERE entry->>'name' = 't' AND entry->>'op' IN ('import', 'resync_end');

-- Only pgsink_admin members.
CREATE ROLE regress_rs_nobody;
SET ROLE regress_rs_nobody;
SELECT pgsink.resync('rs.t');
RESET ROLE;
DROP ROLE regress_rs_nobody;
SELECT pgsink.remove_table('rs.t');
SELECT pgsink.remove_table('rs.nokey');
DROP SCHEMA rs CASCADE;
DROP FUNCTION rs_wait(regclass);

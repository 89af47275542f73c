-- The changelog: TOASTed values. A value stored out of line that an update
-- does not change is not in the WAL record of the new row; it is never
-- reported as null: with REPLICA IDENTITY FULL the old row (which has it) gives
-- it, otherwise it is left out of "after" and listed in "unchanged".
CREATE SCHEMA tst;
-- Long strings are printed as <length, start of md5>.
CREATE FUNCTION tst.abbreviate(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text;
BEGIN
    FOR m IN SELECT DISTINCT (regexp_matches(t, '"([^"\\]{100,})"', 'g'))[1] LOOP
        t := replace(t, '"' || m || '"', format('"<%s chars, md5 %s>"', length(m), left(md5(m), 8)));
    END LOOP;
    RETURN t;
END
$$;
-- Incompressible text of n * 32 characters (md5 strings), and its bytes.
CREATE FUNCTION tst.big(n int, seed text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(md5(seed || i), '') FROM generate_series(1, n) i
$$;

CREATE TABLE tst.docs (id int PRIMARY KEY, title text, body text, data bytea);
ALTER TABLE tst.docs ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE tst.docs ALTER COLUMN data SET STORAGE EXTERNAL;
SELECT pgsink.add_table('tst.docs', import => false);
INSERT INTO tst.docs VALUES (1, 'one', tst.big(400, 'a'), decode(tst.big(200, 'b'), 'hex')),
                            (2, 'two', tst.big(400, 'c'), NULL);
-- The values are out of line (in the TOAST table), uncompressed.
SELECT reltoastrelid::regclass AS toast FROM pg_class WHERE oid = 'tst.docs'::regclass \gset
SELECT count(DISTINCT chunk_id) AS toasted_values FROM :toast;
SELECT id, length(body) AS body_length, left(md5(body), 8) AS body_md5,
       length(data) AS data_bytes,
       left(md5(replace(encode(data, 'base64'), E'\n', '')), 8) AS data_base64_md5
  FROM tst.docs ORDER BY id;

-- An update of another column: body and data are left out and listed.
UPDATE tst.docs SET title = 'one, retitled' WHERE id = 1;
-- A NULL stays null (it is not TOASTed, so not "unchanged").
UPDATE tst.docs SET title = 'two, retitled' WHERE id = 2;
-- An update of the TOASTed column itself: the new value is there.
UPDATE tst.docs SET body = tst.big(300, 'd') WHERE id = 2;
-- An update that changes the key: the old key is logged, not the old value.
UPDATE tst.docs SET id = 3 WHERE id = 2;
-- In one transaction: the value is set, then another column is updated.
BEGIN;
UPDATE tst.docs SET body = tst.big(350, 'e') WHERE id = 1;
UPDATE tst.docs SET title = 'one, again' WHERE id = 1;
COMMIT;
-- A delete has the key only.
DELETE FROM tst.docs WHERE id = 3;

-- REPLICA IDENTITY FULL: the old row, TOASTed values included, is in the WAL
-- record, so the unchanged value is reported in full.
CREATE TABLE tst.full_docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE tst.full_docs ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE tst.full_docs REPLICA IDENTITY FULL;
SELECT pgsink.add_table('tst.full_docs', import => false);
INSERT INTO tst.full_docs VALUES (1, 'one', tst.big(400, 'f'));
UPDATE tst.full_docs SET title = 'one, retitled' WHERE id = 1;
UPDATE tst.full_docs SET id = 2 WHERE id = 1;
DELETE FROM tst.full_docs WHERE id = 2;

-- A TOASTed value in a key column (with the default replica identity): the
-- key is logged inline in the old key, so before has it, and after too.
CREATE TABLE tst.big_keys (k text PRIMARY KEY, n int);
ALTER TABLE tst.big_keys ALTER COLUMN k SET STORAGE EXTERNAL;
SELECT pgsink.add_table('tst.big_keys', import => false);
INSERT INTO tst.big_keys VALUES (tst.big(80, 'g'), 1);
SELECT reltoastrelid::regclass AS toast FROM pg_class WHERE oid = 'tst.big_keys'::regclass \gset
SELECT count(DISTINCT chunk_id) AS toasted_values FROM :toast;
UPDATE tst.big_keys SET n = 2;
DELETE FROM tst.big_keys;

-- A large compressible value, compressed inline: not special.
CREATE TABLE tst.compressed (id int PRIMARY KEY, title text, body text);
SELECT pgsink.add_table('tst.compressed', import => false);
INSERT INTO tst.compressed VALUES (1, 'one', repeat('x', 100000));
UPDATE tst.compressed SET title = 'one, retitled';

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT tst.abbreviate(c) FROM regress_changes('{tst.*}') c;
\pset format aligned

-- The changelog: "before" is what the replica identity provides: the key
-- columns (the primary key by default, or the index of REPLICA IDENTITY USING
-- INDEX), the whole old row with REPLICA IDENTITY FULL, nothing with
-- REPLICA IDENTITY NOTHING. The Schema entry's "key" names the key columns.
CREATE SCHEMA ri;

-- DEFAULT, with a primary key.
CREATE TABLE ri.dflt (id int PRIMARY KEY, a text, b int);
INSERT INTO ri.dflt VALUES (1, 'a', 1), (2, 'b', 2);
SELECT pgsink.add_table('ri.dflt', import => false);
UPDATE ri.dflt SET a = 'a2' WHERE id = 1;
UPDATE ri.dflt SET id = 10 WHERE id = 1;
DELETE FROM ri.dflt WHERE id = 2;

-- FULL, with a primary key: the whole old row; the key is still the primary key.
CREATE TABLE ri.full_pk (id int PRIMARY KEY, a text, b int);
ALTER TABLE ri.full_pk REPLICA IDENTITY FULL;
INSERT INTO ri.full_pk VALUES (1, 'a', 1), (2, NULL, 2), (3, 'c', 3);
SELECT pgsink.add_table('ri.full_pk', import => false);
UPDATE ri.full_pk SET a = 'a2' WHERE id = 1;
UPDATE ri.full_pk SET id = 10, b = 10 WHERE id = 1;
DELETE FROM ri.full_pk WHERE id = 2;
-- A column added with a default after the row was written: the old row,
-- read from disk without it, has its default.
ALTER TABLE ri.full_pk ADD COLUMN c int DEFAULT 7;
DELETE FROM ri.full_pk WHERE id = 3;

-- FULL, without any key.
CREATE TABLE ri.full_nokey (a text, b int);
ALTER TABLE ri.full_nokey REPLICA IDENTITY FULL;
INSERT INTO ri.full_nokey VALUES ('a', 1), ('a', 1), ('b', NULL);
SELECT pgsink.add_table('ri.full_nokey', import => false);
UPDATE ri.full_nokey SET b = 2 WHERE a = 'a';
DELETE FROM ri.full_nokey WHERE a = 'b';

-- USING INDEX on a unique index: before has that index's columns (not the
-- primary key's); it is the key of the Schema entry.
CREATE TABLE ri.idx (id int PRIMARY KEY, email text NOT NULL, name text);
CREATE UNIQUE INDEX idx_email ON ri.idx (email);
ALTER TABLE ri.idx REPLICA IDENTITY USING INDEX idx_email;
INSERT INTO ri.idx VALUES (1, 'a@example.com', 'a'), (2, 'b@example.com', 'b');
SELECT pgsink.add_table('ri.idx', import => false);
UPDATE ri.idx SET name = 'a2' WHERE id = 1;
UPDATE ri.idx SET email = 'a2@example.com' WHERE id = 1;
UPDATE ri.idx SET id = 20 WHERE id = 2;
DELETE FROM ri.idx WHERE id = 20;
-- A composite unique index, its columns in index order.
CREATE TABLE ri.idx2 (tag text NOT NULL, owner int NOT NULL, note text);
CREATE UNIQUE INDEX idx2_owner_tag ON ri.idx2 (owner, tag);
ALTER TABLE ri.idx2 REPLICA IDENTITY USING INDEX idx2_owner_tag;
INSERT INTO ri.idx2 VALUES ('t', 1, 'n');
SELECT pgsink.add_table('ri.idx2', import => false);
UPDATE ri.idx2 SET note = 'n2';
UPDATE ri.idx2 SET tag = 'u';
DELETE FROM ri.idx2;

-- NOTHING, set after add_table (which refuses such a table): PostgreSQL
-- logs no old row at all, so updates and deletes have "before": null and a
-- delete says nothing of which row went. Documented, not an error.
CREATE TABLE ri.nothing (id int PRIMARY KEY, a text);
INSERT INTO ri.nothing VALUES (1, 'a'), (2, 'b');
SELECT pgsink.add_table('ri.nothing', import => false);
ALTER TABLE ri.nothing REPLICA IDENTITY NOTHING;
INSERT INTO ri.nothing VALUES (3, 'c');
UPDATE ri.nothing SET a = 'a2' WHERE id = 1;
UPDATE ri.nothing SET id = 20 WHERE id = 2;
DELETE FROM ri.nothing WHERE id = 3;

-- The replica identity of a captured table changes: from the next change on,
-- before follows it.
CREATE TABLE ri.switch (id int PRIMARY KEY, a text);
INSERT INTO ri.switch VALUES (1, 'a'), (2, 'b'), (3, 'c');
SELECT pgsink.add_table('ri.switch', import => false);
UPDATE ri.switch SET a = 'a2' WHERE id = 1;
ALTER TABLE ri.switch REPLICA IDENTITY FULL;
UPDATE ri.switch SET a = 'a3' WHERE id = 1;
DELETE FROM ri.switch WHERE id = 2;
ALTER TABLE ri.switch REPLICA IDENTITY DEFAULT;
DELETE FROM ri.switch WHERE id = 3;

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{ri.*}');
\pset format aligned
-- pgsink.tables shows the same key as the Schema entries.
SELECT t."table", t.replica_identity, t.key_columns,
       (SELECT array_agg(k ORDER BY o)
          FROM jsonb_array_elements_text(s.entry->'schema'->'key') WITH ORDINALITY AS x(k, o))
           AS schema_key
  FROM pgsink.tables t
  JOIN LATERAL (SELECT entry FROM regress_changelog()
                 WHERE entry->'schema'->>'namespace' = t.schema_name || '.' || t.table_name
                 ORDER BY lineno DESC LIMIT 1) s ON true
 WHERE t.schema_name = 'ri'
 ORDER BY "table"::text;

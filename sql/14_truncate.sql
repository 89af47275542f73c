-- The changelog: TRUNCATE. One "truncate" entry per captured table, with
-- before and after null.
CREATE SCHEMA trn;
CREATE TABLE trn.a (id int PRIMARY KEY, v text);
CREATE TABLE trn.b (id int PRIMARY KEY, v text);
CREATE TABLE trn.c (id int PRIMARY KEY, v text);
CREATE TABLE trn.uncaptured (id int PRIMARY KEY);
CREATE TABLE trn.parent (id int PRIMARY KEY);
CREATE TABLE trn.child (id int PRIMARY KEY, parent_id int REFERENCES trn.parent);
CREATE TABLE trn.grandchild (id int PRIMARY KEY, child_id int REFERENCES trn.child);
INSERT INTO trn.a VALUES (1, 'a');
INSERT INTO trn.b VALUES (1, 'b');
INSERT INTO trn.c VALUES (1, 'c');
INSERT INTO trn.uncaptured VALUES (1);
INSERT INTO trn.parent VALUES (1);
INSERT INTO trn.child VALUES (1, 1);
INSERT INTO trn.grandchild VALUES (1, 1);
SELECT pgsink.add_table('trn.a', import => false);
SELECT pgsink.add_table('trn.b', import => false);
SELECT pgsink.add_table('trn.c', import => false);
SELECT pgsink.add_table('trn.parent', import => false);
SELECT pgsink.add_table('trn.child', import => false);

-- One table (its Schema entry comes first, as before any first Modification).
TRUNCATE trn.a;
-- An insert after it, then another truncate in the same transaction.
BEGIN;
INSERT INTO trn.a VALUES (2, 'a2');
TRUNCATE trn.a;
INSERT INTO trn.a VALUES (3, 'a3');
COMMIT;
-- Several tables in one statement, one of them not captured: one entry per
-- captured table, in one transaction.
TRUNCATE trn.b, trn.uncaptured, trn.c;
-- An uncaptured table alone: nothing.
INSERT INTO trn.uncaptured VALUES (2);
TRUNCATE trn.uncaptured;
-- CASCADE through foreign keys: the captured tables it reaches are reported
-- (grandchild is not captured).
TRUNCATE trn.parent CASCADE;
-- RESTART IDENTITY and a rolled back TRUNCATE.
TRUNCATE trn.a RESTART IDENTITY;
BEGIN;
TRUNCATE trn.b;
ROLLBACK;

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{trn.*}');
\pset format aligned

-- The changelog: deletes. "before" holds the replica identity's columns of
-- the deleted row (the primary key by default), "after" is null.
CREATE SCHEMA del;
CREATE TABLE del.items (id int PRIMARY KEY, name text, qty int);
INSERT INTO del.items SELECT i, 'item ' || i, i FROM generate_series(1, 8) i;
SELECT pgsink.add_table('del.items', import => false);

-- One row.
DELETE FROM del.items WHERE id = 1;
-- Several rows in one statement.
DELETE FROM del.items WHERE id IN (2, 3);
-- No row: nothing.
DELETE FROM del.items WHERE id = 1000;
-- Insert, update and delete of one row in one transaction.
BEGIN;
INSERT INTO del.items VALUES (100, 'short-lived', 0);
UPDATE del.items SET qty = 1 WHERE id = 100;
DELETE FROM del.items WHERE id = 100;
DELETE FROM del.items WHERE id = 4;
COMMIT;
-- A rolled back delete: nothing.
BEGIN;
DELETE FROM del.items WHERE id = 5;
ROLLBACK;
-- DELETE without WHERE: one entry per row (unlike TRUNCATE).
DELETE FROM del.items WHERE id >= 7;

-- A composite key.
CREATE TABLE del.lines (note text, line int, order_id bigint, PRIMARY KEY (order_id, line));
INSERT INTO del.lines VALUES ('a', 1, 100), ('b', 2, 100);
SELECT pgsink.add_table('del.lines', import => false);
DELETE FROM del.lines WHERE order_id = 100 AND line = 2;

-- Rows deleted through a foreign key (ON DELETE CASCADE) are reported too.
CREATE TABLE del.parent (id int PRIMARY KEY);
CREATE TABLE del.child (id int PRIMARY KEY, parent_id int REFERENCES del.parent ON DELETE CASCADE);
INSERT INTO del.parent VALUES (1), (2);
INSERT INTO del.child VALUES (10, 1), (11, 1), (20, 2);
SELECT pgsink.add_table('del.parent', import => false);
SELECT pgsink.add_table('del.child', import => false);
DELETE FROM del.parent WHERE id = 1;

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{del.*}');
\pset format aligned

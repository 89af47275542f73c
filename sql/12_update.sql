-- The changelog: updates. "before" holds the replica identity's columns of
-- the old row (the primary key by default), "after" the whole new row.
CREATE SCHEMA upd;
CREATE TABLE upd.items (id int PRIMARY KEY, name text, qty int, flag bool);
INSERT INTO upd.items VALUES (1, 'one', 1, false), (2, 'two', 2, false), (3, 'three', 3, true);
SELECT pgsink.add_table('upd.items', import => false);

-- Non-key columns: before has the (unchanged) key.
UPDATE upd.items SET name = 'ONE', qty = qty + 10 WHERE id = 1;
-- To NULL and back.
UPDATE upd.items SET name = NULL WHERE id = 2;
UPDATE upd.items SET name = 'two again' WHERE id = 2;
-- An update that changes nothing is still an update.
UPDATE upd.items SET qty = qty WHERE id = 3;
-- Several rows in one statement, several statements in one transaction.
BEGIN;
UPDATE upd.items SET flag = NOT flag WHERE id IN (1, 2);
UPDATE upd.items SET qty = 0 WHERE id = 3;
COMMIT;
-- The primary key changes: before has the old key, after the new row.
UPDATE upd.items SET id = 10, name = 'ten' WHERE id = 1;
-- Several keys changed by one statement.
UPDATE upd.items SET id = id + 100 WHERE id IN (2, 3);
-- An update of a row inserted in the same transaction.
BEGIN;
INSERT INTO upd.items VALUES (20, 'new', 0, false);
UPDATE upd.items SET qty = 1 WHERE id = 20;
UPDATE upd.items SET id = 21 WHERE id = 20;
COMMIT;

-- A composite key (its columns in the key's order, not the table's).
CREATE TABLE upd.lines (note text, line int, order_id bigint, PRIMARY KEY (order_id, line));
INSERT INTO upd.lines VALUES ('a', 1, 100), ('b', 2, 100), ('c', 1, 200);
SELECT pgsink.add_table('upd.lines', import => false);
UPDATE upd.lines SET note = 'a2' WHERE order_id = 100 AND line = 1;
-- One key column changes.
UPDATE upd.lines SET line = 3 WHERE order_id = 100 AND line = 2;
-- Both change.
UPDATE upd.lines SET order_id = 300, line = 9 WHERE order_id = 200 AND line = 1;

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{upd.*}');
\pset format aligned

-- The changelog: partitioned tables. A partitioned table captured by its
-- root: the changes of its partitions (at any depth, also those created or
-- attached later) are reported under the root's name and columns.
CREATE SCHEMA part;
CREATE TABLE part.m (id int, region text, v text, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE part.m_eu PARTITION OF part.m FOR VALUES IN ('eu');
CREATE TABLE part.m_us PARTITION OF part.m FOR VALUES IN ('us');
-- A partition whose columns are in another order (and one dropped).
CREATE TABLE part.m_asia (dropped int, v text, region text NOT NULL, id int NOT NULL);
ALTER TABLE part.m_asia DROP COLUMN dropped;
ALTER TABLE part.m ATTACH PARTITION part.m_asia FOR VALUES IN ('asia');
SELECT pgsink.add_table('part.m', import => false);

INSERT INTO part.m VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'asia', 'c');
UPDATE part.m SET v = 'a2' WHERE id = 1;
UPDATE part.m SET v = 'c2' WHERE id = 3;
-- Moving a row to another partition (an update of the partition key): a
-- delete from the one and an insert into the other, both under the root.
UPDATE part.m SET region = 'us' WHERE id = 1;
UPDATE part.m SET region = 'asia', v = 'b2' WHERE id = 2;
DELETE FROM part.m WHERE id = 3;
-- Writing to a partition directly: under the root's name too.
INSERT INTO part.m_eu VALUES (4, 'eu', 'd');
-- A sub-partitioned partition created after add_table.
CREATE TABLE part.m_other PARTITION OF part.m FOR VALUES IN ('x', 'y') PARTITION BY LIST (region);
CREATE TABLE part.m_x PARTITION OF part.m_other FOR VALUES IN ('x');
INSERT INTO part.m VALUES (5, 'x', 'e');
-- TRUNCATE of the root: the root, once.
TRUNCATE part.m;
-- TRUNCATE of one partition: under the root's name.
INSERT INTO part.m VALUES (6, 'eu', 'f');
TRUNCATE part.m_eu;
-- A detached partition is no longer captured.
ALTER TABLE part.m DETACH PARTITION part.m_us;
INSERT INTO part.m_us VALUES (7, 'us', 'g');
INSERT INTO part.m VALUES (8, 'eu', 'h');

-- A partition captured on its own while its root is not: reported under its
-- own name; its sibling is not captured.
CREATE TABLE part.n (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE part.n_1 PARTITION OF part.n FOR VALUES FROM (0) TO (10);
CREATE TABLE part.n_2 PARTITION OF part.n FOR VALUES FROM (10) TO (20);
SELECT pgsink.add_table('part.n_1', import => false);
INSERT INTO part.n VALUES (1, 1), (2, 11);
UPDATE part.n SET k = 12 WHERE id = 1;
UPDATE part.n SET k = 2 WHERE id = 2;
TRUNCATE part.n;

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{part.*}');
\pset format aligned

-- The changelog: type modifiers. The Schema entry gives each column's
-- PostgreSQL type with its modifier (pg_type), and values follow it.
CREATE SCHEMA tmod;
CREATE TABLE tmod.t (
    id int PRIMARY KEY,
    v varchar(10),
    v_plain varchar,
    n numeric(8,3),
    n_precision numeric(5),
    n_plain numeric,
    c char(5),
    c_default char,
    ts timestamp(3),
    tstz timestamptz(0),
    t time(2),
    ttz timetz(1),
    iv interval(1),
    iv_fields interval day to second(0),
    b bit(4),
    vb varbit(8),
    va varchar(3)[],
    na numeric(4,1)[]
);
SELECT pgsink.add_table('tmod.t', import => false);
INSERT INTO tmod.t VALUES (
    1, 'ten chars.', 'no limit', 12.3456, 12345.6, 1.50, 'ab', 'x',
    '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.7+00', '12:34:56.789',
    '12:34:56.789+02', '1 day 2.345 seconds', '1 day 02:03:04.5', B'1010', B'101',
    '{abc,de}', '{1.25,2.35}');
INSERT INTO tmod.t (id) VALUES (2);
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;

-- The columns of the Schema entry.
SELECT f->>'name' AS name, f->>'pg_type' AS pg_type, f->'type' AS avro_type
  FROM regress_changelog(), jsonb_array_elements(entry->'schema'->'fields') WITH ORDINALITY AS x(f, o)
 WHERE regress_entry_matches(entry, '{tmod.t}')
 ORDER BY lineno, o;
\pset format unaligned
SELECT * FROM regress_changes('{tmod.t}');
\pset format aligned

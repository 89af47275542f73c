-- The changelog: values of every built-in type family (see "The changelog"
-- in the design notes): int2/int4/float4/float8 as JSON numbers; int8,
-- numeric and non-finite floats as strings; bool as true/false; json/jsonb
-- embedded; arrays as JSON arrays; bytea in base64; date/time types in
-- ISO 8601 (timestamptz in UTC); everything else as the type's text output.
--
-- Each table is printed value by value: the raw JSON text of each column of
-- "after", in the order of the changelog.
CREATE SCHEMA typ;
CREATE FUNCTION typ.values_of(tbl text)
RETURNS TABLE (id text, col text, value text)
LANGUAGE sql AS $$
    SELECT a->>'id', x.k, x.v::text
      FROM regress_changelog() c,
           LATERAL (SELECT c.raw->'after' AS a) r,
           LATERAL json_each(r.a) WITH ORDINALITY AS x(k, v, o)
     WHERE regress_entry_matches(c.entry, ARRAY[tbl]) AND c.entry ? 'op' AND x.k <> 'id'
     ORDER BY c.lineno, x.o
$$;
-- The "after" object of each change of a table, in changelog order.
CREATE FUNCTION typ.afters_of(tbl text) RETURNS SETOF jsonb
LANGUAGE sql AS $$
    SELECT entry->'after' FROM regress_changelog()
     WHERE regress_entry_matches(entry, ARRAY[tbl]) AND entry ? 'op'
     ORDER BY lineno
$$;
-- The Avro type and PostgreSQL type of each column in the Schema entry.
CREATE FUNCTION typ.schema_of(tbl text)
RETURNS TABLE (col text, avro_type text, pg_type text)
LANGUAGE sql AS $$
    SELECT f->>'name', f->>'type', f->>'pg_type'
      FROM regress_changelog() c,
           jsonb_array_elements(c.entry->'schema'->'fields') WITH ORDINALITY AS x(f, o)
     WHERE regress_entry_matches(c.entry, ARRAY[tbl])
     ORDER BY c.lineno, x.o
$$;
-- The session's settings do not matter to the changelog (the worker has its
-- own); they are set here so that what this session prints is stable.
SET TimeZone = 'America/New_York';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;

-- Numbers.
CREATE TABLE typ.numbers (id int PRIMARY KEY, i2 int2, i4 int4, i8 int8,
                          n numeric, f4 float4, f8 float8, m money, o oid);
SELECT pgsink.add_table('typ.numbers', import => false);
INSERT INTO typ.numbers VALUES
    (1, 1, 2, 3, 4.5, 1.5, 2.25, 3.75, 1),
    (2, -32768, -2147483648, -9223372036854775808, -0.000000000000000000001,
        -3.4e38, -1.7976931348623157e308, -92233720368547758.08, 0),
    (3, 32767, 2147483647, 9223372036854775807,
        123456789012345678901234567890.123456789012345678901234567890,
        1.1, 0.1, 92233720368547758.07, 4294967295),
    (4, 0, 0, 0, 0, 'NaN', 'NaN', 0, 0),
    (5, 0, 0, 0, 'NaN', 'Infinity', 'Infinity', 0, 0),
    (6, 0, 0, 0, 'Infinity', '-Infinity', '-Infinity', 0, 0),
    (7, 0, 0, 0, '-Infinity', 1e-45, 5e-324, 0, 0),
    (8, 0, 0, 0, 1.000, '-0', '-0', 0, 0),
    (9, 0, 0, 0, 1e20, 1e20, 1e100, 0, 0),
    (10, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- Characters, bytes, booleans.
CREATE TABLE typ.texts (id int PRIMARY KEY, t text, vc varchar(20), c char(4), nm name,
                        "char" "char", by bytea, b bool);
SELECT pgsink.add_table('typ.texts', import => false);
INSERT INTO typ.texts VALUES
    (1, 'plain', 'varchar', 'ab', 'a_name', 'x', '\x00', true),
    (2, E'quotes " and \\ backslash, / slash', E'tab\there', 'äöü', 'Ünïcödé', 'y',
        '\xdeadbeef', false),
    (3, E'line\nbreak\r\f\b and \u0001 control', '', '', '', ' ', '', true),
    (4, '日本語 😀 emoji', '{"not":"json"}', 'null', 'null', 'n', 'abc', false),
    (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- Dates and times: ISO 8601; timestamptz in UTC whatever the time zone of
-- the writer; infinities as strings.
CREATE TABLE typ.times (id int PRIMARY KEY, d date, t time, ttz timetz, ts timestamp,
                        tstz timestamptz, iv interval);
SELECT pgsink.add_table('typ.times', import => false);
INSERT INTO typ.times VALUES
    (1, '2024-02-29', '12:34:56', '12:34:56+02', '2024-02-29 12:34:56',
        '2024-02-29 12:34:56-05', '1 year 2 months 3 days 04:05:06.5'),
    (2, '1999-12-31', '00:00:00', '00:00:00-09:30', '1999-12-31 23:59:59.999999',
        '1999-12-31 23:59:59.999999+14', '-1 day -00:00:01'),
    (3, '0001-01-01', '24:00:00', '23:59:59.999999+00', '0001-01-01 00:00:00',
        '2000-07-01 00:00:00', '0'),
    (4, 'infinity', '00:00:00.000001', '12:00:00-15:59', 'infinity', 'infinity', '3 weeks'),
    (5, '-infinity', '13:00', '13:00+00', '-infinity', '-infinity', '1 millisecond'),
    (6, '9999-12-31', NULL, NULL, '9999-12-31 23:59:59', '9999-12-31 23:59:59+00', NULL),
    (7, NULL, NULL, NULL, NULL, NULL, NULL),
    -- years outside 1..9999: as PostgreSQL's own to_json() writes them
    (8, '0044-03-15 BC', NULL, NULL, '0044-03-15 12:00:00.5 BC', '0044-03-15 12:00:00+00 BC', NULL),
    (9, '10000-01-01', NULL, NULL, '10000-01-01 00:00:00', '10000-01-01 00:00:00+00', NULL);

-- Identifiers, documents, networks, bit strings, text search, pg_lsn.
CREATE TABLE typ.misc (id int PRIMARY KEY, u uuid, j json, jb jsonb, x xml,
                       ip inet, net cidr, mac macaddr, mac8 macaddr8,
                       bits bit(8), vbits varbit, tsv tsvector, tsq tsquery, lsn pg_lsn);
SELECT pgsink.add_table('typ.misc', import => false);
INSERT INTO typ.misc VALUES
    (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": 1, "b": [true, null]}',
        '{"b": [true, null], "a": 1}', '<doc a="1">text &amp; more</doc>',
        '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
        B'10100101', B'1', 'a fat cat sat', 'fat & (rat | cat)', '16/B374D848'),
    (2, '00000000-0000-0000-0000-000000000000', '"a string"', '"a string"', 'just text',
        '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff',
        B'00000000', B'', '', '!a', '0/0'),
    (3, NULL, '  [1, 2.50, 1e3]  ', '[1, 2.50, 1e3]', NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL),
    (4, NULL, 'null', 'null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- json keeps its input text: newlines between tokens (in json, json[] and a
-- domain over json) must not split the entry over several lines. Each
-- entry is one line (regress_changelog() parses the file line by line).
CREATE DOMAIN typ.jdoc AS json;
CREATE TABLE typ.multiline (id int PRIMARY KEY, j json, ja json[], d typ.jdoc);
SELECT pgsink.add_table('typ.multiline', import => false);
INSERT INTO typ.multiline VALUES
    (1, E'{\n  "a":\r\n 1,\n  "b": "x\\ny",\n  "lsn": "FFFFFFFF/FFFFFFFF"\n}',
        ARRAY[E'[1,\n2]', E'{\n}']::json[], E'{"op":\n"insert",\n"lsn":"FFFFFFFF/0"}');

-- Geometry.
CREATE TABLE typ.geometry (id int PRIMARY KEY, p point, l line, ls lseg, bx box,
                           pa path, po polygon, c circle);
SELECT pgsink.add_table('typ.geometry', import => false);
INSERT INTO typ.geometry VALUES
    (1, '(1,2)', '{1,2,3}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]',
        '((0,0),(1,1),(2,0))', '<(0,0),1.5>'),
    (2, '(-1.5,1e10)', '{1,-1,0}', '[(0,0),(0,0)]', '(0,0),(0,0)', '((0,0),(1,1))',
        '((0,0))', '<(1,1),0>');

-- Ranges and multiranges.
CREATE TABLE typ.ranges (id int PRIMARY KEY, i4r int4range, i8r int8range, nr numrange,
                         dr daterange, tsr tsrange, tstzr tstzrange, i4mr int4multirange);
SELECT pgsink.add_table('typ.ranges', import => false);
INSERT INTO typ.ranges VALUES
    (1, '[1,10)', '(1,10]', '[1.5,2.5]', '[2024-01-01,2024-02-01)',
        '[2024-01-01 00:00,2024-01-02 00:00)', '[2024-01-01 00:00+00,2024-01-02 00:00+00)',
        '{[1,3),[5,7)}'),
    (2, 'empty', '(,)', '(,1.5]', '[2024-01-01,)', '(,2024-01-01 12:00]',
        '[2024-01-01 12:00+05,infinity)', '{}');

-- Arrays: JSON arrays of the elements' encodings; nested for several
-- dimensions; null elements; empty arrays.
CREATE TABLE typ.arrays (id int PRIMARY KEY, i4a int4[], i8a int8[], ta text[], ba bool[],
                         na numeric[], fa float8[], da date[], tstza timestamptz[],
                         ja jsonb[], bya bytea[], ua uuid[], i4ra int4range[]);
SELECT pgsink.add_table('typ.arrays', import => false);
INSERT INTO typ.arrays VALUES
    (1, '{1,2,3}', '{1,-9223372036854775808}', '{a,"b c","with \"quotes\"","back\\slash",NULL,"NULL"}',
        '{t,f,NULL}', '{1.5,NaN,Infinity}', '{1.5,NaN,-Infinity}', '{2024-02-29,infinity}',
        '{"2024-02-29 12:00:00+00"}', ARRAY['{"a":1}'::jsonb, '[1,2]', 'null', NULL],
        '{"\\x0102"}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{"[1,2)",empty}'),
    (2, '{{1,2},{3,4},{5,6}}', '{{{1}},{{2}}}', '{{a,NULL},{"}",""}}', '{}', '{}', '{}', '{}',
        '{}', '{}', '{}', '{}', '{}'),
    (3, '{NULL}', '[0:1]={7,8}', '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- User types: an enum, domains, a composite type, a composite of a domain,
-- an array of an enum, an array of a domain.
CREATE TYPE typ.mood AS ENUM ('sad', 'ok', 'happy "quoted"');
CREATE DOMAIN typ.posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN typ.email AS text CHECK (VALUE LIKE '%@%');
CREATE DOMAIN typ.big AS int8;
CREATE DOMAIN typ.stamp AS timestamptz;
CREATE DOMAIN typ.int_list AS int4[];
CREATE TYPE typ.pair AS (a int, b text);
CREATE TABLE typ.user_types (id int PRIMARY KEY, mood typ.mood, pos typ.posint,
                             email typ.email, big typ.big, stamp typ.stamp, il typ.int_list,
                             pair typ.pair, moods typ.mood[], positives typ.posint[],
                             pairs typ.pair[]);
SELECT pgsink.add_table('typ.user_types', import => false);
INSERT INTO typ.user_types VALUES
    (1, 'happy "quoted"', 42, 'a@example.com', 12345678901, '2024-02-29 12:00:00+01', '{1,2}',
        ROW(1, 'x, "y"'), '{sad,ok}', '{1,2}', ARRAY[ROW(1, 'a'), ROW(2, NULL)]::typ.pair[]),
    (2, 'sad', NULL, NULL, NULL, NULL, NULL, ROW(NULL, NULL), '{}', NULL, NULL);

SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;

SELECT * FROM typ.schema_of('typ.numbers');
SELECT * FROM typ.values_of('typ.numbers');
SELECT * FROM typ.schema_of('typ.texts');
SELECT * FROM typ.values_of('typ.texts');
SELECT * FROM typ.schema_of('typ.times');
SELECT * FROM typ.values_of('typ.times');
SELECT * FROM typ.schema_of('typ.misc');
SELECT * FROM typ.values_of('typ.misc');
SELECT * FROM typ.values_of('typ.multiline');
SELECT * FROM typ.schema_of('typ.geometry');
SELECT * FROM typ.values_of('typ.geometry');
SELECT * FROM typ.schema_of('typ.ranges');
SELECT * FROM typ.values_of('typ.ranges');
SELECT * FROM typ.schema_of('typ.arrays');
SELECT * FROM typ.values_of('typ.arrays');
SELECT * FROM typ.schema_of('typ.user_types');
SELECT * FROM typ.values_of('typ.user_types');

-- Round trip: each value, read back from the changelog, is the value in the
-- table (strings and numbers through the column's type; bytea from base64;
-- json/jsonb and arrays compared as JSON).
SELECT 'numbers' AS tbl, t.id
  FROM typ.afters_of('typ.numbers') AS c(a)
  JOIN typ.numbers t ON t.id = (a->>'id')::int
 WHERE NOT ((a->>'i2')::int2 IS NOT DISTINCT FROM t.i2 AND (a->>'i4')::int4 IS NOT DISTINCT FROM t.i4
       AND (a->>'i8')::int8 IS NOT DISTINCT FROM t.i8 AND (a->>'n')::numeric IS NOT DISTINCT FROM t.n
       AND (a->>'f4')::float4 IS NOT DISTINCT FROM t.f4 AND (a->>'f8')::float8 IS NOT DISTINCT FROM t.f8
       AND (a->>'m')::money IS NOT DISTINCT FROM t.m AND (a->>'o')::oid IS NOT DISTINCT FROM t.o);
SELECT 'texts' AS tbl, t.id
  FROM typ.afters_of('typ.texts') AS c(a)
  JOIN typ.texts t ON t.id = (a->>'id')::int
 WHERE NOT ((a->>'t') IS NOT DISTINCT FROM t.t AND (a->>'vc') IS NOT DISTINCT FROM t.vc
            AND (a->>'c')::char(4) IS NOT DISTINCT FROM t.c AND (a->>'nm')::name IS NOT DISTINCT FROM t.nm
            AND (a->>'char')::"char" IS NOT DISTINCT FROM t."char"
            AND decode(a->>'by', 'base64') IS NOT DISTINCT FROM t.by
            AND (a->>'b')::bool IS NOT DISTINCT FROM t.b);
SELECT 'times' AS tbl, t.id
  FROM typ.afters_of('typ.times') AS c(a)
  JOIN typ.times t ON t.id = (a->>'id')::int
 WHERE NOT ((a->>'d')::date IS NOT DISTINCT FROM t.d AND (a->>'t')::time IS NOT DISTINCT FROM t.t
            AND (a->>'ttz')::timetz IS NOT DISTINCT FROM t.ttz
            AND (a->>'ts')::timestamp IS NOT DISTINCT FROM t.ts
            AND (a->>'tstz')::timestamptz IS NOT DISTINCT FROM t.tstz
            AND (a->>'iv')::interval IS NOT DISTINCT FROM t.iv);
-- Dates and times are written as PostgreSQL's to_json() writes them (in UTC).
SET TimeZone = 'UTC';
SELECT t.id, c.a->'d' AS d, to_json(t.d) AS to_json_d, c.a->'t' AS t, to_json(t.t) AS to_json_t,
       c.a->'ts' AS ts, to_json(t.ts) AS to_json_ts, c.a->'tstz' AS tstz, to_json(t.tstz) AS to_json_tstz
  FROM typ.afters_of('typ.times') AS c(a)
  JOIN typ.times t ON t.id = (c.a->>'id')::int
 WHERE c.a->'d' IS DISTINCT FROM coalesce(to_jsonb(t.d), 'null')
    OR c.a->'t' IS DISTINCT FROM coalesce(to_jsonb(t.t), 'null')
    OR c.a->'ts' IS DISTINCT FROM coalesce(to_jsonb(t.ts), 'null')
    OR c.a->'tstz' IS DISTINCT FROM coalesce(to_jsonb(t.tstz), 'null');
SET TimeZone = 'America/New_York';
SELECT 'misc' AS tbl, t.id
  FROM typ.afters_of('typ.misc') AS c(a)
  JOIN typ.misc t ON t.id = (a->>'id')::int
 WHERE NOT ((a->>'u')::uuid IS NOT DISTINCT FROM t.u
            AND (CASE WHEN a->'j' = 'null' AND t.j IS NULL THEN NULL ELSE a->'j' END) IS NOT DISTINCT FROM t.j::jsonb
            AND (CASE WHEN a->'jb' = 'null' AND t.jb IS NULL THEN NULL ELSE a->'jb' END) IS NOT DISTINCT FROM t.jb
            AND (a->>'x') IS NOT DISTINCT FROM t.x::text AND (a->>'ip')::inet IS NOT DISTINCT FROM t.ip
            AND (a->>'net')::cidr IS NOT DISTINCT FROM t.net AND (a->>'mac')::macaddr IS NOT DISTINCT FROM t.mac
            AND (a->>'mac8')::macaddr8 IS NOT DISTINCT FROM t.mac8
            AND (a->>'bits')::bit(8) IS NOT DISTINCT FROM t.bits AND (a->>'vbits')::varbit IS NOT DISTINCT FROM t.vbits
            AND (a->>'tsv')::tsvector IS NOT DISTINCT FROM t.tsv AND (a->>'tsq')::tsquery::text IS NOT DISTINCT FROM t.tsq::text
            AND (a->>'lsn')::pg_lsn IS NOT DISTINCT FROM t.lsn);
SELECT 'ranges' AS tbl, t.id
  FROM typ.afters_of('typ.ranges') AS c(a)
  JOIN typ.ranges t ON t.id = (a->>'id')::int
 WHERE NOT ((a->>'i4r')::int4range IS NOT DISTINCT FROM t.i4r AND (a->>'i8r')::int8range IS NOT DISTINCT FROM t.i8r
            AND (a->>'nr')::numrange IS NOT DISTINCT FROM t.nr AND (a->>'dr')::daterange IS NOT DISTINCT FROM t.dr
            AND (a->>'tsr')::tsrange IS NOT DISTINCT FROM t.tsr AND (a->>'tstzr')::tstzrange IS NOT DISTINCT FROM t.tstzr
            AND (a->>'i4mr')::int4multirange IS NOT DISTINCT FROM t.i4mr);
SELECT 'user_types' AS tbl, t.id
  FROM typ.afters_of('typ.user_types') AS c(a)
  JOIN typ.user_types t ON t.id = (a->>'id')::int
 WHERE NOT ((a->>'mood')::typ.mood IS NOT DISTINCT FROM t.mood AND (a->>'pos')::typ.posint IS NOT DISTINCT FROM t.pos
            AND (a->>'email')::typ.email IS NOT DISTINCT FROM t.email AND (a->>'big')::typ.big IS NOT DISTINCT FROM t.big
            AND (a->>'stamp')::typ.stamp IS NOT DISTINCT FROM t.stamp
            AND (a->>'pair')::typ.pair IS NOT DISTINCT FROM t.pair);

-- The server's settings do not change the changelog either: with another
-- TimeZone, DateStyle and IntervalStyle for the worker, the same rows are
-- encoded exactly as above.
CREATE TABLE typ.settings (id int PRIMARY KEY, tstz timestamptz, tstzr tstzrange, d date,
                           ts timestamp, iv interval, tstza timestamptz[], bc date, far timestamp);
SELECT pgsink.add_table('typ.settings', import => false);
INSERT INTO typ.settings VALUES
    (1, '2024-02-29 12:00:00+00', '[2024-01-01 00:00+00,2024-01-02 00:00+00)', '2024-02-29',
        '2024-02-29 12:00:00', '1 day 02:03:04', '{"2024-02-29 12:00:00+00"}',
        '0044-03-15 BC', '10000-01-01 00:00:00');
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
ALTER SYSTEM SET TimeZone = 'Asia/Kolkata';
ALTER SYSTEM SET DateStyle = 'SQL, DMY';
ALTER SYSTEM SET IntervalStyle = 'iso_8601';
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
INSERT INTO typ.settings SELECT 2, tstz, tstzr, d, ts, iv, tstza, bc, far FROM typ.settings WHERE id = 1;
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
ALTER SYSTEM RESET TimeZone;
ALTER SYSTEM RESET DateStyle;
ALTER SYSTEM RESET IntervalStyle;
SELECT pg_reload_conf();
SELECT * FROM typ.values_of('typ.settings') WHERE id = '1';
SELECT v1.col, v1.value AS before_reload, v2.value AS after_reload
  FROM typ.values_of('typ.settings') v1 JOIN typ.values_of('typ.settings') v2 USING (col)
 WHERE v1.id = '1' AND v2.id = '2' AND v1.value IS DISTINCT FROM v2.value;

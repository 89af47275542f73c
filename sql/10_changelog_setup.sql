-- The changelog tests (10_ and up) read the file the stream worker writes
-- (pgsink.file_path = 'pgsink_changes.jsonl', in the data directory) and print
-- the entries of their own tables, one per line, in file order.
--
-- regress_changelog() reads and checks the whole file: every line is one JSON
-- object, a Schema entry {"timestamp","lsn","schema"} or a Modification
-- {"timestamp","sequence","namespace","name","op","lsn","xid","before",
-- "after"[,"unchanged"]}; timestamps are RFC 3339 UTC with microseconds;
-- lsn is PostgreSQL's text form of a pg_lsn; the entries of one transaction
-- are consecutive, share lsn, xid and timestamp, and number their
-- Modifications 1..n without holes; transactions appear in increasing lsn
-- order; a Schema entry precedes the first Modification of its relation, and
-- the next entry of its transaction, if any, is a Modification of that
-- relation. Any violation raises an error naming the line.
--
-- regress_changes(tables) returns the entries of the given tables
-- ('schema.table', or 'schema.*' for every table of a schema) as the raw
-- JSON text of the line (original key order and number formatting) minus the
-- keys that differ from run to run: timestamp, lsn and xid.

-- The Avro name pgsink gives a relation in its Schema entries.
CREATE FUNCTION regress_avro_name(nsp text, rel text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT string_agg(CASE WHEN n = '' OR n ~ '^[0-9]' THEN '_' || n ELSE n END, '.' ORDER BY o)
      FROM unnest(ARRAY[regexp_replace(nsp, '[^A-Za-z0-9_]', '_', 'g'),
                        regexp_replace(rel, '[^A-Za-z0-9_]', '_', 'g')]) WITH ORDINALITY AS u(n, o)
$$;

CREATE FUNCTION regress_changelog(path text DEFAULT 'pgsink_changes.jsonl')
RETURNS TABLE (lineno int, raw json, entry jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    line text;
    e jsonb;
    ts_re constant text := '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$';
    ts timestamptz;
    lsn pg_lsn;
    rel text;
    announced text[] := '{}';
    expect_modification_of text;  -- set right after a Schema entry
    -- the current transaction (group of consecutive entries sharing lsn)
    g_lsn pg_lsn;
    g_ts text;
    g_xid jsonb;
    g_seq bigint;
    g_has_xid boolean;
    lines text[];
    n int;
BEGIN
    lines := regexp_split_to_array(CASE WHEN (pg_stat_file(path, true)).size IS NOT NULL
                                        THEN pg_read_file(path) ELSE '' END, E'\n');
    -- Every line ends with a newline: the text after the last one is empty.
    IF lines[array_upper(lines, 1)] <> '' THEN
        RAISE EXCEPTION 'changelog line %: no newline at the end of the file: %',
            array_upper(lines, 1), left(lines[array_upper(lines, 1)], 200);
    END IF;
    FOR n IN 1 .. array_upper(lines, 1) - 1 LOOP
        line := lines[n];
        IF line = '' THEN
            RAISE EXCEPTION 'changelog line %: empty', n;
        END IF;
        BEGIN
            e := line::jsonb;
            raw := line::json;
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'changelog line %: not JSON (%): %', n, SQLERRM, left(line, 200);
        END;
        IF jsonb_typeof(e) <> 'object' THEN
            RAISE EXCEPTION 'changelog line %: not a JSON object: %', n, left(line, 200);
        END IF;

        -- timestamp
        IF jsonb_typeof(e->'timestamp') IS DISTINCT FROM 'string' OR e->>'timestamp' !~ ts_re THEN
            RAISE EXCEPTION 'changelog line %: bad timestamp: %', n, left(line, 200);
        END IF;
        ts := (e->>'timestamp')::timestamptz;
        IF ts > clock_timestamp() OR ts < pg_postmaster_start_time() - interval '1 minute' THEN
            RAISE EXCEPTION 'changelog line %: timestamp % is not a time of this test run', n, ts;
        END IF;

        -- lsn: PostgreSQL's own text form
        IF jsonb_typeof(e->'lsn') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'changelog line %: lsn missing or not a string: %', n, left(line, 200);
        END IF;
        lsn := (e->>'lsn')::pg_lsn;
        IF lsn::text <> e->>'lsn' OR lsn = '0/0' THEN
            RAISE EXCEPTION 'changelog line %: lsn % is not in pg_lsn text form', n, e->>'lsn';
        END IF;

        -- a new transaction starts where the lsn changes
        IF g_lsn IS NULL OR lsn <> g_lsn THEN
            IF g_lsn IS NOT NULL AND lsn < g_lsn THEN
                RAISE EXCEPTION 'changelog line %: lsn % goes back (previous transaction: %)',
                    n, lsn, g_lsn;
            END IF;
            -- (a Schema entry may end its transaction: the import of an empty
            -- table announces the table and has no rows)
            expect_modification_of := NULL;
            g_lsn := lsn;
            g_ts := e->>'timestamp';
            g_seq := 0;
            g_has_xid := false;
            g_xid := NULL;
        ELSIF e->>'timestamp' <> g_ts THEN
            RAISE EXCEPTION 'changelog line %: timestamp % differs from its transaction''s (%)',
                n, e->>'timestamp', g_ts;
        END IF;

        IF e ? 'schema' THEN
            IF (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(e) k)
               <> '{lsn,relid,schema,timestamp}'
               OR jsonb_typeof(e->'relid') <> 'number' THEN
                RAISE EXCEPTION 'changelog line %: unexpected keys in a Schema entry: %',
                    n, left(line, 200);
            END IF;
            IF e->'schema'->>'type' IS DISTINCT FROM 'record'
               OR e->'schema'->>'name' IS DISTINCT FROM 'value'
               OR jsonb_typeof(e->'schema'->'namespace') IS DISTINCT FROM 'string'
               OR jsonb_typeof(e->'schema'->'fields') IS DISTINCT FROM 'array'
               OR jsonb_typeof(e->'schema'->'key') IS DISTINCT FROM 'array' THEN
                RAISE EXCEPTION 'changelog line %: malformed Avro record schema: %', n, left(line, 200);
            END IF;
            IF expect_modification_of IS NOT NULL THEN
                RAISE EXCEPTION 'changelog line %: Schema entry follows the Schema entry of %',
                    n, expect_modification_of;
            END IF;
            rel := e->'schema'->>'namespace';
            expect_modification_of := rel;
            announced := array_append(announced, rel);
        ELSE
            IF NOT (e ?& '{timestamp,sequence,namespace,name,op,lsn,xid,before,after}')
               OR EXISTS (SELECT FROM jsonb_object_keys(e) k
                           WHERE k NOT IN ('timestamp', 'sequence', 'namespace', 'name', 'op',
                                           'lsn', 'xid', 'before', 'after', 'unchanged',
                                           'resync_since', 'relid')) THEN
                RAISE EXCEPTION 'changelog line %: unexpected keys in a Modification: %',
                    n, left(line, 200);
            END IF;
            IF e->>'op' NOT IN ('insert', 'update', 'delete', 'truncate', 'import',
                                'resync_start', 'resync_end', 'drop') THEN
                RAISE EXCEPTION 'changelog line %: unknown op %', n, e->>'op';
            END IF;
            -- resync_since: only on resync_end, where it is required
            IF (e->>'op' = 'resync_end') <> (e ? 'resync_since')
               OR (e ? 'resync_since' AND e->>'resync_since' !~ '^[0-9A-F]{1,8}/[0-9A-F]{1,8}$') THEN
                RAISE EXCEPTION 'changelog line %: bad resync_since: %', n, left(line, 200);
            END IF;
            -- xid: the transaction id (null only for imported rows and resyncs)
            IF e->>'op' IN ('import', 'resync_start', 'resync_end') THEN
                IF e->'xid' <> 'null' THEN
                    RAISE EXCEPTION 'changelog line %: an import entry with an xid', n;
                END IF;
            ELSIF jsonb_typeof(e->'xid') <> 'number' OR (e->>'xid')::numeric < 3
                  OR (e->>'xid')::numeric <> trunc((e->>'xid')::numeric) THEN
                RAISE EXCEPTION 'changelog line %: bad xid %', n, e->'xid';
            END IF;
            IF g_has_xid AND e->'xid' <> g_xid THEN
                RAISE EXCEPTION 'changelog line %: xid % differs from its transaction''s (%)',
                    n, e->'xid', g_xid;
            END IF;
            g_has_xid := true;
            g_xid := e->'xid';
            -- sequence: 1..n within the transaction
            g_seq := g_seq + 1;
            IF jsonb_typeof(e->'sequence') <> 'number' OR (e->>'sequence')::numeric <> g_seq THEN
                RAISE EXCEPTION 'changelog line %: sequence % where % was due (lsn %)',
                    n, e->'sequence', g_seq, lsn;
            END IF;
            -- before/after by op
            IF jsonb_typeof(e->'before') NOT IN ('object', 'null')
               OR jsonb_typeof(e->'after') NOT IN ('object', 'null')
               OR (e->>'op' IN ('insert', 'import') AND
                   (e->'before' <> 'null' OR e->'after' = 'null'))
               OR (e->>'op' = 'update' AND e->'after' = 'null')
               OR (e->>'op' = 'delete' AND e->'after' <> 'null')
               OR (e->>'op' IN ('truncate', 'resync_start', 'resync_end', 'drop')
                   AND (e->'before' <> 'null' OR e->'after' <> 'null'))
               OR ((e->>'op' = 'drop') <> (e ? 'relid')) THEN
                RAISE EXCEPTION 'changelog line %: before/after do not fit op %: %',
                    n, e->>'op', left(line, 300);
            END IF;
            IF e ? 'unchanged' AND (jsonb_typeof(e->'unchanged') <> 'array'
                                    OR jsonb_array_length(e->'unchanged') = 0) THEN
                RAISE EXCEPTION 'changelog line %: bad "unchanged": %', n, e->'unchanged';
            END IF;
            -- a Schema entry came first (a drop may come alone: the table is gone)
            rel := regress_avro_name(e->>'namespace', e->>'name');
            IF NOT rel = ANY (announced) AND e->>'op' <> 'drop' THEN
                RAISE EXCEPTION 'changelog line %: Modification of % before any Schema entry of it',
                    n, rel;
            END IF;
            IF expect_modification_of IS NOT NULL AND expect_modification_of <> rel THEN
                RAISE EXCEPTION 'changelog line %: the Schema entry of % is followed by a Modification of %',
                    n, expect_modification_of, rel;
            END IF;
            expect_modification_of := NULL;
        END IF;

        lineno := n;
        entry := e;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Does an entry belong to one of tables ('schema.table' or 'schema.*')?
CREATE FUNCTION regress_entry_matches(e jsonb, tables text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT EXISTS (
        SELECT FROM unnest(tables) AS t
         WHERE CASE WHEN e ? 'schema'
                    THEN e->'schema'->>'namespace' = t
                         OR (t LIKE '%.*' AND split_part(e->'schema'->>'namespace', '.', 1) = left(t, -2))
                    ELSE (e->>'namespace') || '.' || (e->>'name') = t
                         OR (t LIKE '%.*' AND e->>'namespace' = left(t, -2))
               END)
$$;

-- The raw text of a JSON object without some of its keys, in its own key order.
CREATE FUNCTION regress_without_keys(j json, keys text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{' || coalesce(string_agg(to_json(k)::text || ':' || v::text, ',' ORDER BY o), '') || '}'
      FROM json_each(j) WITH ORDINALITY AS x(k, v, o)
     WHERE NOT k = ANY (keys)
$$;

CREATE FUNCTION regress_changes(tables text[]) RETURNS SETOF text
LANGUAGE sql AS $$
    SELECT regress_without_keys(raw, '{timestamp,lsn,xid,relid}')
      FROM regress_changelog()
     WHERE regress_entry_matches(entry, tables)
     ORDER BY lineno
$$;

-- The checks catch what they should: fake changelogs, written to a scratch
-- file in the data directory, each with one defect.
CREATE FUNCTION regress_check_fake(lines text[]) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('COPY (SELECT unnest(%L::text[])) TO %L', lines,
                   current_setting('data_directory') || '/regress_fake.jsonl');
    PERFORM count(*) FROM regress_changelog('regress_fake.jsonl');
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN regexp_replace(SQLERRM, ': \{.*$', ': ...');
END
$$;
\x on
SELECT regress_check_fake(ARRAY[s, m1, m2]) AS well_formed,
       regress_check_fake(ARRAY[s, m1, replace(m2, '"sequence":2', '"sequence":3')]) AS hole,
       regress_check_fake(ARRAY[s, m1, replace(m2, '"0/1000"', '"0/1001"')]) AS lsn_differs,
       regress_check_fake(ARRAY[s, m1, replace(m2, '"xid":750', '"xid":751')]) AS xid_differs,
       regress_check_fake(ARRAY[m1, m2]) AS no_schema,
       regress_check_fake(ARRAY[s, replace(m1, '"0/1000"', '"0/01000"'), m2]) AS lsn_form,
       regress_check_fake(ARRAY[s, replace(m1, '.000001+00:00', '+00:00'), m2]) AS timestamp_form,
       regress_check_fake(ARRAY[s, replace(m1, ',"xid":750', ''), m2]) AS no_xid,
       regress_check_fake(ARRAY[s, m1, m2, s2, m3]) AS lsn_goes_back,
       regress_check_fake(ARRAY[s, m1, left(m2, -1)]) AS not_json,
       regress_check_fake(ARRAY[s, m1, '', m2]) AS empty_line
  FROM (SELECT replace(x, 'TS', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.000001+00:00')) AS s,
               replace(y, 'TS', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.000001+00:00')) AS m1,
               replace(replace(y, 'TS', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.000001+00:00')),
                       '"sequence":1', '"sequence":2') AS m2,
               replace(replace(x, 'TS', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.000001+00:00')),
                       '"0/1000"', '"0/F00"') AS s2,
               replace(replace(y, 'TS', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.000001+00:00')),
                       '"0/1000"', '"0/F00"') AS m3
          FROM (VALUES ('{"timestamp":"TS","lsn":"0/1000","schema":{"namespace":"a.b","type":"record","name":"value","fields":[],"key":[]},"relid":1}',
                        '{"timestamp":"TS","sequence":1,"namespace":"a","name":"b","op":"insert","lsn":"0/1000","xid":750,"before":null,"after":{}}'))
               AS v(x, y)) f;
\x off

-- A table of this test: its first insert is preceded by its Schema entry.
CREATE SCHEMA regress_setup;
CREATE TABLE regress_setup.t (id int PRIMARY KEY, msg text);
SELECT pgsink.add_table('regress_setup.t', import => false);
INSERT INTO regress_setup.t VALUES (1, 'hello world');
SELECT pgsink.wait_for_delivery() IS NOT NULL AS delivered;
\pset format unaligned
SELECT * FROM regress_changes('{regress_setup.t}');
-- 'schema.*' selects the same.
SELECT * FROM regress_changes('{regress_setup.*}');
\pset format aligned
-- Other tables are not selected.
SELECT count(*) FROM regress_changes('{regress_setup.other,other.*}');
-- The whole changelog so far is well-formed (the earlier tests captured
-- tables too).
SELECT count(*) > 0 AS well_formed FROM regress_changelog();

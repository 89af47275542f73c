# The ClickHouse sink against a real server (Debian's clickhouse-server,
# 18.16, started by the test as its own user: PgsinkClickHouse.pm):
# (1) inserts, updates, deletes of a table of many types and of a table with
#     a composite key: each ClickHouse table (FINAL, not deleted) equals its
#     source, value for value (floats bit for bit, numeric digit for digit,
#     json and jsonb text as PostgreSQL prints it);
# (2) updates that leave a TOASTed column unchanged keep its value, whether
#     the row was written in the same batch or long before (read back from
#     ClickHouse), also when the key changes;
# (3) TRUNCATE removes the rows before it and not those after;
# (4) a ClickHouse restart and a kill -9 of the postmaster mid-stream: equal
#     again afterwards;
# (5) the view <schema>_<table>_current gives the current rows;
# (6) a value ClickHouse refuses is parked alone, with its message;
# (7) tables that <schema>_<table> would name alike stay apart;
# (8) a table whose key changes: its changes are parked with the reason, not
#     mixed into a table ordered by the old key;
# (9) an import of existing rows under concurrent writes ends equal;
# (10)-(13) TOAST carry-over by odd keys, refusals, names, schema changes;
# (14) pgsink.clickhouse_url with settings kept, with a query refused.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkClickHouse;
use PgsinkImport;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = pgsink_node('clickhouse', extra_conf => q{
pgsink.sink = 'file, clickhouse'
pgsink.retry_max_interval = '1s'
pgsink.http_timeout = '20s'
});
my $ch = ch_start($node->basedir . '/clickhouse');
$node->append_conf('postgresql.conf', "pgsink.clickhouse_url = '$ch->{url}'");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id bigint PRIMARY KEY, v text, n numeric(12,2), f double precision, r real,
                b boolean, u uuid, big text, arr int[], j json, jb jsonb, tags text[]);
ALTER TABLE t ALTER big SET STORAGE EXTERNAL;
CREATE TABLE c (a int, b text, x int, PRIMARY KEY (a, b));
SELECT pgsink.add_table('t');
SELECT pgsink.add_table('c');
});

sub workload
{
	my ($base) = @_;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT $base + g, 'v' || g, g * 1.25, g / 3.0, g / 7.0, g % 2 = 0,
       md5(($base + g)::text)::uuid, repeat(md5(g::text), 300), ARRAY[g, NULL],
       ('{"b": 1.10, "a": [' || g || ', 2.50, 12345678901234567890]}')::json,
       ('{"b": 1.10, "a": [' || g || ', 2.50, 12345678901234567890]}')::jsonb,
       ARRAY['t' || g, NULL, 'x"y']
  FROM generate_series(1, 200) g;
INSERT INTO t VALUES ($base + 201, NULL, NULL, 'NaN', '-Infinity', NULL, NULL, NULL, NULL, '{"k": null}', NULL, NULL),
                     ($base + 202, 'edge', 1234567890.99, '-0', 'Infinity', true, NULL, 'x', '{}', '"s/x"', '[]', '{}'),
                     ($base + 203, 'tiny', -0.01, 5e-324, 1.4e-45, false, NULL, '', '{1}', '1e400', '-0', '{NULL}');
UPDATE t SET v = v || ' x' WHERE id BETWEEN $base + 1 AND $base + 200 AND id % 3 = 0;
BEGIN;
INSERT INTO t VALUES ($base + 300, 'in one', 1, 1, 1, true, NULL, repeat('q', 9000), NULL, NULL, NULL, NULL);
UPDATE t SET v = 'same batch' WHERE id = $base + 300;
COMMIT;
DELETE FROM t WHERE id BETWEEN $base + 1 AND $base + 200 AND id % 10 = 0;
UPDATE t SET id = id + 100000 WHERE id BETWEEN $base + 1 AND $base + 200 AND id % 7 = 0;
INSERT INTO c SELECT g, 'k' || g, g FROM generate_series($base, $base + 49) g;
UPDATE c SET x = x + 1 WHERE a % 2 = 0;
DELETE FROM c WHERE a % 5 = 0;
UPDATE c SET b = b || 'z' WHERE a % 3 = 0;
});
}

# Each table's rows, as the source has them and as ClickHouse has them.
my %compare = (
	t => [
		q{SELECT id, coalesce(v, 'N'), coalesce(n::text, 'N'),
		   coalesce((('x' || encode(float8send(f), 'hex'))::bit(64)::bigint)::text, 'N'),
		   coalesce((('x' || encode(float4send(r), 'hex'))::bit(32)::bigint)::text, 'N'),
		   coalesce(b::int::text, 'N'), coalesce(u::text, 'N'), md5(coalesce(big, '')),
		   coalesce(array_to_json(arr)::text, 'N'), coalesce(j::text, 'N'), coalesce(jb::text, 'N'),
		   coalesce(cardinality(tags) || ':' || array_to_string(tags, '|', 'N'), 'N')
		  FROM t WHERE id < 900000 ORDER BY id},
		q{SELECT id, ifNull(v, 'N'), ifNull(toString(n), 'N'),
		   ifNull(toString(toInt64(f__bits)), 'N'), ifNull(toString(r__bits), 'N'),
		   ifNull(toString(b), 'N'), ifNull(toString(u), 'N'), lower(hex(MD5(ifNull(big, '')))),
		   if(arr__null = 1, 'N', replaceAll(toString(arr), 'NULL', 'null')), ifNull(j, 'N'),
		   ifNull(jb, 'N'),
		   if(tags__null = 1, 'N', concat(toString(length(tags)), ':',
		      arrayStringConcat(arrayMap(x -> ifNull(x, 'N'), tags), '|')))
		  FROM pgsink.public_t FINAL WHERE _pgsink_deleted = 0 AND id < 900000 ORDER BY id FORMAT TSV}
	],
	c => [
		q{SELECT a, b, coalesce(x::text, 'N') FROM c ORDER BY a, b},
		q{SELECT a, b, ifNull(toString(x), 'N') FROM pgsink.public_c FINAL
		  WHERE _pgsink_deleted = 0 ORDER BY a, b FORMAT TSV}
	]);

sub equal_tables
{
	my ($label) = @_;
	wait_delivered($node, 'postgres', $label, 120);
	for my $table (sort keys %compare)
	{
		my ($pg_sql, $ch_sql) = @{ $compare{$table} };
		my $want = $node->safe_psql('postgres', $pg_sql, extra_params => [ '-F', "\t" ]);
		my $got = ch_query($ch, $ch_sql);
		$got =~ s/\n$//;
		my @w = split /\n/, $want;
		my @g = split /\n/, $got;
		my $first_diff = '';
		for my $i (0 .. ($#w > $#g ? $#w : $#g))
		{
			next if ($w[$i] // '') eq ($g[$i] // '');
			$first_diff = "source: " . ($w[$i] // '(none)') . "\nclickhouse: " . ($g[$i] // '(none)');
			last;
		}
		ok($want eq $got, "$label: ClickHouse's $table equals the source (" . scalar(@w) . ' rows)')
		  or diag($first_diff);
	}
}

# (1), (2)
workload(0);
equal_tables('(1) first load');
is(sink_status($node, 'clickhouse')->{state}, 'idle', '(1) the sink is idle');
is($node->safe_psql('postgres', "SELECT count(*) FROM pgsink.dead_letters"), 0,
	'(1) nothing parked');

# (2) TOAST: rows written long ago, updated now without touching big.
$node->safe_psql('postgres', q{UPDATE t SET v = 'later' WHERE id BETWEEN 1 AND 50});
$node->safe_psql('postgres', q{UPDATE t SET id = id + 500000 WHERE id BETWEEN 51 AND 60});
equal_tables('(2) unchanged TOAST from ClickHouse, key changes included');

# (3) TRUNCATE between two loads of c, in one transaction.
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO c VALUES (-1, 'before', 1);
TRUNCATE c;
INSERT INTO c VALUES (-2, 'after', 2);
COMMIT;
});
equal_tables('(3) truncate');

# (4) ClickHouse restarts while rows flow; then kill -9 of the postmaster.
ch_stop($ch);
workload(10000);
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'clickhouse'", 'retrying', 30),
	'(4) the sink retries while ClickHouse is down');
ch_restart($ch);
workload(20000);
crash_node($node);
start_after_crash($node);
workload(30000);
equal_tables('(4) after a ClickHouse restart and kill -9');

# (5) The view.
is(ch_query($ch, 'SELECT count() FROM pgsink.public_t_current') + 0,
	$node->safe_psql('postgres', 'SELECT count(*) FROM t'), '(5) the view has the current rows');

# (6) A value ClickHouse cannot hold (numeric NaN into a Decimal): that
# entry alone is parked with ClickHouse's message; the rest goes on.
$node->safe_psql('postgres', q{
INSERT INTO t (id, v, n) VALUES (900001, 'before nan', 1), (900002, 'nan', 'NaN'), (900003, 'after nan', 2);
INSERT INTO t (id, arr) VALUES (900004, '{{1,2},{3,4}}');
});
wait_delivered($node, 'postgres', '(6) a refused value');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND entry LIKE '%900002%' "
		  . "AND response LIKE '%Code: %'"),
	1, '(6) the entry is parked, with ClickHouse\'s answer');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND entry LIKE '%900004%'"),
	1, '(6) a two-dimensional value of an int[] column is parked too');
is(ch_query($ch, "SELECT groupArray(id) FROM (SELECT id FROM pgsink.public_t FINAL "
		  . "WHERE id > 900000 AND _pgsink_deleted = 0 ORDER BY id)"),
	"[900001,900003]\n", '(6) the entries around it are delivered');

# (7) Names that <schema>_<table> would make equal stay apart.
$node->safe_psql('postgres', q{
CREATE SCHEMA a_b; CREATE SCHEMA a;
CREATE TABLE a_b.c (id int PRIMARY KEY, who text);
CREATE TABLE a.b_c (id int PRIMARY KEY, who text);
SELECT pgsink.add_table('a_b.c'); SELECT pgsink.add_table('a.b_c');
INSERT INTO a_b.c VALUES (1, 'a_b.c'); INSERT INTO a.b_c VALUES (1, 'a.b_c');
});
wait_delivered($node, 'postgres', '(7) ambiguous names');
is(ch_query($ch, "SELECT who FROM pgsink.a_b_c FINAL"), "a.b_c\n",
	'(7) a.b_c is pgsink.a_b_c');
my $other = ch_query($ch, "SELECT name FROM system.tables WHERE database = 'pgsink' "
	  . "AND match(name, '^a_b_c_[0-9a-f]+\$') FORMAT TSVRaw");
chomp $other;
is(ch_query($ch, "SELECT who FROM pgsink.`$other` FINAL"), "a_b.c\n",
	"(7) a_b.c has a table of its own ($other)");

# (8) The key of a table changes: ClickHouse cannot reorder it, so its
# changes are parked with a clear reason instead of being mixed in.
$node->safe_psql('postgres', q{
CREATE TABLE k (id int PRIMARY KEY, x int NOT NULL);
SELECT pgsink.add_table('k');
INSERT INTO k VALUES (1, 10);
});
wait_delivered($node, 'postgres', '(8) before the key change');
# Its import done too: a row imported after the key change is parked as well.
ok(defined wait_imports($node, 'postgres', 60), '(8) the import of k is done');
$node->safe_psql('postgres', q{
ALTER TABLE k DROP CONSTRAINT k_pkey, ADD PRIMARY KEY (x);
INSERT INTO k VALUES (2, 20);
});
wait_delivered($node, 'postgres', '(8) after the key change');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND \"table\" = 'public.k' "
		  . "AND response LIKE '%is ordered by (id) but the table''s key is now (x)%'"),
	1, '(8) the change after it is parked, saying why');
is(ch_query($ch, "SELECT count() FROM pgsink.public_k FINAL") + 0, 1, '(8) and not mixed in');

# (9) An import of existing rows while they are being changed: imported
# rows carry the high watermark's LSN, so none overwrites a newer change.
my $writer = import_under_writes($node, rows => 30000, rounds => 300, new_from => 40000);
$writer->finish;
ok(defined wait_imports($node, 'postgres', 120), '(9) the import is done');
wait_delivered($node, 'postgres', '(9) import under writes');
is(ch_query($ch, "SELECT id, v, note FROM pgsink.public_im FINAL WHERE _pgsink_deleted = 0 "
		  . "ORDER BY id FORMAT TSV"),
	$node->safe_psql('postgres', 'SELECT id, v, note FROM im ORDER BY id', extra_params => [ '-F', "\t" ])
	  . "\n",
	'(9) ClickHouse\'s im equals the source');

# (10) Unchanged TOAST values read back by a boolean and a float key; and
# never from a deleted row (a tombstone has no values): such an update is
# parked, not written with a NULL.
$node->safe_psql('postgres', q{
CREATE TABLE bk (flag boolean, w double precision, big text, note text, PRIMARY KEY (flag, w));
ALTER TABLE bk ALTER big SET STORAGE EXTERNAL;
CREATE TABLE dk (id int PRIMARY KEY, n numeric(5,2), big text, note text);
ALTER TABLE dk ALTER big SET STORAGE EXTERNAL;
SELECT pgsink.add_table('bk'); SELECT pgsink.add_table('dk', import => false);
INSERT INTO bk VALUES (true, 0.1, repeat('b', 9000), 'a'), (false, -0.5, repeat('c', 9000), 'a');
INSERT INTO dk VALUES (1, 1, repeat('d', 9000), 'a');
});
wait_delivered($node, 'postgres', '(10) rows in place');
$node->safe_psql('postgres', q{
UPDATE bk SET note = 'b';
DELETE FROM dk WHERE id = 1;
INSERT INTO dk VALUES (1, 'NaN', repeat('e', 9000), 'a');
});
wait_delivered($node, 'postgres', '(10) deleted, and a refused re-insert');
$node->safe_psql('postgres', q{UPDATE dk SET note = 'b', n = 2});
wait_delivered($node, 'postgres', '(10) updates that leave big unchanged');
is(ch_query($ch, "SELECT flag, w, note, length(big) FROM pgsink.public_bk FINAL "
		  . "WHERE _pgsink_deleted = 0 ORDER BY flag FORMAT TSV"),
	"0\t-0.5\tb\t9000\n1\t0.1\tb\t9000\n",
	'(10) the big values kept, found by boolean and float keys');
is(ch_query($ch, "SELECT count() FROM pgsink.public_dk FINAL WHERE _pgsink_deleted = 0") + 0, 0,
	'(10) the deleted row is not brought back with a NULL value');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND \"table\" = 'public.dk'"),
	2, '(10) the refused re-insert and the update after it are parked');

# (11) A column retyped in PostgreSQL (ClickHouse keeps the old type): the
# table's later changes are parked, saying so, never written into the old
# type; columns named like helper columns are renamed, and the view shows
# them under their own names; a table ClickHouse refuses (someone else's
# table of that name, that cannot be altered) is parked too, and other
# tables go on; a ClickHouse table dropped by someone is made again. The
# tables are empty when added: no import (one still running after the type
# change would have its rows parked too).
ch_query($ch, 'CREATE TABLE pgsink.public_squat (x String) ENGINE = Log');
$node->safe_psql('postgres', q{
CREATE TABLE ty (id int PRIMARY KEY, n int);
CREATE TABLE clash (id int PRIMARY KEY, f double precision, f__bits text, _pgsink_lsn text,
                    "_pgsink_col_f__bits_" int, a int[]);
CREATE TABLE clash2 (id int PRIMARY KEY, a int[], a__null bool);
CREATE TABLE squat (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('ty', import => false); SELECT pgsink.add_table('clash', import => false);
SELECT pgsink.add_table('clash2', import => false); SELECT pgsink.add_table('squat', import => false);
INSERT INTO ty VALUES (1, 1);
INSERT INTO clash VALUES (1, 1.5, 'x', 'y', 7, '{1,NULL}'), (2, NULL, NULL, NULL, NULL, NULL);
INSERT INTO clash2 VALUES (1, '{1,NULL}', true), (2, NULL, NULL);
INSERT INTO squat VALUES (1, 'v');
});
wait_delivered($node, 'postgres', '(11) before the type change');
$node->safe_psql('postgres', q{
ALTER TABLE ty ALTER n TYPE bigint;
INSERT INTO ty VALUES (2, 5000000000);
});
wait_delivered($node, 'postgres', '(11) after the type change');
is(ch_query($ch, "SELECT count() FROM pgsink.public_ty FINAL WHERE id = 2") + 0, 0,
	'(11) nothing written into the old type');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND \"table\" = 'public.ty' "
		  . "AND response LIKE '%column n of ClickHouse table public_ty is Nullable(Int32) but now needs Nullable(Int64)%'"),
	1, '(11) the change is parked, saying why');
is(ch_query($ch, "SELECT id, f, f__bits, _pgsink_lsn, _pgsink_col__pgsink_col_f__bits__, a, a__null "
		  . "FROM pgsink.public_clash_current ORDER BY id FORMAT TSV"),
	"1\t1.5\tx\ty\t7\t[1,NULL]\t0\n2\t\\N\t\\N\t\\N\t\\N\t[]\t1\n",
	'(11) columns named like helper columns: kept apart, the view shows their own names (but where a column has it)');
is(ch_query($ch, "SELECT id, a__null, _pgsink_col_a__null_ FROM pgsink.public_clash2_current ORDER BY id FORMAT TSV"),
	"1\t0\t1\n2\t1\t\\N\n", '(11) an array\'s NULL flag and a column of its name, apart');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND \"table\" LIKE 'public.clash%'"),
	0, '(11) ... and none of their changes is parked');
# (its insert, and the import's copy of the same row)
cmp_ok($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND \"table\" = 'public.squat' "
		  . "AND response LIKE '%public_squat%'"),
	'>=', 1, '(11) a table ClickHouse refuses: its changes are parked, with ClickHouse\'s answer');
ch_query($ch, 'DROP TABLE pgsink.public_c');
$node->safe_psql('postgres', q{INSERT INTO c VALUES (77, 'again', 7)});
wait_delivered($node, 'postgres', '(11) after the ClickHouse table was dropped');
is(ch_query($ch, "SELECT a, b, x FROM pgsink.public_c FINAL WHERE _pgsink_deleted = 0 FORMAT TSV"),
	"77\tagain\t7\n", '(11) a dropped ClickHouse table is made again');

# (12) One update of 12,000 rows that leaves their TOASTed value unchanged:
# the rows are read back from ClickHouse in pieces within its query limits.
$node->safe_psql('postgres', q{
CREATE TABLE w (id int PRIMARY KEY, big text, note text);
ALTER TABLE w ALTER big SET STORAGE EXTERNAL;
SELECT pgsink.add_table('w');
INSERT INTO w SELECT g, repeat(chr(65 + g % 26), 2100), 'a' FROM generate_series(1, 12000) g;
});
wait_delivered($node, 'postgres', '(12) rows in place');
$node->safe_psql('postgres', q{UPDATE w SET note = 'b'});
wait_delivered($node, 'postgres', '(12) one update of every row', 120);
is(ch_query($ch, "SELECT count(), countIf(length(big) = 2100 AND note = 'b') "
		  . "FROM pgsink.public_w FINAL WHERE _pgsink_deleted = 0 FORMAT TSV"),
	"12000\t12000\n", '(12) every row keeps its value');

# (13) Schema changes in the middle of a batch: the rows before a change are
# written as they were made (a dropped column keeps its value; rows under
# the old key are delivered), those after it follow the new schema.
$node->safe_psql('postgres', q{
CREATE TABLE k2 (id int PRIMARY KEY, x int NOT NULL);
CREATE TABLE dc (id int PRIMARY KEY, a int, b int);
SELECT pgsink.add_table('k2'); SELECT pgsink.add_table('dc');
INSERT INTO k2 VALUES (1, 10);
INSERT INTO dc VALUES (0, 0, 0);
});
wait_delivered($node, 'postgres', '(13) tables in place');
ok(defined wait_imports($node, 'postgres', 60), '(13) the imports of k2 and dc are done');
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO k2 VALUES (3, 30);
INSERT INTO dc VALUES (1, 10, 100);
ALTER TABLE k2 DROP CONSTRAINT k2_pkey, ADD PRIMARY KEY (x);
ALTER TABLE dc DROP COLUMN b;
INSERT INTO k2 VALUES (2, 20);
INSERT INTO dc VALUES (2, 20);
COMMIT;
});
wait_delivered($node, 'postgres', '(13) one transaction with schema changes');
is(ch_query($ch, "SELECT groupArray(id) FROM (SELECT id FROM pgsink.public_k2 FINAL "
		  . "WHERE _pgsink_deleted = 0 ORDER BY id)"),
	"[1,3]\n", '(13) the row made under the old key is delivered; the one after the change is not');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' AND \"table\" = 'public.k2'"),
	1, '(13) the row after the key change is parked');
is(ch_query($ch, "SELECT id, a, ifNull(toString(b), 'N') FROM pgsink.public_dc FINAL "
		  . "WHERE _pgsink_deleted = 0 ORDER BY id FORMAT TSV"),
	"0\t0\t0\n1\t10\t100\n2\t20\tN\n",
	'(13) a row made before a column was dropped keeps its value; one after has none');

# (14) pgsink.clickhouse_url with a query parameter: the sink stops, saying
# why; with a path and settings: kept, and delivery goes on.
$node->append_conf('postgresql.conf', "pgsink.clickhouse_url = '$ch->{url}/?query=SELECT%201'");
$node->reload;
ok($node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pgsink.sinks WHERE sink = 'clickhouse' "
		  . "AND last_error LIKE '%pgsink.clickhouse_url may not have a query parameter%'"),
	'(14) a URL with a query parameter: refused, saying why');
$node->append_conf('postgresql.conf',
	"pgsink.clickhouse_url = '$ch->{url}/?max_insert_block_size=100000'");
$node->reload;
$node->safe_psql('postgres', q{INSERT INTO c VALUES (78, 'settings', 8)});
wait_delivered($node, 'postgres', '(14) a URL with a path and settings');
is(ch_query($ch, "SELECT a, b, x FROM pgsink.public_c FINAL WHERE a = 78 FORMAT TSV"),
	"78\tsettings\t8\n", '(14) delivered through it');

# (15) The resync rule: a row the table does not hold (left by changes that
# were lost; here written straight into ClickHouse with an old LSN) is gone
# once pgsink.resync() closes; resync_start, resync_end and drop entries
# make no rows; a dropped table's ClickHouse table stays, as an archive.
ch_query($ch, "INSERT INTO pgsink.public_c (a, b, x, _pgsink_lsn, _pgsink_sequence, _pgsink_op, "
	  . "_pgsink_deleted) VALUES (987654, 'stale', 1, 1, 1, 'insert', 0)");
is(ch_query($ch, "SELECT count() FROM pgsink.public_c FINAL WHERE a = 987654 FORMAT TSV"),
	"1\n", '(15) a stale row planted');
$node->safe_psql('postgres', "SELECT pgsink.resync('c')");
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE resync AND state <> 'complete'", '0', 60),
	'(15) the resync completes');
$node->safe_psql('postgres', q{
CREATE TABLE dropme (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('dropme');
INSERT INTO dropme VALUES (0, 'kept'), (1, 'one');
});
wait_delivered($node, 'postgres', '(15) a table to drop');
$node->safe_psql('postgres', 'DROP TABLE dropme');
$node->safe_psql('postgres', q{INSERT INTO c VALUES (79, 'after the drop', 9)});
equal_tables('(15) after the resync');
is(ch_query($ch, "SELECT count() FROM pgsink.public_c WHERE a = 987654 FORMAT TSV"), "0\n",
	'(15) the resync rule removed the stale row');
is(ch_query($ch, "SELECT count() FROM pgsink.public_c WHERE _pgsink_op NOT IN "
		  . "('insert', 'update', 'delete', 'import') FORMAT TSV"),
	"0\n", '(15) no row made of resync or drop entries');
is(ch_query($ch, "SELECT id, v FROM pgsink.public_dropme FINAL WHERE _pgsink_deleted = 0 "
		  . "ORDER BY id FORMAT TSV"),
	"0\tkept\n1\tone\n", '(15) a dropped table stays in ClickHouse, untouched');

# (16) A replay (a rewind here; a crash does the same) of a batch that
# holds an update leaving TOASTed big unchanged and then a key change of
# the same row, without the row's insert: nothing is parked, and the
# table stays equal to the source.
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.spool_retention = '1h'");
$node->reload;
my $parked16 = $node->safe_psql('postgres',
	"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse'");
$node->safe_psql('postgres', q{
INSERT INTO t (id, v, big) VALUES (50001, 'replayed', repeat(md5('r'), 300))});
my $after_insert = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('postgres', q{UPDATE t SET v = 'replayed x' WHERE id = 50001});
$node->safe_psql('postgres', q{UPDATE t SET id = 150001 WHERE id = 50001});
equal_tables('(16) an update, then a key change, each leaving big unchanged');
$node->safe_psql('postgres',
	"SELECT pgsink.rewind_sink_to_lsn('clickhouse', '$after_insert')");
equal_tables('(16) after a replay of both without the insert');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse'"),
	$parked16, '(16) nothing parked');

# The same after a crash: the table holds the key change, not the update
# after it; the replay sends both (here: the sink paused before the
# update, rewound to before the key change, resumed). The update takes its
# unchanged value from the new key's row, read back.
$node->safe_psql('postgres', q{
INSERT INTO t (id, v, big) VALUES (50002, 'crashed', repeat(md5('c'), 300))});
my $before_change = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('postgres', q{UPDATE t SET id = 150002 WHERE id = 50002});
wait_delivered($node, 'postgres', '(16) a key change delivered');
$node->safe_psql('postgres', "SELECT pgsink.pause('clickhouse')");
$node->safe_psql('postgres', q{UPDATE t SET v = 'crashed x' WHERE id = 150002});
$node->safe_psql('postgres',
	"SELECT pgsink.rewind_sink_to_lsn('clickhouse', '$before_change')");
$node->safe_psql('postgres', "SELECT pgsink.resume('clickhouse')");
equal_tables('(16) after a replay of the key change and the update after it');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse'"),
	$parked16, '(16) nothing parked there either');

ch_stop($ch);
$node->stop;
done_testing();

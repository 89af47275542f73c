# The BigQuery sink against the strict local BigQuery (bigquery_fake.py,
# PgsinkBigQuery.pm): service-account auth (RS256 JWT checked by the fake),
# raw tables and de-duplicated views, insertAll streaming, load jobs.
# (1) a mixed workload (inserts, updates, deletes, key changes, a composite
#     key, every type family, unchanged TOAST): the rows the view gives (the
#     fake computes them by the view's rule from the raw table) equal the
#     source tables, value for value; the view is standard SQL;
# (2) unchanged TOASTed values long after their row was written, also when
#     the key changes (in the same batch, or later: read from BigQuery);
# (3) TRUNCATE in a transaction between inserts;
# (4) injected 503, 429 with Retry-After, 403 rateLimitExceeded and revoked
#     tokens (a 401 refreshes once) lose nothing; short-lived tokens are
#     refreshed before they expire, without a 401;
# (5) rows BigQuery refuses (per-row insertErrors) and values no BigQuery
#     type holds are parked alone, with the reason; the rest goes on;
# (6) a new column: tables.patch adds it, the view is recreated with it;
# (7) an import of existing rows under concurrent writes goes through Avro
#     load jobs (pgsink's job ids), across a kill -9 of the postmaster, and
#     the view equals the source afterwards;
# (8) neither the private key nor a token reaches the log, the status or
#     the dead letters;
# (9) a load job whose answer was lost is sent again with the same job id
#     and refused as a duplicate: the rows are loaded once; a load job that
#     fails has its rows streamed instead;
# (10) every type family goes through a load job (Avro) as it streams;
# (11) a missing or broken key file is reported (never its content) and
#      retried; fixed, delivery goes on;
# (12) a token endpoint that refuses is retried, and what it echoes that
#      looks like a credential is not logged;
# (13) a retyped column and a column name BigQuery reserves park the
#      table's changes, saying why; other tables go on.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use Digest::MD5 qw(md5_hex);
use Encode;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkBigQuery;
use PgsinkImport;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $json = JSON::PP->new->utf8->canonical->allow_nonref;
my $node = pgsink_node('bigquery', extra_conf => q{
pgsink.sink = 'bigquery'
pgsink.retry_max_interval = '1s'
pgsink.http_timeout = '20s'
pgsink.bigquery_max_rows = 150
pgsink.bigquery_load_min_rows = 100
pgsink.import_chunk_rows = 2000
});
# Tokens live 20 s: refreshed ahead of time, several times during the test.
my $bq = bq_start($node->basedir . '/bigquery', config => { token_lifetime => 20 });
$node->append_conf('postgresql.conf', qq{
pgsink.bigquery_credentials = '$bq->{key_file}'
pgsink.bigquery_endpoint = '$bq->{url}'
pgsink.bigquery_project = '$bq->{project}'
pgsink.bigquery_dataset = 'replica'
pgsink.bigquery_location = 'EU'
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id bigint PRIMARY KEY, v text, n numeric(12,2), nb numeric(40,20), nu numeric,
                f double precision, r real, b boolean, by bytea, d date, tm time, ts timestamp,
                tz timestamptz, u uuid, iv interval, big text, arr int[], tags text[], j json,
                jb jsonb);
ALTER TABLE t ALTER big SET STORAGE EXTERNAL;
CREATE TABLE c (a int, b text, x int, PRIMARY KEY (a, b));
SELECT pgsink.add_table('t');
SELECT pgsink.add_table('c');
});

sub workload
{
	my ($base) = @_;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT $base + g, 'v' || g, g * 1.25, g / 7.0, g / 3.0, g * 0.25, g * 0.5,
       g % 2 = 0, decode(md5(g::text), 'hex'), date '2024-02-29' + g, time '12:00' + g * interval '1 s',
       timestamp '2024-02-29 12:34:56.5' + g * interval '1 h',
       timestamptz '2024-02-29 12:34:56.123456+02' + g * interval '1 min',
       md5(($base + g)::text)::uuid, g * interval '1 day 2 hours', repeat(md5(g::text), 300),
       ARRAY[g, -g], ARRAY['t' || g, 'x"y'], ('{"b": 1.5, "a": [' || g || ', "s"]}')::json,
       ('{"k": {"z": ' || g || ', "a": null}}')::jsonb
  FROM generate_series(1, 200) g;
INSERT INTO t (id, v, n, nb, nu, f, r, b, d, ts, tz, arr, tags, j, jb) VALUES
   ($base + 201, NULL, NULL, NULL, 'NaN', 'NaN', '-Infinity', NULL, 'infinity', '-infinity',
    'infinity', '{}', NULL, NULL, '[null]'),
   ($base + 202, 'edge ''quoted'' \\ | x', 1234567890.99, -0.00000000000000000001,
    123456789012345678901234567890.123456789, 'Infinity', 'Infinity', true, '0001-01-01',
    '9999-12-31 23:59:59.999999', '2000-01-01 00:00:00+00', '{7}', '{}', '[]', '{}'),
   ($base + 203, 'tiny', -0.01, 0, 1.000, -1.5, 0.125, false, '2000-02-29', '1999-12-31 23:59:59',
    '1970-01-01 00:00:00.000001+00', NULL, '{""}', '"s"', '[1, "x", false]');
UPDATE t SET v = v || ' x' WHERE id BETWEEN $base + 1 AND $base + 200 AND id % 3 = 0;
BEGIN;
INSERT INTO t (id, v, big) VALUES ($base + 300, 'in one', repeat('q', 9000));
UPDATE t SET v = 'same batch' WHERE id = $base + 300;
UPDATE t SET id = $base + 301 WHERE id = $base + 300;
COMMIT;
DELETE FROM t WHERE id BETWEEN $base + 1 AND $base + 200 AND id % 10 = 0;
-- A key change sends the TOASTed value it changes (see (2) for one that does not).
UPDATE t SET id = id + 100000, big = left(big, 20) WHERE id BETWEEN $base + 1 AND $base + 200 AND id % 7 = 0;
INSERT INTO c SELECT g, 'k' || g, g FROM generate_series($base, $base + 49) g;
UPDATE c SET x = x + 1 WHERE a % 2 = 0;
DELETE FROM c WHERE a % 5 = 0;
UPDATE c SET b = b || 'z' WHERE a % 3 = 0;
});
}

# How the fake gives each value (see bigquery_fake.py's dump), in SQL.
my %compare = (
	t => [
		[qw(id v n nb nu f r b by d tm ts tz u iv big arr tags j jb)],
		q{SELECT id, v, trim_scale(n)::text, trim_scale(nb)::text, nu::text, f, r,
		   CASE WHEN b THEN 't' WHEN NOT b THEN 'f' END, encode(by, 'base64'),
		   CASE WHEN d = 'infinity' THEN '9999-12-31' ELSE d::text END, tm::text,
		   CASE WHEN ts = '-infinity' THEN '0001-01-01 00:00:00' ELSE ts::text END,
		   CASE WHEN tz = 'infinity' THEN '9999-12-31 23:59:59.999999+00' ELSE tz::text END,
		   u::text, iv::text, md5(big), coalesce(array_to_json(arr)::text, '[]'),
		   coalesce(array_to_json(tags)::text, '[]'), j::text, jb::text
		  FROM t},
	],
	c => [ [qw(a b x)], q{SELECT a, b, x FROM c} ],
	im => [ [qw(id v note)], q{SELECT id, v, note FROM im} ],
);
my %is_json = (j => 1, jb => 1);

# A value as a comparable text: NULL as \N, JSON canonical.
sub text_of
{
	my ($col, $v, $from_pg) = @_;
	return '\\N' unless defined $v;
	return $v ? 't' : 'f' if JSON::PP::is_bool($v);
	if ($is_json{$col})
	{
		# The fake keeps JSON canonical (sorted keys, compact); PostgreSQL's text decoded so.
		return $json->encode($json->decode($v));
	}
	return $json->encode($v) if ref $v;
	return md5_hex(Encode::encode('UTF-8', $v)) if $col eq 'big' && !$from_pg;
	return "$v";
}

sub equal_tables
{
	my ($label, @tables) = @_;
	wait_delivered($node, 'postgres', $label, 120);
	@tables = qw(t c) unless @tables;
	for my $table (@tables)
	{
		my ($cols, $sql) = @{ $compare{$table} };
		my $pg = $json->decode($node->safe_psql('postgres',
				"SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; "
				  . "SELECT coalesce(json_agg(json_build_array(" . join(', ', map { "s.\"$_\"" } @$cols)
				  . ")), '[]') FROM ($sql) s(" . join(', ', map { "\"$_\"" } @$cols) . ")"));
		my @want = sort map {
			my $row = $_;
			join('|', map { text_of($cols->[$_], $row->[$_], 1) } 0 .. $#$cols)
		} @$pg;
		my $cur = eval { bq_current($bq, 'replica', "public_$table") };
		ok($cur, "$label: the fake computes public_$table") or diag($@);
		next unless $cur;
		my @got = sort map {
			my $row = $_;
			join('|', map { text_of($_, $row->{$_}, 0) } @$cols)
		} @{ $cur->{rows} };
		my ($first) = grep { ($want[$_] // '') ne ($got[$_] // '') } 0 .. ($#want > $#got ? $#want : $#got);
		ok(!defined $first, "$label: view public_$table equals the source (" . scalar(@want) . ' rows)')
		  or diag("source:   " . ($want[$first] // '(none)') . "\nbigquery: " . ($got[$first] // '(none)'));
		is_deeply($cur->{unresolved}, [], "$label: every unchanged value of public_$table is resolved");
	}
}

# (1)
my $t0 = time();
workload(0);
equal_tables('(1) first load');
is(sink_status($node, 'bigquery')->{state}, 'idle', '(1) the sink is idle');
is($node->safe_psql('postgres', "SELECT count(*) FROM pgsink.dead_letters"), 0, '(1) nothing parked');
my %tables = map { $_->{table} => $_ } grep { $_->{dataset} eq 'replica' } @{ bq_tables($bq) };
ok($tables{public_t_raw} && $tables{public_t}, '(1) raw table and view exist');
is($tables{public_t_raw}{timePartitioning}{field}, '_pgsink_timestamp', '(1) partitioned by day of _pgsink_timestamp');
is($tables{public_t}{view}{useLegacySql}, JSON::PP::false, '(1) the view is standard SQL');
like($tables{public_t}{view}{query}, qr/`pgsink-test\.replica\.public_t_raw`/, '(1) over the raw table');
my $schema = $tables{public_t_raw}{schema};
$schema = $schema->{fields} if ref $schema eq 'HASH';
my %types = map { $_->{name} => "$_->{type} " . ($_->{mode} // 'NULLABLE') } @$schema;
is_deeply([ @types{qw(id n nb nu f b by d tm ts tz j arr _pgsink_lsn _pgsink_unchanged)} ],
	[ 'INT64 NULLABLE', 'NUMERIC NULLABLE', 'BIGNUMERIC NULLABLE', 'STRING NULLABLE',
	  'FLOAT64 NULLABLE', 'BOOL NULLABLE', 'BYTES NULLABLE', 'DATE NULLABLE', 'TIME NULLABLE',
	  'DATETIME NULLABLE', 'TIMESTAMP NULLABLE', 'JSON NULLABLE', 'INT64 REPEATED',
	  'INT64 REQUIRED', 'STRING REPEATED' ],
	'(1) lossless BigQuery types');
my $ids = 0;
for my $r (@{ bq_requests($bq) })
{
	next unless $r->{kind} eq 'insertAll' && $r->{insert_ids};
	$ids++ if grep { !m{^[0-9A-F]+/[0-9A-F]+/\d+(/old)?$} } @{ $r->{insert_ids} };
}
is($ids, 0, '(1) every insertId is <lsn>/<sequence>');

# (2) TOAST: rows written long ago, updated now without touching big; a
# key change of a row written in the same batch takes big from it; a key
# change of a row written long ago reads it from BigQuery (jobs.query).
$node->safe_psql('postgres', q{UPDATE t SET v = 'later' WHERE id BETWEEN 1 AND 50});
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO t (id, v, big) VALUES (700001, 'new', repeat('w', 9000));
UPDATE t SET v = 'moved' WHERE id = 700001;
UPDATE t SET id = 700002 WHERE id = 700001;
COMMIT;
});
equal_tables('(2) unchanged TOAST, a key change in the same batch included', 't');
$node->safe_psql('postgres', q{UPDATE t SET id = 800051 WHERE id = 51});
equal_tables('(2) a key change of an old row: its TOASTed value read from BigQuery', 't');
is($node->safe_psql('postgres', "SELECT count(*) FROM pgsink.dead_letters"), 0,
	'(2) nothing parked');

# (3) TRUNCATE between two loads of c, in one transaction.
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO c VALUES (-1, 'before', 1);
TRUNCATE c;
INSERT INTO c VALUES (-2, 'after', 2);
COMMIT;
});
equal_tables('(3) truncate', 'c');

# (4) Faults: the rows arrive anyway.
my $stats0 = bq_stats($bq);
bq_fault($bq, { kind => 'status', status => 503, reason => 'backendError', match => 'insertAll', count => 2 },
	{ kind => 'status', status => 429, reason => 'rateLimitExceeded', retry_after => '1', match => 'insertAll' },
	{ kind => 'status', status => 403, reason => 'rateLimitExceeded', match => 'insertAll' },
	{ kind => 'status', status => 500, body => JSON::PP::false, match => 'insertAll' });
workload(10000);
bq_revoke_tokens($bq);
bq_outage($bq, 2);
workload(20000);
equal_tables('(4) after 503, 429, 403 rateLimitExceeded, 500, revoked tokens and a 2 s outage');
my $stats = bq_stats($bq);
cmp_ok($stats->{auth_refusals} - $stats0->{auth_refusals}, '>=', 1, '(4) the revoked token was refused');
cmp_ok($stats->{tokens_issued}, '>=', 2, "(4) tokens were refreshed ($stats->{tokens_issued} issued)");
is_deeply(bq_control($bq, 'GET', 'faults')->{rules} // [], [], '(4) every fault was met');

# (5) Refused rows are parked alone, with the reason.
bq_fault($bq, { kind => 'row_error', field => 'v', value => 'poison', reason => 'invalid',
		message => 'This row is poisoned.', match => 'insertAll', count => undef });
$node->safe_psql('postgres', q{
INSERT INTO t (id, v) VALUES (900001, 'before'), (900002, 'poison'), (900003, 'after');
INSERT INTO t (id, arr) VALUES (900004, '{1,NULL}');
INSERT INTO t (id, d) VALUES (900005, '0044-03-15 BC');
});
wait_delivered($node, 'postgres', '(5) refused rows');
bq_clear_faults($bq);
my $parked = $node->safe_psql('postgres',
	"SELECT string_agg(substring(entry from '\"id\":\"(\\d+)\"') || ': ' || response, E'\\n' ORDER BY entry) "
	  . "FROM pgsink.dead_letters WHERE sink = 'bigquery'");
like($parked, qr/^900002: .*invalid.*This row is poisoned/m, '(5) the poisoned row is parked with BigQuery\'s message');
like($parked, qr/^900004: .*NULL elements/m, '(5) an array with a NULL element is parked, saying why');
like($parked, qr/^900005: .*years 1 to 9999/m, '(5) a BC date is parked, saying why');
is(scalar(() = $parked =~ /^9/mg), 3, '(5) nothing else is parked');
is_deeply([ map { $_->{id} } grep { $_->{id} > 900000 } @{ bq_current($bq, 'replica', 'public_t')->{rows} } ],
	[ 900001, 900003 ], '(5) the rows around them are delivered');
$node->safe_psql('postgres', "DELETE FROM t WHERE id > 900000");

# (6) A new column: added to the raw table, the view made again.
# Half the keys get a row with it; the others' rows, older than the column,
# read as NULL. BigQuery's streaming sees the column only 2 s after the
# patch ("no such field"): those rows are sent again, not parked.
bq_config($bq, { stream_after_patch => 2 });
$node->safe_psql('postgres', q{
ALTER TABLE c ADD COLUMN note text;
UPDATE c SET note = 'n' || a WHERE a % 2 = 1;
});
$compare{c} = [ [qw(a b x note)], q{SELECT a, b, x, note FROM c} ];
equal_tables('(6) a new column', 'c');
bq_config($bq, { stream_after_patch => 0 });
is($node->safe_psql('postgres', "SELECT count(*) FROM pgsink.dead_letters WHERE \"table\" = 'public.c'"),
	0, '(6) nothing parked while BigQuery did not see the column');
my ($view) = grep { $_->{table} eq 'public_c' } @{ bq_tables($bq) };
like($view->{view}{query}, qr/`note`/, '(6) the view has the new column');

# (7) An import of existing rows under concurrent writes, through load jobs,
# with a kill -9 of the postmaster in the middle of it.
my $writer = import_under_writes($node, rows => 20000, rounds => 300, new_from => 40000);
usleep(300_000);
crash_node($node);
$writer->finish;
start_after_crash($node);
ok(defined wait_imports($node, 'postgres', 120), '(7) the import is done');
workload(30000);
equal_tables('(7) import under writes, across a kill -9', qw(im t c));
my @loads = grep { $json->encode($_->{destination} // '') =~ /public_im_raw/ } @{ bq_jobs($bq) };
ok(@loads, '(7) the import went through load jobs (' . scalar(@loads) . ')');
is(scalar(grep { $_->{sourceFormat} ne 'AVRO' || $_->{upload} ne 'multipart' } @loads), 0,
	'(7) Avro, uploaded multipart');
is(scalar(grep { $_->{jobId} !~ /^pgsink_public_im_raw_[0-9a-f]+$/ } @loads), 0, "(7) pgsink's job ids");
is(scalar(grep { ($_->{location} // '') ne 'EU' } @loads), 0, "(7) in the dataset's location");
is(scalar(grep { $_->{errorResult} } @loads), 0, '(7) no load failed');
is(scalar(grep { $_->{state} ne 'DONE' } @loads), 0, '(7) every load is DONE');

# (9) A load job whose answer is lost (BigQuery made it, the connection
# dropped): sent again with the same job id, refused as a duplicate, and the
# existing job counts: the rows are loaded once. A load job that fails: its
# rows are streamed instead.
bq_fault($bq, { kind => 'apply_then_drop', match => 'jobs.insert' });
$node->safe_psql('postgres', q{
CREATE TABLE im2 (id int PRIMARY KEY, v int, note text);
INSERT INTO im2 SELECT g, g, 'n' || g FROM generate_series(1, 3000) g;
SELECT pgsink.add_table('im2');
});
ok(defined wait_imports($node, 'postgres', 60), '(9) the import is done');
$compare{im2} = [ [qw(id v note)], q{SELECT id, v, note FROM im2} ];
equal_tables('(9) a load job sent again', 'im2');
is(scalar(@{ bq_dump($bq, 'replica', 'public_im2_raw')->{rows} }), 3000, '(9) each row loaded once');
my $dup = bq_stats($bq)->{requests}{'jobs.insert'}{409} // 0;
cmp_ok($dup, '>=', 1, "(9) the job sent again was refused as a duplicate ($dup)");
bq_fault($bq, { kind => 'job_error', reason => 'invalid', message => 'Injected failure.' });
$node->safe_psql('postgres', q{
CREATE TABLE im3 (id int PRIMARY KEY, v int);
INSERT INTO im3 SELECT g, g FROM generate_series(1, 500) g;
SELECT pgsink.add_table('im3');
});
ok(defined wait_imports($node, 'postgres', 60), '(9) the second import is done');
$compare{im3} = [ [qw(id v)], q{SELECT id, v FROM im3} ];
equal_tables('(9) a failed load job, streamed instead', 'im3');
is(scalar(grep { $_->{errorResult} } @{ bq_jobs($bq) }), 1, '(9) the failed job is there');

# (10) Every type family through a load job (Avro with logical types): a
# copy of t imported.
$node->safe_psql('postgres', q{
CREATE TABLE t2 (LIKE t INCLUDING ALL);
INSERT INTO t2 SELECT * FROM t;
SELECT pgsink.add_table('t2');
});
ok(defined wait_imports($node, 'postgres', 60), '(10) the import of t2 is done');
($compare{t2}[0], $compare{t2}[1]) = ($compare{t}[0], $compare{t}[1] =~ s/FROM t$/FROM t2/r);
equal_tables('(10) every type through a load job', 't2');
my @t2_loads = grep { $json->encode($_->{destination} // '') =~ /public_t2_raw/ } @{ bq_jobs($bq) };
ok(@t2_loads && !grep({ $_->{errorResult} } @t2_loads), '(10) t2 was loaded by load jobs, none failed')
  or diag($json->encode(\@t2_loads));

# (11) A missing key file, then one whose private key is broken: the sink
# says what is wrong (never the file's content) and retries; fixed, it
# delivers what waited.
sub set_credentials
{
	my ($path) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET pgsink.bigquery_credentials = '$path'; SELECT pg_reload_conf();");
}
set_credentials($node->basedir . '/missing.json');
$node->safe_psql('postgres', "INSERT INTO c VALUES (9001, 'while broken', 1, 'x')");
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%could not open the key file (pgsink.bigquery_credentials): No such file%' "
		  . "FROM pgsink.sinks WHERE sink = 'bigquery'", 't', 30),
	'(11) a missing key file is reported');
unlike($node->safe_psql('postgres', "SELECT last_error FROM pgsink.sinks WHERE sink = 'bigquery'"),
	qr/missing\.json/, '(11) without its path (pgsink.sinks is readable by pg_monitor)');
my $broken = $node->basedir . '/broken.json';
{
	my $k = $json->decode(do { open(my $f, '<', $bq->{key_file}) or die $!; local $/; <$f> });
	$k->{private_key} =~ s/(-----\n.{10})./${1}!/;
	open(my $f, '>', $broken) or die $!;
	print $f $json->encode($k);
	close $f;
}
set_credentials($broken);
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%its private_key is not a PEM private key%' "
		  . "FROM pgsink.sinks WHERE sink = 'bigquery'", 't', 30),
	'(11) a broken private key is reported, without the key');
unlike($node->safe_psql('postgres', "SELECT last_error FROM pgsink.sinks WHERE sink = 'bigquery'"),
	qr/broken\.json/, '(11) without the path');
set_credentials($bq->{key_file});
$compare{c} = [ [qw(a b x note)], q{SELECT a, b, x, note FROM c} ];
equal_tables('(11) fixed: what waited is delivered', 'c');

# (12) The token endpoint refuses, echoing what looks like a credential:
# the sink retries and logs what the endpoint said, but not the echo.
my $echo = 'eyJ' . ('Q' x 120) . '.c2ln';
bq_fault($bq, { kind => 'token_error', match => 'token', error => 'invalid_grant', status => 400,
		message => "Bad assertion $echo", count => 2 });
bq_revoke_tokens($bq);
$node->safe_psql('postgres', "INSERT INTO c VALUES (9002, 'after refused tokens', 1, 'y')");
equal_tables('(12) after the token endpoint refused twice', 'c');
my $log12 = slurp_file($node->logfile);
like($log12, qr/token endpoint http:\/\/127\.0\.0\.1:\d+ refused the key of \S+ \(HTTP 400 invalid_grant: Bad assertion \[\.\.\.\]\)/,
	'(12) the refusal is logged, with what the endpoint said');
unlike($log12, qr/QQQQQQQQQQQQQQQQ/, '(12) but not the echoed credential');

# (13) A column retyped in PostgreSQL (BigQuery cannot retype it): the
# table's later changes are parked, saying so; a table with a column
# BigQuery cannot name has its changes parked, saying which; others go on.
# (New tables take streamed rows only 1 s after they are made, as
# BigQuery's answer 404 meanwhile.)
bq_config($bq, { stream_after_create => 1 });
$node->safe_psql('postgres', q{
DELETE FROM pgsink.dead_letters;
CREATE TABLE ty (id int PRIMARY KEY, n int);
CREATE TABLE clash (id int PRIMARY KEY, "_PARTITIONTIME" text);
SELECT pgsink.add_table('ty'); SELECT pgsink.add_table('clash');
INSERT INTO ty VALUES (1, 1);
INSERT INTO clash VALUES (1, 'x');
});
wait_delivered($node, 'postgres', '(13) before the type change');
bq_config($bq, { stream_after_create => 0 });
is_deeply([ map { $_->{id} } @{ bq_current($bq, 'replica', 'public_ty')->{rows} } ], [1],
	'(13) a new table BigQuery streams into only after a while gets its rows');
$node->safe_psql('postgres', q{
ALTER TABLE ty ALTER n TYPE text;
INSERT INTO ty VALUES (2, 'two');
INSERT INTO c VALUES (9003, 'still flowing', 1, 'z');
});
equal_tables('(13) other tables go on', 'c');
my $parked13 = $node->safe_psql('postgres',
	"SELECT \"table\" || ': ' || response FROM pgsink.dead_letters WHERE sink = 'bigquery' ORDER BY id");
like($parked13, qr/^public\.clash: .*column _PARTITIONTIME .*BigQuery reserves column names starting with _PARTITION; rename the column/m,
	'(13) the table BigQuery cannot name is parked, saying which column');
like($parked13, qr/^public\.ty: column n of BigQuery table public_ty_raw is INT64 NULLABLE but now needs STRING/m,
	'(13) the retyped column\'s changes are parked, saying why');
is_deeply([ map { $_->{id} } @{ bq_current($bq, 'replica', 'public_ty')->{rows} } ], [1],
	'(13) nothing written into the old type');

# (15) The resync rule: a raw row the table does not hold (left by changes
# that were lost; here streamed straight into the raw table with an old
# LSN, after the last truncate) leaves the view once pgsink.resync() closes.
my $stale_lsn = $node->safe_psql('postgres', "SELECT (pg_current_wal_lsn() - '0/0')::bigint");
my $stale_ts = $node->safe_psql('postgres',
	"SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'");
my ($st, $ans) = bq_api($bq, 'POST',
	"/bigquery/v2/projects/$bq->{project}/datasets/replica/tables/public_t_raw/insertAll",
	{ rows => [ { insertId => 'stale-row', json => { id => '987654', v => 'stale',
		_pgsink_lsn => "$stale_lsn", _pgsink_sequence => '999999', _pgsink_op => 'insert',
		_pgsink_timestamp => $stale_ts, _pgsink_unchanged => [] } } ] });
is($st, 200, '(15) a stale row planted in the raw table');
ok(!$ans->{insertErrors}, '(15) and taken') or diag($json->encode($ans));
ok((grep { $_->{id} eq '987654' } @{ bq_current($bq, 'replica', 'public_t')->{rows} }),
	'(15) the view shows it');
$node->safe_psql('postgres', "SELECT pgsink.resync('t')");
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE resync AND state <> 'complete'", '0', 90),
	'(15) the resync completes');
equal_tables('(15) after the resync', 't');
ok(!(grep { $_->{id} eq '987654' } @{ bq_current($bq, 'replica', 'public_t')->{rows} }),
	'(15) the resync rule took the stale row out of the view');

# (8) No secret anywhere.
my ($pem) = do { open(my $f, '<', $bq->{private_key}) or die $!; local $/; <$f> };
my ($body) = $pem =~ /-----\n(.{40})/;
my $log = slurp_file($node->logfile);
my $everything = $log . $node->safe_psql('postgres',
	"SELECT coalesce(string_agg(response, ' '), '') FROM pgsink.dead_letters")
  . $node->safe_psql('postgres', "SELECT row_to_json(s)::text FROM pgsink.sinks s");
unlike($everything, qr/ya29\./, '(8) no access token in the log, the status or the dead letters');
ok(index($everything, $body) < 0 && $everything !~ /PRIVATE KEY/, '(8) nor the private key');

note(sprintf('total %.1f s', time() - $t0));
$node->stop;
bq_stop($bq);
done_testing();

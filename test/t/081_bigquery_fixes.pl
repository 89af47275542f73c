# The BigQuery sink's correctness fixes (issue 13), against the strict local
# BigQuery (bigquery_fake.py):
# (1) a load job made, then the postmaster killed (-9) before the cursor is
#     saved: after the restart the same import rows arrive again (with the
#     schemas in front), make the same job id, BigQuery refuses it as a
#     duplicate and the job made before counts: each row is in the raw
#     table once;
# (2) an update that changes the key and leaves a TOASTed column unchanged,
#     the old row sent in an earlier batch: the value is read from BigQuery
#     (jobs.query, query parameters) and written with the new key; a query
#     answered 503 or 429 is retried; polled, paged; it waits for the
#     batches before its own (in flight, or waiting for a retry);
# (3) a 404 for one table makes the sink check that table again, not every
#     table it knows;
# (4) a column added between changes of one table in one batch: the rows
#     before it are written without it, those after with it; a column
#     retyped parks only the changes after the ALTER.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use Digest::MD5 qw(md5_hex);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkBigQuery;
use PgsinkImport;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $json = JSON::PP->new->utf8->canonical->allow_nonref;
my $node = pgsink_node('bigquery_fixes', extra_conf => q{
pgsink.sink = 'bigquery'
pgsink.retry_max_interval = '1s'
pgsink.http_timeout = '20s'
pgsink.bigquery_load_min_rows = 100
pgsink.import_chunk_rows = 5000
});
my $bq = bq_start($node->basedir . '/bigquery');
$node->append_conf('postgresql.conf', qq{
pgsink.bigquery_credentials = '$bq->{key_file}'
pgsink.bigquery_endpoint = '$bq->{url}'
pgsink.bigquery_project = '$bq->{project}'
pgsink.bigquery_dataset = 'replica'
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE a (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('a');
INSERT INTO a VALUES (1, 'one');
});
wait_delivered($node, 'postgres', 'the first batch (with the schemas)');

sub requests_of
{
	my ($kind, $since) = @_;
	return grep { $_->{kind} eq $kind } @{ bq_requests($bq, $since) };
}

# (1) The load job is made; the fake keeps it RUNNING for 8 s, so the batch
# is not acknowledged when the postmaster dies.
bq_config($bq, { job_seconds => 8 });
$node->safe_psql('postgres', q{
CREATE TABLE im (id int PRIMARY KEY, v text);
INSERT INTO im SELECT g, 'v' || g FROM generate_series(1, 300) g;
SELECT pgsink.add_table('im');
});
my $job;
for (1 .. 300)
{
	($job) = grep { $json->encode($_->{destination} // '') =~ /public_im_raw/ } @{ bq_jobs($bq) };
	last if $job;
	usleep(50_000);
}
ok($job, '(1) a load job of the import is made');
crash_node($node);
bq_config($bq, { job_seconds => 0.3 });
start_after_crash($node);
ok(defined wait_imports($node, 'postgres', 60), '(1) the import is done');
wait_delivered($node, 'postgres', '(1) after the restart');
# Every job made ends (the first one 8 s after it was made) before the rows are counted.
for (1 .. 200)
{
	last unless grep { $_->{state} ne 'DONE' } @{ bq_jobs($bq) };
	usleep(100_000);
}
my @raw = grep { $_->{_pgsink_op} eq 'import' } @{ bq_dump($bq, 'replica', 'public_im_raw')->{rows} };
my %seen;
$seen{ $_->{id} }++ for @raw;
is(scalar(@raw), 300, '(1) the raw table holds 300 import rows');
is(scalar(grep { $_ != 1 } values %seen), 0, '(1) each import row once');
my @im_jobs = grep { $json->encode($_->{destination} // '') =~ /public_im_raw/ } @{ bq_jobs($bq) };
is(scalar(@im_jobs), 1, '(1) one load job of the import');
my @dups = grep { ($_->{job_id} // '') eq $job->{jobId} && $_->{status} == 409 }
  requests_of('jobs.insert');
cmp_ok(scalar(@dups), '>=', 1, '(1) the job sent again after the restart was refused as a duplicate');
is_deeply(bq_current_lines($bq, 'replica', 'public_im', columns => [qw(id v)]),
	psql_lines($node, 'postgres', 'SELECT id, v FROM im'), '(1) the view equals the table');

# (2) Key changes that leave TOASTed columns of every kind unchanged, the
# old rows sent in an earlier batch: the values are read from BigQuery.
$node->safe_psql('postgres', q{
CREATE TABLE tt (id int PRIMARY KEY, v text, big text, jb jsonb, arr int[], tsa timestamptz[],
                 by bytea);
ALTER TABLE tt ALTER big SET STORAGE EXTERNAL, ALTER jb SET STORAGE EXTERNAL,
  ALTER arr SET STORAGE EXTERNAL, ALTER tsa SET STORAGE EXTERNAL, ALTER by SET STORAGE EXTERNAL;
SELECT pgsink.add_table('tt');
INSERT INTO tt SELECT g, 'v' || g, repeat(md5(g::text), 300),
  (SELECT jsonb_object_agg('k' || i, CASE WHEN i % 2 = 0 THEN to_jsonb(i * g) ELSE to_jsonb('s' || i) END)
     FROM generate_series(1, 400) i),
  ARRAY(SELECT i * g FROM generate_series(1, 1000) i),
  ARRAY(SELECT timestamptz '2024-01-01 00:00:00.123457+00' + (i * g) * interval '1 min'
          FROM generate_series(1, 300) i),
  decode(repeat(md5(g::text), 200), 'hex')
  FROM generate_series(1, 4) g;
});
ok(defined wait_imports($node, 'postgres', 60), '(2) tt imported');
wait_delivered($node, 'postgres', '(2) the rows');
my $tt_sql = q{SET TimeZone = 'UTC';
SELECT id, v, md5(big), jb::text, coalesce(array_to_json(arr)::text, '[]'),
  (SELECT coalesce(json_agg(to_char(x, 'YYYY-MM-DD HH24:MI:SS.US') || '+00' ORDER BY o), '[]')
     FROM unnest(tsa) WITH ORDINALITY u(x, o)),
  translate(encode(by, 'base64'), E'\n', '')
  FROM tt};

sub tt_equal
{
	my ($label) = @_;
	wait_delivered($node, 'postgres', $label);
	my @want = sort map {
		my @c = split /\|/, $_, -1;
		$c[$_] = $json->encode($json->decode($c[$_])) for 3 .. 5;
		join('|', @c)
	} grep { $_ ne '' } split /\n/, $node->safe_psql('postgres', $tt_sql);
	my $cur = bq_current($bq, 'replica', 'public_tt');
	my @got = sort map {
		join('|', $_->{id}, $_->{v}, md5_hex($_->{big} // ''),
			defined $_->{jb} ? $json->encode($json->decode($_->{jb})) : '',
			$json->encode($_->{arr}), $json->encode($_->{tsa}), $_->{by} // '')
	} @{ $cur->{rows} };
	my ($first) = grep { ($want[$_] // '') ne ($got[$_] // '') } 0 .. ($#want > $#got ? $#want : $#got);
	ok(!defined $first, "$label: the view equals the table (" . scalar(@want) . ' rows)') or do {
		my @w = split /\|/, $want[$first] // '', -1;
		my @g = split /\|/, $got[$first] // '', -1;
		my ($c) = grep { ($w[$_] // '') ne ($g[$_] // '') } 0 .. $#w;
		diag("row $first column $c:\nsource:   " . substr($w[$c] // '(none)', 0, 300)
			  . "\nbigquery: " . substr($g[$c] // '(none)', 0, 300));
	};
	is_deeply($cur->{unresolved}, [], "$label: every unchanged value is resolved");
	is($node->safe_psql('postgres', "SELECT count(*) FROM pgsink.dead_letters"), 0,
		"$label: nothing parked");
}
my $n0 = (bq_requests($bq)->[-1] // { n => 0 })->{n};
bq_fault($bq, { kind => 'status', status => 503, reason => 'backendError', match => 'jobs.query' },
	{ kind => 'status', status => 429, retry_after => '1', match => 'jobs.query' });
$node->safe_psql('postgres', q{
UPDATE tt SET id = 101 WHERE id = 1;
BEGIN;
UPDATE tt SET v = 'changed' WHERE id = 2;
UPDATE tt SET id = 102 WHERE id = 2;
UPDATE tt SET id = 103 WHERE id = 102;
COMMIT;
});
tt_equal('(2) key changes leaving TOASTed values unchanged');
my @queries = requests_of('jobs.query', $n0);
is(join(',', map { $_->{status} } @queries[0 .. 1]), '503,429', '(2) the query answered 503, then 429');
cmp_ok(scalar(grep { $_->{status} == 200 } @queries), '>=', 1, '(2) then answered');
is_deeply(bq_control($bq, 'GET', 'faults')->{rules} // [], [], '(2) every fault was met');

# A query that is not done at once (jobComplete false) and answers one row a
# page: polled, then paged. One UPDATE moves two keys.
bq_config($bq, { query_seconds => 1.5, query_page_rows => 1 });
my $n1 = (bq_requests($bq)->[-1] // { n => 0 })->{n};
$node->safe_psql('postgres', q{UPDATE tt SET id = id + 1000 WHERE id IN (3, 4)});
tt_equal('(2) a query polled, then paged');
my @results = grep { $_->{status} == 200 } requests_of('jobs.getQueryResults', $n1);
cmp_ok(scalar(@results), '>=', 2, '(2) polled and paged (' . scalar(@results) . ' getQueryResults)');
bq_config($bq, { query_seconds => 0, query_page_rows => 100000 });

# The query reads what the batches before its own wrote: it waits for them.
# The batch that changes big is slowed (3 s), then answered 503 (it waits
# for a retry): the later batch that moves the key waits meanwhile, then
# gives its place up; afterwards it reads the new value, not the old one.
bq_fault($bq, { kind => 'slow', seconds => 3, match => 'insertAll' },
	{ kind => 'status', status => 503, retry_after => '1', match => 'insertAll' });
$node->safe_psql('postgres', q{UPDATE tt SET big = repeat('fresh', 2000) WHERE id = 101});
for (1 .. 100)
{
	last unless grep { $_->{kind} eq 'slow' } @{ bq_control($bq, 'GET', 'faults')->{rules} // [] };
	usleep(20_000);
}
$node->safe_psql('postgres', q{UPDATE tt SET id = 201 WHERE id = 101});
tt_equal('(2) a key change whose old row\'s value was in a batch still in flight');
is($node->safe_psql('postgres', "SELECT md5(big) = md5(repeat('fresh', 2000)) FROM tt WHERE id = 201"), 't',
	'(2) (the value moved with the key)');

# (3) Someone drops one raw table: the 404 makes the sink make that table
# again, and check no other (nor the dataset).
$node->safe_psql('postgres', q{
CREATE TABLE b (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('b');
INSERT INTO b VALUES (1, 'one');
INSERT INTO a VALUES (2, 'two');
});
wait_delivered($node, 'postgres', '(3) a and b');
my ($st3) = bq_api($bq, 'DELETE',
	"/bigquery/v2/projects/$bq->{project}/datasets/replica/tables/public_b_raw");
is($st3, 204, '(3) public_b_raw dropped behind the sink\'s back');
my $n3 = (bq_requests($bq)->[-1] // { n => 0 })->{n};
$node->safe_psql('postgres', "INSERT INTO b VALUES (2, 'after the drop')");
wait_delivered($node, 'postgres', '(3) b after the drop');
$node->safe_psql('postgres', "INSERT INTO a VALUES (3, 'three')");
wait_delivered($node, 'postgres', '(3) a after it');
my @ddl = grep { $_->{kind} =~ /^(datasets|tables)\./ } @{ bq_requests($bq, $n3) };
cmp_ok(scalar(grep { $_->{kind} eq 'tables.insert' } @ddl), '>=', 1, '(3) the dropped table is made again');
is(scalar(grep { $_->{kind} =~ /^datasets\./ || $_->{path} =~ /public_a/ } @ddl), 0,
	'(3) neither the dataset nor the other table is checked again')
  or diag(join("\n", map { "$_->{kind} $_->{path} $_->{status}" } @ddl));
is_deeply([ map { $_->{v} } grep { $_->{_pgsink_op} eq 'insert' } @{ bq_dump($bq, 'replica', 'public_b_raw')->{rows} } ],
	['after the drop'], '(3) the row is in the table made again');
is_deeply(bq_current_lines($bq, 'replica', 'public_a', columns => [qw(id v)]),
	psql_lines($node, 'postgres', 'SELECT id, v FROM a'), '(3) a goes on');

# (4) Schema changes between changes of one table, in one transaction (one
# batch): a column added is patched in before the rows that have it, the
# rows before it are written without it; a column retyped (BigQuery cannot)
# parks the changes made after the ALTER only.
$node->safe_psql('postgres', q{
CREATE TABLE r (id int PRIMARY KEY, n int);
SELECT pgsink.add_table('r');
INSERT INTO r VALUES (1, 1);
});
# Its import done first (else it may read the rows after the ALTER, as text).
ok(defined wait_imports($node, 'postgres', 60), '(4) r imported');
wait_delivered($node, 'postgres', '(4) r');
my $n4 = (bq_requests($bq)->[-1] // { n => 0 })->{n};
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO a VALUES (10, 'before');
UPDATE a SET v = 'before 2' WHERE id = 1;
ALTER TABLE a ADD COLUMN note text;
INSERT INTO a VALUES (11, 'after', 'n11');
UPDATE a SET note = 'n1' WHERE id = 1;
INSERT INTO r VALUES (2, 2);
ALTER TABLE r ALTER n TYPE text;
INSERT INTO r VALUES (3, 'three');
COMMIT;
});
wait_delivered($node, 'postgres', '(4) one transaction');
my @req4 = @{ bq_requests($bq, $n4) };
my ($patch) = grep { $req4[$_]{kind} eq 'tables.patch' && $req4[$_]{path} =~ /public_a_raw/ } 0 .. $#req4;
my ($ins) = grep { $req4[$_]{kind} eq 'insertAll' && $req4[$_]{path} =~ /public_a_raw/ } 0 .. $#req4;
ok(defined $patch && defined $ins && $patch < $ins, '(4) the column is added before the rows are sent');
my %a_raw = map { ($_->{id} . ':' . $_->{v}) => $_ } @{ bq_dump($bq, 'replica', 'public_a_raw')->{rows} };
ok(exists $a_raw{'10:before'} && !defined $a_raw{'10:before'}{note}, '(4) a row before the ALTER has no note');
is($a_raw{'11:after'}{note}, 'n11', '(4) a row after it has its note');
is_deeply(bq_current_lines($bq, 'replica', 'public_a', columns => [qw(id v note)]),
	psql_lines($node, 'postgres', 'SELECT id, v, note FROM a'), '(4) the view equals the table');
is_deeply([ map { $_->{id} } @{ bq_current($bq, 'replica', 'public_r')->{rows} } ], [ 1, 2 ],
	'(4) the change before the retype is written');
like($node->safe_psql('postgres',
		"SELECT string_agg(substring(entry from '\"id\":(\\d+)') || ': ' || response, E'\\n') "
		  . "FROM pgsink.dead_letters WHERE \"table\" = 'public.r'"),
	qr/^3: column n of BigQuery table public_r_raw is INT64 NULLABLE but now needs STRING[^\n]*$/,
	'(4) the change after it is parked, saying why, alone')
  or diag($node->safe_psql('postgres', "SELECT id, left(entry, 300) FROM pgsink.dead_letters"));

$node->stop;
bq_stop($bq);
done_testing();

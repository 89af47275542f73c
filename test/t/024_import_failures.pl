# Imports through a table altered mid-import and through a failing sink.
#
# (1) The key changes type in the middle of an import (int -> text, whose
#     order differs: '10000' < '2100'). The cursor, taken with the old key,
#     says nothing about the new order: the import starts over from the first
#     row, and the file replays to the table exactly. Continuing from the
#     cursor would skip every key that sorts before it as text.
# (2) Columns are dropped and added in the middle of an import without
#     touching the key: the import goes on from its cursor (no restart),
#     later chunks carry the new layout, and the file, replayed with schema
#     evolution (see PgsinkImport.pm), equals the table.
# (3) The sink fails in the middle of an import (pgsink.file_path moved into a
#     directory nobody may enter): pgsink.imports shows the running job with
#     the sink's error and its next retry, the import does not advance, and
#     once the directory is writable again it completes and the files replay
#     to the table exactly. (Skipped as root: permissions do not bind root.)
# (4) The server is misconfigured for pgsink (output_plugin_libraries without
#     it) when a re-import is scheduled: pgsink.imports shows the scheduled
#     job with what to fix; once fixed, the import runs.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkImport;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = pgsink_node(
	'import_failures',
	extra_conf => q{
pgsink.import_chunk_rows = 100
});
$node->start;
my $file1 = sink_file($node);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE k (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO k SELECT g, 'k' || g FROM generate_series(1, 60000) g;
CREATE TABLE a (id int PRIMARY KEY, gone text, v int NOT NULL);
INSERT INTO a SELECT g, 'gone ' || g, g FROM generate_series(1, 60000) g;
CREATE TABLE s (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO s SELECT g, 's' || g FROM generate_series(1, 60000) g;
ANALYZE k, a, s;
});

# The job of a table: state, rows_imported, error, next_retry_at IS NOT NULL.
sub job
{
	my ($table) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT state, rows_imported, coalesce(error, ''), next_retry_at IS NOT NULL "
		  . "FROM pgsink.imports WHERE \"table\" = '$table'::regclass ORDER BY id DESC LIMIT 1");
	my %j;
	@j{qw(state rows error retry)} = split /\|/, $out, 4;
	return \%j;
}

# Wait until the table's import has delivered at least $rows rows.
sub wait_progress
{
	my ($table, $rows) = @_;
	my $start = time();
	while (time() - $start < 60)
	{
		my $j = job($table);
		return $j if $j->{rows} >= $rows;
		usleep(20_000);
	}
	diag("import of $table did not reach $rows rows:\n" . import_jobs($node));
	return undef;
}

# ---------------------------------------------------------------------------
# (1) The key's type changes mid-import.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pgsink.add_table('k')");
ok(defined wait_progress('k', 2000), 'key change: the import of k is under way');
my $state_at_alter = $node->safe_psql('postgres', q{
BEGIN;
ALTER TABLE k ALTER id TYPE text USING id::text;
SELECT state FROM pgsink.import_jobs WHERE relid = 'k'::regclass;
COMMIT;
});
is($state_at_alter, 'running', 'key change: the import was running when the key changed')
  or BAIL_OUT('the import finished before the ALTER: the test proves nothing');
$node->safe_psql('postgres', q{
UPDATE k SET v = v || ' updated' WHERE id LIKE '%7';
DELETE FROM k WHERE id LIKE '%3';
INSERT INTO k SELECT 'x' || g, 'new' FROM generate_series(1, 500) g;
});
ok(defined wait_imports($node, 'postgres', 120), 'key change: the import completes');
my $j = job('k');
is($j->{state}, 'complete', 'key change: job complete');
my $k_rows = $node->safe_psql('postgres', 'SELECT count(*) FROM k');
cmp_ok($j->{rows}, '>', $k_rows,
	"key change: the import started over: more rows delivered ($j->{rows}) than k has");
like(slurp_file($node->logfile, $log_offset),
	qr/the key of table public\.k changed during import job \d+; the import starts over/,
	'key change: the restart is logged');
wait_delivered($node, 'postgres', 'key change');
check_import_exact($node, tables => { 'public.k' => ['id'] }, label => 'key change');

# ---------------------------------------------------------------------------
# (2) Other columns change mid-import: the import goes on from its cursor.
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pgsink.add_table('a')");
ok(defined wait_progress('a', 2000), 'layout change: the import of a is under way');
$state_at_alter = $node->safe_psql('postgres', q{
BEGIN;
ALTER TABLE a DROP COLUMN gone;
ALTER TABLE a ADD COLUMN added text;
SELECT state FROM pgsink.import_jobs WHERE relid = 'a'::regclass;
COMMIT;
});
is($state_at_alter, 'running', 'layout change: the import was running when columns changed')
  or BAIL_OUT('the import finished before the ALTER: the test proves nothing');
$node->safe_psql('postgres', q{
UPDATE a SET added = 'set ' || id WHERE id % 1000 = 0;
UPDATE a SET v = -v WHERE id % 997 = 0;
});
ok(defined wait_imports($node, 'postgres', 120), 'layout change: the import completes');
$j = job('a');
is($j->{state}, 'complete', 'layout change: job complete');
# Every row once (a restart would import more than 60000), less the rows an
# update superseded while their chunk was in flight (the stream carries them).
ok($j->{rows} <= 60000 && $j->{rows} >= 60000 - 120,
	"layout change: every row imported at most once, no restart ($j->{rows} rows)");
unlike(slurp_file($node->logfile, $log_offset), qr/changed during import job/,
	'layout change: no restart');
wait_delivered($node, 'postgres', 'layout change');
check_import_exact($node, tables => { 'public.a' => ['id'] }, label => 'layout change');

# ---------------------------------------------------------------------------
# (3) The sink fails mid-import.
SKIP:
{
	skip 'file permissions do not bind root', 11 if $> == 0;

	my $dir = $node->basedir . '/locked';
	mkdir $dir or die;
	my $file2 = "$dir/changes.jsonl";
	$node->safe_psql('postgres', "SELECT pgsink.add_table('s')");
	ok(defined wait_progress('s', 2000), 'sink failure: the import of s is under way');
	chmod 0000, $dir or die;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET pgsink.file_path = '$file2'; SELECT pg_reload_conf();");
	# The spool takes the import while the sink fails: the import goes on.
	ok(defined poll_until($node, 'postgres',
			"SELECT state FROM pgsink.sinks WHERE sink = 'file'", 'retrying', 30),
		'sink failure: the sink retries');
	like(sink_status($node)->{error}, qr/\Q$file2\E.*Permission denied/,
		'sink failure: the error names the file');
	ok(defined wait_imports($node, 'postgres', 120),
		'sink failure: the import completes into the spool meanwhile');
	is(job('s')->{error}, '', 'sink failure: the import has no error of its own');
	cmp_ok(sink_status($node)->{lag_entries}, '>=', 2000,
		'sink failure: the sink lags by the imported rows at least');
	chmod 0700, $dir or die;
	my $j3 = job('s');
	is($j3->{state}, 'complete', 'sink failure: job complete');
	is($j3->{error}, '', 'sink failure: no error left once the sink recovered');
	wait_delivered($node, 'postgres', 'sink failure');
	check_import_exact(
		$node,
		tables => { 'public.s' => ['id'] },
		files => [ $file1, $file2 ],
		label => 'sink failure');
}

# ---------------------------------------------------------------------------
# (4) A misconfigured server holds a scheduled import, and says why.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET output_plugin_libraries = 'pgoutput'; SELECT pg_reload_conf();");
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'misconfigured', 30),
	'misconfigured: the worker reports it');
$node->safe_psql('postgres', "SELECT pgsink.reimport('a')");
$j = job('a');
is($j->{state}, 'scheduled', 'misconfigured: the re-import is scheduled');
like($j->{error}, qr/^the stream worker cannot run: .*output_plugin_libraries/,
	'misconfigured: pgsink.imports says what to fix');
$node->safe_psql('postgres',
	'ALTER SYSTEM RESET output_plugin_libraries; SELECT pg_reload_conf();');
ok(defined wait_imports($node, 'postgres', 120), 'misconfigured: fixed, the re-import completes');
$j = job('a');
is_deeply([ $j->{state}, $j->{rows}, $j->{error} ], [ 'complete', 60000, '' ],
	'misconfigured: the re-import delivered every row, with no error left');

# Every table, over every file, once more: the stream of k and a went on
# through all of the above.
$node->safe_psql('postgres', q{
UPDATE k SET v = 'last' WHERE id LIKE '%1';
UPDATE a SET added = 'last' WHERE id % 10 = 1;
});
wait_delivered($node, 'postgres', 'final');
my @files = grep { -e $_ } ($file1, $node->basedir . '/locked/changes.jsonl');
check_import_exact(
	$node,
	tables => { 'public.k' => ['id'], 'public.a' => ['id'] },
	files => \@files,
	label => 'final');

$node->stop;
done_testing();

# An import holds no long snapshot and does not hold up the stream: during a
# long import (a big table in small chunks), dead tuples of another table
# are removable by VACUUM, the stream worker never has a transaction open for
# long, and a change to a captured table reaches the file within a fraction
# of a second.
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

my $rows = $ENV{PGSINK_IMPORT_VACUUM_ROWS} // 1000000;
my $churn_rows = 100000;

# Chunks of at most 200 rows: the import of $rows rows takes well over 10 s.
my $node = pgsink_node(
	'import_vacuum',
	extra_conf => q{
pgsink.import_chunk_rows = 200
autovacuum = off
});
$node->start;

$node->safe_psql('postgres', qq{
CREATE EXTENSION pgsink;
CREATE TABLE big (id bigint PRIMARY KEY, payload text);
INSERT INTO big SELECT g, repeat('x', 40) || g FROM generate_series(1, $rows) g;
CREATE TABLE churn (id int PRIMARY KEY, v int);
INSERT INTO churn SELECT g, 0 FROM generate_series(1, $churn_rows) g;
VACUUM (FREEZE) churn;
CREATE TABLE events (id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('events', import => false)");
$node->safe_psql('postgres', "SELECT pgsink.add_table('big')");

sub job
{
	my ($ok, $out) = query_retry($node, 'postgres',
		"SELECT state, chunks FROM pgsink.imports WHERE \"table\" = 'big'::regclass", 30);
	return split(/\|/, $out);
}

# Wait until the import is well under way.
my $start = time();
my ($state, $chunks) = job();
while (($chunks // 0) < 20 && $state ne 'complete' && time() - $start < 60)
{
	usleep(100_000);
	($state, $chunks) = job();
}
is($state, 'running', "the import is running ($chunks chunks done)");

# ---------------------------------------------------------------------------
# The stream worker's transactions are short: sample its transaction start
# and xmin while the import runs (a long snapshot would show as an old
# xact_start / backend_xmin).
my $sampler = $node->background_psql('postgres');
my $samples = $sampler->query_safe(q{
CREATE TEMP TABLE samples AS
SELECT 0 AS i, NULL::interval AS xact_age, NULL::int AS xmin_age WHERE false;
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM pg_stat_clear_snapshot();
        INSERT INTO samples
        SELECT i, clock_timestamp() - xact_start, age(backend_xmin)
          FROM pg_stat_activity WHERE backend_type = 'pgsink stream';
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
SELECT count(*), count(xact_age), coalesce(max(xact_age), '0'), coalesce(max(xmin_age), 0)
  FROM samples;
});
my ($n, $in_xact, $max_age, $max_xmin_age) = split(/\|/, $samples);
note("stream worker: $n samples, in a transaction in $in_xact, longest $max_age, "
	  . "largest xmin age $max_xmin_age");
ok($n >= 90, 'the stream worker was sampled');
my $max_age_s = $node->safe_psql('postgres', "SELECT extract(epoch FROM '$max_age'::interval)");
ok($max_age_s < 2, "no transaction of the stream worker was open for 2 s or more (longest: $max_age)");
$sampler->quit;

# ---------------------------------------------------------------------------
# Dead tuples: every row of churn updated, then VACUUM while the import
# goes on. All the dead versions must be removable: nothing holds an old
# snapshot.
$node->safe_psql('postgres', 'UPDATE churn SET v = v + 1');
my ($before_state, $before_chunks) = job();
my ($rc, $out, $err) = $node->psql('postgres', 'VACUUM (VERBOSE) churn');
my ($after_state, $after_chunks) = job();
is($rc, 0, 'VACUUM runs');
my ($removed, $remain, $not_yet) =
  $err =~ /tuples: (\d+) removed, (\d+) remain, (\d+) are dead but not yet removable/;
note("VACUUM churn: $removed removed, $remain remain, $not_yet dead but not yet removable");
ok(defined $removed && $removed >= $churn_rows,
	"VACUUM removed the $churn_rows dead tuples (removed: " . ($removed // 'n/a') . ')')
  or diag($err);
is($not_yet, 0, 'no dead tuple is held back by the import');
is($before_state, 'running', "the import was running when VACUUM started ($before_chunks chunks)");
is($after_state, 'running', "the import was still running when VACUUM ended ($after_chunks chunks)");
ok($after_chunks > $before_chunks, 'the import made progress meanwhile');

$node->safe_psql('postgres', 'SELECT pg_stat_force_next_flush()');
my $dead = $node->safe_psql('postgres',
	"SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'churn'");
ok($dead < $churn_rows / 100, "n_dead_tup of churn after VACUUM: $dead");

# ---------------------------------------------------------------------------
# Streaming latency during the import: a committed insert is durable in the
# file quickly (wait_for_delivery returns when it is).
my @lat;
for my $i (1 .. 10)
{
	my $t0 = time();
	$node->safe_psql('postgres',
		"INSERT INTO events DEFAULT VALUES; SELECT pgsink.wait_for_delivery('30s')");
	push @lat, time() - $t0;
	usleep(200_000);
}
my ($still) = job();
is($still, 'running', 'the import was running during the latency measurements');
@lat = sort { $a <=> $b } @lat;
note(sprintf("commit-to-file during the import (insert + wait_for_delivery): "
		  . "median %.0f ms, max %.0f ms", 1000 * $lat[5], 1000 * $lat[-1]));
ok($lat[-1] < 2, sprintf('every change reached the file within 2 s (max %.0f ms)', 1000 * $lat[-1]));
ok($lat[5] < 0.5, sprintf('median under 500 ms (%.0f ms)', 1000 * $lat[5]));

# The events are in the file, in order, while the import goes on around them.
my $file = sink_file($node);
my $events = () = slurp_file($file) =~ /"name":"events","op":"insert"/g;
is($events, 10, 'the 10 inserts are in the file');

my $took = wait_imports($node, 'postgres', 300);
ok(defined $took, 'the import finishes');
note(sprintf('import of %d rows took %.0f s after the measurements', $rows, $took // -1));

$node->stop;
done_testing();

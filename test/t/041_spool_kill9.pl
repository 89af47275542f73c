# kill -9 at random points while a workload runs, with 1 MB spool segments
# (so that kills also hit segment rolls): of the whole server (postmaster
# and every child at once), of the stream worker (while it appends to the
# spool, fsyncs and confirms) and of the file sink's delivery worker (while
# it writes the file, fsyncs and saves its cursor). A worker killed by a
# signal makes the postmaster reinitialize the cluster; the spool is cut
# back to its last round end, the file to its cursor's saved size. At the
# end the file, replayed, equals the table exactly: no duplicate, no gap.
#
# PGSINK_SEED=n repeats a run's kill points (order and delays).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

test_seed('the kill points');
my $per_kind = $ENV{PGSINK_KILLS_PER_KIND} // 3;

my $node = pgsink_node(
	'kill9',
	extra_conf => q{
pgsink.spool_segment_size = '1MB'
pgsink.batch_bytes = '256kB'
});
$node->start;
my $file = sink_file($node);
my %tables = ('public.t' => ['id']);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE SEQUENCE ids;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('t', import => false)");

# ---------------------------------------------------------------------------
# The workload: a loop of psql calls, one transaction each, retried while
# the server is down (whether a transaction in flight at a kill committed
# does not matter: the table is the reference).
my $workdir = PostgreSQL::Test::Utils::tempdir();
my $pick = q{(SELECT (random() * last_value)::int8 + 1 FROM ids, generate_series(1, %d))};
my @txns = (
	q{INSERT INTO t SELECT nextval('ids'), g, repeat(md5(random()::text), 6)
  FROM generate_series(1, 400) g;},
	q{UPDATE t SET n = n + 1, v = left(v, 100) || 'u' WHERE id IN } . sprintf($pick, 60) . ';',
	q{BEGIN;
INSERT INTO t SELECT nextval('ids'), g, md5(g::text) FROM generate_series(1, 200) g;
UPDATE t SET id = nextval('ids') WHERE id IN } . sprintf($pick, 5) . q{;
DELETE FROM t WHERE id IN } . sprintf($pick, 30) . q{;
COMMIT;},
	q{INSERT INTO t VALUES (nextval('ids'), 0, NULL);
UPDATE t SET v = 'single' WHERE id IN } . sprintf($pick, 1) . ';',
);
for my $i (0 .. $#txns)
{
	PostgreSQL::Test::Utils::append_to_file("$workdir/txn_$i.sql", $txns[$i]);
}
my $driver = "$workdir/writer.pl";
PostgreSQL::Test::Utils::append_to_file($driver, <<'EOF');
use strict;
use warnings;
use Time::HiRes qw(time usleep);
my ($connstr, $stop, $progress, $sqldir) = @ARGV;
my @txns = sort glob("$sqldir/txn_*.sql");
my $i = 0;
until (-e $stop)
{
	$i++;
	my $sql = $txns[$i % @txns];
	my $start = time();
	# Retry while the server is down or restarting.
	while (system('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $connstr,
			'-f', $sql, '-o', '/dev/null') != 0)
	{
		die "psql keeps failing\n" if time() - $start > 60;
		usleep(100_000);
	}
	open(my $p, '>', "$progress.tmp") or die;
	print $p "$i\n";
	close $p;
	rename("$progress.tmp", $progress);
}
EOF
my ($wout, $werr) = ('', '');
my $writer = IPC::Run::start(
	[ 'perl', $driver, $node->connstr('postgres'), "$workdir/stop", "$workdir/progress",
		$workdir ],
	'>', \$wout, '2>', \$werr);

sub progress
{
	open(my $f, '<', "$workdir/progress") or return 0;
	my $p = <$f> // 0;
	close $f;
	chomp $p;
	return $p;
}

# Wait until the workload committed $n more transactions.
sub wait_workload
{
	my ($n) = @_;
	my $target = progress() + $n;
	my $start = time();
	usleep(50_000) while progress() < $target && time() - $start < 60;
	return progress() >= $target;
}

sub spool_end
{
	my ($ok, $out) = query_retry($node, 'postgres', 'SELECT durable_offset FROM pgsink.spool', 30);
	return $ok && $out ne '' ? $out : 0;
}

# ---------------------------------------------------------------------------
# The kills, in a random order, each after a random delay.
my @kills = map { ($_) x $per_kind } qw(postmaster stream delivery);
for my $i (reverse 1 .. $#kills)
{
	my $j = int(rand($i + 1));
	@kills[ $i, $j ] = @kills[ $j, $i ];
}
ok(wait_workload(10), 'the workload runs');

my $n = 0;
for my $kind (@kills)
{
	$n++;
	my $stream = worker_pid_status($node, 60);
	my $delivery = wait_delivery_pid($node, 'file', 60);
	ok(defined $stream && defined $delivery, "kill $n: stream and delivery workers run");
	# A random point: a few transactions into the workload, plus a random delay.
	wait_workload(1 + int(rand(8)));
	usleep(int(rand(1_500_000)));
	my $offset = -s $node->logfile;
	my $spool = spool_end();
	my $size;
	if ($kind eq 'postmaster')
	{
		crash_node($node);
		$size = -s $file;
		start_after_crash($node);
	}
	else
	{
		kill 'KILL', $kind eq 'stream' ? $stream : $delivery;
		$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
		$size = -s $file;
	}
	my $new_stream = worker_pid_status($node, 60, $stream);
	my $new_delivery = wait_delivery_pid($node, 'file', 60, $delivery);
	ok(defined $new_stream && defined $new_delivery,
		"kill $n ($kind): new stream and delivery workers after the restart");
	# Where the file resumes: its cursor (the file is the spool, byte for byte,
	# from offset 0); what was past it is cut.
	$node->wait_for_log(qr/sink "file" delivers to .* from spool offset [0-9A-F]+/, $offset);
	my ($cursor) =
	  slurp_file($node->logfile, $offset) =~ /sink "file" delivers to .* from spool offset ([0-9A-F]+)/;
	note(sprintf("kill %d: %s (%s) at workload %d: spool durable to %d (segment %d); the file "
			  . "had %d bytes past its cursor", $n, $kind,
			$kind eq 'postmaster' ? 'all processes' : $kind eq 'stream' ? $stream : $delivery,
			progress(), $spool, int($spool / (1 << 20)), $size - hex($cursor)));
}

# ---------------------------------------------------------------------------
# Let the workload run a little more, stop it, then everything must be there once.
ok(wait_workload(10), 'the workload goes on after the kills');
PostgreSQL::Test::Utils::append_to_file("$workdir/stop", '');
ok($writer->finish, 'the workload ended cleanly')
  or diag('the workload: ' . join("\n", (split /\n/, $werr)[-5 .. -1]));
note("workload: " . progress() . " transactions");

wait_delivered($node, 'postgres', 'end', 120);
my $res = check_exact($node, tables => \%tables, label => 'end');
cmp_ok($res->{transactions}, '>', 100, 'many transactions were captured');
ok($res->{ops}{update} && $res->{ops}{delete}, 'updates and deletes were captured');

my $durable = spool_end();
note(sprintf("spool: %.1f MB written in all (%d segments of 1 MB)", $durable / (1 << 20),
		int($durable / (1 << 20))));
cmp_ok($durable, '>', 5 * (1 << 20), 'the spool rolled over several segments');
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'), 'streaming',
	'the stream worker streams at the end');
my $s = sink_status($node);
is($s->{state}, 'idle', 'the sink is idle at the end');
is($s->{lag_bytes}, 0, 'the sink has no lag');

my $log = slurp_file($node->logfile);
unlike($log, qr/cannot resume|PANIC|TRAP:/, 'no sink needs a re-import; no PANIC or assertion');

$node->stop;
done_testing();

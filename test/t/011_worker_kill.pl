# The stream worker dies while it writes a 500k-row transaction to the spool:
# (1) kill -9: the postmaster reinitializes the whole cluster (any process
#     attached to shared memory that dies by a signal forces that); pgsink
#     must come back by itself and deliver everything exactly once;
# (2) SIGTERM: the worker exits within a second, without a cluster restart;
#     the launcher starts a new one, which delivers everything exactly once.
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

my $rows = $ENV{PGSINK_KILL_ROWS} // 500000;

my $node = pgsink_node(
	'workerkill',
	extra_conf => q{
# Many small batches: the spool grows steadily while a transaction is written.
pgsink.batch_bytes = '1MB'
# Delivered segments stay, so the spool shows how much of a transaction was written.
pgsink.spool_retention = '1h'
});
$node->start;
my $file = sink_file($node);
my %tables = ('public.t' => ['id']);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('t')");
$node->safe_psql('postgres',
	"INSERT INTO t SELECT g, g, 'before' FROM generate_series(-100, -1) g");
$node->safe_psql('postgres', "UPDATE t SET n = 0 WHERE id = -1");
wait_delivered($node, 'postgres', 'initial rows');

my $spool = $node->data_dir . '/pgsink_spool';

# The spool's segment files, in order.
sub segments { return sort glob("$spool/*.jsonl"); }

# How many lines of the file (or of the spool) contain $pattern.
sub lines_of
{
	my ($pattern, @files) = @_;
	@files = ($file) unless @files;
	my $n = 0;
	for my $path (@files)
	{
		open(my $f, '<', $path) or next;
		while (<$f>) { $n++ if index($_, $pattern) >= 0; }
		close $f;
	}
	return $n;
}

sub spool_size
{
	my $n = 0;
	$n += -s $_ for segments();
	return $n;
}

# Commit $sql (one big transaction), then wait until the stream worker has
# written $grow bytes of it to the spool. Returns the spool's size before.
sub commit_and_wait_for_growth
{
	my ($sql, $grow) = @_;
	my $before = spool_size();
	$node->safe_psql('postgres', $sql);
	my $start = time();
	usleep(2_000) while spool_size() - $before < $grow && time() - $start < 60;
	return $before;
}

# ---------------------------------------------------------------------------
# (1) kill -9 of the stream worker in the middle of a big transaction.
my $pid = worker_pid_status($node, 10);
ok(defined $pid, 'stream worker running');
my $log_offset = -s $node->logfile;

my $before = commit_and_wait_for_growth(
	"INSERT INTO t SELECT g, g, 'inserted' FROM generate_series(1, $rows) g", 4_000_000);
kill 'KILL', $pid;
my $grown = spool_size() - $before;
my $at_kill = lines_of('"v":"inserted"', segments());
note("kill -9 of worker $pid after the spool grew by $grown bytes: "
	  . "$at_kill of $rows rows written");
ok($at_kill > 0 && $at_kill < $rows, 'the worker was killed while writing the transaction');

# The postmaster notices and reinitializes; pgsink comes back by itself.
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
my $new_pid = worker_pid_status($node, 60, $pid);
ok(defined $new_pid, 'a new stream worker runs after the cluster reinitialized');
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 60),
	'worker streaming again');
wait_delivered($node, 'postgres', 'after kill -9');
is(lines_of('"v":"inserted"'), $rows, 'after kill -9: every row of the transaction is in the file once');
check_exact($node, tables => \%tables, label => 'after kill -9');

# ---------------------------------------------------------------------------
# (2) SIGTERM of the worker in the middle of a big transaction.
$pid = $new_pid;
$log_offset = -s $node->logfile;
$before = commit_and_wait_for_growth("UPDATE t SET n = n + 1, v = 'updated' WHERE id > 0",
	4_000_000);
my $t0 = time();
kill 'TERM', $pid;
usleep(5_000) while alive($pid) && time() - $t0 < 10;
my $exit_time = time() - $t0;
$grown = spool_size() - $before;
my $at_term = lines_of('"v":"updated"', segments());
note(sprintf("SIGTERM of worker %d after the spool grew by %d bytes (%d of %d updates "
		  . "written); exited in %.3fs", $pid, $grown, $at_term, $rows, $exit_time));
ok($at_term > 0 && $at_term < $rows, 'SIGTERM came while the worker was writing the transaction');
cmp_ok($exit_time, '<', 1.0, 'worker exits within 1 s of SIGTERM');

$new_pid = worker_pid_status($node, 30, $pid);
ok(defined $new_pid, 'the launcher starts a new stream worker');
wait_delivered($node, 'postgres', 'after SIGTERM');
is(lines_of('"v":"updated"'), $rows, 'after SIGTERM: every update of the transaction is in the file once');
check_exact($node, tables => \%tables, label => 'after SIGTERM');

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/terminating any other active server processes/,
	'SIGTERM of the worker does not restart the cluster');
unlike($log, qr/PANIC|TRAP:/, 'no PANIC or assertion failure');

$node->stop;
done_testing();

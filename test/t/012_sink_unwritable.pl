# The file sink cannot be written while changes are committed: the worker
# reports "sink retrying" with the file in last_error, confirms nothing (the
# slot's lag grows), and once the file can be written again everything
# arrives exactly once and the state returns to "streaming".
#
# (1) pgsink.file_path is moved (reload) into a directory without
#     permissions: the new file cannot be created.
# (2) the file itself is chmod 000 and the worker restarts: it cannot reopen
#     it. (A chmod alone does not stop a process that has the file open:
#     writes through an open descriptor go on, as POSIX says.)
#
# The server runs as the same OS user as this test, so the permissions bind
# it; as root they would not, and the test is skipped.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

plan skip_all => 'file permissions do not bind root' if $> == 0;

my $node = pgsink_node('unwritable');
$node->start;
my $file1 = sink_file($node);
my %tables = ('public.t' => ['id'], 'public.u' => [ 'a', 'b' ]);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
CREATE TABLE u (a int4, b text, n int4, PRIMARY KEY (a, b));
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('t')");
$node->safe_psql('postgres', "SELECT pgsink.add_table('u')");

my $batch = 0;
# Some transactions of every kind on both tables.
sub workload
{
	$batch++;
	my $base = $batch * 1000;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT g, 'row ' || g FROM generate_series($base, $base + 199) g;
INSERT INTO u SELECT g, 'k' || g, g FROM generate_series($base, $base + 49) g;
BEGIN;
UPDATE t SET v = v || ' updated' WHERE id % 3 = 0;
UPDATE t SET id = id + 500 WHERE id BETWEEN $base AND $base + 9;
UPDATE u SET b = b || 'x', n = n + 1 WHERE a % 5 = 0;
DELETE FROM t WHERE id % 7 = 0;
COMMIT;
DELETE FROM u WHERE a % 11 = 0;
});
}

sub status
{
	my $s = $node->safe_psql('postgres',
		"SELECT state, confirmed_lsn, lag_bytes, coalesce(last_error, '') FROM pgsink.status");
	my %s;
	@s{qw(state confirmed lag error)} = split /\|/, $s, 4;
	return \%s;
}

sub slot_confirmed
{
	return $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgsink'");
}

# While the sink fails: commit changes, check that nothing is confirmed and
# that the lag grows, then that wait_for_delivery times out saying why.
sub check_blocked
{
	my ($label, $path) = @_;
	ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status',
			'sink retrying', 30),
		"$label: state is 'sink retrying'");
	my $s1 = status();
	like($s1->{error}, qr/\Q$path\E.*Permission denied/, "$label: last_error names the file")
	  or diag("last_error: $s1->{error}");
	my $confirmed = slot_confirmed();
	workload();
	workload();
	sleep 2;    # several retries
	my $s2 = status();
	is($s2->{state}, 'sink retrying', "$label: still retrying");
	is(slot_confirmed(), $confirmed, "$label: the slot confirms nothing");
	is($s2->{confirmed}, $s1->{confirmed}, "$label: pgsink.status confirms nothing");
	cmp_ok($s2->{lag}, '>', $s1->{lag}, "$label: lag_bytes grows ($s1->{lag} -> $s2->{lag})");
	my ($out, $err) = ('', '');
	$node->psql('postgres', "SELECT pgsink.wait_for_delivery('1s')",
		stdout => \$out, stderr => \$err);
	like($err, qr/did not deliver.*sink retrying/s,
		"$label: wait_for_delivery times out and says why");
}

sub check_recovered
{
	my ($label, @files) = @_;
	ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 30),
		"$label: state returns to 'streaming'");
	wait_delivered($node, 'postgres', $label);
	is(status()->{error}, '', "$label: no error left in pgsink.status");
	workload();    # and it keeps streaming
	wait_delivered($node, 'postgres', "$label, more changes");
	my $res = check_exact($node, tables => \%tables, files => \@files, label => $label);
	is_deeply($res->{no_schema}, [],
		"$label: each file has a table's Schema entry before its first change");
	is(status()->{state}, 'streaming', "$label: streaming");
}

workload();
wait_delivered($node, 'postgres', 'initial');

# ---------------------------------------------------------------------------
# (1) A new pgsink.file_path in a directory nobody may enter.
my $dir = $node->basedir . '/locked';
mkdir $dir or die;
chmod 0000, $dir or die;
my $file2 = "$dir/changes.jsonl";
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"ALTER SYSTEM SET pgsink.file_path = '$file2'; SELECT pg_reload_conf();");
check_blocked('directory without permissions', $file2);
chmod 0700, $dir or die;
check_recovered('directory writable again', $file1, $file2);
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/WARNING:.*pgsink: could not open file "\Q$file2\E": Permission denied/,
	'the failure is logged as a WARNING');
like($log, qr/pgsink: the sink has recovered/, 'the recovery is logged');

# ---------------------------------------------------------------------------
# (2) The file itself unwritable: a restarted worker cannot reopen it.
chmod 0000, $file2 or die;
my $pid = worker_pid_status($node, 10);
kill 'TERM', $pid;
ok(defined worker_pid_status($node, 30, $pid), 'worker restarted');
check_blocked('file chmod 000', $file2);
# A reload while the sink fails restarts the stream in place: no ERROR, no
# new worker, and it keeps retrying.
$pid = worker_pid_status($node, 10);
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(defined poll_until($node, 'postgres', 'SELECT 1', '1', 5), 'reloaded');
sleep 2;
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/LOG:  pgsink: configuration reloaded while the sink was failing; restarting the stream/,
	'a reload while the sink fails restarts the stream, logged as LOG');
unlike($log, qr/ERROR:  .*configuration reloaded/, 'without an ERROR');
is(worker_pid_status($node, 10), $pid, 'in the same worker');
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'), 'sink retrying',
	'still retrying');
# SIGTERM is served while the worker waits to retry.
$pid = worker_pid_status($node, 10);
my $t0 = time();
kill 'TERM', $pid;
usleep(5_000) while alive($pid) && time() - $t0 < 10;
my $took = time() - $t0;
cmp_ok($took, '<', 1.0, sprintf('a retrying worker exits within 1 s of SIGTERM (%.3fs)', $took));
ok(defined worker_pid_status($node, 30, $pid), 'worker restarted');
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'sink retrying', 30),
	'the new worker retries too');
chmod 0600, $file2 or die;
check_recovered('file writable again', $file1, $file2);

$node->stop;
done_testing();

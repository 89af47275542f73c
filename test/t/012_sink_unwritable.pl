# The file sink cannot be written while changes are committed: its delivery
# worker reports "retrying" in pgsink.sinks with the file in last_error and
# its cursor stays put (its lag grows), while decoding goes on: the slot
# confirms and the spool holds the entries. Once the file can be written
# again everything arrives exactly once and the sink is "idle" again.
#
# (1) pgsink.file_path is moved (reload) into a directory without
#     permissions: the new file cannot be created.
# (2) the file itself is chmod 000 and the delivery worker restarts: it
#     cannot reopen it. (A chmod alone does not stop a process that has the file open:
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

sub slot_confirmed
{
	return $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgsink'");
}

# While the sink fails: commit changes, check that the sink's cursor stays
# and its lag grows while the slot confirms and the spool grows, then that
# wait_for_delivery times out saying why.
sub check_blocked
{
	my ($label, $path) = @_;
	ok(defined poll_until($node, 'postgres',
			"SELECT state FROM pgsink.sinks WHERE sink = 'file'", 'retrying', 30),
		"$label: the sink's state is 'retrying'");
	my $s1 = sink_status($node);
	like($s1->{error}, qr/\Q$path\E.*Permission denied/, "$label: last_error names the file")
	  or diag("last_error: $s1->{error}");
	my $confirmed = slot_confirmed();
	my $spool = spool_bytes($node);
	workload();
	workload();
	sleep 2;    # several retries
	my $s2 = sink_status($node);
	is($s2->{state}, 'retrying', "$label: still retrying");
	is($s2->{cursor}, $s1->{cursor}, "$label: the sink's cursor stays");
	cmp_ok($s2->{lag_bytes}, '>', $s1->{lag_bytes},
		"$label: the sink's lag grows ($s1->{lag_bytes} -> $s2->{lag_bytes})");
	cmp_ok($s2->{lag_entries}, '>', $s1->{lag_entries}, "$label: in entries too");
	ok(defined poll_until($node, 'postgres',
			"SELECT confirmed_flush_lsn > '$confirmed' FROM pg_replication_slots "
			  . "WHERE slot_name = 'pgsink'", 't', 10),
		"$label: the slot confirms (decoding goes on)");
	cmp_ok(spool_bytes($node), '>', $spool, "$label: the spool holds the entries");
	is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'), 'streaming',
		"$label: the stream worker streams");
	my ($out, $err) = ('', '');
	$node->psql('postgres', "SELECT pgsink.wait_for_delivery('1s')",
		stdout => \$out, stderr => \$err);
	like($err, qr/did not deliver.*Sink "file" is retrying.*Permission denied/s,
		"$label: wait_for_delivery times out and says why");
}

sub check_recovered
{
	my ($label, @files) = @_;
	wait_delivered($node, 'postgres', $label);
	is(sink_status($node)->{state}, 'idle', "$label: the sink is idle (caught up)");
	is(sink_status($node)->{error}, '', "$label: no error left in pgsink.sinks");
	workload();    # and it keeps streaming
	wait_delivered($node, 'postgres', "$label, more changes");
	my $res = check_exact($node, tables => \%tables, files => \@files, label => $label);
	is_deeply($res->{no_schema}, [],
		"$label: each file has a table's Schema entry before its first change");
	is(sink_status($node)->{lag_bytes}, 0, "$label: no lag");
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
like($log, qr/WARNING:.*pgsink: sink "file": could not open file "\Q$file2\E": Permission denied/,
	'the failure is logged as a WARNING');
like($log, qr/pgsink: sink "file" has recovered/, 'the recovery is logged');

# ---------------------------------------------------------------------------
# (2) The file itself unwritable: a restarted delivery worker cannot reopen it.
chmod 0000, $file2 or die;
my $pid = wait_delivery_pid($node, 'file', 10);
kill 'TERM', $pid;
ok(defined wait_delivery_pid($node, 'file', 30, $pid), 'delivery worker restarted');
check_blocked('file chmod 000', $file2);
# A reload while the sink fails is applied in place: no ERROR, no new
# worker, and it keeps retrying.
$pid = wait_delivery_pid($node, 'file', 10);
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(defined poll_until($node, 'postgres', 'SELECT 1', '1', 5), 'reloaded');
sleep 2;
$log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/ERROR:/, 'a reload while the sink fails raises no ERROR');
is(wait_delivery_pid($node, 'file', 10), $pid, 'in the same delivery worker');
is(sink_status($node)->{state}, 'retrying', 'still retrying');
# SIGTERM is served while the worker waits to retry.
my $t0 = time();
kill 'TERM', $pid;
usleep(5_000) while alive($pid) && time() - $t0 < 10;
my $took = time() - $t0;
cmp_ok($took, '<', 1.0, sprintf('a retrying worker exits within 1 s of SIGTERM (%.3fs)', $took));
ok(defined wait_delivery_pid($node, 'file', 30, $pid), 'delivery worker restarted');
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'file'", 'retrying', 30),
	'the new worker retries too');
chmod 0600, $file2 or die;
check_recovered('file writable again', $file1, $file2);

$node->stop;
done_testing();

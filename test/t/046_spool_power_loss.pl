# kill -9 keeps the page cache, so 045 cannot see a missing or misordered
# fsync of the spool. Here each crash of the server during a catch-up (1 ms
# rounds, 1 MB segments: rounds and new segments made durable by the spool's
# thread while decoding goes on) is followed by what a power loss leaves:
# every spool segment and index is cut back to its size at its last
# successful fsync (fault_shim's PGSINK_SYNC_LOG). The slot, the sinks'
# cursors and the spool must agree on what survived: the file, replayed,
# equals the table exactly. (Fails when the round's fdatasyncs are left out.)
#
# PGSINK_SEED=n repeats a run's crash moments.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

test_seed('the crash moments');

my $node = pgsink_node(
	'power_loss',
	extra_conf => q{
pgsink.spool_segment_size = '1MB'
pgsink.flush_interval = '1ms'
});
my $log = $node->basedir . '/spool_syncs.log';
start_with_fault_shim($node, PGSINK_SYNC_LOG => $log);
my %tables = ('public.t' => ['id']);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
SELECT pgsink.add_table('t', import => false);
});

# A backlog of about 12 MB in many transactions while decoding is paused.
sub backlog
{
	my ($k) = @_;
	query_retry($node, 'postgres', 'SELECT pgsink.pause()', 60);
	my $sql = '';
	for my $i (0 .. 119)
	{
		my $from = $k * 1_000_000 + $i * 500;
		$sql .= churn_sql($from, 500);
	}
	query_retry($node, 'postgres', $sql, 120);
}

my $dropped = 0;
for my $k (1 .. 4)
{
	backlog($k);
	my $before = $node->safe_psql('postgres', 'SELECT durable_offset FROM pgsink.spool');
	query_retry($node, 'postgres', 'SELECT pgsink.resume()', 60);
	# Crash while catching up: once the first rounds are durable.
	for (1 .. 1000)
	{
		last
		  if $node->safe_psql('postgres', 'SELECT durable_offset FROM pgsink.spool') ne $before;
		usleep(5_000);
	}
	usleep(int(rand(30_000)));
	crash_node($node);
	my $d = spool_power_loss($node, $log);
	$dropped += $d;
	note("catch-up $k: crashed the server; the power loss dropped $d bytes of the spool");
	$node->{_pid} = undef;
	start_with_fault_shim($node, PGSINK_SYNC_LOG => $log);
}
note("the power losses dropped $dropped bytes in all");

wait_delivered($node, 'postgres', 'after the power losses');
check_exact($node, tables => \%tables, label => 'spool cut back to its fsyncs');

$node->stop;
done_testing();

# While the stream worker catches up a backlog, each round's fsyncs (and
# each new segment) are made by the spool's write thread while decoding goes
# on. With pgsink.flush_interval = 1ms rounds end often, and with 1 MB
# segments they roll often, in that thread. kill -9 of the stream worker and
# of the whole server, at random moments of catch-ups: the slot never
# confirms past what the spool made durable, and the file, replayed, equals
# the table exactly.
#
# PGSINK_SEED=n repeats a run's kill moments.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

test_seed('the kill moments');

my $node = pgsink_node(
	'async_rounds',
	extra_conf => q{
pgsink.spool_segment_size = '1MB'
pgsink.flush_interval = '1ms'
});
$node->start;
my %tables = ('public.t' => ['id']);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
SELECT pgsink.add_table('t', import => false);
});

# A backlog of about 8 MB while decoding is paused.
sub backlog
{
	my ($k) = @_;
	my $base = $k * 1_000_000;
	query_retry($node, 'postgres', 'SELECT pgsink.pause()', 60);
	for my $i (0 .. 7)
	{
		my $from = $base + $i * 4000;
		query_retry($node, 'postgres', churn_sql($from, 4000), 60);
	}
}

# The slot's confirmed position, then the spool's durable one: the spool's
# only grows, so the first is never past the second if the slot waits for it.
sub confirmed_within_durable
{
	my ($ok, $out) = query_retry(
		$node, 'postgres', q{
SELECT (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgsink')
       <= (SELECT durable_lsn FROM pgsink.spool)}, 30);
	return !$ok || $out eq 't' || $out eq '';
}

my $violations = 0;
for my $k (1 .. 4)
{
	backlog($k);
	query_retry($node, 'postgres', 'SELECT pgsink.resume()', 60);
	my $until = time() + 0.05 + rand(0.5);
	while (time() < $until)
	{
		$violations++ unless confirmed_within_durable();
		usleep(10_000);
	}
	if ($k % 2)
	{
		my $pid = worker_pid_status($node, 60);
		ok(defined $pid, "catch-up $k: the stream worker runs");
		kill 'KILL', $pid if defined $pid;
		note("catch-up $k: killed the stream worker");
		usleep(300_000);
		$node->poll_query_until('postgres', 'SELECT true') or die;
	}
	else
	{
		crash_node($node);
		start_after_crash($node);
		note("catch-up $k: killed the server");
	}
}
is($violations, 0, 'the slot never confirmed past the spool\'s durable position');

wait_delivered($node, 'postgres', 'after the kills');
my $offset = $node->safe_psql('postgres', 'SELECT durable_offset FROM pgsink.spool');
cmp_ok($offset, '>', 4 << 20, 'the spool rolled over several 1 MB segments');
check_exact($node, tables => \%tables, label => 'rounds made durable while decoding');

$node->stop;
done_testing();

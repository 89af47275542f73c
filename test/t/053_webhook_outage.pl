# A webhook receiver outage of a minute, with a kill -9 of the postmaster in
# the middle of it. The receiver (webhook_receiver.py) is stopped for 60 s
# while rounds of rows (4 kB of incompressible text each, ~100 MB of
# entries in all; most are then updated to a short value, so the check
# at the end stays quick) keep being committed, with CHECKPOINTs; halfway
# through, the postmaster and all its children are killed (kill -9) and the
# server restarted. Meanwhile:
# (1) the webhook sink retries and says the connection failed; decoding
#     goes on: the stream's retained WAL stays small (a round or so), far
#     below the WAL generated during the outage, while the spool grows by
#     every entry of it;
# (2) memory stays bounded: each delivery worker's peak RSS (VmHWM, through
#     the outage and the catch-up after it) stays under 4 x
#     pgsink.batch_bytes (1MB here) + 32 MB. Four batches: the spool
#     reader's buffer, the lines handed to the sink, the request body, and
#     one in transit (a half during bisection, libcurl's and the kernel's
#     buffers); 32 MB: a background worker's own baseline (the binary and
#     its libraries, libcurl and OpenSSL among them, caches, the shared
#     memory it touches), measured at about 20 MB idle. The spool grows by
#     more than twice that bound;
# (3) once the receiver is back, the backlog arrives and the entries it
#     stored replay exactly to the source table.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkWebhook;
use Test::More;
use Time::HiRes qw(time usleep);

my $MB = 1024 * 1024;
my $outage = $ENV{PGSINK_WEBHOOK_OUTAGE_SECONDS} // 60;
my $rounds = 12;
my $rows = 2000;    # per round, 4 kB each: ~100 MB of entries in all
my $batch_mb = 1;
my $bound = 4 * $batch_mb * $MB + 32 * $MB;

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $secret = 'whsec_' . 'b3V0YWdlLXRlc3Qtc2VjcmV0LWtleS1wZ3NpbmstMDE=';
my $node = pgsink_node(
	'webhook_outage',
	extra_conf => qq{
pgsink.sink = 'webhook'
pgsink.webhook_url = 'http://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
pgsink.http_timeout = '5s'
pgsink.batch_bytes = '${batch_mb}MB'
});
my $dir = $node->basedir;
my $store = "$dir/received.jsonl";
my %tables = ('public.t' => ['id']);

my $receiver = receiver_start($dir, $port, $secret);
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
SELECT pgsink.add_table('t', import => false);
INSERT INTO t SELECT g, 0, 'before the outage' FROM generate_series(1, 100) g;
});
wait_delivered($node, 'postgres', 'before the outage');

sub current_lsn { return parse_lsn($node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()')); }

# Peak memory of each delivery worker seen (by pid): VmRSS, RssAnon, VmHWM in kB.
my %peak;
sub sample_memory
{
	my $pid = delivery_pid($node, 'webhook');
	return if $pid eq '';
	my $s = proc_status($pid) or return;
	my $p = ($peak{$pid} //= { rss => 0, anon => 0, hwm => 0 });
	$p->{rss} = $s->{VmRSS} if ($s->{VmRSS} // 0) > $p->{rss};
	$p->{anon} = $s->{RssAnon} if ($s->{RssAnon} // 0) > $p->{anon};
	$p->{hwm} = $s->{VmHWM} if ($s->{VmHWM} // 0) > $p->{hwm};
}
my $pid0 = delivery_pid($node, 'webhook');
sample_memory();
note(sprintf('delivery worker %s before the outage: VmHWM %d kB', $pid0, $peak{$pid0}{hwm}));

# ---------------------------------------------------------------------------
# The outage.
receiver_stop($receiver);
my $t_stop = time();
$node->safe_psql('postgres', "INSERT INTO t VALUES (0, 0, 'first of the outage')");
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'(1) receiver down: the webhook sink retries');
like(sink_status($node, 'webhook')->{error}, qr/webhook http:\/\/127\.0\.0\.1:\d+: .*(refused|connect)/i,
	'(1) and says the connection failed');

my $spool_before = spool_bytes($node);
my $lsn_before = current_lsn();
my $max_retained = retained_wal($node);
my $crashed = 0;
my ($states_ok, $samples) = (1, 0);
for my $r (1 .. $rounds)
{
	my $base = $r * 100000;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT g, g,
    (SELECT string_agg(md5(g::text || '.' || i::text), '') FROM generate_series(1, 128) i)
  FROM generate_series($base, $base + $rows - 1) g;
UPDATE t SET n = n + 1, v = md5(v) WHERE id BETWEEN $base AND $base + $rows - 1 AND id % 10 <> 0;
DELETE FROM t WHERE id BETWEEN $base AND $base + $rows - 1 AND id % 20 = 1;
});
	# A checkpoint logs the running transactions, which lets restart_lsn move.
	$node->safe_psql('postgres', 'CHECKPOINT');
	if ($r == $rounds / 2)
	{
		# kill -9 in the middle of the outage.
		sample_memory();
		crash_node($node);
		start_after_crash($node);
		$crashed = 1;
		ok(defined wait_delivery_pid($node, 'webhook', 30, $pid0),
			'(1) after kill -9: a new delivery worker');
	}
	# Pace the rounds over the outage; sample meanwhile.
	my $until = $t_stop + $r * ($outage - 5) / $rounds;
	do
	{
		usleep(200_000);
		my $ret = retained_wal($node);
		$max_retained = $ret if $ret > $max_retained;
		sample_memory();
		my $st = sink_status($node, 'webhook')->{state};
		# Just after the restart the worker may still be starting.
		$states_ok = 0 unless $st =~ /^(retrying|starting|waiting for spool)$/;
		$samples++;
	} while (time() < $until);
}
my $lsn_after = current_lsn();
my $generated = $lsn_after - $lsn_before;
ok($states_ok, "(1) the sink was retrying throughout ($samples samples)");

# Decoding went on through the outage: the spool holds everything committed.
ok(defined poll_until($node, 'postgres',
		"SELECT durable_lsn >= '" . format_lsn($lsn_after) . "' FROM pgsink.spool", 't', 30),
	'(1) the spool holds every change committed during the outage');
$node->safe_psql('postgres', 'CHECKPOINT');
ok(defined poll_until($node, 'postgres',
		"SELECT confirmed_flush_lsn >= '" . format_lsn($lsn_after)
		  . "' FROM pg_replication_slots WHERE slot_name = 'pgsink'", 't', 30),
	'(1) the slot confirmed every change committed during the outage');
my $retained_end = retained_wal($node);
$max_retained = $retained_end if $retained_end > $max_retained;
my $spool_after = spool_bytes($node);
my $growth = $spool_after - $spool_before;
my $s = sink_status($node, 'webhook');
note(sprintf("outage: %.1f MB of WAL generated; most WAL retained %.2f MB (%.2f MB at the end); "
		  . "spool %.1f MB -> %.1f MB (+%.1f MB); the sink's lag %d entries, %.1f MB",
		$generated / $MB, $max_retained / $MB, $retained_end / $MB, $spool_before / $MB,
		$spool_after / $MB, $growth / $MB, $s->{lag_entries}, $s->{lag_bytes} / $MB));
cmp_ok($generated, '>', 80 * $MB, '(1) the outage generated WAL by the tens of MB');
cmp_ok($max_retained, '<', 16 * $MB, '(1) the WAL the stream retains stays below 16 MB');
cmp_ok($max_retained, '<', $generated / 4,
	'(1) and far below the WAL generated during the outage');
cmp_ok($s->{lag_bytes}, '>=', $growth, "(1) the spool grew by entries the sink still owes");
cmp_ok($s->{lag_entries}, '>=', $rounds * $rows, '(1) every entry of the outage is owed');
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'), 'streaming',
	'(1) the stream worker streams through the outage');

# Memory while the receiver is down (each worker: before and after the crash).
sample_memory();
for my $pid (sort keys %peak)
{
	note(sprintf("delivery worker %s: peak VmRSS %.1f MB, RssAnon %.1f MB, VmHWM %.1f MB", $pid,
			$peak{$pid}{rss} / 1024, $peak{$pid}{anon} / 1024, $peak{$pid}{hwm} / 1024));
}
my $pid1 = delivery_pid($node, 'webhook');
cmp_ok((sort { $b <=> $a } map { $_->{hwm} } values %peak)[0] * 1024, '<', $bound,
	sprintf('(2) while the receiver is down, the delivery workers\' peak RSS (VmHWM) < '
		  . '4 x batch_bytes + 32 MB (%d MB)', $bound / $MB));
cmp_ok($growth, '>', 2 * $bound,
	sprintf('(2) while the spool grew by far more (%.0f MB)', $growth / $MB));

# Wait for the minute to end.
my $left = $t_stop + $outage - time();
usleep($left * 1e6) if $left > 0;
is(sink_status($node, 'webhook')->{cursor}, $s->{cursor}, '(1) nothing was delivered meanwhile');

# ---------------------------------------------------------------------------
# The receiver is back.
my $t1 = time();
note(sprintf('the receiver was down %.1fs', $t1 - $t_stop));
$receiver = receiver_start($dir, $port, $secret);
wait_delivered($node, 'postgres', '(3) receiver back', 120);
note(sprintf('(3) backlog delivered in %.1fs', time() - $t1));
is(sink_status($node, 'webhook')->{state}, 'idle', '(3) the webhook sink is idle');
is(sink_status($node, 'webhook')->{lag_bytes}, 0, '(3) no lag');
is(receiver_stats($receiver)->{bad_signatures}, 0, '(3) every request was signed');

# The worker that delivered the backlog stayed within the bound too.
my $hwm = proc_status($pid1);
ok(defined $hwm, '(2) the delivery worker delivered the backlog without restarting');
note(sprintf('delivery worker %s after the backlog: VmHWM %.1f MB', $pid1, ($hwm->{VmHWM} // 0) / 1024));
cmp_ok(($hwm->{VmHWM} // 1e9) * 1024, '<', $bound,
	'(2) its peak RSS (VmHWM) through the catch-up < 4 x batch_bytes + 32 MB');

my $res = check_exact($node, tables => \%tables, files => [$store], label => '(3) after the outage');
cmp_ok($res->{modifications}, '>=', 100 + $rounds * $rows, '(3) every change reached the receiver');

receiver_stop($receiver);
$node->stop;
done_testing();

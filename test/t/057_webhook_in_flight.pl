# The webhook sink with several requests in flight (pgsink.max_in_flight),
# against the strict receiver (webhook_receiver.py):
# (1) with max_in_flight = 4 and a receiver that takes 0.1 s a request,
#     requests overlap (the receiver counts up to 4 at once, never more), and
#     the receiver's store replays exactly to the tables;
# (2) the cursor advances only past a contiguous prefix of acknowledged
#     batches: while the batch holding one marked row keeps failing (503),
#     later batches are acknowledged, yet the sink's lag still counts every
#     entry from the marked row on, and the sink says it is retrying;
# (3) kill -9 of the postmaster then: delivery resumes from the cursor (the
#     receiver gets acknowledged batches again, and drops them), and is exact
#     once the receiver takes the marked batch;
# (4) four requests hang: the worker sleeps (no busy loop), and SIGTERM
#     still ends it within 1 s;
# (5) max_in_flight lowered to 1 by a reload while four requests are out:
#     the same worker goes on, one request at a time.
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

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $secret = 'whsec_' . 'cGdzaW5rLXRlc3Qtc2VjcmV0LWtleS0wMTIzNDU2Nzg5';
my $node = pgsink_node(
	'in_flight',
	extra_conf => qq{
pgsink.sink = 'webhook'
pgsink.webhook_url = 'http://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
pgsink.max_in_flight = 4
pgsink.batch_bytes = '64kB'
# Segments of 1 MB: batches go on across their ends (check_exact below).
pgsink.spool_segment_size = 1
pgsink.http_timeout = '5s'
pgsink.retry_max_interval = '1s'
});
my $dir = $node->basedir;
my $store = "$dir/received.jsonl";
my %tables = ('public.t' => ['id']);
my $receiver;
sub mode { receiver_mode($receiver // { control => "$dir/control.json" }, $_[0]); }
sub stats { return receiver_stats($receiver); }
sub restart_receiver
{
	receiver_stop($receiver) if $receiver;
	$receiver = receiver_start($dir, $port, $secret);
}

mode('{"mode": "503", "retry_after": "1"}');
restart_receiver();
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t');
});

# With several requests in flight, batches arrive in any order: the store,
# sorted by (lsn, sequence) (a Schema entry before the entry it precedes),
# must then be the exact changelog.
sub sorted_store
{
	my @lines = grep { length } split /\n/, slurp_file($store);
	my %key;
	for my $l (@lines)
	{
		my ($hi, $lo) = $l =~ /"lsn":"([0-9A-F]+)\/([0-9A-F]+)"/;
		my ($seq) = $l =~ /"sequence":(\d+)/;
		$key{$l} = sprintf('%08x%08x%012d', hex($hi), hex($lo), $seq // 0);
	}
	open(my $fh, '>', "$store.sorted") or die $!;
	print $fh "$_\n" for sort { $key{$a} cmp $key{$b} } @lines;
	close $fh;
	return "$store.sorted";
}

sub load
{
	my ($from, $to) = @_;
	for (my $i = $from; $i < $to; $i += 500)
	{
		my $end = $i + 499;
		$node->safe_psql('postgres',
			"INSERT INTO t SELECT g, repeat('x', 200) || g FROM generate_series($i, $end) g");
	}
}

# ---------------------------------------------------------------------------
# (1) Requests overlap, four at most. The rows wait in the spool while the
# receiver answers 503, then go out at once.
load(0, 10000);
ok(defined poll_until($node, 'postgres',
		"SELECT lag_entries >= 10000 FROM pgsink.sinks WHERE sink = 'webhook'", 't', 30),
	'(1) a backlog in the spool');
mode('{"mode": "ok", "delay": 0.1}');
wait_delivered($node, 'postgres', '(1) four in flight', 120);
my $s = stats();
is($s->{max_concurrent}, 4, '(1) the receiver served four requests at once, never more');
is($s->{accepted} > 0 && $s->{bad_signatures} == 0 ? 1 : 0, 1, '(1) after the 503s');
cmp_ok($s->{requests}, '>=', 40, '(1) in many batches of 64 kB');
is($s->{bad_signatures}, 0, '(1) every request signed');
check_exact($node, tables => \%tables, files => [sorted_store()], label => '(1) four in flight');

# ---------------------------------------------------------------------------
# (2) One batch keeps failing; later ones are acknowledged; the cursor waits.
mode('{"mode": "unavailable_if", "pattern": "MARKER", "delay": 0.05}');
my $accepted_before = stats()->{accepted};
load(10000, 12000);
$node->safe_psql('postgres', "INSERT INTO t VALUES (12000, 'MARKER')");
load(12001, 16001);
my $after_marker = 1 + 4000;    # the marked row and the rows after it
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'(2) the sink retries the marked batch');
# Wait until batches after the marked one were acknowledged.
my $later = 0;
for (my $t0 = time(); time() - $t0 < 30; usleep(100_000))
{
	$later = grep { /"id":"(1[2-5]\d{3})"/ && $1 > 12000 } split /\n/, slurp_file($store);
	last if $later > 200;
}
cmp_ok($later, '>', 200, '(2) batches after the marked one were acknowledged');
my $st = sink_status($node, 'webhook');
cmp_ok($st->{lag_entries}, '>=', $after_marker,
	'(2) yet the cursor is not past the marked batch: every entry from it on is still owed');
like($st->{error}, qr/503/, '(2) the status says what the receiver answered');
unlike(slurp_file($store), qr/MARKER/, '(2) the marked row was not delivered');

# ---------------------------------------------------------------------------
# (3) kill -9 now: delivery resumes from the cursor.
my $dups_before = stats()->{duplicates};
crash_node($node);
start_after_crash($node);
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'(3) after the crash the marked batch is retried');
mode('{"mode": "ok"}');
wait_delivered($node, 'postgres', '(3) after kill -9', 60);
cmp_ok(stats()->{duplicates}, '>', $dups_before,
	'(3) batches acknowledged after the cursor were sent again (and dropped by the receiver)');
like(slurp_file($store), qr/MARKER/, '(3) the marked row arrived');
check_exact($node, tables => \%tables, files => [sorted_store()], label => '(3) after kill -9');

# ---------------------------------------------------------------------------
# (4) Four requests hang: SIGTERM is served at once.
mode('{"mode": "slow", "seconds": 30}');
restart_receiver();    # its counts start over
load(20000, 24000);
for (my $t0 = time(); time() - $t0 < 20 && (stats()->{max_concurrent} // 0) < 4; usleep(50_000)) { }
is(stats()->{max_concurrent}, 4, '(4) four requests hang');
my $pid = delivery_pid($node, 'webhook');
ok($pid, '(4) the delivery worker runs');
# While every place is taken and the next batch waits, the worker sleeps.
sub cpu_seconds
{
	my @f = split ' ', (split /\)/, slurp_file("/proc/$_[0]/stat"))[-1];
	return ($f[11] + $f[12]) / 100;    # utime + stime, in clock ticks
}
my $cpu0 = cpu_seconds($pid);
sleep 2;
my $cpu = cpu_seconds($pid) - $cpu0;
cmp_ok($cpu, '<', 0.3, sprintf('(4) the worker sleeps while four requests hang (%.2f s of CPU in 2 s)', $cpu));
my $t0 = time();
kill 'TERM', $pid;
while (kill(0, $pid) && time() - $t0 < 5) { usleep(10_000); }
my $took = time() - $t0;
ok(!kill(0, $pid), '(4) SIGTERM ended the delivery worker while requests hung');
cmp_ok($took, '<', 1.0, sprintf('(4) within a second (%.2f s)', $took));

# ---------------------------------------------------------------------------
# (5) max_in_flight lowered to 1 by a reload while four requests are out:
# the worker finishes them, then sends one at a time.
mode('{"mode": "ok", "delay": 0.5}');
restart_receiver();    # its counts start over
my $new_pid = wait_delivery_pid($node, 'webhook', 30, $pid);
ok($new_pid, '(5) the delivery worker is back');
load(30000, 36000);
for (my $t0 = time(); time() - $t0 < 20 && (stats()->{max_concurrent} // 0) < 4; usleep(50_000)) { }
is(stats()->{max_concurrent}, 4, '(5) four requests out');
$node->append_conf('postgresql.conf', 'pgsink.max_in_flight = 1');
$node->reload;
usleep(300_000);
mode('{"mode": "ok", "delay": 0.05}');
wait_delivered($node, 'postgres', '(5) after the reload', 120);
is(delivery_pid($node, 'webhook'), $new_pid, '(5) the same worker: lowered in place');
restart_receiver();    # its counts start over
load(40000, 44000);
wait_delivered($node, 'postgres', '(5) one in flight', 120);
is(stats()->{max_concurrent}, 1, '(5) one request at a time');
check_exact($node, tables => \%tables, files => [sorted_store()], label => '(5) one in flight');

receiver_stop($receiver);
$node->stop;
done_testing();

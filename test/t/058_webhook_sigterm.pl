# SIGTERM of the webhook's delivery worker while the requests of the next
# batches are being signed on its prefetch threads (fault_shim's
# PGSINK_SLOW_MAC: 5 ms a 64 kB piece, so a 2 MB batch takes 160 ms; a
# process that exits while one of its threads signs aborts) and the next
# batch is read on its read-ahead thread. A
# SIGTERM leaves through proc_exit() without unwinding: the worker must join
# those threads first (before_shmem_exit), or exit() runs OpenSSL's and
# libc's cleanup under a thread still signing or compressing, and the worker
# dies of a signal, which makes the postmaster restart the whole cluster.
# (1) SIGTERMs while requests are being signed, in repeated catch-ups (the
#     sink rewound to the spool's start each time): every worker exits
#     cleanly, no process ends by a signal, the postmaster never
#     reinitializes (without the join at exit: an abort in most runs of
#     eight);
# (2) the receiver's store (it verifies every signature and drops entries it
#     already has) replays exactly to the table.
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
	'sigterm',
	extra_conf => qq{
pgsink.sink = 'webhook'
pgsink.webhook_url = 'http://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
pgsink.batch_bytes = '2MB'
pgsink.spool_retention = '1d'
pgsink.http_timeout = '10s'
});
my $dir = $node->basedir;
my $store = "$dir/received.jsonl";
my $receiver = receiver_start($dir, $port, $secret);
start_with_fault_shim($node, PGSINK_SLOW_MAC => 5000);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t');
});
$node->safe_psql('postgres',
	"INSERT INTO t SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) "
	  . "FROM generate_series(1, 60000) g");
wait_delivered($node, 'postgres', 'the first delivery', 180);

# Wait up to $seconds for a thread of process $pid making a request; true if seen.
sub signing
{
	my ($pid, $seconds) = @_;
	my $t0 = time();
	while (time() - $t0 < $seconds)
	{
		for my $comm (glob("/proc/$pid/task/*/comm"))
		{
			open(my $fh, '<', $comm) or next;
			my $name = <$fh> // '';
			return 1 if $name =~ /^pgsink-request/;
		}
		usleep(2_000);
	}
	return 0;
}

# ---------------------------------------------------------------------------
# (1) SIGTERM at random points while the sink catches up again.
my $log_offset = -s $node->logfile;
my ($terms, $signing) = (0, 0);
for my $round (1 .. 8)
{
	my $pid = wait_delivery_pid($node, 'webhook', 60);
	last unless defined $pid;
	my $at = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pgsink.rewind_sink('webhook', '-infinity')");
	# Once the rewind is applied: applying it cancels (joins) the prefetches,
	# so a SIGTERM served right after it would find no thread to join at
	# exit, and the round would pass without the join (prefetch_at_exit).
	my $t_rewind = time();
	usleep(2_000)
	  until slurp_file($node->logfile, $at) =~ /\[$pid\] LOG:  pgsink: sink "webhook" rewound/
	  || time() - $t_rewind > 10;
	# Sent while a request thread (named pgsink-request) is signing, most times.
	$signing++ if signing($pid, 3);
	usleep(int(rand(30_000)));
	$terms++ if kill('TERM', $pid);
	my $t0 = time();
	usleep(20_000) while alive($pid) && time() - $t0 < 10;
	ok(!alive($pid), "(1) round $round: the worker ended within 10 s of SIGTERM");
	ok(defined wait_delivery_pid($node, 'webhook', 60, $pid),
		"(1) round $round: the launcher started it again");
}
is($terms, 8, '(1) eight SIGTERMs sent');
cmp_ok($signing, '>=', 4, '(1) most of them while a request was being signed');
wait_delivered($node, 'postgres', '(1) after the SIGTERMs', 180);
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/terminated by signal|was terminated by exception|exit while a thread/,
	'(1) no process ended by a signal, none exited while a thread signed');
unlike($log, qr/terminating any other active server processes|reinitializing/,
	'(1) the postmaster never restarted the cluster');
like($log, qr/delivery worker.*(stopping|terminat)/i, '(1) the worker said it stopped');

# ---------------------------------------------------------------------------
# (2) Exact.
is(receiver_stats($receiver)->{bad_signatures}, 0, '(2) every request signed');
check_exact($node, tables => { 'public.t' => ['id'] }, files => [$store], label => '(2) the store');

receiver_stop($receiver);
$node->stop;
done_testing();

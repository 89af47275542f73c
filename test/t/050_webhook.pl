# The webhook sink, next to the file sink (pgsink.sink = 'file, webhook'),
# against a strict receiver (webhook_receiver.py: it checks every Standard
# Webhooks signature, stores what it accepts durably, drops entries it
# already has, and injects faults on demand):
# (1) both sinks get every change, exactly (the receiver's store replays to
#     the tables), every request signed;
# (2) two sinks, one failing: while the receiver answers 503 with
#     Retry-After, the webhook retries and the file sink keeps delivering,
#     and decoding goes on; then the webhook catches up;
# (3) the receiver is down (no answer), then back;
# (4) with pgsink.on_rejection = 'stop', a rejection (400) holds the webhook
#     sink, and says what was answered;
# (5) a request hangs: SIGTERM still ends the delivery worker within 1 s;
# (6) kill -9 of the postmaster while both deliver: exact again;
# (7) the secret is in no log, no status, and hidden from other roles.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkWebhook;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $secret = 'whsec_' . 'cGdzaW5rLXRlc3Qtc2VjcmV0LWtleS0wMTIzNDU2Nzg5';
my $node = pgsink_node(
	'webhook',
	extra_conf => qq{
pgsink.sink = 'file, webhook'
pgsink.webhook_url = 'http://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
pgsink.http_timeout = '5s'
log_min_messages = debug1
});
my $dir = $node->basedir;
my $file = sink_file($node);
my %tables = ('public.t' => ['id'], 'public.u' => [ 'a', 'b' ]);

my $receiver;
my $store = "$dir/received.jsonl";
sub start_receiver { $receiver = receiver_start($dir, $port, $secret); }
sub stop_receiver { receiver_stop($receiver); }
sub mode { receiver_mode($receiver // { control => "$dir/control.json" }, $_[0]); }
sub stats { return receiver_stats($receiver); }

mode('{"mode": "ok"}');
start_receiver();
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
CREATE TABLE u (a int4, b text, n int4, PRIMARY KEY (a, b));
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('t')");
$node->safe_psql('postgres', "SELECT pgsink.add_table('u')");

my $batch = 0;
sub workload
{
	$batch++;
	my $base = $batch * 1000;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT g, 'row ' || g FROM generate_series($base, $base + 199) g;
INSERT INTO u SELECT g, 'k' || g, g FROM generate_series($base, $base + 49) g;
BEGIN;
UPDATE t SET v = v || ' updated' WHERE id % 3 = 0;
UPDATE u SET b = b || 'x', n = n + 1 WHERE a % 5 = 0;
DELETE FROM t WHERE id % 7 = 0;
COMMIT;
DELETE FROM u WHERE a % 11 = 0;
});
}

sub both_exact
{
	my ($label) = @_;
	wait_delivered($node, 'postgres', $label);
	check_exact($node, tables => \%tables, files => [$store], label => "$label, webhook");
	check_exact($node, tables => \%tables, files => [$file], label => "$label, file");
}

# ---------------------------------------------------------------------------
# (1)
workload();
both_exact('(1) both sinks');
my $s = stats();
cmp_ok($s->{requests}, '>', 0, '(1) the receiver got requests');
is($s->{bad_signatures}, 0, '(1) every request was signed, and fresh');
is(sink_status($node, 'webhook')->{state}, 'idle', '(1) the webhook sink is idle');

# ---------------------------------------------------------------------------
# (2) Two sinks, one failing.
mode('{"mode": "503", "retry_after": "1"}');
my $file_cursor = sink_status($node, 'file')->{cursor};
my $web_cursor = sink_status($node, 'webhook')->{cursor};
workload();
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'(2) the webhook sink retries');
like(sink_status($node, 'webhook')->{error}, qr/answered HTTP 503: try later/,
	'(2) its last_error says what the receiver answered');
ok(defined poll_until($node, 'postgres',
		"SELECT f.cursor_offset = s.durable_offset AND f.state = 'idle' "
		  . "FROM pgsink.sinks f, pgsink.spool s WHERE f.sink = 'file'", 't', 30),
	'(2) meanwhile the file sink delivers everything');
cmp_ok(sink_status($node, 'file')->{cursor}, '>', $file_cursor, '(2) the file sink advanced');
is(sink_status($node, 'webhook')->{cursor}, $web_cursor, '(2) the webhook sink did not');
cmp_ok(sink_status($node, 'webhook')->{lag_entries}, '>', 0, '(2) it lags in entries');
my ($retry_in) = split /\|/, $node->safe_psql('postgres',
	"SELECT extract(epoch FROM next_retry_at - last_error_at) FROM pgsink.sinks WHERE sink = 'webhook'");
ok($retry_in >= 0.95 && $retry_in <= 1.05,
	"(2) Retry-After: 1 is honoured (next try ${retry_in}s after; the back-off alone is random)");
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'), 'streaming',
	'(2) decoding goes on');
mode('{"mode": "ok"}');
both_exact('(2) after the receiver recovered');
is(sink_status($node, 'webhook')->{error}, '', '(2) no error left');

# A 401 (a credential changed) is no rejection of entries: the sink holds
# and retries, nothing is parked.
mode('{"mode": "401"}');
workload();
ok(defined poll_until($node, 'postgres',
		"SELECT state = 'retrying' AND last_error LIKE '%answered HTTP 401%' FROM pgsink.sinks "
		  . "WHERE sink = 'webhook'", 't', 30),
	'(2) a 401 is retried');
sleep 1;
is($node->safe_psql('postgres', 'SELECT count(*) FROM pgsink.dead_letters'), 0,
	'(2) and nothing is parked');
mode('{"mode": "ok"}');
both_exact('(2) after the 401');

# 429 with Retry-After, a connection reset mid-request, and a receiver that
# stores a batch but drops the connection before answering (the batch is
# sent again, and the receiver drops what it already has): exact each time.
for my $m ('{"mode": "429", "retry_after": "1"}', '{"mode": "reset"}', '{"mode": "apply_then_drop"}')
{
	mode($m);
	workload();
	ok(defined poll_until($node, 'postgres',
			"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
		"(2) $m: retried");
	mode('{"mode": "ok"}');
	both_exact("(2) after $m");
}
cmp_ok(stats()->{duplicates}, '>', 0, '(2) the batches applied then dropped were sent again');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pgsink.dead_letters'), 0,
	'(2) none of that parked anything');

# ---------------------------------------------------------------------------
# (3) The receiver is down.
stop_receiver();
workload();
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'(3) receiver down: the webhook sink retries');
like(sink_status($node, 'webhook')->{error}, qr/webhook http:\/\/127\.0\.0\.1:\d+: .*(refused|connect)/i,
	'(3) its last_error says the connection failed, naming the receiver without its path');
start_receiver();
both_exact('(3) receiver back');

# ---------------------------------------------------------------------------
# (4) With pgsink.on_rejection = 'stop', a rejection holds the sink.
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.on_rejection = 'stop'; SELECT pg_reload_conf()");
mode('{"mode": "400"}');
workload();
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%answered HTTP 400: refused: mode 400%' FROM pgsink.sinks "
		  . "WHERE sink = 'webhook'", 't', 30),
	'(4) a 400 is reported with what the receiver answered');
ok(defined poll_until($node, 'postgres',
		"SELECT f.cursor_offset = s.durable_offset FROM pgsink.sinks f, pgsink.spool s "
		  . "WHERE f.sink = 'file'", 't', 30),
	'(4) the file sink delivers meanwhile');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pgsink.dead_letters'), 0,
	'(4) nothing was parked');
mode('{"mode": "ok"}');
both_exact('(4) after the rejection stopped');
$node->safe_psql('postgres', "ALTER SYSTEM RESET pgsink.on_rejection; SELECT pg_reload_conf()");

# ---------------------------------------------------------------------------
# (5) A request hangs; SIGTERM is served.
mode('{"mode": "slow", "seconds": 30}');
workload();
sleep 1;    # the request is in flight
my $pid = delivery_pid($node, 'webhook');
my $t0 = time();
kill 'TERM', $pid;
usleep(5_000) while alive($pid) && time() - $t0 < 10;
my $took = time() - $t0;
cmp_ok($took, '<', 1.0, sprintf('(5) a waiting webhook worker exits within 1 s of SIGTERM (%.3fs)', $took));
mode('{"mode": "ok"}');
both_exact('(5) after SIGTERM');

# ---------------------------------------------------------------------------
# (6) kill -9 of the postmaster while both sinks deliver.
my $bg = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c',
		'INSERT INTO t SELECT g, repeat(\'x\', 100) FROM generate_series(100000, 160000) g' ],
	'>', '/dev/null', '2>&1');
$bg->finish;
usleep(300_000);
crash_node($node);
start_after_crash($node);
both_exact('(6) after kill -9');

# ---------------------------------------------------------------------------
# (7) The secret stays secret.
my $log = slurp_file($node->logfile);
my ($key) = $secret =~ /^whsec_(.*)$/;
unlike($log, qr/\Q$key\E/, '(7) the secret is in no log line (debug1 included)');
unlike($node->safe_psql('postgres', 'SELECT string_agg(coalesce(last_error, \'\'), \'\') FROM pgsink.sinks'),
	qr/\Q$key\E/, '(7) nor in pgsink.sinks');
# (Members of pg_read_all_settings, and so of pg_monitor, read every setting: PostgreSQL's rule.)
$node->safe_psql('postgres', 'CREATE ROLE watcher LOGIN; GRANT pgsink_admin TO watcher;');
my ($out, $err) = ('', '');
$node->psql('postgres', 'SHOW pgsink.webhook_secret', stdout => \$out, stderr => \$err,
	extra_params => [ '-U', 'watcher' ]);
like($err, qr/permission denied|must be superuser/, '(7) other roles cannot read it');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_settings WHERE name IN ('pgsink.webhook_secret', 'pgsink.webhook_url')"),
	0, '(7) nor list it in pg_settings (GUC_NO_SHOW_ALL)');

# A secret changed by ALTER SYSTEM and a reload, with every statement logged:
# PostgreSQL's own "parameter ... changed to" and the statement are cut.
my $other = 'whsec_' . 'b3RoZXItc2VjcmV0LWZvci10aGUtbG9nLXRlc3Q=';
my ($other_key) = $other =~ /^whsec_(.*)$/;
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf();");
$node->safe_psql('postgres', "ALTER SYSTEM SET \"pgsink\".\"webhook_secret\" = '$other'");
$node->safe_psql('postgres', "ALTER SYSTEM SET PGSINK.WEBHOOK_SECRET = '$other'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
$node->safe_psql('postgres', "ALTER SYSTEM RESET pgsink.webhook_secret");
$node->safe_psql('postgres', 'ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()');
sleep 1;
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/pgsink\.webhook_secret.*value not shown: a secret/,
	'(7) the change is logged without its value');
unlike($log, qr/\Q$other_key\E/, '(7) a secret set by ALTER SYSTEM and a reload is in no log line');

# Every other secret setting (GUC_NO_SHOW_ALL; the redaction reads that
# flag) set, reloaded, refused and reset with every statement logged: none
# of their values reaches the log. The webhook's own are in use above.
my %others = (
	clickhouse_url => 'http://ch:Hush-ch-url@127.0.0.1:1/',
	clickhouse_password => 'Hush-ch-password',
	elasticsearch_url => 'http://es:Hush-es-url@127.0.0.1:1',
	elasticsearch_api_key => 'Hush-es-api-key',
	elasticsearch_password => 'Hush-es-password',
	bigquery_credentials => '/nonexistent/Hush-bq-key.json',
	bigquery_endpoint => 'http://bq:Hush-bq-endpoint@127.0.0.1:1');
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf();");
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.$_ = '$others{$_}'") for sort keys %others;
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
sleep 1;
($out, $err) = ('', '');
$node->psql('postgres', "ALTER SYSTEM SET pgsink.bigquery_endpoint = 'ftp://bq:Hush-refused\@x'",
	stdout => \$out, stderr => \$err);
like($err, qr/invalid value/, '(7) a refused URL is refused');
$node->safe_psql('postgres', "ALTER SYSTEM RESET pgsink.$_") for sort keys %others;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()');
sleep 1;
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/pgsink\.bigquery_endpoint.*value not shown: a secret/,
	'(7) the other secret settings are logged without their values');
unlike($log, qr/Hush-/, '(7) no value of any secret setting is in a log line');

stop_receiver();
$node->stop;
done_testing();

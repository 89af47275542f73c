# Metrics and pause/resume (issue 14):
# (1) pgsink.metrics_listen serves pgsink.metrics() over HTTP: promtool (from
#     Debian's prometheus package) accepts it, counters move as changes flow,
#     other paths and methods get 404 and 405;
# (2) under a steady write load, decoding is paused (status says so and since
#     when; the sink's file stops growing), then a sink's delivery is paused
#     across a server restart (the pause survives it), then both resume:
#     nothing is lost, nothing doubled;
# (3) a real Prometheus server scrapes the endpoint and its query API
#     answers with pgsink's counters.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use File::Path qw(make_path);
use HTTP::Tiny;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(usleep time);

my $mport = PostgreSQL::Test::Cluster::get_free_port();
my $node = pgsink_node('metrics_pause', extra_conf => qq{
pgsink.metrics_listen = '127.0.0.1:$mport'
pgsink.flush_interval = '50ms'
});
my $file = sink_file($node);
$node->start;
my %tables = ('public.t' => ['id']);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text, n int);
SELECT pgsink.add_table('t', import => false);
});
my $http = HTTP::Tiny->new(timeout => 10);
my $url = "http://127.0.0.1:$mport/metrics";

sub metric
{
	my ($text, $name) = @_;
	return $text =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

sub scrape
{
	my $r;
	for (1 .. 50)
	{
		$r = $http->get($url);
		last if $r->{status} == 200;
		usleep(200_000);
	}
	return $r;
}

# (1) The endpoint, promtool, counters that move.
my $r = scrape();
is($r->{status}, 200, '(1) GET /metrics answers 200');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink metrics'"),
	'1', '(1) served by the pgsink metrics worker');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
	'(1) in the text exposition format');
my $before = metric($r->{content}, 'pgsink_entries_total');
$node->safe_psql('postgres',
	"INSERT INTO t SELECT g, 'v' || g, 0 FROM generate_series(1, 1000) g");
wait_delivered($node, 'postgres', '(1) first rows');
$r = scrape();
my $body = $r->{content};
my $mfile = $node->basedir . '/metrics.txt';
PostgreSQL::Test::Utils::append_to_file($mfile, $body);
my ($pout, $perr) = ('', '');
my $ok = IPC::Run::run([ 'promtool', 'check', 'metrics' ], '<', $mfile, '>', \$pout, '2>', \$perr);
ok($ok, '(1) promtool check metrics accepts the output') or diag("$pout$perr");
cmp_ok(metric($body, 'pgsink_entries_total') - $before, '>=', 1000,
	'(1) pgsink_entries_total moved by the 1000 inserts');
like($body, qr/^pgsink_table_entries_total\{table="public\.t"\} (\d+)$/m,
	'(1) per-table counter');
like($body, qr/^pgsink_sink_entries_delivered_total\{sink="file"\} [1-9]\d*$/m,
	'(1) per-sink counter');
is($http->get("http://127.0.0.1:$mport/other")->{status}, 404, '(1) other paths: 404');
is($http->post_form($url, {})->{status}, 405, '(1) POST: 405');
is($http->request('HEAD', $url)->{status}, 200, '(1) HEAD: 200');

# (2) Pause and resume under load.
my $workload = $node->basedir . '/workload.sql';
PostgreSQL::Test::Utils::append_to_file($workload, q{
\set id random(1, 200000)
INSERT INTO t VALUES (:id, 'w', 1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1, v = 'u';
DELETE FROM t WHERE id = :id + 7;
});
my ($lout, $lerr) = ('', '');
my $load = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '2', '-T', '14', '-R', '400', '-f', $workload,
		'-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$lout, '2>', \$lerr);
sleep 1;
is($node->safe_psql('postgres', 'SELECT pgsink.pause()'), 't', '(2) pause() pauses decoding');
ok(poll_until($node, 'postgres', "SELECT state FROM pgsink.status", 'paused', 10),
	'(2) status says paused');
is($node->safe_psql('postgres', 'SELECT paused_since <= now() FROM pgsink.status'), 't',
	'(2) and since when');
sleep 1;    # the round in progress when it paused is delivered
my $size = -s $file;
sleep 1;
is(-s $file, $size, '(2) nothing new reaches the sink while decoding is paused');
cmp_ok($node->safe_psql('postgres', 'SELECT lag_bytes FROM pgsink.status'), '>', 0,
	'(2) the slot holds the WAL meanwhile');
# wait_for_delivery() sleeps on a condition variable, at most 100 ms at a
# time: a shorter timeout still ends on time (it overslept to 100 ms).
$node->safe_psql('postgres', q{
CREATE FUNCTION pg_temp.timed_wait() RETURNS text LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
	BEGIN
		PERFORM pgsink.wait_for_delivery('10 ms');
		RETURN 'delivered';
	EXCEPTION WHEN query_canceled THEN
		RETURN round(extract(epoch FROM clock_timestamp() - t0) * 1000);
	END;
END $$;
SELECT pg_temp.timed_wait();
}) =~ /^(\S+)$/ or die;
my $waited = $1;
like($waited, qr/^\d+$/, '(2) wait_for_delivery() times out while decoding is paused');
cmp_ok($waited, '<', 75, '(2) a 10 ms wait_for_delivery() gives up within 75 ms');
is($node->safe_psql('postgres', 'SELECT pgsink.resume()'), 't', '(2) resume()');
ok(poll_until($node, 'postgres', "SELECT state FROM pgsink.status", 'streaming', 10),
	'(2) decoding resumes');

# A sink's delivery paused, across a restart.
is($node->safe_psql('postgres', "SELECT pgsink.pause('file')"), 't', '(2) pause(\'file\')');
ok(poll_until($node, 'postgres', "SELECT state FROM pgsink.sinks", 'paused', 10),
	'(2) the sink says paused');
sleep 1;
$size = -s $file;
sleep 1;
is(-s $file, $size, '(2) nothing new reaches the paused sink');
cmp_ok($node->safe_psql('postgres', 'SELECT lag_bytes FROM pgsink.sinks'), '>', 0,
	'(2) the spool keeps its entries meanwhile');
$r = scrape();
like($r->{content}, qr/^pgsink_sink_paused\{sink="file"\} 1$/m, '(2) metrics say paused');
$load->finish;
is($?, 0, '(2) the load ran') or diag($lerr);
$node->restart;
ok(poll_until($node, 'postgres', "SELECT state FROM pgsink.sinks", 'paused', 20),
	'(2) still paused after a restart');
$size = -s $file;
sleep 1;
is(-s $file, $size, '(2) and still nothing reaches the sink');
is($node->safe_psql('postgres', "SELECT pgsink.resume('file')"), 't', '(2) resume(\'file\')');
wait_delivered($node, 'postgres', '(2) after resuming');
check_exact($node, tables => \%tables, label => '(2) pauses under load');

# (3) A real Prometheus scrapes the endpoint (counters restarted with the server: some rows).
$node->safe_psql('postgres',
	"INSERT INTO t SELECT g, 'p', 0 FROM generate_series(300001, 300100) g");
wait_delivered($node, 'postgres', '(3) rows for Prometheus');
SKIP:
{
	skip 'prometheus is not installed', 2 unless -x '/usr/bin/prometheus';
	my $pdir = $node->basedir . '/prometheus';
	make_path("$pdir/data");
	my $pport = PostgreSQL::Test::Cluster::get_free_port();
	PostgreSQL::Test::Utils::append_to_file("$pdir/prometheus.yml", qq{
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: pgsink
    static_configs:
      - targets: ['127.0.0.1:$mport']
});
	my ($prout, $prerr) = ('', '');
	my $prom = IPC::Run::start(
		[ '/usr/bin/prometheus', "--config.file=$pdir/prometheus.yml",
			"--storage.tsdb.path=$pdir/data", "--web.listen-address=127.0.0.1:$pport" ],
		'>', \$prout, '2>', \$prerr);
	my ($up, $value) = (0, 0);
	my $t0 = time();
	while (time() - $t0 < 40)
	{
		my $q = $http->get("http://127.0.0.1:$pport/api/v1/query?query=pgsink_entries_total");
		if ($q->{status} == 200 && $q->{content} =~ /"value":\[[0-9.]+,"(\d+)"\]/)
		{
			$value = $1;
			my $u = $http->get("http://127.0.0.1:$pport/api/v1/query?query=up");
			$up = 1 if $u->{content} =~ /"job":"pgsink".*"value":\[[0-9.]+,"1"\]/;
			last if $up && $value > 0;
		}
		usleep(500_000);
	}
	$prom->kill_kill;
	ok($up, '(3) Prometheus scraped the endpoint (up == 1)') or diag($prerr);
	cmp_ok($value, '>', 0, '(3) and has pgsink_entries_total');
}

# A malformed address is refused, with what to write instead (PostgreSQL
# then starts with the default for an extension's parameter: no endpoint).
$node->stop;
$node->append_conf('postgresql.conf', "pgsink.metrics_listen = '::1:9187'");
my $log_offset = -s $node->logfile;
$node->start;
like(slurp_file($node->logfile, $log_offset),
	qr/invalid value for parameter "pgsink.metrics_listen".*\n.*must be host:port, for example 127\.0\.0\.1:9187 or \[::1\]:9187/,
	'(4) a malformed pgsink.metrics_listen is refused, saying what to write');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink metrics'"),
	'0', '(4) and no endpoint is served');
$node->stop;
done_testing();

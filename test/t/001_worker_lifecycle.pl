# Lifecycle of pgsink's background workers: the launcher waits for the
# database, the stream worker waits for the extension, SIGHUP reloads without
# a restart (or moves the worker when pgsink.database changes), SIGTERM ends
# the worker promptly and the launcher restarts it, a crash of the worker is
# recovered from, a misconfiguration is reported without any restart, and
# pgsink refuses to load outside shared_preload_libraries.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('lifecycle');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgsink'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
output_plugin_libraries = 'pgoutput, test_decoding, pgsink'
pgsink.database = 'app'
# PostgreSQL::Test::Cluster turns this off; the kill -9 test needs the
# postmaster's ordinary crash recovery.
restart_after_crash = on
});
$node->start;

# Run $query in $db until it prints $expected; give up after $seconds.
# Returns the seconds it took, or undef on timeout. Connection errors (the
# server restarting) count as "not yet".
sub poll_within
{
	my ($db, $query, $expected, $seconds) = @_;
	my $start = time();
	while (1)
	{
		my ($out, $err) = ('', '');
		$node->psql($db, $query, stdout => \$out, stderr => \$err);
		return time() - $start if $out eq $expected && $err eq '';
		if (time() - $start > $seconds)
		{
			diag("timed out after ${seconds}s waiting for [$query] to return "
				  . "[$expected]; last output [$out], stderr [$err]");
			return undef;
		}
		usleep(100_000);
	}
}

# How often $regexp matches the server log from byte $offset on.
sub log_count
{
	my ($regexp, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset // 0);
	my @matches = ($log =~ /$regexp/g);
	return scalar @matches;
}

sub log_offset { return -s $node->logfile; }

# The stream worker's pid per pg_stat_activity ('' when none), optionally in $db.
sub stream_pid
{
	my ($db) = @_;
	my $where = defined $db ? "AND datname = '$db'" : '';
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgsink stream' $where");
}

# Is a process alive? (The workers run as the same OS user as this test.)
sub alive { my ($pid) = @_; return kill(0, $pid) ? 1 : 0; }

my $missing_db_re = qr/pgsink: database "app" does not exist; waiting for it/;
my $missing_ext_re =
  qr/pgsink: extension "pgsink" does not exist in database "app"; waiting for it/;
my $crash_re = qr/terminating any other active server processes/;

# ---------------------------------------------------------------------------
# (a) The launcher starts with the server and waits for pgsink.database,
# saying so once, not on every poll.
ok( defined poll_within(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink launcher'",
		'1', 10),
	'launcher is running');
$node->wait_for_log($missing_db_re);
sleep 5;    # the launcher looks for the database every 2 s
is(log_count($missing_db_re), 1, 'missing database is logged once');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream'"),
	'0', 'no stream worker without the database');

# ---------------------------------------------------------------------------
# (b) Once the database exists, the stream worker runs in it and waits for
# the extension, saying so once.
$node->safe_psql('postgres', 'CREATE DATABASE app');
ok(defined poll_within('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream' "
		  . "AND datname = 'app'", '1', 10),
	'stream worker starts in the new database');
$node->wait_for_log($missing_ext_re);
sleep 3;    # the worker looks for the extension every second
is(log_count($missing_ext_re), 1, 'missing extension is logged once');

# ---------------------------------------------------------------------------
# (c) CREATE EXTENSION: the worker notices within a few seconds.
$node->safe_psql('app', 'CREATE EXTENSION pgsink');
ok( defined poll_within(
		'app', "SELECT state <> 'waiting for extension' FROM pgsink.status", 't', 5),
	'worker leaves "waiting for extension" after CREATE EXTENSION');
note('state now: ' . $node->safe_psql('app', 'SELECT state FROM pgsink.status'));
is( $node->safe_psql(
		'app',
		"SELECT launcher_pid IS NOT NULL AND worker_pid IS NOT NULL, database, "
		  . "config_problem IS NULL FROM pgsink.status"),
	't|app|t',
	'pgsink.status shows launcher and worker');
is( $node->safe_psql(
		'app',
		"SELECT s.worker_pid = a.pid FROM pgsink.status s, pg_stat_activity a "
		  . "WHERE a.backend_type = 'pgsink stream'"),
	't',
	'status worker_pid is the stream worker');

# ---------------------------------------------------------------------------
# (d) SIGHUP. A plain setting is reloaded without restarting the worker...
my $pid = stream_pid('app');
my $offset = log_offset();
$node->safe_psql('postgres',
	'ALTER SYSTEM SET pgsink.batch_rows = 77; SELECT pg_reload_conf();');
$node->wait_for_log(qr/parameter "pgsink.batch_rows" changed to "77"/, $offset);
sleep 1;    # give the worker time to act on the SIGHUP (it must not exit)
is(stream_pid('app'), $pid, 'worker keeps its pid across a reload');
is($node->safe_psql('app', 'SHOW pgsink.batch_rows'), '77', 'new value visible');

# ...while a new pgsink.database moves the worker to that database.
$node->safe_psql('postgres', 'CREATE DATABASE app2');
$node->safe_psql('postgres',
	"ALTER SYSTEM SET pgsink.database = 'app2'; SELECT pg_reload_conf();");
ok( defined poll_within(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream' "
		  . "AND datname = 'app2' AND pid <> $pid",
		'1', 10),
	'worker restarts in the new pgsink.database');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream'"),
	'1',
	'exactly one stream worker');
$node->safe_psql('postgres',
	'ALTER SYSTEM RESET pgsink.database; SELECT pg_reload_conf();');
ok( defined poll_within(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream' "
		  . "AND datname = 'app'",
		'1', 10),
	'worker back in app after pgsink.database is reset');
ok(defined poll_within('app', "SELECT state <> 'waiting for extension' FROM pgsink.status",
		't', 5),
	'worker in app sees the extension again');

# ---------------------------------------------------------------------------
# (e) SIGTERM: the worker exits within a second; the launcher starts a new
# one; the rest of the cluster does not notice.
$pid = stream_pid('app');
my $start_time = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $session = $node->background_psql('postgres');
is($session->query_safe('SELECT 1'), '1', 'session opened before SIGTERM');
$offset = log_offset();

my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
usleep(20_000) while alive($pid) && time() - $t0 < 5;
my $exit_time = time() - $t0;
ok(!alive($pid), 'worker exits on SIGTERM');
cmp_ok($exit_time, '<', 1, sprintf('... within a second (%.2fs)', $exit_time));

ok( defined poll_within(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream' "
		  . "AND datname = 'app' AND pid <> $pid",
		'1', 5),
	'launcher restarts the worker within 5 s');
is($session->query_safe('SELECT 2'), '2', 'session opened before still works');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$start_time, 'postmaster did not restart');
ok(!$node->log_contains($crash_re, $offset), 'no crash-and-restart in the log');
cmp_ok($node->safe_psql('app', 'SELECT worker_restarts FROM pgsink.status'),
	'>=', 1, 'status counts the restart');
$session->quit;

# ---------------------------------------------------------------------------
# (f) kill -9: a process attached to shared memory died without cleaning up,
# so the postmaster treats it as a crash and reinitializes the cluster (any
# such process would). What must hold: the cluster recovers by itself, pgsink
# runs again, committed data is intact.
$node->safe_psql('app', q{
	CREATE TABLE public.kept (id int PRIMARY KEY, v text);
	INSERT INTO public.kept SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
	SELECT pgsink.add_table('public.kept');
});
$pid = stream_pid('app');
$offset = log_offset();
kill 'KILL', $pid;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
pass('postmaster reinitializes after the worker is killed');
ok( defined poll_within(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream' "
		  . "AND datname = 'app'",
		'1', 15),
	'pgsink stream worker runs again within 15 s');
is($node->safe_psql('app', 'SELECT count(*), sum(id) FROM public.kept'),
	'1000|500500', 'committed data intact');
is($node->safe_psql('app', 'SELECT "table" FROM pgsink.tables'),
	'kept', 'captured tables intact');
ok(defined poll_within('app',
		"SELECT launcher_pid IS NOT NULL AND worker_pid IS NOT NULL FROM pgsink.status",
		't', 10),
	'status shows launcher and worker after recovery');

# ---------------------------------------------------------------------------
# (g) A misconfiguration found by the worker (output_plugin_libraries
# without pgsink) is reported in status and, once, in the log; nothing
# restarts.
$start_time = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
$offset = log_offset();
$node->safe_psql('postgres',
	"ALTER SYSTEM SET output_plugin_libraries = 'pgoutput'; SELECT pg_reload_conf();");
ok(defined poll_within('app', "SELECT state FROM pgsink.status", 'misconfigured', 10),
	'state becomes misconfigured');
like($node->safe_psql('app', 'SELECT config_problem FROM pgsink.status'),
	qr/output_plugin_libraries/, 'config_problem names output_plugin_libraries');
like($node->safe_psql('app', 'SELECT last_error FROM pgsink.status'),
	qr/output_plugin_libraries/, 'last_error names output_plugin_libraries');
sleep 3;    # the worker re-checks every second: it must not repeat itself
is(log_count(qr/pgsink: output_plugin_libraries does not include pgsink/, $offset),
	1, 'misconfiguration is logged once');
ok(!$node->log_contains($crash_re, $offset), 'no crash-and-restart in the log');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$start_time, 'postmaster did not restart');

$node->safe_psql('postgres',
	'ALTER SYSTEM RESET output_plugin_libraries; SELECT pg_reload_conf();');
ok( defined poll_within(
		'app',
		"SELECT state <> 'misconfigured' AND config_problem IS NULL FROM pgsink.status",
		't', 10),
	'worker recovers once output_plugin_libraries is fixed');

$node->stop;

# ---------------------------------------------------------------------------
# (h) Without shared_preload_libraries, pgsink refuses to load and says why.
my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init;
$plain->start;
my ($stdout, $stderr);
$plain->psql('postgres', "LOAD 'pgsink'", stdout => \$stdout, stderr => \$stderr);
like($stderr, qr/pgsink must be loaded via shared_preload_libraries/,
	'LOAD refused without shared_preload_libraries');
like($stderr, qr/HINT:.*shared_preload_libraries = 'pgsink'/,
	'... with a hint saying what to set');
$plain->psql('postgres', 'CREATE EXTENSION pgsink', stdout => \$stdout, stderr => \$stderr);
like($stderr, qr/pgsink must be loaded via shared_preload_libraries/,
	'CREATE EXTENSION refused too');
is($plain->safe_psql('postgres', 'SELECT 1'), '1', 'server unaffected');
$plain->stop;

done_testing();

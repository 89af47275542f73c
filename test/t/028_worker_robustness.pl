# The workers under an operator's hand, each once silent or looping:
# (1) the launcher alone is restarted: it waits for the running stream
#     worker instead of starting duplicates;
# (2) a stop is routine: no FATAL in the log at a restart of the server;
# (3) pgsink.database names a database where the slot of that name does not
#     belong: the worker waits, misconfigured, and config_problem says what
#     to do (no restart loop);
# (4) a pgsink slot left behind (pgsink.slot_name changed) is reported, with
#     what to do, in the log and in config_problem;
# (5) the slot is lost while tables are captured (its directory gone, as
#     after a failover or restore): a WARNING with the lost range, and
#     config_problem asks for reimport() until each captured table has one.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use File::Path qw(rmtree);
use Time::HiRes qw(usleep);

my $node = pgsink_node('robustness');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
INSERT INTO t VALUES (1, 'one');
});
wait_delivered($node, 'postgres', 'start');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub stream_workers
{
	return sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream'");
}

# (1) The launcher alone stops (SIGTERM); the postmaster starts a new one.
my $launcher = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgsink launcher'");
my $worker = sql('SELECT worker_pid FROM pgsink.status');
my $offset = -s $node->logfile;
kill 'TERM', $launcher;
ok(defined poll_until($node, 'postgres',
		"SELECT pid <> $launcher FROM pg_stat_activity WHERE backend_type = 'pgsink launcher'",
		't', 30),
	'(1) a new launcher runs');
sleep 3;    # several of the launcher's rounds
is(stream_workers(), '1', '(1) one stream worker');
is(sql('SELECT worker_pid FROM pgsink.status'), $worker,
	'(1) the same worker, and pgsink.status names it');
my $log = slurp_file($node->logfile, $offset);
unlike($log, qr/is active for PID/, '(1) no duplicate worker tried to take the slot');
like($log, qr/launcher restarted; stream worker $worker is still running/,
	'(1) the new launcher says it found the worker');
sql("INSERT INTO t VALUES (2, 'two')");
wait_delivered($node, 'postgres', '(1) still streaming');

# (2) A restart of the server: the workers stop without FATAL.
$offset = -s $node->logfile;
$node->restart;
$log = slurp_file($node->logfile, $offset);
unlike($log, qr/FATAL/, '(2) no FATAL at a restart');
like($log, qr/LOG:  pgsink: stream worker stopping: terminated/,
	'(2) the stop is logged as routine');

# (3) pgsink.database changes to a database the slot does not belong to.
sql('CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION pgsink');
$offset = -s $node->logfile;
sql("ALTER SYSTEM SET pgsink.database = 'other'");
sql('SELECT pg_reload_conf()');
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'misconfigured', 30),
	'(3) the worker waits, misconfigured');
like(sql('SELECT config_problem FROM pgsink.status'),
	qr/replication slot "pgsink" belongs to database "postgres", not to pgsink.database "other": set pgsink.slot_name/,
	'(3) config_problem says what to do');
my $restarts = sql('SELECT worker_restarts FROM pgsink.status');
sleep 3;
is(sql('SELECT worker_restarts FROM pgsink.status'), $restarts, '(3) no restart loop');
unlike(slurp_file($node->logfile, $offset), qr/FATAL/, '(3) no FATAL when the database changes');
sql('ALTER SYSTEM RESET pgsink.database');
sql('SELECT pg_reload_conf()');
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 30),
	'(3) back to streaming');
is(sql('SELECT config_problem IS NULL FROM pgsink.status'), 't', '(3) the problem is gone');

# (4) A slot of pgsink that nothing uses.
sql("SELECT pg_create_logical_replication_slot('pgsink_old', 'pgsink')");
like(sql('SELECT config_problem FROM pgsink.status'),
	qr/replication slots of plugin pgsink that the stream worker does not use hold WAL \(pgsink_old\): if nothing else reads them .*drop each/,
	'(4) config_problem names the abandoned slot');
$offset = -s $node->logfile;
sql("SELECT pg_terminate_backend(worker_pid) FROM pgsink.status");
ok(defined poll_until($node, 'postgres',
		"SELECT state = 'streaming' AND worker_pid <> $worker FROM pgsink.status", 't', 30),
	'(4) the worker restarted');
like(slurp_file($node->logfile, $offset),
	qr/WARNING:  pgsink: replication slots of plugin pgsink that the stream worker does not use hold WAL: pgsink_old/,
	'(4) the worker warns of it in the log');
sql("SELECT pg_drop_replication_slot('pgsink_old')");
is(sql('SELECT config_problem IS NULL FROM pgsink.status'), 't', '(4) gone once dropped');

# (5) The slot disappears while tables are captured (pgsink.auto_resync off).
sql("ALTER SYSTEM SET pgsink.auto_resync = off");
sql("INSERT INTO t VALUES (3, 'three')");
wait_delivered($node, 'postgres', '(5) before');
$node->stop;
rmtree($node->data_dir . '/pg_replslot/pgsink');
$offset = -s $node->logfile;
$node->start;
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 30),
	'(5) streaming from a new slot');
like(slurp_file($node->logfile, $offset),
	qr/WARNING:  pgsink: replication slot "pgsink" was missing while 1 tables were captured, and was created again: changes committed before [0-9A-F]+\/[0-9A-F]+ .*were lost; call pgsink.resync\(\) \(or pgsink.reimport\(\) for each captured table\)/,
	'(5) a WARNING says what was lost and what to do');
like(sql('SELECT config_problem FROM pgsink.status'), qr/call pgsink.resync\(\)/,
	'(5) config_problem says so');
sql("BEGIN; SELECT pgsink.reimport('t'); ROLLBACK;");
sleep 2;
like(sql('SELECT config_problem FROM pgsink.status'), qr/call pgsink.resync\(\)/,
	'(5) a re-import rolled back does not count');
sql("SELECT pgsink.reimport('t')");
ok(defined poll_until($node, 'postgres', 'SELECT config_problem IS NULL FROM pgsink.status',
		't', 30),
	'(5) the problem is cleared once every captured table is re-imported');

# (6) Again, with pgsink.auto_resync on (the default): pgsink resyncs by itself.
sql("ALTER SYSTEM RESET pgsink.auto_resync");
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE state NOT IN ('complete', 'expired')", '0', 30),
	'(6) imports done');
sql("INSERT INTO t VALUES (4, 'four')");
wait_delivered($node, 'postgres', '(6) before');
$node->stop;
rmtree($node->data_dir . '/pg_replslot/pgsink');
$offset = -s $node->logfile;
$node->start;
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 30),
	'(6) streaming from a new slot');
like(slurp_file($node->logfile, $offset),
	qr/WARNING:  pgsink: replication slot "pgsink" was missing while 1 tables were captured, and was created again: changes committed before [0-9A-F]+\/[0-9A-F]+ .*were lost; pgsink is resyncing every captured table/,
	'(6) a WARNING says what was lost and that pgsink resyncs');
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE resync AND state = 'complete'", '1', 30),
	'(6) the table was resynced');
ok(defined poll_until($node, 'postgres', 'SELECT config_problem IS NULL FROM pgsink.status',
		't', 30),
	'(6) and the problem is over');
like(slurp_file(sink_file($node)), qr/"op":"resync_end".*"resync_since"/, '(6) the resync is in the changelog');

# (7) A crash after the new slot was made but before the resync jobs were
# committed: the loss was made durable first (pgsink_spool/resync_needed), so
# the next start resyncs although the slot looks healthy, and forgets it after.
$node->stop;
my $marker = $node->data_dir . '/pgsink_spool/resync_needed';
PostgreSQL::Test::Utils::append_to_file($marker, "1A2B3C was missing\n");
$offset = -s $node->logfile;
$node->start;
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE resync AND state = 'complete'", '2', 30),
	'(7) the table was resynced again');
like(slurp_file($node->logfile, $offset),
	qr/replication slot "pgsink" was missing .*changes committed between 0\/1A2B3C and [0-9A-F]+\/[0-9A-F]+ were lost; pgsink is resyncing/,
	'(7) with the loss the marker kept');
ok(!-e $marker, '(7) the marker is gone once the jobs are committed');

$node->stop;
done_testing();

# What pgsink says when its replication slot cannot be used:
# (1) max_replication_slots exhausted: add_table() fails with PostgreSQL's
#     message and hint, and the worker reports it in pgsink.status;
# (2) a slot of that name made by another output plugin: refused, with a hint;
# (3) the slot invalidated by max_slot_wal_keep_size while the worker was
#     paused, with pgsink.auto_resync off: pgsink.status says so
#     (config_problem and last_error) and what to do; nothing crashes. (With
#     auto_resync on, the default, pgsink heals by itself: test 091.)
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;

my $node = pgsink_node('slots', extra_conf => "max_replication_slots = 1\n");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int PRIMARY KEY, v text);
});

# (1) The only slot is taken by someone else.
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('other', 'test_decoding')");
my ($rc, $out, $err) = $node->psql('postgres', "SELECT pgsink.add_table('t')");
isnt($rc, 0, 'add_table fails when no replication slot is free');
like($err, qr/all replication slots are in use/, 'the error says slots are exhausted');
like($err, qr/max_replication_slots/, 'the hint names max_replication_slots');
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%replication slots are in use%' FROM pgsink.status", 't', 20),
	'the worker reports it in pgsink.status');
is($node->safe_psql('postgres', "SELECT count(*) FROM pgsink.captured_tables"),
	'0', 'nothing was added');

# (2) A slot named pgsink that another plugin made.
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('other')");
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('pgsink', 'test_decoding')");
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%uses output plugin \"test_decoding\", not pgsink%' "
		  . "FROM pgsink.status", 't', 20),
	'a slot of another plugin is refused, in pgsink.status');
ok($node->log_contains('Set pgsink.slot_name to a name no other tool uses'),
	'the log has the hint');
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('pgsink')");

# (3) Invalidation: a small max_slot_wal_keep_size while the worker is paused.
$node->append_conf('postgresql.conf', "max_slot_wal_keep_size = '1MB'\nmax_wal_size = '32MB'\nmin_wal_size = '32MB'\npgsink.auto_resync = off\n");
$node->reload;
$node->safe_psql('postgres', "SELECT pgsink.add_table('t')");
$node->safe_psql('postgres', "INSERT INTO t VALUES (1, 'before')");
wait_delivered($node, 'postgres', 'before the pause');

$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.database = 'paused'");
$node->reload;
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgsink stream'", '0', 20),
	'worker paused');
for my $i (1 .. 6)
{
	$node->safe_psql('postgres',
		"INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series($i * 100000, $i * 100000 + 20000) g");
	$node->safe_psql('postgres', 'SELECT pg_switch_wal(); CHECKPOINT;');
}
is($node->safe_psql('postgres',
		"SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgsink'"),
	'lost', 'the slot was invalidated');

$node->safe_psql('postgres', "ALTER SYSTEM RESET pgsink.database");
$node->reload;
ok(defined poll_until($node, 'postgres',
		"SELECT config_problem LIKE '%invalidated%' FROM pgsink.status", 't', 20),
	'pgsink.status says the slot was invalidated');
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%was invalidated%' FROM pgsink.status", 't', 20),
	'the worker reports the invalidation as its error');
ok($node->log_contains('pg_drop_replication_slot'), 'the log says what to do');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is fine');

# Following the hint recovers.
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('pgsink')");
$node->safe_psql('postgres', "SELECT pgsink.remove_table('t')");
$node->safe_psql('postgres', "SELECT pgsink.add_table('t', false)");
$node->safe_psql('postgres', "INSERT INTO t VALUES (2, 'after')");
wait_delivered($node, 'postgres', 'after recreating the slot');
like(slurp_file(sink_file($node)), qr/"after"/, 'changes flow again');

$node->stop;
done_testing();

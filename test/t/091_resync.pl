# Resync and self-healing (issue 14):
# (1) pgsink.resync() under concurrent writes: the changelog opens and closes
#     the resync (resync_start, then resync_end with resync_since), and a
#     replay that applies the resync rule equals the table exactly;
# (2) the slot is invalidated under load (decoding paused, a small
#     max_slot_wal_keep_size): pgsink drops and creates it again by itself,
#     says once what was lost (the LSN range) and that it heals, resyncs
#     every captured table, and the file sink's replay with the resync rule
#     equals the source exactly, rows deleted during the gap included.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(usleep);

my $node = pgsink_node('resync', extra_conf => q{
max_slot_wal_keep_size = '1MB'
max_wal_size = '32MB'
min_wal_size = '32MB'
pgsink.import_chunk_rows = 2000
});
my $file = sink_file($node);
$node->start;
my %tables = ('public.t' => ['id'], 'public.c' => [ 'a', 'b' ]);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text, n int);
CREATE TABLE c (a int, b text, v text, PRIMARY KEY (a, b));
SELECT pgsink.add_table('t', import => false);
SELECT pgsink.add_table('c', import => false);
INSERT INTO t SELECT g, 'v' || g, 0 FROM generate_series(1, 20000) g;
INSERT INTO c SELECT g % 100, 'k' || g, 'c' || g FROM generate_series(1, 3000) g;
});
wait_delivered($node, 'postgres', 'initial rows');

my $workload = $node->basedir . '/workload.sql';
PostgreSQL::Test::Utils::append_to_file($workload, q{
\set id random(1, 40000)
INSERT INTO t VALUES (:id, 'w', 1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1, v = 'u';
DELETE FROM t WHERE id = :id + 3;
UPDATE c SET v = 'x' || :id WHERE a = :id % 100 AND b = 'k' || (:id % 3000);
});
sub start_load
{
	my ($seconds) = @_;
	my ($out, $err) = ('', '');
	return IPC::Run::start(
		[ 'pgbench', '-n', '-c', '2', '-T', $seconds, '-R', '500', '-f', $workload,
			'-h', $node->host, '-p', $node->port, 'postgres' ],
		'>', \$out, '2>', \$err);
}

sub resyncs_done
{
	return poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE resync AND state <> 'complete' "
		  . "AND state <> 'expired'", '0', 90);
}

# (1) A resync asked for, under writes.
my $load = start_load(6);
sleep 1;
my $jobs = $node->safe_psql('postgres', 'SELECT count(*) FROM pgsink.resync()');
is($jobs, '2', '(1) pgsink.resync() resyncs every captured table');
ok(defined resyncs_done(), '(1) both resyncs complete');
$load->finish;
wait_delivered($node, 'postgres', '(1) after the resync');
my $res = check_exact($node, tables => \%tables, label => '(1) resync under writes');
is($res->{resyncs}, 2, '(1) two resyncs opened and closed in the changelog');
is($res->{resync_removed} // 0, 0, '(1) the rule removes nothing the table still holds');
my @ends = grep { /"op":"resync_end"/ } split /\n/, slurp_file($file);
like($ends[0] // '', qr/"resync_since":"[0-9A-F]+\/[0-9A-F]+"/, '(1) resync_end says where it opened');

# (2) The slot is invalidated while decoding is paused and writes go on.
$node->safe_psql('postgres', 'SELECT pgsink.pause()');
ok(poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'paused', 20),
	'(2) decoding paused');
my $log_offset = -s $node->logfile;
$load = start_load(8);
# Rows the sink holds that are deleted while the changes are lost.
$node->safe_psql('postgres', 'DELETE FROM t WHERE id BETWEEN 5000 AND 5999');
$node->safe_psql('postgres', "DELETE FROM c WHERE a = 7");
for my $i (1 .. 8)
{
	$node->safe_psql('postgres',
		"INSERT INTO t SELECT g, repeat('f', 200), 2 FROM generate_series($i * 100000, $i * 100000 + 15000) g");
	$node->safe_psql('postgres', 'SELECT pg_switch_wal(); CHECKPOINT;');
	last if $node->safe_psql('postgres',
		"SELECT coalesce(wal_status, 'gone') FROM pg_replication_slots WHERE slot_name = 'pgsink'")
	  =~ /lost|gone/;
}
ok(poll_until($node, 'postgres',
		"SELECT config_problem LIKE '%was invalidated%resyncing every captured table%' FROM pgsink.status",
		't', 30),
	'(2) pgsink.status says the slot was invalidated and that it resyncs');
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/WARNING:  pgsink: replication slot "pgsink" was invalidated .* changes committed between [0-9A-F]+\/[0-9A-F]+ and [0-9A-F]+\/[0-9A-F]+ were lost; pgsink is resyncing/,
	'(2) the log says once what was lost and that pgsink heals');
is(scalar(() = $log =~ /were lost/g), 1, '(2) once');
is($node->safe_psql('postgres',
		"SELECT wal_status IN ('reserved', 'extended') FROM pg_replication_slots WHERE slot_name = 'pgsink'"),
	't', '(2) a new slot');
$load->finish;
$node->safe_psql('postgres', 'SELECT pgsink.resume()');
ok(defined resyncs_done(), '(2) the resyncs complete');
$node->safe_psql('postgres', "INSERT INTO t VALUES (999999, 'after', 3)");
wait_delivered($node, 'postgres', '(2) after healing');
$res = check_exact($node, tables => \%tables, label => '(2) healed after a lost slot', gap => 1);
cmp_ok($res->{resync_removed} // 0, '>=', 1000,
	'(2) the rule removed the rows deleted while changes were lost');
ok(poll_until($node, 'postgres', 'SELECT config_problem IS NULL FROM pgsink.status', 't', 20),
	'(2) the problem is over once the resyncs completed');

$node->stop;
done_testing();

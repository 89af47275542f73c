# The resync rule against commits in flight: a transaction whose commit
# record is in WAL before the resync's low watermark, but which was still
# waiting for its WAL flush when the chunk's snapshot was taken (fsync on,
# commit_delay), is in the stream, not in the chunk: the rule must still
# count its rows as written since the resync opened (resync_since moves to
# its commit), or it removes rows the table holds. Three resyncs under four
# inserting clients; then the replay with the rule equals the table.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;

my $node = pgsink_node('resync_race', extra_conf => q{
fsync = on
commit_delay = 20000
commit_siblings = 0
});
$node->start;
my %tables = ('public.t' => ['id']);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE SEQUENCE s START 1000;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
INSERT INTO t SELECT g, 'v' FROM generate_series(1, 500) g;
});
wait_delivered($node, 'postgres', 'initial rows');
my $workload = $node->basedir . '/workload.sql';
PostgreSQL::Test::Utils::append_to_file($workload, "INSERT INTO t VALUES (nextval('s'), 'w');\n");
my ($out, $err) = ('', '');
my $load = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-T', '12', '-f', $workload,
		'-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);
sleep 1;
for my $i (1 .. 3)
{
	$node->safe_psql('postgres', "SELECT pgsink.resync('t')");
	poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE resync AND state NOT IN ('complete','expired')", '0', 60);
}
$load->finish;
wait_delivered($node, 'postgres', 'after');
my $res = check_exact($node, tables => \%tables, label => 'resync vs in-flight commits');
is($res->{resync_removed} // 0, 0, 'the rule removes nothing the table still holds');
$node->stop;
done_testing();

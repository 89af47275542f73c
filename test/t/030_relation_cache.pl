# The output plugin's relation cache stays bounded: changes of thousands of
# tables that are not captured (created, written and dropped, as an ETL job
# or a test suite does) leave no per-relation memory behind in the stream
# worker. Once, every relation ever decoded kept a memory context forever.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;

my $node = pgsink_node('relcache');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int PRIMARY KEY);
SELECT pgsink.add_table('t', import => false);
});

# 1500 tables that are not captured, each written and then dropped, while
# the captured table changes too: each is decoded.
for my $round (1 .. 3)
{
	$node->safe_psql('postgres', qq{
DO \$\$
BEGIN
    FOR i IN 1..500 LOOP
        EXECUTE format('CREATE TABLE scratch_%s_%s (id int PRIMARY KEY)', $round, i);
        EXECUTE format('INSERT INTO scratch_%s_%s VALUES (1)', $round, i);
    END LOOP;
END
\$\$;
INSERT INTO t VALUES ($round);
DO \$\$
BEGIN
    FOR i IN 1..500 LOOP
        EXECUTE format('DROP TABLE scratch_%s_%s', $round, i);
    END LOOP;
END
\$\$;
});
	wait_delivered($node, 'postgres', "round $round");
}
$node->safe_psql('postgres', 'INSERT INTO t VALUES (100)');
wait_delivered($node, 'postgres', 'after the scratch tables');

# The worker's memory contexts, as PostgreSQL itself reports them.
my $pid = $node->safe_psql('postgres', 'SELECT worker_pid FROM pgsink.status');
my $offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
my $dump = '';
for (1 .. 50)
{
	$dump = slurp_file($node->logfile, $offset);
	last if $dump =~ /Grand total/;
	sleep 0.1;
}
like($dump, qr/Grand total/, 'the worker logged its memory contexts');
my $contexts = () = $dump =~ /pgsink relation/g;
cmp_ok($contexts, '<=', 1, "at most one relation context (the captured table): $contexts");
my ($total) = $dump =~ /Grand total: (\d+) bytes/;
cmp_ok($total, '<', 32 * 1024 * 1024, "the worker's memory stays small ($total bytes)");
check_exact($node, tables => { 'public.t' => ['id'] }, label => 'captured changes');

$node->stop;
done_testing();

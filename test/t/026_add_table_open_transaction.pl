# A transaction open across pgsink.add_table(): it changed the table before
# the call and commits after it. Its changes before the call are decoded as
# not captured, so the import must see its rows: the import's first chunk
# waits for it (and pgsink.imports says so), then the sink holds exactly the
# table. Once, its rows were lost: the import's snapshot could not see them.
# With import => false, add_table() says that such changes are not captured.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkImport;
use Test::More;

my $node = pgsink_node('open_txn');
$node->start;
my %tables = ('public.t' => ['id']);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'before' FROM generate_series(1, 10) g;
});

# The slot exists before the long transaction starts (creating it would wait for it).
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 30),
	'the worker streams');

# The long transaction: changes t before add_table().
my $long = $node->background_psql('postgres');
$long->query_safe(q{BEGIN; INSERT INTO t VALUES (100, 'open'); UPDATE t SET v = 'changed' WHERE id = 1; DELETE FROM t WHERE id = 2;});

$node->safe_psql('postgres', "SELECT pgsink.add_table('t')");
# Other sessions go on.
$node->safe_psql('postgres', "INSERT INTO t VALUES (200, 'after'); UPDATE t SET v = 'after' WHERE id = 3;");

ok(defined poll_until($node, 'postgres',
		"SELECT error LIKE 'waiting for transaction % to end%' FROM pgsink.imports",
		't', 30),
	'the import waits for the transaction, and says so');
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.imports'), 'scheduled',
	'the job is still scheduled');

# The long transaction changes t again after add_table(), then commits.
$long->query_safe(q{INSERT INTO t VALUES (101, 'open, after the call'); COMMIT;});
$long->quit;

ok(defined poll_until($node, 'postgres', 'SELECT state, error FROM pgsink.imports',
		'complete|', 30),
	'the import completes once the transaction has ended, its error cleared');
wait_delivered($node, 'postgres', 'after the import');
check_import_exact($node, tables => \%tables, label => "open transaction across add_table()");

# import => false: add_table() says what is not captured.
$node->safe_psql('postgres', 'CREATE TABLE u (id int PRIMARY KEY)');
$long = $node->background_psql('postgres');
$long->query_safe(q{BEGIN; INSERT INTO u VALUES (1);});
my ($out, $err) = ('', '');
$node->psql('postgres', "SELECT pgsink.add_table('u', import => false)",
	stdout => \$out, stderr => \$err);
like($err, qr/NOTICE:  transactions older than this call are still running/,
	'import => false: add_table() warns of the running transaction');
$long->query_safe('COMMIT');
$long->quit;

$node->stop;
done_testing();

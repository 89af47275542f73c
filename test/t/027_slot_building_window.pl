# A catalog change committed while the new slot is still building its first
# snapshot. PostgreSQL's snapshot builder ignores the commits it sees in that
# phase: a TRUNCATE committed then, while an older transaction still runs,
# stays invisible to the historic snapshots built from the slot's
# restart_lsn, and decoding fails at every start with "could not map
# filenode ... to relation OID" (a PostgreSQL bug, reproduced on 15.20 with
# test_decoding alone). pgsink moves a new slot's restart_lsn past its
# consistent point before using it, so the stream starts and stays healthy.
#
# The sequence (deterministic: each step waits until the slot creation is
# waiting on the expected transaction):
#   L: BEGIN, xid;  CREATE EXTENSION (the worker creates the slot, waits for L)
#   O: BEGIN, xid;  TRUNCATE t;  L: COMMIT (the builder now waits for O)
#   U: BEGIN, INSERT;  O: COMMIT (consistent);  U: COMMIT
#   add_table(t), more changes: they must arrive.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(usleep);

my $node = pgsink_node('building_window');
$node->start;
$node->safe_psql('postgres', 'CREATE TABLE t (a int PRIMARY KEY)');

sub wait_for_lock_on
{
	my ($xid, $label) = @_;
	ok(defined poll_until($node, 'postgres',
			"SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid' "
			  . "AND transactionid::text = '$xid'", '1', 30),
		"the slot's creation waits for $label");
}

my $l = $node->background_psql('postgres');
my $o = $node->background_psql('postgres');
my $u = $node->background_psql('postgres');

$l->query_safe('BEGIN');
my $xl = $l->query_safe('SELECT txid_current()');
$node->safe_psql('postgres', 'CREATE EXTENSION pgsink');
wait_for_lock_on($xl, 'transaction L');

# Meanwhile a transaction that has written cannot wait for the slot (it
# would wait for itself through the creator, unseen by the deadlock
# detector): add_table() refuses at once.
my ($out, $err) = ('', '');
$node->psql('postgres',
	"BEGIN; CREATE TABLE w (id int PRIMARY KEY); SELECT pgsink.add_table('w'); COMMIT;",
	stdout => \$out, stderr => \$err, timeout => 20);
like($err, qr/replication slot "pgsink" is not ready yet, and a transaction that has already written cannot wait for it/,
	'add_table() in a written transaction refuses instead of waiting');

$o->query_safe('BEGIN');
my $xo = $o->query_safe('SELECT txid_current()');
$node->safe_psql('postgres', 'TRUNCATE t');
$l->query_safe('COMMIT');
wait_for_lock_on($xo, 'transaction O');

$u->query_safe('BEGIN; INSERT INTO t VALUES (1)');
$o->query_safe('COMMIT');
usleep(500_000);
$u->query_safe('COMMIT');
$_->quit for ($l, $o, $u);

ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 60),
	'the worker streams from the new slot');
$node->safe_psql('postgres', "SELECT pgsink.add_table('t', import => false)");
$node->safe_psql('postgres', 'INSERT INTO t VALUES (2); TRUNCATE t; INSERT INTO t VALUES (3)');
wait_delivered($node, 'postgres', 'changes after add_table()');
my $log = slurp_file($node->logfile);
unlike($log, qr/could not map filenode/, 'decoding never failed');
my @ops = map { /"op":"(\w+)".*?"after":(\{[^}]*\}|null)/ ? "$1 $2" : () }
  split /\n/, slurp_file(sink_file($node));
is_deeply(\@ops, [ 'insert {"a":2}', 'truncate null', 'insert {"a":3}' ],
	'the changes arrive');

# The worker restarts from the slot: decoding still works.
$node->restart;
$node->safe_psql('postgres', 'INSERT INTO t VALUES (4)');
wait_delivered($node, 'postgres', 'after a restart');
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'), 'streaming',
	'still streaming after a restart');

$node->stop;
done_testing();

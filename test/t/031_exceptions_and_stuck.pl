# C++ exceptions and repeated failures, injected with fault_shim.c (avro-c
# refuses the schema of one table, as it refuses an invalid one):
# (1) in an import: the job fails with the error and backs off; the stream
#     goes on. Once, an exception other than pgsink's own skipped the abort
#     of the chunk's transaction and killed the worker at every start: a
#     crash loop that stalled streaming.
# (2) in decoding, at every start: after three failures at the same slot
#     position pgsink.status says the worker is stuck there, with the error;
#     once the cause is gone, it streams again and the error and the problem
#     are cleared;
# (3) the restart back-off starts over once the worker has streamed.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;

my $node = pgsink_node('exceptions', extra_conf => "pgsink.retry_max_interval = '2s'\n");
my $dir = $node->basedir;
my $marker = "$dir/avro_marker";
start_with_fault_shim($node, PGSINK_FAULT_AVRO => $marker);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub poison
{
	my ($word) = @_;
	open(my $fh, '>', $marker) or die;
	print $fh $word;
	close $fh;
}

sql(q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int PRIMARY KEY);
CREATE TABLE poisoned_import (id int PRIMARY KEY);
INSERT INTO poisoned_import SELECT generate_series(1, 10);
CREATE TABLE poisoned_stream (id int PRIMARY KEY);
SELECT pgsink.add_table('t', import => false);
});

# (1) The import of poisoned_import throws std::runtime_error.
poison('poisoned_import');
my $restarts = sql('SELECT worker_restarts FROM pgsink.status');
sql("SELECT pgsink.add_table('poisoned_import')");
ok(defined poll_until($node, 'postgres',
		"SELECT state, error_count >= 2 FROM pgsink.imports WHERE \"table\" = 'poisoned_import'::regclass",
		'failed|t', 30),
	'(1) the import fails, again and again, with back-off');
like(sql("SELECT error FROM pgsink.imports WHERE \"table\" = 'poisoned_import'::regclass"),
	qr/invalid Avro schema for public\.poisoned_import/, '(1) with the exception\'s message');
sql('INSERT INTO t VALUES (1)');
wait_delivered($node, 'postgres', '(1) the stream goes on');
is(sql('SELECT worker_restarts FROM pgsink.status'), $restarts, '(1) the worker never restarted');
unlink $marker;
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.imports WHERE \"table\" = 'poisoned_import'::regclass",
		'complete', 30),
	'(1) the import completes once the cause is gone');

# (2) Decoding a change of poisoned_stream fails at every start.
poison('poisoned_stream');
sql("SELECT pgsink.add_table('poisoned_stream', import => false)");
sql('INSERT INTO poisoned_stream VALUES (1)');
ok(defined poll_until($node, 'postgres',
		"SELECT config_problem LIKE 'the stream worker fails at every start at slot position %invalid Avro schema for public.poisoned_stream%' FROM pgsink.status",
		't', 60),
	'(2) pgsink.status says the worker is stuck, where and why');
like(slurp_file($node->logfile), qr/WARNING:  pgsink: the stream worker fails at every start/,
	'(2) so does the log');
unlink $marker;
wait_delivered($node, 'postgres', '(2) streaming again once the cause is gone');
is(sql("SELECT state, coalesce(last_error, '<none>'), coalesce(config_problem, '<none>') FROM pgsink.status"),
	'streaming|<none>|<none>', '(2) the error and the problem are cleared');

# (3) After the worker streamed healthily, its next failure is retried after
# the first delay again (1 s), not after the grown back-off of (2).
poison('poisoned_again');
sql(q{CREATE TABLE poisoned_again (id int PRIMARY KEY);
      SELECT pgsink.add_table('poisoned_again', import => false);
      INSERT INTO poisoned_again VALUES (1);});
ok(defined poll_until($node, 'postgres',
		"SELECT state, extract(epoch FROM next_start_at - last_error_at) < 1.5 FROM pgsink.status",
		'backing off|t', 30),
	'(3) the first failure after healthy streaming is retried after the first delay');
unlink $marker;
wait_delivered($node, 'postgres', '(3) streaming again');
check_exact($node,
	tables => { 'public.t' => ['id'], 'public.poisoned_stream' => ['id'],
		'public.poisoned_again' => ['id'] },
	label => 'every change delivered once');

$node->stop;
done_testing();

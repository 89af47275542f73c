# Imports survive crashes: the whole server is killed (SIGKILL to every
# process, as a power cut would) twice in the middle of an import, at
# different progress, then the stream worker alone is killed with SIGKILL
# (the postmaster then reinitialises every backend, as for any process
# attached to shared memory), while a writer keeps changing the table. After each
# restart the job resumes from its persisted cursor (it does not start from
# zero); at the end the file, replayed (import = upsert by key), equals the
# tables exactly, with no deleted row reappearing and no import overwriting a
# newer change (see PgsinkImport.pm).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkImport;
use Test::More;
use Time::HiRes qw(time usleep);

my $rows = $ENV{PGSINK_IMPORT_CRASH_ROWS} // 300000;

my $node = pgsink_node(
	'import_crash',
	extra_conf => q{
pgsink.import_chunk_rows = 1000
});
$node->start;
my $file = sink_file($node);

$node->safe_psql('postgres', qq{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO t SELECT g, g, 'row ' || g FROM generate_series(1, $rows) g;
CREATE TABLE c (a text, b uuid, n int, PRIMARY KEY (a, b));
INSERT INTO c SELECT 'k' || (g % 7), md5(g::text)::uuid, g FROM generate_series(1, 20000) g;
});

# ---------------------------------------------------------------------------
# A writer: one psql call per transaction, retried while the server is down
# (whether a transaction in flight at a crash committed does not matter: the
# tables are the reference). It changes rows everywhere: ahead of the
# cursor, behind it, keys included.
my $workdir = PostgreSQL::Test::Utils::tempdir();
my $sql = "$workdir/txn.sql";
PostgreSQL::Test::Utils::append_to_file($sql, qq{
BEGIN;
UPDATE t SET v = v + 1, note = 'updated' WHERE id = (SELECT (random() * $rows)::int);
DELETE FROM t WHERE id = (SELECT (random() * $rows)::int);
INSERT INTO t VALUES ($rows + (random() * 100000)::int, -1, 'new') ON CONFLICT DO NOTHING;
UPDATE t SET id = -id WHERE id = (SELECT (random() * $rows)::int);
UPDATE c SET n = n + 1
 WHERE (a, b) = (SELECT a, b FROM c WHERE (a, b) >= ('k' || (random() * 6)::int, gen_random_uuid())
                  ORDER BY a, b LIMIT 1);
COMMIT;
});
my $stop = "$workdir/stop";
my $driver = "$workdir/writer.pl";
PostgreSQL::Test::Utils::append_to_file($driver, q{
use strict;
use warnings;
use Time::HiRes qw(usleep);
my ($connstr, $sql, $stop, $count) = @ARGV;
my $n = 0;
until (-e $stop)
{
	$n++ if system('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $connstr,
		'-f', $sql, '-o', '/dev/null') == 0;
	usleep(5_000);
}
open(my $fh, '>', $count) or die;
print $fh "$n\n";
close $fh;
});
my @writers = map {
	IPC::Run::start(
		[ $^X, $driver, $node->connstr('postgres'), $sql, $stop, "$workdir/count$_" ],
		'>', "$workdir/writer$_.out", '2>', "$workdir/writer$_.err")
} (1, 2);

$node->safe_psql('postgres', "SELECT pgsink.add_table('t')");
$node->safe_psql('postgres', "SELECT pgsink.add_table('c')");

# Progress of the job of t: (state, has cursor, rows_imported, chunks).
sub progress
{
	my ($ok, $out) = query_retry($node, 'postgres',
		"SELECT state, cursor IS NOT NULL, rows_imported, chunks FROM pgsink.imports "
		  . "WHERE \"table\" = 't'::regclass", 60);
	return $ok ? split(/\|/, $out) : ();
}

# Wait until the job of t has imported at least $fraction of the rows.
sub wait_progress
{
	my ($fraction, $seconds) = @_;
	my $start = time();
	while (time() - $start < $seconds)
	{
		my @p = progress();
		return @p if @p && ($p[0] eq 'complete' || $p[2] >= $fraction * $rows);
		usleep(50_000);
	}
	return progress();
}

# [progress, what is killed]
my @crash_at = ([ 0.2, 'server' ], [ 0.5, 'server' ], [ 0.75, 'worker' ]);
for my $i (0 .. $#crash_at)
{
	my ($at, $what) = @{ $crash_at[$i] };
	my ($state, $has_cursor, $imported, $chunks) = wait_progress($at, 120);
	is($state, 'running',
		"crash " . ($i + 1) . ": the import is running at "
		  . int($at * 100) . "% ($imported rows, $chunks chunks)")
	  or diag(import_jobs($node));
	my $t0 = time();
	if ($what eq 'server')
	{
		crash_node($node);
		note("crash " . ($i + 1) . ": killed the server");
		start_after_crash($node);
	}
	else
	{
		my $pid = stream_pid($node);
		ok($pid, "crash " . ($i + 1) . ": the stream worker runs (pid $pid)");
		kill 'KILL', $pid;
		note("crash " . ($i + 1) . ": killed the stream worker alone");
		# The postmaster reinitialises the cluster and the launcher starts a new worker.
		ok( defined poll_until(
				$node, 'postgres',
				"SELECT worker_pid IS NOT NULL AND worker_pid <> $pid FROM pgsink.status",
				't', 60),
			"crash " . ($i + 1) . ": a new stream worker runs");
	}
	# Progress survives: the job is not restarted from zero.
	my @after = progress();
	note("crash " . ($i + 1) . sprintf(": restarted in %.1fs; job: %s", time() - $t0,
			join('|', @after)));
	is($after[1], 't', "crash " . ($i + 1) . ": the cursor survives the crash");
	ok(@after && $after[3] >= $chunks && $after[2] >= $imported,
		"crash " . ($i + 1) . ": chunks and rows_imported continue from where they were "
		  . "($chunks chunks, $imported rows before; $after[3], $after[2] after)");
	isnt($after[0], 'scheduled', "crash " . ($i + 1) . ": the job is not started over");
}

my $took = wait_imports($node, 'postgres', 150);
ok(defined $took, 'the imports finish after the crashes');
PostgreSQL::Test::Utils::append_to_file($stop, '');
$_->finish for @writers;
note('writer transactions: ' . join(' ', map { chomp(my $n = slurp_file("$workdir/count$_")); $n } (1, 2)));
wait_delivered($node, 'postgres', 'after the imports');

my @final = progress();
is($final[0], 'complete', 'the import of t is complete');
note(import_jobs($node));

my $res = check_import_exact(
	$node,
	label => 'import across three crashes',
	tables => { 'public.t' => ['id'], 'public.c' => [ 'a', 'b' ] });
# A chunk in flight at a crash may be imported twice (it is read again from
# the persisted cursor): as many import entries as rows_imported, or a few
# chunks more, never fewer.
my $counted = $node->safe_psql('postgres',
	"SELECT rows_imported FROM pgsink.imports WHERE \"table\" = 't'::regclass");
my $written = $res->{imported}{'public.t'} // 0;
ok($written >= $counted && $written <= $counted + scalar(@crash_at) * 2 * 1000 * 2,
	"import entries of t ($written) = rows_imported ($counted) plus at most the "
	  . 'chunks in flight at the crashes');

my $log = slurp_file($node->logfile);
unlike($log, qr/TRAP:|PANIC/, 'no assertion failure or PANIC in the server log');
# Killing the worker makes the postmaster end the other sessions (the writers') with
# a WARNING, as after any crash of a process attached to shared memory.
my @errors = grep { !/terminating connection because of crash of another server process/ }
  $log =~ /^.*(?:ERROR|WARNING):.*$/mg;
is(scalar(@errors), 0, 'no error or warning in the server log')
  or diag(join("\n", @errors[ 0 .. ($#errors < 9 ? $#errors : 9) ]));

$node->stop;
done_testing();

# Crash recovery: a mixed workload on two captured tables (one with a
# composite key) runs while the whole server is killed several times: with
# SIGKILL to every process (once while a 200k-row transaction is being
# written to the file), and with an immediate shutdown. After each restart
# delivery resumes from the slot; at the end the file, replayed, equals the
# tables exactly: no duplicate, no gap, no torn line.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $iterations = $ENV{PGSINK_CRASH_ITERATIONS} // 1000;    # per writer
my $big_rows = $ENV{PGSINK_CRASH_BIG_ROWS} // 200000;

my $node = pgsink_node(
	'crash',
	extra_conf => q{
# Small batches: the file grows steadily while a big transaction is written.
pgsink.batch_bytes = '256kB'
});
$node->start;
my $file = sink_file($node);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE SEQUENCE ids;
CREATE TABLE t1 (id int8 PRIMARY KEY, v text, n int4);
CREATE TABLE t2 (a int4, b text, c int8, PRIMARY KEY (a, b));
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('t1')");
$node->safe_psql('postgres', "SELECT pgsink.add_table('t2')");
my %tables = ('public.t1' => ['id'], 'public.t2' => [ 'a', 'b' ]);

# ---------------------------------------------------------------------------
# The workload: each writer is a loop of psql calls, one transaction each,
# retried while the server is down (whether a transaction that was in flight
# at a crash committed does not matter: the tables are the reference).
my $workdir = PostgreSQL::Test::Utils::tempdir();
my $pick = q{(SELECT (random() * last_value)::int8 + 1 FROM ids, generate_series(1, %d))};
my @txns = (
	# multi-statement: inserts into both tables, non-key updates
	q{BEGIN;
INSERT INTO t1 SELECT nextval('ids'), md5(random()::text), g FROM generate_series(1, 1 + (random() * 20)::int) g;
UPDATE t1 SET v = v || '.', n = n + 1 WHERE id IN } . sprintf($pick, 5) . q{;
INSERT INTO t2 SELECT nextval('ids'), 'k' || g, g * 1000000000000 FROM generate_series(1, 1 + (random() * 5)::int) g;
UPDATE t2 SET c = c + 1 WHERE a IN } . sprintf($pick, 5) . q{;
COMMIT;},
	# key changes on both tables, composite key partly and wholly
	q{BEGIN;
UPDATE t1 SET id = nextval('ids'), v = 'moved' WHERE id IN } . sprintf($pick, 3) . q{;
UPDATE t2 SET b = b || 'x' WHERE a IN } . sprintf($pick, 3) . q{;
UPDATE t2 SET a = nextval('ids'), c = -c WHERE a IN } . sprintf($pick, 3) . q{;
COMMIT;},
	# deletes
	q{DELETE FROM t1 WHERE id IN } . sprintf($pick, 10) . q{;
DELETE FROM t2 WHERE a IN } . sprintf($pick, 10) . q{;},
	# a rolled back subtransaction and a rolled back transaction
	q{BEGIN;
INSERT INTO t1 VALUES (nextval('ids'), 'kept', 1);
SAVEPOINT s;
INSERT INTO t1 VALUES (nextval('ids'), 'rolled back', 2);
UPDATE t2 SET c = 0 WHERE a IN } . sprintf($pick, 5) . q{;
ROLLBACK TO s;
INSERT INTO t2 VALUES (nextval('ids'), 'after savepoint', 3);
COMMIT;
BEGIN;
INSERT INTO t1 VALUES (nextval('ids'), 'never', 3);
ROLLBACK;},
	# single-row autocommit statements
	q{INSERT INTO t1 VALUES (nextval('ids'), NULL, NULL);
UPDATE t1 SET n = coalesce(n, 0) + 1 WHERE id IN } . sprintf($pick, 1) . q{;},
);
my $truncate_t2 = q{BEGIN;
TRUNCATE t2;
INSERT INTO t2 SELECT nextval('ids'), 'fresh', g FROM generate_series(1, 10) g;
COMMIT;};
my $truncate_t1 = q{TRUNCATE t1;};

my $driver = "$workdir/writer.pl";
open(my $fh, '>', $driver) or die;
print $fh <<'EOF';
use strict;
use warnings;
use Time::HiRes qw(time usleep);
my ($connstr, $writer, $iterations, $progress, $sqldir) = @ARGV;
my @txns = glob("$sqldir/txn_*.sql");
for my $i (1 .. $iterations)
{
	my $sql = $txns[($i * 7 + $writer * 3) % @txns];
	$sql = "$sqldir/truncate_t2.sql" if $writer == 1 && $i % 50 == 0;
	$sql = "$sqldir/truncate_t1.sql" if $writer == 2 && $i == 30;
	my $start = time();
	# Retry while the server is down or restarting; give up after 60 s.
	while (system('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $connstr,
			'-f', $sql, '-o', '/dev/null') != 0)
	{
		last if time() - $start > 60;
		usleep(100_000);
	}
	open(my $p, '>', "$progress.tmp") or die;
	print $p "$i\n";
	close $p;
	rename("$progress.tmp", $progress);
}
EOF
close $fh;
for my $i (0 .. $#txns)
{
	PostgreSQL::Test::Utils::append_to_file("$workdir/txn_$i.sql", $txns[$i]);
}
PostgreSQL::Test::Utils::append_to_file("$workdir/truncate_t2.sql", $truncate_t2);
PostgreSQL::Test::Utils::append_to_file("$workdir/truncate_t1.sql", $truncate_t1);

my @writers;
for my $w (1, 2)
{
	my ($out, $err) = ('', '');
	push @writers,
	  IPC::Run::start(
		[
			'perl', $driver, $node->connstr('postgres'),
			$w, $iterations, "$workdir/progress_$w", $workdir
		],
		'>', \$out, '2>', \$err);
}

sub progress
{
	my $min;
	for my $w (1, 2)
	{
		my $p = 0;
		if (open(my $f, '<', "$workdir/progress_$w"))
		{
			$p = <$f> // 0;
			chomp $p;
			close $f;
		}
		$min = $p if !defined $min || $p < $min;
	}
	return $min;
}

sub wait_progress
{
	my ($target) = @_;
	my $start = time();
	usleep(100_000) while progress() < $target && time() - $start < 120;
	note("workload at " . progress() . "/$iterations");
}

# Restart after a kill; say where the slot resumes (its position on disk:
# the slot is saved at checkpoints) and how much of the file was cut.
sub restart
{
	my ($label) = @_;
	my $size = -s $file;
	my $offset = -s $node->logfile;
	start_after_crash($node);
	my $pid = worker_pid_status($node, 30);
	ok(defined $pid, "$label: stream worker runs again after the restart");
	$node->wait_for_log(qr/pgsink: streaming from slot "pgsink" at/, $offset);
	my ($at) = slurp_file($node->logfile, $offset) =~ /streaming from slot "pgsink" at (\S+)/;
	note("$label: file was $size bytes; delivery resumes from the slot at $at");
}

# A checkpoint saves the slot's confirmed position to disk: the next crash
# then cuts the file in the middle rather than near its start.
sub checkpoint
{
	my ($ok, $out, $err) = query_retry($node, 'postgres', 'CHECKPOINT', 30);
	note("CHECKPOINT failed: $err") unless $ok;
}

# ---------------------------------------------------------------------------
# Kill 1: SIGKILL to every server process while small transactions flow.
wait_progress(int($iterations * 0.1));
checkpoint();
wait_progress(int($iterations * 0.15));
my $n = crash_node($node);
note("kill 1: SIGKILL to $n processes, file size " . (-s $file));
restart('kill 1');

# ---------------------------------------------------------------------------
# Kill 2: SIGKILL while the big transaction is being written to the file.
wait_progress(int($iterations * 0.3));
my $killed_mid_delivery = 0;
for my $attempt (1 .. 3)
{
	wait_delivered($node, 'postgres', "before big transaction $attempt");
	checkpoint();
	my $before = -s $file;
	my ($bout, $berr) = ('', '');
	my $big = IPC::Run::start(
		[
			'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c',
			"INSERT INTO t1 SELECT nextval('ids'), 'big', g FROM generate_series(1, $big_rows) g"
		],
		'>', \$bout, '2>', \$berr);
	# Kill as soon as the file has grown by 2 MB (the workload alone writes far less).
	my $start = time();
	usleep(5_000) while (-s $file) - $before < 2_000_000 && time() - $start < 60;
	my $grown = (-s $file) - $before;
	crash_node($node);
	$big->finish;
	# How much of the big transaction made it into the file?
	my $big_lines = 0;
	open(my $f, '<', $file) or die;
	while (<$f>) { $big_lines++ if index($_, '"v":"big"') >= 0; }
	close $f;
	note("kill 2, attempt $attempt: file grew by $grown bytes; $big_lines of $big_rows "
		  . "big rows in the file at the kill");
	restart("kill 2 attempt $attempt");
	if ($big_lines > 0 && $big_lines < $big_rows)
	{
		$killed_mid_delivery = 1;
		last;
	}
}
ok($killed_mid_delivery, 'kill 2 hit the big transaction while it was being written');
wait_delivered($node, 'postgres', 'after kill 2');
# The big transaction, written again after the crash, is there exactly once.
{
	my $res = check_changelog(files => [$file], keys => \%tables);
	is($res->{error_count}, 0, 'after kill 2: changelog consistent so far')
	  or diag(join("\n", @{ $res->{errors} }));
}

# ---------------------------------------------------------------------------
# Kill 3: immediate shutdown (SIGQUIT to the postmaster) at another moment.
wait_progress(int($iterations * 0.5));
checkpoint();
wait_progress(int($iterations * 0.6));
$node->stop('immediate');
note("kill 3: immediate shutdown, file size " . (-s $file));
restart('kill 3');

# ---------------------------------------------------------------------------
# Kill 4: SIGKILL right after a delivery was confirmed and saved by a
# checkpoint: the recovery cut keeps (nearly) the whole file.
wait_progress(int($iterations * 0.8));
wait_delivered($node, 'postgres', 'before kill 4');
checkpoint();
crash_node($node);
note("kill 4: SIGKILL after a confirmed delivery, file size " . (-s $file));
# What a crash in the middle of a write leaves behind: a whole line that was
# never confirmed (its lsn is past anything the slot confirmed) and a torn
# one. The recovery cut must remove both.
PostgreSQL::Test::Utils::append_to_file($file,
	'{"timestamp":"2000-01-01T00:00:00.000000+00:00","sequence":1,"namespace":"public",'
	  . '"name":"t1","op":"insert","lsn":"FFFF/0","xid":1,"before":null,'
	  . "\"after\":{\"id\":\"-1\",\"v\":\"ghost\",\"n\":0}}\n"
	  . '{"timestamp":"2000-01-01T00:00:00.000000+00:00","sequence":2,"namespace":"pub');
restart('kill 4');

# ---------------------------------------------------------------------------
# Let the workload finish, then everything must be there exactly once.
for my $w (@writers)
{
	$w->finish;
}
is(progress(), $iterations, 'workload finished');
wait_delivered($node, 'postgres', 'end');
my $res = check_exact($node, tables => \%tables, label => 'end');
cmp_ok($res->{transactions}, '>', $iterations, 'many transactions were captured');
ok($res->{ops}{update} && $res->{ops}{delete} && $res->{ops}{truncate},
	'updates, deletes and truncates were captured');

# The worker restarted cleanly each time and reports no error now.
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'),
	'streaming', 'worker streaming at the end');

$node->stop;
done_testing();

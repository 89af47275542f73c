# The stream worker's memory is bounded, not proportional to the size of a
# transaction:
# (1) one transaction of PGSINK_BIG_ROWS rows (default 2,000,000): the
#     worker's peak RSS stays under pgsink.batch_bytes + 3 x the largest row
#     + 150 MB, and under a quarter of the transaction's JSON size;
# (2) one row with a PGSINK_HUGE_MB MB text value (default 200): the peak
#     stays under pgsink.batch_bytes + 3 x that row + 150 MB;
# (3) the import of a table of wide rows (2000 rows of 100 kB): a chunk ends
#     once it holds pgsink.batch_bytes of JSON, so the worker's private memory
#     (RssAnon) stays under 2 x pgsink.batch_bytes + 64 MB, where chunks
#     sized by rows alone would hold 100 MB.
# Every row arrives (the file's lines are counted and their sequences
# checked). The reorder buffer spills to disk past logical_decoding_work_mem
# (64MB): that is expected.
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

my $rows = $ENV{PGSINK_BIG_ROWS} // 2_000_000;
my $huge_mb = $ENV{PGSINK_HUGE_MB} // 200;
my $huge_bytes = $huge_mb * 1024 * 1024;
my $pad = 'p' x 200;
my $batch_mb = 8;
my $MB = 1024 * 1024;

my $node = pgsink_node(
	'memory',
	extra_conf => qq{
pgsink.batch_bytes = '${batch_mb}MB'
logical_decoding_work_mem = '64MB'
# The 200 MB value: the backend that inserts it needs a little room.
statement_timeout = 0
});
$node->start;
my $file = sink_file($node);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE big_txn (id int8 PRIMARY KEY, v text);
CREATE TABLE huge (id int4 PRIMARY KEY, v text);
-- Stored as is, not compressed: the WAL carries the whole value.
ALTER TABLE huge ALTER COLUMN v SET STORAGE EXTERNAL;
CREATE TABLE wide (id int4 PRIMARY KEY, v text);
ALTER TABLE wide ALTER COLUMN v SET STORAGE EXTERNAL;
INSERT INTO wide SELECT g, repeat(chr(97 + g % 26), 100 * 1024) FROM generate_series(1, 2000) g;
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('big_txn')");
$node->safe_psql('postgres', "SELECT pgsink.add_table('huge')");
wait_delivered($node, 'postgres', 'setup');

my $pid = worker_pid_status($node, 10);
ok(defined $pid, 'stream worker running');
my $base = proc_status($pid);
note("worker $pid at rest: VmRSS $base->{VmRSS} kB, VmHWM $base->{VmHWM} kB");

# Run each of @sql in the background, then wait_for_delivery, sampling the worker's
# memory every 100 ms. Returns { rss => peak VmRSS kB, anon => peak RssAnon
# kB, hwm => VmHWM kB at the end, seconds }.
sub deliver_and_sample
{
	my ($label, @sql) = @_;
	my %peak = (rss => 0, anon => 0, hwm => 0);
	my $sample = sub {
		my $s = proc_status($pid) or return;
		$peak{rss} = $s->{VmRSS} if $s->{VmRSS} > $peak{rss};
		$peak{anon} = $s->{RssAnon} if ($s->{RssAnon} // 0) > $peak{anon};
		$peak{hwm} = $s->{VmHWM} if $s->{VmHWM} > $peak{hwm};
	};
	my $t0 = time();
	for my $step (@sql, "SELECT pgsink.wait_for_delivery('600s')")
	{
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start(
			[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
			  '-c', $step ],
			'>', \$out, '2>', \$err);
		while ($h->pumpable)
		{
			$sample->();
			usleep(100_000);
			$h->pump_nb;
		}
		ok($h->finish, "$label: [" . substr($step, 0, 60) . '] succeeds')
		  or diag($err);
	}
	$sample->();
	$peak{seconds} = time() - $t0;
	note(sprintf("%s: %.1fs; worker peak VmRSS %d MB, peak RssAnon %d MB, VmHWM %d MB",
			$label, $peak{seconds}, $peak{rss} / 1024, $peak{anon} / 1024, $peak{hwm} / 1024));
	return \%peak;
}

# Scan the file from $offset: count the Modifications of $table, check that
# every line is terminated and that their sequences run 1..n without a hole.
# Returns (count, longest line, errors).
sub scan_file
{
	my ($offset, $table) = @_;
	open(my $fh, '<', $file) or die;
	seek($fh, $offset, 0);
	my ($count, $longest, @errors) = (0, 0);
	my ($lsn, $seq) = ('', 0);
	my $first_checked = 0;
	while (my $line = <$fh>)
	{
		$longest = length($line) if length($line) > $longest;
		push @errors, "unterminated line at the end" unless substr($line, -1) eq "\n";
		next unless index($line, qq{"name":"$table"}) >= 0;
		$count++;
		if (length($line) < 100_000)
		{
			if ($line =~ /"sequence":(\d+),.*?"lsn":"([^"]+)"/)
			{
				if ($2 ne $lsn) { ($lsn, $seq) = ($2, 0); }
				push @errors, "sequence $1 after $seq at $lsn" if $1 != $seq + 1;
				$seq = $1;
			}
			else { push @errors, "no sequence/lsn: " . substr($line, 0, 200); }
			# Full JSON parse of a few lines.
			if ($count <= 3 || $count % 100_000 == 0)
			{
				chomp(my $l = $line);
				push @errors, "not JSON: " . substr($l, 0, 200)
				  unless ref(eval { JSON::PP->new->utf8->decode($l) }) eq 'HASH';
			}
		}
		last if @errors > 10;
	}
	close $fh;
	return ($count, $longest, @errors);
}

# ---------------------------------------------------------------------------
# (1) One transaction of $rows rows.
my $offset = -s $file;
my $p1 = deliver_and_sample("$rows-row transaction",
	"INSERT INTO big_txn SELECT g, '$pad' FROM generate_series(1, $rows) g");
my $json_bytes = (-s $file) - $offset;
my ($count, $longest, @errors) = scan_file($offset, 'big_txn');
is($count, $rows, "all $rows rows are in the file");
is(scalar @errors, 0, 'lines complete, sequences 1..n') or diag(join("\n", @errors));
is(worker_pid_status($node, 5), $pid, 'same worker throughout (no restart)');
my $bound1 = $batch_mb * $MB + 3 * $longest + 150 * $MB;
note(sprintf("transaction JSON: %d MB; longest line %d bytes; bound %d MB; quarter %d MB",
		$json_bytes / $MB, $longest, $bound1 / $MB, $json_bytes / 4 / $MB));
cmp_ok($p1->{hwm} * 1024, '<', $bound1,
	'peak RSS (VmHWM) < batch_bytes + 3 x largest row + 150 MB');
SKIP:
{
	# With a small PGSINK_BIG_ROWS the fixed part of the bound dominates.
	skip 'transaction too small to tell bounded from proportional', 1
	  if $json_bytes / 4 < $bound1;
	cmp_ok($p1->{hwm} * 1024, '<', $json_bytes / 4,
		'peak RSS (VmHWM) < a quarter of the transaction\'s JSON size');
}

# ---------------------------------------------------------------------------
# (2) One row of $huge_mb MB.
$offset = -s $file;
my $p2 = deliver_and_sample("$huge_mb MB row",
	"INSERT INTO huge VALUES (1, repeat('x', $huge_bytes))");
($count, $longest, @errors) = scan_file($offset, 'huge');
is($count, 1, 'the huge row is in the file');
is(scalar @errors, 0, 'its line is complete') or diag(join("\n", @errors));
cmp_ok($longest, '>', $huge_bytes, 'the line holds the whole value');
# The value itself, byte for byte.
{
	open(my $fh, '<', $file) or die;
	seek($fh, $offset, 0);
	my $ok = 0;
	while (my $line = <$fh>)
	{
		next unless length($line) > $huge_bytes;
		my $at = index($line, '"v":"');
		$ok = $at > 0
		  && substr($line, $at + 5, $huge_bytes) =~ tr/x// == $huge_bytes
		  && substr($line, $at + 5 + $huge_bytes) eq "\"}}\n"
		  && substr($line, 0, $at) =~ /^\{"timestamp":"[^"]+","sequence":1,"namespace":"public","name":"huge","op":"insert","lsn":"[0-9A-F]+\/[0-9A-F]+","xid":\d+,"before":null,"after":\{"id":1,$/;
	}
	close $fh;
	ok($ok, "the $huge_mb MB value arrived intact");
}
is(worker_pid_status($node, 5), $pid, 'same worker throughout (no restart)');
my $bound2 = $batch_mb * $MB + 3 * $longest + 150 * $MB;
note(sprintf("row line %d MB; bound %d MB", $longest / $MB, $bound2 / $MB));
cmp_ok($p2->{hwm} * 1024, '<', $bound2,
	'peak RSS (VmHWM) < batch_bytes + 3 x largest row + 150 MB');

# After the huge row, the worker gives the memory back (it is not kept for
# the rest of its life).
sleep 1;
my $after = proc_status($pid);
note("worker after delivery: VmRSS $after->{VmRSS} kB");
cmp_ok($after->{VmRSS} * 1024, '<', $batch_mb * 2 * $MB + 150 * $MB,
	'RSS back to a small size after the huge row');

# ---------------------------------------------------------------------------
# (3) The import of 2000 rows of 100 kB.
$offset = -s $file;
my $p3 = deliver_and_sample('import of wide rows', "SELECT pgsink.add_table('wide')", q{
DO $$
BEGIN
    WHILE (SELECT state FROM pgsink.imports WHERE "table" = 'wide'::regclass) <> 'complete' LOOP
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
});
($count, $longest, @errors) = scan_file($offset, 'wide');
is($count, 2000, 'every wide row is imported once');
is(scalar @errors, 0, 'lines complete, sequences 1..n') or diag(join("\n", @errors));
my $chunks = $node->safe_psql('postgres',
	"SELECT chunks FROM pgsink.imports WHERE \"table\" = 'wide'::regclass");
cmp_ok($chunks, '>=', 2000 * 100 * 1024 / ($batch_mb * $MB),
	"chunks of at most batch_bytes of JSON ($chunks chunks)");
cmp_ok($p3->{anon} * 1024, '<', 2 * $batch_mb * $MB + 64 * $MB,
	'peak private memory (RssAnon) < 2 x batch_bytes + 64 MB during the import');

$node->stop;
done_testing();

# A write to the spool fails (a dying disk: EIO after a torn half-write),
# in the thread that writes the spool for the stream worker: the stream
# worker fails in its own thread, says so, restarts, cuts the torn round
# back, decodes it again, and the sink's output stays exact. The slot never
# confirms past what the spool holds (nothing is lost while it fails).
# Then the same for a round's fsync, which that thread makes while decoding
# goes on: the round is never published or confirmed.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(usleep);

my $node = pgsink_node('spool_write_faults');
my $file = sink_file($node);
my $trigger = $node->basedir . '/fail_spool_writes';
# The spool's first segment (pgsink.spool_directory's default, in the data directory).
my $segment = $node->data_dir . '/pgsink_spool/0000000000000000.jsonl';
start_with_fault_shim($node, PGSINK_FAULT_TRIGGER => $trigger, PGSINK_FAULT_TARGET => $segment);
my %tables = ('public.t' => ['id']);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
});

my $batch = 0;
sub workload
{
	$batch++;
	my $base = $batch * 100000;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT g, repeat('v', g % 300) FROM generate_series($base, $base + 4999) g;
UPDATE t SET v = v || ' updated' WHERE id % 3 = 0 AND id >= $base;
DELETE FROM t WHERE id % 7 = 0 AND id >= $base;
});
}

workload();
wait_delivered($node, 'postgres', 'before the fault');
ok(-f $segment, 'the spool writes the segment the fault targets');

# With the fault set (the trigger file holds $mode), the workload's changes
# fail to reach the spool: the stream worker reports $error, and the slot
# does not confirm them.
sub fault_phase
{
	my ($mode, $error, $what) = @_;
	open(my $fh, '>', $trigger) or die;
	print $fh $mode;
	close $fh;
	my $log_offset = -s $node->logfile;
	workload();
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()');
	my $seen = 0;
	for (1 .. 150)
	{
		$seen = 1, last if slurp_file($node->logfile, $log_offset) =~ $error;
		usleep(100_000);
	}
	ok($seen, "$what is reported by the stream worker, with the file and the error");
	sleep 1;    # failed restarts meanwhile
	my $confirmed = $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn < '$end' FROM pg_replication_slots WHERE slot_name = 'pgsink'");
	is($confirmed, 't', "the slot did not confirm the changes $what kept out of the spool");
}

# Writes fail (ftruncate works: the torn tail is cut at the next start).
fault_phase('writes',
	qr/could not write spool file ".*0000000000000000\.jsonl": Input\/output error/,
	'the failed write');
like(status_row($node), qr/could not write spool file/, 'pgsink.status shows the error');

unlink $trigger;
workload();
wait_delivered($node, 'postgres', 'after the disk recovered');
check_exact($node, tables => \%tables, files => [$file], label => 'failed spool writes');

# fdatasync() of the segment fails: writes go through, the round does not.
my $lines_before = file_lines($file);
fault_phase('fsync',
	qr/could not fsync spool file ".*0000000000000000\.jsonl": Input\/output error/,
	"a round's failed fsync");
is(file_lines($file), $lines_before, 'the sink was not given the round that is not durable');

unlink $trigger;
workload();
wait_delivered($node, 'postgres', 'after fsync works again');
check_exact($node, tables => \%tables, files => [$file], label => 'failed spool fsyncs');

$node->stop;
done_testing();

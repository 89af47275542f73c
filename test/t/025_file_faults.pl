# The sink file under failures and rotation. Nothing confirmed is ever lost,
# and nothing is confirmed into a file nobody can read:
# (1) a write fails and so does its undo (EIO from a dying disk, a read-only
#     remount; injected by fault_shim.c): once, the reopen cut every line
#     written since start-up although the slot had confirmed them; now the
#     delivery worker restarts and cuts back only to its own cursor;
# (2) the file is moved away (logrotate's default "create" rotation): the
#     entries already there stay, new ones go to a new file at the path;
# (3) the file is copied and truncated (logrotate's copytruncate): the next
#     entries start at the new end, with no hole of NUL bytes;
# (4) the file is deleted: said in the log and status, new entries go to a
#     new file that starts with the Schema entries it needs;
# (5) the disk is full in the middle of a big transaction and the
#     configuration is reloaded meanwhile;
# (6) lines after the cursor at start-up (an entry, a foreign line) are cut.
# The workload carries json values with newlines and look-alike "lsn" keys:
# every entry stays one line, and the cut at open never reads inside values.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(usleep);

my $node = pgsink_node('file_faults');
my $file = sink_file($node);
my $dir = $node->basedir;

my $trigger = "$dir/fail_writes";
start_with_fault_shim($node, PGSINK_FAULT_TRIGGER => $trigger, PGSINK_FAULT_TARGET => $file);
my %tables = ('public.t' => ['id']);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text, j json);
SELECT pgsink.add_table('t', import => false);
});

my $batch = 0;
sub workload
{
	$batch++;
	my $base = $batch * 1000;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT g, 'row ' || g,
    format(E'{\\n "lsn": "FFFFFFFF/FFFFFFFF",\\n "n": %s\\n}', g)::json
  FROM generate_series($base, $base + 99) g;
UPDATE t SET v = v || ' updated', j = E'[\\n"op",\\r\\n"insert"]' WHERE id % 3 = 0;
DELETE FROM t WHERE id % 7 = 0;
});
}

sub no_nul_bytes
{
	my ($path) = @_;
	open(my $fh, '<', $path) or return 0;
	binmode $fh;
	local $/;
	my $all = <$fh>;
	return index($all, "\0") < 0;
}

sub last_error
{
	return sink_status($node)->{error};
}

workload();
wait_delivered($node, 'postgres', 'before the faults');

# (1) A write fails, and so does the ftruncate that would undo it.
open(my $fh, '>', $trigger) or die;
close $fh;
workload();
my $seen = 0;
for (1 .. 150)
{
	$seen = 1, last if last_error() =~ /could not (write|truncate)/;
	usleep(100_000);
}
ok($seen, '(1) the failed write is in pgsink.sinks') or diag(status_row($node));
sleep 1;    # several failed retries and restarts
unlink $trigger;
workload();
wait_delivered($node, 'postgres', '(1) after the disk recovered');
ok(no_nul_bytes($file), '(1) no NUL bytes in the file');
check_exact($node, tables => \%tables, files => [$file], label => '(1) failed write and undo');

# (2) logrotate's "create": the file is moved away, pgsink starts a new one.
rename($file, "$file.1") or die;
my $log_offset = -s $node->logfile;
workload();
wait_delivered($node, 'postgres', '(2) after the move');
ok(-s $file, '(2) a new file at the path');
check_exact($node, tables => \%tables, files => [ "$file.1", $file ],
	label => '(2) moved file and new file');
like(slurp_file($node->logfile, $log_offset), qr/was moved or replaced/,
	'(2) the log says the file was moved');

# (3) logrotate's copytruncate.
PostgreSQL::Test::Utils::system_or_bail('cp', $file, "$file.2");
truncate($file, 0) or die;
workload();
wait_delivered($node, 'postgres', '(3) after copytruncate');
ok(no_nul_bytes($file), '(3) no NUL bytes after copytruncate');
check_exact($node, tables => \%tables, files => [ "$file.1", "$file.2", $file ],
	label => '(3) copied, truncated and continued');

# (4) The file is deleted: new entries go to a new file, which starts with
# the Schema entry its changes need; the log and status say what happened.
unlink $file or die;
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'INSERT INTO t VALUES (900001, \'after rm\', \'{}\')');
wait_delivered($node, 'postgres', '(4) after the delete');
my @lines = split /\n/, slurp_file($file);
like($lines[0], qr/^\{"timestamp":"[^"]+","lsn":"[^"]+","schema":/,
	'(4) the new file starts with a Schema entry');
is(scalar(grep { /"id":"900001"/ } @lines), 1, '(4) the new change is in the new file');
like(slurp_file($node->logfile, $log_offset),
	qr/WARNING:  pgsink: sink "file": file ".*" was deleted/,
	'(4) the log says the file was deleted');
like(last_error(), qr/was deleted/, '(4) pgsink.sinks says so');

# (5) The disk is full in the middle of a big transaction (writes fail, their
# undo works: retried in place), and the configuration is reloaded: the
# delivery worker applies it in place, and nothing is lost.
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.batch_bytes = '64kB'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
sleep 1;
open($fh, '>', $trigger) or die;
print $fh "writes";
close $fh;
$log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"INSERT INTO t SELECT g, repeat('x', 200), '{}' FROM generate_series(2000000, 2005000) g");
$seen = 0;
for (1 .. 150)
{
	$seen = 1, last if last_error() =~ /could not write/;
	usleep(100_000);
}
ok($seen, '(5) the full disk is in pgsink.sinks') or diag(status_row($node));
my $pid5 = delivery_pid($node, 'file');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
sleep 2;
unlink $trigger;
wait_delivered($node, 'postgres', '(5) after the disk has room again');
my $log5 = slurp_file($node->logfile, $log_offset);
unlike($log5, qr/ERROR:/, '(5) a reload while the sink retries raises no ERROR');
is(delivery_pid($node, 'file'), $pid5, '(5) the same delivery worker delivered');
like($log5, qr/WARNING:  pgsink: sink "file": could not write/, '(5) the full disk is logged');
is(scalar(grep { /"id":"2005000"/ } split /\n/, slurp_file($file)), 1,
	'(5) the big transaction arrived once');

# (6) An entry and a line that is not one, after the sink's cursor: the cut
# at start-up goes back to the cursor's size and removes both (whatever
# follows the cursor is delivered again from the spool).
$node->stop;
open($fh, '>>', $file) or die;
print $fh '{"timestamp":"2026-01-01T00:00:00+00:00","sequence":1,"namespace":"public",'
  . '"name":"t","op":"insert","lsn":"FFFFFFFF/0","xid":1,"before":null,'
  . '"after":{"id":"-1"}}' . "\n";
print $fh "a line someone else appended\n";
close $fh;
$node->start;
wait_delivered($node, 'postgres', '(6) after the restart');
my $after = slurp_file($file);
unlike($after, qr/"id":"-1"/, '(6) the unconfirmed entry before the foreign line is cut');
unlike($after, qr/someone else/, '(6) and the foreign line after it');

$node->stop;
done_testing();

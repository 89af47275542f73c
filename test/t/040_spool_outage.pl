# A sink outage no longer holds WAL: while the file sink cannot be written
# (pgsink.file_path reloaded into a directory without permissions), tens of
# MB of WAL are generated on a captured table, with CHECKPOINTs. The stream
# worker goes on decoding into the spool and confirming the slot: the WAL
# the slot retains stays small (a round or so), far below the WAL generated
# during the outage (what a slot would have retained before the spool),
# while the spool grows by exactly the entries the sink has not delivered.
# Once the directory is writable again the sink catches up and the output
# is exact.
#
# The server runs as the same OS user as this test, so the permissions bind
# it; as root they would not, and the test is skipped.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

plan skip_all => 'file permissions do not bind root' if $> == 0;

my $MB = 1024 * 1024;
my $rounds = $ENV{PGSINK_OUTAGE_ROUNDS} // 10;
my $rows = 5000;    # per round: inserted, then updated

my $node = pgsink_node('outage');
$node->start;
my $file1 = sink_file($node);
my %tables = ('public.t' => ['id']);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('t', import => false)");
$node->safe_psql('postgres',
	"INSERT INTO t SELECT g, 0, 'before the outage' FROM generate_series(1, 100) g");
wait_delivered($node, 'postgres', 'before the outage');

sub current_lsn { return parse_lsn($node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()')); }

# ---------------------------------------------------------------------------
# The outage: a new pgsink.file_path in a directory nobody may enter.
my $dir = $node->basedir . '/locked';
mkdir $dir or die;
chmod 0000, $dir or die;
my $file2 = "$dir/changes.jsonl";
$node->safe_psql('postgres',
	"ALTER SYSTEM SET pgsink.file_path = '$file2'; SELECT pg_reload_conf();");
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'file'", 'retrying', 30),
	"the sink is 'retrying'");

my $spool_before = spool_bytes($node);
my $lsn_before = current_lsn();
my $max_retained = retained_wal($node);
my $t0 = time();
for my $r (1 .. $rounds)
{
	my $base = $r * 100000;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT g, g, repeat(md5(g::text), 8) FROM generate_series($base, $base + $rows - 1) g;
UPDATE t SET n = n + 1, v = upper(v) WHERE id BETWEEN $base AND $base + $rows - 1;
DELETE FROM t WHERE id BETWEEN $base AND $base + $rows - 1 AND id % 10 = 0;
});
	# A checkpoint logs the running transactions, which lets restart_lsn move.
	$node->safe_psql('postgres', 'CHECKPOINT');
	for (1 .. 5)
	{
		usleep(200_000);
		my $ret = retained_wal($node);
		$max_retained = $ret if $ret > $max_retained;
	}
}
my $lsn_after = current_lsn();
my $generated = $lsn_after - $lsn_before;
note(sprintf("outage: %d rounds in %.1fs, %.1f MB of WAL generated", $rounds, time() - $t0,
		$generated / $MB));

# Decoding went on through the outage: the spool holds everything committed.
ok(defined poll_until($node, 'postgres',
		"SELECT durable_lsn >= '" . format_lsn($lsn_after) . "' FROM pgsink.spool", 't', 30),
	'the spool holds every change committed during the outage');
$node->safe_psql('postgres', 'CHECKPOINT');
ok(defined poll_until($node, 'postgres',
		"SELECT confirmed_flush_lsn >= '" . format_lsn($lsn_after)
		  . "' FROM pg_replication_slots WHERE slot_name = 'pgsink'", 't', 30),
	'the slot confirmed every change committed during the outage');
my $retained_end = retained_wal($node);
$max_retained = $retained_end if $retained_end > $max_retained;
note(sprintf("WAL generated during the outage: %.1f MB; most WAL retained by the slot: "
		  . "%.2f MB (%.2f MB at the end)",
		$generated / $MB, $max_retained / $MB, $retained_end / $MB));
cmp_ok($generated, '>', 30 * $MB, 'the outage generated tens of MB of WAL');
cmp_ok($max_retained, '<', $generated / 4,
	'the WAL retained stays far below the WAL generated during the outage');
cmp_ok($max_retained, '<', 16 * $MB, 'the WAL retained stays below 16 MB');

my $s = sink_status($node);
my $spool_after = spool_bytes($node);
my $growth = $spool_after - $spool_before;
note(sprintf("spool: %.1f MB before, %.1f MB after (+%.1f MB); the sink's lag: %d entries, "
		  . "%.1f MB", $spool_before / $MB, $spool_after / $MB, $growth / $MB,
		$s->{lag_entries}, $s->{lag_bytes} / $MB));
is($s->{state}, 'retrying', 'the sink still retries');
is($growth, $s->{lag_bytes}, "the spool grew by exactly the sink's lag");
cmp_ok($s->{lag_entries}, '>=', $rounds * $rows * 2, 'the lag counts every entry of the outage');
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'), 'streaming',
	'the stream worker streams through the outage');
ok(!-e $file2, 'nothing was written to the sink meanwhile');

# ---------------------------------------------------------------------------
# The directory is writable again: the backlog arrives, exactly once.
chmod 0700, $dir or die;
my $t1 = time();
wait_delivered($node, 'postgres', 'after the outage', 120);
note(sprintf("backlog delivered in %.1fs", time() - $t1));
is(sink_status($node)->{state}, 'idle', 'the sink is idle (caught up)');
is(sink_status($node)->{lag_bytes}, 0, 'no lag');

# The new file holds the Schema entry of t, then exactly the spool's backlog.
my ($entry_bytes, $schema_lines) = (0, 0);
open(my $fh, '<', $file2) or die "open $file2: $!";
while (my $line = <$fh>)
{
	if ($line =~ /^\{[^{]*"schema":/) { $schema_lines++; next; }
	$entry_bytes += length $line;
}
close $fh;
is($schema_lines, 1, 'the new file starts with the Schema entry of t');
is($entry_bytes, $s->{lag_bytes}, "the new file's entries are the spool's backlog, byte for byte");

my $res = check_exact($node, tables => \%tables, files => [ $file1, $file2 ],
	label => 'after the outage');
cmp_ok($res->{modifications}, '>=', 100 + $rounds * $rows * 2, 'every change is in the files');

$node->stop;
done_testing();

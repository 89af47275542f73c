# pgsink.spool_max_size: while the file sink cannot be written, the spool
# fills up to its cap (1 MB here, with 1 MB segments) and then decoding
# waits: pgsink.status says 'spool full', pgsink.spool.full is true, a
# WARNING says why, the spool stays near the cap (overshooting by at most
# a round) and the slot stops confirming, so the WAL is retained instead (as
# it was before the spool). Once the sink can be written again it delivers
# the spool, delivered segments are removed, decoding resumes by itself and
# the output is exact.
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
my $node = pgsink_node(
	'maxsize',
	extra_conf => q{
pgsink.spool_max_size = '1MB'
pgsink.spool_segment_size = '1MB'
});
$node->start;
my $file1 = sink_file($node);
my %tables = ('public.t' => ['id']);

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
});
$node->safe_psql('postgres', "SELECT pgsink.add_table('t', import => false)");

# Batches of ~100 kB of entries: 250 inserted rows, then 50 of them updated.
my $batch = 0;
sub commit_batch
{
	$batch++;
	my $base = $batch * 1000;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT g, 0, repeat(md5(g::text), 8) FROM generate_series($base, $base + 249) g;
UPDATE t SET n = n + 1 WHERE id BETWEEN $base AND $base + 49;
});
}

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub confirmed
{
	return sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgsink'");
}
sub current_lsn { return parse_lsn(sql('SELECT pg_current_wal_lsn()')); }

commit_batch() for 1 .. 3;
wait_delivered($node, 'postgres', 'before the outage');
my $one_batch = sql('SELECT durable_offset FROM pgsink.spool') / 3;
note(sprintf('one batch: %.0f kB of entries', $one_batch / 1024));

# ---------------------------------------------------------------------------
# The sink cannot be written: the spool fills up.
my $dir = $node->basedir . '/locked';
mkdir $dir or die;
chmod 0000, $dir or die;
my $file2 = "$dir/changes.jsonl";
my $log_offset = -s $node->logfile;
sql("ALTER SYSTEM SET pgsink.file_path = '$file2'; SELECT pg_reload_conf();");
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'file'", 'retrying', 30),
	"the sink is 'retrying'");

# Several MB, a batch at a time, while watching the spool's size.
my $max_bytes = 0;
my $became_full;
for my $i (1 .. 40)
{
	commit_batch();
	usleep(100_000);
	my ($bytes, $full) = split /\|/, sql('SELECT bytes, "full" FROM pgsink.spool');
	$max_bytes = $bytes if $bytes > $max_bytes;
	$became_full //= $i if $full eq 't';
}
ok(defined $became_full, "the spool became full (after batch $became_full of 40)");
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'spool full', 10),
	"pgsink.status says 'spool full'");
is(sql('SELECT "full", full_since IS NOT NULL, max_bytes FROM pgsink.spool'), "t|t|$MB",
	'pgsink.spool: full, since when, and the cap');
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/WARNING:.*pgsink: the spool reached pgsink\.spool_max_size \(1 MB\); decoding waits/,
	'the WARNING says the spool reached pgsink.spool_max_size');

# While full: nothing is decoded, the slot does not confirm, the WAL is retained.
my $confirmed = confirmed();
my $durable = sql('SELECT durable_offset FROM pgsink.spool');
my $retained = retained_wal($node);
my $lsn0 = current_lsn();
for my $i (1 .. 10)
{
	commit_batch();
	usleep(100_000);
	my $bytes = sql('SELECT bytes FROM pgsink.spool');
	$max_bytes = $bytes if $bytes > $max_bytes;
}
sql('CHECKPOINT');
sleep 1;
my $generated = current_lsn() - $lsn0;
my $retained2 = retained_wal($node);
note(sprintf("while full: %.1f MB of WAL generated; the slot retains %.1f MB -> %.1f MB; "
		  . "the spool held at most %.2f MB", $generated / $MB, $retained / $MB,
		$retained2 / $MB, $max_bytes / $MB));
is(confirmed(), $confirmed, "the slot's confirmed position stops advancing");
is(sql('SELECT durable_offset FROM pgsink.spool'), $durable, 'nothing more enters the spool');
cmp_ok($retained2 - $retained, '>=', $generated * 0.9, 'the WAL is retained instead');
cmp_ok($max_bytes, '>=', $MB, 'the spool reached its cap');
cmp_ok($max_bytes, '<=', $MB + 2 * $one_batch, 'the spool stays near its cap (overshoots a round at most)');
is(sql('SELECT state FROM pgsink.status'), 'spool full', "still 'spool full'");
is(sink_status($node)->{state}, 'retrying', 'the sink still retries');

# ---------------------------------------------------------------------------
# The sink can be written again: it catches up, decoding resumes.
$log_offset = -s $node->logfile;
chmod 0700, $dir or die;
ok(defined poll_until($node, 'postgres', 'SELECT state FROM pgsink.status', 'streaming', 30),
	"pgsink.status is back to 'streaming'");
wait_delivered($node, 'postgres', 'after the outage', 60);
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/LOG:.*pgsink: the spool is below pgsink\.spool_max_size again; decoding resumes/,
	'the log says decoding resumes');
is(sql('SELECT "full", full_since IS NULL FROM pgsink.spool'), 'f|t', 'pgsink.spool: no longer full');
cmp_ok(parse_lsn(confirmed()), '>=', $lsn0 + $generated, 'the slot confirms again');
cmp_ok(sql('SELECT bytes FROM pgsink.spool'), '<=', $MB + 2 * $one_batch,
	'delivered segments were removed');
commit_batch();    # and it goes on
wait_delivered($node, 'postgres', 'one more batch');
is(sink_status($node)->{state}, 'idle', 'the sink is idle (caught up)');
check_exact($node, tables => \%tables, files => [ $file1, $file2 ], label => 'after the outage');

$node->stop;
done_testing();

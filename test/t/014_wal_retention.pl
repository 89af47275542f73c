# pgsink's slot does not hold WAL it has no use for:
# (1) captured tables idle, an uncaptured table busy (many small
#     transactions, pg_switch_wal(), CHECKPOINT): the slot's
#     confirmed_flush_lsn and restart_lsn follow the WAL and
#     pgsink.status.lag_bytes stays small;
# (2) the whole database idle, only CHECKPOINTs and WAL switches: the WAL
#     the slot retains does not grow;
# (3) DROP EXTENSION pgsink drops the slot within a few seconds.
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

my $MB = 1024 * 1024;
my $seg = 16 * $MB;

my $node = pgsink_node('walretention');
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE captured (id int4 PRIMARY KEY, v text);
CREATE TABLE busy (id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
});
# No import: the table's only entry is the insert below, whenever the import would run.
$node->safe_psql('postgres', "SELECT pgsink.add_table('captured', import => false)");
$node->safe_psql('postgres', "INSERT INTO captured VALUES (1, 'only change')");
wait_delivered($node, 'postgres', 'setup');

sub lsn { return parse_lsn($node->safe_psql('postgres', $_[0])); }
sub current_lsn { return lsn('SELECT pg_current_wal_lsn()'); }

sub slot
{
	my $r = $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn, restart_lsn FROM pg_replication_slots "
		  . "WHERE slot_name = 'pgsink'");
	my ($c, $r2) = split /\|/, $r;
	return (parse_lsn($c), parse_lsn($r2));
}

# Poll until the slot's restart_lsn reaches $target; returns the seconds or undef.
sub restart_lsn_reaches
{
	my ($target, $seconds) = @_;
	my $start = time();
	while (time() - $start < $seconds)
	{
		my (undef, $restart) = slot();
		return time() - $start if $restart >= $target;
		# The running-xacts record a checkpoint writes is what lets it move.
		$node->safe_psql('postgres', 'CHECKPOINT');
		usleep(200_000);
	}
	return undef;
}

# ---------------------------------------------------------------------------
# (1) Busy uncaptured table, idle captured table.
my ($confirmed0, $restart0) = slot();
my $start_lsn = current_lsn();
my $max_lag = 0;
my $rounds = 4;
my $round_start;
for my $round (1 .. $rounds)
{
	$round_start = current_lsn();
	# Many small transactions and a few bigger ones (to pass a segment or
	# more per round), in the background while the lag is sampled.
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
			'-c', q{
DO $$
BEGIN
    FOR i IN 1..1500 LOOP
        INSERT INTO busy (v) VALUES (repeat('w', 100));
        COMMIT;
    END LOOP;
END
$$;},
			'-c', "INSERT INTO busy (v) SELECT repeat('b', 200) FROM generate_series(1, 40000)",
			'-c', 'DELETE FROM busy WHERE id % 2 = 0'
		],
		'>', \$out, '2>', \$err);
	my $samples = 0;
	while ($h->pumpable)
	{
		my ($lag, $e) = ('', '');
		$node->psql('postgres', 'SELECT lag_bytes FROM pgsink.status',
			stdout => \$lag, stderr => \$e);
		$samples++;
		$max_lag = $lag if $lag ne '' && $lag > $max_lag;
		usleep(50_000);
		$h->pump_nb;
	}
	ok($h->finish, "round $round: busy workload ran ($samples lag samples)") or diag($err);
	$node->safe_psql('postgres', 'SELECT pg_switch_wal()');
	$node->safe_psql('postgres', 'CHECKPOINT');
	# The idle stream catches up with the WAL quickly.
	ok(defined poll_until($node, 'postgres',
			"SELECT lag_bytes < 65536 FROM pgsink.status", 't', 30),
		"round $round: lag_bytes back under 64 kB");
}
my $generated = current_lsn() - $start_lsn;
note(sprintf("busy workload generated %.1f MB of WAL; largest lag seen %d bytes",
		$generated / $MB, $max_lag));
cmp_ok($generated, '>', 3 * $seg, 'the workload generated several segments of WAL');
cmp_ok($max_lag, '<', 32 * $MB, 'lag_bytes stays small while the busy table is written');

my ($confirmed1, $restart1) = slot();
cmp_ok($confirmed1, '>=', $round_start, 'confirmed_flush_lsn follows the WAL');
ok(defined restart_lsn_reaches($round_start, 30),
	'restart_lsn follows the WAL (reaches the start of the last round)');
(undef, $restart1) = slot();
note(sprintf("confirmed_flush %s -> %s, restart_lsn %s -> %s, current %s",
		format_lsn($confirmed0), format_lsn($confirmed1), format_lsn($restart0),
		format_lsn($restart1), format_lsn(current_lsn())));
my $retained = $node->safe_psql('postgres', 'SELECT retained_wal_bytes FROM pgsink.status');
cmp_ok($retained, '<', 2 * $seg, "retained WAL is small after the busy phase ($retained bytes)");

# The captured table's only change is still the one delivered: nothing else
# was written for the uncaptured table.
my $res = check_changelog(files => [ sink_file($node) ], keys => { 'public.captured' => ['id'] });
is($res->{modifications}, 1, 'the busy uncaptured table produced no changelog entries');

# ---------------------------------------------------------------------------
# (2) The whole database idle: only CHECKPOINTs and WAL switches.
my @retained;
my $idle_start = current_lsn();
for my $cycle (1 .. 8)
{
	$node->safe_psql('postgres', 'CHECKPOINT');
	$node->safe_psql('postgres', 'SELECT pg_switch_wal()');
	$node->safe_psql('postgres', 'CHECKPOINT');
	usleep(300_000);
	push @retained,
	  $node->safe_psql('postgres',
		'SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots '
		  . "WHERE slot_name = 'pgsink'");
}
my $idle_generated = current_lsn() - $idle_start;
note(sprintf("idle phase: %.1f MB of WAL positions passed; retained per cycle (MB): %s",
		$idle_generated / $MB, join(' ', map { sprintf('%.1f', $_ / $MB) } @retained)));
cmp_ok($idle_generated, '>', 4 * $seg, 'the idle phase switched through several segments');
my $max_retained = (sort { $b <=> $a } @retained)[0];
cmp_ok($max_retained, '<', 3 * $seg, 'retained WAL stays bounded while the database is idle');
cmp_ok($retained[-1], '<=', $retained[0] + $seg, 'retained WAL does not grow over the cycles');
my $walfiles = $node->safe_psql('postgres', 'SELECT count(*) FROM pg_ls_waldir()');
note("WAL files in pg_wal: $walfiles");
cmp_ok($walfiles, '<', 64, 'pg_wal does not fill up with retained segments');
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'),
	'streaming', 'worker streaming');

# ---------------------------------------------------------------------------
# (3) DROP EXTENSION drops the slot.
my $log_offset = -s $node->logfile;
my $t0 = time();
$node->safe_psql('postgres', 'DROP EXTENSION pgsink');
my $took = poll_until($node, 'postgres', 'SELECT count(*) FROM pg_replication_slots', '0', 15);
ok(defined $took, 'DROP EXTENSION pgsink drops the slot within a few seconds');
note(sprintf('slot gone %.1fs after DROP EXTENSION', time() - $t0));
$node->wait_for_log(qr/pgsink: dropped replication slot "pgsink": extension pgsink was dropped/,
	$log_offset);
ok(1, 'the drop is logged');

# And CREATE EXTENSION again starts over with a new slot.
$node->safe_psql('postgres', 'CREATE EXTENSION pgsink');
# No import: the table's only entry is the insert below, whenever the import would run.
$node->safe_psql('postgres', "SELECT pgsink.add_table('captured', import => false)");
$node->safe_psql('postgres', "INSERT INTO captured VALUES (2, 'after re-create')");
wait_delivered($node, 'postgres', 'after CREATE EXTENSION again');
my $file = slurp_file(sink_file($node));
like($file, qr/"after":\{"id":2,"v":"after re-create"\}/, 'changes flow again');

$node->stop;
done_testing();

# A crash between parking a dead letter and saving the cursor. The receiver
# (webhook_receiver.py, mode reject_hang) refuses (400) every batch holding
# an entry with "poison" and, once the poison entry was refused alone, never
# answers a batch without one. A transaction whose first entry holds
# "poison" is committed: the webhook sink bisects its batch, parks the
# poison entry in pgsink.dead_letters (a transaction of its own) and sends
# the rest, which hangs; its cursor is not saved. kill -9 of the postmaster then. After the restart the batch
# is sent again from the cursor (the receiver now answers the halves
# without poison): the refused entry is parked again, and stays ONE row of
# pgsink.dead_letters with its attempts counted (2); nothing is lost or
# doubled: the receiver's entries plus the parked ones are exactly the file
# sink's entries, and replay to the source table.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkWebhook;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $secret = 'whsec_' . 'ZGVhZC1sZXR0ZXItY3Jhc2gtdGVzdC1zZWNyZXQtMDE=';
my $node = pgsink_node(
	'dead_letter_crash',
	extra_conf => qq{
pgsink.sink = 'file, webhook'
pgsink.webhook_url = 'http://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
# The hanging request must still be in flight when the server is killed.
pgsink.http_timeout = '120s'
});
my $dir = $node->basedir;
my $store = "$dir/received.jsonl";
my $file = sink_file($node);
my %tables = ('public.t' => ['id']);
my $json = JSON::PP->new;

my $receiver;
sub mode { receiver_mode($receiver // { control => "$dir/control.json" }, $_[0]); }
sub stats { return receiver_stats($receiver); }
sub sql { return $node->safe_psql('postgres', $_[0]); }

mode('{"mode": "ok"}');
$receiver = receiver_start($dir, $port, $secret);

$node->start;
sql(q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
});
sql(q{INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g});
wait_delivered($node, 'postgres', 'setup');

# ---------------------------------------------------------------------------
# Park, then hang on the rest of the batch.
mode('{"mode": "reject_hang", "pattern": "poison", "seconds": 300}');
my $cursor0 = sink_status($node, 'webhook')->{cursor};
my $accepted0 = stats()->{accepted};
# One transaction, one batch: its first entry holds poison, then 39 clean
# entries (bisection sends the leftmost half first: the poison entry is
# isolated and parked before any request without it is made; a sender that
# went right first would have the clean halves stored, then hang).
sql(q{INSERT INTO t SELECT g, CASE WHEN g = 1001 THEN 'poison' ELSE 'row ' || g END
  FROM generate_series(1001, 1040) g ORDER BY g});
ok(defined poll_until($node, 'postgres',
		"SELECT count(*), min(attempts), bool_and(entry LIKE '%poison%') FROM pgsink.dead_letters",
		'1|1|t', 30),
	'the poison entry is parked (one row, attempts 1)');
my $t0 = time();
usleep(100_000) while (stats()->{hung} // 0) == 0 && time() - $t0 < 30;
cmp_ok(stats()->{hung}, '>', 0, 'then the request carrying the rest of the batch hangs');
sleep 1;    # it stays in flight
my $s = sink_status($node, 'webhook');
is($s->{cursor}, $cursor0, "the webhook sink's cursor is not saved past the batch");
note('the receiver stored ' . (stats()->{accepted} - $accepted0) . ' entries of the batch');
cmp_ok($s->{lag_entries}, '>=', 40, 'the whole batch is still owed');

# ---------------------------------------------------------------------------
# kill -9 while the request hangs; the receiver will answer the clean halves.
my $log_offset = -s $node->logfile;
crash_node($node);
mode('{"mode": "reject", "pattern": "poison"}');
start_after_crash($node);
wait_delivered($node, 'postgres', 'after kill -9');

is(sql(q{SELECT count(*), min(attempts), max(attempts), bool_and(entry LIKE '%poison%'),
    min(http_status) FROM pgsink.dead_letters}),
	'1|2|2|t|400',
	'the entry refused before and after the crash is parked ONCE, with attempts 2');
my $log = slurp_file($node->logfile, $log_offset);
my $warnings = () = $log =~ /refused an entry for good \(HTTP 400\)/g;
is($warnings, 1, 'after the restart it was refused (and parked) again');
is(sink_status($node, 'webhook')->{state}, 'idle', 'the webhook sink went on');
is(stats()->{bad_signatures}, 0, 'every request was signed');

# Receiver's entries + parked entries = the file sink's entries, each once.
sub key_of
{
	my ($e) = @_;
	return exists $e->{schema} ? "schema $e->{lsn} $e->{schema}{namespace}" : "$e->{lsn} $e->{sequence}";
}
sub lines_of_file
{
	my ($path) = @_;
	open(my $fh, '<', $path) or die "open $path: $!";
	my @l = grep { length } map { chomp; $_ } <$fh>;
	close $fh;
	return @l;
}
my @got = lines_of_file($store);
my @dead = split /\n/, sql(q{SELECT string_agg(entry, E'\n' ORDER BY id) FROM pgsink.dead_letters});
my @want = lines_of_file($file);
my %got = map { key_of($json->decode($_)) => 1 } @got;
my %dead = map { key_of($json->decode($_)) => 1 } @dead;
is(scalar(grep { $dead{$_} } keys %got), 0, 'no parked entry was delivered');
is_deeply([ sort(keys %got, keys %dead) ], [ sort map { key_of($json->decode($_)) } @want ],
	"the receiver's and the parked entries together are every entry, once");

# And they replay to the table: merged in (lsn, sequence) order, a Schema
# entry before the changes at its lsn.
my @merged = map { $_->[3] } sort {
	$a->[0] <=> $b->[0] || $a->[1] <=> $b->[1] || $a->[2] <=> $b->[2]
} map {
	my $e = $json->decode($_);
	[ parse_lsn($e->{lsn}), exists $e->{schema} ? 0 : 1, $e->{sequence} // 0, $_ ]
} @got, @dead;
my $merged = "$dir/merged.jsonl";
open(my $mf, '>', $merged) or die;
print $mf "$_\n" for @merged;
close $mf;
check_exact($node, tables => \%tables, files => [$merged],
	label => "receiver's entries + dead letters");

receiver_stop($receiver);
$node->stop;
done_testing();

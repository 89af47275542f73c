# Entries a receiver refuses for good go to pgsink.dead_letters, and only
# those (pgsink.on_rejection = 'dead_letter', the default): the webhook sink
# bisects a refused batch, delivers the halves that pass and parks the
# entries refused; pgsink.retry_dead_letters() sends them again once the
# receiver is fixed. A batch refused as too large (413) is split until it
# passes. The receiver (webhook_receiver.py) refuses any batch holding an
# entry with "poison", or larger than a size.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkWebhook;
use Test::More;
use Time::HiRes qw(usleep);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $secret = 'whsec_' . 'ZGVhZC1sZXR0ZXJzLXRlc3Qtc2VjcmV0LWtleS0wMDAx';
my $node = pgsink_node(
	'dead_letters',
	extra_conf => qq{
pgsink.sink = 'file, webhook'
pgsink.webhook_url = 'http://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
});
my $dir = $node->basedir;
my $store = "$dir/received.jsonl";
my $file = sink_file($node);

my $receiver;
sub mode { receiver_mode($receiver // { control => "$dir/control.json" }, $_[0]); }
mode('{"mode": "reject", "pattern": "poison"}');
$receiver = receiver_start($dir, $port, $secret);
sub stats { return receiver_stats($receiver); }
my $json = JSON::PP->new;

# An entry's identity: (lsn, sequence), or a Schema entry's lsn and table.
sub key_of
{
	my ($e) = @_;
	return exists $e->{schema} ? "schema $e->{lsn} $e->{schema}{namespace}" : "$e->{lsn} $e->{sequence}";
}
sub keys_of_file
{
	my ($path) = @_;
	my %k;
	open(my $fh, '<', $path) or return \%k;
	while (my $l = <$fh>) { chomp $l; next unless length $l; $k{ key_of($json->decode($l)) } = $l; }
	close $fh;
	return \%k;
}
sub sql { return $node->safe_psql('postgres', $_[0]); }

$node->start;
sql(q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
});
sql(q{
INSERT INTO t SELECT g, CASE WHEN g IN (17, 230) THEN 'poison' ELSE 'row ' || g END
  FROM generate_series(1, 300) g;
UPDATE t SET v = 'poison too' WHERE id = 100;
UPDATE t SET v = v || '!' WHERE id % 10 = 0 AND id <> 100;  -- 230 holds poison again
});
wait_delivered($node, 'postgres', 'refused entries parked');

my $parked = sql(q{SELECT count(*), count(DISTINCT http_status), min(http_status),
    bool_and(entry LIKE '%poison%'), bool_and("table" = 'public.t'), bool_and(lsn IS NOT NULL)
  FROM pgsink.dead_letters WHERE sink = 'webhook'});
is($parked, '4|1|400|t|t|t',
	'exactly the four entries holding "poison" (17, 230 and 100, and 230 again) are parked, '
	  . 'with the status, table and lsn');
like(sql(q{SELECT response FROM pgsink.dead_letters LIMIT 1}), qr/refused 1 entries/,
	"the receiver's answer is kept");
is(sql(q{SELECT sink, "table", entries FROM pgsink.dead_letter_counts}), 'webhook|public.t|4',
	'pgsink.dead_letter_counts counts them');
is(sink_status($node, 'webhook')->{state}, 'idle', 'the webhook sink went on');
is(sql(q{SELECT dead_letters FROM pgsink.sinks WHERE sink = 'webhook'}), 4,
	'pgsink.sinks counts them');
cmp_ok(stats()->{rejected_batches}, '>', 4, 'batches were refused (and bisected)');

my $file_keys = keys_of_file($file);
my $got = keys_of_file($store);
my %dead = map { key_of($json->decode($_)) => 1 }
  split /\n/, sql(q{SELECT string_agg(entry, E'\n') FROM pgsink.dead_letters});
is(scalar(grep { $dead{$_} } keys %$got), 0, 'no parked entry was delivered');
is_deeply([ sort(keys %$got, keys %dead) ], [ sort keys %$file_keys ],
	'delivered and parked entries together are every entry, once');

# Asked again while the receiver still refuses them: they stay, attempts count.
is(sql('SELECT pgsink.retry_dead_letters()'), 4, 'retry_dead_letters() asks for all four');
ok(defined poll_until($node, 'postgres',
		'SELECT count(*) FILTER (WHERE retry_requested), min(attempts) FROM pgsink.dead_letters',
		'0|2', 30),
	'refused again: still parked, with a second attempt');

# The receiver fixed: one by id, then the rest.
mode('{"mode": "ok"}');
my $first = sql('SELECT min(id) FROM pgsink.dead_letters');
is(sql("SELECT pgsink.retry_dead_letters(ARRAY[$first])"), 1, 'retry of one id');
ok(defined poll_until($node, 'postgres', 'SELECT count(*) FROM pgsink.dead_letters', '3', 30),
	'the entry accepted leaves the table');
is(sql('SELECT pgsink.retry_dead_letters()'), 3, 'retry of the rest');
ok(defined poll_until($node, 'postgres', 'SELECT count(*) FROM pgsink.dead_letters', '0', 30),
	'every parked entry delivered');
is_deeply([ sort keys %{ keys_of_file($store) } ], [ sort keys %$file_keys ],
	'the receiver now holds every entry');

# 413: batches split until they pass; nothing parked.
mode('{"mode": "max_bytes", "bytes": 3000}');
sql(q{INSERT INTO t SELECT g, repeat('y', 200) FROM generate_series(1000, 1100) g});
wait_delivered($node, 'postgres', '413');
cmp_ok(stats()->{too_large} // 0, '>', 0, '413: the receiver refused large batches');
is(sql('SELECT count(*) FROM pgsink.dead_letters'), 0, '413: nothing parked');
is_deeply([ sort keys %{ keys_of_file($store) } ], [ sort keys %{ keys_of_file($file) } ],
	'413: the receiver holds every entry');

# An idle sink that owes the Schema entries (rewound past the end: nothing
# to read, so no batch of the spool carries them) still sends parked entries
# when asked, at once, and after the Schema entries (a new receiver would
# not know the table). They waited for a batch of the spool, for ever.
mode('{"mode": "reject", "pattern": "poison"}');
sql(q{INSERT INTO t VALUES (5000, 'poison, parked while idle')});
wait_delivered($node, 'postgres', 'idle: a parked entry');
is(sql('SELECT count(*) FROM pgsink.dead_letters'), 1, 'idle: the entry is parked');
sql(q{SELECT pgsink.rewind_sink('webhook', now() + interval '1 day')});
mode('{"mode": "ok"}');
is(sql('SELECT pgsink.retry_dead_letters()'), 1, 'idle: retry asked');
ok(defined poll_until($node, 'postgres', 'SELECT count(*) FROM pgsink.dead_letters', '0', 15),
	'idle: the parked entry is delivered while nothing else is');
my @tail = map { $json->decode($_) } (split /\n/, slurp_file($store))[-2, -1];
ok(exists $tail[0]{schema} && $tail[0]{schema}{namespace} eq 'public.t',
	'idle: the Schema entry of its table came first');
is($tail[1]{after}{v}, 'poison, parked while idle', 'idle: then the entry');

# Privileges: row values stay with superusers.
sql(q{CREATE ROLE keeper LOGIN; GRANT pgsink_admin TO keeper;});
my ($out, $err) = ('', '');
$node->psql('postgres', 'SELECT count(*) FROM pgsink.dead_letters',
	stdout => \$out, stderr => \$err, extra_params => [ '-U', 'keeper' ]);
like($err, qr/permission denied/, 'pgsink_admin cannot read the parked entries');
($out, $err) = ('', '');
$node->psql('postgres', 'SELECT count(*) FROM pgsink.dead_letter_counts; SELECT pgsink.retry_dead_letters()',
	stdout => \$out, stderr => \$err, extra_params => [ '-U', 'keeper' ]);
is($err, '', 'but it sees the counts and can ask for a retry');

receiver_stop($receiver);
$node->stop;
done_testing();

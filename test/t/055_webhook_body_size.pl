# The size of a webhook request is bounded by pgsink.batch_bytes: with
# pgsink.batch_bytes = 64kB (its minimum) and a backlog of a few MB over
# five tables of wide rows, the receiver (webhook_receiver.py, which
# records every request's JSON body size and the bytes of the Schema
# entries in it, as sent) gets many requests, and every body is at most
# batch_bytes, plus the Schema entries announced in it, plus the envelope
# {"data":[...]} (11 bytes). The Schema entries are announced to a new
# receiver (a changed pgsink.webhook_url) in front of a batch. The only
# exception pgsink documents, a single entry longer than batch_bytes, is sent
# whole: a body holding one may be as long as that entry (plus the same
# Schema entries and envelope), no longer. Everything arrives, exactly.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkWebhook;
use Test::More;

my $batch = 64 * 1024;
my $envelope = length('{"data":[]}');
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $secret = 'whsec_' . 'Ym9keS1zaXplLXRlc3Qtc2VjcmV0LWtleS1wZ3Npbmsx';
my $node = pgsink_node(
	'webhook_body_size',
	extra_conf => qq{
pgsink.sink = 'webhook'
pgsink.webhook_url = 'http://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
pgsink.batch_bytes = '64kB'
});
my $dir = $node->basedir;
my $store = "$dir/received.jsonl";
my $receiver;
sub mode { receiver_mode($receiver // { control => "$dir/control.json" }, $_[0]); }
sub sql { return $node->safe_psql('postgres', $_[0]); }

mode('{"mode": "ok"}');
$receiver = receiver_start($dir, $port, $secret);
$node->start;

# Five tables of 40 columns each: Schema entries of a few kB each.
my %tables;
my $ddl = "CREATE EXTENSION pgsink;\n";
for my $i (1 .. 5)
{
	my $cols = join(', ', map { "column_with_a_long_name_$_ text" } 1 .. 40);
	$ddl .= "CREATE TABLE t$i (id int8 PRIMARY KEY, $cols);\n"
	  . "SELECT pgsink.add_table('t$i', import => false);\n";
	$tables{"public.t$i"} = ['id'];
}
sql($ddl);

# Rows of ~1.5 kB of JSON in every table (~4 MB a load of 500 rows a table),
# a few updates and deletes.
sub load
{
	my ($from, $to) = @_;
	for my $i (1 .. 5)
	{
		my $vals = join(', ', map { "md5((g * $_)::text)" } 1 .. 10);
		sql(qq{
INSERT INTO t$i (id, column_with_a_long_name_1, column_with_a_long_name_2,
    column_with_a_long_name_3, column_with_a_long_name_4, column_with_a_long_name_5,
    column_with_a_long_name_6, column_with_a_long_name_7, column_with_a_long_name_8,
    column_with_a_long_name_9, column_with_a_long_name_10)
  SELECT g, $vals FROM generate_series($from, $to) g;
UPDATE t$i SET column_with_a_long_name_40 = 'updated' WHERE id BETWEEN $from AND $to AND id % 7 = 0;
DELETE FROM t$i WHERE id BETWEEN $from AND $to AND id % 11 = 0;
});
	}
}
load(1, 500);
wait_delivered($node, 'postgres', 'first load');

# A new receiver (another URL) is told the Schema entries in effect first:
# build a backlog while it answers 503, so they go in front of a full batch.
mode('{"mode": "503", "retry_after": "1"}');
sql("ALTER SYSTEM SET pgsink.webhook_url = 'http://127.0.0.1:$port/other'; SELECT pg_reload_conf()");
load(1001, 1500);
# One entry longer than batch_bytes (sent whole), with more after it.
sql(q{INSERT INTO t1 (id, column_with_a_long_name_1) VALUES (0, repeat('z', 100000))});
load(2001, 2200);
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'the new receiver answers 503: the sink retries');
mode('{"mode": "ok"}');
wait_delivered($node, 'postgres', 'second load');

# Every request made (those answered 503 too).
my @req = @{ receiver_requests($receiver) };
my $total = 0;
$total += $_->{bytes} for grep { $_->{status} == 200 } @req;
note(sprintf('%d requests, %.1f MB accepted', scalar(@req), $total / 1024 / 1024));
cmp_ok(scalar(grep { $_->{status} == 200 } @req), '>', 100, 'many requests were made');

# The bound, per request: batch_bytes, or a longer single entry (sent
# whole), plus the Schema entries announced in front, plus the envelope.
my (@over, @long);
my ($announced, $max_plain) = (0, 0);
for my $r (@req)
{
	my $rest = $r->{bytes} - $r->{schema_bytes};
	$announced++ if $r->{schemas} > 0;
	push @long, $r if $r->{max_entry} > $batch;
	my $limit = ($r->{max_entry} > $batch ? $r->{max_entry} : $batch) + $envelope;
	push @over, $r if $rest > $limit;
	$max_plain = $rest if $r->{max_entry} <= $batch && $rest > $max_plain;
}
is(scalar(@over), 0,
	'every body is at most max(batch_bytes, its longest entry) + the Schema entries announced in '
	  . 'it + the envelope')
  or diag(join("\n", map { "a body of $_->{bytes} bytes: $_->{entries} entries, $_->{schemas} of them "
			  . "Schema entries ($_->{schema_bytes} bytes), the longest other $_->{max_entry} bytes" }
		  @over[ 0 .. ($#over < 9 ? $#over : 9) ]));
is(scalar(grep { $_->{status} == 200 } @long), 1,
	'the entry longer than batch_bytes was sent whole, in one request');
cmp_ok($announced, '>=', 1, 'Schema entries were announced to the new receiver');
cmp_ok($max_plain, '>', $batch / 2, 'batches are filled up to the bound');
my $max = (sort { $b <=> $a } map { $_->{bytes} } @req)[0];
note("largest body: $max bytes; largest without Schema entries and the long entry: $max_plain");
is(receiver_stats($receiver)->{bad_signatures}, 0, 'every request was signed');

check_exact($node, tables => \%tables, files => [$store], label => 'body size');

receiver_stop($receiver);
$node->stop;
done_testing();

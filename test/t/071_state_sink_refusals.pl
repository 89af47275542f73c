# The Elasticsearch and BigQuery sinks against their strict fakes
# (PgsinkElasticsearch.pm, PgsinkBigQuery.pm), lean: what they cannot apply
# is parked, saying why, and delivery goes on:
# (1) a delete without its old key (REPLICA IDENTITY NOTHING), which was
#     skipped silently (the row stayed in the sink for good);
# (2) a spool line damaged on disk, which failed its batch at every attempt
#     and held the cursor: the batch is refused (EntryError), bisected, and
#     the damaged line alone is parked;
# (3) Elasticsearch: a parked change retried after a later change of its row
#     in the same transaction was delivered leaves the later one in place
#     (both carry the transaction's LSN as their version, which external_gte
#     took: the document went back to the older change);
# (4) BigQuery: a Schema entry that is JSON but not one it can read (a
#     namespace without its dot) is parked, saying why, instead of failing
#     its batch at every attempt;
# (5) BigQuery: an import row whose "after" is damaged (read only when the
#     row is encoded) is parked alone, not retried for ever.
# (The ClickHouse sink: 061, 062.)
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkBigQuery;
use PgsinkElasticsearch;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(usleep);

my $key = 'dGVzdDpzZWNyZXQta2V5LTEyMw==';
my $es = es_start(PostgreSQL::Test::Utils::tempdir() . '/es', '--api-key', $key);
my $node = pgsink_node('state_refusals', extra_conf => qq{
pgsink.sink = 'elasticsearch, bigquery'
pgsink.retry_max_interval = '1s'
pgsink.http_timeout = '20s'
pgsink.elasticsearch_url = '$es->{url}'
pgsink.elasticsearch_api_key = '$key'
});
my $bq = bq_start($node->basedir . '/bigquery');
$node->append_conf('postgresql.conf', qq{
pgsink.bigquery_credentials = '$bq->{key_file}'
pgsink.bigquery_endpoint = '$bq->{url}'
pgsink.bigquery_project = '$bq->{project}'
pgsink.bigquery_dataset = 'replica'
pgsink.bigquery_location = 'EU'
});
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }
# The ids each sink shows as current.
my %live = (
	elasticsearch => sub {
		join(',', sort { $a <=> $b } keys %{ es_dump($es, 'pgsink-public.t') });
	},
	bigquery => sub {
		join(',', sort { $a <=> $b } map { $_->{id} } @{ bq_current($bq, 'replica', 'public_t')->{rows} });
	});
my @sinks = sort keys %live;

sql(q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');
});
wait_delivered($node, 'postgres', 'rows in place');
is($live{$_}->(), '1,2,3', "$_: the rows are there") for @sinks;

# (1)
sql(q{ALTER TABLE t REPLICA IDENTITY NOTHING});
sql(q{DELETE FROM t WHERE id = 1});
wait_delivered($node, 'postgres', '(1) a delete without its key');
for my $s (@sinks)
{
	is(sql(qq{SELECT count(*) FROM pgsink.dead_letters WHERE sink = '$s' }
			  . q{AND response LIKE '%delete without the old key%'}),
		1, "(1) $s: the delete is parked, saying why");
}
sql(q{ALTER TABLE t REPLICA IDENTITY DEFAULT});

# (2)
sql("SELECT pgsink.pause('$_')") for @sinks;
sql(q{INSERT INTO t VALUES (10, 'damaged-line-marker')});
sql(q{INSERT INTO t VALUES (11, 'after the damage')});
my $spool = $node->data_dir . '/pgsink_spool';
# The segment and offset of the line holding $marker, once $after is in the spool too.
sub find_line
{
	my ($marker, $after) = @_;
	for (my $t = 0; $t < 300; $t++)
	{
		for my $f (glob("$spool/*.jsonl"))
		{
			my $text = slurp_file($f);
			next unless $text =~ /\Q$after\E/;
			my $i = index($text, $marker);
			return ($f, rindex($text, "\n", $i) + 1);
		}
		usleep(100_000);
	}
	return;
}
# The line at $at of $segment, made unreadable: its first byte changed.
sub damage
{
	my ($segment, $at, $label) = @_;
	open(my $fh, '+<', $segment) or die $!;
	sysseek($fh, $at, 0);
	sysread($fh, my $first, 1);
	is($first, '{', "$label the line starts where it was found");
	sysseek($fh, $at, 0);
	syswrite($fh, '[');
	close $fh;
}
my ($segment, $at) = find_line('damaged-line-marker', 'after the damage');
ok(defined $at, '(2) the line is in the spool');
sleep 1;    # made durable (the index's round end) after it is written
damage($segment, $at, '(2)');
sql("SELECT pgsink.resume('$_')") for @sinks;
wait_delivered($node, 'postgres', '(2) a damaged line', 30);
for my $s (@sinks)
{
	is(sql(qq{SELECT count(*) FROM pgsink.dead_letters WHERE sink = '$s' }
			  . q{AND entry LIKE '%damaged-line-marker%' AND response LIKE '%cannot read%'}),
		1, "(2) $s: the damaged line is parked, saying why");
	is($live{$s}->(), '1,2,3,11', "(2) $s: the entry after it is delivered");
	unlike(sql(qq{SELECT coalesce(last_error, '') FROM pgsink.sinks WHERE sink = '$s'}),
		qr/damaged-line-marker/, "(2) $s: pgsink.sinks does not quote the line");
}

# (3)
sql("SELECT pgsink.pause('$_')") for @sinks;
sql(q{BEGIN;
UPDATE t SET v = 'older-change-marker' WHERE id = 2;
UPDATE t SET v = 'newer change' WHERE id = 2;
COMMIT;
INSERT INTO t VALUES (12, 'after the transaction')});
($segment, $at) = find_line('older-change-marker', 'after the transaction');
ok(defined $at, '(3) the line is in the spool');
sleep 1;
damage($segment, $at, '(3)');
sql("SELECT pgsink.resume('$_')") for @sinks;
wait_delivered($node, 'postgres', '(3) a transaction with a damaged change', 30);
is(es_dump($es, 'pgsink-public.t')->{2}{v}, 'newer change', '(3) the later change is in place');
is(sql(q[UPDATE pgsink.dead_letters SET entry = '{' || substr(entry, 2)
		 WHERE sink = 'elasticsearch' AND entry LIKE '%older-change-marker%' RETURNING 1]),
	'1', '(3) the parked change mended');
is(sql(q{SELECT pgsink.retry_dead_letters(array(SELECT id FROM pgsink.dead_letters
		 WHERE sink = 'elasticsearch' AND entry LIKE '%older-change-marker%'))}),
	'1', '(3) and sent again');
ok(defined poll_until($node, 'postgres', q{SELECT count(*) FROM pgsink.dead_letters
		 WHERE sink = 'elasticsearch' AND entry LIKE '%older-change-marker%'}, '0', 30),
	'(3) it was taken');
is(es_dump($es, 'pgsink-public.t')->{2}{v}, 'newer change',
	'(3) the older change did not overwrite the later one');

# (4)
sql("SELECT pgsink.pause('$_')") for @sinks;
sql(q{ALTER TABLE t ADD COLUMN w int});
sql(q{INSERT INTO t VALUES (13, 'after the schema', 1)});
($segment, $at) = find_line('"name":"w"', 'after the schema');
ok(defined $at, '(4) the Schema entry is in the spool');
sleep 1;
{
	open(my $fh, '+<', $segment) or die $!;
	sysseek($fh, $at, 0);
	sysread($fh, my $line, 4096);
	my $i = index($line, '"namespace":"public.t"');
	ok($i > 0, '(4) its namespace found');
	sysseek($fh, $at + $i + length('"namespace":"public'), 0);
	syswrite($fh, 'X');    # public.t -> publicXt: no schema and table any more
	close $fh;
}
sql("SELECT pgsink.resume('$_')") for @sinks;
ok(defined poll_until($node, 'postgres', q{SELECT count(*) FROM pgsink.dead_letters
		 WHERE sink = 'bigquery' AND response LIKE '%Schema entry the sink cannot read%'}, '1', 30),
	'(4) bigquery: the Schema entry is parked, saying why');
ok(defined poll_until($node, 'postgres', q{SELECT state <> 'retrying' AND cursor_offset = (SELECT durable_offset FROM pgsink.spool)
		 FROM pgsink.sinks WHERE sink = 'bigquery'}, 't', 30),
	'(4) bigquery: delivery goes on past it');

# (5)
sql("SELECT pgsink.pause('$_')") for @sinks;
sql(q{CREATE TABLE imp (id int PRIMARY KEY, v text);
INSERT INTO imp SELECT g, 'row ' || g FROM generate_series(1, 20) g;
INSERT INTO imp VALUES (21, 'import-damage-marker');
SELECT pgsink.add_table('imp');});
ok(defined poll_until($node, 'postgres',
		q{SELECT count(*) FROM pgsink.imports WHERE "table" = 'public.imp'::regclass AND state = 'complete'},
		'1', 30), '(5) the import is in the spool');
($segment, $at) = find_line('import-damage-marker', 'import-damage-marker');
{
	open(my $fh, '+<', $segment) or die $!;
	sysseek($fh, $at, 0);
	sysread($fh, my $line, 4096);
	my $i = index($line, '"v":"import-damage-marker"');
	ok($i > 0, '(5) its row found');
	sysseek($fh, $at + $i, 0);
	syswrite($fh, 'x');    # "v": a member name that is not a string
	close $fh;
}
sql("SELECT pgsink.resume('$_')") for @sinks;
ok(defined poll_until($node, 'postgres', q{SELECT count(*) FROM pgsink.dead_letters
		 WHERE sink = 'bigquery' AND entry LIKE '%import-damage-marker%' AND response LIKE '%cannot read%'},
		'1', 30), '(5) bigquery: the damaged import row is parked, saying why');
ok(defined poll_until($node, 'postgres', q{SELECT state <> 'retrying' AND cursor_offset = (SELECT durable_offset FROM pgsink.spool)
		 FROM pgsink.sinks WHERE sink = 'bigquery'}, 't', 30),
	'(5) bigquery: delivery goes on past it');

$node->stop;
es_stop($es);
bq_stop($bq);
done_testing();

# The Elasticsearch and BigQuery sinks against their strict fakes
# (PgsinkElasticsearch.pm, PgsinkBigQuery.pm), lean: what they cannot apply
# is parked, saying why, and delivery goes on:
# (1) a delete without its old key (REPLICA IDENTITY NOTHING), which was
#     skipped silently (the row stayed in the sink for good);
# (2) a spool line damaged on disk, which failed its batch at every attempt
#     and held the cursor: the batch is refused (EntryError), bisected, and
#     the damaged line alone is parked.
# (The ClickHouse sink: 061.)
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
my ($segment, $at);
for (my $t = 0; $t < 300 && !defined $at; $t++)
{
	for my $f (glob("$spool/*.jsonl"))
	{
		my $text = slurp_file($f);
		next unless $text =~ /after the damage/;
		my $i = index($text, 'damaged-line-marker');
		($segment, $at) = ($f, rindex($text, "\n", $i) + 1);
	}
	usleep(100_000) unless defined $at;
}
ok(defined $at, '(2) the line is in the spool');
sleep 1;    # made durable (the index's round end) after it is written
open(my $fh, '+<', $segment) or die $!;
sysseek($fh, $at, 0);
sysread($fh, my $first, 1);
is($first, '{', '(2) the line starts where it was found');
sysseek($fh, $at, 0);
syswrite($fh, '[');
close $fh;
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

$node->stop;
es_stop($es);
bq_stop($bq);
done_testing();

# The Elasticsearch sink against the strict fake (elasticsearch_fake.py,
# PgsinkElasticsearch.pm), which refuses what Elasticsearch refuses:
# (0) the fake itself: malformed NDJSON, unknown actions and parameters,
#     internal versions, long _ids, wrong types and dates, no credentials;
# (1) inserts, updates, deletes, key changes of a table of many types and of
#     a table with a composite key (one key longer than _id's 512 bytes):
#     every index equals its source table, document by _id, and the alias
#     <index>-live hides the tombstones;
# (2) updates that leave a TOASTed column unchanged keep its value, whether
#     the row was written in the same batch or long before (_mget), also
#     when the key changes;
# (3) TRUNCATE between writes in one transaction removes what came before;
# (4) a rewind of the sink to the start, after the fake's clock passed
#     index.gc_deletes: the replay brings back no deleted and no truncated
#     row (tombstones, the truncate position), and nothing changes;
# (5) per-item 429s, 503s, an answer lost after the bulk was applied, answers
#     slower than pgsink.http_timeout, a proxy's page instead of JSON, 413s
#     (a small http.max_content_length): only what failed is sent again
#     (with the later changes of the same documents in its transaction),
#     batches too large are split, nothing is parked; several batches in
#     flight, but not those that depend on a batch before;
# (6) the fake stops (writes are retried) and restarts; then kill -9 of
#     the postmaster mid-stream: equal again afterwards;
# (7) an import of existing rows under concurrent writes ends equal;
# (8) a value the mapping refuses is parked alone with Elasticsearch's
#     reason; a wrong API key is retried, never parked, never shown;
# (9) index names of upper case tables, tables refused for their columns;
# (10) an index deleted by someone is made again (found by a _bulk or by a
#      TRUNCATE's requests); a new column extends the mapping;
# (11) json values that are not objects, flattened and stored;
# (12) HTTP basic auth.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use Digest::SHA qw(sha256_hex);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkElasticsearch;
use PgsinkImport;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $key = 'dGVzdDpzZWNyZXQta2V5LTEyMw==';
my $es = es_start(PostgreSQL::Test::Utils::tempdir() . '/es', '--api-key', $key);
my $node = pgsink_node('elasticsearch', extra_conf => qq{
pgsink.sink = 'elasticsearch'
pgsink.retry_max_interval = '1s'
pgsink.http_timeout = '5s'
pgsink.spool_retention = '1h'
pgsink.elasticsearch_url = '$es->{url}'
pgsink.elasticsearch_api_key = '$key'
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id bigint PRIMARY KEY, v text, n numeric(12,2), f double precision, b boolean,
                ts timestamptz, big text, j jsonb, tags text[], u uuid);
ALTER TABLE t ALTER big SET STORAGE EXTERNAL;
CREATE TABLE c (a int, b text, x int, PRIMARY KEY (a, b));
SELECT pgsink.add_table('t');
SELECT pgsink.add_table('c');
});
ok(defined wait_imports($node, 'postgres', 60), 'the (empty) imports are done');

sub workload
{
	my ($base) = @_;
	$node->safe_psql('postgres', qq{
INSERT INTO t SELECT $base + g, 'v' || g, g * 1.25, g / 3.0, g % 2 = 0,
       '2024-02-29 12:34:56.123456+00'::timestamptz + g * interval '1 second',
       repeat(md5(g::text), 300), ('{"k": "x' || g || '", "n": ' || g || '}')::jsonb,
       ARRAY['t' || g, NULL], md5(g::text)::uuid
  FROM generate_series(1, 150) g;
INSERT INTO t (id, v, n, f, ts, big) VALUES ($base + 201, NULL, 'NaN', 'NaN', 'infinity', NULL),
       ($base + 202, 'edge "q" \\ x', 1234567890.99, '-Infinity', '0044-03-15 BC', 'x');
UPDATE t SET v = v || ' x' WHERE id BETWEEN $base + 1 AND $base + 150 AND id % 3 = 0;
BEGIN;
INSERT INTO t (id, v, big) VALUES ($base + 300, 'in one', repeat('q', 9000));
UPDATE t SET v = 'same batch' WHERE id = $base + 300;
UPDATE t SET n = 7 WHERE id = $base + 300;
COMMIT;
DELETE FROM t WHERE id BETWEEN $base + 1 AND $base + 150 AND id % 10 = 0;
UPDATE t SET id = id + 100000 WHERE id BETWEEN $base + 1 AND $base + 150 AND id % 7 = 0;
INSERT INTO c SELECT g, 'k' || g, g FROM generate_series($base, $base + 39) g;
INSERT INTO c VALUES ($base, repeat('long key ', 70), 1);
UPDATE c SET x = x + 1 WHERE a % 2 = 0;
DELETE FROM c WHERE a % 5 = 0;
UPDATE c SET b = b || 'z' WHERE a % 3 = 0;
});
}

# A value as the test compares it: text, 'N' for null.
sub txt
{
	my ($v) = @_;
	return 'N' unless defined $v;
	return $v ? 'true' : 'false' if JSON::PP::is_bool($v);
	return JSON::PP->new->canonical->encode($v) if ref $v;
	return "$v";
}

my %compare = (
	t => {
		index => 'pgsink-public.t',
		md5 => ['big'],    # the fake sends the MD5 of big: a lean dump
		sql => q{SELECT id::text, coalesce(v, 'N'), coalesce(n::text, 'N'), coalesce(b::text, 'N'),
		          coalesce(md5(big), 'N'), coalesce(j::text, 'N'), coalesce(array_to_json(tags)::text, 'N'),
		          coalesce(u::text, 'N'), (f IS NULL)::text FROM t ORDER BY id},
		id => sub { $_[0]->[0] },
		row => sub {
			my ($d) = @_;
			my $j = defined $d->{j} ? JSON::PP->new->canonical->encode($d->{j}) : 'N';
			return join('|', txt($d->{id}), txt($d->{v}), txt($d->{n}), txt($d->{b}),
				defined $d->{big} ? $d->{big} : 'N', $j, txt($d->{tags}), txt($d->{u}),
				exists $d->{f} ? (defined $d->{f} ? 'false' : 'true') : 'missing');
		},
		pg_row => sub {
			my ($r) = @_;
			$r->[5] = JSON::PP->new->canonical->encode(decode_json($r->[5])) if $r->[5] ne 'N';
			$r->[6] = JSON::PP->new->canonical->encode(decode_json($r->[6])) if $r->[6] ne 'N';
			return join('|', @$r);
		},
	},
	c => {
		index => 'pgsink-public.c',
		sql => q{SELECT a::text, b, coalesce(x::text, 'N') FROM c ORDER BY a, b},
		id => sub {
			my $id = JSON::PP->new->encode([ $_[0]->[0], $_[0]->[1] ]);
			return length($id) > 512 ? '#' . sha256_hex($id) : $id;
		},
		row => sub { my ($d) = @_; join('|', txt($d->{a}), txt($d->{b}), txt($d->{x})) },
		pg_row => sub { join('|', @{ $_[0] }) },
	});

sub equal_indexes
{
	my ($label, @tables) = @_;
	wait_delivered($node, 'postgres', $label, 120);
	@tables = sort keys %compare unless @tables;
	for my $table (@tables)
	{
		my $c = $compare{$table};
		my %want;
		for my $line (split /\n/, $node->safe_psql('postgres', $c->{sql},
				extra_params => [ '-F', "\t", '-A' ]))
		{
			my @r = split /\t/, $line, -1;
			$want{ $c->{id}->(\@r) } = $c->{pg_row}->(\@r);
		}
		my $docs = es_dump($es, $c->{index} . '-live', 0, $c->{md5});
		my %got = map { $_ => $c->{row}->($docs->{$_}) } keys %$docs;
		my @diff;
		for my $id (sort(keys %{ { %want, %got } }))
		{
			next if defined $want{$id} && defined $got{$id} && $want{$id} eq $got{$id};
			push @diff, "_id $id: source " . ($want{$id} // '(none)') . "\n  index "
			  . ($got{$id} // '(none)');
		}
		ok(!@diff, "$label: index of $table equals the source (" . scalar(keys %want) . ' rows)')
		  or diag(join("\n", @diff[ 0 .. ($#diff > 4 ? 4 : $#diff) ]));
	}
}

sub parked
{
	my ($where) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'elasticsearch'"
		  . ($where ? " AND $where" : ''));
}

# What is parked, for a failure's diagnostics.
sub parked_diag
{
	diag($node->safe_psql('postgres',
		"SELECT \"table\", http_status, left(response, 200), left(entry, 200) "
		  . "FROM pgsink.dead_letters ORDER BY id LIMIT 5"));
}

# (0) The fake refuses what Elasticsearch refuses (else passing proves nothing).
{
	my $auth = "ApiKey $key";
	my $ok_action = '{"index":{"_index":"strict-check","_id":"1","version":5,"version_type":"external_gte"}}';
	my $put = HTTP::Tiny->new->request('PUT', "$es->{url}/strict-check", {
		headers => { Authorization => $auth, 'Content-Type' => 'application/json' },
		content => '{"mappings":{"dynamic":"strict","properties":{"n":{"type":"long"},'
		  . '"d":{"type":"date","format":"strict_date_optional_time_nanos"}}}}' });
	is($put->{status}, 200, '(0) fake: an index is made');
	my %refused = (
		'no trailing newline' => [ $ok_action . "\n" . '{"n":1}', 'terminated by a newline' ],
		'a source missing' => [ $ok_action . "\n", 'source is missing' ],
		'an unknown action' => [ '{"upsert":{"_index":"strict-check"}}' . "\n{}\n", 'expected field' ],
		'an unknown parameter' => [ '{"index":{"_index":"strict-check","_idx":"1"}}' . "\n{}\n",
			'unknown parameter' ],
		'a version with internal versioning' => [
			'{"index":{"_index":"strict-check","_id":"1","version":5}}' . "\n{}\n",
			'internal versioning' ],
		'an _id over 512 bytes' => [
			'{"index":{"_index":"strict-check","_id":"' . ('x' x 513)
			  . '","version":1,"version_type":"external"}}' . "\n{}\n", 'too long' ],
	);
	for my $what (sort keys %refused)
	{
		my ($body, $says) = @{ $refused{$what} };
		my $r = es_post($es, '/_bulk', $body, undef, $auth);
		ok($r->{status} == 400 && JSON::PP->new->encode($r->{body}) =~ /\Q$says\E/,
			"(0) fake: refuses $what") or diag(explain($r));
	}
	my $good = $ok_action . "\n" . '{"n":1}' . "\n";
	is(es_post($es, '/_bulk', $good, 'text/plain', $auth)->{status}, 406,
		'(0) fake: refuses a wrong Content-Type');
	is(es_post($es, '/_bulk', $good)->{status}, 401, '(0) fake: refuses no credentials');
	my $older = '{"index":{"_index":"strict-check","_id":"1","version":4,"version_type":"external_gte"}}';
	my $items = es_post($es, '/_bulk',
		join("\n", $ok_action, '{"n":"abc"}', $ok_action, '{"n":1,"zz":1}', $ok_action,
			'{"d":"2024-13"}', $ok_action, '{"n":1,"d":"2024-02-29T12:34:56.123456+00:00"}',
			$older, '{"n":2}') . "\n",
		undef, $auth)->{body}{items};
	is(join(',', map { $_->{index}{status} } @$items), '400,400,400,201,409',
		'(0) fake: per item, a wrong type, an unmapped field, a bad date refused; an older version 409');
	HTTP::Tiny->new->request('DELETE', "$es->{url}/strict-check",
		{ headers => { Authorization => $auth } });
}

# (1), (2)
my $t0 = time();
workload(0);
equal_indexes('(1) first load');
is(parked(), 0, '(1) nothing parked');
my $all = es_dump($es, 'pgsink-public.t', 1, ['big']);
my @tomb = grep { $all->{docs}{$_}{_pgsink_deleted} } keys %{ $all->{docs} };
ok(@tomb >= 15, '(1) deletes left tombstones (' . scalar(@tomb) . '), hidden by the alias');
is($all->{aliases}{'pgsink-public.t-live'}{filter}{term}{_pgsink_deleted}, JSON::PP::false,
	'(1) the alias filters tombstones out');
is($all->{mappings}{properties}{id}{type}, 'long', '(1) bigint is a long');
is($all->{mappings}{properties}{ts}{format}, 'strict_date_optional_time_nanos',
	'(1) timestamptz is a date with a microsecond format');
is(es_dump($es, 'pgsink-public.t')->{300}{_pgsink_op}, 'update',
	'(1) documents carry _pgsink_op (the last change of a key in one transaction wins)');

$node->safe_psql('postgres', q{UPDATE t SET v = 'later' WHERE id BETWEEN 1 AND 50});
$node->safe_psql('postgres', q{UPDATE t SET id = id + 500000 WHERE id BETWEEN 51 AND 60});
equal_indexes('(2) unchanged TOAST read back, key changes included', 't');
cmp_ok(es_stats($es)->{mget}, '>=', 1, '(2) current documents were read back (_mget)');

# (3)
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO c VALUES (-1, 'before', 1);
TRUNCATE c;
INSERT INTO c VALUES (-2, 'after', 2);
COMMIT;
INSERT INTO c VALUES (-3, 'later', 3);
});
equal_indexes('(3) truncate', 'c');

# (4) A rewind to the start once the fake forgot every delete's version.
es_control($es, 'POST', 'clock', { advance => 3600 });
my $before = es_dump($es, 'pgsink-public.t', 1, ['big']);
my $before_c = es_dump($es, 'pgsink-public.c', 1);
my ($conflicts, $revived) = @{ es_stats($es) }{qw(conflicts revived)};
$node->safe_psql('postgres', "SELECT pgsink.rewind_sink_to_lsn('elasticsearch', '0/1')");
equal_indexes('(4) after a rewind past gc_deletes');
cmp_ok(es_stats($es)->{conflicts}, '>', $conflicts + 100,
	'(4) the replayed changes were refused as older (409)');
is(es_stats($es)->{revived}, $revived,
	'(4) no deleted row came back, even for a moment (tombstones refused the older changes)');
is_deeply(es_dump($es, 'pgsink-public.t', 1, ['big'])->{versions}, $before->{versions},
	'(4) no document of t changed version');
is_deeply(es_dump($es, 'pgsink-public.c', 1)->{versions}, $before_c->{versions},
	'(4) no document of c either: the changes before the TRUNCATE were not written again');

# (5) Faults: per-item 429s, 503s, an answer lost after the bulk was applied.
es_faults($es, { item_429 => 7 });
workload(5000);
equal_indexes('(5) per-item 429s');
is(es_stats($es)->{item_429}, 7, '(5) the fake refused 7 items with 429');
es_faults($es, { status => 503, count => 2, path => '_bulk', retry_after => '1' });
workload(6000);
equal_indexes('(5) 503s');
es_faults($es, { drop_after_apply => 1 });
workload(7000);
equal_indexes('(5) an answer lost after the bulk was applied');
is(es_stats($es)->{dropped}, 1, '(5) one answer was dropped');
# pgsink.max_in_flight = 8, many small batches answered slowly: batches of
# transactions of their own overlap; a batch of a transaction that a batch
# before it holds too (the second UPDATE of each key, several batches on,
# shares the first's version) waits for it, as does one that reads
# documents back (_mget of unchanged TOAST values). Batches of 128 kB
# (over the 64 kB from which a request is made ahead): their _bulk bodies
# are made on the two prefetch threads, two batches at once.
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.max_in_flight = 8");
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.batch_bytes = '128kB'");
$node->reload;
es_faults($es, { delay => 0.05 });
# Counted from here: a request of an earlier phase whose answer was dropped
# may still be finishing in the fake.
es_control($es, 'POST', 'stats?reset_max_concurrent=1');
$node->safe_psql('postgres', q{
INSERT INTO c SELECT g, 'in flight ' || g, g FROM generate_series(1, 3000) g;
BEGIN;
UPDATE c SET x = x + 1 WHERE a BETWEEN 1 AND 3000;
UPDATE c SET x = x * 10 WHERE a BETWEEN 1 AND 3000;
COMMIT;
DO $$
BEGIN
  FOR i IN 0..59 LOOP
    UPDATE c SET x = x + i WHERE a BETWEEN i * 50 + 1 AND i * 50 + 50;
    COMMIT;
  END LOOP;
END
$$;
UPDATE t SET v = 'toast kept ' || id WHERE id % 5 = 1;
});
equal_indexes('(5) max_in_flight 8, small batches, transactions over several batches');
cmp_ok(es_stats($es)->{max_concurrent}, '>', 1, '(5) independent batches were in flight together');
es_faults($es, {});
# A change sent again after a per-item 429 never lands over a later change
# of the same document in its transaction (the same version: external_gte
# would take the older): the later one is sent again too, after it. The
# fake refuses the first item of the next _bulk.
es_faults($es, { item_429 => 1 });
$node->safe_psql('postgres', q{
BEGIN;
UPDATE c SET x = -100 WHERE a = 1 AND b = 'in flight 1';
UPDATE c SET x = -200 WHERE a = 1 AND b = 'in flight 1';
COMMIT;
});
equal_indexes('(5) a change sent again stays under the later one of its transaction', 'c');
is(es_dump($es, 'pgsink-public.c')->{'["1","in flight 1"]'}{x}, -200, '(5) the later value');
es_faults($es, { item_429 => 1 });
$node->safe_psql('postgres', q{
BEGIN;
UPDATE c SET a = -11 WHERE a = 2 AND b = 'in flight 2';
INSERT INTO c VALUES (2, 'in flight 2', 77);
COMMIT;
});
equal_indexes('(5) a key change sent again leaves the old key written again later in place', 'c');
is(es_stats($es)->{item_429}, 9, '(5) the fake refused those two items with 429');
es_faults($es, {});
$node->safe_psql('postgres', "ALTER SYSTEM RESET pgsink.max_in_flight");
$node->safe_psql('postgres', "ALTER SYSTEM RESET pgsink.batch_bytes");
$node->reload;
# A slow answer, past pgsink.http_timeout (5 s): the request is retried
# while the fake still applies the first one (idempotent by versions).
es_faults($es, { delay => 6 });
$node->safe_psql('postgres', q{INSERT INTO c VALUES (7777, 'slow', 1)});
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%timed out%' FROM pgsink.sinks WHERE sink = 'elasticsearch'", 't', 30),
	'(5) a slow answer times out, and is retried');
es_faults($es, {});
equal_indexes('(5) after slow answers', 'c');
es_faults($es, { garbage => 2 });
workload(7500);
equal_indexes('(5) answers that are not Elasticsearch\'s (a proxy\'s page)');
is(es_stats($es)->{garbage}, 2, '(5) two bulks were answered with an HTML page');
# A cluster whose http.max_content_length is 64 kB: 413, the batch is split.
es_stop($es);
push @{ $es->{args} }, '--max-content-length', 65536;
es_restart($es);
$node->safe_psql('postgres', q{
INSERT INTO t (id, v, big) SELECT 8000 + g, 'large', repeat(md5(g::text), 300) FROM generate_series(1, 40) g;
UPDATE t SET v = 'large too' WHERE id BETWEEN 8001 AND 8020;
});
equal_indexes('(5) requests larger than the cluster takes', 't');
cmp_ok(es_stats($es)->{too_large}, '>=', 1, '(5) the fake refused large requests (413)');
splice(@{ $es->{args} }, -2);
es_restart($es);
is(parked(), 0, '(5) nothing parked') or parked_diag();

# (6) The fake stops and restarts; then kill -9 of the postmaster.
es_stop($es);
workload(10000);
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'elasticsearch'", 'retrying', 30),
	'(6) the sink retries while Elasticsearch is down');
es_restart($es);
workload(20000);
crash_node($node);
start_after_crash($node);
workload(30000);
equal_indexes('(6) after a restart of the fake and kill -9');
is(parked(), 0, '(6) nothing parked') or parked_diag();

# (7) An import of existing rows while they are being changed.
my $writer = import_under_writes($node, rows => 8000, rounds => 200, new_from => 9000);
$writer->finish;
ok(defined wait_imports($node, 'postgres', 120), '(7) the import is done');
$compare{im} = {
	index => 'pgsink-public.im',
	sql => q{SELECT id::text, v::text, note FROM im ORDER BY id},
	id => sub { $_[0]->[0] },
	row => sub { my ($d) = @_; join('|', txt($d->{id}), txt($d->{v}), txt($d->{note})) },
	pg_row => sub { join('|', @{ $_[0] }) },
};
equal_indexes('(7) import under concurrent writes', 'im');
is(parked(), 0, '(7) nothing parked') or parked_diag();

# (8) A value the mapping refuses (a column retyped to text: the field stays an
# integer) is parked alone, with Elasticsearch's reason.
$node->safe_psql('postgres', q{
ALTER TABLE im ALTER v TYPE text;
INSERT INTO im VALUES (20001, '1', 'ok before'), (20002, 'abc', 'refused'), (20003, '3', 'ok after');
});
wait_delivered($node, 'postgres', '(8) a refused value');
is(parked("entry LIKE '%20002%' AND response LIKE '%document_parsing_exception%'"), 1,
	'(8) the refused entry is parked with Elasticsearch\'s reason');
is(parked(), 1, '(8) only that one') or parked_diag();
my $im = es_dump($es, 'pgsink-public.im');
ok(exists $im->{20001} && exists $im->{20003} && !exists $im->{20002},
	'(8) the entries around it are delivered');

# A wrong API key: retried, never parked, never shown.
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.elasticsearch_api_key = 'd3Jvbmc6a2V5LXZhbHVl'");
$node->reload;
$node->safe_psql('postgres', q{INSERT INTO c VALUES (-9, 'auth', 9)});
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'elasticsearch'", 'retrying', 30),
	'(8) a wrong API key: the sink retries');
my $status = sink_status($node, 'elasticsearch');
like($status->{error}, qr/401.*check pgsink\.elasticsearch_api_key/, '(8) and says what to check');
unlike($status->{error} . slurp_file($node->logfile), qr/d3Jvbmc6a2V5LXZhbHVl|\Q$key\E/,
	'(8) no key in the status or the log');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET pgsink.elasticsearch_api_key');
$node->reload;
equal_indexes('(8) with the right key again', 'c');
is(parked(), 1, '(8) nothing else parked');

# (9) Names: a table with upper case letters gets a digest (public.Upper and
# public.upper stay apart); a table with a column named like the sink's own
# fields has its changes parked, saying why.
$node->safe_psql('postgres', q{
CREATE TABLE "Upper" (id int PRIMARY KEY, v text);
CREATE TABLE upper (id int PRIMARY KEY, v text);
CREATE TABLE clash (id int PRIMARY KEY, _pgsink_op text);
SELECT pgsink.add_table('"Upper"'); SELECT pgsink.add_table('upper'); SELECT pgsink.add_table('clash');
INSERT INTO "Upper" VALUES (1, 'Upper'); INSERT INTO upper VALUES (1, 'upper');
INSERT INTO clash VALUES (1, 'x');
});
ok(defined wait_imports($node, 'postgres', 60), '(9) imports done');
wait_delivered($node, 'postgres', '(9) names');
my $digest = substr(sha256_hex('public.Upper'), 0, 8);
is(es_dump($es, "pgsink-public.upper-$digest")->{1}{v}, 'Upper', "(9) public.Upper is pgsink-public.upper-$digest");
is(es_dump($es, 'pgsink-public.upper')->{1}{v}, 'upper', '(9) public.upper is pgsink-public.upper');
cmp_ok(parked("\"table\" = 'public.clash' AND response LIKE '%clashes with the sink''s own _pgsink_ fields%'"),
	'>=', 1, '(9) a column named _pgsink_op: the table\'s changes are parked, saying why');

# (10) An index deleted by someone is made again (the fake, as a production
# cluster should, creates no index by itself: action.auto_create_index).
my $del = HTTP::Tiny->new->request('DELETE', "$es->{url}/pgsink-public.upper",
	{ headers => { Authorization => "ApiKey $key" } });
is($del->{status}, 200, '(10) index pgsink-public.upper deleted');
$node->safe_psql('postgres', q{INSERT INTO upper VALUES (2, 'again')});
wait_delivered($node, 'postgres', '(10) a write to a deleted index');
is(es_dump($es, 'pgsink-public.upper')->{2}{v}, 'again', '(10) the index is made again');
is(parked("\"table\" = 'public.upper'"), 0, '(10) nothing parked');
# A new column extends the mapping.
# Whatever request finds the index missing (here a TRUNCATE's _meta
# position, before its _refresh and _delete_by_query), it is made again.
$del = HTTP::Tiny->new->request('DELETE', "$es->{url}/pgsink-public.c",
	{ headers => { Authorization => "ApiKey $key" } });
is($del->{status}, 200, '(10) index pgsink-public.c deleted');
$node->safe_psql('postgres', q{
BEGIN;
TRUNCATE c;
INSERT INTO c VALUES (1, 'after the deleted index', 1);
COMMIT;
ALTER TABLE c ADD COLUMN note text;
INSERT INTO c VALUES (1234, 'noted', 1, 'a note');
});
equal_indexes('(10) a TRUNCATE into a deleted index', 'c');
my $c_all = es_dump($es, 'pgsink-public.c', 1);
is($c_all->{mappings}{properties}{note}{type}, 'text', '(10) a new column extends the mapping');
is((grep { ($_->{note} // '') eq 'a note' } values %{ $c_all->{docs} }) + 0, 1,
	'(10) and its values are indexed');

# (11) json values that are not objects: flattened (the default) refuses
# them, so the row is parked with Elasticsearch's reason; with
# pgsink.elasticsearch_json = 'stored', a new index keeps any JSON value.
$node->safe_psql('postgres', q{
CREATE TABLE js (id int PRIMARY KEY, j jsonb);
SELECT pgsink.add_table('js');
INSERT INTO js VALUES (1, '{"a": [1, 2]}'), (2, '[1, 2]');
});
ok(defined wait_imports($node, 'postgres', 60), '(11) import done');
wait_delivered($node, 'postgres', '(11) json values, flattened');
# (the insert, and maybe the import's copy of the same row)
cmp_ok(parked("\"table\" = 'public.js' AND entry LIKE '%[1, 2]%' AND response LIKE '%document_parsing_exception%'"),
	'>=', 1, '(11) flattened: an array value is parked with Elasticsearch\'s reason');
my $js = es_dump($es, 'pgsink-public.js');
ok(exists $js->{1} && !exists $js->{2}, '(11) flattened: the object value is delivered');
$node->safe_psql('postgres', q{
ALTER SYSTEM SET pgsink.elasticsearch_json = 'stored';
CREATE TABLE js2 (id int PRIMARY KEY, j jsonb);
});
$node->reload;
$node->safe_psql('postgres', q{
SELECT pgsink.add_table('js2');
INSERT INTO js2 VALUES (1, '{"a": 1}'), (2, '[1, "x"]'), (3, '"s"');
});
ok(defined wait_imports($node, 'postgres', 60), '(11) import done');
wait_delivered($node, 'postgres', '(11) json values, stored');
my $js2 = es_dump($es, 'pgsink-public.js2');
is(JSON::PP->new->canonical->encode([ map { $js2->{$_}{j} } 1 .. 3 ]), '[{"a":1},[1,"x"],"s"]',
	'(11) stored: every JSON value kept');
is(es_dump($es, 'pgsink-public.js2', 1)->{mappings}{properties}{j}{enabled}, JSON::PP::false,
	'(11) stored: an object field that is not indexed');

# (12) HTTP basic auth instead of an API key.
es_stop($es);
$es->{args} = [ '--user', 'pgsink', '--password', 'b4sic-pa55word' ];
es_restart($es);
$node->safe_psql('postgres', q{
ALTER SYSTEM SET pgsink.elasticsearch_api_key = '';
ALTER SYSTEM SET pgsink.elasticsearch_user = 'pgsink';
ALTER SYSTEM SET pgsink.elasticsearch_password = 'b4sic-pa55word';
});
$node->reload;
$node->safe_psql('postgres', q{INSERT INTO upper VALUES (3, 'basic')});
wait_delivered($node, 'postgres', '(12) basic auth');
is(es_dump($es, 'pgsink-public.upper')->{3}{v}, 'basic', '(12) delivered with basic auth');
is(es_stats($es)->{auth_failures}, 0, '(12) no request without the credentials');
unlike(slurp_file($node->logfile), qr/b4sic-pa55word/, '(12) the password is never logged');
# (13) The resync rule: a document the table does not hold (left there by
# changes that were lost; here written straight into the index with an old
# version) is removed when pgsink.resync() closes, and nothing else.
$node->safe_psql('postgres', q{
ALTER SYSTEM RESET pgsink.elasticsearch_user;
ALTER SYSTEM RESET pgsink.elasticsearch_password;
});
es_stop($es);
$es->{args} = [ '--api-key', $key ];
es_restart($es);
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.elasticsearch_api_key = '$key'");
$node->reload;
my $cdocs = es_dump($es, 'pgsink-public.c');
my ($any) = sort keys %$cdocs;
my %stale = %{ $cdocs->{$any} };
@stale{qw(a b _pgsink_lsn _pgsink_op)} = (987654, 'stale', 1, 'insert');
my $stale_id = JSON::PP->new->encode([ '987654', 'stale' ]);
my $r13 = es_post($es, '/_bulk',
	encode_json({ index => { _index => 'pgsink-public.c', _id => $stale_id, version => 1,
				version_type => 'external_gte' } }) . "\n" . encode_json(\%stale) . "\n",
	undef, "ApiKey $key");
is($r13->{status}, 200, '(13) a stale document planted in the index');
ok(exists es_dump($es, 'pgsink-public.c')->{$stale_id}, '(13) it is there');
$node->safe_psql('postgres', "SELECT pgsink.resync('c')");
ok(defined wait_imports($node, 'postgres', 60), '(13) the resync completes');
wait_delivered($node, 'postgres', '(13) after the resync');
ok(!exists es_dump($es, 'pgsink-public.c')->{$stale_id}, '(13) the resync rule removed it');
equal_indexes('(13) after the resync', 'c');

# (14) A replay (a rewind here; a crash does the same) of a batch that
# holds an update leaving TOASTed big unchanged and then a key change of
# the same row, without the row's insert: Elasticsearch holds the key
# change already (the old key's tombstone, the new key's document), so the
# update is skipped (409) and the key change is recognised as delivered,
# not parked for want of big.
my $parked14 = parked();
$node->safe_psql('postgres', q{
INSERT INTO t (id, v, big) VALUES (50001, 'replayed', repeat(md5('r'), 300))});
my $after_insert = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('postgres', q{UPDATE t SET v = 'replayed x' WHERE id = 50001});
$node->safe_psql('postgres', q{UPDATE t SET id = 150001 WHERE id = 50001});
equal_indexes('(14) an update, then a key change, each leaving big unchanged', 't');
$node->safe_psql('postgres',
	"SELECT pgsink.rewind_sink_to_lsn('elasticsearch', '$after_insert')");
equal_indexes('(14) after a replay of both without the insert', 't');
is(parked(), $parked14, '(14) nothing parked') or parked_diag();

# The same after a crash: the index holds the key change, not the update
# after it; the replay sends both (here: the sink paused before the
# update, rewound to before the key change, resumed). The update takes its
# unchanged value from the new key's document, read back.
$node->safe_psql('postgres', q{
INSERT INTO t (id, v, big) VALUES (50002, 'crashed', repeat(md5('c'), 300))});
my $before_change = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('postgres', q{UPDATE t SET id = 150002 WHERE id = 50002});
wait_delivered($node, 'postgres', '(14) a key change delivered');
$node->safe_psql('postgres', "SELECT pgsink.pause('elasticsearch')");
$node->safe_psql('postgres', q{UPDATE t SET v = 'crashed x' WHERE id = 150002});
$node->safe_psql('postgres',
	"SELECT pgsink.rewind_sink_to_lsn('elasticsearch', '$before_change')");
$node->safe_psql('postgres', "SELECT pgsink.resume('elasticsearch')");
equal_indexes('(14) after a replay of the key change and the update after it', 't');
is(parked(), $parked14, '(14) nothing parked there either') or parked_diag();

note(sprintf('070 took %.1f s', time() - $t0));

$node->stop;
es_stop($es);
done_testing();

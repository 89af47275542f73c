# The strict BigQuery fake (bigquery_fake.py) alone, no pgsink: it must
# refuse what BigQuery refuses, or passing it would prove nothing.
# (1) OAuth: a valid JWT gets a token; a bad signature, another key id, an
#     expired or too long-lived JWT, a wrong audience, an unknown account, no
#     scope, another grant type, alg HS256 are refused;
# (2) bearer tokens: missing, unknown, revoked, expired, insufficient scope;
# (3) datasets and tables: 404 / 409, unknown keys and parameters, names,
#     clustering, labels, views (useLegacySql, references), patch rules,
#     columns a patch added unknown to streaming for a while;
# (4) insertAll: every type's check refusing a wrong value (and the typed
#     value stored for a right one), unknown field, REQUIRED, REPEATED,
#     invalid + stopped, skipInvalidRows, limits, insertId de-duplication,
#     gzip / chunked / Expect: 100-continue, injected row errors and statuses;
# (5) load jobs: multipart and resumable Avro uploads, states, duplicate job
#     id (also after a lost answer), schema mismatches and bad data failing
#     the job, a file written by avro-c, NDJSON, dispositions, field addition;
# (6) the view rule of issue 13 on a hand-made raw table: TOAST carry,
#     delete, truncate, key change, replays, ambiguity, a column added later,
#     and the comparison helper against a plain PostgreSQL; jobs.query of
#     pgsink's lookup shape (paged, not done at once) and refusals of others;
# (7) outage, bookkeeping (stats, requests, jobs, tables).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IO::Compress::Gzip;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkBigQuery;
use Test::More;
use Time::HiRes qw(time sleep usleep);

my $t0 = time();
my $dir = PostgreSQL::Test::Utils::tempdir();
my $bq = bq_start($dir, config => { job_seconds => 0.3 });
my $P = $bq->{project};
my $base = "/bigquery/v2/projects/$P";
my $json = JSON::PP->new->utf8->canonical;

sub reason { my ($body) = @_; return ref $body ? $body->{error}{errors}[0]{reason} // '' : ''; }
sub message { my ($body) = @_; return ref $body ? $body->{error}{message} // '' : "$body"; }

# ---------------------------------------------------------------------------
# (1) OAuth
my ($s, $r) = bq_token($bq);
is($s, 200, '(1) a valid JWT gets a token');
is($r->{token_type}, 'Bearer', '(1) token_type Bearer');
is($r->{expires_in}, 3600, '(1) expires_in 3600');
like($r->{access_token}, qr/^ya29\./, '(1) an access token');
my $token = $r->{access_token};

my $other = "$dir/other_key.pem";
system('openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-quiet',
	'-out', $other) == 0 or die 'openssl genpkey failed';
my $now = time();
my @bad_jwts = (
	[ 'another key signed it', [ key => $other ], 'invalid_grant', qr/Invalid JWT Signature/ ],
	[ 'another key id', [ kid => 'ffff' ], 'invalid_grant', qr/Invalid JWT Signature/ ],
	[ 'expired', [ iat => int($now) - 7200, exp => int($now) - 3700 ], 'invalid_grant',
		qr/short-lived token/ ],
	[ 'valid two hours', [ exp => int($now) + 7200 ], 'invalid_grant', qr/short-lived/ ],
	[ 'issued in the future', [ iat => int($now) + 600, exp => int($now) + 1200 ],
		'invalid_grant', qr/short-lived/ ],
	[ 'wrong audience', [ aud => 'https://oauth2.googleapis.com/token' ], 'invalid_grant',
		qr/audience/ ],
	[ 'unknown account', [ iss => 'nobody@example.iam.gserviceaccount.com' ], 'invalid_grant',
		qr/account not found/ ],
	[ 'no scope', [ scope => undef ], 'invalid_scope', qr/scope/ ],
	[ 'exp as a string', [ exp => 'soon' ], 'invalid_grant', qr/short-lived/ ],
	[ 'another subject', [ sub => 'someone@example.com' ], 'unauthorized_client',
		qr/unauthorized/ ]);
for my $case (@bad_jwts)
{
	my ($label, $claims, $error, $re) = @$case;
	my ($st, $out) = bq_token($bq, bq_jwt($bq, @$claims));
	ok($st == 400 || ($error eq 'unauthorized_client' && $st == 401),
		"(1) $label: refused ($st)");
	is($out->{error}, $error, "(1) $label: $error");
	like($out->{error_description}, $re, "(1) $label: says why");
}
# alg HS256, signed with HMAC over the public key: the classic confusion.
{
	my $jwt = bq_jwt($bq, alg => 'HS256');
	my ($st, $out) = bq_token($bq, $jwt);
	is($out->{error}, 'invalid_grant', '(1) alg HS256 refused');
}
# A tampered claim under a valid signature.
{
	my $jwt = bq_jwt($bq);
	my ($h, $c, $sig) = split /\./, $jwt;
	my $claims = $json->encode({ %{ $json->decode(MIME::Base64::decode_base64url($c)) },
			scope => 'https://www.googleapis.com/auth/cloud-platform' });
	my ($st, $out) = bq_token($bq, join('.', $h, MIME::Base64::encode_base64url($claims), $sig));
	is($out->{error_description}, 'Invalid JWT Signature.', '(1) a changed claim breaks the signature');
}
{
	my ($st, $out) = PgsinkBigQuery::_request($bq, 'POST', '/token',
		headers => { 'Content-Type' => 'application/x-www-form-urlencoded' },
		content => 'grant_type=client_credentials&assertion=' . bq_jwt($bq));
	is($out->{error}, 'unsupported_grant_type', '(1) another grant type refused');
	($st, $out) = PgsinkBigQuery::_request($bq, 'POST', '/token',
		headers => { 'Content-Type' => 'application/json' },
		content => $json->encode({ assertion => bq_jwt($bq) }));
	is($out->{error}, 'invalid_request', '(1) a JSON body refused (form encoding only)');
}

# ---------------------------------------------------------------------------
# (2) Bearer tokens
($s, $r) = bq_api($bq, 'GET', "$base/datasets/nope", undef, token => undef);
is($s, 401, '(2) no Authorization: 401');
is(reason($r), 'required', '(2) reason required');
($s, $r) = bq_api($bq, 'GET', "$base/datasets/nope", undef, token => 'ya29.made-up');
is($s, 401, '(2) an unknown token: 401');
is(reason($r), 'authError', '(2) reason authError');
like(message($r), qr/invalid authentication credentials/, '(2) the real message');
($s, $r) = bq_api($bq, 'GET', "$base/datasets/nope", undef, token => $token);
is($s, 404, '(2) a valid token passes (then 404 for the dataset)');
is(reason($r), 'notFound', '(2) reason notFound');
is(message($r), "Not found: Dataset $P:nope", '(2) message as BigQuery words it');
bq_revoke_tokens($bq);
($s, $r) = bq_api($bq, 'GET', "$base/datasets/nope", undef, token => $token);
is($s, 401, '(2) a revoked token: 401');
bq_config($bq, { token_lifetime => 1 });
($s, $r) = bq_token($bq);
is($r->{expires_in}, 1, '(2) token_lifetime is what expires_in says');
my $short = $r->{access_token};
sleep 1.2;
($s, $r) = bq_api($bq, 'GET', "$base/datasets/nope", undef, token => $short);
is($s, 401, '(2) an expired token: 401');
bq_config($bq, { token_lifetime => 3600 });
($s, $r) = bq_token($bq, bq_jwt($bq, scope => 'https://www.googleapis.com/auth/bigquery.insertdata'));
my $insert_only = $r->{access_token};
($s, $r) = bq_api($bq, 'POST', "$base/datasets",
	{ datasetReference => { projectId => $P, datasetId => 'x' } }, token => $insert_only);
is($s, 403, '(2) an insertdata-only token cannot create a dataset');
is(reason($r), 'insufficientPermissions', '(2) reason insufficientPermissions');

# ---------------------------------------------------------------------------
# (3) Datasets and tables
($s, $r) = bq_api($bq, 'POST', "$base/datasets",
	{ datasetReference => { projectId => $P, datasetId => 'ds' }, location => 'EU' });
is($s, 200, '(3) dataset created');
is($r->{location}, 'EU', '(3) in its location');
($s, $r) = bq_api($bq, 'POST', "$base/datasets",
	{ datasetReference => { projectId => $P, datasetId => 'ds' } });
is($s, 409, '(3) again: 409');
is(reason($r), 'duplicate', '(3) reason duplicate');
is(message($r), "Already Exists: Dataset $P:ds", '(3) message');
($s, $r) = bq_api($bq, 'POST', "$base/datasets",
	{ datasetReference => { projectId => $P, datasetId => 'ds2' }, colour => 'red' });
is($s, 400, '(3) an unknown key in a dataset: 400');
like(message($r), qr/Unknown name "colour"/, '(3) names it');
($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds?verbose=1");
is($s, 400, '(3) an unknown query parameter: 400');
($s, $r) = bq_api($bq, 'GET', "/bigquery/v2/projects/other-project/datasets/ds");
is($s, 404, '(3) another project: 404');

($s, $r) = bq_api($bq, 'GET', "$base/datasets");
is_deeply([ map { $_->{datasetReference}{datasetId} } @{ $r->{datasets} } ], ['ds'], '(3) datasets.list');
bq_api($bq, 'POST', "$base/datasets", { datasetReference => { projectId => $P, datasetId => 'gone' } });
bq_api($bq, 'POST', "$base/datasets/gone/tables",
	{ tableReference => { projectId => $P, datasetId => 'gone', tableId => 't' } });
($s, $r) = bq_api($bq, 'DELETE', "$base/datasets/gone");
is(reason($r), 'resourceInUse', '(3) deleting a dataset with tables needs deleteContents');
($s, $r) = bq_api($bq, 'DELETE', "$base/datasets/gone?deleteContents=true");
is($s, 204, '(3) with it: 204');
($s, $r) = bq_api($bq, 'GET', "$base/datasets/gone/tables/t");
is($s, 404, '(3) its tables are gone');

my @types = (
	[ 'i', 'INT64' ], [ 'f', 'FLOAT64' ], [ 'n', 'NUMERIC' ], [ 'bn', 'BIGNUMERIC' ],
	[ 'b', 'BOOL' ], [ 's', 'STRING' ], [ 'by', 'BYTES' ], [ 'd', 'DATE' ], [ 't', 'TIME' ],
	[ 'dt', 'DATETIME' ], [ 'ts', 'TIMESTAMP' ], [ 'j', 'JSON' ]);
my @fields = ((map { { name => $_->[0], type => $_->[1] } } @types),
	{ name => 'arr', type => 'INT64', mode => 'REPEATED' },
	{ name => 'req', type => 'STRING', mode => 'REQUIRED' },
	{ name => 'rec', type => 'RECORD', fields => [ { name => 'x', type => 'INTEGER' } ] },
	{ name => 'n52', type => 'NUMERIC', precision => '5', scale => '2' });
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'types' },
		schema => { fields => \@fields } });
is($s, 200, '(3) a table with every type') or diag(message($r));
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'TYPES' },
		schema => { fields => \@fields } });
is($s, 200, '(3) table names are case-sensitive: TYPES is another table');
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'TYPES' },
		schema => { fields => \@fields } });
is($s, 409, '(3) a table again: 409');
is(message($r), "Already Exists: Table $P:ds.TYPES", '(3) Already Exists');
($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds/tables/types");
is($s, 200, '(3) tables.get');
my ($st_list, $list) = bq_api($bq, 'GET', "$base/datasets/ds/tables");
is_deeply([ sort map { $_->{tableReference}{tableId} } @{ $list->{tables} } ], [qw(TYPES types)], '(3) tables.list');
is(scalar @{ $r->{schema}{fields} }, scalar @fields, '(3) with its schema');
is($r->{type}, 'TABLE', '(3) type TABLE');
for my $badfield ([ { name => '1x', type => 'STRING' }, 'a name starting with a digit' ],
	[ { name => 'x', type => 'VARCHAR' }, 'an unknown type' ],
	[ { name => 'x', type => 'NUMERIC', precision => '40', scale => '2' }, 'NUMERIC(40,2)' ],
	[ { name => '_PARTITIONTIME', type => 'DATE' }, 'a reserved name' ],
	[ { name => 'x', type => 'STRING', mode => 'OPTIONAL' }, 'mode OPTIONAL' ])
{
	($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
		{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'bad' },
			schema => { fields => [ $badfield->[0] ] } });
	is($s, 400, "(3) a field with $badfield->[1]: 400");
}
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'clustered' },
		schema => { fields => \@fields }, clustering => { fields => ['f'] } });
is($s, 400, '(3) clustering by a FLOAT64 column: 400');
like(message($r), qr/not supported for clustering/, '(3) says so');
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'clustered' },
		schema => { fields => \@fields }, clustering => { fields => [qw(i s d ts)] }, labels => { origin => 'pgsink' } });
is($s, 200, '(3) clustering by 4 columns, with a label') or diag(message($r));
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/clustered", { labels => { Origin => 'x' } });
is($s, 400, '(3) a label key with a capital: 400');
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'dup' },
		schema => { fields => [ { name => 'a', type => 'STRING' }, { name => 'A', type => 'STRING' } ] } });
is($s, 400, '(3) two fields differing in case: 400');

# Views
my $vq = "SELECT * FROM `$P.ds.types`";
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'v1' },
		view => { query => $vq } });
is($s, 400, '(3) a view without useLegacySql: 400 (legacy SQL is the default)');
like(message($r), qr/useLegacySql/, '(3) says so');
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'v1' },
		view => { query => "SELECT * FROM `$P.ds.missing`", useLegacySql => JSON::PP::false } });
is($s, 404, '(3) a view on a missing table: 404');
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'v1' },
		view => { query => "SELECT * FROM [$P:ds.types]", useLegacySql => JSON::PP::false } });
is($s, 400, '(3) a legacy [p:d.t] reference in a standard view: 400');
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'v1' },
		view => { query => "SELECT `i`, `rec.x` FROM `ds.types`", useLegacySql => JSON::PP::false } });
is($s, 200, '(3) a standard-SQL view (`d.t`; backquoted columns are no tables)') or diag(message($r));
bq_api($bq, 'DELETE', "$base/datasets/ds/tables/v1");
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'v1' },
		view => { query => $vq, useLegacySql => JSON::PP::false } });
is($s, 200, '(3) a standard-SQL view (`p.d.t`), again after a delete');
is($r->{type}, 'VIEW', '(3) type VIEW');

# Patch
my @patched = (@fields, { name => 'extra', type => 'STRING' });
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/types", { schema => { fields => \@patched } });
is($s, 200, '(3) patch adds a NULLABLE field') or diag(message($r));
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/types",
	{ schema => { fields => [ @patched, { name => 'must', type => 'STRING', mode => 'REQUIRED' } ] } });
is($s, 400, '(3) patch adding a REQUIRED field: 400');
like(message($r), qr/Cannot add required fields/, '(3) says so');
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/types",
	{ schema => { fields => [ @patched[ 1 .. $#patched ] ] } });
is($s, 400, '(3) patch dropping a field: 400');
like(message($r), qr/Field i is missing in new schema/, '(3) says which');
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/types",
	{ schema => { fields => [ { name => 'i', type => 'STRING' }, @patched[ 1 .. $#patched ] ] } });
is($s, 400, '(3) patch changing a type: 400');
like(message($r), qr/Field i has changed type from INTEGER to STRING/, '(3) says which');
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/types", { schema => { fields => \@patched } },
	headers => { 'If-Match' => 'stale' });
is($s, 412, '(3) a stale If-Match: 412');
bq_config($bq, { stream_after_patch => 0.5 });
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/types",
	{ schema => { fields => [ @patched, { name => 'extra2', type => 'STRING' } ] } });
push @patched, { name => 'extra2', type => 'STRING' };
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables/types/insertAll",
	{ rows => [ { json => { req => 'new column', extra2 => 'x' } } ] });
is($r->{insertErrors}[0]{errors}[0]{message}, 'no such field: extra2.',
	'(3) stream_after_patch: a column just added is unknown to streaming');
sleep 0.6;
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables/types/insertAll",
	{ rows => [ { json => { req => 'new column', extra2 => 'x' } } ] });
ok($s == 200 && !$r->{insertErrors}, '(3) and known a while later');
bq_config($bq, { stream_after_patch => 0 });

# ---------------------------------------------------------------------------
# (4) insertAll
my $ins = "$base/datasets/ds/tables/types/insertAll";
sub insert_rows
{
	my ($rows, %o) = @_;
	my $n = 0;
	return bq_api($bq, 'POST', $o{path} // $ins,
		{ rows => [ map { { insertId => $o{ids} ? $o{ids}[ $n++ ] : 'id' . rand(), json => $_ } } @$rows ],
			map { exists $o{$_} ? ($_ => $o{$_}) : () } qw(skipInvalidRows ignoreUnknownValues) });
}
sub dump_rows { return bq_dump($bq, 'ds', $_[0] // 'types')->{rows}; }

# [column, good value sent, value stored, [bad values]]
my @checks = (
	[ 'i', '9223372036854775807', 9223372036854775807, [ '9223372036854775808', 1.5, 'x', JSON::PP::true, '1.0', ' 1' ] ],
	[ 'f', '-Infinity', '-Infinity', [ 'abc', '1e400', 'nan', JSON::PP::false ] ],
	[ 'n', '-12345678901234567890123456789.123456789', '-12345678901234567890123456789.123456789',
		[ '1.0000000001', '123456789012345678901234567890', 1.5, 'NaN', '1,5' ] ],
	[ 'bn', '1.00000000000000000000000000000000000001', '1.00000000000000000000000000000000000001',
		[ '1e39', '0.000000000000000000000000000000000000001', 'Infinity' ] ],
	[ 'b', 'TRUE', JSON::PP::true, [ 'yes', 1, 't' ] ],
	[ 's', "caf\x{e9} \x{1F600}", "caf\x{e9} \x{1F600}", [ 12, JSON::PP::true ] ],
	[ 'by', encode_base64("\x00\xff\x10", ''), encode_base64("\x00\xff\x10", ''), [ 'AP8Q=', 'A*8Q', 'AP8' ] ],
	[ 'd', '2024-2-29', '2024-02-29', [ '2023-02-29', '10000-01-01', '2024-01-01 00:00:00', '0000-01-01', '2024-01-01 BC' ] ],
	[ 't', '23:59:59.999999', '23:59:59.999999', [ '24:00:00', '12:00', '12:00:00.1234567', '12:00:00+01' ] ],
	[ 'dt', '2024-01-02T03:04:05.5', '2024-01-02 03:04:05.5', [ '2024-01-02 03:04:05+00', '2024-13-01', 'infinity' ] ],
	[ 'ts', '2024-01-02 01:04:05.000001-02:00', '2024-01-02 03:04:05.000001+00',
		[ '9999-12-31 23:00:00-02:00', '2024-01-02 03:04:05.1234567Z', 'infinity', '2024-01-02 03:04:05 Mars/Olympus' ] ],
	[ 'j', '{"b": [1, 2.5, null], "a": "x"}', '{"a":"x","b":[1,2.5,null]}',
		[ '{"a": 123456789012345678901}', '{bad json}', 'NaN', { a => 1 } ] ],
	[ 'n52', '123.45', '123.45', [ '1234.5', '1.234' ] ]);
my $rows_before_checks = scalar @{ dump_rows() };
for my $c (@checks)
{
	my ($col, $good, $stored, $bads) = @$c;
	for my $bad (@$bads)
	{
		my $shown = ref $bad ? $json->encode($bad) : $bad;
		($s, $r) = insert_rows([ { req => 'r', $col => $bad } ]);
		my $e = $r->{insertErrors}[0]{errors}[0] // {};
		ok($s == 200 && ($e->{reason} // '') eq 'invalid' && ($e->{location} // '') eq $col,
			"(4) $col: $shown refused (invalid, at $col)")
		  or diag("$s " . $json->encode($r));
	}
	($s, $r) = insert_rows([ { req => 'r', $col => $good } ]);
	my ($g, $st) = map { JSON::PP->new->ascii->allow_nonref->encode($_) } $good, $stored;
	ok($s == 200 && !$r->{insertErrors}, "(4) $col: $g accepted")
	  or diag($json->encode($r));
	my $row = dump_rows()->[-1];
	is_deeply($row->{$col}, $stored, "(4) $col: stored as $st");
}
is(scalar @{ dump_rows() }, $rows_before_checks + @checks, '(4) no refused value was stored');
# FLOAT64 dumps as PostgreSQL prints a float8
insert_rows([ map { { req => 'float', f => $_ } } (1e15, 2, '0.1', 1e-5, '-0', '0.30000000000000004', 123456789012345) ]);
is_deeply([ map { $_->{f} } grep { $_->{req} eq 'float' } @{ dump_rows() } ],
	[ '1e+15', '2', '0.1', '1e-05', '-0', '0.30000000000000004', '123456789012345' ],
	'(4) FLOAT64 dumped as float8 text');
($s, $r) = insert_rows([ { req => 'dup', s => 'a', S => 'b' } ]);
like($r->{insertErrors}[0]{errors}[0]{message}, qr/Duplicate field/, '(4) a field twice (names ignore case) refused');

# Structure
($s, $r) = insert_rows([ { req => 'r', nope => 1 } ]);
is($r->{insertErrors}[0]{errors}[0]{message}, 'no such field: nope.', '(4) an unknown field refused');
($s, $r) = insert_rows([ { req => 'r', nope => 1 } ], ignoreUnknownValues => JSON::PP::true);
ok(!$r->{insertErrors}, '(4) accepted with ignoreUnknownValues');
($s, $r) = insert_rows([ { i => 1 } ]);
is($r->{insertErrors}[0]{errors}[0]{message}, 'Missing required field: req.', '(4) a missing REQUIRED field refused');
($s, $r) = insert_rows([ { req => undef } ]);
is($r->{insertErrors}[0]{errors}[0]{reason}, 'invalid', '(4) a null REQUIRED field refused');
($s, $r) = insert_rows([ { req => 'r', arr => [ 1, undef ] } ]);
is($r->{insertErrors}[0]{errors}[0]{location}, 'arr', '(4) a NULL array element refused');
($s, $r) = insert_rows([ { req => 'r', arr => 1 } ]);
is($r->{insertErrors}[0]{errors}[0]{location}, 'arr', '(4) a scalar for a REPEATED field refused');
($s, $r) = insert_rows([ { req => 'r', i => [1] } ]);
is($r->{insertErrors}[0]{errors}[0]{location}, 'i', '(4) an array for a scalar refused');
($s, $r) = insert_rows([ { req => 'r', rec => { x => 'y' } } ]);
is($r->{insertErrors}[0]{errors}[0]{location}, 'rec.x', '(4) a RECORD checked inside');
($s, $r) = insert_rows([ { req => 'r', arr => [ 1, '2' ], rec => { x => 3 }, I => 4 } ]);
ok(!$r->{insertErrors}, '(4) arrays, records, field names ignoring case');
is_deeply([ @{ dump_rows()->[-1] }{qw(arr rec i)} ], [ [ 1, 2 ], { x => 3 }, 4 ], '(4) stored typed');

# invalid + stopped
my $before = scalar @{ dump_rows() };
($s, $r) = insert_rows([ { req => 'a' }, { req => 'b', i => 'x' }, { req => 'c' } ]);
is_deeply([ map { $_->{errors}[0]{reason} } @{ $r->{insertErrors} } ], [ 'stopped', 'invalid', 'stopped' ],
	'(4) one bad row: it is invalid, the others stopped');
is(scalar @{ dump_rows() }, $before, '(4) and nothing was stored');
($s, $r) = insert_rows([ { req => 'a' }, { req => 'b', i => 'x' }, { req => 'c' } ],
	skipInvalidRows => JSON::PP::true);
is_deeply([ map { $_->{index} } @{ $r->{insertErrors} } ], [1], '(4) skipInvalidRows: only the bad row reported');
is(scalar @{ dump_rows() }, $before + 2, '(4) and the others stored');

# Limits
bq_config($bq, { max_rows => 3, max_request_bytes => 2000, max_row_bytes => 600 });
($s, $r) = insert_rows([ map { { req => "r$_" } } 1 .. 4 ]);
is($s, 400, '(4) more rows than max_rows: 400');
like(message($r), qr/too many rows present in the request, limit: 3 row count: 4/, '(4) says so');
($s, $r) = insert_rows([ { req => 'x' x 700 } ]);
like($r->{insertErrors}[0]{errors}[0]{message}, qr/Maximum allowed row size exceeded/, '(4) a row over max_row_bytes refused');
bq_config($bq, { max_row_bytes => 10485760 });
($s, $r) = insert_rows([ map { { req => 'y' x 700 } } 1 .. 3 ]);
is($s, 400, '(4) a request over max_request_bytes: 400');
like(message($r), qr/Request payload size exceeds the limit: 2000 bytes/, '(4) says so');
bq_config($bq, { max_rows => 50000, max_request_bytes => 10485760, max_row_bytes => 10485760 });

# check_values false (benchmarks): the request's shape is checked, not the fields
bq_config($bq, { check_values => JSON::PP::false });
($s, $r) = insert_rows([ { req => 'unchecked', i => 'not a number' } ]);
ok($s == 200 && !$r->{insertErrors}, '(4) check_values false: a wrong value is taken');
($s, $r) = insert_rows([ map { { req => "r$_" } } 1 .. 2 ], ids => [ 'x' x 200, 'y' ]);
is($s, 400, '(4) but not a request over its limits');
bq_config($bq, { check_values => JSON::PP::true });

# insertId de-duplication
$before = scalar @{ dump_rows() };
insert_rows([ { req => 'd1' }, { req => 'd2' } ], ids => [ 'A/1', 'A/2' ]);
($s, $r) = insert_rows([ { req => 'd2' }, { req => 'd3' } ], ids => [ 'A/2', 'A/3' ]);
ok(!$r->{insertErrors}, '(4) a replayed insertId is acknowledged');
is(scalar @{ dump_rows() }, $before + 3, '(4) but stored once');
is(bq_stats($bq)->{deduplicated}, 1, '(4) counted as deduplicated');
bq_config($bq, { dedup_seconds => 0.5 });
sleep 0.6;
insert_rows([ { req => 'd1' } ], ids => ['A/1']);
is(scalar @{ dump_rows() }, $before + 4, '(4) after the window, the same insertId is stored again');
bq_config($bq, { dedup_seconds => 60 });

# Injected faults
bq_fault($bq, { kind => 'row_error', value => 'poison', field => 'req', reason => 'invalid', message => 'poisoned', count => undef });
($s, $r) = insert_rows([ { req => 'ok' }, { req => 'poison' } ]);
is_deeply([ map { $_->{errors}[0]{reason} } @{ $r->{insertErrors} } ], [ 'stopped', 'invalid' ],
	'(4) a row_error fault: that row invalid, the other stopped');
bq_clear_faults($bq);
bq_fault($bq, { kind => 'status', status => 503, match => 'insertAll', retry_after => '2', count => 1 },
	{ kind => 'status', status => 429, match => 'insertAll', count => 1 });
($s, $r, my $h) = insert_rows([ { req => 'f' } ]);
is($s, 503, '(4) injected 503');
is($h->{'retry-after'}, '2', '(4) with Retry-After');
is(reason($r), 'backendError', '(4) reason backendError');
($s, $r) = insert_rows([ { req => 'f' } ]);
is($s, 429, '(4) then the injected 429');
is(reason($r), 'rateLimitExceeded', '(4) reason rateLimitExceeded');
($s, $r) = insert_rows([ { req => 'f' } ]);
is($s, 200, '(4) then served again');
bq_fault($bq, { kind => 'status', status => 403, reason => 'quotaExceeded', match => 'insertAll' },
	{ kind => 'status', status => 500, body => JSON::PP::false, match => 'insertAll' });
($s, $r) = insert_rows([ { req => 'f' } ]);
ok($s == 403 && reason($r) eq 'quotaExceeded' && message($r) =~ /^Quota exceeded/, '(4) injected 403 quotaExceeded');
($s, $r) = insert_rows([ { req => 'f' } ]);
ok($s == 500 && $r eq '', '(4) injected 500 without a body (as a front end sends)');
bq_fault($bq, { kind => 'reset', match => 'insertAll' });
($s, $r) = insert_rows([ { req => 'reset' } ]);
is($s, 599, '(4) injected reset: no answer');
bq_fault($bq, { kind => 'slow', seconds => 0.5, match => 'insertAll' });
my $t_slow = time();
($s, $r) = insert_rows([ { req => 'slow' } ]);
ok($s == 200 && time() - $t_slow >= 0.5, '(4) injected slowness: served after the wait');
bq_fault($bq, { kind => 'token_error', error => 'invalid_grant', message => 'Invalid JWT Signature.' },
	{ kind => 'status', status => 500, match => 'token' });
($s, $r) = insert_rows([ { req => 'not the token endpoint' } ]);
is($s, 200, '(4) token endpoint faults leave the API alone');
($s, $r) = bq_token($bq);
ok($s == 400 && $r->{error} eq 'invalid_grant', '(4) injected token endpoint refusal');
($s, $r) = bq_token($bq);
is($s, 500, '(4) injected token endpoint 500');
($s, $r) = bq_token($bq);
is($s, 200, '(4) then tokens again');
($s, $r) = insert_rows([ { req => 'v' } ], path => "$base/datasets/ds/tables/v1/insertAll");
is($s, 400, '(4) insertAll into a view: 400');
($s, $r) = bq_api($bq, 'POST', $ins, { rows => [ { insertId => 'x', json => { req => 'r' }, extra => 1 } ] });
is($s, 400, '(4) an unknown key in a row: 400');
# Transport: gzip, chunked, Expect: 100-continue (libcurl sends it for large bodies)
{
	my $payload = $json->encode({ rows => [ { insertId => 'gz', json => { req => 'gzipped' } } ] });
	my $gz;
	IO::Compress::Gzip::gzip(\$payload => \$gz) or die;
	($s, $r) = bq_api($bq, 'POST', $ins, undef, content => $gz,
		headers => { 'Content-Type' => 'application/json', 'Content-Encoding' => 'gzip' });
	ok($s == 200 && !$r->{insertErrors}, '(4) a gzip body is taken');
	($s, $r) = bq_api($bq, 'POST', $ins, undef, content => 'not gzip',
		headers => { 'Content-Type' => 'application/json', 'Content-Encoding' => 'gzip' });
	is($s, 400, '(4) a body that says gzip and is not: 400');
	my @pieces = ('{"rows": [{"insertId": "ch", ', '"json": {"req": "chunked"}}]}');
	($s, $r) = bq_api($bq, 'POST', $ins, undef, content => sub { shift @pieces },
		headers => { 'Content-Type' => 'application/json' });
	ok($s == 200 && !$r->{insertErrors}, '(4) a chunked body is taken');
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $bq->{port}) or die;
	$payload = $json->encode({ rows => [ { insertId => 'ex', json => { req => 'expect' } } ] });
	print $sock "POST $ins HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer $bq->{token}\r\n"
	  . "Content-Type: application/json\r\nContent-Length: " . length($payload)
	  . "\r\nExpect: 100-continue\r\n\r\n";
	my $interim = <$sock>;
	like($interim, qr{^HTTP/1.1 100 }, '(4) Expect: 100-continue is answered 100 Continue');
	<$sock>;
	print $sock $payload;
	my $final = <$sock>;
	like($final, qr{^HTTP/1.1 200 }, '(4) then the request is served');
	close $sock;
	my %got = map { $_->{req} => 1 } @{ dump_rows() };
	ok($got{gzipped} && $got{chunked} && $got{expect}, '(4) all three stored');
}
($s, $r) = insert_rows([ { req => 'long id' } ], ids => [ 'i' x 129 ]);
is($s, 400, '(4) an insertId over 128 characters: 400');
($s, $r) = bq_api($bq, 'POST', $ins, { rows => [ { json => { req => 'r' } } ] },
	headers => { 'Content-Type' => 'application/x-www-form-urlencoded' }, content => '{}');
is($s, 400, '(4) a body that is not application/json: 400');

# ---------------------------------------------------------------------------
# (5) Load jobs (Avro files written with python3-avro)
sub avro_file
{
	my ($name, $schema, $rows) = @_;
	my $path = "$dir/$name.avro";
	open(my $f, '>', "$dir/$name.json") or die;
	print $f $json->encode({ schema => $schema, rows => $rows });
	close $f;
	my $py = <<'PY';
import json, sys, warnings
import avro.datafile, avro.io, avro.schema
warnings.simplefilter("ignore")
spec = json.load(open(sys.argv[1]))
def raw(s):  # the schema without logical types: raw numbers and bytes are written
    if isinstance(s, dict):
        return {k: raw(v) for k, v in s.items() if k != "logicalType"}
    if isinstance(s, list):
        return [raw(v) for v in s]
    return s
schema = avro.schema.parse(json.dumps(raw(spec["schema"])))
w = avro.datafile.DataFileWriter(open(sys.argv[2], "wb"), avro.io.DatumWriter(), schema, codec="deflate")
w.schema = json.dumps(spec["schema"])  # the header keeps them, as avro-c can write it
byte_fields = {f["name"] for f in spec["schema"]["fields"]
               if "bytes" in json.dumps(f["type"])}
for r in spec["rows"]:
    w.append({k: v.encode("latin-1") if k in byte_fields and isinstance(v, str) else v
              for k, v in r.items()})
w.close()
PY
	system('python3', '-c', $py, "$dir/$name.json", $path) == 0 or die "avro $name";
	open(my $in, '<:raw', $path) or die;
	local $/;
	my $data = <$in>;
	close $in;
	return $data;
}

($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'loaded' },
		schema => { fields => [ { name => 'id', type => 'INT64', mode => 'REQUIRED' },
				{ name => 'name', type => 'STRING' }, { name => 'at', type => 'TIMESTAMP' },
				{ name => 'amount', type => 'NUMERIC' }, { name => 'tags', type => 'STRING', mode => 'REPEATED' } ] } });
is($s, 200, '(5) table for loads');
my $schema = { type => 'record', name => 'r', fields => [
		{ name => 'id', type => 'long' },
		{ name => 'name', type => [ 'null', 'string' ] },
		{ name => 'at', type => [ 'null', { type => 'long', logicalType => 'timestamp-micros' } ] },
		{ name => 'amount', type => [ 'null', { type => 'bytes', logicalType => 'decimal', precision => 38, scale => 9 } ] },
		{ name => 'tags', type => { type => 'array', items => 'string' } } ] };
my $good = avro_file('good', $schema, [
		{ id => 1, name => 'one', at => 1700000000123456, amount => undef, tags => [ 'a', 'b' ] },
		{ id => 2, name => undef, at => undef, amount => undef, tags => [] } ]);

sub load_conf
{
	my ($job_id, %o) = @_;
	return { jobReference => { projectId => $P, jobId => $job_id },
		configuration => { load => { destinationTable => { projectId => $P, datasetId => 'ds', tableId => $o{table} // 'loaded' },
				sourceFormat => 'AVRO', useAvroLogicalTypes => $o{logical} // JSON::PP::true,
				writeDisposition => 'WRITE_APPEND', %{ $o{load} // {} } } } };
}
sub multipart
{
	my ($job_id, $data, %o) = @_;
	my $b = 'pgsink_boundary_42';
	my $body = "--$b\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
	  . $json->encode(load_conf($job_id, %o)) . "\r\n--$b\r\nContent-Type: application/octet-stream\r\n\r\n"
	  . $data . "\r\n--$b--\r\n";
	return bq_api($bq, 'POST', "/upload/bigquery/v2/projects/$P/jobs?uploadType=multipart", undef,
		headers => { 'Content-Type' => "multipart/related; boundary=$b" }, content => $body);
}
sub wait_job
{
	my ($job_id) = @_;
	my @states;
	for (1 .. 100)
	{
		my ($st, $job) = bq_api($bq, 'GET', "$base/jobs/$job_id?location=EU");
		push @states, $job->{status}{state} unless @states && $states[-1] eq $job->{status}{state};
		return ($job, \@states) if $job->{status}{state} eq 'DONE';
		usleep(50_000);
	}
	die "job $job_id never done";
}

($s, $r) = multipart('load_1', $good);
is($s, 200, '(5) multipart load job inserted') or diag($json->encode($r));
is($r->{status}{state}, 'PENDING', '(5) PENDING first');
my ($job, $states) = wait_job('load_1');
is_deeply($states, [ 'PENDING', 'RUNNING', 'DONE' ], '(5) then RUNNING, then DONE');
bq_config($bq, { job_seconds => 0.06 });  # quicker from here on
ok(!$job->{status}{errorResult}, '(5) without error') or diag($json->encode($job->{status}));
is($job->{statistics}{load}{outputRows}, '2', '(5) two rows loaded');
is_deeply(dump_rows('loaded'), [
		{ id => 1, name => 'one', at => '2023-11-14 22:13:20.123456+00', amount => undef, tags => [ 'a', 'b' ] },
		{ id => 2, name => undef, at => undef, amount => undef, tags => [] } ],
	'(5) the rows, typed');
($s, $r) = multipart('load_1', $good);
is($s, 409, '(5) the same job id again: 409');
is(message($r), "Already Exists: Job $P:EU.load_1", '(5) Already Exists');
usleep(400_000);
is(scalar @{ dump_rows('loaded') }, 2, '(5) and nothing loaded twice');
bq_fault($bq, { kind => 'apply_then_drop', match => 'jobs.insert' });
($s, $r) = multipart('dropped', $good);
is($s, 599, '(5) apply_then_drop: the job is inserted, the answer lost');
ok((grep { $_->{jobId} eq 'dropped' } @{ bq_jobs($bq) }), '(5) the job exists');
($s, $r) = multipart('dropped', $good);
is($s, 409, '(5) sent again: 409, the exactly-once lever');
wait_job('dropped');
($s, $r) = bq_api($bq, 'GET', "$base/jobs/load_1?location=US");
is($s, 404, '(5) jobs.get in another location: 404');

# Resumable, in two chunks
($s, $r, $h) = bq_api($bq, 'POST', "/upload/bigquery/v2/projects/$P/jobs?uploadType=resumable", load_conf('load_2'));
is($s, 200, '(5) resumable session started');
my ($session) = $h->{location} =~ m{^http://[^/]+(/.*)$};
ok($session && $session =~ /upload_id=/, '(5) its URI in Location');
my $half = int(length($good) / 2);
my $total = length($good);
($s, $r, $h) = bq_api($bq, 'PUT', $session, undef, content => substr($good, 0, $half),
	headers => { 'Content-Range' => "bytes 0-" . ($half - 1) . "/$total", 'Content-Type' => 'application/octet-stream' });
is($s, 308, '(5) first chunk: 308 Resume Incomplete');
is($h->{range}, 'bytes=0-' . ($half - 1), '(5) with Range');
($s, $r) = bq_api($bq, 'PUT', $session, undef, content => substr($good, $half),
	headers => { 'Content-Range' => "bytes $half-" . ($total - 1) . "/$total", 'Content-Type' => 'application/octet-stream' });
is($s, 200, '(5) last chunk: the job');
($job) = wait_job('load_2');
is($job->{statistics}{load}{outputRows}, '2', '(5) resumable load done');
($s, $r, $h) = bq_api($bq, 'POST', "/upload/bigquery/v2/projects/$P/jobs?uploadType=resumable", load_conf('load_2'));
($s, $r) = bq_api($bq, 'PUT', ($h->{location} =~ m{^http://[^/]+(/.*)$})[0], undef, content => $good,
	headers => { 'Content-Type' => 'application/octet-stream' });
is($s, 409, '(5) a resumable upload of an existing job id: 409 on the final request');
# the status of a session, and a size other than announced
($s, $r, $h) = bq_api($bq, 'POST', "/upload/bigquery/v2/projects/$P/jobs?uploadType=resumable", load_conf('load_4'),
	headers => { 'X-Upload-Content-Length' => $total + 1 });
my ($session4) = $h->{location} =~ m{^http://[^/]+(/.*)$};
($s, $r, $h) = bq_api($bq, 'PUT', $session4, undef, content => substr($good, 0, 10),
	headers => { 'Content-Range' => "bytes 0-9/*" });
($s, $r, $h) = bq_api($bq, 'PUT', $session4, undef, content => '', headers => { 'Content-Range' => "bytes */$total" });
ok($s == 308 && $h->{range} eq 'bytes=0-9', '(5) a session\'s status: 308 with the Range received');
($s, $r) = bq_api($bq, 'PUT', $session4, undef, content => substr($good, 10),
	headers => { 'Content-Range' => "bytes 10-" . ($total - 1) . "/$total" });
is($s, 400, '(5) an upload of another size than X-Upload-Content-Length announced: 400');
($s, $r) = bq_api($bq, 'POST', "$base/jobs", load_conf('load_3'));
is($s, 400, '(5) a load without media (sourceUris): 400');

# Mismatching Avro schemas fail the job; nothing is loaded
my $n_loaded = scalar @{ dump_rows('loaded') };
my @mismatch = (
	[ 'name as long', [ { name => 'id', type => 'long' }, { name => 'name', type => 'long' },
			{ name => 'tags', type => { type => 'array', items => 'string' } } ],
		[ { id => 5, name => 7, tags => [] } ], qr/Field name has changed type from STRING to INTEGER/ ],
	[ 'nullable id', [ { name => 'id', type => [ 'null', 'long' ] }, { name => 'tags', type => { type => 'array', items => 'string' } } ],
		[ { id => 5, tags => [] } ], qr/Field id has changed mode from REQUIRED to NULLABLE/ ],
	[ 'an extra field', [ { name => 'id', type => 'long' }, { name => 'zzz', type => 'string' },
			{ name => 'tags', type => { type => 'array', items => 'string' } } ],
		[ { id => 5, zzz => 'z', tags => [] } ], qr/Cannot add fields \(field: zzz\)/ ],
	[ 'no REQUIRED id', [ { name => 'name', type => 'string' } ], [ { name => 'x' } ], qr/Field id is missing/ ],
	[ 'a decimal too wide for NUMERIC', [ { name => 'id', type => 'long' },
			{ name => 'amount', type => { type => 'bytes', logicalType => 'decimal', precision => 40, scale => 2 } } ],
		[ { id => 5, amount => "\x01" } ], qr/Field amount has changed type from NUMERIC to BIGNUMERIC/ ],
	[ 'a decimal value wider than its precision', [ { name => 'id', type => 'long' },
			{ name => 'amount', type => { type => 'bytes', logicalType => 'decimal', precision => 5, scale => 2 } },
			{ name => 'tags', type => { type => 'array', items => 'string' } } ],
		[ { id => 5, amount => "\x12\xd6\x87", tags => [] } ], qr/more than 5 digits/ ],
	[ 'a nullable array', [ { name => 'id', type => 'long' }, { name => 'tags', type => [ 'null', { type => 'array', items => 'string' } ] } ],
		[ { id => 5, tags => undef } ], qr/nullable array/ ]);
my $k = 10;
for my $m (@mismatch)
{
	my ($label, $fields, $rows, $re) = @$m;
	my $data = avro_file("bad$k", { type => 'record', name => 'r', fields => $fields }, $rows);
	($s, $r) = multipart("bad_$k", $data);
	is($s, 200, "(5) $label: job accepted");
	($job) = wait_job("bad_$k");
	is($job->{status}{errorResult}{reason}, 'invalid', "(5) $label: the job fails");
	like($job->{status}{errorResult}{message}, $re, "(5) $label: says why");
	$k++;
}
($s, $r) = multipart('no_logical', $good, logical => JSON::PP::false);
($job) = wait_job('no_logical');
like($job->{status}{errorResult}{message}, qr/Field at has changed type from TIMESTAMP to INTEGER/,
	'(5) timestamp-micros without useAvroLogicalTypes is an INTEGER: the job fails');
($s, $r) = multipart('garbage', 'not avro at all');
($job) = wait_job('garbage');
like($job->{status}{errorResult}{message}, qr/Avro/, '(5) a file that is no Avro fails the job');
# A file written by avro-c (Debian's libavro, which pgsink links): it writes
# unions as [{"type":"null"},...] and drops logical types from the header.
{
	open(my $c, '>', "$dir/avroc.c") or die;
	print $c <<'C';
#include <avro.h>
#include <string.h>
int main(int argc, char **argv)
{
	const char *js = "{\"type\":\"record\",\"name\":\"r\",\"fields\":["
		"{\"name\":\"id\",\"type\":\"long\"},"
		"{\"name\":\"at\",\"type\":[\"null\",{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}]},"
		"{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"}}]}";
	avro_schema_t schema;
	avro_file_writer_t w;
	avro_value_iface_t *iface;
	avro_value_t v, f, b, e;
	if (avro_schema_from_json_length(js, strlen(js), &schema) ||
		avro_file_writer_create_with_codec(argv[1], schema, &w, "deflate", 0))
		return 1;
	iface = avro_generic_class_from_schema(schema);
	avro_generic_value_new(iface, &v);
	for (int i = 1; i <= 3; i++)
	{
		avro_value_get_by_name(&v, "id", &f, NULL);
		avro_value_set_long(&f, i);
		avro_value_get_by_name(&v, "at", &f, NULL);
		avro_value_set_branch(&f, 1, &b);
		avro_value_set_long(&b, 1700000000000000LL + i);
		avro_value_get_by_name(&v, "tags", &f, NULL);
		avro_value_reset(&f);
		avro_value_append(&f, &e, NULL);
		avro_value_set_string(&e, "t");
		if (avro_file_writer_append_value(w, &v))
			return 1;
	}
	return avro_file_writer_close(w);
}
C
	close $c;
	system('cc', '-o', "$dir/avroc", "$dir/avroc.c", '-lavro') == 0 or die 'cc avroc.c';
	system("$dir/avroc", "$dir/avroc.avro") == 0 or die 'avroc';
	open(my $in, '<:raw', "$dir/avroc.avro") or die;
	my $data = do { local $/; <$in> };
	close $in;
	unlike($data, qr/logicalType/, '(5) avro-c left the logical type out of the header');
	($s, $r) = multipart('avroc_ts', $data);
	($job) = wait_job('avroc_ts');
	like($job->{status}{errorResult}{message}, qr/Field at has changed type from TIMESTAMP to INTEGER/,
		'(5) so its file does not load into a TIMESTAMP column');
	($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
		{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'loaded_c' },
			schema => { fields => [ { name => 'id', type => 'INT64', mode => 'REQUIRED' },
					{ name => 'at', type => 'INT64' }, { name => 'tags', type => 'STRING', mode => 'REPEATED' } ] } });
	($s, $r) = multipart('avroc_int', $data, table => 'loaded_c');
	($job) = wait_job('avroc_int');
	ok(!$job->{status}{errorResult}, '(5) into an INT64 column it loads') or diag($json->encode($job->{status}));
	is_deeply(dump_rows('loaded_c')->[2], { id => 3, at => 1700000000000003, tags => ['t'] },
		'(5) the rows avro-c wrote');
}
($s, $r) = multipart('truncated', substr($good, 0, length($good) - 20));
($job) = wait_job('truncated');
like($job->{status}{errorResult}{message}, qr/truncated|sync marker/, '(5) a truncated Avro file fails the job');
bq_config($bq, { load_check => 'schema' });
($s, $r) = multipart('counted', $good);
($job) = wait_job('counted');
is($job->{statistics}{load}{outputRows}, '2', '(5) load_check schema: rows counted from the blocks');
($s, $r) = multipart('counted_bad', avro_file("bad10", { type => 'record', name => 'r', fields => $mismatch[0][1] }, $mismatch[0][2]));
($job) = wait_job('counted_bad');
like($job->{status}{errorResult}{message}, $mismatch[0][3], '(5) load_check schema: the schema still checked');
bq_config($bq, { load_check => 'full' });
is(bq_dump($bq, 'ds', 'loaded')->{num_rows}, $n_loaded + 2, '(5) counted rows count in num_rows');
# Dispositions, field addition, NDJSON
{
	my $ndjson = qq({"id": "7", "name": "seven", "at": "2024-01-01T00:00:00Z", "tags": ["x"]}\n{"id": 8, "tags": []}\n);
	my %nd = (load => { sourceFormat => 'NEWLINE_DELIMITED_JSON',
			schema => { fields => [ { name => 'id', type => 'INT64', mode => 'REQUIRED' }, { name => 'name', type => 'STRING' },
					{ name => 'at', type => 'TIMESTAMP' }, { name => 'tags', type => 'STRING', mode => 'REPEATED' } ] } });
	($s, $r) = multipart('nd_create', $ndjson, table => 'created_by_load', %nd);
	($job) = wait_job('nd_create');
	is($job->{statistics}{load}{outputRows}, '2', '(5) NDJSON load into a table it creates (CREATE_IF_NEEDED, its schema)')
	  or diag($json->encode($job->{status}));
	is_deeply(dump_rows('created_by_load')->[0], { id => 7, name => 'seven', at => '2024-01-01 00:00:00+00', tags => ['x'] },
		'(5) NDJSON values checked and typed');
	($s, $r) = multipart('nd_bad', qq({"id": "x", "tags": []}\n), table => 'created_by_load', %nd);
	($job) = wait_job('nd_bad');
	like($job->{status}{errorResult}{message}, qr/too many errors.*Field: id/, '(5) a bad NDJSON value fails the job');
	$nd{load}{writeDisposition} = 'WRITE_EMPTY';
	($s, $r) = multipart('nd_empty', $ndjson, table => 'created_by_load', %nd);
	($job) = wait_job('nd_empty');
	is($job->{status}{errorResult}{reason}, 'duplicate', '(5) WRITE_EMPTY into a table with rows fails');
	$nd{load}{writeDisposition} = 'WRITE_TRUNCATE';
	($s, $r) = multipart('nd_truncate', qq({"id": 9, "tags": []}\n), table => 'created_by_load', %nd);
	($job) = wait_job('nd_truncate');
	is_deeply([ map { $_->{id} } @{ dump_rows('created_by_load') } ], [9], '(5) WRITE_TRUNCATE replaces the rows');
	$nd{load}{createDisposition} = 'CREATE_NEVER';
	($s, $r) = multipart('nd_never', $ndjson, table => 'not_there', %nd);
	($job) = wait_job('nd_never');
	is($job->{status}{errorResult}{reason}, 'notFound', '(5) CREATE_NEVER into a missing table fails');
	my $wider = avro_file('wider', { type => 'record', name => 'r', fields => [ @{ $schema->{fields} },
				{ name => 'extra', type => [ 'null', 'string' ] } ] },
		[ { id => 20, name => undef, at => undef, amount => undef, tags => [], extra => 'e' } ]);
	($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
		{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'loaded_c2' },
			schema => { fields => [ @{ bq_dump($bq, 'ds', 'loaded')->{schema} } ] } });
	($s, $r) = multipart('wider_added', $wider, table => 'loaded_c2', load => { schemaUpdateOptions => ['ALLOW_FIELD_ADDITION'] });
	($job) = wait_job('wider_added');
	ok(!$job->{status}{errorResult}, '(5) ALLOW_FIELD_ADDITION: a field the table lacks is added') or diag($json->encode($job->{status}));
	($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds/tables/loaded_c2");
	is_deeply($r->{schema}{fields}[-1], { name => 'extra', type => 'STRING', mode => 'NULLABLE' }, '(5) NULLABLE');
	is(dump_rows('loaded_c2')->[0]{extra}, 'e', '(5) with its value');
	my $nullable_id = avro_file('nullable_id', { type => 'record', name => 'r', fields => [
				{ name => 'id', type => [ 'null', 'long' ] }, { name => 'tags', type => { type => 'array', items => 'string' } } ] },
		[ { id => undef, tags => [] } ]);
	($s, $r) = multipart('relaxed', $nullable_id, table => 'loaded_c2', load => { schemaUpdateOptions => ['ALLOW_FIELD_RELAXATION'] });
	($job) = wait_job('relaxed');
	ok(!$job->{status}{errorResult}, '(5) ALLOW_FIELD_RELAXATION: a nullable field into a REQUIRED column loads')
	  or diag($json->encode($job->{status}));
	($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds/tables/loaded_c2");
	is($r->{schema}{fields}[0]{mode}, 'NULLABLE', '(5) and the column is NULLABLE now');
}
bq_fault($bq, { kind => 'job_error', reason => 'backendError', message => 'try again' });
($s, $r) = multipart('faulted', $good);
($job) = wait_job('faulted');
is($job->{status}{errorResult}{reason}, 'backendError', '(5) an injected job error');
is(bq_dump($bq, 'ds', 'loaded')->{num_rows}, $n_loaded + 2, '(5) no failed job loaded a row');
($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds/tables/loaded");
is($r->{numRows}, $n_loaded + 2, '(5) tables.get: numRows counts loaded rows');
($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds/tables/types");
ok($r->{numRows} eq '0' && $r->{streamingBuffer}{estimatedRows} > 0,
	'(5) streamed rows are in the streaming buffer, not in numRows');

# ---------------------------------------------------------------------------
# (6) The view rule on a hand-made raw table
my @raw_fields = (
	{ name => 'id', type => 'INT64' }, { name => 'k2', type => 'STRING' },
	{ name => 'v', type => 'STRING' }, { name => 'big', type => 'STRING' },
	{ name => '_pgsink_lsn', type => 'INT64', mode => 'REQUIRED' },
	{ name => '_pgsink_sequence', type => 'INT64', mode => 'REQUIRED' },
	{ name => '_pgsink_op', type => 'STRING', mode => 'REQUIRED' },
	{ name => '_pgsink_timestamp', type => 'TIMESTAMP', mode => 'REQUIRED' },
	{ name => '_pgsink_xid', type => 'INT64' },
	{ name => '_pgsink_unchanged', type => 'STRING', mode => 'REPEATED' });
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'public_t_raw' },
		schema => { fields => \@raw_fields },
		timePartitioning => { type => 'DAY', field => '_pgsink_timestamp' } });
is($s, 200, '(6) raw table') or diag(message($r));
my $view_sql = <<"SQL";
SELECT * EXCEPT (_pgsink_op, _pgsink_unchanged, rn) FROM (
  SELECT id, k2, v,
    IF('big' IN UNNEST(_pgsink_unchanged),
       LAST_VALUE(IF('big' IN UNNEST(_pgsink_unchanged), NULL, big) IGNORE NULLS)
         OVER (PARTITION BY id, k2 ORDER BY _pgsink_lsn, _pgsink_sequence), big) AS big,
    _pgsink_op, _pgsink_unchanged,
    ROW_NUMBER() OVER (PARTITION BY id, k2 ORDER BY _pgsink_lsn DESC, _pgsink_sequence DESC) AS rn
  FROM `$P.ds.public_t_raw`
  WHERE (_pgsink_lsn, _pgsink_sequence) > (SELECT ...last truncate...))
WHERE rn = 1 AND _pgsink_op != 'delete'
SQL
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'public_t' },
		view => { query => $view_sql, useLegacySql => JSON::PP::false } });
is($s, 200, '(6) its view') or diag(message($r));
my $ts = '2026-11-30 12:00:00+00';
sub change
{
	my ($lsn, $seq, $op, $row, @unchanged) = @_;
	return { %$row, _pgsink_lsn => $lsn, _pgsink_sequence => $seq, _pgsink_op => $op,
		_pgsink_timestamp => $ts, _pgsink_xid => 700 + $lsn, _pgsink_unchanged => \@unchanged };
}
my $raw_ins = "$base/datasets/ds/tables/public_t_raw/insertAll";
my @changes = (
	change(100, 1, 'insert', { id => 1, k2 => 'a', v => 'one', big => 'BIG-1' }),
	change(100, 2, 'insert', { id => 2, k2 => 'a', v => 'two', big => 'BIG-2' }),
	change(100, 3, 'insert', { id => 3, k2 => 'a', v => 'three', big => 'BIG-3' }),
	change(110, 1, 'import', { id => 4, k2 => 'b', v => 'four', big => 'BIG-4' }),
	change(200, 1, 'truncate', {}),
	change(210, 1, 'insert', { id => 1, k2 => 'a', v => 'one again', big => 'NEW-1' }),
	change(210, 2, 'insert', { id => 2, k2 => 'a', v => 'two again', big => 'NEW-2' }),
	change(210, 3, 'insert', { id => 5, k2 => 'a', v => 'five', big => 'BIG-5' }),
	change(220, 1, 'update', { id => 1, k2 => 'a', v => 'one updated', big => undef }, 'big'),
	change(230, 1, 'update', { id => 1, k2 => 'a', v => 'one updated twice', big => undef }, 'big'),
	change(240, 1, 'delete', { id => 2, k2 => 'a' }),
	# a key change: the old key deleted, the new one updated, same (lsn, sequence)
	change(250, 1, 'delete', { id => 5, k2 => 'a' }),
	change(250, 1, 'update', { id => 5, k2 => 'z', v => 'five moved', big => 'BIG-5' }),
	# an update whose unchanged value was never sent for its key
	change(260, 1, 'update', { id => 6, k2 => 'a', v => 'six', big => undef }, 'big'));
# Sent out of order, in two requests (replays and imports come late).
($s, $r) = bq_api($bq, 'POST', $raw_ins,
	{ rows => [ map { { insertId => "$_->{_pgsink_lsn}/$_->{_pgsink_sequence}/$_->{_pgsink_op}", json => $_ } } reverse @changes[ 7 .. $#changes ] ] });
ok(!$r->{insertErrors}, '(6) raw rows streamed') or diag($json->encode($r));
($s, $r) = bq_api($bq, 'POST', $raw_ins,
	{ rows => [ map { { insertId => "$_->{_pgsink_lsn}/$_->{_pgsink_sequence}/$_->{_pgsink_op}", json => $_ } } @changes[ 0 .. 6 ] ] });
ok(!$r->{insertErrors}, '(6) the rest too');
($s, $r) = bq_api($bq, 'POST', $raw_ins, { rows => [ { json => { %{ change(300, 1, 'insert', { id => 9, k2 => 'old' }) },
				_pgsink_timestamp => '2015-01-01 00:00:00+00' } } ] });
like($r->{insertErrors}[0]{errors}[0]{message}, qr/outside the allowed bounds/,
	'(6) streaming into a partition years old is refused');
my $cur = bq_current($bq, 'ds', 'public_t', key => [ 'id', 'k2' ]);
is_deeply([ map { bq_row_line($_, [qw(id k2 v big)]) } @{ $cur->{rows} } ],
	[ '1|a|one updated twice|NEW-1', '5|z|five moved|BIG-5', '6|a|six|\\N' ],
	'(6) current rows: after the truncate, latest per key, deletes gone, TOAST carried twice, key change');
is_deeply($cur->{unresolved}, [ { key => [ 6, 'a' ], column => 'big' } ],
	'(6) the unchanged value never sent is reported unresolved');
is_deeply($cur->{columns}, [qw(id k2 v big)], '(6) the row columns');
is_deeply($cur->{ambiguous}, [], '(6) nothing ambiguous');
# A replay past the insertId window stores the same changes again: harmless.
($s, $r) = bq_api($bq, 'POST', $raw_ins,
	{ rows => [ map { { insertId => "replay/$_->{_pgsink_lsn}/$_->{_pgsink_sequence}/$_->{_pgsink_op}", json => $_ } } @changes ] });
my $again = bq_current($bq, 'ds', 'public_t', key => [ 'id', 'k2' ]);
is_deeply([ $again->{rows}, $again->{unresolved}, $again->{ambiguous} ], [ $cur->{rows}, $cur->{unresolved}, [] ],
	'(6) every change stored twice: the same rows, nothing ambiguous');
is_deeply(bq_current_lines($bq, 'ds', 'public_t', key => [ 'id', 'k2' ], columns => [qw(id v)]),
	[ '1|one updated twice', '5|five moved', '6|six' ], '(6) bq_current_lines');

# jobs.query: the one shape pgsink sends (a key change's unchanged values),
# computed from the raw rows; anything else refused.
sub lookup_part
{
	my ($n, @cols) = @_;
	return "SELECT $n AS _pgsink_n"
	  . join('', map { ", ARRAY_AGG(IF(_pgsink_op = 'delete' OR \"$_\" IN UNNEST(_pgsink_unchanged), NULL, "
		  . "STRUCT(`$_` AS v)) IGNORE NULLS ORDER BY _pgsink_lsn DESC, _pgsink_sequence DESC LIMIT 1) AS `$_`" } @cols)
	  . " FROM `$P.ds.public_t_raw` WHERE `id` = \@k${n}_0 AND `k2` = \@k${n}_1 AND "
	  . "(_pgsink_lsn < \@l$n OR (_pgsink_lsn = \@l$n AND _pgsink_sequence < \@s$n))";
}
sub qparam { my ($name, $type, $value) = @_; return { name => $name, parameterType => { type => $type }, parameterValue => { value => "$value" } }; }
my @lookups = ([ 1, 'a', 230, 1 ], [ 5, 'z', 250, 2 ], [ 2, 'a', 300, 1 ], [ 6, 'a', 300, 1 ], [ 1, 'a', 100, 1 ]);
my @qparams = map {
	my ($n, $l) = ($_, $lookups[$_]);
	(qparam("k${n}_0", 'INT64', $l->[0]), qparam("k${n}_1", 'STRING', $l->[1]),
	 qparam("l$n", 'INT64', $l->[2]), qparam("s$n", 'INT64', $l->[3]))
} 0 .. $#lookups;
my %query = (query => join(' UNION ALL ', map { lookup_part($_, 'big', 'v') } 0 .. $#lookups),
	useLegacySql => JSON::PP::false, parameterMode => 'NAMED', queryParameters => \@qparams,
	formatOptions => { useInt64Timestamp => JSON::PP::true }, location => 'EU');
($s, $r) = bq_api($bq, 'POST', "$base/queries", \%query);
is($s, 200, '(6) jobs.query of the lookup shape') or diag(message($r));
ok($r->{jobComplete} && $r->{jobReference}{jobId}, '(6) complete, with its job');
is_deeply([ map { $_->{name} . ($_->{fields} ? ':' . $_->{fields}[0]{type} : '') } @{ $r->{schema}{fields} } ],
	[ '_pgsink_n', 'big:STRING', 'v:STRING' ], '(6) the schema: each column an array of STRUCT<v>');
my %got = map {
	my $f = $_->{f};
	($f->[0]{v} => join(',', map { my $c = $_->{v}; @$c ? ($c->[0]{v}{f}[0]{v} // 'NULL') : '-' } @$f[ 1 .. 2 ]))
} @{ $r->{rows} };
is_deeply(\%got, { 0 => 'NEW-1,one updated', 1 => 'BIG-5,five moved', 2 => 'NEW-2,two again', 3 => '-,six', 4 => '-,-' },
	'(6) per lookup: the latest value sent before (lsn, sequence), deletes and unchanged skipped; [] when none');
for my $bad (
	[ 'other SQL', { %query, query => 'SELECT 1' } ],
	[ 'a value pasted into the SQL', { %query, query => lookup_part(0, 'big') =~ s/\@k0_0/1/r } ],
	[ 'legacy SQL', { %query, useLegacySql => JSON::PP::true } ],
	[ 'an undefined parameter', { %query, queryParameters => [ @qparams[ 1 .. $#qparams ] ] } ],
	[ 'a parameter of another type', { %query, queryParameters => [ qparam('k0_0', 'STRING', '1'), @qparams[ 1 .. $#qparams ] ] } ],
	[ 'parts with other columns', { %query, query => lookup_part(0, 'big') . ' UNION ALL ' . lookup_part(1, 'v') } ],
	[ 'an unknown key', { %query, bogus => 1 } ])
{
	($s, $r) = bq_api($bq, 'POST', "$base/queries", $bad->[1]);
	is($s, 400, "(6) jobs.query refuses $bad->[0]");
}
($s, $r) = bq_api($bq, 'POST', "$base/queries", { %query, location => 'US' });
is($s, 404, '(6) jobs.query in another location than the dataset\'s: 404');
# Paged, and not done at once.
bq_config($bq, { query_page_rows => 2, query_seconds => 1 });
($s, $r) = bq_api($bq, 'POST', "$base/queries", \%query);
ok($s == 200 && !$r->{jobComplete} && !$r->{rows}, '(6) a query not done yet: jobComplete false, no rows');
my $job = $r->{jobReference}{jobId};
($s, $r) = bq_api($bq, 'GET', "$base/queries/$job?location=EU&formatOptions.useInt64Timestamp=true");
ok($s == 200 && !$r->{jobComplete}, '(6) getQueryResults: not yet');
sleep(1.1);
my @pages;
my $token;
do
{
	($s, $r) = bq_api($bq, 'GET', "$base/queries/$job?location=EU" . (defined $token ? "&pageToken=$token" : ''));
	push @pages, scalar(@{ $r->{rows} // [] });
	$token = $r->{pageToken};
} while ($s == 200 && defined $token && @pages < 10);
is_deeply(\@pages, [ 2, 2, 1 ], '(6) then paged by pageToken, totalRows ' . ($r->{totalRows} // '?'));
($s, $r) = bq_api($bq, 'GET', "$base/queries/$job?bogus=1");
is($s, 400, '(6) getQueryResults refuses unknown parameters');
($s, $r) = bq_api($bq, 'GET', "$base/queries/nosuchjob");
is($s, 404, '(6) an unknown query job: 404');
bq_config($bq, { query_page_rows => 100000, query_seconds => 0 });

# The helper that compares a view with a psql query (a plain PostgreSQL, no pgsink)
{
	my $node = PostgreSQL::Test::Cluster->new('plain');
	$node->init;
	$node->start;
	$node->safe_psql('postgres', q{
CREATE TABLE t (id int, k2 text, v text, big text, PRIMARY KEY (id, k2));
INSERT INTO t VALUES (1, 'a', 'one updated twice', 'NEW-1'), (5, 'z', 'five moved', 'BIG-5'),
                     (6, 'a', 'six', NULL);});
	is_deeply(bq_current_lines($bq, 'ds', 'public_t', key => [ 'id', 'k2' ], columns => [qw(id k2 v big)]),
		psql_lines($node, 'postgres', 'SELECT id, k2, v, big FROM t'),
		'(6) bq_current_lines equals psql_lines of the same rows (NULL as \\N)');
	$node->safe_psql('postgres', q{UPDATE t SET v = 'other' WHERE id = 6});
	isnt(join("\n", @{ bq_current_lines($bq, 'ds', 'public_t', key => [ 'id', 'k2' ], columns => [qw(id k2 v big)]) }),
		join("\n", @{ psql_lines($node, 'postgres', 'SELECT id, k2, v, big FROM t') }),
		'(6) and differs when a value differs');
	$node->stop;
}

($s, $r) = bq_api($bq, 'POST', $raw_ins,
	{ rows => [ { insertId => 'rival', json => change(230, 1, 'update', { id => 1, k2 => 'a', v => 'a rival', big => undef }, 'big') } ] });
is_deeply(bq_current($bq, 'ds', 'public_t', key => [ 'id', 'k2' ])->{ambiguous},
	[ { key => [ 1, 'a' ], lsn => 230, sequence => 1, rows => 2 } ],
	'(6) two different rows at one key\'s latest (lsn, sequence) are reported ambiguous');

# A column added later: the rows stored before it read as NULL there
($s, $r) = bq_api($bq, 'PATCH', "$base/datasets/ds/tables/public_t_raw",
	{ schema => { fields => [ @raw_fields, { name => 'added', type => 'STRING' },
				{ name => 'added_list', type => 'INT64', mode => 'REPEATED' } ] } });
is($s, 200, '(6) a column added to the raw table');
$cur = eval { bq_current($bq, 'ds', 'public_t', key => [ 'id', 'k2' ]) };
is_deeply([ map { [ $_->{added}, $_->{added_list} ] } @{ $cur->{rows} // [] } ], [ ([ undef, [] ]) x 3 ],
	'(6) rows stored before it have it NULL (an empty array when REPEATED)') or diag($@);
is_deeply([ grep { exists $_->{added} } @{ dump_rows('public_t_raw') } ], dump_rows('public_t_raw'),
	'(6) in the dump too');

# The contract is checked
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'public_t_lazy' },
		view => { query => "SELECT id, v FROM `$P.ds.public_t_raw` WHERE _pgsink_op != 'delete' "
			  . "QUALIFY ROW_NUMBER() OVER (PARTITION BY id, k2 ORDER BY _pgsink_lsn DESC, _pgsink_sequence DESC) = 1",
			useLegacySql => JSON::PP::false } });
($s, $r) = PgsinkBigQuery::_request($bq, 'GET', '/_fake/current/ds/public_t_lazy?key=id,k2');
is($s, 400, '(6) a view that ignores _pgsink_unchanged is refused by /_fake/current');
like(message($r), qr/never mentions _pgsink_unchanged/, '(6) says why');
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'unpartitioned_raw' },
		schema => { fields => \@raw_fields } });
($s, $r) = bq_api($bq, 'POST', "$base/datasets/ds/tables",
	{ tableReference => { projectId => $P, datasetId => 'ds', tableId => 'unpartitioned' },
		view => { query => $view_sql =~ s/public_t_raw/unpartitioned_raw/r, useLegacySql => JSON::PP::false } });
($s, $r) = PgsinkBigQuery::_request($bq, 'GET', '/_fake/current/ds/unpartitioned?key=id,k2');
like(message($r), qr/partitioned by DAY of _pgsink_timestamp/, '(6) a raw table not partitioned by day is refused');

# An outage: connections refused, then back with the state kept
bq_outage($bq, 1);
usleep(300_000);
($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds");
is($s, 599, '(7) during an outage: no connection');
like($r, qr/refused|closed|reset/i, '(7) refused');
sleep 1.2;
($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds");
is($s, 200, '(7) after it: served, the dataset still there');

# The fake's bookkeeping
bq_revoke_tokens($bq);
($s, $r) = bq_api($bq, 'GET', "$base/datasets/ds");
is($s, 200, '(7) bq_api fetches a new token after a revocation');
my $st = bq_stats($bq);
cmp_ok($st->{requests}{insertAll}{200}, '>', 50, '(7) requests counted by kind and status');
ok((grep { $_->{kind} eq 'insertAll' && (($_->{insert_ids} // [])->[0] // '') eq 'A/1' } @{ bq_requests($bq) }),
	'(7) the insertIds of each request are logged');
is(scalar(grep { $_->{jobId} eq 'load_1' } @{ bq_jobs($bq) }), 1, '(7) jobs listed');
my ($view) = grep { $_->{table} eq 'public_t' } @{ bq_tables($bq) };
like($view->{view}{query}, qr/LAST_VALUE/, '(7) tables listed with their views\' SQL');

bq_stop($bq);
my $took = time() - $t0;
note(sprintf('took %.1f s', $took));
cmp_ok($took, '<', 30, '(7) lean: under 30 s');
done_testing();

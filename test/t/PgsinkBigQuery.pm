# PgsinkBigQuery: the strict local BigQuery (bigquery_fake.py) for TAP tests:
# start and stop it on a free port with a test service account (an RSA key
# pair made with the openssl CLI, and a service-account JSON key file whose
# token_uri points at the fake), call its API and its /_fake/ controls, and
# compare the rows a view gives with a psql query.
#
#   my $bq = bq_start($dir);            # project 'pgsink-test', see bq_start
#   ... pgsink.bigquery_credentials = '$bq->{key_file}',
#       pgsink.bigquery_endpoint = '$bq->{url}', pgsink.bigquery_project = '$bq->{project}'
#   bq_fault($bq, { kind => 'status', status => 503, match => 'insertAll', count => 2 });
#   my $cur = bq_current($bq, 'ds', 'public_t', key => ['id']);
#   is_deeply(bq_current_lines($bq, 'ds', 'public_t', key => ['id'], columns => ['id', 'v']),
#             psql_lines($node, 'postgres', 'SELECT id, v FROM t'), 'view = table');
package PgsinkBigQuery;

use strict;
use warnings;

use Exporter 'import';
use FindBin;
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use PostgreSQL::Test::Cluster;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(bq_start bq_stop bq_control bq_config bq_fault bq_clear_faults
  bq_revoke_tokens bq_outage bq_dump bq_tables bq_jobs bq_requests bq_stats bq_current
  bq_current_lines psql_lines bq_jwt bq_token bq_api bq_row_line);

my $json = JSON::PP->new->utf8->canonical->allow_nonref;
my @started;
END { bq_stop($_) for @started; }

sub _run
{
	my @cmd = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err)
	  or die "@cmd failed: $err";
	return $out;
}

# Start the fake in $dir. Options: project (default 'pgsink-test'), config
# (hashref of /_fake/config settings from the start), email. Returns
# { dir, port, url, token_uri, project, email, key_file, private_key,
# public_key, key_id }: url is what pgsink.bigquery_endpoint takes, key_file
# the service-account JSON key for pgsink.bigquery_credentials.
sub bq_start
{
	my ($dir, %opt) = @_;
	mkdir $dir;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $project = $opt{project} // 'pgsink-test';
	my $bq = {
		dir => $dir,
		port => $port,
		url => "http://127.0.0.1:$port",
		token_uri => "http://127.0.0.1:$port/token",
		project => $project,
		email => $opt{email} // "pgsink\@$project.iam.gserviceaccount.com",
		private_key => "$dir/bq_private.pem",
		public_key => "$dir/bq_public.pem",
		key_file => "$dir/bq_service_account.json",
	};
	# A PKCS#8 RSA key, as Google's key files hold.
	_run('openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
		'-quiet', '-out', $bq->{private_key});
	chmod 0600, $bq->{private_key};
	_run('openssl', 'pkey', '-in', $bq->{private_key}, '-pubout', '-out', $bq->{public_key});
	$bq->{key_id} = unpack('H*', join('', map { chr(int(rand(256))) } 1 .. 20));
	open(my $k, '<', $bq->{private_key}) or die $!;
	my $pem = do { local $/; <$k> };
	close $k;
	my $keyfile = {
		type => 'service_account',
		project_id => $project,
		private_key_id => $bq->{key_id},
		private_key => $pem,
		client_email => $bq->{email},
		client_id => '100000000000000000001',
		auth_uri => 'https://accounts.google.com/o/oauth2/auth',
		token_uri => $bq->{token_uri},
		auth_provider_x509_cert_url => 'https://www.googleapis.com/oauth2/v1/certs',
		client_x509_cert_url => 'https://www.googleapis.com/robot/v1/metadata/x509/pgsink',
		universe_domain => 'googleapis.com',
	};
	open(my $f, '>', $bq->{key_file}) or die $!;
	print $f JSON::PP->new->canonical->pretty->encode($keyfile);
	close $f;
	chmod 0600, $bq->{key_file};
	my @cmd = ('python3', "$FindBin::RealBin/bigquery_fake.py", '--port', $port,
		'--project', $project,
		'--account', "$bq->{email}=$bq->{public_key}=$bq->{key_id}",
		'--token-uri', $bq->{token_uri},
		'--config', $json->encode($opt{config} // {}),
		'--log', "$dir/bigquery_fake.log");
	$bq->{run} = IPC::Run::start(\@cmd, '>>', "$dir/bigquery_fake.out", '2>&1');
	push @started, $bq;
	for (1 .. 100)
	{
		my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port);
		if ($sock) { close $sock; return $bq; }
		usleep(100_000);
	}
	my $out = -f "$dir/bigquery_fake.out" ? `cat $dir/bigquery_fake.out` : '';
	BAIL_OUT("the BigQuery fake does not answer: $out");
}

sub bq_stop
{
	my ($bq) = @_;
	return unless $bq->{run};
	$bq->{run}->kill_kill;
	$bq->{run}->finish;
	delete $bq->{run};
}

# A request to the fake: (status, decoded JSON body or raw text, headers).
sub _request
{
	my ($bq, $method, $path, %opt) = @_;
	my %h = %{ $opt{headers} // {} };
	my $content = $opt{content};
	if (exists $opt{json})
	{
		$content = $json->encode($opt{json});
		$h{'Content-Type'} //= 'application/json';
	}
	my $r = HTTP::Tiny->new(timeout => $opt{timeout} // 30, keep_alive => 0)->request(
		$method, "$bq->{url}$path",
		{ headers => \%h, defined $content ? (content => $content) : () });
	my $body = $r->{content};
	my $decoded = eval { $json->decode($body) };
	return ($r->{status}, defined $decoded ? $decoded : $body, $r->{headers});
}

# A control call (/_fake/$what); dies unless it answers 200.
sub bq_control
{
	my ($bq, $method, $what, $body) = @_;
	my ($status, $out) = _request($bq, $method, "/_fake/$what",
		defined $body ? (json => $body) : ());
	die "/_fake/$what answered $status: " . (ref $out ? $json->encode($out) : $out)
	  unless $status == 200;
	return $out;
}

sub bq_config { my ($bq, $c) = @_; return bq_control($bq, 'POST', 'config', $c); }
sub bq_fault { my ($bq, @r) = @_; return bq_control($bq, 'POST', 'faults', { rules => \@r }); }
sub bq_clear_faults { my ($bq) = @_; return bq_control($bq, 'POST', 'faults/clear'); }
sub bq_revoke_tokens { my ($bq) = @_; return bq_control($bq, 'POST', 'revoke_tokens'); }
# The fake down for $seconds (connections refused, open ones closed), then
# back with its state.
sub bq_outage { my ($bq, $seconds) = @_; return bq_control($bq, 'POST', 'outage', { seconds => $seconds }); }
sub bq_tables { my ($bq) = @_; return bq_control($bq, 'GET', 'tables'); }
sub bq_jobs { my ($bq) = @_; return bq_control($bq, 'GET', 'jobs'); }
sub bq_stats { my ($bq) = @_; return bq_control($bq, 'GET', 'stats'); }

sub bq_requests
{
	my ($bq, $since) = @_;
	return bq_control($bq, 'GET', 'requests?since=' . ($since // 0));
}

# { schema => [...], rows => [ {column => typed value} ], num_rows } of a table.
sub bq_dump
{
	my ($bq, $dataset, $table) = @_;
	return bq_control($bq, 'GET', "dump/$dataset/$table");
}

# The rows view $view gives by issue 13's rule: { columns, key, rows (sorted
# by key), raw_table, unresolved }. Options: key => [columns] (else the raw
# table's clustering). Dies with the fake's reason if the view or its raw
# table breaks the contract.
sub bq_current
{
	my ($bq, $dataset, $view, %opt) = @_;
	my $q = $opt{key} ? '?key=' . join(',', @{ $opt{key} }) : '';
	return bq_control($bq, 'GET', "current/$dataset/$view$q");
}

# A typed value as a line's field: NULL as \N, booleans t/f, arrays and
# objects as canonical JSON, the rest as its text.
sub _field
{
	my ($v) = @_;
	return '\\N' unless defined $v;
	return $v ? 't' : 'f' if JSON::PP::is_bool($v);
	return $json->encode($v) if ref $v;
	return "$v";
}

# A row (hashref) as "v1|v2|..." over @$columns.
sub bq_row_line
{
	my ($row, $columns) = @_;
	return join('|', map { _field($row->{$_}) } @$columns);
}

# The current rows of a view as a sorted list of lines "v1|v2|..." over
# columns => [...] (default: all the view's columns), comparable with
# psql_lines of a query that renders the same values the same way (see the
# typed forms in bigquery_fake.py: numeric normalized, timestamps
# "YYYY-MM-DD HH:MM:SS[.f]+00", bytes base64, JSON canonical text).
sub bq_current_lines
{
	my ($bq, $dataset, $view, %opt) = @_;
	my $cur = bq_current($bq, $dataset, $view, %opt);
	my $columns = $opt{columns} // $cur->{columns};
	return [ sort map { bq_row_line($_, $columns) } @{ $cur->{rows} } ];
}

# A query's rows as a sorted list of lines, columns joined by '|', NULL as \N
# (psql -A, as safe_psql runs it).
sub psql_lines
{
	my ($node, $db, $sql) = @_;
	my $out = $node->safe_psql($db, "\\pset null '\\\\N'\n$sql");
	return [ sort grep { $_ ne '' } split /\n/, $out ];
}

# A signed service-account JWT (RS256, openssl CLI). Options override the
# claims (iss, aud, scope, iat, exp, sub; undef removes one) and the header
# (alg, kid), and key => another private key PEM file.
sub bq_jwt
{
	my ($bq, %opt) = @_;
	my $now = time();
	my %claims = (
		iss => $bq->{email},
		aud => $bq->{token_uri},
		scope => 'https://www.googleapis.com/auth/bigquery',
		iat => $now,
		exp => $now + 3600);
	my %header = (alg => 'RS256', typ => 'JWT', kid => $bq->{key_id});
	for my $k (keys %opt)
	{
		my $target = ($k eq 'alg' || $k eq 'kid') ? \%header : \%claims;
		next if $k eq 'key';
		if (defined $opt{$k}) { $target->{$k} = $opt{$k}; }
		else { delete $target->{$k}; }
	}
	my $input = encode_base64url($json->encode(\%header)) . '.'
	  . encode_base64url($json->encode(\%claims));
	my $sig = '';
	IPC::Run::run([ 'openssl', 'dgst', '-sha256', '-sign', $opt{key} // $bq->{private_key},
			'-binary' ], '<', \$input, '>', \$sig)
	  or die 'openssl dgst -sign failed';
	return "$input." . encode_base64url($sig);
}

# Exchange a JWT for a token: (status, decoded answer). Without a JWT, a
# fresh valid one.
sub bq_token
{
	my ($bq, $jwt) = @_;
	$jwt //= bq_jwt($bq);
	my ($status, $out) = _request($bq, 'POST', '/token',
		headers => { 'Content-Type' => 'application/x-www-form-urlencoded' },
		content => 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer'
		  . "&assertion=$jwt");
	return ($status, $out);
}

# An API call with a bearer token: (status, decoded body, headers).
# $body: a Perl structure (sent as JSON) or undef; options token => '...'
# (default: one fetched and cached, fetched again once on a 401, as after
# bq_revoke_tokens), headers => {...}, content => raw (a string, or a code
# reference: a chunked body).
sub bq_api
{
	my ($bq, $method, $path, $body, %opt) = @_;
	for my $attempt (1, 2)
	{
		my $token = exists $opt{token} ? $opt{token} : ($bq->{token} //= do {
			my ($s, $t) = bq_token($bq);
			die "no token: $s" unless $s == 200;
			$t->{access_token};
		});
		my %h = %{ $opt{headers} // {} };
		$h{Authorization} = "Bearer $token" if defined $token;
		my @r = _request($bq, $method, $path, headers => \%h,
			defined $body ? (json => $body) : (),
			exists $opt{content} ? (content => $opt{content}) : ());
		return @r unless $r[0] == 401 && !exists $opt{token} && $attempt == 1;
		delete $bq->{token};
	}
}

1;

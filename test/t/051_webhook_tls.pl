# The webhook sink over TLS, with gzip and extra headers, against the strict
# receiver (webhook_receiver.py) serving a certificate of a test CA made
# here with the openssl command:
# (1) the CA is not trusted: the sink retries and says why (certificates are
#     always verified; there is no switch to turn that off);
# (2) pgsink.ca_file names the CA: every change arrives, exactly, gzipped,
#     with the extra headers;
# (3) extra headers the sink sets itself are refused, without quoting them;
#     nothing secret reaches the log;
# (4) a certificate of the trusted CA, but for another name ("otherhost")
#     than the URL's host (127.0.0.1), is refused: the sink retries, its
#     status and the log say the name does not match, nothing is delivered;
#     once the receiver serves the right certificate, delivery proceeds, and
#     exactly;
# (5) a receiver that echoes the request into its error page: our secrets
#     are cut out of the excerpt in the status and the log.
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
my $secret = 'whsec_' . 'dGxzLXRlc3Qtc2VjcmV0LWtleS1mb3ItcGdzaW5rLTAx';
my $token = 'Bearer t0ken-' . int(rand(1e9));
my $node = pgsink_node(
	'webhook_tls',
	extra_conf => qq{
pgsink.sink = 'webhook'
pgsink.webhook_url = 'https://127.0.0.1:$port/hook'
pgsink.webhook_secret = '$secret'
pgsink.webhook_headers = 'Authorization: $token\\nX-Pgsink-Test: yes'
pgsink.webhook_gzip = on
pgsink.http_timeout = '5s'
});
my $dir = $node->basedir;
my $store = "$dir/received.jsonl";
my %tables = ('public.t' => ['id']);

# A test CA and a certificate for 127.0.0.1 signed by it.
sub openssl { system_or_bail('openssl', @_); }
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=pgsink test CA',
	'-keyout', "$dir/ca.key", '-out', "$dir/ca.crt");
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout',
	"$dir/server.key", '-out', "$dir/server.csr");
open(my $ext, '>', "$dir/san.ext") or die;
print $ext "subjectAltName = IP:127.0.0.1\n";
close $ext;
openssl('x509', '-req', '-in', "$dir/server.csr", '-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key",
	'-CAcreateserial', '-days', '2', '-extfile', "$dir/san.ext", '-out', "$dir/server.crt");

my $receiver = receiver_start($dir, $port, $secret, "$dir/server.crt", "$dir/server.key");
sub stats { return receiver_stats($receiver); }

$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t');
INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 500) g;
UPDATE t SET v = 'updated' WHERE id % 3 = 0;
});

# (1) An untrusted certificate.
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'(1) untrusted certificate: the sink retries');
like(sink_status($node, 'webhook')->{error}, qr/certificate/i,
	'(1) and says the certificate is not trusted');
is(stats()->{accepted} // 0, 0, '(1) nothing was delivered');

# (2) The CA trusted.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET pgsink.ca_file = '$dir/ca.crt'; SELECT pg_reload_conf();");
wait_delivered($node, 'postgres', '(2) CA trusted');
check_exact($node, tables => \%tables, files => [$store], label => '(2) over TLS');
my $s = stats();
is($s->{bad_signatures}, 0, '(2) every request signed (over the JSON, before gzip)');
cmp_ok($s->{gzip}, '>', 0, '(2) bodies are gzipped');
is($s->{authorization}, $token, '(2) the extra headers are sent');

# (3) Headers the sink sets itself are refused.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET pgsink.webhook_headers = 'Idempotency-Key: forged-$token'; SELECT pg_reload_conf();");
$node->safe_psql('postgres', "INSERT INTO t VALUES (1000, 'after')");
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%may not set Idempotency-Key%' FROM pgsink.sinks "
		  . "WHERE sink = 'webhook'", 't', 30),
	'(3) a header the sink sets itself is refused, and named');
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET pgsink.webhook_headers; SELECT pg_reload_conf();");
wait_delivered($node, 'postgres', '(3) headers fixed');
my $log = slurp_file($node->logfile);
my ($tok) = $token =~ /(t0ken-\d+)/;
unlike($log, qr/\Q$tok\E/, '(3) no header value in the log');
my ($key) = $secret =~ /^whsec_(.*)$/;
unlike($log, qr/\Q$key\E/, '(3) nor the secret');

# (4) A certificate of the trusted CA for another name.
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=otherhost', '-keyout',
	"$dir/other.key", '-out', "$dir/other.csr");
open($ext, '>', "$dir/other.ext") or die;
print $ext "subjectAltName = DNS:otherhost\n";
close $ext;
openssl('x509', '-req', '-in', "$dir/other.csr", '-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key",
	'-CAcreateserial', '-days', '2', '-extfile', "$dir/other.ext", '-out', "$dir/other.crt");
receiver_stop($receiver);
$receiver = receiver_start($dir, $port, $secret, "$dir/other.crt", "$dir/other.key");
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
INSERT INTO t SELECT g, 'other ' || g FROM generate_series(2001, 2100) g;
DELETE FROM t WHERE id % 5 = 0;
});
ok(defined poll_until($node, 'postgres',
		"SELECT state FROM pgsink.sinks WHERE sink = 'webhook'", 'retrying', 30),
	'(4) a certificate for another name: the sink retries');
my $error = sink_status($node, 'webhook')->{error};
note("last_error: $error");
like($error, qr/(subject|host) ?name|does not match/i,
	'(4) its last_error says the certificate\'s name does not match the host');
unlike($error, qr/unable to get local issuer|self[- ]signed|unknown ca/i,
	'(4) (the CA is trusted: it is not about trust)');
sleep 2;    # a few attempts
$s = stats();
is($s->{requests}, 0, '(4) no request reached the receiver');
is($s->{accepted}, 0, '(4) nothing was delivered');
like(slurp_file($node->logfile, $log_offset),
	qr/WARNING:.*sink "webhook":.*((subject|host) ?name|does not match)/i,
	'(4) the log says it too');
receiver_stop($receiver);
$receiver = receiver_start($dir, $port, $secret, "$dir/server.crt", "$dir/server.key");
wait_delivered($node, 'postgres', '(4) the right certificate served');
check_exact($node, tables => \%tables, files => [$store], label => '(4) after the right certificate');
cmp_ok(stats()->{accepted}, '>=', 100, '(4) the entries held back arrived');
is(sink_status($node, 'webhook')->{error}, '', '(4) no error left');

# (5) A receiver whose error page repeats what it was sent: the excerpt in
# the status and the log has our secrets cut out.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET pgsink.webhook_headers = 'Authorization: $token'; SELECT pg_reload_conf();");
receiver_mode($receiver, '{"mode": "echo"}');
$node->safe_psql('postgres', "INSERT INTO t VALUES (3000, 'echo')");
ok(defined poll_until($node, 'postgres',
		"SELECT last_error LIKE '%answered HTTP 503: you sent [redacted] with Authorization: [redacted]%' "
		  . "FROM pgsink.sinks WHERE sink = 'webhook'", 't', 30),
	'(5) the echoed path and header are redacted in the status');
receiver_mode($receiver, '{"mode": "ok"}');
wait_delivered($node, 'postgres', '(5) after the echo');
$log = slurp_file($node->logfile);
unlike($log, qr/\Q$tok\E/, '(5) no header value in the log');
like($log, qr/you sent \[redacted\]/, '(5) the log has the redacted excerpt');

receiver_stop($receiver);
$node->stop;
done_testing();

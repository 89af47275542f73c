# The log hook (src/core/secret_log.cpp) keeps secret settings' values out
# of the log however the statement that sets them is spelled: SQL lets a
# value be written without quotes (ALTER SYSTEM SET x TO word, SET x TO
# word), and a statement logged by log_statement = all, or quoted under an
# ERROR (STATEMENT:), then holds neither a quote nor '=' after the name.
# (1) ALTER SYSTEM SET ... TO <unquoted>, reloaded and reset: the value is in
#     no log line, the statement is logged cut;
# (2) SET of a secret setting (refused: it is PGC_SIGHUP) with an unquoted
#     value: neither the statement logged nor the ERROR's STATEMENT: holds it;
# (3) pgsink's own message about a secret setting that quotes no value of
#     it (BigQuery's key file without "private_key") is logged whole.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(sleep);

my $node = pgsink_node('secret_log');
$node->start;
my $offset = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf();");
$node->safe_psql('postgres', 'ALTER SYSTEM SET pgsink.webhook_secret TO hushunquoted1');
$node->safe_psql('postgres', 'ALTER SYSTEM SET pgsink.elasticsearch_api_key TO 4242424242');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
sleep 1;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET pgsink.webhook_secret');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET pgsink.elasticsearch_api_key');
my ($out, $err) = ('', '');
$node->psql('postgres', 'SET pgsink.clickhouse_password TO hushunquoted2',
	stdout => \$out, stderr => \$err);
like($err, qr/cannot be changed now/, '(2) SET of a secret setting is refused');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()');
sleep 1;
my $log = slurp_file($node->logfile, $offset);
like($log, qr/ALTER SYSTEM SET pgsink\.webhook_secret \(value not shown: a secret\)/,
	'(1) the statement is logged cut after the name');
unlike($log, qr/hushunquoted1/, '(1) an unquoted secret set by ALTER SYSTEM is in no log line');
unlike($log, qr/4242424242/, '(1) an unquoted number set by ALTER SYSTEM is in no log line');
unlike($log, qr/hushunquoted2/, '(2) an unquoted secret in a refused SET is in no log line');

# (3) A key file that is JSON but no key: the delivery worker's WARNING
# names the setting, then quotes the member it lacks (not the path).
my $key = $node->basedir . '/not-a-key.json';
open(my $fh, '>', $key) or die;
print $fh '{}';
close $fh;
$node->safe_psql('postgres', 'CREATE EXTENSION pgsink');
$offset = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.bigquery_credentials = '$key'");
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.bigquery_project = 'p'");
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.bigquery_dataset = 'd'");
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.bigquery_endpoint = 'http://127.0.0.1:1'");
$node->safe_psql('postgres', "ALTER SYSTEM SET pgsink.sink = 'bigquery'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
my $seen = '';
for (1 .. 100) {
	$seen = slurp_file($node->logfile, $offset);
	last if $seen =~ /WARNING:.*key file/;
	sleep 0.1;
}
like($seen, qr/pgsink\.bigquery_credentials\) has no "private_key"/,
	'(3) the key file\'s problem is logged whole');
$node->stop;
done_testing();

# Attacks on the metrics endpoint (pgsink.metrics_listen), each reproduced:
# (1) before CREATE EXTENSION, a role with CREATE on the database makes a
#     schema "pgsink" with a function "metrics" that makes it superuser when
#     a superuser runs it: a scrape must never run it (the worker runs as a
#     superuser);
# (2) a client that trickles its request one byte every 2 s must not hold
#     the worker: a concurrent scrape is answered, and a fast shutdown
#     completes at once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use HTTP::Tiny;
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = pgsink_node('metrics_attacks', extra_conf => "pgsink.metrics_listen = '127.0.0.1:$port'\n");
$node->start;
my $http = HTTP::Tiny->new(timeout => 10);

# (1) The hijack.
$node->safe_psql('postgres', q{
CREATE ROLE dbowner LOGIN;
GRANT CREATE ON DATABASE postgres TO dbowner;
});
$node->safe_psql('postgres', q{
CREATE SCHEMA pgsink;
CREATE FUNCTION pgsink.metrics() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'ALTER ROLE dbowner SUPERUSER';
  END IF;
  RETURN 'ran as ' || current_user || E'\n';
END $$;
}, extra_params => [ '-U', 'dbowner' ]);
my $r;
for (1 .. 50)
{
	$r = $http->get("http://127.0.0.1:$port/metrics");
	last if $r->{status} != 599;
	usleep(200_000);
}
is($r->{status}, 503, '(1) without the extension, a scrape answers 503');
like($r->{content}, qr/extension pgsink is not installed/, '(1) and says why');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'dbowner'"),
	'f', '(1) the planted function never ran as a superuser');
$node->safe_psql('postgres', 'DROP SCHEMA pgsink CASCADE');
$node->safe_psql('postgres', 'CREATE EXTENSION pgsink');
like($http->get("http://127.0.0.1:$port/metrics")->{content}, qr/^pgsink_up /m,
	'(1) with the extension, the metrics');

# (2) A slow client.
my $pid = fork();
if ($pid == 0)
{
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or exit 1;
	for (1 .. 60) { print $s 'G'; $s->flush; sleep 2; }
	exit 0;
}
sleep 1;
my $t0 = time();
$r = $http->get("http://127.0.0.1:$port/metrics");
is($r->{status}, 200, '(2) a scrape is answered while a slow client trickles its request');
cmp_ok(time() - $t0, '<', 5, '(2) within the request deadline');
my $t1 = time();
my $rc = system('pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-t', '20', 'stop');
is($rc, 0, '(2) a fast shutdown completes while the slow client is connected');
cmp_ok(time() - $t1, '<', 10, '(2) promptly');
kill 'KILL', $pid;
waitpid($pid, 0);
$node->_update_pid(0);
done_testing();

# PgsinkElasticsearch: the strict Elasticsearch fake (elasticsearch_fake.py)
# for the elasticsearch sink's TAP tests: start, stop (it keeps its indexes
# in a state file across a restart), steer its clock and faults, read its
# indexes back.
package PgsinkElasticsearch;

use strict;
use warnings;

use Exporter 'import';
use FindBin;
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(es_start es_stop es_restart es_control es_dump es_stats es_faults es_post);

my @started;
END { es_stop($_) for @started; }

# Start the fake with its state in $dir; @args: --api-key KEY, --user U --password P,
# --max-content-length N. Returns { dir, port, url, args }.
sub es_start
{
	my ($dir, @args) = @_;
	mkdir $dir;
	my $es = {
		dir => $dir,
		port => PostgreSQL::Test::Cluster::get_free_port(),
		args => \@args,
	};
	$es->{url} = "http://127.0.0.1:$es->{port}";
	push @started, $es;
	_launch($es);
	return $es;
}

sub _launch
{
	my ($es) = @_;
	$es->{run} = IPC::Run::start(
		[ 'python3', "$FindBin::RealBin/elasticsearch_fake.py", $es->{port}, "$es->{dir}/state.json",
			@{ $es->{args} } ],
		'>>', "$es->{dir}/fake.log", '2>&1');
	for (1 .. 100)
	{
		my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $es->{port});
		if ($sock) { close $sock; return; }
		usleep(100_000);
	}
	BAIL_OUT('the Elasticsearch fake does not answer');
}

# Stop it as a server stops: it writes its state (SIGTERM) first.
sub es_stop
{
	my ($es) = @_;
	return unless $es->{run};
	$es->{run}->signal('TERM');
	# It writes its state and exits at once; kill_kill waits a little, then kills.
	$es->{run}->kill_kill(grace => 10);
	eval { $es->{run}->finish; };
	delete $es->{run};
}

sub es_restart
{
	my ($es) = @_;
	es_stop($es);
	_launch($es);
}

# A control request (/_fake/...): the decoded JSON answer.
sub es_control
{
	my ($es, $method, $path, $body) = @_;
	my $r = HTTP::Tiny->new(timeout => 30)->request($method, "$es->{url}/_fake/$path",
		{ content => defined $body ? encode_json($body) : '' });
	die "fake control $path: $r->{status} $r->{content}" unless $r->{success};
	return decode_json($r->{content});
}

sub es_faults { my ($es, $f) = @_; return es_control($es, 'POST', 'faults', $f); }
sub es_stats { my ($es) = @_; return es_control($es, 'GET', 'stats'); }

# The live documents of an index ({ _id => _source }); with $all, tombstones too and the
# versions ({ docs, versions }); the string fields named in $md5 (a list) as the MD5 of
# their text.
sub es_dump
{
	my ($es, $index, $all, $md5) = @_;
	my @q = (($all ? 'all=1' : ()), ($md5 ? 'md5=' . join(',', @$md5) : ()));
	my $d = es_control($es, 'GET', "dump/$index" . (@q ? '?' . join('&', @q) : ''));
	return $all ? $d : $d->{docs};
}

# A request to the fake's Elasticsearch API as a client would send it: { status, body }.
sub es_post
{
	my ($es, $path, $body, $ctype, $auth) = @_;
	my $r = HTTP::Tiny->new(timeout => 30)->request('POST', "$es->{url}$path", {
		content => $body,
		headers => { 'Content-Type' => $ctype // 'application/x-ndjson',
			($auth ? (Authorization => $auth) : ()) } });
	my $decoded = eval { decode_json($r->{content}) };
	return { status => $r->{status}, body => $decoded // $r->{content} };
}

1;

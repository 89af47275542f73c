# A private ClickHouse server for a TAP test: Debian's clickhouse-server,
# started as the test's own user with a config of its own in a temporary
# directory, on free ports (no system service, nothing outside the
# directory). See shared/notes/clickhouse-18.16.md.
package PgsinkClickHouse;

use strict;
use warnings;

use Exporter 'import';
use HTTP::Tiny;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(ch_start ch_stop ch_restart ch_query ch_kill);

my @servers;

# Start a server in $dir; returns { dir, port, url }.
sub ch_start
{
	my ($dir) = @_;
	mkdir $dir;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $tcp = PostgreSQL::Test::Cluster::get_free_port();
	my $ch = { dir => $dir, port => $port, tcp => $tcp, url => "http://127.0.0.1:$port" };
	open(my $c, '>', "$dir/config.xml") or die $!;
	print $c <<"XML";
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/error.log</errorlog></logger>
  <http_port>$port</http_port>
  <tcp_port>$tcp</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$dir/data/</path>
  <users_config>users.xml</users_config>
  <mark_cache_size>67108864</mark_cache_size>
</yandex>
XML
	close $c;
	open(my $u, '>', "$dir/users.xml") or die $!;
	print $u <<'XML';
<?xml version="1.0"?>
<yandex>
  <profiles><default/></profiles>
  <users><default><password/><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default/></quotas>
</yandex>
XML
	close $u;
	_launch($ch);
	push @servers, $ch;
	return $ch;
}

sub _launch
{
	my ($ch) = @_;
	# After a kill -9 the pid file may outlive the process for a moment.
	unlink "$ch->{dir}/pid";
	system('clickhouse-server', "--config-file=$ch->{dir}/config.xml", '--daemon',
		"--pid-file=$ch->{dir}/pid") == 0
	  or die "clickhouse-server did not start";
	for (my $t0 = time(); time() - $t0 < 30; usleep(50_000))
	{
		my $r = HTTP::Tiny->new(timeout => 2)->get("$ch->{url}/ping");
		return if $r->{success} && $r->{content} =~ /^Ok/;
	}
	die "clickhouse-server did not answer /ping within 30 s: "
	  . (-f "$ch->{dir}/error.log" ? slurp_file("$ch->{dir}/error.log") : '');
}

sub _pid
{
	my ($ch) = @_;
	return undef unless -f "$ch->{dir}/pid";
	my $pid = slurp_file("$ch->{dir}/pid");
	chomp $pid;
	return $pid =~ /^\d+$/ ? $pid : undef;
}

sub _wait_gone
{
	my ($pid) = @_;
	for (my $t0 = time(); time() - $t0 < 30; usleep(50_000))
	{
		return if !kill(0, $pid);
		# A zombie waiting for its reaper is gone too.
		my $st = -f "/proc/$pid/stat" ? slurp_file("/proc/$pid/stat") : '';
		return if $st =~ /\) Z /;
	}
	die "clickhouse-server $pid did not stop";
}

sub ch_stop
{
	my ($ch) = @_;
	my $pid = _pid($ch);
	return unless $pid && kill(0, $pid);
	kill 'TERM', $pid;
	_wait_gone($pid);
}

# kill -9, as a crash would.
sub ch_kill
{
	my ($ch) = @_;
	my $pid = _pid($ch) or return;
	kill 'KILL', $pid;
	_wait_gone($pid);
}

sub ch_restart
{
	my ($ch) = @_;
	_launch($ch);
}

# Run $sql; returns the body, dies on an error answer.
sub ch_query
{
	my ($ch, $sql) = @_;
	my $r = HTTP::Tiny->new(timeout => 60)->post("$ch->{url}/", { content => $sql });
	die "ClickHouse: $r->{status} $r->{content}\nfor: $sql" unless $r->{success};
	return $r->{content};
}

END
{
	for my $ch (@servers)
	{
		eval { ch_stop($ch) };
	}
}

1;

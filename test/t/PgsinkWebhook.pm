# PgsinkWebhook: the strict test receiver (webhook_receiver.py) for the
# webhook sink's TAP tests: start and stop it, steer its faults, read its
# counters.
package PgsinkWebhook;

use strict;
use warnings;

use Exporter 'import';
use FindBin;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(receiver_start receiver_stop receiver_mode receiver_stats receiver_requests);

# Receivers started, stopped at the end even when a test dies first.
my @started;
END { receiver_stop($_) for @started; }

# Start the receiver on $port with $secret, keeping its files in $dir
# (received.jsonl, control.json, stats.json, requests.jsonl); @tls: certificate and key for
# HTTPS. Returns once it accepts connections.
sub receiver_start
{
	my ($dir, $port, $secret, @tls) = @_;
	my $r = {
		dir => $dir,
		store => "$dir/received.jsonl",
		control => "$dir/control.json",
		stats => "$dir/stats.json",
		requests => "$dir/requests.jsonl",
	};
	receiver_mode($r, '{"mode": "ok"}') unless -e $r->{control};
	$r->{run} = IPC::Run::start(
		[ 'python3', "$FindBin::RealBin/webhook_receiver.py", $port, $secret, $r->{store},
			$r->{control}, $r->{stats}, @tls ],
		'>>', "$dir/receiver.log", '2>&1');
	push @started, $r;
	for (1 .. 100)
	{
		my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port);
		if ($sock) { close $sock; return $r; }
		usleep(100_000);
	}
	BAIL_OUT('the webhook receiver does not answer');
}

sub receiver_stop
{
	my ($r) = @_;
	return unless $r->{run};
	$r->{run}->kill_kill;
	$r->{run}->finish;
	delete $r->{run};
}

# The receiver's fault mode, as JSON (see webhook_receiver.py).
sub receiver_mode
{
	my ($r, $json) = @_;
	open(my $fh, '>', "$r->{control}.tmp") or die;
	print $fh $json;
	close $fh;
	rename("$r->{control}.tmp", $r->{control}) or die;
}

sub receiver_stats
{
	my ($r) = @_;
	open(my $fh, '<', $r->{stats}) or return {};
	local $/;
	my $s = JSON::PP->new->decode(<$fh>);
	close $fh;
	return $s;
}

# Every signed request the receiver answered (or dropped), in order, as
# { bytes (of the JSON body), schema_bytes (its Schema entries as sent),
# entries, schemas, max_entry (its longest other entry, as sent), status }.
sub receiver_requests
{
	my ($r) = @_;
	my @requests;
	open(my $fh, '<', $r->{requests}) or return \@requests;
	while (my $line = <$fh>)
	{
		push @requests, JSON::PP->new->decode($line) if $line =~ /\S/;
	}
	close $fh;
	return \@requests;
}

1;

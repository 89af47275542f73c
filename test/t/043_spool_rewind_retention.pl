# The spool's segments and pgsink.rewind_sink():
# (a) with pgsink.spool_retention = 0, segments (1 MB here) are removed
#     once delivered: after several MB, the spool holds one or two, as
#     pgsink.spool says;
# (b) with pgsink.spool_retention = '1h' delivered segments are kept, and
#     pgsink.rewind_sink() makes the file sink receive again the entries
#     from a point on: from a commit time, from an lsn, from the oldest
#     retained ('-infinity'). What the file receives is the Schema entries in
#     effect there (restamped with the first entry's timestamp and lsn), then
#     exactly the spool's entries from that point: the same lines the file
#     had received the first time. Duplicates are by design there, so the
#     file is compared slice by slice, not replayed. A point before the
#     oldest retained, and an unknown sink, are errors;
# (c) a rewound sink whose first batch fails (writes to the file fail,
#     through fault_shim.c) shows its new cursor in pgsink.sinks, and the
#     stream worker keeps every segment it has to deliver again, even with
#     the retention lowered to 0; then it delivers them.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $MB = 1024 * 1024;
my $node = pgsink_node(
	'rewind',
	extra_conf => q{
pgsink.spool_segment_size = '1MB'
});
my $file = sink_file($node);
# Writes to the file fail while $trigger exists (for (c)).
my $trigger = $node->basedir . '/fail_writes';
start_with_fault_shim($node, PGSINK_FAULT_TRIGGER => $trigger, PGSINK_FAULT_TARGET => $file);
my $spool = $node->data_dir . '/pgsink_spool';

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Now, as the changelog writes times (UTC, microseconds): comparable as strings.
sub now_text
{
	return sql(q{SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', }
		  . q{'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')});
}

my $t0 = now_text();
usleep(10_000);
sql(q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, n int4, v text);
CREATE TABLE u (a int4, b text, n int4, PRIMARY KEY (a, b));
});
sql("SELECT pgsink.add_table('t', import => false)");
sql("SELECT pgsink.add_table('u', import => false)");

# One transaction of ~600 kB of entries on both tables.
my $txn = 0;
sub commit_txn
{
	my ($kind) = @_;
	$txn++;
	my $base = $txn * 10000;
	if ($kind eq 'insert')
	{
		sql(qq{BEGIN;
INSERT INTO u SELECT g, 'k' || g, 0 FROM generate_series($base, $base + 49) g;
INSERT INTO t SELECT g, 0, repeat(md5(g::text), 6) FROM generate_series($base, $base + 1499) g;
COMMIT;});
	}
	elsif ($kind eq 'update')
	{
		sql(qq{BEGIN;
UPDATE t SET n = n + 1, v = upper(v) WHERE id IN (SELECT id FROM t ORDER BY n, id LIMIT 1500);
UPDATE u SET n = n + 1 WHERE a % 2 = 0;
COMMIT;});
	}
	else
	{
		sql(qq{BEGIN;
DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 300);
DELETE FROM u WHERE a IN (SELECT a FROM u ORDER BY a LIMIT 10);
INSERT INTO t SELECT g, 0, repeat(md5(g::text), 6) FROM generate_series($base, $base + 999) g;
COMMIT;});
	}
	usleep(20_000);
}

# The segments in the spool directory: [ start, size ], by offset.
sub segments
{
	opendir(my $dh, $spool) or die "opendir $spool: $!";
	my @s = sort { $a->[0] <=> $b->[0] }
	  map { /^([0-9A-F]{16})\.jsonl$/ ? [ hex($1), -s "$spool/$_" ] : () } readdir $dh;
	closedir $dh;
	return @s;
}

sub count_files
{
	my ($ext) = @_;
	opendir(my $dh, $spool) or die;
	my $n = grep { /^[0-9A-F]{16}\.$ext$/ } readdir $dh;
	closedir $dh;
	return $n;
}

# The spool's bytes [from, to), read from its segment files.
sub spool_slice
{
	my ($from, $to) = @_;
	my $out = '';
	for my $s (segments())
	{
		my ($start, $size) = @$s;
		next if $start + $size <= $from || $start >= $to;
		open(my $fh, '<', sprintf('%s/%016X.jsonl', $spool, $start)) or die;
		binmode $fh;
		my $at = $from > $start ? $from - $start : 0;
		my $end = ($to < $start + $size ? $to : $start + $size) - $start;
		seek($fh, $at, 0);
		read($fh, my $buf, $end - $at);
		close $fh;
		$out .= $buf;
	}
	return $out;
}

sub slurp_bin
{
	my ($path) = @_;
	open(my $fh, '<', $path) or die "open $path: $!";
	binmode $fh;
	local $/;
	my $c = <$fh>;
	close $fh;
	return $c;
}

sub head_of
{
	my ($line) = @_;
	return $line =~ /^\{"timestamp":"([^"]+)","lsn":"([^"]+)"/ ? ($1, $2)
	  : $line =~ /^\{"timestamp":"([^"]+)".*?"lsn":"([^"]+)"/ ? ($1, $2)
	  : ('', '');
}

# ---------------------------------------------------------------------------
# (a) Retention 0: delivered segments go.
commit_txn($_) for qw(insert insert update insert delete insert update insert);
wait_delivered($node, 'postgres', '(a)');
my $durable = sql('SELECT durable_offset FROM pgsink.spool');
ok(defined poll_until($node, 'postgres', 'SELECT segments <= 2 FROM pgsink.spool', 't', 10),
	'(a) delivered segments are removed');
my @segs = segments();
note(sprintf('(a) %.1f MB written; %d segment(s) left: %s', $durable / $MB, scalar @segs,
		join(' ', map { sprintf('%X+%d', @$_) } @segs)));
cmp_ok($durable, '>', 4 * $MB, '(a) several MB were written');
is(sql('SELECT segments FROM pgsink.spool'), scalar @segs,
	'(a) pgsink.spool.segments agrees with the directory');
is(count_files('idx'), scalar @segs, '(a) as many index files');
cmp_ok(scalar @segs, '<=', 2, '(a) one or two segments are left');
my $oldest = sql('SELECT oldest_offset FROM pgsink.spool');
is($oldest, $segs[0][0], '(a) pgsink.spool.oldest_offset is the oldest segment');
cmp_ok($oldest, '>', 0, '(a) the first segments are gone');

# The segment being written has its whole size reserved on disk (fallocate,
# keeping its size): its appends fill blocks already allocated.
SKIP:
{
	my $probe = "$spool/../fallocate_probe";
	open(my $fh, '>', $probe) or die "create $probe: $!";
	close $fh;
	system('fallocate', '--keep-size', '-l', '1MiB', $probe);
	my $can = -e $probe && (stat $probe)[12] * 512 >= $MB;
	unlink $probe;
	skip('the spool\'s file system does not reserve blocks with fallocate', 2) unless $can;
	my ($start, $size) = @{ $segs[-1] };
	my $blocks = (stat sprintf('%s/%016X.jsonl', $spool, $start))[12];
	cmp_ok($size, '<', $MB, '(a) the newest segment is not full');
	cmp_ok($blocks * 512, '>=', $MB, '(a) the newest segment has its 1 MB reserved');
}

# ---------------------------------------------------------------------------
# (b) Retention: delivered segments are kept.
sql("ALTER SYSTEM SET pgsink.spool_retention = '1h'; SELECT pg_reload_conf()");
ok(defined poll_until($node, 'postgres', 'SELECT retention FROM pgsink.spool', '01:00:00', 10),
	'(b) pgsink.spool.retention is 1h');
sleep 1;    # the stream worker reloads too

# Three groups of transactions, with a time between A and B and an lsn between B and C.
commit_txn($_) for qw(insert insert update);
usleep(50_000);
my $time_ab = now_text();
usleep(50_000);
commit_txn($_) for qw(update insert delete);
my $lsn_bc = sql('SELECT pg_current_wal_lsn()');
commit_txn($_) for qw(insert update delete);
wait_delivered($node, 'postgres', '(b)');
sleep 1;    # housekeeping would have removed delivered segments by now
$durable = sql('SELECT durable_offset FROM pgsink.spool');
@segs = segments();
note(sprintf('(b) %.1f MB written in all; %d segments kept', $durable / $MB, scalar @segs));
is(sql('SELECT oldest_offset FROM pgsink.spool'), $oldest, '(b) no segment was removed');
cmp_ok(scalar @segs, '>=', 5, '(b) delivered segments are kept');
is(sql('SELECT segments FROM pgsink.spool'), scalar @segs,
	'(b) pgsink.spool.segments agrees with the directory');
my $s = sink_status($node);
is($s->{cursor}, $durable, '(b) the sink delivered everything');

# The file as first delivered (from spool offset 0: the same bytes as the spool).
my $first = slurp_bin($file);
my @first_lines = split /(?<=\n)/, $first;

# Rewind the file sink to $target; returns the new cursor, the file's
# content before and the sink's bytes_delivered before.
sub rewind
{
	my ($label, $target) = @_;
	my $before = slurp_bin($file);
	my $delivered = sql("SELECT bytes_delivered FROM pgsink.sinks WHERE sink = 'file'");
	my $fn = $target =~ /::pg_lsn$/ ? 'rewind_sink_to_lsn' : 'rewind_sink';
	my $offset = sql("SELECT pgsink.$fn('file', $target)");
	note("$label: rewound to spool offset $offset");
	return ($offset, $before, $delivered);
}

# Wait until the sink delivered the spool again from $offset; check what the
# file received. $slice: the spool from $offset, if read already (with
# retention 0, delivered segments go). Returns the lines received from the spool.
sub check_redelivery
{
	my ($label, $offset, $before, $delivered, $slice) = @_;
	my $again = $durable - $offset;
	ok(defined poll_until($node, 'postgres',
			"SELECT bytes_delivered >= $delivered + $again AND cursor_offset = $durable "
			  . "AND state = 'idle' FROM pgsink.sinks WHERE sink = 'file'", 't', 30),
		"$label: the sink delivers the spool again from there");
	my $after = slurp_bin($file);
	is(substr($after, 0, length $before), $before, "$label: what the file had is untouched");
	my $tail = substr($after, length $before);
	$slice //= spool_slice($offset, $durable);
	is(length $slice, $again, "$label: the spool holds the slice");
	ok(length $tail > length $slice && substr($tail, -length $slice) eq $slice,
		"$label: the file received the spool's entries from the rewind point, byte for byte");
	my @schemas = split /(?<=\n)/, substr($tail, 0, length($tail) - length($slice));
	my ($ts, $lsn) = head_of($slice);
	is_deeply([ map { /"schema":\{"namespace":"([^"]+)"/ ? $1 : $_ } @schemas ],
		[ 'public.t', 'public.u' ],
		"$label: after the Schema entries of t and u in effect there");
	is_deeply([ map { join ' ', head_of($_) } @schemas ], [ ("$ts $lsn") x 2 ],
		"$label: restamped with the first entry's timestamp and lsn");
	return [ split /(?<=\n)/, $slice ];
}

sub rewind_and_check
{
	my ($label, $target) = @_;
	my ($offset, $before, $delivered) = rewind($label, $target);
	return ($offset, check_redelivery($label, $offset, $before, $delivered));
}

# The spool's line just before offset (from the file as first delivered).
sub line_before
{
	my ($offset) = @_;
	my $at = 0;
	my $prev;
	for my $l (@first_lines)
	{
		last if $at >= $offset;
		$prev = $l;
		$at += length $l;
	}
	return $prev;
}

# From a commit time between A and B: exactly the entries committed since.
my ($off, $lines) = rewind_and_check('since a time', "'$time_ab'::timestamptz");
my @since = grep { (head_of($_))[0] ge $time_ab } @first_lines;
is(scalar @$lines, scalar @since, 'since a time: as many lines as were committed since');
is_deeply($lines, [ @first_lines[ -@since .. -1 ] ],
	'since a time: exactly the lines the file received first since that time');
cmp_ok((head_of(line_before($off)))[0], 'lt', $time_ab, 'since a time: the entry before it is older');

# From an lsn between B and C.
($off, $lines) = rewind_and_check('from an lsn', "'$lsn_bc'::pg_lsn");
my @from = grep { parse_lsn((head_of($_))[1]) >= parse_lsn($lsn_bc) } @first_lines;
cmp_ok(scalar @from, '>', 1000, 'from an lsn: C has entries');
is_deeply($lines, [ @first_lines[ -@from .. -1 ] ],
	'from an lsn: exactly the lines the file received first from that lsn on');
cmp_ok(parse_lsn((head_of(line_before($off)))[1]), '<', parse_lsn($lsn_bc),
	'from an lsn: the entry before it is older');

# From the oldest retained.
($off, $lines) = rewind_and_check('-infinity', "'-infinity'::timestamptz");
is($off, $oldest, '-infinity: from the oldest retained segment');

# Before the oldest retained; an unknown sink.
my ($out, $err) = ('', '');
$node->psql('postgres', "SELECT pgsink.rewind_sink('file', '$t0'::timestamptz)",
	stdout => \$out, stderr => \$err);
like($err, qr/ERROR:.*the spool no longer holds entries that old/,
	'a time before the oldest retained is an error');
($out, $err) = ('', '');
$node->psql('postgres', "SELECT pgsink.rewind_sink_to_lsn('file', '0/1')",
	stdout => \$out, stderr => \$err);
like($err, qr/ERROR:.*the spool no longer holds entries that old/,
	'an lsn before the oldest retained is an error');
($out, $err) = ('', '');
$node->psql('postgres', "SELECT pgsink.rewind_sink('nosuch', '-infinity')",
	stdout => \$out, stderr => \$err);
like($err, qr/ERROR:.*sink "nosuch" is not in pgsink\.sink/, 'an unknown sink is an error');
$s = sink_status($node);
is("$s->{cursor} $s->{state}", "$durable idle", 'a failed rewind leaves the cursor where it was');

# ---------------------------------------------------------------------------
# (c) A rewound sink that fails keeps what it needs: it retries its first
# batch; meanwhile pgsink.sinks shows its new cursor, and with the retention
# lowered to 0 the stream worker removes no segment the sink has not
# delivered again. Then it delivers everything from there.
open(my $fh, '>', $trigger) or die;
print $fh 'writes';
close $fh;
my ($off_c, $before_c, $delivered_c) = rewind('(c) failing sink', "'-infinity'::timestamptz");
is($off_c, $oldest, '(c) rewound to the oldest retained');
ok(defined poll_until($node, 'postgres', "SELECT state FROM pgsink.sinks WHERE sink = 'file'",
		'retrying', 30),
	"(c) the sink's first batch after the rewind fails: 'retrying'");
$s = sink_status($node);
is($s->{cursor}, $off_c, '(c) pgsink.sinks shows the new cursor');
cmp_ok($s->{lag_bytes}, '>=', $durable - $off_c, '(c) and the lag from there');
sql("ALTER SYSTEM SET pgsink.spool_retention = 0; SELECT pg_reload_conf()");
ok(defined poll_until($node, 'postgres', 'SELECT retention FROM pgsink.spool', '00:00:00', 10),
	'(c) pgsink.spool.retention is 0');
sleep 2;    # the stream worker reloads, and looks for delivered segments
is(sql('SELECT oldest_offset FROM pgsink.spool'), $oldest,
	'(c) no segment the rewound sink needs is removed');
my $slice_c = spool_slice($off_c, $durable);
unlink $trigger or die;
check_redelivery('(c) failing sink', $off_c, $before_c, $delivered_c, $slice_c);
ok(defined poll_until($node, 'postgres', 'SELECT segments <= 2 FROM pgsink.spool', 't', 10),
	'(c) once delivered again, the segments are removed');

# Delivery goes on after rewinds.
my $size = -s $file;
commit_txn('insert');
wait_delivered($node, 'postgres', 'after the rewinds');
my $new = sql('SELECT durable_offset FROM pgsink.spool');
is(substr(slurp_bin($file), $size), spool_slice($durable, $new),
	'after the rewinds new entries follow in the file');

$node->stop;
done_testing();

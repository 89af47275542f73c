# A new spool segment's blocks are reserved (fallocate, keeping its size)
# as a speed-up only. On a nearly full disk ext4 fails with ENOSPC but keeps
# what it reserved before running out: blocks past the segment's size that
# pgsink.spool_max_size does not count, and that the server's own files
# (WAL, in the same file system by default) then lack. pgsink gives them
# back. fault_shim makes every reservation of a segment end so (half of it
# reserved); the spool must hold no block past its files' sizes, and the
# sink gets every row.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;

my $node = pgsink_node('spool_fallocate_enospc',
	# Segments kept once delivered (else a delivered one may go before
	# it is looked at: the count of segments raced with the reaper).
	extra_conf => "pgsink.spool_segment_size = '1MB'\npgsink.spool_retention = '1h'\n");
start_with_fault_shim($node, PGSINK_FALLOCATE_ENOSPC => 1);
my %tables = ('public.t' => ['id']);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
});
my $spool = $node->data_dir . '/pgsink_spool';

# Segments holding blocks past their size (beyond a block's slack).
sub over_reserved
{
	opendir(my $dh, $spool) or die "opendir $spool: $!";
	my @segments = sort grep { /^[0-9A-F]{16}\.jsonl$/ } readdir $dh;
	closedir $dh;
	my @over;
	for my $s (@segments)
	{
		my ($size, $blocks) = (stat "$spool/$s")[ 7, 12 ];
		note("$s: $size bytes, " . $blocks * 512 . ' bytes of blocks');
		push @over, "$s: $size bytes, " . $blocks * 512 . ' bytes of blocks'
		  if $blocks * 512 > $size + 64 * 1024;
	}
	return (scalar @segments, join('; ', @over));
}

# The first segment, made when the stream worker starts: empty yet.
wait_delivered($node, 'postgres', 'nothing yet', 30);
my ($n, $over) = over_reserved();
is($over, '', 'the first segment keeps no blocks after a failed reservation');

for my $k (0 .. 5)
{
	$node->safe_psql('postgres',
		"INSERT INTO t SELECT g, repeat('v', 500) FROM generate_series($k * 1000, $k * 1000 + 999) g");
}
wait_delivered($node, 'postgres', 'rows over several segments', 30);
($n, $over) = over_reserved();
cmp_ok($n, '>=', 2, 'the spool rolled to new segments');
is($over, '', 'no segment keeps blocks past its size after a failed reservation');
check_exact($node, tables => \%tables, label => 'failed reservations');

$node->stop;
done_testing();

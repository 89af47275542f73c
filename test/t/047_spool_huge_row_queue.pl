# The spool's write thread is woken for a few buffers at a time, not for
# each (write_behind.cpp, kWakeAfter). A buffer over 4 MB (a huge row) waits
# for every buffer queued before it to be written: those queued without a
# wake-up must be written all the same. Here one transaction's small rows
# fill one 256 kB buffer (queued, the thread idle), then a 6 MB row follows:
# the stream worker must not wait for ever, and the file gets every row.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;

my $node = pgsink_node('spool_huge_row_queue');
$node->start;
my %tables = ('public.t' => ['id']);
$node->safe_psql('postgres', q{
CREATE EXTENSION pgsink;
CREATE TABLE t (id int8 PRIMARY KEY, v text);
SELECT pgsink.add_table('t', import => false);
});
wait_delivered($node, 'postgres', 'the empty table', 30);

for my $k (1 .. 3)
{
	my $base = $k * 1000;
	$node->safe_psql('postgres', qq{
BEGIN;
INSERT INTO t SELECT g, repeat('s', 1000) FROM generate_series($base, $base + 299) g;
INSERT INTO t VALUES ($base + 999, repeat('h', 6 * 1024 * 1024));
COMMIT;
});
	my ($rc, $out, $err) = $node->psql('postgres', "SELECT pgsink.wait_for_delivery('20s')");
	is($rc, 0, "round $k: small rows then a 6 MB row are delivered")
	  or diag($err);
	last if $rc != 0;
}
is($node->safe_psql('postgres', 'SELECT state FROM pgsink.status'),
	'streaming', 'the stream worker streams');
check_exact($node, tables => \%tables, label => 'small rows and huge rows');

$node->stop('immediate');
done_testing();

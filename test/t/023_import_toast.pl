# Imports and TOASTed values. An update that leaves a TOASTed column
# unchanged is streamed without that column ("unchanged": the sink keeps the
# value it has). When such an update lands in the window of the chunk that
# holds the row (between its watermarks), the chunk's copy of the row is
# dropped as superseded; the file must still carry the TOASTed value (in an
# import entry or in a streamed entry), or the sink can never know it.
#
# Completion is detected in the server log rather than by polling
# pgsink.imports, so that this test exercises only the TOAST case.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use PgsinkImport;
use Test::More;
use Time::HiRes qw(time usleep);

my $rows = 20000;
my $node = pgsink_node(
	'import_toast',
	extra_conf => q{
pgsink.import_chunk_rows = 2000
});
$node->start;

# doc: 3.2 kB, stored out of line (EXTERNAL: not compressed into the row).
$node->safe_psql('postgres', qq{
CREATE EXTENSION pgsink;
CREATE TABLE tt (id int PRIMARY KEY, n int NOT NULL, doc text);
ALTER TABLE tt ALTER doc SET STORAGE EXTERNAL;
INSERT INTO tt SELECT g, 0, repeat(md5(g::text), 100) FROM generate_series(1, $rows) g;
CREATE TABLE ctl (stop boolean NOT NULL);
INSERT INTO ctl VALUES (false);
-- Updates of n only: doc is unchanged and not logged.
CREATE PROCEDURE toucher(max_seconds int) LANGUAGE plpgsql AS \$\$
DECLARE
    deadline constant timestamptz := clock_timestamp() + make_interval(secs => max_seconds);
BEGIN
    LOOP
        EXIT WHEN (SELECT stop FROM ctl) OR clock_timestamp() > deadline;
        UPDATE tt SET n = n + 1 WHERE id = (SELECT 1 + (random() * ($rows - 1))::int);
        COMMIT;
    END LOOP;
END
\$\$;
});
my @touchers = map {
	IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', 'CALL toucher(120)' ],
		'>', '/dev/null', '2>', '/dev/null')
} (1, 2);
usleep(300_000);

$node->safe_psql('postgres', "SELECT pgsink.add_table('tt')");
my $start = time();
my $done;
while (time() - $start < 120)
{
	($done) = slurp_file($node->logfile) =~ /import job 1 (complete|expired|failed)/;
	last if $done;
	usleep(200_000);
}
is($done, 'complete', 'the import completes');
$node->safe_psql('postgres', 'UPDATE ctl SET stop = true');
$_->finish for @touchers;
wait_delivered($node, 'postgres', 'after the import');
note(import_jobs($node));

my $res = check_import_exact($node, label => 'TOAST', tables => { 'public.tt' => ['id'] });
my $unknown = grep { /<unknown: unchanged TOASTed value/ } values %{ $res->{state}{'public.tt'} };
is($unknown, 0,
	'every row has its TOASTed value in the file (rows whose doc the file never carries: '
	  . "$unknown)");
note(sprintf('%d of %d rows imported; %d streamed updates of rows not imported yet',
		$res->{imported}{'public.tt'} // 0, $rows, $res->{streamed_unimported}));

$node->stop;
done_testing();

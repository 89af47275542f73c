# The ClickHouse sink against a real server (PgsinkClickHouse.pm), lean:
# (1) a change from before a TRUNCATE that arrives after it (a parked entry
#     sent again by pgsink.retry_dead_letters() once the table was
#     truncated) does not bring its row back: the truncate's position is
#     kept in ClickHouse (_pgsink_truncates), and read back after a restart,
#     and the view hides rows before it (planted);
#     a resync_end (a TRUNCATE at resync_since) is remembered too;
# (2) a delete without its old key (REPLICA IDENTITY NOTHING) is parked,
#     saying why, not skipped silently: in a streamed INSERT and in a batch
#     of several tables;
# (3) a damaged spool line is parked with the reason and delivery goes on
#     (the batch failed at every attempt and held the cursor);
# (4) so is a change without a Schema entry before it.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkClickHouse;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(usleep);

my $node = pgsink_node('ch_refusals', extra_conf => q{
pgsink.sink = 'clickhouse'
pgsink.retry_max_interval = '1s'
pgsink.http_timeout = '20s'
});
my $ch = ch_start($node->basedir . '/clickhouse');
$node->append_conf('postgresql.conf', "pgsink.clickhouse_url = '$ch->{url}'");
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub parked
{
	my ($table, $like) = @_;
	return sql("SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' "
		  . "AND \"table\" = '$table'" . ($like ? " AND response LIKE '$like'" : ''));
}
sub ids
{
	my ($from) = @_;
	return ch_query($ch, "SELECT groupArray(id) FROM (SELECT id FROM pgsink.$from ORDER BY id)");
}

# How many truncates of a table ClickHouse keeps ('none': no such table).
sub truncates
{
	my ($table) = @_;
	my $n = eval {
		ch_query($ch, "SELECT count() FROM pgsink._pgsink_truncates WHERE table_name = '$table'");
	} // 'none';
	chomp $n;
	return $n;
}

# (1) A table ClickHouse refuses at first (someone's table of that name):
# the insert is parked.
ch_query($ch, 'CREATE DATABASE IF NOT EXISTS pgsink');
ch_query($ch, 'CREATE TABLE pgsink.public_tr (x String) ENGINE = Log');
sql(q{
CREATE EXTENSION pgsink;
CREATE TABLE tr (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('tr', import => false);
INSERT INTO tr VALUES (1, 'before the truncate');
});
wait_delivered($node, 'postgres', '(1) a refused insert');
is(parked('public.tr'), 1, '(1) the insert is parked');
# The table freed, the sink started again (it knew the table as refused);
# then a TRUNCATE and a row after it; then a restart, so that the sink must
# read the truncate's position back from ClickHouse.
ch_query($ch, 'DROP TABLE pgsink.public_tr');
$node->restart;
sql(q{TRUNCATE tr; INSERT INTO tr VALUES (2, 'after the truncate');});
wait_delivered($node, 'postgres', '(1) truncate');
is(ids('public_tr_current'), "[2]\n", '(1) the view holds the row after the truncate');
is(truncates('public_tr'), 1, '(1) the truncate\'s position is kept in ClickHouse');
$node->restart;
is(sql('SELECT pgsink.retry_dead_letters()'), 1, '(1) the parked insert is sent again');
ok(defined poll_until($node, 'postgres', "SELECT count(*) FROM pgsink.dead_letters", '0', 30),
	'(1) it leaves the dead letters (the truncate superseded it)');
wait_delivered($node, 'postgres', '(1) after the retry');
is(ids('public_tr_current'), "[2]\n", '(1) the view does not show the truncated row again');
is(ids('public_tr FINAL WHERE _pgsink_deleted = 0'), "[2]\n",
	'(1) nor does the table (FINAL): the old change was not written');

# A row from before the truncate already in the table (written by an older
# pgsink; here planted): the view does not show it either.
ch_query($ch, "INSERT INTO pgsink.public_tr (id, v, _pgsink_lsn, _pgsink_sequence, _pgsink_op, "
	  . "_pgsink_deleted) VALUES (99, 'planted', 1, 1, 'insert', 0)");
is(ids('public_tr FINAL WHERE _pgsink_deleted = 0'), "[2,99]\n", '(1) a row planted before the truncate');
is(ids('public_tr_current'), "[2]\n", '(1) the view does not show it');
ch_query($ch, "ALTER TABLE pgsink.public_tr DELETE WHERE id = 99");

# (1) A resync_end is a TRUNCATE at resync_since: remembered as well.
sql(q{SELECT pgsink.resync('tr')});
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.imports WHERE resync AND state <> 'complete'", '0', 60),
	'(1) a resync completes');
wait_delivered($node, 'postgres', '(1) resync');
is(truncates('public_tr'), 2, '(1) the resync_end\'s position is kept too');

# (2) Deletes without the old key.
sql(q{
CREATE TABLE nk (id int PRIMARY KEY, v text);
SELECT pgsink.add_table('nk', import => false);
INSERT INTO nk VALUES (1, 'a'), (2, 'b'), (3, 'c');
});
wait_delivered($node, 'postgres', '(2) rows in place');
sql(q{ALTER TABLE nk REPLICA IDENTITY NOTHING});
sql(q{DELETE FROM nk WHERE id = 1});
sql(q{BEGIN; DELETE FROM nk WHERE id = 2; INSERT INTO tr VALUES (3, 'beside'); COMMIT;});
wait_delivered($node, 'postgres', '(2) deletes without their key');
is(parked('public.nk', '%delete without the old key%REPLICA IDENTITY NOTHING%'), 2,
	'(2) both deletes are parked, saying why');
is(ids('public_tr_current'), "[2,3]\n", '(2) the change beside it is delivered');

# (3) A spool line damaged on disk, between two good ones.
sql(q{SELECT pgsink.pause('clickhouse')});
sql(q{INSERT INTO tr VALUES (10, 'damaged-line-marker')});
sql(q{INSERT INTO tr VALUES (11, 'after the damage')});
my $spool = $node->data_dir . '/pgsink_spool';
my ($segment, $at);
for (my $t = 0; $t < 300 && !defined $at; $t++)
{
	for my $f (glob("$spool/*.jsonl"))
	{
		my $text = slurp_file($f);
		next unless $text =~ /after the damage/;
		my $i = index($text, 'damaged-line-marker');
		($segment, $at) = ($f, rindex($text, "\n", $i) + 1);
	}
	usleep(100_000) unless defined $at;
}
ok(defined $at, '(3) the line is in the spool');
sleep 1;    # made durable (the index's round end) after it is written
open(my $fh, '+<', $segment) or die $!;
sysseek($fh, $at, 0);
sysread($fh, my $first, 1);
is($first, '{', '(3) the line starts where it was found');
sysseek($fh, $at, 0);
syswrite($fh, '[');
close $fh;
sql(q{SELECT pgsink.resume('clickhouse')});
wait_delivered($node, 'postgres', '(3) a damaged line', 30);
is(sql(q{SELECT count(*) FROM pgsink.dead_letters WHERE sink = 'clickhouse' }
		  . q{AND entry LIKE '%damaged-line-marker%' AND response LIKE '%could not read this entry%'}),
	1, '(3) the damaged line is parked, saying why');
is(ids('public_tr_current'), "[2,3,11]\n", '(3) the entry after it is delivered');

# (4) A change of a table the sink has no Schema entry of (here a parked
# entry edited to name another table; a dropped table's would do): parked
# again, saying why; it threw, and the batch held the sink (one batch in
# flight) for ever.
my $dead = sql(q{SELECT min(id) FROM pgsink.dead_letters WHERE "table" = 'public.nk'});
sql(qq{UPDATE pgsink.dead_letters SET entry = replace(entry, '"name":"nk"', '"name":"nosuch"')
  WHERE id = $dead});
is(sql("SELECT pgsink.retry_dead_letters(ARRAY[$dead])"), 1, '(4) sent again');
# (parked anew: the edited entry has another entry_key)
ok(defined poll_until($node, 'postgres',
		"SELECT count(*) FROM pgsink.dead_letters WHERE entry LIKE '%nosuch%' "
		  . "AND response LIKE 'no Schema entry of public.nosuch%'",
		'1', 30),
	'(4) refused again, saying why');
sql(q{INSERT INTO tr VALUES (12, 'after it')});
wait_delivered($node, 'postgres', '(4) after a change without a Schema entry', 30);
is(ids('public_tr_current'), "[2,3,11,12]\n", '(4) delivery goes on');

ch_stop($ch);
$node->stop;
done_testing();

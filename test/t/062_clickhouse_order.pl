# The ClickHouse sink against a real server (PgsinkClickHouse.pm), lean:
# changes of one transaction share its LSN, ClickHouse's version, and of
# rows with equal versions it keeps the last inserted (FINAL, and a merge
# for good). A parked entry sent again by pgsink.retry_dead_letters() comes
# after the newer changes of its transaction were delivered: it must not
# become the current row.
# (1) a key updated twice in one transaction, the first change refused
#     (parked), the second delivered; the first sent again: the view still
#     shows the second, also after a merge (OPTIMIZE ... FINAL);
# (2) the same with a delete second, of a table keyed by a numeric (read
#     back as text: the lookup must not compare its text with the key);
# (3) a parked change that nothing newer replaced, sent again in the same
#     retry, is written; a parked key change whose new key a later change of
#     the transaction updated: the old key's tombstone is written, the new
#     key's row is not;
# (4) (beside) an update that leaves a TOASTed value unchanged, of a table
#     keyed by a numeric: the value is read back by the key (it was looked
#     for by the key's text, refused by ClickHouse, and retried for ever).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkClickHouse;
use PgsinkTest;
use Test::More;

my $node = pgsink_node('ch_order', extra_conf => q{
pgsink.sink = 'clickhouse'
pgsink.retry_max_interval = '1s'
pgsink.http_timeout = '20s'
});
my $ch = ch_start($node->basedir . '/clickhouse');
$node->append_conf('postgresql.conf', "pgsink.clickhouse_url = '$ch->{url}'");
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub ch { my $r = ch_query($ch, $_[0]); chomp $r; return $r; }

# numeric(10,2) cannot hold NaN in ClickHouse (Decimal): such a change is
# refused and parked alone, the others of its batch delivered.
sql(q{
CREATE EXTENSION pgsink;
CREATE TABLE o (id int PRIMARY KEY, n numeric(10,2), v text);
CREATE TABLE d (k numeric(10,2) PRIMARY KEY, n numeric(10,2), v text);
SELECT pgsink.add_table('o', import => false);
SELECT pgsink.add_table('d', import => false);
INSERT INTO o VALUES (1, 0, 'start'), (2, 0, 'two');
INSERT INTO d VALUES (1.5, 0, 'start'), (2.25, 0, 'stays');
});
wait_delivered($node, 'postgres', 'rows in place');
sql(q{
BEGIN;
UPDATE o SET n = 'NaN', v = 'first' WHERE id = 1;
UPDATE o SET n = 1, v = 'second' WHERE id = 1;
UPDATE d SET n = 'NaN', v = 'first' WHERE k = 1.5;
DELETE FROM d WHERE k = 1.5;
UPDATE d SET n = 'NaN', v = 'later' WHERE k = 2.25;
UPDATE o SET id = 3, n = 'NaN' WHERE id = 2;
UPDATE o SET v = 'moved', n = 5 WHERE id = 3;
COMMIT;
});
wait_delivered($node, 'postgres', 'a transaction with refused changes');
is(sql(q{SELECT string_agg("table" || ':' || (entry::json->>'sequence'), ','
    ORDER BY (entry::json->>'sequence')::int)
  FROM pgsink.dead_letters}), 'public.o:1,public.d:3,public.d:5,public.o:6',
	'the first change of each key is parked, the lone update of 2.25, and the key change');
is(ch('SELECT v FROM pgsink.public_o_current WHERE id = 1'), 'second',
	'(1) the view shows the second change');
is(ch("SELECT count() FROM pgsink.public_d_current WHERE k = toDecimal64('1.5', 2)"), '0',
	'(2) and the delete');

# Sent again, now with a value ClickHouse holds (the refusal was fixed).
sql(q{UPDATE pgsink.dead_letters SET entry = replace(entry, '"n":"NaN"', '"n":"7"')});
is(sql('SELECT pgsink.retry_dead_letters()'), 4, 'the parked changes are sent again');
ok(defined poll_until($node, 'postgres', 'SELECT count(*) FROM pgsink.dead_letters', '0', 30),
	'they leave the dead letters (accepted)');
wait_delivered($node, 'postgres', 'after the retry');
is(ch('SELECT v FROM pgsink.public_o_current WHERE id = 1'), 'second',
	'(1) the view still shows the second change');
is(ch("SELECT count() FROM pgsink.public_d_current WHERE k = toDecimal64('1.5', 2)"), '0',
	'(2) the deleted row stays deleted');
is(ch("SELECT v FROM pgsink.public_d_current WHERE k = toDecimal64('2.25', 2)"), 'later',
	'(3) a parked change nothing replaced is written');

# A merge keeps one row per key: the last inserted of the greatest version.
ch('OPTIMIZE TABLE pgsink.public_o FINAL');
ch('OPTIMIZE TABLE pgsink.public_d FINAL');
is(ch('SELECT groupArray(v) FROM (SELECT v FROM pgsink.public_o WHERE id = 1)'), "['second']",
	'(1) after a merge, the one row left is the second change');
is(ch("SELECT groupArray(_pgsink_deleted) FROM (SELECT _pgsink_deleted FROM pgsink.public_d "
		  . "WHERE k = toDecimal64('1.5', 2))"), '[1]',
	'(2) after a merge, the one row left is the delete');
is(ch('SELECT id, v FROM pgsink.public_o_current ORDER BY id FORMAT TSV'), "1\tsecond\n3\tmoved",
	'(1), (3) the view holds the source table\'s rows: the old key 2 deleted, 3 as last changed');
is(sql(q{SELECT string_agg(id || ' ' || v, ',' ORDER BY id) FROM o}), '1 second,3 moved', '(source)');

# (4) TOAST carry-over by a numeric key.
sql(q{
CREATE TABLE dt (k numeric(10,2) PRIMARY KEY, big text, note text);
ALTER TABLE dt ALTER big SET STORAGE EXTERNAL;
SELECT pgsink.add_table('dt', import => false);
INSERT INTO dt VALUES (1.5, repeat('d', 9000), 'a');
});
wait_delivered($node, 'postgres', '(4) a row in place');
sql(q{UPDATE dt SET note = 'b'});
wait_delivered($node, 'postgres', '(4) an update that leaves big unchanged', 20);
is(ch('SELECT toString(k), length(big), note FROM pgsink.public_dt_current FORMAT TSV'),
	"1.50\t9000\tb", '(4) the unchanged value read back by a numeric key');

ch_stop($ch);
$node->stop;
done_testing();

# A LATIN1 database: the changelog is UTF-8 whatever the server encoding:
# schema, table and column names, text, json and jsonb values, enum labels
# and the Schema entries. Once, json/jsonb values and names were written
# in the database's encoding, which no JSON reader accepts. And an empty
# text value once read on past its end (the next column's bytes leaked into
# the changelog): an unconverted value is not NUL-terminated.
use strict;
use warnings;
use utf8;

use FindBin;
use lib $FindBin::RealBin;

use Encode qw(decode);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use PgsinkTest;
use Test::More;

$ENV{PGCLIENTENCODING} = 'UTF8';    # the test's strings are UTF-8; the server converts
my $node = pgsink_node('latin1', database => 'latin1db');
$node->start;
$node->safe_psql('postgres',
	"CREATE DATABASE latin1db ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$node->safe_psql('latin1db', q{
CREATE EXTENSION pgsink;
CREATE SCHEMA "schéma";
CREATE TYPE "schéma".humeur AS ENUM ('gai', 'très gai');
CREATE TABLE "schéma"."tablé" (id int PRIMARY KEY, "naïve" text, j json, jb jsonb,
                                h "schéma".humeur);
SELECT pgsink.add_table('"schéma"."tablé"', import => false);
INSERT INTO "schéma"."tablé" VALUES
    (1, 'déjà vu', '{"clé": "é"}', '{"clé": "ü"}', 'très gai');
CREATE TABLE empty_text (id int PRIMARY KEY, a text, secret text, v varchar, c char(2), j json);
SELECT pgsink.add_table('empty_text', import => false);
INSERT INTO empty_text VALUES (1, '', 'password=hunter2', '', '', '""');
});
wait_delivered($node, 'latin1db', 'delivered');

my $raw = slurp_file(sink_file($node));
my $text = eval { decode('UTF-8', $raw, Encode::FB_CROAK) };
ok(defined $text, 'the file is valid UTF-8') or diag($@);
$text //= '';
my ($schema, $change, $schema2, $empty) = split /\n/, $text;
# (Avro names are [A-Za-z0-9_]: the original name is kept beside a sanitised one.)
like($schema, qr/"namespace":"sch__ma\.tabl__"/, 'Schema entry: the Avro namespace');
like($schema, qr/"pg_name":"naïve"/, 'Schema entry: the column name');
like($schema, qr/"pg_type":"\\"schéma\\"\.humeur"/, 'Schema entry: the type name');
like($change, qr/"namespace":"schéma","name":"tablé"/, 'the change: schema and table');
like($change, qr/"naïve":"déjà vu"/, 'text value');
like($change, qr/"j":\{"clé": "é"\}/, 'json value');
like($change, qr/"jb":\{"clé": "ü"\}/, 'jsonb value');
like($change, qr/"h":"très gai"/, 'enum label');
like($empty, qr/"after":\{"id":1,"a":"","secret":"password=hunter2","v":"","c":"  ","j":""\}/,
	'empty text values are empty, and nothing of the next column leaks into them');

$node->stop;
done_testing();

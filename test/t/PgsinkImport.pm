# PgsinkImport: helpers for the TAP tests of imports (backfill), on top of
# PgsinkTest (node setup, line parsing, source tables as canonical rows).
#
# - replay_import(): one pass over the sink file(s) that checks the order of
#   the entries ((lsn, sequence) strictly increasing, 1..n per transaction or
#   import chunk; an import chunk's entries share lsn and timestamp, xid null)
#   and replays them with import semantics: "import" is an upsert by key;
#   insert/update/delete/truncate as usual, where an update or delete may
#   concern a key the import has not reached yet. It also checks the promise
#   of the watermark algorithm, key by key, in file order:
#     * an imported row never follows a delete of its key (or a TRUNCATE of
#       its table) unless an insert of the key came in between: a row deleted
#       during the import never reappears;
#     * an imported row that follows a streamed change of its key equals the
#       row that change left: an import never overwrites a newer change.
#   A Schema entry of a table makes its replayed rows take its columns.
# - check_import_exact(): replay_import() plus the comparison with the
#   source tables, as Test::More assertions.
# - import_jobs(), wait_imports(): the jobs of pgsink.imports, and waiting
#   until they are all finished.
package PgsinkImport;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run;
use PgsinkTest;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(replay_import check_import_exact import_jobs wait_imports import_under_writes);

my $UNKNOWN = '<unknown: unchanged TOASTed value of a row never imported>';

# Does an imported row (canonical form) agree with the replayed one? Columns
# the replay does not know (an unchanged TOASTed value of a row streamed
# before it was imported) agree with anything.
sub rows_agree
{
	my ($replayed, $imported) = @_;
	return 1 if $replayed eq $imported;
	return 0 if index($replayed, $UNKNOWN) < 0;
	my %r = map { split(/=/, $_, 2) } split(/\x1f/, $replayed);
	my %i = map { split(/=/, $_, 2) } split(/\x1f/, $imported);
	return 0 unless join(',', sort keys %r) eq join(',', sort keys %i);
	for my $c (keys %r)
	{
		next if $r{$c} eq $UNKNOWN;
		return 0 unless $r{$c} eq $i{$c};
	}
	return 1;
}

# A new Schema entry of a table: its rows take the new columns, as a sink
# evolving its table would (a column added: null in the rows it has; a
# column dropped: gone from them).
sub project_rows
{
	my ($rows, $schema) = @_;
	return unless $rows && ref $schema->{fields} eq 'ARRAY';
	my @names = sort map { $_->{name} } @{ $schema->{fields} };
	for my $k (keys %$rows)
	{
		my %row = map { split(/=/, $_, 2) } split(/\x1f/, $rows->{$k});
		$rows->{$k} = join("\x1f", map { "$_=" . ($row{$_} // '\\N') } @names);
	}
}

# One pass over the changelog file(s). keys => { 'public.t' => ['id'], ... }.
# Returns a hash: state => { table => { key => canonical row } }, errors
# (first 30 messages), error_count, lines, ops => { op => n }, chunks (import
# chunks: distinct lsns of import entries), imported => { table => rows },
# and counters showing which interleavings happened:
#   streamed_before_import: imports of a key whose earlier streamed change
#                           the replay had already applied (and equal to it);
#   streamed_unimported:    updates/deletes of keys not (yet) in the replay;
#   deleted_then_imported:  (error) imports after a delete/truncate of the key.
sub replay_import
{
	my (%opt) = @_;
	my @files = ref $opt{files} ? @{ $opt{files} } : ($opt{files});
	my %keys = %{ $opt{keys} };
	my %res = (
		state => {},
		errors => [],
		error_count => 0,
		lines => 0,
		ops => {},
		chunks => 0,
		imported => {},
		streamed_before_import => 0,
		streamed_unimported => 0,
		deleted_then_imported => 0,
		stale_imports => 0);
	my $err = sub {
		my ($msg) = @_;
		$res{error_count}++;
		push @{ $res{errors} }, $msg if @{ $res{errors} } < 30;
	};
	$res{state}{$_} = {} for keys %keys;
	# Per table and key: the last streamed op ('present' or 'gone') and the
	# position of the last TRUNCATE of the table.
	my (%streamed, %truncated_at);

	my ($prev_lsn, $prev_seq, $prev_xid, $prev_ts) = (-1, 0, '', '');
	my $pos = 0;
	for my $file (@files)
	{
		open(my $fh, '<', $file) or die "could not open $file: $!";
		binmode $fh;
		my $lineno = 0;
		while (my $line = <$fh>)
		{
			$lineno++;
			$pos++;
			$res{lines}++;
			my $where = "$file:$lineno";
			$err->("$where: not terminated by a newline") if substr($line, -1) ne "\n";
			chomp $line;
			my $e = PgsinkTest::decode_line($line);
			if (!defined $e || ref $e ne 'HASH')
			{
				$err->("$where: not a JSON object: " . substr($line, 0, 200));
				next;
			}
			my $lsn = parse_lsn($e->{lsn});
			if (!defined $lsn)
			{
				$err->("$where: missing or malformed lsn");
				next;
			}
			if (ref $e->{schema} eq 'HASH')
			{
				project_rows($res{state}{ $e->{schema}{namespace} // '' }, $e->{schema});
				next;
			}

			my $op = $e->{op} // '?';
			my $seq = $e->{sequence} // 0;
			my $xid = $e->{xid} // 'null';
			$res{ops}{$op}++;
			if ($lsn > $prev_lsn)
			{
				$err->("$where: transaction at $e->{lsn} starts at sequence $seq")
				  if $seq != 1;
				$res{chunks}++ if $op eq 'import';
			}
			elsif ($lsn == $prev_lsn)
			{
				$err->("$where: (lsn, sequence) ($e->{lsn}, $seq) after sequence $prev_seq")
				  if $seq != $prev_seq + 1;
				$err->("$where: xid changes within lsn $e->{lsn}") if $xid ne $prev_xid;
				$err->("$where: timestamp changes within lsn $e->{lsn}")
				  if $e->{timestamp} ne $prev_ts;
			}
			else
			{
				$err->("$where: lsn goes backwards: $e->{lsn} after " . format_lsn($prev_lsn));
			}
			$err->("$where: import entry with xid $xid") if $op eq 'import' && $xid ne 'null';
			($prev_lsn, $prev_seq, $prev_xid, $prev_ts) = ($lsn, $seq, $xid, $e->{timestamp});

			my $table = ($e->{namespace} // '?') . '.' . ($e->{name} // '?');
			my $kc = $keys{$table};
			next unless $kc;
			my $st = $res{state}{$table};
			my $sk = ($streamed{$table} //= {});
			my $tag = "$where ($op of $table at $e->{lsn}/$seq)";

			if ($op eq 'import')
			{
				$res{imported}{$table}++;
				my $k = PgsinkTest::row_key($e->{after}, $kc);
				if (!defined $k) { $err->("$tag: no key in after"); next; }
				my $row = PgsinkTest::canonical_row($e->{after});
				my $last = $sk->{$k};
				if (defined $last && $last eq 'gone'
					|| !defined $last && defined $truncated_at{$table})
				{
					$res{deleted_then_imported}++;
					$err->("$tag: key $k imported after its delete"
						  . (defined $last ? '' : ' (TRUNCATE)')
						  . ': a deleted row reappears: ' . $row);
				}
				elsif (defined $last)
				{
					if (!exists $st->{$k} || !rows_agree($st->{$k}, $row))
					{
						$res{stale_imports}++;
						$err->("$tag: key $k imported after a newer streamed change: "
							  . "import [$row] overwrites [" . ($st->{$k} // 'absent') . ']');
					}
					else
					{
						$res{streamed_before_import}++;
					}
				}
				$st->{$k} = $row;
			}
			elsif ($op eq 'insert')
			{
				my $k = PgsinkTest::row_key($e->{after}, $kc);
				if (!defined $k) { $err->("$tag: no key in after"); next; }
				$err->("$tag: insert of key $k, which is already there (duplicate?)")
				  if exists $st->{$k};
				$st->{$k} = PgsinkTest::canonical_row($e->{after});
				$sk->{$k} = 'present';
			}
			elsif ($op eq 'update')
			{
				my $old = PgsinkTest::row_key($e->{before}, $kc);
				my $new = PgsinkTest::row_key($e->{after}, $kc);
				if (!defined $old || !defined $new)
				{
					$err->("$tag: no key in before/after");
					next;
				}
				my %after = %{ $e->{after} };
				$res{streamed_unimported}++ unless exists $st->{$old};
				if (ref $e->{unchanged} eq 'ARRAY' && @{ $e->{unchanged} })
				{
					# Unchanged TOASTed columns: the replayed value, if there is one.
					my %prev = exists $st->{$old}
					  ? (map { split(/=/, $_, 2) } split(/\x1f/, $st->{$old}))
					  : ();
					for my $c (@{ $e->{unchanged} })
					{
						$after{$c} = exists $prev{$c}
						  ? ($prev{$c} eq '\\N' ? undef : $prev{$c})
						  : $UNKNOWN;
					}
				}
				if ($new ne $old)
				{
					delete $st->{$old};
					$sk->{$old} = 'gone';
					$err->("$tag: key change onto key $new, which is already there")
					  if exists $st->{$new};
				}
				$st->{$new} = PgsinkTest::canonical_row(\%after);
				$sk->{$new} = 'present';
			}
			elsif ($op eq 'delete')
			{
				my $k = PgsinkTest::row_key($e->{before}, $kc);
				if (!defined $k) { $err->("$tag: no key in before"); next; }
				$res{streamed_unimported}++ unless exists $st->{$k};
				delete $st->{$k};
				$sk->{$k} = 'gone';
			}
			elsif ($op eq 'truncate')
			{
				%$st = ();
				%$sk = ();
				$truncated_at{$table} = $pos;
			}
			else
			{
				$err->("$tag: unknown op");
			}
		}
		close $fh;
	}
	return \%res;
}

# replay_import() and the comparison with the source tables, as assertions.
# tables => { 'public.t' => ['id'], ... }. Returns the replay's result.
sub check_import_exact
{
	my ($node, %opt) = @_;
	my $db = $opt{database} // 'postgres';
	my $label = $opt{label} // 'changelog';
	my $t0 = time();
	my $res = replay_import(
		files => $opt{files} // [ sink_file($node) ],
		keys => $opt{tables});
	note(sprintf(
			"%s: %d lines, ops %s, %d import chunks; imported %s; %d imports after a "
			  . "streamed change of their key, %d streamed changes of keys not imported yet "
			  . "(replayed in %.1fs)",
			$label, $res->{lines},
			join(' ', map { "$_=$res->{ops}{$_}" } sort keys %{ $res->{ops} }),
			$res->{chunks},
			join(' ', map { "$_=$res->{imported}{$_}" } sort keys %{ $res->{imported} }),
			$res->{streamed_before_import}, $res->{streamed_unimported}, time() - $t0));
	is($res->{error_count}, 0,
		"$label: ordered entries; no deleted row reappears, no import overwrites a newer "
		  . "change, no duplicate insert")
	  or diag(join("\n", map { length($_) > 400 ? substr($_, 0, 400) . '...' : $_ }
			@{ $res->{errors} }));
	for my $table (sort keys %{ $opt{tables} })
	{
		my $want = source_state($node, $db, $table, $opt{tables}{$table});
		my @diff = compare_states($res->{state}{$table} // {}, $want);
		ok(!@diff, "$label: replayed $table equals the table (" . scalar(keys %$want) . ' rows)')
		  or diag(join("\n", map { length($_) > 400 ? substr($_, 0, 400) . '...' : $_ } @diff));
	}
	return $res;
}

# The import jobs as text lines "id|table|state|cursor|rows_imported|chunks|error".
sub import_jobs
{
	my ($node, $db) = @_;
	my ($ok, $out, $err) = query_retry($node, $db // 'postgres',
		"SELECT id, \"table\", state, cursor, rows_imported, chunks, error "
		  . "FROM pgsink.imports ORDER BY id", 60);
	return $ok ? $out : "(could not read pgsink.imports: $err)";
}

# A table "im" of $rows rows, changed by a writer (updates, deletes from the
# end, inserts from $new_from on; one transaction each, $rounds of them) while
# pgsink.add_table() imports it: what the sink suites check imports with.
# Returns the writer (IPC::Run) once add_table() has committed.
sub import_under_writes
{
	my ($node, %opt) = @_;
	my ($rows, $rounds, $new_from) = @opt{qw(rows rounds new_from)};
	$node->safe_psql('postgres', qq{
CREATE TABLE im (id int PRIMARY KEY, v int, note text);
INSERT INTO im SELECT g, 0, 'n' || g FROM generate_series(1, $rows) g;
});
	my $writer = IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', qq{
DO \$\$ BEGIN
  FOR i IN 1..$rounds LOOP
    UPDATE im SET v = v + 1 WHERE id % $rounds = i % $rounds;
    DELETE FROM im WHERE id = $rows - i;
    INSERT INTO im VALUES ($new_from + i, i, 'new');
    COMMIT;
  END LOOP;
END \$\$;} ], '>', '/dev/null', '2>&1');
	$node->safe_psql('postgres', "SELECT pgsink.add_table('im')");
	return $writer;
}

# Wait until no job is scheduled, running or failed (through restarts);
# returns the seconds it took, or undef (with a diagnostic) after $seconds.
sub wait_imports
{
	my ($node, $db, $seconds) = @_;
	my $start = time();
	while (time() - $start <= $seconds)
	{
		my ($ok, $out) = query_retry($node, $db // 'postgres',
			"SELECT count(*) FROM pgsink.imports "
			  . "WHERE state IN ('scheduled', 'running', 'failed')", 60);
		return time() - $start if $ok && $out eq '0';
		usleep(100_000);
	}
	diag("imports unfinished after ${seconds}s:\n" . import_jobs($node, $db));
	return undef;
}

1;

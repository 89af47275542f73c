# PgsinkTest: helpers shared by pgsink's TAP tests.
#
# - pgsink_node(): a PostgreSQL::Test::Cluster node configured for pgsink
#   (file sink in the node's base directory, crash restarts enabled).
# - check_changelog(): one streaming pass over the file sink's output that
#   checks every line is complete JSON, that (lsn, sequence) is unique and
#   strictly increasing (lsn compared as pg_lsn) with sequences 1, 2, 3...
#   inside each transaction, and replays the Modifications into an in-memory
#   copy of each table keyed by its primary key. Anomalies that only a
#   duplicate or a lost change can cause (an insert of a key that is already
#   there, an update or delete of a key that is not) are reported.
# - check_exact(): the above, compared with SELECT of the source tables:
#   exact equality, as Test::More assertions.
# - small utilities: polling, waiting for delivery through server restarts,
#   the stream worker's pid and memory, crashing a node with kill -9.
package PgsinkTest;

use strict;
use warnings;

use Exporter 'import';
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use Test::More;
use Time::HiRes qw(time usleep);

# psql may exit before it has read its query while a server restarts (a
# crash, a worker killed): IPC::Run then dies writing to it ("Broken pipe").
# Every test takes that as the connection failure it is (psql's exit code 2),
# not as the end of the test.
{
	no warnings 'redefine';
	my $psql = \&PostgreSQL::Test::Cluster::psql;
	*PostgreSQL::Test::Cluster::psql = sub {
		my ($self, $dbname, $sql, %params) = @_;
		my @ret = wantarray ? eval { $psql->(@_) } : (scalar eval { $psql->(@_) });
		return wantarray ? @ret : $ret[0] unless $@;
		die $@ unless $@ =~ /Broken pipe/;
		my $why = 'psql: server closed the connection before the query was sent (Broken pipe)';
		${ $params{stderr} } = $why if ref $params{stderr};
		die "connection error: $why" if $params{on_error_die};
		return wantarray ? (2, '', $why) : 2;
	};
}

our @EXPORT = qw(
  pgsink_node sink_file parse_lsn format_lsn
  check_changelog source_state compare_states check_exact
  poll_until query_retry wait_delivered stream_pid worker_pid_status alive
  proc_status crash_node start_after_crash file_lines status_row start_with_fault_shim
  spool_power_loss test_seed churn_sql
  sink_status delivery_pid wait_delivery_pid retained_wal spool_bytes
);

my $json = JSON::PP->new->utf8->canonical;

# Seed rand() from PGSINK_SEED, or from the time and pid; note it so that a
# failing run's random moments ($what) can be repeated.
sub test_seed
{
	my ($what) = @_;
	my $seed = $ENV{PGSINK_SEED} // (time() ^ $$) % 1000000;
	srand($seed);
	note("seed $seed (PGSINK_SEED=$seed repeats $what)");
	return $seed;
}

# SQL that inserts rows $from .. $from + $n - 1 into t (id int8, n int4,
# v text), then updates every fifth and deletes every eleventh of them.
sub churn_sql
{
	my ($from, $n) = @_;
	my $to = $from + $n - 1;
	return qq{
INSERT INTO t SELECT g, g % 97, repeat(md5(g::text), 4) FROM generate_series($from, $to) g;
UPDATE t SET n = n + 1 WHERE id % 5 = 0 AND id BETWEEN $from AND $to;
DELETE FROM t WHERE id % 11 = 0 AND id BETWEEN $from AND $to;};
}

# The node's sink file, by node name.
my %sink_files;

# A node for pgsink. Options: database (default 'postgres'), extra_conf (a
# string appended to postgresql.conf), file (the sink file; default
# changes.jsonl in the node's base directory). The node is initialized, not
# started.
sub pgsink_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $file = $opt{file} // $node->basedir . '/changes.jsonl';
	my $db = $opt{database} // 'postgres';
	$sink_files{ $node->name } = $file;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'pgsink'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
output_plugin_libraries = 'pgoutput, test_decoding, pgsink'
pgsink.database = '$db'
pgsink.file_path = '$file'
pgsink.retry_max_interval = '1s'
# PostgreSQL::Test::Cluster turns this off; crashes of a worker must be
# recovered from the way a production server does.
restart_after_crash = on
log_statement = none
} . ($opt{extra_conf} // ''));
	return $node;
}

sub sink_file
{
	my ($node) = @_;
	return $sink_files{ $node->name };
}

# "X/Y" (hex) as a number, as pg_lsn compares it.
sub parse_lsn
{
	my ($s) = @_;
	return undef unless defined $s && $s =~ m{^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$};
	return hex($1) * 4294967296 + hex($2);
}

sub format_lsn
{
	my ($n) = @_;
	return sprintf('%X/%X', int($n / 4294967296), $n % 4294967296);
}

# A value in a canonical text form, the same for the file's JSON and for
# to_json() of the source row (int8 is a string in one, a number in the other).
sub norm_value
{
	my ($v) = @_;
	return '\\N' unless defined $v;
	return $v ? 't' : 'f' if JSON::PP::is_bool($v);
	return $json->encode($v) if ref $v;
	return "$v";
}

# A fast, strict parser for the shape of changelog lines (an object of
# scalars, flat objects and arrays of strings, without whitespace): JSON::PP
# takes ~150 us a line, too slow for a few hundred thousand lines. A line
# the fast grammar does not match goes to JSON::PP, which has the last word.
my $S = q{"(?:[^"\\\\\x00-\x1f]++|\\\\(?:["\\\\/bfnrt]|u[0-9a-fA-F]{4}))*+"};
my $N = q{-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?};
my $SC = "(?:$S|$N|true|false|null)";
my $V = "(?:$SC|\\{(?:$S:$SC(?:,$S:$SC)*+)?\\}|\\[(?:$S(?:,$S)*+)?\\])";
my $PAIR = qr/\G([{,])($S):($V)/;
my $INNER = qr/\G[{,\[]($S)(?::($SC))?/;
my $json_nonref = JSON::PP->new->utf8->allow_nonref;

sub fast_scalar
{
	my ($t) = @_;
	my $c = substr($t, 0, 1);
	if ($c eq '"')
	{
		return index($t, '\\') < 0 ? substr($t, 1, -1) : $json_nonref->decode($t);
	}
	return undef if $t eq 'null';
	return JSON::PP::true if $t eq 'true';
	return JSON::PP::false if $t eq 'false';
	return $t =~ /[.eE]/ ? $t + 0 : $t;
}

# The usual Modification, in the order the file sink writes its keys: one match.
my $OBJ = "(?:null|\\{(?:$S:$SC(?:,$S:$SC)*+)?\\})";
my $MOD = qr/\A\{"timestamp":("[^"\\\\]*+"),"sequence":([0-9]++),"namespace":($S),"name":($S),"op":"([a-z]++)","lsn":"([0-9A-F]++\/[0-9A-F]++)","xid":([0-9]++),"before":($OBJ),"after":($OBJ)(?:,"unchanged":(\[(?:$S(?:,$S)*+)?\]))?\}\z/;

sub fast_object
{
	my ($v) = @_;
	return undef if $v eq 'null';
	my %o;
	$o{ fast_scalar($1) } = fast_scalar($2) while $v =~ /$INNER/gco;
	return \%o;
}

sub decode_line
{
	my ($line) = @_;
	if ($line =~ /$MOD/o)
	{
		my %h = (
			timestamp => substr($1, 1, -1),
			sequence => $2,
			namespace => fast_scalar($3),
			name => fast_scalar($4),
			op => $5,
			lsn => $6,
			xid => $7);
		my ($before, $after, $unchanged) = ($8, $9, $10);
		$h{before} = fast_object($before);
		$h{after} = fast_object($after);
		if (defined $unchanged)
		{
			my @a;
			push @a, fast_scalar($1) while $unchanged =~ /$INNER/gco;
			$h{unchanged} = \@a;
		}
		return \%h;
	}
	my %h;
	my $first = 1;
	while ($line =~ /$PAIR/gco)
	{
		if (($1 eq '{') != $first) { %h = (); last; }
		$first = 0;
		my ($k, $v) = ($2, $3);
		$k = index($k, '\\') < 0 ? substr($k, 1, -1) : $json_nonref->decode($k);
		my $c = substr($v, 0, 1);
		if ($c eq '{')
		{
			my %o;
			$o{ fast_scalar($1) } = fast_scalar($2) while $v =~ /$INNER/gco;
			$h{$k} = \%o;
		}
		elsif ($c eq '[')
		{
			my @a;
			push @a, fast_scalar($1) while $v =~ /$INNER/gco;
			$h{$k} = \@a;
		}
		elsif ($c eq '"')
		{
			$h{$k} = index($v, '\\') < 0 ? substr($v, 1, -1) : $json_nonref->decode($v);
		}
		else
		{
			$h{$k} = fast_scalar($v);
		}
	}
	return \%h if !$first && $line =~ /\G\}\z/gc;
	# Not the fast shape (or not JSON at all): JSON::PP decides.
	return eval { $json->decode($line) };
}

sub canonical_row
{
	my ($row) = @_;
	return join("\x1f",
		map {
			my $v = $row->{$_};
			"$_=" . (!defined $v ? '\\N' : ref $v ? norm_value($v) : $v)
		} sort keys %$row);
}

sub row_key
{
	my ($row, $cols) = @_;
	return undef unless ref $row eq 'HASH';
	for my $c (@$cols) { return undef unless exists $row->{$c}; }
	return join("\x1f",
		map { my $v = $row->{$_}; !defined $v ? '\\N' : ref $v ? norm_value($v) : $v } @$cols);
}

# One pass over the changelog files (in order, as one stream).
#   keys => { 'public.t' => ['id'], ... }: the key columns of each table
#           (a table not listed takes its key from its Schema entries).
# Returns a hash: state => { table => { key => canonical row } }, errors =>
# [first messages], error_count, lines, modifications, transactions,
# schemas, ops => { op => count }, per_table => { table => count },
# no_schema => [ "file:line: table" where a file's first change of a table
# comes without a Schema entry for it earlier in that file ], resyncs and
# resync_removed (the resync rule applied at each resync_end: a row not
# written since its resync_start is gone).
#   gap => 1: changes were lost (a lost slot): until a table's last resync
#           closes, its updates and deletes may find no row, and inserts one.
sub check_changelog
{
	my (%opt) = @_;
	my @files = ref $opt{files} ? @{ $opt{files} } : ($opt{files});
	my %keys = %{ $opt{keys} // {} };
	my %schema_keys;
	# The resync rule: where each row was last written, where resyncs opened.
	my (%written_at, %resync_open, %resynced);
	# With gap => 1: how many resyncs each table closes in the files (leniency
	# lasts until the last one, which follows the gap).
	my %resync_ends;
	if ($opt{gap})
	{
		for my $path (@files)
		{
			open(my $fh, '<', $path) or next;
			while (my $line = <$fh>)
			{
				next if index($line, '"op":"resync_end"') < 0;
				$resync_ends{"$1.$2"}++
				  if $line =~ /"namespace":"((?:[^"\\]|\\.)*)","name":"((?:[^"\\]|\\.)*)","op":"resync_end"/;
			}
			close $fh;
		}
	}
	my %res = (
		state => {},
		errors => [],
		error_count => 0,
		lines => 0,
		modifications => 0,
		transactions => 0,
		schemas => 0,
		ops => {},
		per_table => {},
		no_schema => []);
	my $err = sub {
		my ($msg) = @_;
		$res{error_count}++;
		push @{ $res{errors} }, $msg if @{ $res{errors} } < 20;
	};
	$res{state}{$_} = {} for keys %keys;

	my ($prev_lsn, $prev_seq, $prev_xid) = (-1, 0, undef);
	for my $file (@files)
	{
		open(my $fh, '<', $file) or die "could not open $file: $!";
		my %schema_here;    # tables with a Schema entry earlier in this file
		binmode $fh;
		my $lineno = 0;
		while (my $line = <$fh>)
		{
			$lineno++;
			$res{lines}++;
			my $where = "$file:$lineno";
			if (substr($line, -1) ne "\n")
			{
				$err->("$where: last line is not terminated by a newline (torn write)");
			}
			chomp $line;
			my $e = decode_line($line);
			if (!defined $e || ref $e ne 'HASH')
			{
				$err->("$where: not a complete JSON object: "
					  . substr($line, 0, 200));
				next;
			}
			my $lsn = parse_lsn($e->{lsn});
			if (!defined $lsn)
			{
				$err->("$where: missing or malformed lsn");
				next;
			}
			if (exists $e->{schema})
			{
				$res{schemas}++;
				$err->("$where: schema entry lsn $e->{lsn} goes backwards")
				  if $lsn < $prev_lsn;
				my $s = $e->{schema};
				if (ref $s eq 'HASH' && defined $s->{namespace} && ref $s->{key} eq 'ARRAY')
				{
					$schema_keys{ $s->{namespace} } = $s->{key};
					$schema_here{ $s->{namespace} } = 1;
				}
				next;
			}

			for my $f (qw(timestamp sequence namespace name op lsn xid before after))
			{
				$err->("$where: modification without \"$f\"") unless exists $e->{$f};
			}
			$res{modifications}++;
			my $seq = $e->{sequence} // 0;

			# Ordering: strictly increasing (lsn, sequence); 1, 2, 3... per transaction.
			if ($lsn > $prev_lsn)
			{
				$err->("$where: transaction at $e->{lsn} starts at sequence $seq, not 1 "
					  . "(entries lost)")
				  if $seq != 1;
				$res{transactions}++;
			}
			elsif ($lsn == $prev_lsn)
			{
				if ($seq <= $prev_seq)
				{
					$err->("$where: duplicate or reordered (lsn, sequence) ($e->{lsn}, $seq) "
						  . "after sequence $prev_seq");
				}
				elsif ($seq != $prev_seq + 1)
				{
					$err->("$where: gap in sequence at lsn $e->{lsn}: $prev_seq then $seq");
				}
				$err->("$where: xid changes within lsn $e->{lsn}")
				  if defined $prev_xid && ($e->{xid} // '') ne $prev_xid;
			}
			else
			{
				$err->("$where: lsn goes backwards: $e->{lsn} after "
					  . format_lsn($prev_lsn));
			}
			($prev_lsn, $prev_seq, $prev_xid) = ($lsn, $seq, $e->{xid} // '');

			# Replay.
			my $table = ($e->{namespace} // '?') . '.' . ($e->{name} // '?');
			my $op = $e->{op} // '?';
			$res{ops}{$op}++;
			$res{per_table}{$table}++;
			if (!$schema_here{$table})
			{
				# A reader of this file alone would not know the table's shape.
				push @{ $res{no_schema} }, "$where: $table";
				$schema_here{$table} = 1;
			}
			my $kc = $keys{$table} // $schema_keys{$table};
			if (!$kc)
			{
				$err->("$where: change of $table, whose key is unknown");
				next;
			}
			if ($keys{$table} && $schema_keys{$table}
				&& join(',', @{ $keys{$table} }) ne join(',', @{ $schema_keys{$table} }))
			{
				$err->("$where: schema of $table says key ("
					  . join(',', @{ $schema_keys{$table} }) . ')');
				delete $schema_keys{$table};
			}
			my $st = ($res{state}{$table} //= {});
			my $written = ($written_at{$table} //= {});
			my $tag = "$where ($op of $table at $e->{lsn}/$seq)";
			# Changes were lost (gap => 1) and this table's resync has not
			# closed yet: updates and deletes may find no row, inserts one.
			my $lenient = $opt{gap} && ($resynced{$table} // 0) < ($resync_ends{$table} // 0);
			if ($op eq 'insert' || $op eq 'import')
			{
				my $k = row_key($e->{after}, $kc);
				if (!defined $k) { $err->("$tag: no key in after"); next; }
				$err->("$tag: insert of a key already present (duplicate delivery?)")
				  if $op eq 'insert' && exists $st->{$k} && !$lenient;
				$st->{$k} = canonical_row($e->{after});
				$written->{$k} = $lsn;
			}
			elsif ($op eq 'drop')
			{
				# The table was dropped: a sink drops (or archives) its copy.
				delete $res{state}{$table};
				$res{dropped}{$table} = 1;
			}
			elsif ($op eq 'resync_start')
			{
				$resync_open{$table} = $lsn;
			}
			elsif ($op eq 'resync_end')
			{
				# The resync rule: a row not written since the resync opened is gone.
				my $since = defined $e->{resync_since} ? parse_lsn($e->{resync_since}) : undef;
				if (!defined $since) { $err->("$tag: resync_end without resync_since"); next; }
				$err->("$tag: resync_since $e->{resync_since} is after where the resync opened")
				  unless defined $resync_open{$table} && $since <= $resync_open{$table};
				for my $k (keys %$st)
				{
					next if ($written->{$k} // 0) >= $since;
					delete $st->{$k};
					$res{resync_removed}++;
				}
				$resynced{$table}++;
				$res{resyncs}++;
			}
			elsif ($op eq 'update')
			{
				my $old = row_key($e->{before}, $kc);
				my $new = row_key($e->{after}, $kc);
				if (!defined $old || !defined $new)
				{
					$err->("$tag: no key in before/after");
					next;
				}
				my %after = %{ $e->{after} };
				if (!exists $st->{$old})
				{
					$err->("$tag: update of a key that is not there (change lost?)")
					  unless $lenient;
				}
				elsif (ref $e->{unchanged} eq 'ARRAY' && @{ $e->{unchanged} })
				{
					# Unchanged TOASTed columns: keep the replayed values.
					my %prev = map { split(/=/, $_, 2) } split(/\x1f/, $st->{$old});
					for my $c (@{ $e->{unchanged} })
					{
						$after{$c} = $prev{$c} eq '\\N' ? undef : $prev{$c};
					}
				}
				delete $st->{$old};
				$err->("$tag: key change onto a key already present")
				  if $new ne $old && exists $st->{$new} && !$lenient;
				$st->{$new} = canonical_row(\%after);
				$written->{$new} = $lsn;
			}
			elsif ($op eq 'delete')
			{
				my $k = row_key($e->{before}, $kc);
				if (!defined $k) { $err->("$tag: no key in before"); next; }
				$err->("$tag: delete of a key that is not there (duplicate or lost change?)")
				  unless exists $st->{$k} || $lenient;
				delete $st->{$k};
			}
			elsif ($op eq 'truncate')
			{
				%$st = ();
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

# The rows of a source table as { key => canonical row }.
sub source_state
{
	my ($node, $db, $table, $keycols) = @_;
	# json values keep their newlines (only ever whitespace): one row a line.
	my $out = $node->safe_psql($db,
		"SELECT translate(to_json(t)::text, E'\\n\\r', '  ') FROM $table t");
	my %state;
	for my $line (split /\n/, $out)
	{
		my $row = $json->decode($line);
		$state{ row_key($row, $keycols) } = canonical_row($row);
	}
	return \%state;
}

# Compare two table states; returns a list of up to $max differences.
sub compare_states
{
	my ($got, $want, $max) = @_;
	$max //= 10;
	my @diff;
	my ($missing, $extra, $different) = (0, 0, 0);
	for my $k (sort keys %$want)
	{
		if (!exists $got->{$k})
		{
			$missing++;
			push @diff, "missing from the file: $want->{$k}" if @diff < $max;
		}
		elsif ($got->{$k} ne $want->{$k})
		{
			$different++;
			push @diff, "differs: file has [$got->{$k}], table has [$want->{$k}]"
			  if @diff < $max;
		}
	}
	for my $k (sort keys %$got)
	{
		next if exists $want->{$k};
		$extra++;
		push @diff, "only in the file: $got->{$k}" if @diff < $max;
	}
	unshift @diff, "$missing missing, $extra extra, $different different"
	  if $missing || $extra || $different;
	return @diff;
}

# The whole check, as assertions: the file(s) replay to exactly the source
# tables. tables => { 'public.t' => ['id'], ... }. Returns the changelog
# summary (see check_changelog).
sub check_exact
{
	my ($node, %opt) = @_;
	my $db = $opt{database} // 'postgres';
	my $label = $opt{label} // 'changelog';
	my $files = $opt{files} // [ sink_file($node) ];
	my $t0 = time();
	my $res = check_changelog(files => $files, keys => $opt{tables}, gap => $opt{gap});
	note(sprintf(
			"%s: %d lines, %d modifications in %d transactions, ops %s (checked in %.1fs)",
			$label, $res->{lines}, $res->{modifications}, $res->{transactions},
			join(' ', map { "$_=$res->{ops}{$_}" } sort keys %{ $res->{ops} }),
			time() - $t0));
	is($res->{error_count}, 0,
		"$label: complete JSON lines, (lsn, sequence) unique and increasing, "
		  . "replay without duplicates or gaps")
	  or diag(join("\n", @{ $res->{errors} }));
	for my $table (sort keys %{ $opt{tables} })
	{
		my $want = source_state($node, $db, $table, $opt{tables}{$table});
		my @diff = compare_states($res->{state}{$table} // {}, $want);
		ok(!@diff, "$label: replayed $table equals the table ("
			  . scalar(keys %$want) . ' rows)')
		  or diag(join("\n", @diff));
	}
	return $res;
}

# Run $query until it returns $expected (connection errors are "not yet");
# returns the seconds it took, or undef after $seconds.
sub poll_until
{
	my ($node, $db, $query, $expected, $seconds) = @_;
	my $start = time();
	my ($out, $err) = ('', '');
	while (time() - $start <= $seconds)
	{
		($out, $err) = ('', '');
		# psql may exit before it reads its query while the server restarts:
		# IPC::Run then dies writing to it ("Broken pipe"). Not yet, then.
		eval { $node->psql($db, $query, stdout => \$out, stderr => \$err); 1 }
		  or $err = "psql: $@";
		return time() - $start if $out eq $expected && $err eq '';
		usleep(100_000);
	}
	diag("timed out after ${seconds}s waiting for [$query] to return [$expected]; "
		  . "last output [$out], stderr [$err]");
	return undef;
}

# Run $query, retrying through connection errors (a restarting server) for
# up to $seconds. Returns (ok, stdout, stderr).
sub query_retry
{
	my ($node, $db, $query, $seconds) = @_;
	my $start = time();
	my ($out, $err, $rc);
	while (1)
	{
		($out, $err) = ('', '');
		$rc = eval { $node->psql($db, $query, stdout => \$out, stderr => \$err) };
		($rc, $err) = (1, "psql: $@") unless defined $rc;    # see poll_until
		return (1, $out, $err) if $rc == 0;
		last if time() - $start > $seconds;
		# Only retry what a restart explains; a real SQL error is final.
		last
		  unless $err =~ /connect|terminat|shut|starting up|recovery|server closed|broken pipe/i;
		usleep(200_000);
	}
	return (0, $out, $err);
}

# pgsink.wait_for_delivery() through restarts; an assertion.
sub wait_delivered
{
	my ($node, $db, $label, $timeout) = @_;
	$timeout //= 60;
	my $t0 = time();
	my ($ok, $out, $err) = query_retry($node, $db,
		"SELECT pgsink.wait_for_delivery('${timeout}s')", $timeout + 30);
	ok($ok, "$label: wait_for_delivery returns")
	  or diag("stderr: $err\nstatus: " . status_row($node, $db));
	note(sprintf("%s: delivered in %.1fs", $label, time() - $t0));
	return $ok;
}

sub status_row
{
	my ($node, $db) = @_;
	my ($out, $err) = ('', '');
	$node->psql($db // 'postgres',
		"SELECT state, worker_pid, confirmed_lsn, lag_bytes, last_error FROM pgsink.status",
		stdout => \$out, stderr => \$err);
	return "$out$err";
}

# The stream worker's pid ('' if none).
sub stream_pid
{
	my ($node) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgsink stream'",
		stdout => \$out, stderr => \$err);
	return $out;
}

# Wait for a stream worker (optionally: other than $not_pid); returns its pid.
sub worker_pid_status
{
	my ($node, $seconds, $not_pid) = @_;
	my $start = time();
	while (time() - $start <= $seconds)
	{
		my $pid = stream_pid($node);
		return $pid if $pid ne '' && (!defined $not_pid || $pid != $not_pid);
		usleep(50_000);
	}
	return undef;
}

# A sink's row of pgsink.sinks as { state, cursor, delivered_lsn, lag_bytes,
# lag_entries, error, pid, restarts }; error is '' when there is none.
sub sink_status
{
	my ($node, $sink, $db) = @_;
	$sink //= 'file';
	my $row = $node->safe_psql($db // 'postgres',
		"SELECT state, coalesce(cursor_offset, -1), coalesce(delivered_lsn::text, ''), "
		  . "coalesce(lag_bytes, -1), coalesce(lag_entries, -1), coalesce(last_error, ''), "
		  . "coalesce(pid, 0), worker_restarts FROM pgsink.sinks WHERE sink = '$sink'");
	my %s;
	@s{qw(state cursor delivered_lsn lag_bytes lag_entries error pid restarts)} =
	  split /\|/, $row, 8;
	return \%s;
}

# The pid of a sink's delivery worker ('' if none).
sub delivery_pid
{
	my ($node, $sink) = @_;
	$sink //= 'file';
	my ($out, $err) = ('', '');
	$node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgsink delivery' "
		  . "AND application_name = '$sink'",
		stdout => \$out, stderr => \$err);
	return $out;
}

# Wait for a delivery worker of $sink (optionally: other than $not_pid); its pid.
sub wait_delivery_pid
{
	my ($node, $sink, $seconds, $not_pid) = @_;
	my $start = time();
	while (time() - $start <= $seconds)
	{
		my $pid = delivery_pid($node, $sink);
		return $pid if $pid ne '' && (!defined $not_pid || $pid != $not_pid);
		usleep(50_000);
	}
	return undef;
}

# Bytes of WAL the slot retains, and the spool's bytes on disk.
sub retained_wal
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
		  . "WHERE slot_name = 'pgsink'");
}

sub spool_bytes
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT bytes FROM pgsink.spool');
}

sub alive { my ($pid) = @_; return kill(0, $pid) ? 1 : 0; }

# /proc/<pid>/status as { field => kB or text }; undef if the process is gone.
sub proc_status
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	my %s;
	while (<$fh>)
	{
		$s{$1} = $2 if /^(\w+):\s+(\d+)\s*kB/;
		$s{$1} //= $2 if /^(\w+):\s+(.*)$/;
	}
	close $fh;
	return \%s;
}

# The postmaster's pid and every process whose parent it is.
sub cluster_pids
{
	my ($node) = @_;
	my $pidfile = $node->data_dir . '/postmaster.pid';
	open(my $fh, '<', $pidfile) or return ();
	my $pm = <$fh>;
	close $fh;
	chomp $pm;
	my @pids = ($pm);
	opendir(my $dh, '/proc') or die;
	for my $p (grep { /^\d+$/ } readdir $dh)
	{
		open(my $sf, '<', "/proc/$p/stat") or next;
		my $stat = <$sf>;
		close $sf;
		next unless defined $stat && $stat =~ /\)\s+\S\s+(\d+)/;
		push @pids, $p if $1 == $pm;
	}
	closedir $dh;
	return @pids;
}

# A crash: SIGKILL to the postmaster and all its children at once (as the
# OOM killer or a power cut would end them), then wait until all are gone.
sub crash_node
{
	my ($node) = @_;
	my @pids = cluster_pids($node);
	die "no postmaster for " . $node->name unless @pids;
	kill 'KILL', @pids;
	my $start = time();
	while (grep { alive($_) } @pids)
	{
		die "processes survive SIGKILL" if time() - $start > 30;
		usleep(20_000);
	}
	# Reap the postmaster if it is our child; pg_ctl daemonizes it, so usually not.
	waitpid(-1, 1);
	return scalar @pids;
}

# Start a node that crashed (stale postmaster.pid).
sub start_after_crash
{
	my ($node) = @_;
	$node->{_pid} = undef;
	$node->start;
}

# Start $node with test/t/fault_shim.c preloaded into its processes; %env
# (PGSINK_FAULT_TRIGGER, PGSINK_FAULT_TARGET, PGSINK_FAULT_AVRO) says what
# it breaks, and when (see fault_shim.c).
sub start_with_fault_shim
{
	my ($node, %env) = @_;
	my $shim = $node->basedir . '/fault_shim.so';
	system('cc', '-shared', '-fPIC', '-O1', '-o', $shim, "$FindBin::RealBin/fault_shim.c",
		'-ldl') == 0
	  or BAIL_OUT('cannot build fault_shim.so');
	local %ENV = (%ENV, LD_PRELOAD => $shim, %env);
	$node->start;
}

# After crash_node() of a node started with fault_shim's PGSINK_SYNC_LOG =>
# $log: what a power loss would leave of the spool. Each segment and index
# is cut back to its size at its last fsync that succeeded (or emptied, if
# it never had one): the writes after it were in the page cache only.
# Returns how many bytes were dropped. (Directory entries are not modelled.)
sub spool_power_loss
{
	my ($node, $log) = @_;
	my %synced;
	if (open(my $fh, '<', $log))
	{
		while (my $line = <$fh>)
		{
			$synced{$2} = $1 if $line =~ /^(\d+) (.*)$/;
		}
		close $fh;
	}
	my $dropped = 0;
	for my $path (glob($node->data_dir . '/pgsink_spool/*.jsonl'),
		glob($node->data_dir . '/pgsink_spool/*.idx'))
	{
		my $keep = $synced{$path} // 0;
		my $size = -s $path;
		next unless $size > $keep;
		truncate($path, $keep) or die "cannot cut $path: $!";
		$dropped += $size - $keep;
	}
	return $dropped;
}

# Number of lines (newlines) in a file, without keeping it in memory.
sub file_lines
{
	my ($path) = @_;
	open(my $fh, '<', $path) or return 0;
	binmode $fh;
	my ($n, $buf) = (0, '');
	while (read($fh, $buf, 1 << 20)) { $n += ($buf =~ tr/\n//); }
	close $fh;
	return $n;
}

1;

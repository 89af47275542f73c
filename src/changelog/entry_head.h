/*
 * entry_head.h: what is read back from a changelog line's head (its first
 * keys), by the file sink's start-up cut and by spool readers. Keys are
 * read in order, values skipped as JSON strings or bare numbers, so
 * nothing inside a value, whatever it holds, is taken for a key.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pgsink
{

/* Parse PostgreSQL's text form of an LSN ("16/B374D848"); false if malformed. */
bool parse_lsn(const char *s, size_t len, uint64_t *lsn);

/* The lsn of a changelog line from its head (first bytes); false if it has none. */
bool line_lsn(const std::string &head, uint64_t *lsn);
bool line_lsn(const char *line, size_t len, uint64_t *lsn);

/*
 * A Schema entry's table ("public.example"), read from the line's head;
 * false if the line is not a Schema entry.
 */
bool schema_line_table(const char *line, size_t len, std::string *table);

/*
 * A Schema entry announced again (to a new file, a new sink, after a
 * rewind) takes the timestamp and lsn of the entry it precedes, so entries
 * stay in (lsn, sequence) order: out gets schema_line with those of entry.
 * False if either line is not what it should be.
 */
bool restamp_schema_line(const char *schema_line, size_t schema_len, const char *entry,
                         size_t entry_len, std::string &out);

/* The table of an entry ("public.example"): a Schema entry's, or a modification's namespace and
 * name. */
bool line_table(const char *line, size_t len, std::string *table);

/* A line's commit timestamp (its "timestamp" key) as a PostgreSQL TimestampTz. */
bool line_timestamp(const char *line, size_t len, int64_t *ts);

} // namespace pgsink

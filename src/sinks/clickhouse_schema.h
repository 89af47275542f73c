/*
 * clickhouse_schema.h: how a captured table looks in ClickHouse (the
 * ClickHouse sink).
 *
 * Every column gets a type that holds every value PostgreSQL can send, in
 * the types ClickHouse 18.16 (Debian 12) has; notes in
 * shared/notes/clickhouse-18.16.md:
 *   smallint, integer, bigint   Int16, Int32, Int64 (exact; never narrower)
 *   boolean                     UInt8
 *   numeric(p,s), 1<=p<=38, 0<=s<=p
 *                               Decimal(p,s) (NaN cannot be held: the server
 *                               refuses the row, which goes to dead letters)
 *   real, double precision      Float32, Float64 filled from the value's IEEE
 *                               bits (column <name>__bits): ClickHouse reads
 *                               float text up to one unit off
 *   uuid                        UUID
 *   arrays of the above but floats and numeric, and of text types
 *                               Array(Nullable(T)) + <name>__null UInt8
 *   everything else             String: the changelog's text (dates and
 *                               timestamps with their microseconds, BC and
 *                               infinity; json as its JSON text; bytea as
 *                               base64; other arrays as their JSON text)
 * Key columns are not Nullable (ClickHouse refuses Nullable sorting keys);
 * every other column is, since a Schema entry says nothing of NOT NULL.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <string>
#include <vector>

namespace pgsink::clickhouse
{

enum class Kind { int16, int32, int64, boolean, decimal, float32, float64, uuid, string };

struct Column {
    std::string name;    /* PostgreSQL's column name */
    std::string ch_name; /* ClickHouse's (column_name(name)) */
    std::string pg_type; /* as the Schema entry says, e.g. "numeric(12,2)" */
    Kind kind = Kind::string;
    int precision = 0, scale = 0; /* Decimal */
    bool key = false;
    /* A String holding the value's JSON text (json, jsonb, other arrays), not a string's content.
     */
    bool json_text = false;
    /*
     * An array of kind: Array(Nullable(T)), and <name>__null (1 for a NULL
     * array: ClickHouse has no Nullable(Array)). One-dimensional arrays of
     * integers, booleans, uuids and strings; a multi-dimensional value is
     * refused by ClickHouse and parked.
     */
    bool array = false;
};

/*
 * The ClickHouse name of a PostgreSQL column: its own, unless ClickHouse
 * would mistake it for a helper column of pgsink's (_pgsink_lsn,
 * _pgsink_sequence, _pgsink_op, _pgsink_deleted, _pgsink_timestamp, a
 * float's <name>__bits, an array's <name>__null) or it starts with
 * _pgsink_col_: then _pgsink_col_<name>_. No two columns, helper columns
 * included, ever get the same name (see the proof in clickhouse_schema.cpp).
 */
std::string column_name(const std::string &pg_name);
/* The ClickHouse kind of a PostgreSQL type (pg_type as a Schema entry writes it). */
Column column_for(const std::string &name, const std::string &pg_type, bool key);
/* The column's ClickHouse type, e.g. "Nullable(Decimal(12,2))". */
std::string ch_type(const Column &c);
/* A name quoted for ClickHouse: `name`, with ` and \ escaped. */
std::string quote(const std::string &name);
/* text with \ and quote escaped by a backslash (inside `...` or '...'). */
std::string escaped(const std::string &text, char quote);
/*
 * The column definitions of CREATE TABLE / ALTER TABLE ADD COLUMN for c:
 * one, or two for floats (the value, and its bits that fill it).
 */
std::vector<std::string> column_ddl(const Column &c);
/* The names an INSERT lists for c (the bits column, not the float it fills), quoted. */
std::string insert_name(const Column &c);
/* The same, unquoted (as a JSONEachRow row names it). */
std::string insert_column(const Column &c);
/* The name of an array's NULL flag column, unquoted. */
std::string null_flag_name(const Column &c);

} // namespace pgsink::clickhouse

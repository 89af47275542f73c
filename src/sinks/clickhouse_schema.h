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
 *   timestamp, timestamptz      String, and on servers with DateTime64 (20.1+)
 *                               <name>__dt64 beside it (see Column)
 * Key columns are not Nullable (ClickHouse refuses Nullable sorting keys);
 * every other column is, since a Schema entry says nothing of NOT NULL.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgsink::clickhouse
{

enum class Kind { int16, int32, int64, boolean, decimal, float32, float64, uuid, string };

/*
 * What the server offers, from SELECT version(): DateTime64 from 20.1 on,
 * holding 1925-2283 exactly, 1900-2299 from 22.1 on.
 */
struct Server {
    int major = 0, minor = 0;
    bool datetime64() const { return major > 20 || (major == 20 && minor >= 1); }
    int datetime64_first_year() const { return major >= 22 ? 1900 : 1925; }
    int datetime64_last_year() const { return major >= 22 ? 2299 : 2282; }
};
/* The server of a version() answer ("18.16.1"); 0.0 if it cannot be read. */
Server server_of(const std::string &version);

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
    /*
     * A timestamp on a server with DateTime64: besides the exact String,
     * <name>__dt64 Nullable(DateTime64(6, 'UTC')), the same instant where
     * DateTime64 holds it (years first_year..last_year), else NULL.
     */
    bool datetime64 = false;
    int first_year = 0, last_year = 0;
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
Column column_for(const std::string &name, const std::string &pg_type, bool key,
                  const Server &server = Server());
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
/* The name of a timestamp's DateTime64 column, unquoted. */
std::string datetime64_name(const Column &c);
/*
 * A timestamp's DateTime64 value (a JSON string "YYYY-MM-DD hh:mm:ss.ffffff"
 * in UTC) from its changelog text raw, into out; false (NULL) if it is out of
 * c's years, infinite, BC, or not UTC.
 */
bool datetime64_text(const Column &c, std::string_view raw, char *out, size_t *len);

} // namespace pgsink::clickhouse

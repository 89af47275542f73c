/*
 * clickhouse_rows.h: changelog lines read once, as raw text, and rows
 * written as JSONEachRow for ClickHouse (the ClickHouse sink's hot path).
 *
 * A line is scanned once into views of its members (scan_entry()); a row
 * (before, after) into views of its values (scan_object()). Values are
 * never parsed into objects: each is written into the INSERT's body in the
 * form its column takes (encode_value()), numbers with their digits, json
 * values with their exact text. Only the rare parts are parsed (Schema
 * entries, "unchanged" lists, escaped names).
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "changelog/raw_json.h"
#include "sinks/clickhouse_schema.h"

namespace pgsink::clickhouse
{

/* A member of a JSON object, as written: its name with its quotes, its value. */
struct Member {
    std::string_view name;
    std::string_view value;
};
/* The members of the JSON object s, in order, into out (cleared first); throws if malformed. */
void scan_object(std::string_view s, std::vector<Member> &out);
/* The same for the object at s[i], appended to out; returns the object's end. */
size_t scan_object_at(std::string_view s, size_t i, std::vector<Member> &out);

/* Members of a row, somewhere in a vector of them. */
struct Row {
    const Member *m = nullptr;
    size_t n = 0;
};

/* a == b, for the short names compared for every entry (no call to memcmp). */
inline bool same(std::string_view a, std::string_view b)
{
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* A JSON string's content (raw with its quotes; escapes decoded); throws if not a string. */
std::string string_content(std::string_view raw);
/* Is the member name raw (quoted) the name n? */
bool name_is(std::string_view raw, const std::string &n);
/* The value of member n, or an empty view; hint: where to look first (the column's place). */
std::string_view member_value(Row row, const std::string &n, size_t hint);

/*
 * A changelog entry: views into its line, and where the members of its
 * rows are in the vector scan_entry() appended them to (before_at,
 * before_n; after_at, after_n): rows are scanned once, with the line.
 */
struct Entry {
    std::string_view line;
    std::string_view schema;                   /* a Schema entry's schema object, or empty */
    std::string_view op;                       /* a modification's op, unquoted, or empty */
    std::string_view lsn;                      /* unquoted */
    std::string_view sequence;                 /* raw (a number) */
    std::string_view timestamp;                /* raw (a JSON string) */
    std::string_view ns, name;                 /* raw (JSON strings) */
    std::string_view before, after, unchanged; /* raw; empty if absent */
    std::string_view resync_since;             /* resync_end's, unquoted */
    uint64_t lsn_value = 0;
    size_t before_at = 0, before_n = 0, after_at = 0, after_n = 0;
    bool head = false;   /* only the members before the rows were read (head_only) */
    size_t head_end = 0; /* ... up to there (where the first row's member starts) */
    bool odd = false;    /* head_only: an lsn missing or malformed there (scan it whole) */
};
/*
 * head_only: the members up to the first row (the changelog writes op,
 * namespace, name, lsn before them), without the rows or what follows;
 * never throws for a missing lsn then (odd is set).
 */
Entry scan_entry(std::string_view line, std::vector<Member> &rows, bool head_only = false);
/* An entry read with head_only, read on from its head: as scan_entry() without head_only. */
Entry scan_rest(const Entry &head, std::vector<Member> &rows);

/*
 * The text of column c's value in an INSERT, from its changelog value raw:
 * emit(0, text) for the value (its column is insert_name(c)), for an
 * array emit(1, text) for its NULL flag, for a timestamp on a server with
 * DateTime64 emit(2, text) for its DateTime64 column. raw empty: the column is not in
 * the row (nothing emitted). text is valid during the call only.
 */
template <typename Emit>
void encode_value(const Column &c, std::string_view raw, std::string &scratch, Emit &&emit);

/*
 * A key value, from its insert text (as encoded, or as ClickHouse answers
 * it): strings unquoted, booleans as 1/0, so both forms compare equal.
 */
void append_key_text(std::string &out, std::string_view text);

/* ------------------------------------------------------------ inline */

void encode_float(const Column &c, std::string_view unquoted, char *buf, size_t *len);

template <typename Emit>
void encode_value(const Column &c, std::string_view raw, std::string &scratch, Emit &&emit)
{
    if (raw.empty())
        return;
    bool null = raw == "null";
    if (c.array) {
        /* No Nullable(Array) in ClickHouse: an empty array and the NULL flag. */
        emit(0, null ? std::string_view("[]") : raw);
        emit(1, null ? std::string_view("1") : std::string_view("0"));
        return;
    }
    if (null) {
        emit(0, raw);
        if (c.datetime64)
            emit(2, raw);
        return;
    }
    bool quoted = raw[0] == '"';
    switch (c.kind) {
    case Kind::decimal: {
        /*
         * An unquoted number, exactly as PostgreSQL wrote it. "NaN" stays
         * a string: ClickHouse refuses it, and the entry is parked.
         */
        std::string_view u = quoted ? raw.substr(1, raw.size() - 2) : raw;
        if (u.find('\\') != std::string_view::npos || u == "NaN")
            emit(0, raw);
        else
            emit(0, u);
        return;
    }
    case Kind::float32:
    case Kind::float64: {
        /* The value's IEEE bits, from its exact text ("-0" keeps its sign). */
        char buf[32];
        size_t len = 0;
        std::string_view u = quoted ? raw.substr(1, raw.size() - 2) : raw;
        encode_float(c, u, buf, &len);
        emit(0, std::string_view(buf, len));
        return;
    }
    case Kind::string:
        /* A json value or an array as its exact JSON text; other values are strings. */
        if (c.json_text || !quoted) {
            scratch.clear();
            raw_json::append_string(scratch, raw);
            emit(0, std::string_view(scratch));
        } else {
            emit(0, raw);
        }
        if (c.datetime64) {
            char buf[40];
            size_t len = 0;
            emit(2, datetime64_text(c, raw, buf, &len) ? std::string_view(buf, len)
                                                       : std::string_view("null"));
        }
        return;
    default:
        emit(0, raw);
    }
}

} // namespace pgsink::clickhouse

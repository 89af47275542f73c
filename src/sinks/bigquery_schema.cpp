/*
 * bigquery_schema.cpp: see bigquery_schema.h.
 */
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/digest.h"
#include "sinks/bigquery_schema.h"
#include "changelog/raw_json.h"

namespace pgsink::bigquery
{

using json = nlohmann::json;

/* "timestamp(3) with time zone" -> "timestamp with time zone" */
static std::string without_typmod(const std::string &t)
{
    size_t open = t.find('(');
    if (open == std::string::npos)
        return t;
    size_t close = t.find(')', open);
    if (close == std::string::npos)
        return t;
    std::string out = t.substr(0, open) + t.substr(close + 1);
    return out;
}

static Kind scalar_kind(const std::string &pg_type)
{
    std::string t = without_typmod(pg_type);
    if (t == "smallint" || t == "integer" || t == "bigint" || t == "oid")
        return Kind::int64;
    if (t == "real" || t == "double precision")
        return Kind::float64;
    if (t == "boolean")
        return Kind::boolean;
    if (t == "bytea")
        return Kind::bytes;
    if (t == "date")
        return Kind::date;
    if (t == "time without time zone")
        return Kind::time;
    if (t == "timestamp without time zone")
        return Kind::datetime;
    if (t == "timestamp with time zone")
        return Kind::timestamp;
    if (t == "json" || t == "jsonb")
        return Kind::json;
    if (pg_type.rfind("numeric(", 0) == 0) {
        int p = 0, s = 0;
        char close = 0;
        if (sscanf(pg_type.c_str(), "numeric(%d,%d%c", &p, &s, &close) == 3 && close == ')' &&
            p >= 1 && s >= 0 && s <= p) {
            if (s <= 9 && p - s <= 29)
                return Kind::numeric;
            if (s <= 38 && p - s <= 38)
                return Kind::bignumeric;
        }
    }
    return Kind::string;
}

Column column_for(const std::string &name, const std::string &pg_name, const std::string &pg_type,
                  bool key)
{
    Column c;
    c.name = name;
    c.pg_name = pg_name;
    c.pg_type = pg_type;
    c.key = key;
    if (pg_type.size() > 2 && pg_type.compare(pg_type.size() - 2, 2, "[]") == 0) {
        c.repeated = true;
        c.kind = scalar_kind(pg_type.substr(0, pg_type.size() - 2));
    } else {
        c.kind = scalar_kind(pg_type);
    }
    return c;
}

const char *type_name(Kind kind)
{
    switch (kind) {
    case Kind::int64:
        return "INT64";
    case Kind::float64:
        return "FLOAT64";
    case Kind::numeric:
        return "NUMERIC";
    case Kind::bignumeric:
        return "BIGNUMERIC";
    case Kind::boolean:
        return "BOOL";
    case Kind::bytes:
        return "BYTES";
    case Kind::date:
        return "DATE";
    case Kind::time:
        return "TIME";
    case Kind::datetime:
        return "DATETIME";
    case Kind::timestamp:
        return "TIMESTAMP";
    case Kind::json:
        return "JSON";
    case Kind::string:
        break;
    }
    return "STRING";
}

std::string field_json(const Column &c)
{
    json f = {{"name", c.name},
              {"type", type_name(c.kind)},
              {"mode", c.repeated ? "REPEATED" : "NULLABLE"},
              {"description", "PostgreSQL column " + c.pg_name + " (" + c.pg_type + ")"}};
    return f.dump(-1, ' ', false, json::error_handler_t::replace);
}

const std::vector<std::string> &helper_names()
{
    static const std::vector<std::string> names = {
        "_pgsink_lsn", "_pgsink_sequence",  "_pgsink_op",          "_pgsink_timestamp",
        "_pgsink_xid", "_pgsink_unchanged", "_pgsink_resync_since"};
    return names;
}

std::vector<std::string> helper_fields_json()
{
    auto f = [](const char *name, const char *type, const char *mode, const char *what) {
        return json({{"name", name}, {"type", type}, {"mode", mode}, {"description", what}}).dump();
    };
    return {
        f("_pgsink_lsn", "INT64", "REQUIRED", "commit LSN of the change (as an integer)"),
        f("_pgsink_sequence", "INT64", "REQUIRED", "place of the change in its transaction"),
        f("_pgsink_op", "STRING", "REQUIRED",
          "insert, update, delete, truncate or import; an update that changed the key also "
          "deletes the old key: a delete row with the same lsn and sequence"),
        f("_pgsink_timestamp", "TIMESTAMP", "REQUIRED",
          "commit time (imports: when the row was read)"),
        f("_pgsink_xid", "INT64", "NULLABLE", "transaction id"),
        f("_pgsink_resync_since", "INT64", "NULLABLE",
          "a resync_end row: the LSN its resync started at; the table's rows written before "
          "it (and before this row) are gone"),
        f("_pgsink_unchanged", "STRING", "REPEATED",
          "columns an update left unchanged (TOASTed): their value is the key's latest one"),
    };
}

std::string name_problem(const std::string &name)
{
    std::string upper;
    for (char ch : name)
        upper.push_back(static_cast<char>(toupper(static_cast<unsigned char>(ch))));
    static const char *const reserved[] = {"_TABLE_",        "_FILE_",   "_PARTITION",
                                           "_ROW_TIMESTAMP", "__ROOT__", "_COLIDENTIFIER",
                                           "_CHANGE_"};
    for (const char *r : reserved)
        if (upper.rfind(r, 0) == 0)
            return "BigQuery reserves column names starting with " + std::string(r);
    if (upper.rfind("_PGSINK_", 0) == 0)
        return "pgsink's own columns start with _pgsink_";
    if (name.empty() || name.size() > 300)
        return "BigQuery column names have 1 to 300 characters";
    return {};
}

std::string quote(const std::string &name)
{
    std::string out = "`";
    for (char ch : name) {
        if (ch == '`' || ch == '\\')
            out.push_back('\\');
        out.push_back(ch);
    }
    return out + "`";
}

std::string table_name(const std::string &schema, const std::string &table)
{
    std::string name = schema + "_" + table;
    /*
     * <schema>_<table> is ambiguous when the schema has an underscore
     * ("a_b"."c" and "a"."b_c"): then a digest of the two tells them apart
     * (as the ClickHouse sink does).
     */
    if (schema.find('_') != std::string::npos || name.size() > 900)
        return name.substr(0, 900) + "_" + sha256_hex(schema + "." + table, 8);
    return name;
}

/* ------------------------------------------------------------- values */

/* The end of the JSON value starting at s[i] (raw text, not parsed); a malformed one is refused. */
static size_t value_end(const std::string &s, size_t i)
{
    try {
        return raw_json::value_end(s, i);
    } catch (const std::runtime_error &e) {
        throw Refusal(e.what());
    }
}

/* A text known to need no escaping (digits, '-', ':', '.', ...) as a JSON string. */
static std::string plain_json_string(const std::string &v)
{
    std::string out;
    out.reserve(v.size() + 2);
    out.push_back('"');
    out += v;
    out.push_back('"');
    return out;
}

/* Is s valid UTF-8 (the changelog's text is; a JSON string must be)? */
static bool utf8_valid(std::string_view s)
{
    size_t i = 0, n = s.size();
    while (i < n) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4;
        else
            return false;
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
                return false;
        unsigned char d = static_cast<unsigned char>(s[i + 1]);
        if ((c == 0xE0 && d < 0xA0) || (c == 0xED && d > 0x9F) || (c == 0xF0 && d < 0x90) ||
            (c == 0xF4 && d > 0x8F))
            return false; /* overlong, a surrogate, beyond U+10FFFF */
        i += len;
    }
    return true;
}

/*
 * s as a JSON string, appended to out: its bytes as they are but for '"',
 * '\\' and control characters (escaped). No JSON library's tree per value:
 * this runs for every field of every streamed row.
 */
static void append_json_string(std::string &out, std::string_view s)
{
    if (!utf8_valid(s)) {
        /* Not the changelog's (valid UTF-8): the library replaces what is broken. */
        out += json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
        return;
    }
    raw_json::append_string(out, s);
}

static bool safe(const std::string &v)
{
    for (char ch : v)
        if (ch == '"' || ch == '\\' || static_cast<unsigned char>(ch) < 0x20)
            return false;
    return true;
}

static std::string unquoted(const std::string &raw)
{
    if (raw.size() >= 2 && raw[0] == '"' && raw.find('\\') == std::string::npos)
        return raw.substr(1, raw.size() - 2);
    if (raw.empty() || raw[0] != '"')
        return raw;
    return json::parse(raw).get<std::string>();
}

/* A date's year is one BigQuery holds (1 to 9999, not BC). */
static void check_year(const Column &c, const std::string &v)
{
    size_t digits = 0;
    while (digits < v.size() && isdigit(static_cast<unsigned char>(v[digits])))
        digits++;
    if (digits != 4 || v.find(" BC") != std::string::npos)
        throw Refusal("column " + c.pg_name + " holds " + v + ": BigQuery's " + type_name(c.kind) +
                      " holds years 1 to 9999 only");
}

static std::string scalar_value(const Column &c, const std::string &raw)
{
    switch (c.kind) {
    case Kind::int64:
    case Kind::boolean:
    case Kind::bytes:
        return raw;
    case Kind::float64:
        /* Numbers as written; "NaN", "Infinity", "-Infinity" are BigQuery's own spellings. */
        return raw;
    case Kind::numeric:
    case Kind::bignumeric: {
        std::string v = unquoted(raw);
        if (v == "NaN" || v == "Infinity" || v == "-Infinity")
            throw Refusal("column " + c.pg_name + " holds " + v + ": BigQuery's " +
                          type_name(c.kind) + " cannot hold it");
        return safe(v) ? plain_json_string(v) : json(v).dump();
    }
    case Kind::date: {
        std::string v = unquoted(raw);
        if (v == "infinity")
            return "\"9999-12-31\"";
        if (v == "-infinity")
            return "\"0001-01-01\"";
        check_year(c, v);
        return safe(v) ? plain_json_string(v) : json(v).dump();
    }
    case Kind::time: {
        std::string v = unquoted(raw);
        if (v.rfind("24:", 0) == 0)
            throw Refusal("column " + c.pg_name + " holds " + v +
                          ": BigQuery's TIME ends at 23:59:59.999999");
        return safe(v) ? plain_json_string(v) : json(v).dump();
    }
    case Kind::datetime:
    case Kind::timestamp: {
        std::string v = unquoted(raw);
        bool tz = c.kind == Kind::timestamp;
        if (v == "infinity")
            return tz ? "\"9999-12-31T23:59:59.999999+00:00\"" : "\"9999-12-31T23:59:59.999999\"";
        if (v == "-infinity")
            return tz ? "\"0001-01-01T00:00:00+00:00\"" : "\"0001-01-01T00:00:00\"";
        check_year(c, v);
        return safe(v) ? plain_json_string(v) : json(v).dump();
    }
    case Kind::json: {
        /* insertAll takes a JSON column's value as its JSON text, in a string. */
        std::string out;
        append_json_string(out, raw);
        return out;
    }
    case Kind::string: {
        if (!raw.empty() && raw[0] == '"')
            return raw; /* a JSON string already */
        std::string out;
        append_json_string(out, raw);
        return out;
    }
    }
    return raw;
}

std::string insert_value(const Column &c, const std::string &raw)
{
    if (raw == "null")
        return "null";
    if (!c.repeated)
        return scalar_value(c, raw);
    if (raw.empty() || raw[0] != '[')
        throw Refusal("column " + c.pg_name + " is an array but its value is not");
    std::string out = "[";
    size_t i = 1;
    auto skip = [&]() {
        while (i < raw.size() && (raw[i] == ' ' || raw[i] == '\n' || raw[i] == '\t'))
            i++;
    };
    skip();
    while (i < raw.size() && raw[i] != ']') {
        size_t end = value_end(raw, i);
        std::string elem = raw.substr(i, end - i);
        if (elem == "null")
            throw Refusal("column " + c.pg_name +
                          " holds an array with NULL elements: BigQuery's REPEATED fields "
                          "cannot hold them");
        if (elem[0] == '[')
            throw Refusal("column " + c.pg_name +
                          " holds an array of several dimensions: BigQuery's REPEATED fields "
                          "have one");
        if (out.size() > 1)
            out.push_back(',');
        out += scalar_value(c, elem);
        i = end;
        skip();
        if (i < raw.size() && raw[i] == ',') {
            i++;
            skip();
        }
    }
    return out + "]";
}

std::string insert_all_row(const Row &row)
{
    size_t size = row.insert_id.size() + 24;
    for (const auto &[name, value] : row.values)
        size += name.size() + value.size() + 4;
    std::string out;
    out.reserve(size);
    out += "{\"insertId\":";
    append_json_string(out, row.insert_id);
    out += ",\"json\":{";
    bool first = true;
    for (const auto &[name, value] : row.values) {
        if (!first)
            out.push_back(',');
        first = false;
        append_json_string(out, name); /* BigQuery names: letters, digits, '_' */
        out.push_back(':');
        out += value; /* insertAll's JSON text already */
    }
    out += "}}";
    return out;
}

/* ------------------------------------------------------------- the view */

std::string view_query(const std::string &ref, const std::vector<Column> &columns,
                       const std::vector<std::string> &key)
{
    std::string key_struct;
    for (const std::string &k : key)
        key_struct += (key_struct.empty() ? "" : ", ") + quote(k);
    std::string by = "TO_JSON_STRING(STRUCT(" + key_struct + "))";
    std::string outer, inner;
    for (const Column &c : columns) {
        bool is_key = std::find(key.begin(), key.end(), c.name) != key.end();
        outer += (outer.empty() ? "" : ", ");
        inner += (inner.empty() ? "" : ", ");
        if (is_key) {
            outer += quote(c.name);
            inner += quote(c.name);
        } else {
            /*
             * An update that left a TOASTed value unchanged did not send it:
             * the key's latest value sent. The STRUCT keeps a NULL that was
             * sent from being skipped as one that was not.
             */
            std::string s = quote("_pgsink_s_" + c.name);
            std::string lit = json(c.name).dump();
            outer += s + ".v AS " + quote(c.name);
            inner += "LAST_VALUE(IF(_pgsink_op = 'delete' OR " + lit +
                     " IN UNNEST(_pgsink_unchanged), NULL, STRUCT(" + quote(c.name) +
                     " AS v)) IGNORE NULLS) OVER w AS " + s;
        }
    }
    /*
     * The table's last truncate and its latest resync's start, one row
     * joined to every row (no correlated subquery: BigQuery cannot run one
     * whose only conditions are inequalities).
     */
    std::string marks =
        "(SELECT ARRAY_AGG(IF(_pgsink_op = 'truncate', STRUCT(_pgsink_lsn AS l, "
        "_pgsink_sequence AS s), NULL) IGNORE NULLS ORDER BY _pgsink_lsn DESC, _pgsink_sequence "
        "DESC LIMIT 1)[SAFE_OFFSET(0)] AS _pgsink_last_truncate, MAX(IF(_pgsink_op = "
        "'resync_end', _pgsink_resync_since, NULL)) AS _pgsink_last_resync_since FROM " +
        quote(ref) + " WHERE _pgsink_op IN ('truncate', 'resync_end'))";
    return "SELECT " + outer + " FROM (SELECT " + inner +
           ", r._pgsink_op, ROW_NUMBER() OVER (PARTITION BY " + by +
           " ORDER BY r._pgsink_lsn DESC, r._pgsink_sequence DESC) AS _pgsink_rn FROM " +
           quote(ref) + " AS r CROSS JOIN " + marks +
           " AS m WHERE r._pgsink_op NOT IN ('truncate', 'resync_end') AND "
           "(m._pgsink_last_truncate IS NULL OR r._pgsink_lsn > m._pgsink_last_truncate.l OR "
           "(r._pgsink_lsn = m._pgsink_last_truncate.l AND r._pgsink_sequence > "
           "m._pgsink_last_truncate.s)) AND (m._pgsink_last_resync_since IS NULL OR "
           "r._pgsink_lsn >= m._pgsink_last_resync_since) WINDOW w AS (PARTITION BY " +
           by +
           " ORDER BY r._pgsink_lsn, r._pgsink_sequence ROWS BETWEEN UNBOUNDED PRECEDING AND "
           "CURRENT ROW)) WHERE _pgsink_rn = 1 AND _pgsink_op != 'delete'";
}

} // namespace pgsink::bigquery

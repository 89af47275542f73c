/*
 * clickhouse_schema.cpp: see clickhouse_schema.h.
 */
#include <cstdio>
#include <cstring>

#include "sinks/clickhouse_schema.h"

namespace pgsink::clickhouse
{

/*
 * Why the names never meet: a name n kept as it is is none of the helper
 * names and does not start with _pgsink_col_; a renamed one starts with it,
 * so no kept and renamed names meet, and renaming is one to one. Helper
 * columns (the five, and X__bits, X__null, X__dt64 of a column named X)
 * end in __bits, __null or __dt64 or are one of the five: no kept name
 * does, and a renamed one ends in "_" (not in "s", "l" or "4") and starts
 * with _pgsink_col_, so no column is named like a helper; two helpers of
 * different columns differ as their columns do.
 */
std::string column_name(const std::string &n)
{
    static const char *const kHelpers[] = {"_pgsink_lsn", "_pgsink_sequence", "_pgsink_op",
                                           "_pgsink_deleted", "_pgsink_timestamp"};
    auto ends = [&](const char *suffix) {
        size_t len = strlen(suffix);
        return n.size() >= len && n.compare(n.size() - len, len, suffix) == 0;
    };
    bool reserved =
        n.rfind("_pgsink_col_", 0) == 0 || ends("__bits") || ends("__null") || ends("__dt64");
    for (const char *h : kHelpers)
        reserved = reserved || n == h;
    return reserved ? "_pgsink_col_" + n + "_" : n;
}

Server server_of(const std::string &version)
{
    Server s;
    if (sscanf(version.c_str(), "%d.%d", &s.major, &s.minor) != 2)
        return Server();
    return s;
}

Column column_for(const std::string &name, const std::string &pg_type, bool key,
                  const Server &server)
{
    Column c;
    c.name = name;
    c.ch_name = column_name(name);
    c.pg_type = pg_type;
    c.key = key;
    const std::string &t = pg_type;
    /* "timestamp with time zone", "timestamp(3) without time zone", ... */
    if (t.rfind("timestamp", 0) == 0 && server.datetime64() &&
        (t.find(" with time zone") != std::string::npos ||
         t.find(" without time zone") != std::string::npos)) {
        c.datetime64 = true;
        c.first_year = server.datetime64_first_year();
        c.last_year = server.datetime64_last_year();
        return c; /* a String, and the DateTime64 beside it */
    }
    if (t == "smallint")
        c.kind = Kind::int16;
    else if (t == "integer")
        c.kind = Kind::int32;
    else if (t == "bigint")
        c.kind = Kind::int64;
    else if (t == "boolean")
        c.kind = Kind::boolean;
    else if (t == "real")
        c.kind = Kind::float32;
    else if (t == "double precision")
        c.kind = Kind::float64;
    else if (t == "uuid")
        c.kind = Kind::uuid;
    else if (t.size() > 2 && t.compare(t.size() - 2, 2, "[]") == 0) {
        Column e = column_for(name, t.substr(0, t.size() - 2), false);
        bool simple = e.kind == Kind::int16 || e.kind == Kind::int32 || e.kind == Kind::int64 ||
                      e.kind == Kind::boolean || e.kind == Kind::uuid ||
                      (e.kind == Kind::string && !e.json_text);
        if (simple && !key) {
            c.kind = e.kind;
            c.array = true;
        } else {
            c.json_text = true;
        }
    } else if (t == "json" || t == "jsonb")
        c.json_text = true;
    else if (t.rfind("numeric(", 0) == 0) {
        int p = 0, s = 0;
        char close = 0;
        /* numeric(p,s): Decimal only where it holds every value of the column. */
        if (sscanf(t.c_str(), "numeric(%d,%d%c", &p, &s, &close) == 3 && close == ')' && p >= 1 &&
            p <= 38 && s >= 0 && s <= p) {
            c.kind = Kind::decimal;
            c.precision = p;
            c.scale = s;
        }
    }
    return c;
}

static std::string base_type(const Column &c)
{
    switch (c.kind) {
    case Kind::int16:
        return "Int16";
    case Kind::int32:
        return "Int32";
    case Kind::int64:
        return "Int64";
    case Kind::boolean:
        return "UInt8";
    case Kind::decimal:
        return "Decimal(" + std::to_string(c.precision) + "," + std::to_string(c.scale) + ")";
    case Kind::float32:
        return "Float32";
    case Kind::float64:
        return "Float64";
    case Kind::uuid:
        return "UUID";
    case Kind::string:
        break;
    }
    return "String";
}

std::string ch_type(const Column &c)
{
    if (c.array)
        return "Array(Nullable(" + base_type(c) + "))";
    return c.key ? base_type(c) : "Nullable(" + base_type(c) + ")";
}

std::string null_flag_name(const Column &c)
{
    return c.ch_name + "__null";
}

std::string datetime64_name(const Column &c)
{
    return c.ch_name + "__dt64";
}

bool datetime64_text(const Column &c, std::string_view raw, char *out, size_t *len)
{
    /* "YYYY-MM-DDThh:mm:ss[.f{1,6}][+00:00]", as the changelog writes timestamps (UTC). */
    if (raw.size() < 21 || raw.front() != '"' || raw.back() != '"')
        return false;
    std::string_view v = raw.substr(1, raw.size() - 2);
    auto digits = [&](size_t at, size_t n) {
        for (size_t i = at; i < at + n; i++)
            if (i >= v.size() || v[i] < '0' || v[i] > '9')
                return false;
        return true;
    };
    if (!digits(0, 4) || v[4] != '-' || !digits(5, 2) || v[7] != '-' || !digits(8, 2) ||
        v[10] != 'T' || !digits(11, 2) || v[13] != ':' || !digits(14, 2) || v[16] != ':' ||
        !digits(17, 2))
        return false;
    size_t at = 19, frac = 0;
    if (at < v.size() && v[at] == '.') {
        while (frac < 6 && digits(at + 1 + frac, 1))
            frac++;
        if (frac == 0)
            return false;
        at += 1 + frac;
    }
    std::string_view rest = v.substr(at);
    if (!rest.empty() && rest != "+00:00")
        return false; /* BC, another offset: not what DateTime64 holds as such */
    int year = (v[0] - '0') * 1000 + (v[1] - '0') * 100 + (v[2] - '0') * 10 + (v[3] - '0');
    if (year < c.first_year || year > c.last_year)
        return false;
    char *p = out;
    *p++ = '"';
    memcpy(p, v.data(), 10);
    p += 10;
    *p++ = ' ';
    memcpy(p, v.data() + 11, 8);
    p += 8;
    *p++ = '.';
    for (size_t i = 0; i < 6; i++)
        *p++ = i < frac ? v[20 + i] : '0';
    *p++ = '"';
    *len = static_cast<size_t>(p - out);
    return true;
}

std::string escaped(const std::string &text, char quote)
{
    std::string out;
    for (char ch : text) {
        if (ch == quote || ch == '\\')
            out.push_back('\\');
        out.push_back(ch);
    }
    return out;
}

std::string quote(const std::string &name)
{
    return "`" + escaped(name, '`') + "`";
}

std::string insert_column(const Column &c)
{
    bool is_float = c.kind == Kind::float32 || c.kind == Kind::float64;
    return is_float ? c.ch_name + "__bits" : c.ch_name;
}

std::string insert_name(const Column &c)
{
    return quote(insert_column(c));
}

std::vector<std::string> column_ddl(const Column &c)
{
    if (c.datetime64)
        return {quote(c.ch_name) + " " + ch_type(c),
                quote(datetime64_name(c)) + " Nullable(DateTime64(6, 'UTC'))"};
    if (c.array)
        /* DEFAULT 1: rows written before the column was added had no value (NULL). */
        return {quote(c.ch_name) + " " + ch_type(c), quote(null_flag_name(c)) + " UInt8 DEFAULT 1"};
    if (c.kind != Kind::float32 && c.kind != Kind::float64)
        return {quote(c.ch_name) + " " + ch_type(c)};
    /* The float is filled from its IEEE bits, sent exactly as an integer. */
    bool f32 = c.kind == Kind::float32;
    std::string bits = insert_name(c);
    std::string uint = f32 ? "UInt32" : "UInt64";
    std::string cast = std::string(f32 ? "reinterpretAsFloat32" : "reinterpretAsFloat64") +
                       "(reinterpretAsString(";
    if (c.key)
        return {quote(c.ch_name) + " " + ch_type(c) + " DEFAULT " + cast + bits + "))",
                bits + " " + uint};
    return {quote(c.ch_name) + " " + ch_type(c) + " DEFAULT if(isNull(" + bits + "), NULL, " +
                cast + "assumeNotNull(" + bits + "))))",
            bits + " Nullable(" + uint + ")"};
}

} // namespace pgsink::clickhouse

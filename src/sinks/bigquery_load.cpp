/*
 * bigquery_load.cpp: see bigquery_load.h.
 *
 * Values are encoded here, straight from the changelog's text into the
 * block (see "direct encoding"); the encoder before, avro-c's generic
 * values serialized by avro_value_write, is kept as avro_file_reference(),
 * which the selftest holds the direct one to, byte for byte. The object
 * container around them (header, blocks, sync markers) is written here too,
 * because avro-c 1.11 writes the header's schema without its logicalType
 * attributes, which BigQuery needs to load DATE, TIME, TIMESTAMP and
 * NUMERIC columns.
 */
#include <algorithm>
#include <avro.h>
#include <charconv>
#include <functional>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "changelog/civil_date.h"
#include "core/digest.h"
#include "sinks/bigquery_load.h"

namespace pgsink::bigquery
{

using json = nlohmann::json;

static json avro_type(const Column &c)
{
    json t;
    switch (c.kind) {
    case Kind::int64:
        t = "long";
        break;
    case Kind::float64:
        t = "double";
        break;
    case Kind::boolean:
        t = "boolean";
        break;
    case Kind::bytes:
        t = "bytes";
        break;
    case Kind::numeric:
        t = {{"type", "bytes"}, {"logicalType", "decimal"}, {"precision", 38}, {"scale", 9}};
        break;
    case Kind::bignumeric:
        t = {{"type", "bytes"}, {"logicalType", "decimal"}, {"precision", 76}, {"scale", 38}};
        break;
    case Kind::date:
        t = {{"type", "int"}, {"logicalType", "date"}};
        break;
    case Kind::time:
        t = {{"type", "long"}, {"logicalType", "time-micros"}};
        break;
    case Kind::timestamp:
        t = {{"type", "long"}, {"logicalType", "timestamp-micros"}};
        break;
    case Kind::datetime:
        t = {{"type", "string"}, {"logicalType", "datetime"}};
        break;
    case Kind::json:
        t = {{"type", "string"}, {"sqlType", "JSON"}};
        break;
    case Kind::string:
        t = "string";
        break;
    }
    if (c.repeated)
        return {{"type", "array"}, {"items", t}};
    return json::array({"null", t});
}

static std::vector<Column> all_fields(const std::vector<Column> &columns)
{
    std::vector<Column> all = columns;
    auto helper = [&](const char *name, Kind kind, bool repeated) {
        Column c;
        c.name = name;
        c.kind = kind;
        c.repeated = repeated;
        c.key = true; /* REQUIRED: no union */
        all.push_back(c);
    };
    helper("_pgsink_lsn", Kind::int64, false);
    helper("_pgsink_sequence", Kind::int64, false);
    helper("_pgsink_op", Kind::string, false);
    helper("_pgsink_timestamp", Kind::timestamp, false);
    Column xid;
    xid.name = "_pgsink_xid";
    xid.kind = Kind::int64;
    all.push_back(xid);
    helper("_pgsink_unchanged", Kind::string, true);
    Column since;
    since.name = "_pgsink_resync_since";
    since.kind = Kind::int64;
    all.push_back(since);
    return all;
}

std::string avro_schema(const std::vector<Column> &columns)
{
    json fields = json::array();
    for (const Column &c : all_fields(columns)) {
        json t = avro_type(c);
        bool required = c.key && c.name.rfind("_pgsink_", 0) == 0 && !c.repeated;
        if (required)
            t = t[1];
        json f = {{"name", c.name}, {"type", t}};
        if (!required && !c.repeated)
            f["default"] = nullptr;
        fields.push_back(f);
    }
    json s = {{"type", "record"}, {"name", "pgsink_row"}, {"fields", fields}};
    return s.dump();
}

/* ------------------------------------------------------ value conversion */

static void must(int rc, const char *what)
{
    if (rc != 0)
        throw std::runtime_error(std::string("Avro: could not ") + what + ": " + avro_strerror());
}

/* A JSON string's text as a view (of text, or of *scratch when it has escapes); else text. */
static std::string_view unquoted_view(std::string_view text, std::string *scratch)
{
    if (text.size() >= 2 && text[0] == '"' && text.find('\\') == std::string_view::npos)
        return text.substr(1, text.size() - 2);
    if (text.empty() || text[0] != '"')
        return text;
    *scratch = json::parse(text).get<std::string>();
    return *scratch;
}

static std::string unquote(const std::string &text)
{
    if (text.size() >= 2 && text[0] == '"' && text.find('\\') == std::string::npos)
        return text.substr(1, text.size() - 2);
    if (text.empty() || text[0] != '"')
        return text;
    return json::parse(text).get<std::string>();
}

/* n digits at s[at], or -1. */
static int digits(std::string_view s, size_t at, int n)
{
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (at + static_cast<size_t>(k) >= s.size() ||
            !isdigit(static_cast<unsigned char>(s[at + static_cast<size_t>(k)])))
            return -1;
        v = v * 10 + (s[at + static_cast<size_t>(k)] - '0');
    }
    return v;
}

static int64_t parse_date(std::string_view v)
{
    int y = digits(v, 0, 4), m = digits(v, 5, 2), d = digits(v, 8, 2);
    if (y < 0 || m < 1 || d < 1 || v[4] != '-' || v[7] != '-')
        throw Refusal("not a date: " + std::string(v));
    return days_from_civil(y, static_cast<unsigned>(m), static_cast<unsigned>(d));
}

/* "HH:MM:SS[.ffffff]" from s[at]: microseconds; *end after it. */
static int64_t parse_time(std::string_view s, size_t at, size_t *end)
{
    int h = digits(s, at, 2), mi = digits(s, at + 3, 2), se = digits(s, at + 6, 2);
    if (h < 0 || mi < 0 || se < 0 || s[at + 2] != ':' || s[at + 5] != ':')
        throw Refusal("not a time: " + std::string(s));
    size_t i = at + 8;
    int64_t micros = 0;
    if (i < s.size() && s[i] == '.') {
        int n = 0;
        for (i++; i < s.size() && isdigit(static_cast<unsigned char>(s[i])); i++)
            if (n++ < 6)
                micros = micros * 10 + (s[i] - '0');
        for (; n < 6; n++)
            micros *= 10;
    }
    *end = i;
    return ((h * 60 + mi) * 60 + se) * int64_t(1000000) + micros;
}

static int64_t parse_timestamp(std::string_view v)
{
    int64_t days = parse_date(v);
    size_t end = 0;
    int64_t t = parse_time(v, 11, &end);
    int64_t offset = 0;
    if (end < v.size() && (v[end] == '+' || v[end] == '-')) {
        int oh = std::max(0, digits(v, end + 1, 2)), om = 0;
        if (end + 3 < v.size() && v[end + 3] == ':')
            om = std::max(0, digits(v, end + 4, 2));
        offset = (oh * 60 + om) * int64_t(60000000) * (v[end] == '-' ? -1 : 1);
    }
    return days * 86400 * int64_t(1000000) + t - offset;
}

/*
 * A decimal's text read: refused unless it is digits with a sign and a point
 * and at most scale decimals; its sign, decimals and digits counted.
 */
struct DecimalText {
    bool negative = false;
    int frac = 0;
    size_t ndigits = 0;
};
static DecimalText scan_decimal(std::string_view text, int scale)
{
    DecimalText t;
    bool point = false;
    for (char ch : text) {
        if (ch == '-')
            t.negative = true;
        else if (ch == '.')
            point = true;
        else if (isdigit(static_cast<unsigned char>(ch))) {
            if (point) {
                if (t.frac >= scale)
                    throw Refusal("the number " + std::string(text) + " has more than " +
                                  std::to_string(scale) + " decimals");
                t.frac++;
            }
            t.ndigits++;
        } else if (ch != '+')
            throw Refusal("not a number: " + std::string(text));
    }
    return t;
}

/* A decimal's unscaled value at this scale, as big-endian two's complement bytes. */
static std::string decimal_bytes_reference(std::string_view text, int scale)
{
    DecimalText t = scan_decimal(text, scale);
    bool negative = t.negative;
    int frac = t.frac;
    std::string digits;
    digits.reserve(t.ndigits + static_cast<size_t>(scale));
    for (char ch : text)
        if (isdigit(static_cast<unsigned char>(ch)))
            digits.push_back(ch);
    digits.append(static_cast<size_t>(scale - frac), '0');
    std::vector<uint8_t> bytes;
    if (digits.size() <= 38) {
        /* The common case: an unscaled value that 128 bits hold. */
        unsigned __int128 u = 0;
        for (char ch : digits)
            u = u * 10 + static_cast<unsigned>(ch - '0');
        do {
            bytes.push_back(static_cast<uint8_t>(u & 0xff));
            u >>= 8;
        } while (u != 0);
        digits.clear();
    }
    /* Base 10 to base 256, least significant byte first. */
    std::vector<int> num;
    num.reserve(digits.size());
    for (char ch : digits)
        num.push_back(ch - '0');
    while (!num.empty()) {
        std::vector<int> quotient;
        int rem = 0;
        for (int dgt : num) {
            rem = rem * 10 + dgt;
            int q = rem / 256;
            rem %= 256;
            if (!quotient.empty() || q != 0)
                quotient.push_back(q);
        }
        bytes.push_back(static_cast<uint8_t>(rem));
        num.swap(quotient);
    }
    bytes.push_back(0); /* room for the sign */
    if (negative) {
        unsigned carry = 1;
        for (uint8_t &b : bytes) {
            unsigned v = static_cast<uint8_t>(~b) + carry;
            b = static_cast<uint8_t>(v);
            carry = v >> 8;
        }
    }
    /* Shortest form: drop leading bytes that only repeat the sign. */
    while (bytes.size() > 1) {
        uint8_t top = bytes.back(), next = bytes[bytes.size() - 2];
        if ((top == 0 && !(next & 0x80)) || (top == 0xff && (next & 0x80)))
            bytes.pop_back();
        else
            break;
    }
    return std::string(bytes.rbegin(), bytes.rend());
}

static std::string base64_decode(std::string_view in)
{
    static int table[256];
    static bool ready = false;
    if (!ready) {
        for (int &t : table)
            t = -1;
        const char *k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; k[i]; i++)
            table[static_cast<unsigned char>(k[i])] = i;
        ready = true;
    }
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char ch : in) {
        if (ch == '=')
            break;
        int v = table[static_cast<unsigned char>(ch)];
        if (v < 0)
            throw Refusal("bytes that are not base64");
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return out;
}

/* An INT64 value's text (unquoted) as a number; Refusal if it is not one. */
static int64_t int64_of(std::string_view u)
{
    int64_t n = 0;
    auto r = std::from_chars(u.data(), u.data() + u.size(), n);
    if (r.ec != std::errc() || r.ptr != u.data() + u.size())
        throw Refusal("not an INT64: " + std::string(u));
    return n;
}

/* A FLOAT64 value's text (unquoted: NaN and the infinities by name) as a double. */
static double float64_of(std::string_view u)
{
    if (u == "NaN")
        return NAN;
    if (u == "Infinity")
        return INFINITY;
    if (u == "-Infinity")
        return -INFINITY;
    /* from_chars reads no sign '+' and rounds exactly, as strtod does. */
    double d = 0;
    auto r = std::from_chars(u.data(), u.data() + u.size(), d);
    if (r.ec != std::errc() || r.ptr != u.data() + u.size())
        d = strtod(std::string(u).c_str(), nullptr); /* out of range: inf or 0 */
    return d;
}

/* Set an Avro value (not a union) from an insertAll JSON text of kind. */
static void set_scalar(avro_value_t *v, Kind kind, std::string_view text)
{
    std::string scratch;
    std::string_view u = unquoted_view(text, &scratch);
    switch (kind) {
    case Kind::int64:
        must(avro_value_set_long(v, int64_of(u)), "set a long");
        return;
    case Kind::float64:
        must(avro_value_set_double(v, float64_of(u)), "set a double");
        return;
    case Kind::boolean:
        must(avro_value_set_boolean(v, u == "true"), "set a boolean");
        return;
    case Kind::bytes: {
        std::string b = base64_decode(u);
        must(avro_value_set_bytes(v, b.data(), b.size()), "set bytes");
        return;
    }
    case Kind::numeric:
    case Kind::bignumeric: {
        std::string b = decimal_bytes_reference(u, kind == Kind::numeric ? 9 : 38);
        must(avro_value_set_bytes(v, &b[0], b.size()), "set a decimal");
        return;
    }
    case Kind::date:
        must(avro_value_set_int(v, static_cast<int32_t>(parse_date(u))), "set a date");
        return;
    case Kind::time: {
        size_t end = 0;
        must(avro_value_set_long(v, parse_time(u, 0, &end)), "set a time");
        return;
    }
    case Kind::timestamp:
        must(avro_value_set_long(v, parse_timestamp(u)), "set a timestamp");
        return;
    case Kind::datetime: {
        std::string s(u);
        if (s.size() > 10 && s[10] == 'T')
            s[10] = ' ';
        must(avro_value_set_string_len(v, s.c_str(), s.size() + 1), "set a string");
        return;
    }
    case Kind::json:
    case Kind::string: {
        std::string s(u);
        must(avro_value_set_string_len(v, s.c_str(), s.size() + 1), "set a string");
        return;
    }
    }
}

/* Elements of an insertAll JSON array text (values already converted, no nulls). */
static std::vector<std::string> elements(const std::string &text)
{
    json a = json::parse(text);
    std::vector<std::string> out;
    for (const json &e : a)
        out.push_back(e.dump());
    return out;
}

/* ------------------------------------------------------ the container */

static void put_long(std::string &out, int64_t n)
{
    uint64_t z = (static_cast<uint64_t>(n) << 1) ^ static_cast<uint64_t>(n >> 63);
    while (z & ~uint64_t(0x7f)) {
        out.push_back(static_cast<char>((z & 0x7f) | 0x80));
        z >>= 7;
    }
    out.push_back(static_cast<char>(z));
}

static void put_bytes(std::string &out, const std::string &b)
{
    put_long(out, static_cast<int64_t>(b.size()));
    out += b;
}

/*
 * An object container file of n rows with these columns: fill(k, &record)
 * sets row k's fields (avro-c generic values) and returns its entry (for
 * errors), then avro-c serializes it straight into the current block.
 */
template <class Fill>
static std::string container_reference(const std::vector<Column> &columns, size_t n, Fill fill)
{
    std::string schema_json = avro_schema(columns);
    avro_schema_t schema = nullptr;
    if (avro_schema_from_json_length(schema_json.data(), schema_json.size(), &schema) != 0)
        throw std::runtime_error(std::string("Avro: the load's schema is refused: ") +
                                 avro_strerror());
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    avro_value_t rec;
    bool have_rec = iface != nullptr && avro_generic_value_new(iface, &rec) == 0;
    std::string out("Obj\x01", 4);
    /* The header: metadata map {avro.schema, avro.codec}, then the sync marker. */
    put_long(out, 2);
    put_bytes(out, "avro.schema");
    put_bytes(out, schema_json);
    put_bytes(out, "avro.codec");
    put_bytes(out, "null");
    put_long(out, 0);
    std::string sync = sha256_hex(schema_json + std::to_string(n), 32).substr(0, 16);
    out += sync;
    std::string block(size_t(1) << 20, '\0');
    size_t in_block = 0;
    avro_writer_t w = avro_writer_memory(&block[0], static_cast<int64_t>(block.size()));
    /* The block's first used bytes, rows in_block of them, into the file. */
    auto flush = [&](size_t used) {
        if (in_block == 0)
            return;
        put_long(out, static_cast<int64_t>(in_block));
        put_long(out, static_cast<int64_t>(used));
        out.append(block, 0, used);
        out += sync;
        in_block = 0;
        avro_writer_memory_set_dest(w, &block[0], static_cast<int64_t>(block.size()));
    };
    std::string error;
    size_t bad_entry = 0;
    try {
        if (!have_rec || w == nullptr)
            throw std::runtime_error(std::string("Avro: no value for the schema: ") +
                                     avro_strerror());
        for (size_t k = 0; k < n; k++) {
            /* Every field is set for every row (arrays emptied first): no reset of the record. */
            bad_entry = fill(k, &rec);
            /* Serialized by avro-c straight into the block; a full block is flushed first. */
            for (int attempt = 0;; attempt++) {
                int64_t before = avro_writer_tell(w);
                if (avro_value_write(w, &rec) == 0)
                    break;
                if (in_block > 0 && attempt == 0) {
                    flush(static_cast<size_t>(before));
                    continue;
                }
                if (block.size() >= (size_t(1) << 30))
                    throw std::runtime_error("Avro: a row over 1 GB");
                block.resize(block.size() * 2); /* one row larger than the block */
                avro_writer_memory_set_dest(w, &block[0], static_cast<int64_t>(block.size()));
            }
            if (++in_block >= 4096)
                flush(static_cast<size_t>(avro_writer_tell(w)));
        }
        flush(static_cast<size_t>(avro_writer_tell(w)));
    } catch (const std::exception &e) {
        error = e.what();
    }
    if (w != nullptr)
        avro_writer_free(w);
    if (have_rec)
        avro_value_decref(&rec);
    if (iface != nullptr)
        avro_value_iface_decref(iface);
    avro_schema_decref(schema);
    if (!error.empty())
        throw Refusal("entry " + std::to_string(bad_entry) + ": " + error);
    return out;
}

/* Set field (a column's: a union with null, or an array) from an insertAll JSON text, or NULL. */
static void set_field(avro_value_t *field, const Column &c, const std::string *value)
{
    avro_value_t branch, elem;
    bool null = value == nullptr || *value == "null";
    if (c.repeated) {
        must(avro_value_reset(field), "empty an array");
        if (!null)
            for (const std::string &e : elements(*value)) {
                must(avro_value_append(field, &elem, nullptr), "append");
                set_scalar(&elem, c.kind, e);
            }
        return;
    }
    if (null) {
        must(avro_value_set_branch(field, 0, &branch), "set a union");
        must(avro_value_set_null(&branch), "set a null");
    } else {
        must(avro_value_set_branch(field, 1, &branch), "set a union");
        set_scalar(&branch, c.kind, *value);
    }
}

std::string avro_file_reference(const std::vector<Column> &columns, const std::vector<Row> &rows)
{
    std::vector<Column> fields = all_fields(columns);
    return container_reference(columns, rows.size(), [&](size_t k, avro_value_t *rec) {
        const Row &row = rows[k];
        /* The row's values are in the fields' order (columns, then helpers), some left out. */
        size_t next = 0;
        for (size_t fi = 0; fi < fields.size(); fi++) {
            const Column &c = fields[fi];
            avro_value_t field;
            must(avro_value_get_by_index(rec, fi, &field, nullptr), "find a field");
            const std::string *value = nullptr;
            if (next < row.values.size() && row.values[next].first == c.name)
                value = &row.values[next++].second;
            bool required = fi >= columns.size() && c.key && !c.repeated;
            if (!required) {
                set_field(&field, c, value);
                continue;
            }
            if (value == nullptr || *value == "null")
                throw Refusal("the helper column " + c.name + " has no value");
            set_scalar(&field, c.kind, *value);
        }
        return row.entry;
    });
}

std::string avro_file_reference(const std::vector<Column> &columns,
                                const std::vector<RawChange> &changes)
{
    return container_reference(columns, changes.size(), [&](size_t k, avro_value_t *rec) {
        const RawChange &ch = changes[k];
        avro_value_t field, branch;
        for (size_t fi = 0; fi < columns.size(); fi++) {
            const Column &c = columns[fi];
            must(avro_value_get_by_index(rec, fi, &field, nullptr), "find a field");
            std::string_view raw = ch.values[fi];
            if (raw.data() == nullptr || raw == "null") {
                set_field(&field, c, nullptr);
                continue;
            }
            switch (c.repeated ? Kind::date : c.kind) {
            case Kind::int64:
            case Kind::float64:
            case Kind::boolean:
            case Kind::bytes:
            case Kind::numeric:
            case Kind::bignumeric:
                /* The changelog's form is insertAll's (NaN numerics are refused by both). */
                must(avro_value_set_branch(&field, 1, &branch), "set a union");
                set_scalar(&branch, c.kind, raw);
                break;
            case Kind::json:
            case Kind::string: {
                /* JSON: its text as it is; a string's text; other JSON (a domain's) as its text. */
                std::string text = c.kind == Kind::string && raw[0] == '"'
                                       ? unquote(std::string(raw))
                                       : std::string(raw);
                must(avro_value_set_branch(&field, 1, &branch), "set a union");
                must(avro_value_set_string_len(&branch, text.c_str(), text.size() + 1),
                     "set a string");
                break;
            }
            case Kind::timestamp:
            case Kind::date:
                /* The common case at once: a plain year 1..9999, no infinity, no BC. */
                if (raw.size() >= 12 && raw[0] == '"' &&
                    isdigit(static_cast<unsigned char>(raw[4])) && raw[5] == '-' &&
                    raw.find(' ') == std::string_view::npos &&
                    raw.find('\\') == std::string_view::npos) {
                    must(avro_value_set_branch(&field, 1, &branch), "set a union");
                    set_scalar(&branch, c.kind, raw);
                    break;
                }
                [[fallthrough]];
            default: {
                /* Dates and times (infinity, ranges) and arrays: as insertAll has them. */
                std::string v = insert_value(c, std::string(raw));
                set_field(&field, c, &v);
            }
            }
        }
        size_t at = columns.size();
        auto helper = [&](avro_value_t *f) {
            must(avro_value_get_by_index(rec, at++, f, nullptr), "find a field");
        };
        helper(&field);
        must(avro_value_set_long(&field, ch.lsn), "set a long");
        helper(&field);
        must(avro_value_set_long(&field, ch.sequence), "set a long");
        helper(&field);
        must(avro_value_set_string_len(&field, std::string(ch.op).c_str(), ch.op.size() + 1),
             "set a string");
        helper(&field);
        must(avro_value_set_long(&field, parse_timestamp(ch.timestamp)), "set a timestamp");
        helper(&field);
        if (ch.xid.empty()) {
            must(avro_value_set_branch(&field, 0, &branch), "set a union");
            must(avro_value_set_null(&branch), "set a null");
        } else {
            must(avro_value_set_branch(&field, 1, &branch), "set a union");
            must(avro_value_set_long(&branch, strtoll(std::string(ch.xid).c_str(), nullptr, 10)),
                 "set a long");
        }
        helper(&field); /* _pgsink_unchanged: an import sends every column */
        must(avro_value_reset(&field), "empty an array");
        helper(&field); /* _pgsink_resync_since: only resync_end rows have it */
        must(avro_value_set_branch(&field, 0, &branch), "set a union");
        must(avro_value_set_null(&branch), "set a null");
        return ch.entry;
    });
}

/* ------------------------------------------------------ direct encoding */

/*
 * The Avro binary encoding written straight from the changelog's text into
 * the block, without avro-c's generic values (a value set, then serialized,
 * per field, was most of the delivery worker's time in an import): zigzag
 * varints, length-prefixed strings and bytes, a union's branch index, arrays
 * as one block and its end. avro-c stays the authority on the schema (it
 * parses the schema written in the header), and avro_file_reference(), the
 * generic-value encoder, is the selftest's reference: the same bytes.
 */
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "Avro doubles are little-endian");

/* A block being written: appends without std::string's checks (perf had them at a tenth). */
struct Out {
    std::string buf; /* its first len bytes are the block */
    size_t len = 0;

    size_t size() const { return len; }
    /* Room for n more bytes, at the returned place. */
    char *room(size_t n)
    {
        if (buf.size() - len < n)
            buf.resize(std::max(buf.size() * 2, len + n + 64));
        return &buf[len];
    }
    void push_back(char c)
    {
        *room(1) = c;
        len++;
    }
    void append(const char *p, size_t n)
    {
        memcpy(room(n), p, n);
        len += n;
    }
};

static inline void put_varint(Out &out, int64_t n)
{
    uint64_t z = (static_cast<uint64_t>(n) << 1) ^ static_cast<uint64_t>(n >> 63);
    char *p = out.room(10), *start = p;
    while (z >= 0x80) {
        *p++ = static_cast<char>((z & 0x7f) | 0x80);
        z >>= 7;
    }
    *p++ = static_cast<char>(z);
    out.len += static_cast<size_t>(p - start);
}

static inline void put_string(Out &out, std::string_view s)
{
    put_varint(out, static_cast<int64_t>(s.size()));
    out.append(s.data(), s.size());
}

/*
 * A JSON string's text (text is "...") into *scratch, unescaped here when it
 * only has ASCII and the usual escapes; else by the JSON library (which
 * checks UTF-8 and refuses what it refuses), as unquoted_view() does.
 */
static std::string_view unescaped(std::string_view text, std::string *scratch)
{
    scratch->clear();
    size_t n = text.size() - 1;
    for (size_t i = 1; i < n; i++) {
        unsigned char ch = static_cast<unsigned char>(text[i]);
        if (ch >= 0x80 || ch < 0x20)
            goto slow;
        if (ch != '\\') {
            scratch->push_back(static_cast<char>(ch));
            continue;
        }
        if (++i >= n)
            goto slow;
        switch (text[i]) {
        case '"':
        case '\\':
        case '/':
            scratch->push_back(text[i]);
            break;
        case 'b':
            scratch->push_back('\b');
            break;
        case 'f':
            scratch->push_back('\f');
            break;
        case 'n':
            scratch->push_back('\n');
            break;
        case 'r':
            scratch->push_back('\r');
            break;
        case 't':
            scratch->push_back('\t');
            break;
        case 'u': {
            unsigned cp = 0;
            if (i + 4 >= n)
                goto slow;
            for (size_t k = 1; k <= 4; k++) {
                char h = text[i + k];
                cp <<= 4;
                if (h >= '0' && h <= '9')
                    cp |= static_cast<unsigned>(h - '0');
                else if (h >= 'a' && h <= 'f')
                    cp |= static_cast<unsigned>(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F')
                    cp |= static_cast<unsigned>(h - 'A' + 10);
                else
                    goto slow;
            }
            if (cp >= 0xd800 && cp <= 0xdfff)
                goto slow; /* surrogates: the library pairs them (or refuses them) */
            i += 4;
            if (cp < 0x80) {
                scratch->push_back(static_cast<char>(cp));
            } else if (cp < 0x800) {
                scratch->push_back(static_cast<char>(0xc0 | (cp >> 6)));
                scratch->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
            } else {
                scratch->push_back(static_cast<char>(0xe0 | (cp >> 12)));
                scratch->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
                scratch->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
            }
            break;
        }
        default:
            goto slow;
        }
    }
    return *scratch;
slow:
    *scratch = json::parse(text).get<std::string>();
    return *scratch;
}

/* A JSON text as unquoted_view() reads it: a string's text, else the text itself. */
static inline std::string_view text_of(std::string_view text, std::string *scratch)
{
    if (text.size() >= 2 && text[0] == '"') {
        if (text.find('\\') == std::string_view::npos)
            return text.substr(1, text.size() - 2);
        return unescaped(text, scratch);
    }
    if (text.empty() || text[0] != '"')
        return text;
    *scratch = json::parse(text).get<std::string>(); /* a lone quote: refused */
    return *scratch;
}

/* Minimal big-endian two's complement of the 256-bit value (little-endian limbs). */
static void put_twos_complement(Out &out, uint64_t limbs[4], bool negative)
{
    if (negative) {
        unsigned carry = 1;
        for (int k = 0; k < 4; k++) {
            uint64_t v = ~limbs[k] + carry;
            carry = carry && v == 0 ? 1 : 0;
            limbs[k] = v;
        }
    }
    unsigned char be[32];
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 8; b++)
            be[31 - (k * 8 + b)] = static_cast<unsigned char>(limbs[k] >> (8 * b));
    size_t at = 0;
    while (at < 31 &&
           ((be[at] == 0 && !(be[at + 1] & 0x80)) || (be[at] == 0xff && (be[at + 1] & 0x80))))
        at++;
    put_varint(out, static_cast<int64_t>(32 - at));
    out.append(reinterpret_cast<const char *>(be + at), 32 - at);
}

/* A decimal's unscaled value at this scale, as Avro bytes (decimal_bytes_reference's). */
static void put_decimal(Out &out, std::string_view text, int scale)
{
    DecimalText t = scan_decimal(text, scale);
    bool negative = t.negative;
    int frac = t.frac;
    size_t total = t.ndigits + static_cast<size_t>(scale - frac);
    uint64_t limbs[4] = {0, 0, 0, 0};
    auto times10_plus = [&](unsigned d) {
        unsigned __int128 carry = d;
        for (int k = 0; k < 4; k++) {
            unsigned __int128 v = static_cast<unsigned __int128>(limbs[k]) * 10 + carry;
            limbs[k] = static_cast<uint64_t>(v);
            carry = v >> 64;
        }
    };
    if (total <= 19) {
        uint64_t u = 0;
        for (char ch : text)
            if (isdigit(static_cast<unsigned char>(ch)))
                u = u * 10 + static_cast<unsigned>(ch - '0');
        for (int k = frac; k < scale; k++)
            u *= 10;
        limbs[0] = u;
    } else if (total <= 38) {
        unsigned __int128 u = 0;
        for (char ch : text)
            if (isdigit(static_cast<unsigned char>(ch)))
                u = u * 10 + static_cast<unsigned>(ch - '0');
        for (int k = frac; k < scale; k++)
            u *= 10;
        limbs[0] = static_cast<uint64_t>(u);
        limbs[1] = static_cast<uint64_t>(u >> 64);
    } else if (total <= 76) {
        /* Under 2^255: room for the sign. */
        for (char ch : text)
            if (isdigit(static_cast<unsigned char>(ch)))
                times10_plus(static_cast<unsigned>(ch - '0'));
        for (int k = frac; k < scale; k++)
            times10_plus(0);
    } else {
        /* Longer (leading zeros, or a value BigQuery refuses): the general way. */
        std::string b = decimal_bytes_reference(text, scale);
        put_string(out, b);
        return;
    }
    put_twos_complement(out, limbs, negative);
}

/* Base64 text as Avro bytes (its length, then the bytes). */
static void put_base64(Out &out, std::string_view in, std::string *scratch)
{
    *scratch = base64_decode(in);
    put_string(out, *scratch);
}

/* Reused buffers of one file's encoding. */
struct Scratch {
    std::string text, bytes, value;
};

/* The Avro encoding (not a union) of an insertAll JSON text of kind: set_scalar()'s, direct. */
static void put_scalar(Out &out, Kind kind, std::string_view text, Scratch &s)
{
    std::string_view u = text_of(text, &s.text);
    switch (kind) {
    case Kind::int64:
        put_varint(out, int64_of(u));
        return;
    case Kind::float64: {
        double d = float64_of(u);
        char b[8];
        memcpy(b, &d, 8);
        out.append(b, 8);
        return;
    }
    case Kind::boolean:
        out.push_back(u == "true" ? 1 : 0);
        return;
    case Kind::bytes:
        put_base64(out, u, &s.bytes);
        return;
    case Kind::numeric:
    case Kind::bignumeric:
        put_decimal(out, u, kind == Kind::numeric ? 9 : 38);
        return;
    case Kind::date:
        put_varint(out, static_cast<int32_t>(parse_date(u)));
        return;
    case Kind::time: {
        size_t end = 0;
        put_varint(out, parse_time(u, 0, &end));
        return;
    }
    case Kind::timestamp:
        put_varint(out, parse_timestamp(u));
        return;
    case Kind::datetime:
        put_varint(out, static_cast<int64_t>(u.size()));
        if (u.size() > 10 && u[10] == 'T') {
            out.append(u.data(), 10);
            out.push_back(' ');
            out.append(u.data() + 11, u.size() - 11);
        } else {
            out.append(u.data(), u.size());
        }
        return;
    case Kind::json:
    case Kind::string:
        put_string(out, u);
        return;
    }
}

/* A column's field (a union with null, or an array) from an insertAll JSON text, or NULL. */
static void put_field(Out &out, const Column &c, const std::string *value, Scratch &s)
{
    bool null = value == nullptr || *value == "null";
    if (c.repeated) {
        if (!null) {
            std::vector<std::string> items = elements(*value);
            if (!items.empty()) {
                put_varint(out, static_cast<int64_t>(items.size()));
                for (const std::string &e : items)
                    put_scalar(out, c.kind, e, s);
            }
        }
        out.push_back(0); /* the end of the array's blocks */
        return;
    }
    if (null) {
        out.push_back(0); /* the union's null */
        return;
    }
    out.push_back(2); /* the union's value: branch 1 */
    put_scalar(out, c.kind, *value, s);
}

/* The fields of an import's change: its columns from the changelog's text, then the helpers. */
static void put_change(Out &out, const std::vector<Column> &columns, const RawChange &ch,
                       Scratch &s)
{
    for (size_t fi = 0; fi < columns.size(); fi++) {
        const Column &c = columns[fi];
        std::string_view raw = ch.values[fi];
        if (raw.data() == nullptr || raw == "null") {
            put_field(out, c, nullptr, s);
            continue;
        }
        switch (c.repeated ? Kind::date : c.kind) {
        case Kind::int64:
        case Kind::float64:
        case Kind::boolean:
        case Kind::bytes:
        case Kind::numeric:
        case Kind::bignumeric:
            /* The changelog's form is insertAll's (NaN numerics are refused by both). */
            out.push_back(2);
            put_scalar(out, c.kind, raw, s);
            break;
        case Kind::json:
            /* JSON: its text as it is. */
            out.push_back(2);
            put_string(out, raw);
            break;
        case Kind::string:
            /* A string's text; other JSON (a domain's) as its text. */
            out.push_back(2);
            put_string(out, raw[0] == '"' ? text_of(raw, &s.text) : raw);
            break;
        case Kind::timestamp:
        case Kind::date:
            /* The common case at once: a plain year 1..9999, no infinity, no BC. */
            if (raw.size() >= 12 && raw[0] == '"' && isdigit(static_cast<unsigned char>(raw[4])) &&
                raw[5] == '-' && raw.find(' ') == std::string_view::npos &&
                raw.find('\\') == std::string_view::npos) {
                out.push_back(2);
                put_scalar(out, c.kind, raw, s);
                break;
            }
            [[fallthrough]];
        default:
            /* Dates and times (infinity, ranges) and arrays: as insertAll has them. */
            s.value = insert_value(c, std::string(raw));
            put_field(out, c, &s.value, s);
        }
    }
    put_varint(out, ch.lsn);
    put_varint(out, ch.sequence);
    put_string(out, ch.op);
    put_varint(out, parse_timestamp(ch.timestamp));
    if (ch.xid.empty()) {
        out.push_back(0);
    } else {
        out.push_back(2);
        put_varint(out, strtoll(std::string(ch.xid).c_str(), nullptr, 10));
    }
    out.push_back(0); /* _pgsink_unchanged: an import sends every column */
    out.push_back(0); /* _pgsink_resync_since: only resync_end rows have it */
}

/*
 * An object container file being written: rows encoded into the block,
 * blocks cut as avro-c's writer cut them: 1 MB (or what the largest row
 * needed), at most 4096 rows.
 */
struct AvroFile::State {
    const std::vector<Column> &columns;
    size_t rows, added = 0;
    std::string out, sync;
    Out block;
    size_t capacity = size_t(1) << 20, in_block = 0, header = 0;
    bool sized = false;
    Scratch scratch;

    State(const std::vector<Column> &c, size_t n) : columns(c), rows(n) {}

    void flush(size_t used)
    {
        if (in_block == 0)
            return;
        if (!sized && rows > added) {
            /* The file's size, from its first block: one allocation, not a doubling. */
            out.reserve(header + (used + 32) * (rows / in_block + 1) + used / 8);
            sized = true;
        }
        put_long(out, static_cast<int64_t>(in_block));
        put_long(out, static_cast<int64_t>(used));
        out.append(block.buf.data(), used);
        out += sync;
        in_block = 0;
        /* What is left (a row that did not fit) to the block's start. */
        memmove(&block.buf[0], block.buf.data() + used, block.len - used);
        block.len -= used;
    }

    /* A row: put(block, scratch) appends its encoding; entry names it in errors. */
    template <class Put> void row(size_t entry, Put put)
    {
        try {
            size_t before = block.size();
            put(block, scratch);
            if (block.size() > capacity) {
                if (in_block > 0)
                    flush(before);
                while (block.size() > capacity) {
                    if (capacity >= (size_t(1) << 30))
                        throw std::runtime_error("Avro: a row over 1 GB");
                    capacity *= 2;
                }
            }
        } catch (const std::exception &e) {
            throw Refusal("entry " + std::to_string(entry) + ": " + e.what());
        }
        added++;
        if (++in_block >= 4096)
            flush(block.size());
    }
};

AvroFile::AvroFile(const std::vector<Column> &columns, size_t rows, size_t room)
    : s_(std::make_unique<State>(columns, rows))
{
    std::string schema_json = avro_schema(columns);
    avro_schema_t schema = nullptr;
    if (avro_schema_from_json_length(schema_json.data(), schema_json.size(), &schema) != 0)
        throw std::runtime_error(std::string("Avro: the load's schema is refused: ") +
                                 avro_strerror());
    avro_schema_decref(schema);
    std::string &out = s_->out;
    out.assign(room, '\0');
    out.append("Obj\x01", 4);
    /* The header: metadata map {avro.schema, avro.codec}, then the sync marker. */
    put_long(out, 2);
    put_bytes(out, "avro.schema");
    put_bytes(out, schema_json);
    put_bytes(out, "avro.codec");
    put_bytes(out, "null");
    put_long(out, 0);
    s_->sync = sha256_hex(schema_json + std::to_string(rows), 32).substr(0, 16);
    out += s_->sync;
    s_->header = out.size();
    s_->block.buf.resize(s_->capacity + 4096);
}

AvroFile::~AvroFile() = default;

void AvroFile::add(const RawChange &change)
{
    s_->row(change.entry, [&](Out &out, Scratch &s) { put_change(out, s_->columns, change, s); });
}

std::string AvroFile::finish()
{
    if (s_->added != s_->rows)
        throw std::logic_error("Avro: a file of " + std::to_string(s_->rows) + " rows given " +
                               std::to_string(s_->added));
    s_->flush(s_->block.size());
    return std::move(s_->out);
}

std::string avro_file(const std::vector<Column> &columns, const std::vector<Row> &rows)
{
    std::vector<Column> fields = all_fields(columns);
    AvroFile file(columns, rows.size());
    for (const Row &row : rows)
        file.s_->row(row.entry, [&](Out &out, Scratch &s) {
            /* The row's values are in the fields' order (columns, then helpers), some left out. */
            size_t next = 0;
            for (size_t fi = 0; fi < fields.size(); fi++) {
                const Column &c = fields[fi];
                const std::string *value = nullptr;
                if (next < row.values.size() && row.values[next].first == c.name)
                    value = &row.values[next++].second;
                bool required = fi >= columns.size() && c.key && !c.repeated;
                if (!required) {
                    put_field(out, c, value, s);
                    continue;
                }
                if (value == nullptr || *value == "null")
                    throw Refusal("the helper column " + c.name + " has no value");
                put_scalar(out, c.kind, *value, s);
            }
        });
    return file.finish();
}

std::string avro_file(const std::vector<Column> &columns, const std::vector<RawChange> &changes)
{
    AvroFile file(columns, changes.size());
    for (const RawChange &c : changes)
        file.add(c);
    return file.finish();
}

std::string multipart_body(const std::string &job_json, std::string &&file, size_t at,
                           std::string *boundary)
{
    std::string_view data(file);
    data.remove_prefix(at);
    auto inside = [&](const std::string &b) {
        return std::search(data.begin(), data.end(),
                           std::boyer_moore_horspool_searcher(b.begin(), b.end())) != data.end();
    };
    std::string b = "pgsink_" + sha256_hex(job_json, 16);
    for (int n = 0; inside(b); n++)
        b = "pgsink_" + sha256_hex(job_json + std::to_string(n), 16);
    *boundary = b;
    std::string head;
    head.append("--").append(b).append("\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n");
    head.append(job_json).append("\r\n--").append(b);
    head.append("\r\nContent-Type: application/octet-stream\r\n\r\n");
    std::string tail = "\r\n--" + b + "--\r\n";
    if (head.size() <= at) {
        /* In the room left before the data: the file becomes the body, not copied into one. */
        file.replace(0, at, head);
        file.append(tail);
        return std::move(file);
    }
    std::string out;
    out.reserve(head.size() + data.size() + tail.size());
    out.append(head).append(data).append(tail);
    return out;
}

std::string multipart_body(const std::string &job_json, const std::string &data,
                           std::string *boundary)
{
    return multipart_body(job_json, std::string(data), 0, boundary);
}

} // namespace pgsink::bigquery

/*
 * bigquery_selftest.cpp: the BigQuery sink's Avro encoding (bigquery_load.h)
 * held to the encoder it replaced. avro_file() writes the Avro binary
 * encoding straight from the changelog's text; avro_file_reference() is the
 * encoder before it (avro-c's generic values, avro_value_write per row).
 * Many rows of every type family, both ways, must be the same bytes; a
 * value the one refuses, the other refuses too.
 *
 * Pure C++: no PostgreSQL headers.
 */
#include <cstdint>
#include <string>
#include <vector>

#include "sinks/bigquery_load.h"

namespace pgsink::bigquery
{

namespace
{

/* A small deterministic generator (splitmix64). */
struct Rng {
    uint64_t s;
    uint64_t next()
    {
        uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }
    template <class T> const T &pick(const std::vector<T> &v) { return v[below(v.size())]; }
};

std::string quoted(const std::string &s)
{
    return "\"" + s + "\"";
}

std::string digits(Rng &r, size_t n)
{
    std::string d;
    for (size_t k = 0; k < n; k++)
        d.push_back(static_cast<char>('0' + r.below(10)));
    return d;
}

/* A decimal with up to int_digits and up to scale decimals, as the changelog writes it. */
std::string decimal(Rng &r, size_t int_digits, size_t scale)
{
    std::string v = r.below(3) == 0 ? "-" : "";
    std::string i = digits(r, 1 + r.below(int_digits));
    while (i.size() > 1 && i[0] == '0')
        i.erase(0, 1);
    v += i;
    size_t f = r.below(scale + 1);
    if (f > 0)
        v += "." + digits(r, f);
    return quoted(v);
}

std::string base64(const std::string &in)
{
    static const char *k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
        for (int s = 18; s >= 0; s -= 6)
            out.push_back(k[(v >> s) & 63]);
    }
    if (i + 1 == in.size()) {
        uint32_t v = uint8_t(in[i]) << 16;
        out += std::string{k[(v >> 18) & 63], k[(v >> 12) & 63], '=', '='};
    } else if (i + 2 == in.size()) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
        out += std::string{k[(v >> 18) & 63], k[(v >> 12) & 63], k[(v >> 6) & 63], '='};
    }
    return out;
}

/* A changelog value (raw JSON text) of a column of this pg type. */
std::string value_for(Rng &r, const std::string &pg_type)
{
    static const std::vector<std::string> bigints = {"\"0\"",
                                                     "\"-1\"",
                                                     "\"1\"",
                                                     "\"-9223372036854775808\"",
                                                     "\"9223372036854775807\"",
                                                     "\"63\"",
                                                     "\"-64\"",
                                                     "\"64\"",
                                                     "\"8191\"",
                                                     "\"-8192\""};
    static const std::vector<std::string> doubles = {"0.1",
                                                     "-0",
                                                     "0",
                                                     "1e308",
                                                     "\"NaN\"",
                                                     "\"Infinity\"",
                                                     "-1.5e-7",
                                                     "\"-Infinity\"",
                                                     "5e-324",
                                                     "-2.25",
                                                     "1e400",
                                                     "123456789012345678",
                                                     "1.7976931348623157e308"};
    static const std::vector<std::string> dates = {
        "\"2024-02-29\"", "\"0001-01-01\"", "\"9999-12-31\"", "\"infinity\"",
        "\"-infinity\"",  "\"1970-01-01\"", "\"1969-12-31\"", "\"1600-03-01\""};
    static const std::vector<std::string> times = {"\"00:00:00\"", "\"23:59:59.999999\"",
                                                   "\"12:34:56.5\"", "\"07:08:09.000001\""};
    static const std::vector<std::string> datetimes = {
        "\"2024-01-01T00:00:00\"", "\"2024-01-01T12:00:00.123456\"", "\"infinity\"",
        "\"-infinity\"",           "\"0001-01-01T00:00:00\"",        "\"1969-12-31T23:59:59.9\""};
    static const std::vector<std::string> timestamps = {"\"2024-01-01T00:00:01+00:00\"",
                                                        "\"2024-06-30T23:59:59.999999+05:30\"",
                                                        "\"1969-12-31T23:59:59.5-08:00\"",
                                                        "\"infinity\"",
                                                        "\"-infinity\"",
                                                        "\"0001-01-01T00:00:00+00:00\"",
                                                        "\"9999-12-31T23:59:59.999999+00:00\""};
    static const std::vector<std::string> jsons = {
        "{\"a\":[1,\"\\n\"]}",    "1e400", "\"str\"", "[]", "{\"\xc3\xa9\":\"\xc3\xbc\"}", "true",
        "{\"k\": {\"n\": null}}", "\"\""};
    static const std::vector<std::string> texts = {
        "\"\"",
        "\"plain\"",
        "\"h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9d\x84\x9e\"",
        "\"tab\\tnew\\nline \\\"q\\\" \\\\ \\/ \\b\\f\\r \\u00e9 \\u20ac \\u0041\"",
        "\"pair \\ud834\\udd1e\"",
        "\"ctl \\u0001 nul \\u0000 end\"",
        "\"mixed \xc3\xa9 \\n\"",
        "\"' a quote ' and a comma, a brace }\""};
    static const std::vector<std::string> uuids = {"\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"",
                                                   "\"00000000-0000-0000-0000-000000000000\""};
    if (r.below(7) == 0)
        return "null";
    if (pg_type.size() > 2 && pg_type.compare(pg_type.size() - 2, 2, "[]") == 0) {
        std::string e = pg_type.substr(0, pg_type.size() - 2), out = "[";
        size_t n = r.below(4);
        for (size_t k = 0; k < n; k++) {
            std::string v;
            /* Elements that are arrays (several dimensions) or out of a double's range are
             * refused (below); not here. */
            do
                v = value_for(r, e);
            while (v == "null" || v[0] == '[' || v == "1e400");
            out += (k ? "," : "") + v;
        }
        return out + "]";
    }
    if (pg_type == "bigint")
        return r.below(2) ? r.pick(bigints)
                          : quoted(std::to_string(static_cast<int64_t>(r.next()) >> r.below(63)));
    if (pg_type == "integer")
        return std::to_string(static_cast<int32_t>(r.next()) >> r.below(31));
    if (pg_type == "double precision") {
        if (r.below(2))
            return r.pick(doubles);
        char b[40];
        snprintf(b, sizeof b, "%.17g", (static_cast<double>(r.next() >> 11) - 4.5e15) / 7.0);
        return b;
    }
    if (pg_type == "numeric(12,2)")
        return r.below(8) == 0 ? "\"-0.00\"" : decimal(r, 10, 2);
    if (pg_type == "numeric(38,9)")
        return r.below(8) == 0 ? "\"99999999999999999999999999999.999999999\"" : decimal(r, 29, 9);
    if (pg_type == "numeric(76,38)")
        return r.below(8) == 0 ? quoted("-" + std::string(38, '9') + "." + std::string(38, '9'))
                               : decimal(r, 38, 38);
    if (pg_type == "numeric")
        return r.below(2) ? "\"NaN\"" : decimal(r, 60, 20);
    if (pg_type == "boolean")
        return r.below(2) ? "true" : "false";
    if (pg_type == "bytea") {
        std::string b;
        size_t n = r.below(3) == 0 ? 0 : r.below(40);
        for (size_t k = 0; k < n; k++)
            b.push_back(static_cast<char>(r.next()));
        return quoted(base64(b));
    }
    if (pg_type == "date")
        return r.pick(dates);
    if (pg_type == "time without time zone")
        return r.pick(times);
    if (pg_type == "timestamp without time zone")
        return r.pick(datetimes);
    if (pg_type == "timestamp with time zone")
        return r.pick(timestamps);
    if (pg_type == "jsonb")
        return r.pick(jsons);
    if (pg_type == "uuid")
        return r.pick(uuids);
    return r.pick(texts);
}

const std::vector<std::string> &pg_types()
{
    static const std::vector<std::string> t = {"bigint",
                                               "integer",
                                               "double precision",
                                               "numeric(12,2)",
                                               "numeric(38,9)",
                                               "numeric(76,38)",
                                               "numeric",
                                               "boolean",
                                               "bytea",
                                               "date",
                                               "time without time zone",
                                               "timestamp without time zone",
                                               "timestamp with time zone",
                                               "jsonb",
                                               "text",
                                               "uuid",
                                               "bigint[]",
                                               "text[]",
                                               "numeric(12,2)[]",
                                               "numeric(76,38)[]",
                                               "date[]",
                                               "timestamp with time zone[]",
                                               "timestamp without time zone[]",
                                               "time without time zone[]",
                                               "bytea[]",
                                               "boolean[]",
                                               "double precision[]",
                                               "jsonb[]"};
    return t;
}

std::vector<Column> columns_of(const std::vector<std::string> &types)
{
    std::vector<Column> cols;
    for (size_t k = 0; k < types.size(); k++)
        cols.push_back(
            column_for("c" + std::to_string(k), "c" + std::to_string(k), types[k], k == 0));
    return cols;
}

/* Changes of these columns: raw values kept alive in *texts. */
std::vector<RawChange> changes_of(Rng &r, const std::vector<std::string> &types, size_t n,
                                  std::vector<std::string> *texts)
{
    static const std::vector<std::string> stamps = {"2026-11-30T21:33:38.972579+00:00",
                                                    "1999-01-01T00:00:00+00:00",
                                                    "2026-11-30T21:33:38.5-01:00"};
    static const std::string op = "import", xid = "4294967295";
    texts->reserve(texts->size() + n * types.size());
    std::vector<RawChange> out(n);
    for (size_t k = 0; k < n; k++) {
        RawChange &c = out[k];
        c.entry = k;
        c.lsn = static_cast<int64_t>(r.next() >> (1 + r.below(63)));
        c.sequence = static_cast<int64_t>(r.below(100000));
        c.op = op;
        c.timestamp = r.pick(stamps);
        c.xid = r.below(3) ? std::string_view(xid) : std::string_view();
        for (const std::string &t : types) {
            if (r.below(20) == 0) {
                c.values.push_back(std::string_view()); /* not in the row */
                continue;
            }
            texts->push_back(value_for(r, t));
            c.values.push_back(texts->back());
        }
    }
    return out;
}

/* The first byte where a and b differ, for the failure's message. */
std::string difference(const std::string &a, const std::string &b)
{
    size_t at = 0;
    while (at < a.size() && at < b.size() && a[at] == b[at])
        at++;
    return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size()) +
           ", first difference at byte " + std::to_string(at);
}

/* "" or how the two encoders disagreed (or refused rows that should_take). */
template <class Rows>
std::string compare(const std::vector<Column> &cols, const Rows &rows, bool should_take = true)
{
    std::string direct, reference, e1, e2;
    try {
        direct = avro_file(cols, rows);
    } catch (const Refusal &e) {
        e1 = std::string("refused: ") + e.what();
    } catch (const std::exception &e) {
        e1 = std::string("threw: ") + e.what();
    }
    try {
        reference = avro_file_reference(cols, rows);
    } catch (const Refusal &e) {
        e2 = std::string("refused: ") + e.what();
    } catch (const std::exception &e) {
        e2 = std::string("threw: ") + e.what();
    }
    if (should_take && (!e1.empty() || !e2.empty()))
        return "direct [" + e1 + "], reference [" + e2 + "]";
    if (!e1.empty() || !e2.empty()) {
        /* The reference names the entry before the one refused: the reasons are compared. */
        auto reason = [](const std::string &e) {
            size_t at = e.find(": ", e.find("entry "));
            return at == std::string::npos ? e : e.substr(at + 2);
        };
        return reason(e1) == reason(e2) ? "" : "direct [" + e1 + "], reference [" + e2 + "]";
    }
    if (direct != reference)
        return difference(direct, reference);
    return "";
}

} // namespace

std::string bigquery_selftest()
{
    std::string failures;
    auto fail = [&](const std::string &what, const std::string &why) {
        if (!why.empty())
            failures += what + ": " + why + "; ";
    };
    Rng r{13};

    /* Every type family, nulls and missing values, over blocks of 4096 rows: the same bytes. */
    {
        std::vector<std::string> texts;
        std::vector<RawChange> changes = changes_of(r, pg_types(), 9000, &texts);
        fail("changes of every type family", compare(columns_of(pg_types()), changes));
    }
    /* Each type alone (its own schema), so that one family's refusal hides no other. */
    for (const std::string &t : pg_types()) {
        std::vector<std::string> texts;
        std::vector<std::string> types = {"bigint", t};
        std::vector<RawChange> changes = changes_of(r, types, 500, &texts);
        fail("changes of " + t, compare(columns_of(types), changes));
    }
    /* Rows of 0.3 and 2.5 MB: blocks cut where avro-c's 1 MB writer cut them, and grown. */
    {
        std::vector<std::string> types = {"bigint", "text"};
        std::vector<std::string> texts;
        std::vector<RawChange> changes = changes_of(r, types, 12, &texts);
        std::vector<std::string> big;
        big.reserve(changes.size());
        for (size_t k = 0; k < changes.size(); k++) {
            big.push_back(quoted(std::string(k == 7 ? 2500000 : 300000, char('a' + k))));
            changes[k].values[1] = big.back();
        }
        fail("rows larger than a block", compare(columns_of(types), changes));
    }
    /* insertAll rows (avro_file of Rows): the same bytes. */
    {
        std::vector<Column> cols = columns_of(pg_types());
        std::vector<Row> rows;
        bool refused = false;
        for (size_t k = 0; k < 3000 && !refused; k++) {
            Row row;
            row.entry = k;
            for (const Column &c : cols) {
                std::string v = value_for(r, c.pg_type);
                try {
                    v = insert_value(c, v);
                } catch (const Refusal &) {
                    continue; /* left out: NULL */
                }
                row.values.emplace_back(c.name, v);
            }
            row.values.emplace_back("_pgsink_lsn", std::to_string(r.next() >> 2));
            row.values.emplace_back("_pgsink_sequence", std::to_string(k));
            row.values.emplace_back("_pgsink_op", k % 2 ? "\"update\"" : "\"delete\"");
            row.values.emplace_back("_pgsink_timestamp", "\"2026-11-30T21:33:38.972579+00:00\"");
            if (k % 3)
                row.values.emplace_back("_pgsink_xid", "\"" + std::to_string(k * 7) + "\"");
            row.values.emplace_back("_pgsink_unchanged", k % 4 ? "[]" : "[\"c3\",\"c\\u00e9\"]");
            if (k % 5 == 0)
                row.values.emplace_back("_pgsink_resync_since", std::to_string(k));
            rows.push_back(row);
        }
        fail("insertAll rows", compare(cols, rows));
    }
    /* A file written with room before it becomes the multipart body in place: the same body. */
    {
        std::vector<std::string> types = {"bigint", "text"}, texts;
        std::vector<RawChange> changes = changes_of(r, types, 300, &texts);
        AvroFile file(columns_of(types), changes.size(), 600);
        for (const RawChange &c : changes)
            file.add(c);
        std::string job = "{\"configuration\":{\"load\":{}}}", b1, b2;
        std::string copied = multipart_body(job, avro_file(columns_of(types), changes), &b1);
        std::string in_place = multipart_body(job, file.finish(), 600, &b2);
        if (copied != in_place || b1 != b2)
            fail("multipart body in the file's room", difference(in_place, copied));
        std::string tight = multipart_body(job, std::string(10, 'x') + "data", 10, &b2);
        if (tight.find("\r\n\r\ndata\r\n--" + b2 + "--\r\n") == std::string::npos ||
            tight.find('x') != std::string::npos)
            fail("multipart body without the room for its head", tight);
    }
    /* Values Avro (or BigQuery) cannot take: both refuse them, the same entry. */
    static const std::vector<std::pair<std::string, std::string>> refused = {
        {"date", "\"0044-03-15 BC\""},
        {"timestamp with time zone", "\"0044-03-15T00:00:00+00:00 BC\""},
        {"date", "\"12345-01-01\""},
        {"numeric(12,2)", "\"1.0123456789\""},
        {"double precision[]", "[1e400]"},
        {"jsonb[]", "[[1]]"},
        {"numeric(12,2)", "\"NaN\""},
        {"numeric(76,38)", "\"Infinity\""},
        {"bigint", "\"12x\""},
        {"bigint", "\"99999999999999999999\""},
        {"time without time zone", "\"24:00:00\""},
        {"integer[]", "[1,null]"},
        {"integer[]", "[[1],[2]]"},
        {"bytea", "\"not base64!\""},
        {"text", "\"bad \\x escape\""},
        {"text", "\"lone \\ud834 surrogate\""}};
    for (const auto &[type, value] : refused) {
        std::vector<std::string> types = {"bigint", type}, texts;
        std::vector<RawChange> changes = changes_of(r, types, 5, &texts);
        changes[3].values[1] = value;
        std::string why = compare(columns_of(types), changes, false);
        bool direct_refused = false;
        try {
            avro_file(columns_of(types), changes);
        } catch (const Refusal &e) {
            direct_refused = std::string(e.what()).rfind("entry 3: ", 0) == 0;
        }
        fail(type + " " + value, why.empty() && !direct_refused ? "not refused at entry 3" : why);
    }
    return failures;
}

} // namespace pgsink::bigquery

/*
 * clickhouse_selftest.cpp: checks of the ClickHouse sink's pure parts,
 * without a server (pgsink._selftest_boundary('clickhouse'), regress test
 * 24_clickhouse_encoding): how changelog values become JSONEachRow values,
 * how lines are scanned, column and URL naming.
 *
 * Pure C++: no PostgreSQL headers.
 */
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "sinks/clickhouse_rows.h"
#include "sinks/clickhouse_schema.h"
#include "sinks/clickhouse_sink.h"

namespace pgsink
{

namespace ch = clickhouse;

/* Column c's value raw as an INSERT writes it: "value" or "value|flag"; "-" if left out. */
static std::string encoded(const ch::Column &c, std::string_view raw)
{
    std::string out, scratch;
    ch::encode_value(c, raw, scratch, [&](int slot, std::string_view text) {
        if (slot > 0)
            out.push_back(slot == 1 ? '|' : '#');
        out.append(text);
    });
    return raw.empty() ? "-" : out;
}

static std::string thrown(const std::function<void()> &f)
{
    try {
        f();
    } catch (const std::exception &e) {
        return e.what();
    }
    return "";
}

std::string clickhouse_selftest()
{
    std::string failures;
    auto check = [&](const std::string &what, const std::string &got, const std::string &want) {
        if (got != want)
            failures += what + ": got [" + got + "], want [" + want + "]; ";
    };
    auto col = [](const char *pg_type, bool key = false) {
        return ch::column_for("c", pg_type, key);
    };

    /* Values: each type family as its column holds it. */
    check("integer", encoded(col("integer"), "5"), "5");
    check("bigint (a string in the changelog)", encoded(col("bigint"), "\"-9223372036854775808\""),
          "\"-9223372036854775808\"");
    check("boolean", encoded(col("boolean"), "true"), "true");
    check("numeric: digits as written", encoded(col("numeric(12,2)"), "\"12.50\""), "12.50");
    check("numeric NaN stays a string (refused, parked)", encoded(col("numeric(12,2)"), "\"NaN\""),
          "\"NaN\"");
    check("unconstrained numeric: a String", encoded(col("numeric"), "\"1e-400\""), "\"1e-400\"");
    check("double: its bits", encoded(col("double precision"), "0.1"), "4591870180066957722");
    check("double -0 keeps its sign", encoded(col("double precision"), "-0"),
          "9223372036854775808");
    check("double Infinity", encoded(col("double precision"), "\"Infinity\""),
          "9218868437227405312");
    check("real: 32 bits", encoded(col("real"), "1.5"), "1069547520");
    check("text", encoded(col("text"), "\"a\\\"b\\n\""), "\"a\\\"b\\n\"");
    check("jsonb: its JSON text as a string", encoded(col("jsonb"), "{\"a\":[1,\"\\n\"]}"),
          "\"{\\\"a\\\":[1,\\\"\\\\n\\\"]}\"");
    check("json number: its exact text", encoded(col("json"), "1e400"), "\"1e400\"");
    check("json control character", encoded(col("json"), std::string("\"\x01\"")),
          "\"\\\"\\u0001\\\"\"");
    check("a numeric(5,1)[]: its JSON text", encoded(col("numeric(5,1)[]"), "[\"1.0\",null]"),
          "\"[\\\"1.0\\\",null]\"");
    check("a real[]: its JSON text", encoded(col("real[]"), "[1.5]"), "\"[1.5]\"");
    check("a text[]: an Array(Nullable(String))", encoded(col("text[]"), "[\"a\",null]"),
          "[\"a\",null]|0");
    check("int[]: the array and its NULL flag", encoded(col("integer[]"), "[1,null]"),
          "[1,null]|0");
    check("int[] NULL: empty, flagged", encoded(col("integer[]"), "null"), "[]|1");
    check("NULL", encoded(col("integer"), "null"), "null");
    check("a column not in the row is left out", encoded(col("integer"), ""), "-");

    /* Timestamps: a String everywhere, and DateTime64 beside it where the server has it. */
    ch::Server v18 = ch::server_of("18.16.1"), v20 = ch::server_of("20.1.2.4"),
               v23 = ch::server_of("23.8.1.2992");
    auto ts = [](const char *pg_type, const ch::Server &server) {
        return ch::column_for("ts", pg_type, false, server);
    };
    auto ddl = [](const ch::Column &c) {
        std::string out;
        for (const std::string &d : ch::column_ddl(c))
            out += (out.empty() ? "" : "; ") + d;
        return out;
    };
    check("18.16: no DateTime64", ddl(ts("timestamp with time zone", v18)),
          "`ts` Nullable(String)");
    check("20.1: DateTime64 beside", ddl(ts("timestamp with time zone", v20)),
          "`ts` Nullable(String); `ts__dt64` Nullable(DateTime64(6, 'UTC'))");
    check("a timestamp(3)", ddl(ts("timestamp(3) without time zone", v23)),
          "`ts` Nullable(String); `ts__dt64` Nullable(DateTime64(6, 'UTC'))");
    check("a date: a String only", ddl(ts("date", v23)), "`ts` Nullable(String)");
    check("an unreadable version: no DateTime64",
          ddl(ts("timestamp without time zone", ch::server_of("x"))), "`ts` Nullable(String)");
    check("a timestamptz",
          encoded(ts("timestamp with time zone", v23), "\"2026-11-30T19:20:54.082547+00:00\""),
          "\"2026-11-30T19:20:54.082547+00:00\"#\"2026-11-30 19:20:54.082547\"");
    check("a timestamp, 1910, on 23.8",
          encoded(ts("timestamp without time zone", v23), "\"1910-05-01T12:00:00.5\""),
          "\"1910-05-01T12:00:00.5\"#\"1910-05-01 12:00:00.500000\"");
    check("1910 on 20.1: out of DateTime64's years",
          encoded(ts("timestamp without time zone", v20), "\"1910-05-01T12:00:00\""),
          "\"1910-05-01T12:00:00\"#null");
    check("2300 on 23.8",
          encoded(ts("timestamp without time zone", v23), "\"2300-01-01T00:00:00\""),
          "\"2300-01-01T00:00:00\"#null");
    check("infinity", encoded(ts("timestamp without time zone", v23), "\"infinity\""),
          "\"infinity\"#null");
    check("BC", encoded(ts("timestamp without time zone", v23), "\"0044-03-15T00:00:00 BC\""),
          "\"0044-03-15T00:00:00 BC\"#null");
    check("year 10000", encoded(ts("timestamp without time zone", v23), "\"10000-01-01T00:00:00\""),
          "\"10000-01-01T00:00:00\"#null");
    check("a NULL timestamp", encoded(ts("timestamp without time zone", v23), "null"), "null#null");
    check("a DateTime64 column's name", ch::column_name("ts__dt64"), "_pgsink_col_ts__dt64_");

    /* Key texts: as encoded and as ClickHouse answers, alike. */
    std::string k;
    ch::append_key_text(k, "\"a\\u0062\"");
    ch::append_key_text(k, "true");
    ch::append_key_text(k, "\"5\"");
    check("key text", k,
          "ab\x1f"
          "1\x1f"
          "5\x1f");

    /* Lines: scanned once, escapes and nesting inside values never taken for structure. */
    std::vector<ch::Member> rows;
    std::string line =
        "{\"timestamp\":\"t\",\"sequence\":3,\"namespace\":\"p\\\"q\",\"name\":\"n\","
        "\"op\":\"update\",\"lsn\":\"1/2\",\"xid\":5,\"before\":{\"id\":1},"
        "\"after\":{\"id\":1,\"a\\\"b\":\"}\\\\\",\"j\":{\"x\":[\"]\"]}},"
        "\"unchanged\":[\"big\"]}";
    ch::Entry e = ch::scan_entry(line, rows);
    check("op", std::string(e.op), "update");
    check("lsn", std::to_string(e.lsn_value), std::to_string((1ULL << 32) + 2));
    check("sequence", std::string(e.sequence), "3");
    check("namespace", ch::string_content(e.ns), "p\"q");
    check("unchanged", std::string(e.unchanged), "[\"big\"]");
    check("before members", std::to_string(e.before_n), "1");
    check("after members", std::to_string(e.after_n), "3");
    ch::Row after{rows.data() + e.after_at, e.after_n};
    check("escaped member name", std::string(ch::member_value(after, "a\"b", 0)), "\"}\\\\\"");
    check("nested value", std::string(ch::member_value(after, "j", 9)), "{\"x\":[\"]\"]}");
    check("no such member", std::string(ch::member_value(after, "k", 0)), "");
    std::vector<ch::Member> rows2;
    ch::Entry head = ch::scan_entry(line, rows2, true);
    check("a head: up to the rows",
          std::string(head.op) + " " + std::to_string(head.lsn_value) + " " +
              std::to_string(head.after_n) + " [" + std::string(head.unchanged) + "] " +
              (head.head ? "head" : "whole"),
          "update " + std::to_string((1ULL << 32) + 2) + " 0 [] head");
    ch::Entry rest = ch::scan_rest(head, rows2);
    check("read on from the head",
          std::string(rest.op) + " " + std::to_string(rest.before_n) + " " +
              std::to_string(rest.after_n) + " " + std::string(rest.unchanged) + " " +
              std::string(
                  ch::member_value(ch::Row{rows2.data() + rest.after_at, rest.after_n}, "j", 0)),
          "update 1 3 [\"big\"] {\"x\":[\"]\"]}");
    std::string long_line = "{\"op\":\"insert\",\"lsn\":\"0/1\",\"after\":{\"t\":\"" +
                            std::string(40, 'x') + "\\\"" + std::string(40, '\\') + "\"}}";
    ch::Entry le = ch::scan_entry(long_line, rows);
    check("a long string with escapes",
          std::to_string(
              ch::member_value(ch::Row{rows.data() + le.after_at, le.after_n}, "t", 0).size()),
          "84");
    check("an unterminated string", thrown([&] { ch::scan_entry("{\"op\":\"ins", rows); }),
          "a JSON string has no end");
    check("a missing value", thrown([&] { ch::scan_entry("{\"op\":}", rows); }),
          "a JSON value is missing");

    /* Column names: helper names never taken. */
    check("a plain name", ch::column_name("note"), "note");
    check("a helper's name", ch::column_name("_pgsink_lsn"), "_pgsink_col__pgsink_lsn_");
    check("a float's bits' name", ch::column_name("f__bits"), "_pgsink_col_f__bits_");
    check("an array flag's name", ch::column_name("a__null"), "_pgsink_col_a__null_");
    check("the renaming prefix", ch::column_name("_pgsink_col_x"), "_pgsink_col__pgsink_col_x_");
    check("another _pgsink_ name", ch::column_name("_pgsink_other"), "_pgsink_other");
    check("bits of a renamed float", ch::insert_column(ch::column_for("_pgsink_op", "real", false)),
          "_pgsink_col__pgsink_op___bits");

    /* pgsink.clickhouse_url. */
    auto url = [](const std::string &u) {
        try {
            return clickhouse_request_url(u);
        } catch (const SinkError &e) {
            return std::string("error: ") + e.what();
        }
    };
    check("url without a path", url("http://127.0.0.1:8123"), "http://127.0.0.1:8123/");
    check("url with a path", url("https://proxy.example/clickhouse/"),
          "https://proxy.example/clickhouse/");
    check("url with settings", url("HTTP://u:p@h:8123?max_threads=2&async_insert=0"),
          "HTTP://u:p@h:8123/?max_threads=2&async_insert=0");
    check("url with a query", url("http://h:8123/?query=DROP%20TABLE%20x"),
          "error: pgsink.clickhouse_url may not have a query parameter: pgsink sends its own "
          "statements (settings such as ?max_insert_block_size=... are fine)");
    check("url of another scheme", url("ftp://h"),
          "error: pgsink.clickhouse_url must start with http:// or https:// (for example "
          "http://127.0.0.1:8123)");
    check("url with a fragment", url("http://h/#x"),
          "error: pgsink.clickhouse_url may not hold a fragment (#...): remove it");
    check("url without a host", url("http:///x"),
          "error: pgsink.clickhouse_url has no host (for example http://127.0.0.1:8123)");
    check("no url", url(""), "error: pgsink.clickhouse_url is not set");

    /*
     * An exchange driven through scripted answers: updates that left a
     * TOASTed value unchanged read back only the key and that column; an
     * answer too big is read again in halves; a single row too big parks
     * its update, saying why; the values read back are written with the
     * updates.
     */
    ClickHouseSink::Settings settings;
    settings.url = "http://127.0.0.1:1";
    settings.database = "pgsink";
    ClickHouseSink sink(settings);
    sink.open({});
    sink.set_limits({100, 300});
    std::string batch =
        "{\"timestamp\":\"t\",\"lsn\":\"0/10\",\"schema\":{\"namespace\":\"public.w\","
        "\"type\":\"record\",\"name\":\"value\",\"fields\":["
        "{\"name\":\"id\",\"type\":[\"int\",\"null\"],\"pg_type\":\"integer\"},"
        "{\"name\":\"big\",\"type\":[\"string\",\"null\"],\"pg_type\":\"text\"},"
        "{\"name\":\"note\",\"type\":[\"string\",\"null\"],\"pg_type\":\"text\"}],"
        "\"key\":[\"id\"]}}\n";
    for (int id = 1; id <= 3; id++)
        batch += "{\"timestamp\":\"t\",\"sequence\":" + std::to_string(id) +
                 ",\"namespace\":\"public\",\"name\":\"w\",\"op\":\"update\",\"lsn\":\"0/10\","
                 "\"xid\":1,\"before\":null,\"after\":{\"id\":" +
                 std::to_string(id) + ",\"note\":\"b\"},\"unchanged\":[\"big\"]}\n";
    auto ex = sink.exchange(batch, "k");
    std::vector<std::string> lookups;
    std::string insert;
    std::optional<Answer> done;
    for (int n = 0; n < 50 && !done; n++) {
        HttpRequest r = ex->next();
        HttpResponse a;
        a.status = 200;
        if (r.body.rfind("SELECT sorting_key", 0) == 0) {
            a.body = "id\n";
        } else if (r.body.find(" FINAL WHERE (") != std::string::npos) {
            std::string in = r.body.substr(r.body.find(" IN (") + 5);
            in = in.substr(0, in.find(") FORMAT"));
            lookups.push_back(r.body.substr(0, r.body.find(" FROM ")) + " IN " + in);
            if (in.find(", ") != std::string::npos || in == "(2)")
                a.body = std::string(in == "(2)" ? 400 : 150, ' '); /* too big */
            else
                a.body = "{\"id\":" + in.substr(1, 1) + ",\"big\":\"X" + in.substr(1, 1) +
                         "\",\"_pgsink_deleted\":0}\n";
        } else if (r.body.rfind("INSERT", 0) == 0) {
            insert = r.body.substr(r.body.find('\n') + 1);
        }
        done = ex->answer(a);
    }
    std::string looked;
    for (const std::string &l : lookups)
        looked += l + "; ";
    check("lookups: key and unchanged columns only, in halves", looked,
          "SELECT `id`, `big`, `_pgsink_deleted` IN (1), (2), (3); "
          "SELECT `id`, `big`, `_pgsink_deleted` IN (1); "
          "SELECT `id`, `big`, `_pgsink_deleted` IN (2), (3); "
          "SELECT `id`, `big`, `_pgsink_deleted` IN (2); "
          "SELECT `id`, `big`, `_pgsink_deleted` IN (3); ");
    check("rows written with the values read back", insert,
          "{\"big\":\"X1\",\"id\":1,\"note\":\"b\",\"_pgsink_lsn\":16,\"_pgsink_sequence\":1,"
          "\"_pgsink_op\":\"update\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n"
          "{\"big\":\"X3\",\"id\":3,\"note\":\"b\",\"_pgsink_lsn\":16,\"_pgsink_sequence\":3,"
          "\"_pgsink_op\":\"update\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n");
    std::string parked;
    if (done)
        for (const Answer::Entry &e : done->entries)
            parked += std::to_string(e.index) + ": " + e.response + "; ";
    check("a row too big to read back: its update parked", parked,
          "2: the current row in ClickHouse, whose unchanged TOASTed value this update needs, "
          "is too big to read back (over 300 bytes as JSON): import the table again; ");

    /*
     * A batch of one table's changes: its INSERT is streamed, its rows made
     * as they are asked for (here 7 bytes at a time): a key change deletes
     * the old key, a delete writes the key only; sent again from the start
     * (a rewind), the same bytes.
     */
    std::string one =
        "{\"timestamp\":\"t\",\"lsn\":\"0/10\",\"schema\":{\"namespace\":\"public.s\","
        "\"type\":\"record\",\"name\":\"value\",\"fields\":["
        "{\"name\":\"id\",\"type\":[\"int\",\"null\"],\"pg_type\":\"integer\"},"
        "{\"name\":\"v\",\"type\":[\"string\",\"null\"],\"pg_type\":\"text\"}],"
        "\"key\":[\"id\"]}}\n";
    auto change = [](int seq, const char *op, const char *before, const char *after) {
        return "{\"timestamp\":\"t\",\"sequence\":" + std::to_string(seq) +
               ",\"namespace\":\"public\",\"name\":\"s\",\"op\":\"" + op +
               "\",\"lsn\":\"0/10\",\"xid\":1,\"before\":" + before + ",\"after\":" + after + "}\n";
    };
    one += change(1, "insert", "null", "{\"id\":1,\"v\":\"a\"}");
    one += change(2, "update", "{\"id\":1}", "{\"id\":2,\"v\":\"b\"}");
    one += change(3, "delete", "{\"id\":2}", "null");
    auto streamed = sink.exchange(one, "k2");
    std::string body, again, first_step;
    bool streaming = false;
    done.reset();
    for (int n = 0; n < 50 && !done; n++) {
        HttpRequest r = streamed->next();
        HttpResponse a;
        a.status = 200;
        if (r.body.rfind("SELECT sorting_key", 0) == 0)
            a.body = "id\n";
        if (r.body_source) {
            streaming = r.body.empty();
            char buf[7];
            while (size_t got = r.body_source(buf, sizeof(buf)))
                body.append(buf, got);
            std::vector<char> big(1 << 16);
            if (r.body_rewind && r.body_rewind())
                while (size_t got = r.body_source(big.data(), big.size()))
                    again.append(big.data(), got);
        }
        done = streamed->answer(a);
    }
    std::string meta = ",\"_pgsink_lsn\":16,\"_pgsink_sequence\":";
    check("a streamed INSERT", std::string(streaming ? "streamed: " : "not streamed: ") + body,
          "streamed: INSERT INTO `pgsink`.`public_s` (`id`, `v`, `_pgsink_lsn`, "
          "`_pgsink_sequence`, `_pgsink_op`, `_pgsink_deleted`, `_pgsink_timestamp`) FORMAT "
          "JSONEachRow\n"
          "{\"id\":1,\"v\":\"a\"" +
              meta +
              "1,\"_pgsink_op\":\"insert\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n" +
              "{\"id\":1,\"v\":null" + meta +
              "2,\"_pgsink_op\":\"update\",\"_pgsink_deleted\":1,\"_pgsink_timestamp\":\"t\"}\n" +
              "{\"id\":2,\"v\":\"b\"" + meta +
              "2,\"_pgsink_op\":\"update\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n" +
              "{\"id\":2,\"v\":null" + meta +
              "3,\"_pgsink_op\":\"delete\",\"_pgsink_deleted\":1,\"_pgsink_timestamp\":\"t\"}\n");
    check("a streamed INSERT sent again", again, body);
    check("a streamed INSERT answered", done ? std::to_string(done->entries.size()) : "none", "0");

    /* The server's version asked first; on 23.8 a timestamptz gets its DateTime64 column. */
    ClickHouseSink newer(settings);
    newer.open({});
    std::string tsb =
        "{\"timestamp\":\"t\",\"lsn\":\"0/10\",\"schema\":{\"namespace\":\"public.s\","
        "\"type\":\"record\",\"name\":\"value\",\"fields\":["
        "{\"name\":\"id\",\"type\":[\"int\",\"null\"],\"pg_type\":\"integer\"},"
        "{\"name\":\"at\",\"type\":[\"string\",\"null\"],"
        "\"pg_type\":\"timestamp with time zone\"}],\"key\":[\"id\"]}}\n" +
        change(1, "insert", "null", "{\"id\":1,\"at\":\"2001-02-03T04:05:06.7+00:00\"}");
    auto versioned = newer.exchange(tsb, "k3");
    std::string asked, created, inserted;
    done.reset();
    for (int n = 0; n < 50 && !done; n++) {
        HttpRequest r = versioned->next();
        HttpResponse a;
        a.status = 200;
        if (n == 0)
            asked = r.body;
        if (r.body.rfind("SELECT version()", 0) == 0)
            a.body = "23.8.1.2992\n";
        else if (r.body.rfind("SELECT sorting_key", 0) == 0)
            a.body = "id\n";
        else if (r.body.rfind("CREATE TABLE", 0) == 0)
            created =
                r.body.substr(r.body.find('(') + 1, r.body.find(") ENGINE") - r.body.find('(') - 1);
        char buf[512];
        if (r.body_source)
            while (size_t got = r.body_source(buf, sizeof(buf)))
                inserted.append(buf, got);
        done = versioned->answer(a);
    }
    check("the version asked first", asked, "SELECT version() FORMAT TSVRaw");
    check("a table on 23.8", created.substr(0, created.find(", `_pgsink_lsn`")),
          "`id` Int32, `at` Nullable(String), `at__dt64` Nullable(DateTime64(6, 'UTC'))");
    check("a row on 23.8",
          inserted.substr(inserted.find('\n') + 1,
                          inserted.find(",\"_pgsink_lsn\"") - inserted.find('\n') - 1),
          "{\"id\":1,\"at\":\"2001-02-03T04:05:06.7+00:00\",\"at__dt64\":\"2001-02-03 "
          "04:05:06.700000\"");

    /*
     * A TRUNCATE: its position recorded, then the mutation; a change before
     * it that comes after it in the batch is left out, a delete without its
     * old key and a line that is not an entry are refused, saying why. The
     * next batch (streamed) leaves out a change before the recorded
     * position too.
     */
    std::string tt =
        "{\"timestamp\":\"t\",\"lsn\":\"0/10\",\"schema\":{\"namespace\":\"public.tt\","
        "\"type\":\"record\",\"name\":\"value\",\"fields\":["
        "{\"name\":\"id\",\"type\":[\"int\",\"null\"],\"pg_type\":\"integer\"}],"
        "\"key\":[\"id\"]}}\n";
    auto at = [](const char *lsn, int seq, const char *op, const char *before, const char *after) {
        return "{\"timestamp\":\"t\",\"sequence\":" + std::to_string(seq) +
               ",\"namespace\":\"public\",\"name\":\"tt\",\"op\":\"" + op + "\",\"lsn\":\"" + lsn +
               "\",\"xid\":1,\"before\":" + before + ",\"after\":" + after + "}\n";
    };
    tt += at("0/20", 2, "truncate", "null", "null");
    tt += at("0/10", 1, "insert", "null", "{\"id\":1}"); /* before the truncate */
    tt += at("0/20", 3, "insert", "null", "{\"id\":3}");
    tt += at("0/20", 4, "delete", "null", "null"); /* no old key */
    tt += "[\"not an entry\"]\n";
    auto cut = sink.exchange(tt, "k4");
    std::string steps, written;
    done.reset();
    for (int n = 0; n < 50 && !done; n++) {
        HttpRequest r = cut->next();
        HttpResponse a;
        a.status = 200;
        if (r.body.rfind("SELECT sorting_key", 0) == 0)
            a.body = "id\n";
        if (r.body.find("_pgsink_truncates") != std::string::npos ||
            r.body.rfind("ALTER TABLE `pgsink`.`public_tt` DELETE", 0) == 0)
            steps += r.body.substr(0, r.body.find(" FROM")) + "; ";
        if (r.body.rfind("INSERT INTO `pgsink`.`public_tt`", 0) == 0)
            written += r.body.substr(r.body.find('\n') + 1);
        done = cut->answer(a);
    }
    check("a truncate: its position kept, then the mutation", steps,
          "SELECT `lsn`, `sequence`; "
          "CREATE VIEW `pgsink`.`public_tt_current` AS SELECT `id`; "
          "INSERT INTO `pgsink`.`_pgsink_truncates` (`table_name`, `lsn`, `sequence`) VALUES "
          "('public_tt', 32, 2); "
          "ALTER TABLE `pgsink`.`public_tt` DELETE WHERE `_pgsink_lsn` < 32 OR (`_pgsink_lsn` = "
          "32 AND `_pgsink_sequence` < 2); ");
    check("a truncate: the change before it left out", written,
          "{\"id\":3,\"_pgsink_lsn\":32,\"_pgsink_sequence\":3,\"_pgsink_op\":\"insert\","
          "\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n");
    std::string refused;
    if (done)
        for (const Answer::Entry &e : done->entries)
            refused += std::to_string(e.index) + ": " + e.response.substr(0, 40) + "; ";
    check("a delete without its old key and a line that is not an entry: refused", refused,
          "4: a delete without the old key (\"before\" i; "
          "5: pgsink could not read this entry (a chan; ");
    std::string later = at("0/18", 1, "insert", "null", "{\"id\":8}") +
                        at("0/30", 1, "insert", "null", "{\"id\":9}");
    auto next = sink.exchange(later, "k5");
    std::string sent;
    done.reset();
    for (int n = 0; n < 50 && !done; n++) {
        HttpRequest r = next->next();
        HttpResponse a;
        a.status = 200;
        char buf[512];
        if (r.body_source)
            while (size_t got = r.body_source(buf, sizeof(buf)))
                sent.append(buf, got);
        done = next->answer(a);
    }
    check("after a truncate, a streamed batch leaves out what came before it",
          sent.substr(sent.find('\n') + 1),
          "{\"id\":9,\"_pgsink_lsn\":48,\"_pgsink_sequence\":1,\"_pgsink_op\":\"insert\","
          "\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n");

    /*
     * Parked entries sent again (exchange_resent()): each key's greatest
     * (lsn, sequence) in ClickHouse is read first (a numeric key as text,
     * in an outer query: its alias would take the key's place in WHERE),
     * and rows older than it are left out, per row: a changed key's
     * tombstone by the old key, its row by the new; and older than a row
     * of the batch written before them.
     */
    std::string rs =
        "{\"timestamp\":\"t\",\"lsn\":\"0/10\",\"schema\":{\"namespace\":\"public.rs\","
        "\"type\":\"record\",\"name\":\"value\",\"fields\":["
        "{\"name\":\"id\",\"type\":[\"int\",\"null\"],\"pg_type\":\"integer\"},"
        "{\"name\":\"v\",\"type\":[\"string\",\"null\"],\"pg_type\":\"text\"}],"
        "\"key\":[\"id\"]}}\n"
        "{\"timestamp\":\"t\",\"lsn\":\"0/10\",\"schema\":{\"namespace\":\"public.rd\","
        "\"type\":\"record\",\"name\":\"value\",\"fields\":["
        "{\"name\":\"k\",\"type\":[\"string\",\"null\"],\"pg_type\":\"numeric(10,2)\"}],"
        "\"key\":[\"k\"]}}\n";
    auto re = [](const char *name, int seq, const char *op, const char *before, const char *after) {
        return "{\"timestamp\":\"t\",\"sequence\":" + std::to_string(seq) +
               ",\"namespace\":\"public\",\"name\":\"" + name + "\",\"op\":\"" + op +
               "\",\"lsn\":\"0/40\",\"xid\":1,\"before\":" + before + ",\"after\":" + after + "}\n";
    };
    rs += re("rs", 1, "update", "null", "{\"id\":1,\"v\":\"older\"}");
    rs += re("rs", 3, "update", "{\"id\":5}", "{\"id\":6,\"v\":\"moved\"}");
    rs += re("rs", 4, "insert", "null", "{\"id\":7,\"v\":\"new\"}");
    rs += re("rs", 5, "update", "null", "{\"id\":8,\"v\":\"b\"}");
    rs += re("rs", 4, "update", "null", "{\"id\":8,\"v\":\"a\"}");
    rs += re("rs", 6, "delete", "{\"id\":9}", "null");
    rs += re("rd", 7, "update", "null", "{\"k\":\"1.50\"}");
    rs += re("rd", 8, "update", "null", "{\"k\":\"2.00\"}");
    auto resent = sink.exchange_resent(rs, "k6");
    std::string positions, rewritten;
    bool resent_streamed = false;
    done.reset();
    for (int n = 0; n < 50 && !done; n++) {
        HttpRequest r = resent->next();
        HttpResponse a;
        a.status = 200;
        if (r.body.rfind("SELECT sorting_key", 0) == 0)
            a.body = r.body.find("'public_rd'") != std::string::npos ? "k\n" : "id\n";
        if (r.body.find("max((`_pgsink_lsn`") != std::string::npos) {
            positions += r.body + "; ";
            if (r.body.find("public_rs") != std::string::npos)
                a.body = "{\"id\":1,\"_pgsink_op\":[\"64\",\"2\"]}\n"
                         "{\"id\":5,\"_pgsink_op\":[\"80\",\"1\"]}\n"
                         "{\"id\":9,\"_pgsink_op\":[\"64\",\"7\"]}\n";
            else
                a.body = "{\"k\":\"1.50\",\"_pgsink_op\":[\"100\",\"1\"]}\n";
        }
        resent_streamed = resent_streamed || static_cast<bool>(r.body_source);
        if (r.body.rfind("INSERT INTO `pgsink`.`public_r", 0) == 0)
            rewritten += r.body.substr(r.body.find('\n') + 1);
        done = resent->answer(a);
    }
    check("sent again: the keys' positions read first", positions,
          "SELECT toString(`k`) AS `k`, `_pgsink_op` FROM (SELECT `k`, max((`_pgsink_lsn`, "
          "`_pgsink_sequence`)) AS `_pgsink_op` FROM `pgsink`.`public_rd` WHERE (`k`) IN "
          "(('1.50'), ('2.00')) GROUP BY `k`) FORMAT JSONEachRow; "
          "SELECT `id`, max((`_pgsink_lsn`, `_pgsink_sequence`)) AS `_pgsink_op` FROM "
          "`pgsink`.`public_rs` WHERE (`id`) IN ((1), (5), (6), (7), (8), (9)) GROUP BY `id` "
          "FORMAT JSONEachRow; ");
    std::string m64 = ",\"_pgsink_lsn\":64,\"_pgsink_sequence\":";
    std::string answered = done ? std::to_string(done->entries.size()) : "none";
    if (done)
        for (const Answer::Entry &e : done->entries)
            answered += " " + std::to_string(e.index) + ": " + e.response;
    check("sent again: answered", answered, "0");
    check("sent again: rows older than the key's are left out",
          std::string(resent_streamed ? "streamed: " : "") + rewritten,
          "{\"k\":2.00" + m64 +
              "8,\"_pgsink_op\":\"update\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n"
              "{\"id\":6,\"v\":\"moved\"" +
              m64 +
              "3,\"_pgsink_op\":\"update\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n"
              "{\"id\":7,\"v\":\"new\"" +
              m64 +
              "4,\"_pgsink_op\":\"insert\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n"
              "{\"id\":8,\"v\":\"b\"" +
              m64 +
              "5,\"_pgsink_op\":\"update\",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":\"t\"}\n");

    /*
     * A damaged spool line whose integer key is not an integer: quoted in
     * the lookup (ClickHouse refuses the comparison), never SQL.
     */
    ClickHouseSink damaged_sink(settings);
    damaged_sink.open({});
    std::string damaged =
        batch.substr(0, batch.find('\n') + 1) +
        "{\"timestamp\":\"t\",\"sequence\":1,\"namespace\":\"public\",\"name\":"
        "\"w\",\"op\":\"update\",\"lsn\":\"0/10\",\"xid\":1,\"before\":null,"
        "\"after\":{\"id\":\"1) OR (1=1\",\"note\":\"b\"},\"unchanged\":[\"big\"]}\n";
    auto damaged_ex = damaged_sink.exchange(damaged, "k");
    std::string damaged_in = "no lookup";
    for (int n = 0; n < 20; n++) {
        HttpRequest r = damaged_ex->next();
        HttpResponse a;
        a.status = 200;
        if (r.body.rfind("SELECT sorting_key", 0) == 0)
            a.body = "id\n";
        if (r.body.find(" FINAL WHERE (") != std::string::npos) {
            damaged_in = r.body.substr(r.body.find(" IN (") + 4);
            damaged_in = damaged_in.substr(0, damaged_in.find(" FORMAT"));
            break;
        }
        if (damaged_ex->answer(a))
            break;
    }
    check("a damaged integer key is quoted in a lookup", damaged_in, "(('1) OR (1=1'))");

    /*
     * Our secrets echoed in an answer (a proxy's error page) are redacted
     * before the excerpt reaches the log, pgsink.sinks or the dead letters.
     */
    ClickHouseSink::Settings secret_settings;
    secret_settings.url = "http://ch-user:url-pass-77@127.0.0.1:1/?password=query-pass-88";
    secret_settings.database = "pgsink";
    secret_settings.password = "header-pass-99";
    ClickHouseSink secret_sink(secret_settings);
    check("scrub",
          secret_sink.scrub("X-ClickHouse-Key: header-pass-99, ch-user:url-pass-77, "
                            "/?password=query-pass-88"),
          "X-ClickHouse-Key: [redacted], [redacted], [redacted]");
    /*
     * libcurl turns the URL's user info into a Basic header (base64 of it,
     * decoded): a proxy echoing the request's headers shows that form; one
     * echoing its parameters shows the password's value alone.
     */
    check("scrub of the Basic header and a lone password",
          secret_sink.scrub("Authorization: Basic Y2gtdXNlcjp1cmwtcGFzcy03Nw==; "
                            "params: password: query-pass-88; pass url-pass-77"),
          "Authorization: Basic [redacted]; params: password: [redacted]; pass [redacted]");
    ClickHouseSink::Settings escaped_settings;
    escaped_settings.url = "http://u:p%40ss-word@127.0.0.1:1/";
    ClickHouseSink escaped_sink(escaped_settings);
    check("scrub of a %-escaped password, and its Basic header",
          escaped_sink.scrub("p@ss-word dTpwQHNzLXdvcmQ="), "[redacted] [redacted]");
    secret_sink.open({});
    auto secret_ex = secret_sink.exchange(batch, "k");
    (void)secret_ex->next();
    HttpResponse echoed;
    echoed.status = 502;
    echoed.body = "proxy error for X-ClickHouse-Key: header-pass-99";
    std::optional<Answer> echo_answer = secret_ex->answer(echoed);
    check("an answer's excerpt is redacted", echo_answer ? echo_answer->response : "no answer",
          "proxy error for X-ClickHouse-Key: [redacted]");
    check("and its message",
          echo_answer && echo_answer->message.find("header-pass-99") == std::string::npos ? "clean"
                                                                                          : "leaks",
          "clean");
    return failures;
}

} // namespace pgsink

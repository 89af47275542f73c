/*
 * clickhouse_sink.cpp: see clickhouse_sink.h.
 *
 * One batch is one exchange, in three phases, each a few requests:
 *   1. DDL: the database, then for each new Schema entry CREATE TABLE IF
 *      NOT EXISTS, ADD COLUMN for every column (one that exists already is
 *      fine: a restart, or an older table), and the view made again (a
 *      ClickHouse view keeps the columns it was made with);
 *   2. reads: for updates that left TOASTed columns unchanged, the current
 *      rows of keys this batch does not write before (FINAL);
 *   3. writes: one INSERT ... FORMAT JSONEachRow per table, a TRUNCATE's
 *      mutation after the rows before it; a batch of one table's changes
 *      that needs nothing else is one INSERT streamed as it is made.
 * Answers: ClickHouse's "Code: N" says what failed. Data a column cannot
 * hold refuses the batch (bisected down to the entry, parked with
 * ClickHouse's message); anything else is retried.
 */
#include <algorithm>
#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "changelog/avro_schema.h"
#include "changelog/entry_head.h"
#include "core/digest.h"
#include "http/redact.h"
#include "sinks/clickhouse_rows.h"
#include "sinks/clickhouse_sink.h"

namespace pgsink
{

using json = nlohmann::json;
namespace ch = clickhouse;

std::string clickhouse_table_name(const std::string &schema, const std::string &table)
{
    /*
     * Never "_pgsink_truncates" (the sink's own table): a schema name is
     * never empty, and the names with a digest end in hex digits.
     */
    std::string name = schema + "_" + table;
    /*
     * <schema>_<table> is ambiguous when the schema has an underscore
     * ("a_b"."c" and "a"."b_c"): then a digest of the two tells them apart.
     */
    if (schema.find('_') != std::string::npos)
        return name.substr(0, 150) + "_" + sha256_hex(schema + "." + table, 8);
    /* ClickHouse keeps a table's name in file names of at most 255 bytes, escaped. */
    size_t escaped = 0;
    for (unsigned char c : name)
        escaped += isalnum(c) || c == '_' ? 1 : 3;
    if (escaped > 180)
        name = name.substr(0, 40) + "_" + sha256_hex(schema + "." + table, 8);
    return name;
}

ClickHouseSink::ClickHouseSink(Settings settings) : settings_(std::move(settings))
{
    /* They go into headers: a line break would add headers of its own. */
    for (const std::string *v : {&settings_.user, &settings_.password})
        if (v->find_first_of("\r\n") != std::string::npos)
            throw SinkError("pgsink.clickhouse_user and pgsink.clickhouse_password may not hold "
                            "line breaks",
                            false);
}

std::string clickhouse_request_url(const std::string &url)
{
    if (url.empty())
        throw SinkError("pgsink.clickhouse_url is not set", false);
    size_t scheme = url.find("://");
    std::string lower = url.substr(0, scheme == std::string::npos ? 0 : scheme);
    for (char &c : lower)
        c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    if (scheme == std::string::npos || (lower != "http" && lower != "https"))
        throw SinkError("pgsink.clickhouse_url must start with http:// or https:// (for example "
                        "http://127.0.0.1:8123)",
                        false);
    if (url.find('#') != std::string::npos)
        throw SinkError("pgsink.clickhouse_url may not hold a fragment (#...): remove it", false);
    if (url.find_first_of(" \t\r\n") != std::string::npos)
        throw SinkError("pgsink.clickhouse_url may not hold spaces or line breaks", false);
    size_t host = scheme + 3;
    size_t path = url.find_first_of("/?", host);
    if (path == host || url.find('@', host) == host)
        throw SinkError("pgsink.clickhouse_url has no host (for example http://127.0.0.1:8123)",
                        false);
    /*
     * A path is kept (ClickHouse behind a proxy, at a path of its own); a
     * query string too (ClickHouse settings), but for the parameter that is
     * a statement: ClickHouse would put it before each of pgsink's.
     */
    size_t q = url.find('?', host);
    if (q != std::string::npos) {
        size_t at = q + 1;
        while (at <= url.size()) {
            size_t amp = url.find('&', at);
            if (amp == std::string::npos)
                amp = url.size();
            std::string param = url.substr(at, amp - at);
            std::string name = param.substr(0, param.find('='));
            if (name == "query")
                throw SinkError("pgsink.clickhouse_url may not have a query parameter: pgsink "
                                "sends its own statements (settings such as "
                                "?max_insert_block_size=... are fine)",
                                false);
            at = amp + 1;
        }
    }
    if (path == std::string::npos)
        return url + "/";
    if (url[path] == '?')
        return url.substr(0, path) + "/" + url.substr(path);
    return url;
}

bool ClickHouseSink::open(const Resume &)
{
    request_url_ = clickhouse_request_url(settings_.url);
    /* The sink learns each table's columns from the Schema entries: told again at every start. */
    tables_.clear();
    database_ready_ = false;
    server_known_ = false; /* asked again: it may have been upgraded */
    return true;
}

std::string ClickHouseSink::describe() const
{
    return "clickhouse " + url_for_messages(settings_.url) + " database " + settings_.database;
}

std::string ClickHouseSink::state() const
{
    return "clickhouse " + sha256_hex(settings_.url + "\n" + settings_.database, 16);
}

HttpRequest ClickHouseSink::query(std::string sql) const
{
    HttpRequest r;
    r.url = request_url_;
    r.body = std::move(sql);
    r.headers = {"Content-Type: text/plain; charset=utf-8"};
    if (!settings_.user.empty() || !settings_.password.empty()) {
        r.headers.push_back("X-ClickHouse-User: " +
                            (settings_.user.empty() ? std::string("default") : settings_.user));
        r.headers.push_back("X-ClickHouse-Key: " + settings_.password);
    }
    return r;
}

std::string ClickHouseSink::scrub(std::string text) const
{
    std::vector<std::string> secrets = {settings_.password};
    add_url_secrets(settings_.url, true, secrets);
    return redact(std::move(text), secrets);
}

/* The columns an INSERT writes for c, unquoted: its value (or bits), and an array's NULL flag. */
static std::vector<std::string> insert_names(const ch::Column &c)
{
    std::vector<std::string> names = {ch::insert_column(c)};
    if (c.array)
        names.push_back(ch::null_flag_name(c));
    if (c.datetime64)
        names.push_back(ch::datetime64_name(c));
    return names;
}

/* Text inside a ClickHouse '...' literal. */
static std::string sql_string(const std::string &text)
{
    return ch::escaped(text, '\'');
}

/* ------------------------------------------------------------ the exchange */

/* A row in insert form: each insert column's text (unquoted name -> JSON text). Slow path only. */
using Cells = std::map<std::string, std::string>;

class ClickHouseExchange final : public HttpSink::Exchange
{
  public:
    ClickHouseExchange(ClickHouseSink &sink, std::string_view lines, bool resent = false);
    ~ClickHouseExchange() override
    {
        /* Their memory serves the next exchange (one at a time): no fresh pages for each batch. */
        entries_.clear();
        rows_.clear();
        sink_.spare_entries_.swap(entries_);
        sink_.spare_rows_.swap(rows_);
    }
    HttpRequest next() override;
    std::optional<Answer> answer(const HttpResponse &response) override;

  private:
    struct Step {
        std::string sql;
        bool exists_ok = false; /* "already exists" (Code 44, 57) is fine */
        std::string lookup;     /* a read of current rows of this namespace */
        const ClickHouseSink::Table *installs = nullptr; /* DDL done: the sink knows it */
        std::string installs_ns;
        std::string expect_key;     /* the table's sorting key must be this ("": no check) */
        size_t table = 0;           /* ... of new_tables_[table] */
        bool mutation_wait = false; /* counts mutations not done: asked again until none */
        bool of_table = false;      /* a DDL step of new_tables_[table] */
        bool check_types = false;   /* reads the table's column types (system.columns) */
        bool data = false;          /* an INSERT: its body is handed over, not copied */
        bool stream = false;        /* an INSERT whose rows are made as it is sent (stream()) */
        bool creates_database = false;
        bool version = false;        /* asks the server's version (SELECT version()) */
        bool reads_truncate = false; /* reads new_tables_[table]'s latest truncate position */
        /* Records a truncate of this namespace at (truncate_lsn, truncate_seq) (_pgsink_truncates).
         */
        std::string truncate_ns;
        uint64_t truncate_lsn = 0, truncate_seq = 0;
        /* A lookup: the key tuples it reads (split in two if the answer is too big). */
        std::vector<std::string> tuples;
        std::vector<std::string> tuple_keys; /* ... and the keys they are (key_of()) */
        /* A lookup of the keys' greatest (lsn, sequence) only (resent_: read_positions()). */
        bool positions = false;
    };
    /* What the writes need of a table version, made once per exchange. */
    struct Prepared {
        std::vector<std::string> value_key; /* per column: "\"<insert column>\":" */
        std::vector<std::string> flag_key;  /* per array column: "\"<null flag>\":" */
        std::vector<std::string> dt64_key;  /* per timestamp with DateTime64: "\"<name>__dt64\":" */
        std::vector<int> key_column;        /* per key name: its column's index, or -1 */
    };
    void plan_ddl();
    void plan_reads();
    void plan_writes();
    const ClickHouseSink::Table *streamable();
    size_t stream(char *buf, size_t max);
    void stream_entry(size_t i, std::string &out);
    std::string db() const { return ch::quote(sink_.settings_.database); }
    std::string truncates() const { return db() + ".`_pgsink_truncates`"; }
    /* A truncate position, as (lsn, sequence). */
    struct Cut {
        uint64_t lsn = 0, seq = 0;
    };
    bool superseded(std::map<std::string, Cut> &cut, const std::string &ns,
                    const ClickHouseSink::Table &t, const ch::Entry &e);
    std::string table_ref(const ClickHouseSink::Table &t) const
    {
        return db() + "." + ch::quote(t.name);
    }
    const Prepared &prepared(const ClickHouseSink::Table &t);
    const std::string &entry_ns(const ch::Entry &e);
    /* The members of an entry's after (or before) row. */
    ch::Row row(const ch::Entry &e, bool after) const
    {
        return after ? ch::Row{rows_.data() + e.after_at, e.after_n}
                     : ch::Row{rows_.data() + e.before_at, e.before_n};
    }
    std::string key_of(const ClickHouseSink::Table &t, ch::Row m);
    std::string key_tuple(const ClickHouseSink::Table &t, ch::Row m);
    std::string key_of(const ClickHouseSink::Table &t, const Cells &row);
    Cells cells_of(const ClickHouseSink::Table &t, ch::Row m);
    void write_row(std::string &out, const ClickHouseSink::Table &t, ch::Row m, bool tombstone,
                   const ch::Entry &e);
    void write_cells(std::string &out, const Cells &row, bool deleted, const ch::Entry &e);
    void write_meta(std::string &out, bool deleted, const ch::Entry &e);
    std::optional<Answer> advance();
    void check_types(const Step &step, const std::string &body);
    bool read_current(const Step &step, const std::string &body);
    void read_positions(const Step &step, const std::string &body);
    const ClickHouseSink::Table *
    in_effect(std::map<std::string, const ClickHouseSink::Table *> &now, size_t i,
              const std::string &ns);

    ClickHouseSink &sink_;
    /*
     * Parked entries sent again, out of their order: rows older than the
     * key's greatest (lsn, sequence) in the table (latest_) are left out.
     */
    bool resent_ = false;
    /*
     * By namespace + '\x1e' + key: the greatest position the table holds
     * (resent_; else only the keys of updates that carry values, in a
     * batch that reads rows back: holds()).
     */
    std::unordered_map<std::string, Cut> latest_;
    bool stale(const std::string &nskey, const ch::Entry &e) const;
    bool holds(const std::string &nskey, const ch::Entry &e) const;
    void wrote(const std::string &nskey, const ch::Entry &e);
    std::vector<ch::Entry> entries_;
    std::map<size_t, json> schemas_; /* the Schema entries' schemas, parsed, by entry index */
    bool unchanged_ = false;         /* may an update leave TOASTed values unchanged? */
    bool odd_ = false;               /* an entry's head is not as pgsink writes it */
    bool scanned_ = false;           /* entries_ read whole (scan_all()) */
    void scan_all();
    std::vector<ClickHouseSink::Table> new_tables_; /* made by this batch's Schema entries */
    std::vector<std::string> new_ns_;
    std::vector<Step> steps_;
    size_t at_ = 0;
    int phase_ = 0; /* 0: DDL, 1: reads, 2: writes */
    /* Current rows read (phase 2), by namespace and key. */
    std::map<std::string, std::unordered_map<std::string, Cells>> current_;
    /* Keys whose current row is too big to read back (lookup_row_answer): their updates are parked.
     */
    std::set<std::string> too_big_;
    std::vector<Answer::Entry> refused_;
    /* Entries that cannot be read (malformed): refused for good, with why (by entry index). */
    std::map<size_t, std::string> unreadable_;
    void unreadable(size_t i, const std::exception &e);
    std::set<std::string> sources_; /* namespace + key of rows unchanged values come from */
    std::map<std::string, ClickHouseSink::Table> before_; /* the sink's tables before the batch */
    std::map<size_t, size_t> schema_at_; /* entry index of a Schema entry -> new_tables_ index */
    std::map<const ClickHouseSink::Table *, Prepared> prepared_;
    std::map<std::string, std::set<std::string>> lookup_cols_; /* columns read back, by namespace */
    /* entry_ns(): the last few (namespace, name) pairs seen, raw, and their namespace */
    struct NsCache {
        std::string ns_raw, name_raw, ns;
    };
    std::vector<NsCache> ns_cache_;
    std::vector<ch::Member> rows_; /* the members of the entries' rows (see ch::Entry) */
    std::string scratch_;          /* scratch of encode_value() */
    size_t lines_size_ = 0;
    /* A streamed INSERT (stream()): its table, the next entry, the bytes made and not yet sent. */
    const ClickHouseSink::Table *stream_table_ = nullptr;
    std::string stream_header_;
    size_t stream_at_ = 0;
    std::string stream_buf_;
    size_t stream_sent_ = 0;
    bool stream_cut_ = false; /* the streamed table was truncated: entries are checked */
    std::map<size_t, std::string> stream_refused_; /* refused while streaming (once each) */
    int mutation_polls_ = 0;
    static constexpr int kMutationPolls = 600; /* a minute of 0.1 s waits */
};

ClickHouseExchange::ClickHouseExchange(ClickHouseSink &sink, std::string_view lines, bool resent)
    : sink_(sink), resent_(resent)
{
    size_t at = 0;
    lines_size_ = lines.size();
    entries_.swap(sink_.spare_entries_);
    rows_.swap(sink_.spare_rows_);
    entries_.reserve(lines.size() / 256 + 16); /* entries are rarely shorter */
    /*
     * The heads only, here: a batch whose INSERT is streamed reads each
     * line whole as it is sent (stream()), others before their reads and
     * writes (scan_all()).
     */
    static const std::string_view kUnchanged = "\"unchanged\":";
    while (at < lines.size()) {
        size_t nl = lines.find('\n', at);
        if (nl == std::string_view::npos)
            nl = lines.size();
        std::string_view line = lines.substr(at, nl - at);
        size_t index = entries_.size();
        try {
            entries_.push_back(ch::scan_entry(line, rows_, true));
            if (!entries_.back().schema.empty()) {
                json s = json::parse(entries_.back().schema);
                if (!s.is_object() || !s.contains("namespace") || !s["namespace"].is_string() ||
                    s["namespace"].get<std::string>().find('.') == std::string::npos ||
                    !s.contains("fields") || !s["fields"].is_array() || !s.contains("key") ||
                    !s["key"].is_array() ||
                    !std::all_of(s["fields"].begin(), s["fields"].end(),
                                 [](const json &f) {
                                     return f.is_object() && f.contains("name") &&
                                            f["name"].is_string() &&
                                            (!f.contains("pg_name") || f["pg_name"].is_string()) &&
                                            (!f.contains("pg_type") || f["pg_type"].is_string());
                                 }) ||
                    !std::all_of(s["key"].begin(), s["key"].end(),
                                 [](const json &k) { return k.is_string(); }))
                    throw std::runtime_error("a Schema entry without a namespace, fields or key");
                schemas_[index] = std::move(s);
            }
        } catch (const std::exception &ex) {
            /* A line that is not a changelog entry (a damaged spool): it alone is refused. */
            entries_.resize(index);
            entries_.emplace_back();
            entries_.back().line = line;
            unreadable(index, ex);
        }
        const ch::Entry &e = entries_.back();
        if (e.odd || (e.op.empty() && e.schema.empty()))
            odd_ = true; /* not as pgsink writes entries: read whole, not streamed */
        /* Maybe an "unchanged" list (or those bytes in a value): rows may be read back. */
        if (!unchanged_ &&
            memmem(line.data(), line.size(), kUnchanged.data(), kUnchanged.size()) != nullptr)
            unchanged_ = true;
        at = nl + 1;
    }
    if (!sink_.server_known_) {
        /* Once per start: the types a column gets depend on the server's version. */
        Step version{"SELECT version() FORMAT TSVRaw", false, "", nullptr, ""};
        version.version = true;
        steps_.push_back(version);
        return;
    }
    plan_ddl();
    if (steps_.empty())
        steps_.push_back(Step{"SELECT 1", false, "", nullptr, ""}); /* nothing to write */
}

/*
 * Entry i cannot be read: it is refused for good (parked with the reason)
 * and left out, instead of failing the batch at every attempt, which would
 * hold the cursor for ever.
 */
void ClickHouseExchange::unreadable(size_t i, const std::exception &e)
{
    entries_[i].schema = {};
    entries_[i].op = {};
    unreadable_.emplace(i, std::string("pgsink could not read this entry (") + e.what() +
                               "): it is not a changelog entry as pgsink writes them");
}

/* Phase 1: the database and the tables of new Schema entries (and of tables dropped meanwhile). */
void ClickHouseExchange::plan_ddl()
{
    if (!sink_.database_ready_) {
        Step create{"CREATE DATABASE IF NOT EXISTS " + db(), true, "", nullptr, ""};
        create.creates_database = true;
        steps_.push_back(create);
        /* Where each table was last truncated (see ClickHouseSink::Table::truncated_lsn). */
        steps_.push_back(Step{"CREATE TABLE IF NOT EXISTS " + truncates() +
                                  " (`table_name` String, `lsn` UInt64, `sequence` UInt64, "
                                  "`recorded_at` DateTime DEFAULT now()) ENGINE = MergeTree "
                                  "ORDER BY (`table_name`, `lsn`, `sequence`)",
                              true, "", nullptr, ""});
    }
    before_ = sink_.tables_; /* the tables as they were before this batch's Schema entries */
    for (size_t ei = 0; ei < entries_.size(); ei++) {
        if (entries_[ei].schema.empty())
            continue;
        const json &s = schemas_.at(ei);
        std::string ns = s.value("namespace", "");
        size_t dot = ns.find('.');
        ClickHouseSink::Table t;
        t.signature = s["fields"].dump() + s["key"].dump();
        auto known = sink_.tables_.find(ns);
        if (known != sink_.tables_.end() && known->second.signature == t.signature)
            continue;
        t.name = clickhouse_table_name(ns.substr(0, dot), ns.substr(dot + 1));
        for (const json &k : s["key"])
            t.key.push_back(k.get<std::string>());
        for (const json &f : s["fields"]) {
            std::string name = f.contains("pg_name") ? f["pg_name"].get<std::string>()
                                                     : f["name"].get<std::string>();
            bool is_key = std::find(t.key.begin(), t.key.end(), name) != t.key.end();
            t.columns.push_back(
                ch::column_for(name, f.value("pg_type", ""), is_key, sink_.server_));
        }
        schema_at_[ei] = new_tables_.size(); /* from this entry on, the table is this one */
        new_tables_.push_back(std::move(t));
        new_ns_.push_back(ns);
    }
    /* Tables ClickHouse lost (dropped by someone): made again from what the sink knows. */
    for (auto &[ns, known] : sink_.tables_)
        if (!known.created && std::find(new_ns_.begin(), new_ns_.end(), ns) == new_ns_.end()) {
            new_tables_.push_back(known);
            new_ns_.push_back(ns);
        }
    for (size_t i = 0; i < new_tables_.size(); i++) {
        new_tables_[i].created = true;
        new_tables_[i].refused.clear();
        const ClickHouseSink::Table &t = new_tables_[i];
        size_t first = steps_.size();
        std::string cols, order;
        for (const ch::Column &c : t.columns)
            for (const std::string &d : ch::column_ddl(c))
                cols += d + ", ";
        for (const std::string &k : t.key)
            order += (order.empty() ? "" : ", ") + ch::quote(ch::column_name(k));
        cols += "`_pgsink_lsn` UInt64, `_pgsink_sequence` UInt64, `_pgsink_op` String, "
                "`_pgsink_deleted` UInt8, `_pgsink_timestamp` String";
        /*
         * Without a key no row replaces another: every change is kept, one row
         * per (lsn, sequence), so that an INSERT sent again (a retry after a
         * timeout, a replay from the cursor) adds nothing once merged.
         */
        std::string engine = t.key.empty()
                                 ? "ReplacingMergeTree ORDER BY (`_pgsink_lsn`, `_pgsink_sequence`)"
                                 : "ReplacingMergeTree(`_pgsink_lsn`) ORDER BY (" + order + ")";
        steps_.push_back(Step{"CREATE TABLE IF NOT EXISTS " + table_ref(t) + " (" + cols +
                                  ") ENGINE = " + engine,
                              true, "", nullptr, ""});
        /* A table made earlier with another key would mix rows silently: checked. */
        if (!t.key.empty()) {
            std::string want;
            for (const std::string &k : t.key)
                want += (want.empty() ? "" : ",") + ch::column_name(k);
            Step check{"SELECT sorting_key FROM system.tables WHERE database = '" +
                           sql_string(sink_.settings_.database) + "' AND name = '" +
                           sql_string(t.name) + "' FORMAT TSVRaw",
                       false, "", nullptr, ""};
            check.expect_key = want;
            check.table = i;
            steps_.push_back(check);
        }
        /* A table made earlier (a restart, a new column): every column, those it has are fine. */
        for (const ch::Column &c : t.columns)
            for (const std::string &d : ch::column_ddl(c))
                steps_.push_back(Step{"ALTER TABLE " + table_ref(t) + " ADD COLUMN " + d, true, "",
                                      nullptr, ""});
        std::string view = db() + "." + ch::quote(t.name + "_current");
        /*
         * Columns under their own names, also renamed ones (ch::column_name()),
         * but where the name is that of a column the view reads (ClickHouse
         * would take the alias for it): then under their ClickHouse names,
         * which never meet.
         */
        std::set<std::string> read;
        for (const ch::Column &c : t.columns) {
            read.insert(c.ch_name);
            if (c.array)
                read.insert(ch::null_flag_name(c));
            if (c.datetime64)
                read.insert(ch::datetime64_name(c));
        }
        std::string select;
        bool shadows = false; /* an alias is the name of a helper column the filter reads */
        for (const ch::Column &c : t.columns) {
            bool alias = c.ch_name != c.name && !read.count(c.name);
            shadows =
                shadows || (alias && (c.name == "_pgsink_lsn" || c.name == "_pgsink_sequence" ||
                                      c.name == "_pgsink_deleted"));
            select += (select.empty() ? "" : ", ") + ch::quote(c.ch_name) +
                      (alias ? " AS " + ch::quote(c.name) : "") +
                      (c.array ? ", " + ch::quote(ch::null_flag_name(c)) : "") +
                      (c.datetime64 ? ", " + ch::quote(ch::datetime64_name(c)) : "");
        }
        steps_.push_back(Step{"DROP TABLE IF EXISTS " + view, true, "", nullptr, ""});
        /*
         * The latest version of each key (FINAL: the filter applies after it),
         * not deleted, and not before the table's latest truncate: rows
         * written before the sink left such changes out (a dead letter
         * retried after the truncate) are not shown either. max() of no
         * truncate is (0, 0).
         */
        std::string since = "(`_pgsink_lsn`, `_pgsink_sequence`) >= (SELECT max((`lsn`, "
                            "`sequence`)) FROM " +
                            truncates() + " WHERE `table_name` = '" + sql_string(t.name) + "')";
        std::string rows = table_ref(t) + " FINAL WHERE " +
                           (t.key.empty() ? "" : "`_pgsink_deleted` = 0 AND ") + since;
        /*
         * ClickHouse takes an alias of the select list for the column of that
         * name in WHERE: where a captured column is shown as _pgsink_lsn (its
         * own name), the rows are filtered in a subquery, which has no alias.
         */
        Step last{"CREATE VIEW " + view + " AS SELECT " + select + " FROM " +
                      (shadows ? "(SELECT * FROM " + rows + ")" : rows),
                  true, "", &t, new_ns_[i]};
        steps_.push_back(last);
        /* A column whose type changed in PostgreSQL keeps its old one here: checked. */
        Step types{"SELECT name, type FROM system.columns WHERE database = '" +
                       sql_string(sink_.settings_.database) + "' AND table = '" +
                       sql_string(t.name) + "' FORMAT TSVRaw",
                   false, "", nullptr, ""};
        types.check_types = true;
        steps_.insert(steps_.end() - 1, types);
        /* Its latest truncate, kept in ClickHouse: changes before it are left out. */
        Step cut{"SELECT `lsn`, `sequence` FROM " + truncates() + " WHERE `table_name` = '" +
                     sql_string(t.name) +
                     "' ORDER BY `lsn` DESC, `sequence` DESC LIMIT 1 FORMAT TSVRaw",
                 false, "", nullptr, ""};
        cut.reads_truncate = true;
        steps_.insert(steps_.end() - 1, cut);
        for (size_t k = first; k < steps_.size(); k++) {
            steps_[k].of_table = true;
            steps_[k].table = i;
        }
    }
    if (steps_.empty())
        plan_reads();
}

/*
 * The table of entry i's namespace as it is at that entry: a Schema entry
 * earlier in the batch changes it from there on (a column added or dropped,
 * a new key); before any, as it was before the batch. nullptr: unknown.
 */
const ClickHouseSink::Table *
ClickHouseExchange::in_effect(std::map<std::string, const ClickHouseSink::Table *> &now, size_t i,
                              const std::string &ns)
{
    auto schema = schema_at_.find(i);
    if (schema != schema_at_.end()) {
        now[ns] = &new_tables_[schema->second];
        return nullptr;
    }
    auto it = now.find(ns);
    if (it != now.end())
        return it->second;
    auto was = before_.find(ns);
    if (was == before_.end())
        return now[ns] = nullptr; /* no Schema entry yet */
    if (!was->second.created)
        /* Made again in this batch (ClickHouse lost it): that version. */
        for (size_t k = new_ns_.size(); k-- > 0;)
            if (new_ns_[k] == ns)
                return now[ns] = &new_tables_[k];
    return now[ns] = &was->second;
}

const ClickHouseExchange::Prepared &ClickHouseExchange::prepared(const ClickHouseSink::Table &t)
{
    auto it = prepared_.find(&t);
    if (it != prepared_.end())
        return it->second;
    Prepared p;
    for (const ch::Column &c : t.columns) {
        std::string k;
        raw_json::append_string(k, ch::insert_column(c));
        p.value_key.push_back(k + ":");
        k.clear();
        if (c.array)
            raw_json::append_string(k, ch::null_flag_name(c));
        p.flag_key.push_back(c.array ? k + ":" : "");
        k.clear();
        if (c.datetime64)
            raw_json::append_string(k, ch::datetime64_name(c));
        p.dt64_key.push_back(c.datetime64 ? k + ":" : "");
    }
    for (const std::string &name : t.key) {
        int at = -1;
        for (size_t i = 0; i < t.columns.size(); i++)
            if (t.columns[i].name == name)
                at = static_cast<int>(i);
        p.key_column.push_back(at);
    }
    return prepared_.emplace(&t, std::move(p)).first->second;
}

/*
 * The table an entry is about, as its Schema entry names it: the Schema's
 * namespace holds Avro names, made from PostgreSQL's by avro_name().
 */
const std::string &ClickHouseExchange::entry_ns(const ch::Entry &e)
{
    for (const NsCache &c : ns_cache_)
        if (ch::same(c.ns_raw, e.ns) && ch::same(c.name_raw, e.name))
            return c.ns;
    std::string ns = e.ns.empty() ? "" : ch::string_content(e.ns);
    std::string name = e.name.empty() ? "" : ch::string_content(e.name);
    if (ns_cache_.size() >= 16)
        ns_cache_.erase(ns_cache_.begin());
    ns_cache_.push_back(
        NsCache{std::string(e.ns), std::string(e.name), avro_name(ns) + "." + avro_name(name)});
    return ns_cache_.back().ns;
}

/* The key of a changelog row, as one string (see ch::append_key_text()). */
std::string ClickHouseExchange::key_of(const ClickHouseSink::Table &t, ch::Row m)
{
    const Prepared &p = prepared(t);
    std::string k;
    for (int ci : p.key_column) {
        if (ci < 0) {
            k += "null\x1f";
            continue;
        }
        const ch::Column &c = t.columns[static_cast<size_t>(ci)];
        std::string_view raw = ch::member_value(m, c.name, static_cast<size_t>(ci));
        if (raw.empty())
            raw = "null";
        ch::encode_value(c, raw, scratch_, [&](int slot, std::string_view text) {
            if (slot == 0)
                ch::append_key_text(k, text);
        });
    }
    return k;
}

/* The key of a row in insert form (encoded, or read back from ClickHouse). */
std::string ClickHouseExchange::key_of(const ClickHouseSink::Table &t, const Cells &row)
{
    const Prepared &p = prepared(t);
    std::string k;
    for (int ci : p.key_column) {
        auto v = ci < 0 ? row.end() : row.find(ch::insert_column(t.columns[size_t(ci)]));
        ch::append_key_text(k, v == row.end() ? std::string_view("null") : v->second);
    }
    return k;
}

/* Is text an integer ([-]digits) or null, safe to put in SQL unquoted? */
static bool integer_literal(std::string_view text)
{
    if (text == "null")
        return true;
    size_t i = !text.empty() && text[0] == '-' ? 1 : 0;
    if (i == text.size())
        return false;
    for (; i < text.size(); i++)
        if (text[i] < '0' || text[i] > '9')
            return false;
    return true;
}

/* The key of a changelog row as a ClickHouse tuple literal, for a lookup's IN. */
std::string ClickHouseExchange::key_tuple(const ClickHouseSink::Table &t, ch::Row source)
{
    std::string tuple;
    for (const std::string &name : t.key) {
        for (size_t ci = 0; ci < t.columns.size(); ci++) {
            const ch::Column &c = t.columns[ci];
            if (c.name != name)
                continue;
            std::string_view raw = ch::member_value(source, c.name, ci);
            std::string lit;
            ch::encode_value(
                c, raw.empty() ? "null" : raw, scratch_, [&](int slot, std::string_view text) {
                    /* The value itself: a JSON string unescaped. */
                    if (slot == 0)
                        lit = !text.empty() && text[0] == '"' ? ch::string_content(text)
                                                              : std::string(text);
                });
            std::string quoted = "'" + sql_string(lit) + "'";
            /* A decimal from text: a number literal is a Float64, which IN refuses. */
            if (c.kind == ch::Kind::string || c.kind == ch::Kind::decimal)
                lit = quoted;
            else if (c.kind == ch::Kind::uuid)
                lit = "toUUID(" + quoted + ")";
            else if (c.kind == ch::Kind::boolean)
                lit = lit == "true" ? "1" : "0";
            else if (!integer_literal(lit))
                lit = quoted; /* only a damaged spool: ClickHouse refuses it, never runs it */
            tuple += (tuple.empty() ? "" : ", ") + lit;
        }
    }
    return "(" + tuple + ")";
}

/* A changelog row in insert form (the slow path: rows that unchanged values come from or go to). */
Cells ClickHouseExchange::cells_of(const ClickHouseSink::Table &t, ch::Row m)
{
    Cells row;
    for (size_t ci = 0; ci < t.columns.size(); ci++) {
        const ch::Column &c = t.columns[ci];
        std::string_view raw = ch::member_value(m, c.name, ci);
        ch::encode_value(c, raw, scratch_, [&](int slot, std::string_view text) {
            row[slot == 0   ? ch::insert_column(c)
                : slot == 1 ? ch::null_flag_name(c)
                            : ch::datetime64_name(c)] = std::string(text);
        });
    }
    return row;
}

void ClickHouseExchange::write_meta(std::string &out, bool deleted, const ch::Entry &e)
{
    char num[24];
    out += "\"_pgsink_lsn\":";
    out.append(num,
               static_cast<size_t>(std::to_chars(num, num + sizeof(num), e.lsn_value).ptr - num));
    out += ",\"_pgsink_sequence\":";
    bool digits = !e.sequence.empty() && e.sequence.size() < 21 &&
                  std::all_of(e.sequence.begin(), e.sequence.end(),
                              [](char ch) { return ch >= '0' && ch <= '9'; });
    out.append(digits ? e.sequence : std::string_view("0"));
    out += ",\"_pgsink_op\":";
    raw_json::append_string(out, e.op);
    out += deleted ? ",\"_pgsink_deleted\":1,\"_pgsink_timestamp\":"
                   : ",\"_pgsink_deleted\":0,\"_pgsink_timestamp\":";
    out.append(!e.timestamp.empty() && e.timestamp[0] == '"' ? e.timestamp
                                                             : std::string_view("\"\""));
    out += "}\n";
}

/*
 * The hot path: a changelog row straight into the INSERT's body as a
 * JSONEachRow line. A column not in the row is left out (ClickHouse's
 * default: NULL). tombstone: a delete's row, the key's values and every
 * other value NULL (an array: empty, its NULL flag set).
 */
void ClickHouseExchange::write_row(std::string &out, const ClickHouseSink::Table &t, ch::Row m,
                                   bool tombstone, const ch::Entry &e)
{
    const Prepared &p = prepared(t);
    out.push_back('{');
    for (size_t ci = 0; ci < t.columns.size(); ci++) {
        const ch::Column &c = t.columns[ci];
        std::string_view raw;
        if (!tombstone) {
            raw = ch::member_value(m, c.name, ci);
        } else if (c.array) {
            raw = "null";
        } else {
            raw = c.key ? ch::member_value(m, c.name, ci) : std::string_view();
            if (raw.empty())
                raw = "null";
        }
        ch::encode_value(c, raw, scratch_, [&](int slot, std::string_view text) {
            out += slot == 0 ? p.value_key[ci] : slot == 1 ? p.flag_key[ci] : p.dt64_key[ci];
            out.append(text);
            out.push_back(',');
        });
    }
    write_meta(out, tombstone, e);
}

void ClickHouseExchange::write_cells(std::string &out, const Cells &row, bool deleted,
                                     const ch::Entry &e)
{
    out.push_back('{');
    for (const auto &[name, text] : row) {
        raw_json::append_string(out, name);
        out.push_back(':');
        out += text;
        out.push_back(',');
    }
    write_meta(out, deleted, e);
}

/* Every entry read whole, rows included (the constructor read the heads). */
void ClickHouseExchange::scan_all()
{
    if (scanned_)
        return;
    rows_.clear();
    rows_.reserve(lines_size_ / 32 + 16); /* members are rarely shorter */
    for (size_t i = 0; i < entries_.size(); i++) {
        if (unreadable_.count(i))
            continue;
        try {
            entries_[i] = ch::scan_rest(entries_[i], rows_);
        } catch (const std::exception &ex) {
            unreadable(i, ex);
        }
    }
    scanned_ = true;
}

static uint64_t sequence_of(const ch::Entry &e)
{
    uint64_t seq = 0;
    std::from_chars(e.sequence.data(), e.sequence.data() + e.sequence.size(), seq);
    return seq;
}

/* Is e before (lsn, seq)? */
static bool before_position(const ch::Entry &e, uint64_t lsn, uint64_t seq)
{
    return e.lsn_value < lsn || (e.lsn_value == lsn && sequence_of(e) < seq);
}

/*
 * Is e (a change of table t, namespace ns) before the table's latest
 * truncate, as known at this point of the batch (cut, from t's at first)?
 * Then it changes nothing: the truncate removed it (a dead letter sent
 * again, a rewind). A truncate moves the cut; one at the cut is applied
 * again (its mutation may not have run).
 */
bool ClickHouseExchange::superseded(std::map<std::string, Cut> &cut, const std::string &ns,
                                    const ClickHouseSink::Table &t, const ch::Entry &e)
{
    Cut &c = cut.try_emplace(ns, Cut{t.truncated_lsn, t.truncated_seq}).first->second;
    bool before = before_position(e, c.lsn, c.seq);
    if (!before && e.op == "truncate")
        c = Cut{e.lsn_value, sequence_of(e)};
    return before;
}

/* An entry's "unchanged" column names. */
static std::vector<std::string> unchanged_of(const ch::Entry &e)
{
    std::vector<std::string> names;
    if (e.unchanged.empty() || e.unchanged == "null")
        return names;
    for (const json &u : json::parse(e.unchanged))
        names.push_back(u.get<std::string>());
    return names;
}

/*
 * Decimals are read as text (a double would lose digits): toString(x) AS x.
 * ClickHouse takes such an alias for the column x everywhere in the query,
 * the WHERE and GROUP BY too (where it would compare text with the key's
 * literal, and fail): then the rows are read in a subquery, and the outer
 * query only turns the decimals into text.
 */
static std::string decimals_as_text(const ClickHouseSink::Table &t,
                                    const std::vector<std::string> &names, const std::string &inner)
{
    bool decimal = false;
    std::string cols;
    for (const std::string &name : names) {
        bool dec = false;
        for (const ch::Column &c : t.columns)
            dec = dec || (c.kind == ch::Kind::decimal && ch::quote(c.ch_name) == name);
        decimal = decimal || dec;
        cols += (cols.empty() ? "" : ", ") + (dec ? "toString(" + name + ") AS " + name : name);
    }
    if (!decimal)
        return inner + " FORMAT JSONEachRow";
    return "SELECT " + cols + " FROM (" + inner + ") FORMAT JSONEachRow";
}

/* names, ", " between. */
static std::string listed(const std::vector<std::string> &names)
{
    std::string out;
    for (const std::string &n : names)
        out += (out.empty() ? "" : ", ") + n;
    return out;
}

/* A lookup of current rows of table t, for the key tuples given. */
static std::string lookup_sql(const std::string &table_ref, const ClickHouseSink::Table &t,
                              const std::set<std::string> &wanted,
                              const std::vector<std::string> &tuples)
{
    std::vector<std::string> cols, keys;
    std::string in;
    /* The key and the unchanged columns only. */
    for (const ch::Column &c : t.columns) {
        if (!c.key && !wanted.count(c.name))
            continue;
        cols.push_back(ch::insert_name(c));
        if (c.array)
            cols.push_back(ch::quote(ch::null_flag_name(c)));
        if (c.datetime64)
            cols.push_back(ch::quote(ch::datetime64_name(c)));
    }
    for (const std::string &k : t.key)
        for (const ch::Column &c : t.columns)
            if (c.name == k) /* a float key is compared by its bits, as the literal is */
                keys.push_back(ch::insert_name(c));
    for (const std::string &tuple : tuples)
        in += (in.empty() ? "" : ", ") + tuple;
    /*
     * FINAL: the latest version of each key. A deleted one is read too,
     * to be told apart: a tombstone's values are no values.
     */
    cols.push_back("`_pgsink_deleted`");
    return decimals_as_text(t, cols,
                            "SELECT " + listed(cols) + " FROM " + table_ref + " FINAL WHERE (" +
                                listed(keys) + ") IN (" + in + ")");
}

/*
 * The greatest (lsn, sequence) the table holds for each key given, deleted
 * rows included, as "_pgsink_op":["<lsn>","<sequence>"] beside the key
 * (entries sent again, out of order: see ClickHouseSink::exchange_resent();
 * and updates that carry values, to tell a replay: holds()). Without
 * FINAL: every row not yet merged counts. The alias is a helper column's
 * name (no captured column has it in ClickHouse) that the query reads
 * nowhere else.
 */
static std::string positions_sql(const std::string &table_ref, const ClickHouseSink::Table &t,
                                 const std::vector<std::string> &tuples)
{
    std::vector<std::string> keys;
    std::string in;
    for (const std::string &k : t.key)
        for (const ch::Column &c : t.columns)
            if (c.name == k) /* a float by its bits, as the literal is */
                keys.push_back(ch::insert_name(c));
    for (const std::string &tuple : tuples)
        in += (in.empty() ? "" : ", ") + tuple;
    std::vector<std::string> cols = keys;
    cols.push_back("`_pgsink_op`");
    return decimals_as_text(t, cols,
                            "SELECT " + listed(keys) +
                                ", max((`_pgsink_lsn`, `_pgsink_sequence`)) AS `_pgsink_op` FROM " +
                                table_ref + " WHERE (" + listed(keys) + ") IN (" + in +
                                ") GROUP BY " + listed(keys));
}

/* Phase 2: current rows for updates that left TOASTed columns unchanged. */
void ClickHouseExchange::plan_reads()
{
    phase_ = 1;
    if (!unchanged_ && !resent_) {
        plan_writes();
        return;
    }
    scan_all();
    /* namespace -> key tuples (SQL) and their keys; the columns to read */
    std::map<std::string, std::map<std::string, std::string>> wanted, positions;
    /* The keys updates with unchanged values write: their positions, if anything is read back. */
    std::map<std::string, std::map<std::string, std::string>> carrying;
    std::map<std::string, std::set<std::string>> wanted_cols;
    std::set<std::string> written;      /* ns + key written earlier in the batch */
    std::set<std::string> carried_here; /* of those, by an update that carried values */
    std::map<std::string, const ClickHouseSink::Table *> now;
    std::map<std::string, Cut> cut;
    for (size_t i = 0; i < entries_.size(); i++) {
        const ch::Entry &e = entries_[i];
        if (!e.schema.empty()) {
            in_effect(now, i, schemas_.at(i).value("namespace", ""));
            continue;
        }
        if (e.op.empty())
            continue;
        const std::string &ns = entry_ns(e);
        const ClickHouseSink::Table *tp = in_effect(now, i, ns);
        if (tp == nullptr || !tp->refused.empty() || superseded(cut, ns, *tp, e))
            continue;
        const ClickHouseSink::Table &t = *tp;
        bool update = e.op == "update";
        std::string_view values = e.op == "delete" ? e.before : e.after;
        if (values.empty() || values == "null")
            continue;
        std::string key = ns + '\x1e' + key_of(t, row(e, e.op != "delete"));
        /* An unchanged value comes from the row as it was: under its old key if the key changed. */
        bool before = update && !e.before.empty() && e.before[0] == '{';
        std::string source_key = before ? ns + '\x1e' + key_of(t, row(e, false)) : key;
        std::vector<std::string> unchanged = update ? unchanged_of(e) : std::vector<std::string>();
        if (!unchanged.empty()) {
            sources_.insert(source_key); /* its row is kept while writing */
            if (!t.key.empty())
                carrying[ns][key_tuple(t, row(e, true))] = key;
        }
        /*
         * Read back unless the batch wrote the row before; sent again out of
         * order, an earlier change of the batch may be left out (stale()):
         * read back anyway. Likewise where an update that carried values
         * wrote it: in a replay that one may be left out (holds()), and the
         * row it wrote is in the table.
         */
        if (!unchanged.empty() &&
            (resent_ || !written.count(source_key) || carried_here.count(source_key))) {
            ch::Row source = row(e, !before && e.op != "delete");
            wanted[ns][key_tuple(t, source)] = source_key;
            for (const std::string &u : unchanged)
                wanted_cols[ns].insert(u);
        }
        if (resent_ && !t.key.empty()) {
            /* Each key it writes: its greatest position in the table. */
            positions[ns][key_tuple(t, row(e, e.op != "delete"))] = key;
            if (before)
                positions[ns][key_tuple(t, row(e, false))] = ns + '\x1e' + key_of(t, row(e, false));
        }
        written.insert(key);
        if (!unchanged.empty())
            carried_here.insert(key);
        else
            carried_here.erase(key);
    }
    /*
     * A batch that reads rows back may be a replay (after a crash, a
     * rewind): where a row to carry values from is gone, the table may
     * hold this very change already, or a later one (plan_writes()). The
     * positions of the keys those updates write tell.
     */
    if (!resent_)
        for (auto &[ns, tuples] : carrying)
            if (wanted.count(ns))
                positions[ns].insert(tuples.begin(), tuples.end());
    /*
     * The reads, in pieces within ClickHouse's max_query_size (256 kB) and
     * its limit of AST elements: sql_of makes a piece's query of its tuples.
     */
    auto read_in_pieces = [&](const std::string &ns,
                              const std::map<std::string, std::string> &tuples, bool positions_read,
                              auto &&sql_of) {
        Step piece{"", false, ns, nullptr, ""};
        piece.positions = positions_read;
        size_t bytes = 0;
        auto flush = [&] {
            if (piece.tuples.empty())
                return;
            piece.sql = sql_of(piece.tuples);
            steps_.push_back(piece);
            piece.tuples.clear();
            piece.tuple_keys.clear();
            bytes = 0;
        };
        for (const auto &[tuple, key] : tuples) {
            if (bytes + tuple.size() > 150000 || piece.tuples.size() >= 5000)
                flush();
            piece.tuples.push_back(tuple);
            piece.tuple_keys.push_back(key);
            bytes += tuple.size() + 2;
        }
        flush();
    };
    for (auto &[ns, tuples] : wanted) {
        const ClickHouseSink::Table &t = sink_.tables_.at(ns);
        const std::set<std::string> &cols = wanted_cols[ns];
        read_in_pieces(ns, tuples, false, [&](const std::vector<std::string> &piece) {
            return lookup_sql(table_ref(t), t, cols, piece);
        });
        lookup_cols_[ns] = cols;
    }
    for (auto &[ns, tuples] : positions) {
        const ClickHouseSink::Table &t = sink_.tables_.at(ns);
        read_in_pieces(ns, tuples, true, [&](const std::vector<std::string> &piece) {
            return positions_sql(table_ref(t), t, piece);
        });
    }
    if (at_ >= steps_.size())
        plan_writes();
}

/* Phase 3: the rows, one INSERT per table; a TRUNCATE after the rows before it. */
void ClickHouseExchange::plan_writes()
{
    phase_ = 2;
    if (const ClickHouseSink::Table *t = streamable()) {
        /*
         * The common batch (the changes of one table, nothing to read back,
         * no TRUNCATE or schema change among them): one INSERT whose rows
         * are made while it is sent, so that ClickHouse parses the first
         * rows while the next are made.
         */
        stream_table_ = t;
        stream_cut_ = t->truncated_lsn != 0 || t->truncated_seq != 0;
        std::string cols;
        for (const ch::Column &c : t->columns)
            for (const std::string &n : insert_names(c))
                cols += ch::quote(n) + ", ";
        cols += "`_pgsink_lsn`, `_pgsink_sequence`, `_pgsink_op`, `_pgsink_deleted`, "
                "`_pgsink_timestamp`";
        stream_header_ = "INSERT INTO " + table_ref(*t) + " (" + cols + ") FORMAT JSONEachRow\n";
        stream_buf_ = stream_header_;
        Step insert{"", false, "", nullptr, ""};
        insert.data = true;
        insert.stream = true;
        steps_.push_back(std::move(insert));
        return;
    }
    scan_all();
    /*
     * namespace -> the table version its rows were made for, and its
     * INSERT: the statement, then the rows as JSONEachRow lines.
     */
    std::map<std::string, std::pair<const ClickHouseSink::Table *, std::string>> pending;
    bool reserved = false;
    /* Before a row: the INSERT's statement, for the table version the rows are made for. */
    auto start = [&](std::string &body, const ClickHouseSink::Table &t) {
        if (!body.empty())
            return;
        std::string cols;
        for (const ch::Column &c : t.columns)
            for (const std::string &n : insert_names(c))
                cols += ch::quote(n) + ", ";
        cols += "`_pgsink_lsn`, `_pgsink_sequence`, `_pgsink_op`, `_pgsink_deleted`, "
                "`_pgsink_timestamp`";
        body = "INSERT INTO " + table_ref(t) + " (" + cols + ") FORMAT JSONEachRow\n";
        if (!reserved) /* most batches are of one table: its rows take about the lines' size */
            body.reserve(lines_size_ + body.size());
        reserved = true;
    };
    auto flush = [&](const std::string &ns) {
        auto p = pending.find(ns);
        if (p == pending.end() || p->second.second.empty())
            return;
        Step insert{"", false, "", nullptr, ""};
        insert.sql.swap(p->second.second);
        insert.data = true;
        steps_.push_back(std::move(insert));
    };
    std::map<std::string, const ClickHouseSink::Table *> now;
    std::map<std::string, Cut> cut;
    /* The last table written, and its pending rows: most batches are of one table. */
    const std::string *last_ns = nullptr;
    std::pair<const ClickHouseSink::Table *, std::string> *last = nullptr;
    for (size_t i = 0; i < entries_.size(); i++) {
        const ch::Entry &e = entries_[i];
        if (!e.schema.empty()) {
            /* The rows before it are written with the columns they were made for. */
            std::string ns = schemas_.at(i).value("namespace", "");
            flush(ns);
            in_effect(now, i, ns);
            continue;
        }
        if (e.op.empty())
            continue;
        const std::string &ns = entry_ns(e);
        const ClickHouseSink::Table *tp = in_effect(now, i, ns);
        if (tp == nullptr) {
            /* A batch that can never pass would hold the cursor: refused, saying why. */
            refused_.push_back(
                Answer::Entry{i, false, 0, "no Schema entry of " + ns + " before its changes"});
            continue;
        }
        const ClickHouseSink::Table &t = *tp;
        if (superseded(cut, ns, t, e))
            continue; /* before the table's latest truncate: it changes nothing */
        if (last_ns == nullptr || *last_ns != ns) {
            last = &pending[ns];
            last_ns = &pending.find(ns)->first;
        }
        last->first = tp;
        std::string &body = last->second;
        if (!t.refused.empty()) {
            refused_.push_back(Answer::Entry{i, false, 0, t.refused});
            continue;
        }
        auto cur_it = current_.find(ns);
        /* Keys matter only where rows are kept for unchanged values (the slow path). */
        bool keyed = !sources_.empty() || (cur_it != current_.end() && !cur_it->second.empty());
        /* Sent again, out of order: rows older than the table's for their key are left out. */
        bool check = resent_ && !t.key.empty();
        if (e.op == "truncate") {
            flush(ns);
            uint64_t seq = strtoull(std::string(e.sequence).c_str(), nullptr, 10);
            std::string lsn = std::to_string(e.lsn_value);
            /* Its position first, durably: from then on older changes are left out. */
            Step record{"INSERT INTO " + truncates() +
                            " (`table_name`, `lsn`, `sequence`) VALUES ('" + sql_string(t.name) +
                            "', " + lsn + ", " + std::to_string(seq) + ")",
                        false, "", nullptr, ""};
            record.truncate_ns = ns;
            record.truncate_lsn = e.lsn_value;
            record.truncate_seq = seq;
            steps_.push_back(record);
            steps_.push_back(Step{"ALTER TABLE " + table_ref(t) + " DELETE WHERE `_pgsink_lsn` < " +
                                      lsn + " OR (`_pgsink_lsn` = " + lsn +
                                      " AND `_pgsink_sequence` < " + std::to_string(seq) + ")",
                                  false, "", nullptr, ""});
            /*
             * A mutation runs in the background: the batch is acknowledged
             * only once it is done, so that what was delivered is what a
             * reader sees.
             */
            /* Ours only (its LSN is in its command), not a user's mutation of the table. */
            Step wait{"SELECT count() FROM system.mutations WHERE database = '" +
                          sql_string(sink_.settings_.database) + "' AND table = '" +
                          sql_string(t.name) + "' AND NOT is_done AND position(command, '" + lsn +
                          "') > 0 AND position(command, '_pgsink_sequence') > 0" + " FORMAT TSVRaw",
                      false, "", nullptr, ""};
            wait.mutation_wait = true;
            steps_.push_back(wait);
            if (cur_it != current_.end())
                cur_it->second.clear();
            continue;
        }
        if (e.op == "delete") {
            if (e.before.empty() || e.before == "null") {
                refused_.push_back(Answer::Entry{i, false, 0, kNoOldKey});
                continue;
            }
            ch::Row old = row(e, false);
            if (check) {
                /* Sent again: a newer change of the key is in the table, it stays. */
                std::string nskey = ns + '\x1e' + key_of(t, old);
                if (stale(nskey, e))
                    continue;
                wrote(nskey, e);
            }
            if (keyed)
                current_[ns].erase(key_of(t, old));
            start(body, t);
            write_row(body, t, old, true, e);
            continue;
        }
        bool update = e.op == "update";
        bool before = update && !e.before.empty() && e.before[0] == '{';
        std::vector<std::string> unchanged =
            update && unchanged_ ? unchanged_of(e) : std::vector<std::string>();
        if (!before && unchanged.empty() && !keyed && !check) {
            /* The common case: nothing to look up or keep. */
            start(body, t);
            write_row(body, t, row(e, true), false, e);
            continue;
        }
        std::string key = key_of(t, row(e, true));
        std::string source_key = key; /* where unchanged values come from */
        std::optional<Cells> source_row;
        auto &cur = current_[ns];
        /*
         * Sent again, out of order (check): the old key of a changed key
         * holds a newer change (old_newer: its tombstone is left out, and
         * its row is not the one this update's unchanged values come from),
         * or the key itself does (the row is left out).
         */
        bool old_newer = false;
        bool row_stale = check && stale(ns + '\x1e' + key, e);
        if (before) {
            /* A changed key: the old key is deleted. */
            ch::Row old = row(e, false);
            std::string old_key = key_of(t, old);
            source_key = old_key;
            if (!t.key.empty() && old_key != key) {
                old_newer = check && stale(ns + '\x1e' + old_key, e);
                if (!old_newer) {
                    if (check)
                        wrote(ns + '\x1e' + old_key, e);
                    auto was = cur.find(old_key);
                    if (was != cur.end())
                        source_row = was->second;
                    cur.erase(old_key);
                    start(body, t);
                    write_row(body, t, old, true, e);
                }
            }
        }
        if (row_stale) {
            if (source_key != key && !old_newer)
                cur.erase(source_key); /* the old key's row is gone */
            continue;
        }
        if (unchanged.empty() && !sources_.count(ns + '\x1e' + key)) {
            if (source_key != key && !old_newer)
                cur.erase(source_key); /* the old key's row is gone */
            if (check)
                wrote(ns + '\x1e' + key, e);
            start(body, t);
            write_row(body, t, row(e, true), false, e);
            continue;
        }
        Cells cells = cells_of(t, row(e, true));
        if (!unchanged.empty()) {
            auto known = old_newer ? cur.end() : cur.find(source_key);
            if (source_row)
                known = cur.emplace(source_key, *source_row).first; /* erased as deleted above */
            bool missing = known == cur.end();
            for (const std::string &u : unchanged) {
                for (const ch::Column &c : t.columns) {
                    if (c.name != u)
                        continue;
                    for (const std::string &n : insert_names(c)) {
                        if (missing)
                            break;
                        auto v = known->second.find(n);
                        if (v != known->second.end())
                            cells[n] = v->second;
                        else
                            missing = true;
                    }
                }
            }
            if (missing && !check && holds(ns + '\x1e' + key, e)) {
                /*
                 * A replay: the table holds this change or a later one of
                 * the key (the row it carried from is gone since, or was
                 * skipped here): delivered, nothing to carry or park.
                 */
                if (source_key != key && !old_newer)
                    cur.erase(source_key);
                continue;
            }
            if (missing) {
                if (source_key != key)
                    cur.erase(key); /* a row read back for a later update is not this one's */
                /* Never a null or an empty value for a TOASTed one: parked, with the reason. */
                refused_.push_back(Answer::Entry{
                    i, false, 0,
                    too_big_.count(ns + '\x1e' + source_key)
                        ? "the current row in ClickHouse, whose unchanged TOASTed value this "
                          "update needs, is too big to read back (over " +
                              std::to_string(sink_.limits_.lookup_row_answer) +
                              " bytes as JSON): import the table again"
                    : old_newer
                        ? "the row this update's unchanged TOASTed value comes from is no longer "
                          "in ClickHouse (a newer change of its old key is there): import the "
                          "table again"
                        : "the unchanged TOASTed value of this update is not in ClickHouse (the "
                          "row was never delivered there): import the table again"});
                continue;
            }
        }
        if (check)
            wrote(ns + '\x1e' + key, e);
        if (source_key != key && !old_newer)
            cur.erase(source_key); /* the old key's row is gone */
        /* Kept only where a later update of this batch takes unchanged values from it. */
        if (sources_.count(ns + '\x1e' + key))
            cur[key] = cells;
        start(body, t);
        write_cells(body, cells, false, e);
    }
    for (auto &p : pending)
        flush(p.first);
}

/*
 * The one table whose changes the batch holds, if its INSERT can be
 * streamed: no update takes unchanged values, no TRUNCATE, no Schema entry
 * of it after its first change, and not refused. Else nullptr.
 */
const ClickHouseSink::Table *ClickHouseExchange::streamable()
{
    if (unchanged_ || odd_ || resent_)
        return nullptr;
    const ClickHouseSink::Table *only = nullptr;
    std::string only_ns;
    std::map<std::string, const ClickHouseSink::Table *> now;
    for (size_t i = 0; i < entries_.size(); i++) {
        const ch::Entry &e = entries_[i];
        if (!e.schema.empty()) {
            std::string ns = schemas_.at(i).value("namespace", "");
            if (only != nullptr && ns == only_ns)
                return nullptr;
            in_effect(now, i, ns);
            continue;
        }
        if (e.op.empty())
            continue;
        if (e.op == "truncate" || e.op == "resync_end")
            return nullptr; /* a mutation, then its wait: not a streamed INSERT */
        const std::string &ns = entry_ns(e);
        const ClickHouseSink::Table *tp = in_effect(now, i, ns);
        if (tp == nullptr || !tp->refused.empty() || (only != nullptr && tp != only))
            return nullptr;
        if (only == nullptr) {
            only = tp;
            only_ns = ns;
        }
    }
    return only;
}

/* Entry i of a streamed INSERT as JSONEachRow lines (plan_writes() without rows kept). */
void ClickHouseExchange::stream_entry(size_t i, std::string &out)
{
    if (!entries_[i].schema.empty() || entries_[i].op.empty())
        return;
    /* The line read whole now, while the INSERT's first rows are parsed by ClickHouse. */
    rows_.clear();
    const ClickHouseSink::Table &t = *stream_table_;
    /* Before the table's latest truncate (a streamed batch holds none): it changes nothing. */
    if (stream_cut_ && before_position(entries_[i], t.truncated_lsn, t.truncated_seq))
        return;
    ch::Entry e;
    try {
        e = ch::scan_rest(entries_[i], rows_);
    } catch (const std::exception &ex) {
        unreadable(i, ex); /* refused (once: a rewound stream skips it) */
        return;
    }
    if (e.op == "delete") {
        if (!e.before.empty() && e.before != "null")
            write_row(out, t, row(e, false), true, e);
        else
            stream_refused_.emplace(i, kNoOldKey); /* no key to delete by */
        return;
    }
    /* A changed key: the old key is deleted. */
    if (e.op == "update" && !e.before.empty() && e.before[0] == '{' && !t.key.empty() &&
        key_of(t, row(e, false)) != key_of(t, row(e, true)))
        write_row(out, t, row(e, false), true, e);
    write_row(out, t, row(e, true), false, e);
}

/* The next bytes of a streamed INSERT: its statement, then its rows, made as they are asked for. */
size_t ClickHouseExchange::stream(char *buf, size_t max)
{
    while (stream_buf_.size() - stream_sent_ < max && stream_at_ < entries_.size()) {
        if (stream_sent_ > (1u << 20)) { /* what was sent goes */
            stream_buf_.erase(0, stream_sent_);
            stream_sent_ = 0;
        }
        stream_entry(stream_at_++, stream_buf_);
    }
    size_t n = std::min(max, stream_buf_.size() - stream_sent_);
    memcpy(buf, stream_buf_.data() + stream_sent_, n);
    stream_sent_ += n;
    if (stream_sent_ == stream_buf_.size()) {
        stream_buf_.clear();
        stream_sent_ = 0;
    }
    return n;
}

HttpRequest ClickHouseExchange::next()
{
    Step &step = steps_.at(at_);
    /* An INSERT's body (up to a batch's size) is handed over: it is sent once per exchange. */
    HttpRequest r = sink_.query(step.data ? std::move(step.sql) : step.sql);
    if (step.stream) {
        r.body_source = [this](char *buf, size_t max) { return stream(buf, max); };
        r.body_rewind = [this] {
            /* Sent again from the start (libcurl lost the connection): the same bytes. */
            stream_at_ = 0;
            stream_buf_ = stream_header_;
            stream_sent_ = 0;
            return true;
        };
    }
    if (step.positions)
        /* Keys and two numbers: no bigger than the query (at most 150 kB of keys) and then some. */
        r.keep_answer = static_cast<size_t>(16) << 20;
    else if (!step.lookup.empty())
        r.keep_answer = (step.tuples.size() > 1 ? sink_.limits_.lookup_answer
                                                : sink_.limits_.lookup_row_answer) +
                        1;
    return r;
}

/* Errors that pass: memory, too many parts or queries, timeouts, the network. */
static bool transient(int code)
{
    return code == 159 || code == 202 || code == 209 || code == 210 || code == 241 || code == 252;
}

/* ClickHouse's error code in an answer ("Code: 27, e.displayText() = ..."), or -1. */
static int error_code(const std::string &body)
{
    size_t at = body.find("Code: ");
    return at == std::string::npos ? -1 : atoi(body.c_str() + at + 6);
}

std::optional<Answer> ClickHouseExchange::answer(const HttpResponse &r)
{
    Step &step = steps_.at(at_);
    int code = error_code(r.body);
    bool ok = r.status == 200 || (step.exists_ok && (code == 44 || code == 57));
    if (!ok) {
        Answer a;
        a.status = static_cast<int>(r.status);
        const std::string body = sink_.scrub(r.body); /* once: an error page may be large */
        a.response = answer_excerpt(body, 300);
        a.message =
            sink_.describe() + (r.status == 0 ? ": " + sink_.scrub(r.transport_error)
                                              : " answered HTTP " + std::to_string(r.status) +
                                                    ": " + answer_excerpt(body, 200));
        /* Values a column cannot hold: the batch is bisected down to the entry. */
        /* Not 49 (LOGICAL_ERROR): a server bug, retried, not a refusal of these rows. */
        static const int kData[] = {6, 25, 26, 27, 33, 38, 41, 53, 69, 70, 72, 117, 130};
        bool data = std::find(std::begin(kData), std::end(kData), code) != std::end(kData);
        if (code == 60 || code == 81) {
            /* A table or the database was dropped: made again at the next attempt. */
            sink_.database_ready_ = false;
            for (auto &entry : sink_.tables_)
                entry.second.created = false;
        } else if (step.of_table && r.status != 0 && code > 0 && !transient(code)) {
            /*
             * ClickHouse refuses the table itself (a column name clashing with
             * a helper column, a type it cannot hold): its changes are parked,
             * with the reason; other tables go on.
             */
            size_t ti = step.table;
            new_tables_[ti].refused = "ClickHouse refused table " + new_tables_[ti].name + ": " +
                                      answer_excerpt(body, 300);
            std::string ns = new_ns_[ti];
            while (at_ + 1 < steps_.size() && steps_[at_ + 1].of_table &&
                   steps_[at_ + 1].table == ti)
                at_++;                           /* its remaining DDL is skipped */
            sink_.tables_[ns] = new_tables_[ti]; /* known, and refused */
            return advance();
        }
        a.kind = data && phase_ == 2 ? Answer::Kind::reject : Answer::Kind::retry;
        return a;
    }
    if (step.version) {
        /* What the server offers decides the columns: the tables are planned now. */
        sink_.server_ = ch::server_of(r.body);
        sink_.server_known_ = true;
        plan_ddl(); /* (steps_ grows: step is not used after) */
        return advance();
    }
    if (step.check_types)
        check_types(step, r.body);
    if (step.reads_truncate) {
        ClickHouseSink::Table &t = new_tables_[step.table];
        const char *p = r.body.c_str();
        char *end = nullptr;
        t.truncated_lsn = strtoull(p, &end, 10);
        t.truncated_seq = *end == '\t' ? strtoull(end + 1, nullptr, 10) : 0;
    }
    if (!step.truncate_ns.empty()) {
        /* Recorded: later batches leave out what came before it. */
        auto known = sink_.tables_.find(step.truncate_ns);
        if (known != sink_.tables_.end() && (step.truncate_lsn > known->second.truncated_lsn ||
                                             (step.truncate_lsn == known->second.truncated_lsn &&
                                              step.truncate_seq > known->second.truncated_seq))) {
            known->second.truncated_lsn = step.truncate_lsn;
            known->second.truncated_seq = step.truncate_seq;
        }
    }
    if (!step.expect_key.empty()) {
        std::string got;
        for (char c : r.body)
            if (c != ' ' && c != '`' && c != '\n' && c != '(' && c != ')')
                got.push_back(c);
        if (got != step.expect_key)
            new_tables_[step.table].refused =
                "the ClickHouse table " + new_tables_[step.table].name + " is ordered by (" + got +
                ") but the table's key is now (" + step.expect_key +
                "): ClickHouse cannot change it; drop or rename the ClickHouse table, then "
                "rewind the sink or import the table again";
    }
    if (step.installs != nullptr)
        sink_.tables_[step.installs_ns] = *step.installs;
    if (step.creates_database)
        sink_.database_ready_ = true;
    if (step.positions)
        read_positions(step, r.body);
    else if (!step.lookup.empty() && !read_current(step, r.body))
        return std::nullopt; /* read again in halves */
    if (step.mutation_wait && atoi(r.body.c_str()) > 0) {
        if (++mutation_polls_ > kMutationPolls) {
            /* Not done after a minute: the batch is tried again later (the mutation too). */
            Answer a;
            a.kind = Answer::Kind::retry;
            a.message = sink_.describe() + ": a TRUNCATE's mutation is not done after " +
                        std::to_string(kMutationPolls / 10) +
                        " s (see system.mutations in ClickHouse)";
            return a;
        }
        /* Not done yet: the server waits a tenth of a second, then we ask again. */
        Step again = step;
        steps_.insert(steps_.begin() + static_cast<long>(at_) + 1, again);
        steps_[at_] = Step{"SELECT sleep(0.1) FORMAT TSVRaw", false, "", nullptr, ""};
    }
    return advance();
}

/*
 * Each row of a JSONEachRow answer about table t, to f: its cells by
 * column (decimals, read as text, unquoted again), and apart, the value of
 * the column named extra ("" if the row has none).
 */
template <typename F>
static void answer_rows(const ClickHouseSink::Table &t, const std::string &body,
                        std::string_view extra, F &&f)
{
    std::vector<ch::Member> members;
    size_t at = 0;
    while (at < body.size()) {
        size_t nl = body.find('\n', at);
        if (nl == std::string::npos)
            nl = body.size();
        if (nl > at) {
            ch::scan_object(std::string_view(body).substr(at, nl - at), members);
            Cells row;
            std::string_view extra_value;
            for (const ch::Member &m : members) {
                std::string name = ch::string_content(m.name);
                if (name == extra)
                    extra_value = m.value;
                else
                    row[name] = std::string(m.value);
            }
            for (const ch::Column &c : t.columns) {
                auto v = c.kind == ch::Kind::decimal ? row.find(c.ch_name) : row.end();
                if (v != row.end() && !v->second.empty() && v->second[0] == '"')
                    v->second = ch::string_content(v->second);
            }
            f(row, extra_value);
        }
        at = nl + 1;
    }
}

/*
 * The current rows a lookup read (JSONEachRow), kept by key. False if the
 * answer was too big: the step is replaced by two of half its keys each (a
 * single key's row: its updates are parked, see plan_writes()).
 */
bool ClickHouseExchange::read_current(const Step &step, const std::string &body)
{
    size_t limit =
        step.tuples.size() > 1 ? sink_.limits_.lookup_answer : sink_.limits_.lookup_row_answer;
    if (body.size() > limit) {
        if (step.tuples.size() <= 1) {
            for (const std::string &k : step.tuple_keys)
                too_big_.insert(k);
            return true;
        }
        const ClickHouseSink::Table &t = sink_.tables_.at(step.lookup);
        size_t half = step.tuples.size() / 2;
        Step first = step, second = step;
        first.tuples.assign(step.tuples.begin(), step.tuples.begin() + long(half));
        first.tuple_keys.assign(step.tuple_keys.begin(), step.tuple_keys.begin() + long(half));
        second.tuples.assign(step.tuples.begin() + long(half), step.tuples.end());
        second.tuple_keys.assign(step.tuple_keys.begin() + long(half), step.tuple_keys.end());
        first.sql = lookup_sql(table_ref(t), t, lookup_cols_[step.lookup], first.tuples);
        second.sql = lookup_sql(table_ref(t), t, lookup_cols_[step.lookup], second.tuples);
        steps_[at_] = std::move(first);
        steps_.insert(steps_.begin() + long(at_) + 1, std::move(second));
        return false;
    }
    const ClickHouseSink::Table &t = sink_.tables_.at(step.lookup);
    answer_rows(t, body, "_pgsink_deleted", [&](Cells &row, std::string_view deleted) {
        if (deleted != "1")
            current_[step.lookup][key_of(t, row)] = std::move(row);
    });
    return true;
}

/*
 * Each key's greatest (lsn, sequence) in the table (positions_sql()), into
 * latest_: rows older than it are left out (stale()); an update whose
 * values are gone but whose change the table holds is delivered (holds()).
 */
void ClickHouseExchange::read_positions(const Step &step, const std::string &body)
{
    const ClickHouseSink::Table &t = sink_.tables_.at(step.lookup);
    answer_rows(t, body, "_pgsink_op", [&](Cells &row, std::string_view position) {
        /* ["<lsn>","<sequence>"] (64-bit integers are quoted), or without the quotes. */
        Cut c;
        std::string digits[2];
        size_t n = 0;
        for (char ch : position) {
            if (ch >= '0' && ch <= '9' && n < 2)
                digits[n].push_back(ch);
            else if (ch == ',')
                n++;
        }
        if (n != 1 || digits[0].empty() || digits[1].empty())
            throw std::runtime_error("ClickHouse answered a key's position as " +
                                     std::string(position.substr(0, 100)));
        std::from_chars(digits[0].data(), digits[0].data() + digits[0].size(), c.lsn);
        std::from_chars(digits[1].data(), digits[1].data() + digits[1].size(), c.seq);
        latest_[step.lookup + '\x1e' + key_of(t, row)] = c;
    });
}

/* Does the table hold e's change of key nskey, or a later one (read_positions())? */
bool ClickHouseExchange::holds(const std::string &nskey, const ch::Entry &e) const
{
    auto it = latest_.find(nskey);
    return it != latest_.end() &&
           !(e.lsn_value > it->second.lsn ||
             (e.lsn_value == it->second.lsn && sequence_of(e) > it->second.seq));
}

/* Would a row of key nskey (namespace + '\x1e' + key) written by e be older than the table's? */
bool ClickHouseExchange::stale(const std::string &nskey, const ch::Entry &e) const
{
    auto it = latest_.find(nskey);
    return it != latest_.end() && before_position(e, it->second.lsn, it->second.seq);
}

/* A row of key nskey written by e: later rows of the batch older than it are left out. */
void ClickHouseExchange::wrote(const std::string &nskey, const ch::Entry &e)
{
    Cut &c = latest_[nskey];
    if (!before_position(e, c.lsn, c.seq))
        c = Cut{e.lsn_value, sequence_of(e)};
}

/* The next step, the next phase, or the batch's answer. */
std::optional<Answer> ClickHouseExchange::advance()
{
    at_++;
    if (at_ >= steps_.size()) {
        if (phase_ == 0)
            plan_reads();
        else if (phase_ == 1)
            plan_writes();
        if (at_ >= steps_.size()) {
            Answer a;
            a.entries = refused_;
            for (const auto &[i, why] : unreadable_)
                a.entries.push_back(Answer::Entry{i, false, 0, why});
            for (const auto &[i, why] : stream_refused_)
                a.entries.push_back(Answer::Entry{i, false, 0, why});
            return a;
        }
    }
    return std::nullopt;
}

/*
 * The column types ClickHouse has for new_tables_[step.table] against
 * those it needs: a column PostgreSQL retyped keeps its old type here
 * (ADD COLUMN of an existing name does nothing), and writing the new
 * values into it would change them. Then the table is refused, saying so.
 */
void ClickHouseExchange::check_types(const Step &step, const std::string &body)
{
    std::map<std::string, std::string> have;
    size_t at = 0;
    while (at < body.size()) {
        size_t nl = body.find('\n', at);
        if (nl == std::string::npos)
            nl = body.size();
        std::string line = body.substr(at, nl - at);
        size_t tab = line.find('\t');
        if (tab != std::string::npos)
            have[line.substr(0, tab)] = line.substr(tab + 1);
        at = nl + 1;
    }
    ClickHouseSink::Table &t = new_tables_[step.table];
    for (const ch::Column &c : t.columns) {
        std::string want = ch::ch_type(c);
        auto got = have.find(c.ch_name);
        auto bare = [](std::string x) { /* ClickHouse writes "Decimal(12, 2)" */
                                        x.erase(std::remove(x.begin(), x.end(), ' '), x.end());
                                        return x;
        };
        if (got != have.end() && bare(got->second) != bare(want) && t.refused.empty())
            t.refused = "column " + c.name + " of ClickHouse table " + t.name + " is " +
                        got->second + " but now needs " + want +
                        " (its type changed in PostgreSQL): ClickHouse cannot hold the new "
                        "values in it; add the column anew under another name or rebuild the "
                        "table, then rewind the sink or import the table again";
    }
}

std::unique_ptr<HttpSink::Exchange> ClickHouseSink::exchange(std::string_view lines,
                                                             const std::string &)
{
    return std::make_unique<ClickHouseExchange>(*this, lines);
}

std::unique_ptr<HttpSink::Exchange> ClickHouseSink::exchange_resent(std::string_view lines,
                                                                    const std::string &)
{
    return std::make_unique<ClickHouseExchange>(*this, lines, true);
}

} // namespace pgsink

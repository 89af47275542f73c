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
 *      mutation after the rows before it.
 * Answers: ClickHouse's "Code: N" says what failed. Data a column cannot
 * hold refuses the batch (bisected down to the entry, parked with
 * ClickHouse's message); anything else is retried.
 */
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "changelog/avro_schema.h"
#include "changelog/entry_head.h"
#include "core/digest.h"
#include "sinks/clickhouse_sink.h"

namespace pgsink
{

/* Row values are kept as raw text (kRaw), so no key order or number form is lost. */
using json = nlohmann::json;
namespace ch = clickhouse;

/* A string value starting with this is written raw (a Decimal's digits). */
static const std::string kRaw = "\x01";

/* A row as a JSONEachRow line (without its newline). */
static std::string row_text(const json &row)
{
    std::string out = "{";
    for (auto it = row.begin(); it != row.end(); ++it) {
        if (out.size() > 1)
            out.push_back(',');
        out += json(it.key()).dump();
        out.push_back(':');
        const json &v = it.value();
        if (v.is_string() && v.get_ref<const std::string &>().rfind(kRaw, 0) == 0)
            out += v.get_ref<const std::string &>().substr(kRaw.size());
        else
            out += v.dump(-1, ' ', false, json::error_handler_t::replace);
    }
    out.push_back('}');
    return out;
}

std::string clickhouse_table_name(const std::string &schema, const std::string &table)
{
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

bool ClickHouseSink::open(const Resume &)
{
    if (settings_.url.empty())
        throw SinkError("pgsink.clickhouse_url is not set", false);
    /* The sink learns each table's columns from the Schema entries: told again at every start. */
    tables_.clear();
    database_ready_ = false;
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

HttpRequest ClickHouseSink::query(const std::string &sql) const
{
    HttpRequest r;
    r.url = settings_.url + "/";
    r.body = sql;
    r.headers = {"Content-Type: text/plain; charset=utf-8"};
    if (!settings_.user.empty() || !settings_.password.empty()) {
        r.headers.push_back("X-ClickHouse-User: " +
                            (settings_.user.empty() ? std::string("default") : settings_.user));
        r.headers.push_back("X-ClickHouse-Key: " + settings_.password);
    }
    return r;
}

/* The columns an INSERT writes for c, unquoted: its value (or bits), and an array's NULL flag. */
static std::vector<std::string> insert_names(const ch::Column &c)
{
    std::string n = ch::insert_name(c);
    std::vector<std::string> names = {n.substr(1, n.size() - 2)};
    if (c.array)
        names.push_back(ch::null_flag_name(c));
    return names;
}

/* Text inside a ClickHouse '...' literal. */
static std::string sql_string(const std::string &text)
{
    return ch::escaped(text, '\'');
}

/*
 * The table an entry is about, as its Schema entry names it: the Schema's
 * namespace holds Avro names, made from PostgreSQL's by avro_name().
 */
static std::string entry_ns(const json &e)
{
    return avro_name(e.value("namespace", "")) + "." + avro_name(e.value("name", ""));
}

/* ------------------------------------------------------------ the exchange */

class ClickHouseExchange final : public HttpSink::Exchange
{
  public:
    ClickHouseExchange(ClickHouseSink &sink, std::string_view lines);
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
    };
    void plan_ddl();
    void plan_reads();
    void plan_writes();
    std::string db() const { return ch::quote(sink_.settings_.database); }
    std::string table_ref(const ClickHouseSink::Table &t) const
    {
        return db() + "." + ch::quote(t.name);
    }
    json row_of(const ClickHouseSink::Table &t, const json &values) const;
    std::string key_of(const ClickHouseSink::Table &t, const json &row) const;
    std::optional<Answer> advance();
    void check_types(const Step &step, const std::string &body);
    const ClickHouseSink::Table *
    in_effect(std::map<std::string, const ClickHouseSink::Table *> &now, size_t i,
              const std::string &ns);

    ClickHouseSink &sink_;
    std::vector<json> entries_;
    std::vector<ClickHouseSink::Table> new_tables_; /* made by this batch's Schema entries */
    std::vector<std::string> new_ns_;
    std::vector<Step> steps_;
    size_t at_ = 0;
    int phase_ = 0; /* 0: DDL, 1: reads, 2: writes */
    /* Current rows read (phase 2), by namespace and key. */
    std::map<std::string, std::map<std::string, json>> current_;
    std::vector<Answer::Entry> refused_;
    std::set<std::string> sources_; /* namespace + key of rows unchanged values come from */
    std::map<std::string, ClickHouseSink::Table> before_; /* the sink's tables before the batch */
    std::map<size_t, size_t> schema_at_; /* entry index of a Schema entry -> new_tables_ index */
    int mutation_polls_ = 0;
    static constexpr int kMutationPolls = 600; /* a minute of 0.1 s waits */
};

/* ------------------------------------------------ raw JSON values of a line */

static size_t skip_space(std::string_view s, size_t i)
{
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* The end of the JSON value starting at s[i]. */
static size_t value_end(std::string_view s, size_t i)
{
    if (i >= s.size())
        throw std::runtime_error("a JSON value is missing");
    if (s[i] == '"') {
        for (i++; i < s.size(); i++) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                return i + 1;
        }
        throw std::runtime_error("a JSON string has no end");
    }
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < s.size(); i++) {
            char c = s[i];
            if (c == '"') {
                i = value_end(s, i) - 1;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        throw std::runtime_error("a JSON object or array has no end");
    }
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
           s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
        i++;
    return i;
}

/*
 * The members of a JSON object as raw text: each value exactly as written
 * (numbers keep their digits, json values their form), as a JSON object
 * of marked strings (see kRaw).
 */
static json raw_object(std::string_view s)
{
    json out = json::object();
    size_t i = skip_space(s, 0);
    if (i >= s.size() || s[i] != '{')
        throw std::runtime_error("not a JSON object");
    i = skip_space(s, i + 1);
    while (i < s.size() && s[i] != '}') {
        size_t key_end = value_end(s, i);
        std::string key = json::parse(s.substr(i, key_end - i)).get<std::string>();
        i = skip_space(s, key_end);
        if (i >= s.size() || s[i] != ':')
            throw std::runtime_error("a JSON member has no value");
        i = skip_space(s, i + 1);
        size_t end = value_end(s, i);
        out[key] = kRaw + std::string(s.substr(i, end - i));
        i = skip_space(s, end);
        if (i < s.size() && s[i] == ',')
            i = skip_space(s, i + 1);
    }
    return out;
}

/* A marked raw value's text (see kRaw); "" if v is not one. */
static std::string raw_text(const json &v)
{
    if (!v.is_string())
        return {};
    const std::string &s = v.get_ref<const std::string &>();
    return s.rfind(kRaw, 0) == 0 ? s.substr(kRaw.size()) : std::string();
}

/*
 * A changelog entry: its members parsed, but the rows (before, after) kept
 * raw (raw_object()): a parser would change numbers' forms, or refuse the
 * ones a double cannot hold (a json value's 1e400).
 */
static json entry_of(std::string_view line)
{
    json e = raw_object(line);
    for (auto it = e.begin(); it != e.end(); ++it) {
        std::string raw = raw_text(it.value());
        if ((it.key() == "before" || it.key() == "after") && raw != "null")
            it.value() = raw_object(raw);
        else
            it.value() = json::parse(raw);
    }
    return e;
}

ClickHouseExchange::ClickHouseExchange(ClickHouseSink &sink, std::string_view lines) : sink_(sink)
{
    size_t at = 0;
    while (at < lines.size()) {
        size_t nl = lines.find('\n', at);
        if (nl == std::string_view::npos)
            nl = lines.size();
        entries_.push_back(entry_of(lines.substr(at, nl - at)));
        at = nl + 1;
    }
    plan_ddl();
    if (steps_.empty())
        steps_.push_back(Step{"SELECT 1", false, "", nullptr, ""}); /* nothing to write */
}

/* Phase 1: the database and the tables of new Schema entries (and of tables dropped meanwhile). */
void ClickHouseExchange::plan_ddl()
{
    if (!sink_.database_ready_)
        steps_.push_back(Step{"CREATE DATABASE IF NOT EXISTS " + db(), true, "", nullptr, ""});
    before_ = sink_.tables_; /* the tables as they were before this batch's Schema entries */
    for (size_t ei = 0; ei < entries_.size(); ei++) {
        const json &e = entries_[ei];
        if (!e.contains("schema"))
            continue;
        const json &s = e["schema"];
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
            t.columns.push_back(ch::column_for(name, f.value("pg_type", ""), is_key));
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
            order += (order.empty() ? "" : ", ") + ch::quote(k);
        cols += "`_pgsink_lsn` UInt64, `_pgsink_sequence` UInt64, `_pgsink_op` String, "
                "`_pgsink_deleted` UInt8, `_pgsink_timestamp` String";
        /* Without a key no row replaces another: a plain MergeTree of every change. */
        std::string engine = t.key.empty()
                                 ? "MergeTree ORDER BY (`_pgsink_lsn`, `_pgsink_sequence`)"
                                 : "ReplacingMergeTree(`_pgsink_lsn`) ORDER BY (" + order + ")";
        steps_.push_back(Step{"CREATE TABLE IF NOT EXISTS " + table_ref(t) + " (" + cols +
                                  ") ENGINE = " + engine,
                              true, "", nullptr, ""});
        /* A table made earlier with another key would mix rows silently: checked. */
        if (!t.key.empty()) {
            std::string want;
            for (const std::string &k : t.key)
                want += (want.empty() ? "" : ",") + k;
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
        std::string select;
        for (const ch::Column &c : t.columns)
            select += (select.empty() ? "" : ", ") + ch::quote(c.name) +
                      (c.array ? ", " + ch::quote(ch::null_flag_name(c)) : "");
        steps_.push_back(Step{"DROP TABLE IF EXISTS " + view, true, "", nullptr, ""});
        Step last{"CREATE VIEW " + view + " AS SELECT " + select + " FROM " + table_ref(t) +
                      (t.key.empty() ? "" : " FINAL WHERE `_pgsink_deleted` = 0"),
                  true, "", &t, new_ns_[i]};
        steps_.push_back(last);
        /* A column whose type changed in PostgreSQL keeps its old one here: checked. */
        Step types{"SELECT name, type FROM system.columns WHERE database = '" +
                       sql_string(sink_.settings_.database) + "' AND table = '" +
                       sql_string(t.name) + "' FORMAT TSVRaw",
                   false, "", nullptr, ""};
        types.check_types = true;
        steps_.insert(steps_.end() - 1, types);
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

/* The key of a row in insert form, as one string. */
std::string ClickHouseExchange::key_of(const ClickHouseSink::Table &t, const json &row) const
{
    std::string k;
    for (const std::string &name : t.key) {
        const ch::Column *col = nullptr;
        for (const ch::Column &c : t.columns)
            if (c.name == name)
                col = &c;
        std::string n = col ? ch::insert_name(*col) : ch::quote(name);
        n = n.substr(1, n.size() - 2); /* unquoted: rows are keyed by column name */
        const json &v = row.contains(n) ? row[n] : json();
        std::string text = raw_text(v);
        if (text.empty())
            text = v.is_string() ? v.get<std::string>() : v.dump();
        else if (text[0] == '"')
            text = json::parse(text).get<std::string>(); /* the same text, however escaped */
        if (text == "true" || text == "false")
            text = text == "true" ? "1" : "0"; /* a boolean as ClickHouse's UInt8 answers it */
        k += text + '\x1f';
    }
    return k;
}

/*
 * A changelog row (before or after, its values raw: see raw_object()) in
 * insert form: each column's ClickHouse value, raw too.
 */
json ClickHouseExchange::row_of(const ClickHouseSink::Table &t, const json &values) const
{
    json row = json::object();
    for (const ch::Column &c : t.columns) {
        if (!values.contains(c.name))
            continue;
        std::string raw = raw_text(values[c.name]);
        std::string name = ch::insert_name(c);
        name = name.substr(1, name.size() - 2);
        if (c.array) {
            /* No Nullable(Array) in ClickHouse: an empty array and the NULL flag. */
            bool null = raw.empty() || raw == "null";
            row[name] = kRaw + (null ? "[]" : raw);
            row[ch::null_flag_name(c)] = null ? 1 : 0;
            continue;
        }
        if (raw.empty() || raw == "null") {
            row[name] = nullptr;
            continue;
        }
        bool quoted = raw[0] == '"';
        std::string unquoted = quoted ? json::parse(raw).get<std::string>() : raw;
        switch (c.kind) {
        case ch::Kind::decimal:
            /*
             * An unquoted number, exactly as PostgreSQL wrote it. "NaN" stays
             * a string: ClickHouse refuses it, and the entry is parked.
             */
            row[name] = kRaw + (unquoted == "NaN" ? raw : unquoted);
            break;
        case ch::Kind::float32:
        case ch::Kind::float64: {
            /* The value's IEEE bits, from its exact text ("-0" keeps its sign). */
            std::string text = unquoted == "Infinity"    ? "inf"
                               : unquoted == "-Infinity" ? "-inf"
                                                         : unquoted;
            if (c.kind == ch::Kind::float32) {
                float f = strtof(text.c_str(), nullptr);
                uint32_t bits;
                memcpy(&bits, &f, sizeof(bits));
                row[name] = bits;
            } else {
                double d = strtod(text.c_str(), nullptr);
                uint64_t bits;
                memcpy(&bits, &d, sizeof(bits));
                row[name] = bits;
            }
            break;
        }
        case ch::Kind::string:
            /* A json value or an array as its exact JSON text; other values are strings. */
            row[name] = c.json_text || !quoted ? json(raw) : json(kRaw + raw);
            break;
        default:
            row[name] = kRaw + raw;
        }
    }
    return row;
}

/* Phase 2: current rows for updates that left TOASTed columns unchanged. */
void ClickHouseExchange::plan_reads()
{
    phase_ = 1;
    std::map<std::string, std::set<std::string>> wanted; /* namespace -> key tuples (SQL) */
    std::set<std::string> written;                       /* ns + key written earlier in the batch */
    std::map<std::string, const ClickHouseSink::Table *> now;
    for (size_t i = 0; i < entries_.size(); i++) {
        const json &e = entries_[i];
        if (e.contains("schema")) {
            in_effect(now, i, e["schema"].value("namespace", ""));
            continue;
        }
        if (!e.contains("op"))
            continue;
        std::string ns = entry_ns(e);
        const ClickHouseSink::Table *tp = in_effect(now, i, ns);
        if (tp == nullptr || !tp->refused.empty())
            continue;
        const ClickHouseSink::Table &t = *tp;
        std::string op = e["op"];
        const json &values = op == "delete" ? e["before"] : e["after"];
        if (values.is_null())
            continue;
        json row = row_of(t, values);
        std::string key = ns + '\x1e' + key_of(t, row);
        /* An unchanged value comes from the row as it was: under its old key if the key changed. */
        json source = row;
        if (op == "update" && e["before"].is_object())
            source = row_of(t, e["before"]);
        std::string source_key = ns + '\x1e' + key_of(t, source);
        if (op == "update" && e.contains("unchanged"))
            sources_.insert(source_key); /* its row is kept while writing */
        if (op == "update" && e.contains("unchanged") && !written.count(source_key)) {
            std::string tuple;
            for (const std::string &name : t.key) {
                for (const ch::Column &c : t.columns) {
                    if (c.name != name)
                        continue;
                    std::string n = ch::insert_name(c);
                    const json &v = source[n.substr(1, n.size() - 2)];
                    /* The value itself: a JSON string unescaped, a number's digits. */
                    std::string lit = raw_text(v);
                    if (lit.empty())
                        lit = v.is_string() ? v.get<std::string>() : v.dump();
                    else if (lit[0] == '"')
                        lit = json::parse(lit).get<std::string>();
                    std::string quoted = "'" + sql_string(lit) + "'";
                    if (c.kind == ch::Kind::string)
                        tuple += (tuple.empty() ? "" : ", ") + quoted;
                    else if (c.kind == ch::Kind::uuid)
                        tuple += (tuple.empty() ? "" : ", ") + ("toUUID(" + quoted + ")");
                    else if (c.kind == ch::Kind::boolean)
                        tuple +=
                            (tuple.empty() ? "" : ", ") + std::string(lit == "true" ? "1" : "0");
                    else
                        tuple += (tuple.empty() ? "" : ", ") + lit;
                }
            }
            wanted[ns].insert("(" + tuple + ")");
        }
        written.insert(key);
    }
    for (auto &[ns, tuples] : wanted) {
        const ClickHouseSink::Table &t = sink_.tables_.at(ns);
        std::string cols, keys;
        /* Decimals as text: a double would lose digits. */
        for (const ch::Column &c : t.columns)
            cols += (cols.empty() ? "" : ", ") +
                    (c.kind == ch::Kind::decimal
                         ? "toString(" + ch::quote(c.name) + ") AS " + ch::quote(c.name)
                         : ch::insert_name(c)) +
                    (c.array ? ", " + ch::quote(ch::null_flag_name(c)) : "");
        for (const std::string &k : t.key)
            for (const ch::Column &c : t.columns)
                if (c.name == k) /* a float key is compared by its bits, as the literal is */
                    keys += (keys.empty() ? "" : ", ") + ch::insert_name(c);
        /* In pieces within ClickHouse's max_query_size (256 kB) and its limit of AST elements. */
        std::vector<std::string> ins(1);
        size_t in_piece = 0;
        for (const std::string &tuple : tuples) {
            if (ins.back().size() + tuple.size() > 150000 || in_piece >= 5000) {
                ins.emplace_back();
                in_piece = 0;
            }
            ins.back() += (ins.back().empty() ? "" : ", ") + tuple;
            in_piece++;
        }
        /*
         * FINAL: the latest version of each key. A deleted one is read too,
         * to be told apart: a tombstone's values are no values.
         */
        cols += ", `_pgsink_deleted`";
        for (const std::string &in : ins)
            steps_.push_back(Step{"SELECT " + cols + " FROM " + table_ref(t) + " FINAL WHERE (" +
                                      keys + ") IN (" + in + ") FORMAT JSONEachRow",
                                  false, ns, nullptr, ""});
    }
    if (at_ >= steps_.size())
        plan_writes();
}

/* Phase 3: the rows, one INSERT per table; a TRUNCATE after the rows before it. */
void ClickHouseExchange::plan_writes()
{
    phase_ = 2;
    /* namespace -> the table version its rows were made for, and JSONEachRow lines */
    std::map<std::string, std::pair<const ClickHouseSink::Table *, std::string>> pending;
    auto flush = [&](const std::string &ns) {
        auto p = pending.find(ns);
        if (p == pending.end() || p->second.second.empty())
            return;
        const ClickHouseSink::Table &t = *p->second.first;
        std::string cols;
        for (const ch::Column &c : t.columns)
            for (const std::string &n : insert_names(c))
                cols += ch::quote(n) + ", ";
        cols += "`_pgsink_lsn`, `_pgsink_sequence`, `_pgsink_op`, `_pgsink_deleted`, "
                "`_pgsink_timestamp`";
        steps_.push_back(Step{"INSERT INTO " + table_ref(t) + " (" + cols +
                                  ") FORMAT JSONEachRow\n" + p->second.second,
                              false, "", nullptr, ""});
        p->second.second.clear();
    };
    std::map<std::string, const ClickHouseSink::Table *> now;
    for (size_t i = 0; i < entries_.size(); i++) {
        const json &e = entries_[i];
        if (e.contains("schema")) {
            /* The rows before it are written with the columns they were made for. */
            std::string ns = e["schema"].value("namespace", "");
            flush(ns);
            in_effect(now, i, ns);
            continue;
        }
        if (!e.contains("op"))
            continue;
        std::string ns = entry_ns(e);
        const ClickHouseSink::Table *tp = in_effect(now, i, ns);
        if (tp == nullptr)
            throw std::runtime_error("no Schema entry for " + ns + " before its changes");
        const ClickHouseSink::Table &t = *tp;
        pending[ns].first = tp;
        if (!t.refused.empty()) {
            refused_.push_back(Answer::Entry{i, false, 0, t.refused});
            continue;
        }
        std::string op = e["op"];
        uint64_t lsn = 0;
        std::string lsn_text = e.value("lsn", "");
        parse_lsn(lsn_text.c_str(), lsn_text.size(), &lsn);
        uint64_t seq = e.value("sequence", 0);
        auto meta = [&](json &row, bool deleted) {
            row["_pgsink_lsn"] = lsn;
            row["_pgsink_sequence"] = seq;
            row["_pgsink_op"] = op;
            row["_pgsink_deleted"] = deleted ? 1 : 0;
            row["_pgsink_timestamp"] = e.value("timestamp", "");
        };
        std::map<std::string, json> &cur = current_[ns];
        if (op == "truncate") {
            flush(ns);
            steps_.push_back(Step{"ALTER TABLE " + table_ref(t) + " DELETE WHERE `_pgsink_lsn` < " +
                                      std::to_string(lsn) +
                                      " OR (`_pgsink_lsn` = " + std::to_string(lsn) +
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
                          sql_string(t.name) + "' AND NOT is_done AND position(command, '" +
                          std::to_string(lsn) +
                          "') > 0 AND position(command, '_pgsink_sequence') > 0" + " FORMAT TSVRaw",
                      false, "", nullptr, ""};
            wait.mutation_wait = true;
            steps_.push_back(wait);
            cur.clear();
            continue;
        }
        if (op == "delete") {
            if (e["before"].is_null())
                continue; /* REPLICA IDENTITY NOTHING: no key to delete by */
            json row = row_of(t, e["before"]);
            json tomb = json::object();
            for (const ch::Column &c : t.columns) {
                std::string n = ch::insert_name(c);
                n = n.substr(1, n.size() - 2);
                tomb[n] = c.key && row.contains(n) ? row[n] : json();
                if (c.array) {
                    tomb[n] = kRaw + "[]";
                    tomb[ch::null_flag_name(c)] = 1;
                }
            }
            meta(tomb, true);
            cur.erase(key_of(t, tomb));
            pending[ns].second += row_text(tomb) + "\n";
            continue;
        }
        json row = row_of(t, e["after"]);
        std::string key = key_of(t, row);
        std::string source_key = key; /* where unchanged values come from */
        json source_row;
        if (op == "update" && e["before"].is_object()) {
            /* A changed key: the old key is deleted. */
            json old = row_of(t, e["before"]);
            std::string old_key = key_of(t, old), new_key = key;
            source_key = old_key;
            if (!t.key.empty() && old_key != new_key) {
                auto was = cur.find(old_key);
                if (was != cur.end())
                    source_row = was->second;
                json tomb = json::object();
                for (const ch::Column &c : t.columns) {
                    std::string n = ch::insert_name(c);
                    n = n.substr(1, n.size() - 2);
                    tomb[n] = c.key && old.contains(n) ? old[n] : json();
                    if (c.array) {
                        tomb[n] = kRaw + "[]";
                        tomb[ch::null_flag_name(c)] = 1;
                    }
                }
                meta(tomb, true);
                cur.erase(old_key);
                pending[ns].second += row_text(tomb) + "\n";
            }
        }
        if (e.contains("unchanged")) {
            auto known = cur.find(source_key);
            if (source_row.is_object())
                known = cur.emplace(source_key, source_row).first; /* erased as deleted above */
            bool missing = known == cur.end();
            for (const json &u : e["unchanged"]) {
                for (const ch::Column &c : t.columns) {
                    if (c.name != u.get<std::string>())
                        continue;
                    for (const std::string &n : insert_names(c)) {
                        if (!missing && known->second.contains(n))
                            row[n] = known->second[n];
                        else
                            missing = true;
                    }
                }
            }
            if (missing) {
                /* Never a null or an empty value for a TOASTed one: parked, with the reason. */
                refused_.push_back(Answer::Entry{
                    i, false, 0,
                    "the unchanged TOASTed value of this update is not in ClickHouse (the row "
                    "was never delivered there): import the table again"});
                continue;
            }
        }
        if (source_key != key)
            cur.erase(source_key); /* the old key's row is gone */
        /* Kept only where a later update of this batch takes unchanged values from it. */
        if (sources_.count(ns + '\x1e' + key))
            cur[key] = row;
        meta(row, false);
        pending[ns].second += row_text(row) + "\n";
    }
    for (auto &p : pending)
        flush(p.first);
}

HttpRequest ClickHouseExchange::next()
{
    HttpRequest r = sink_.query(steps_.at(at_).sql);
    if (!steps_[at_].lookup.empty())
        r.keep_answer = static_cast<size_t>(1) << 30; /* the rows read back, whole */
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
        a.response = answer_excerpt(r.body, 300);
        a.message =
            sink_.describe() + (r.status == 0 ? ": " + r.transport_error
                                              : " answered HTTP " + std::to_string(r.status) +
                                                    ": " + answer_excerpt(r.body, 200));
        /* Values a column cannot hold: the batch is bisected down to the entry. */
        static const int kData[] = {6, 25, 26, 27, 33, 38, 41, 49, 53, 69, 70, 72, 117, 130};
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
                                      answer_excerpt(r.body, 300);
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
    if (step.check_types)
        check_types(step, r.body);
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
    if (at_ == 0 && phase_ == 0)
        sink_.database_ready_ = true;
    if (!step.lookup.empty()) {
        const ClickHouseSink::Table &t = sink_.tables_.at(step.lookup);
        size_t at = 0;
        while (at < r.body.size()) {
            size_t nl = r.body.find('\n', at);
            if (nl == std::string::npos)
                nl = r.body.size();
            if (nl > at) {
                json row = raw_object(std::string_view(r.body).substr(at, nl - at));
                /* Decimals were read as text (toString): unquoted again, raw. */
                for (const ch::Column &c : t.columns)
                    if (c.kind == ch::Kind::decimal && row.contains(c.name)) {
                        std::string raw = raw_text(row[c.name]);
                        if (!raw.empty() && raw[0] == '"')
                            row[c.name] = kRaw + json::parse(raw).get<std::string>();
                    }
                std::string deleted = raw_text(row["_pgsink_deleted"]);
                row.erase("_pgsink_deleted");
                if (deleted != "1")
                    current_[step.lookup][key_of(t, row)] = row;
            }
            at = nl + 1;
        }
    }
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
        auto got = have.find(c.name);
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

} // namespace pgsink

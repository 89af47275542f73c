/*
 * bigquery_sink.cpp: see bigquery_sink.h.
 *
 * One batch is one exchange: a few requests, one after the other:
 *   1. an access token, if none is held or it is about to expire;
 *   2. DDL: the dataset (once), for each table the batch writes whose
 *      BigQuery table may lack columns: tables.insert, or when it exists
 *      tables.get and tables.patch adding the missing columns; the view
 *      (tables.insert, or tables.patch of its query) for a new Schema;
 *   3. load jobs for large imports (bigquery_load.h), polled until DONE;
 *   4. insertAll requests, per table, within the row and byte limits.
 * A 401 gets a new token and the same request again, once (an upload: the
 * batch again). Answers: insertErrors name rows: "invalid" ones are refused
 * (parked with BigQuery's message) but for a column pgsink added that
 * streaming does not see yet, "stopped" and others are sent again; a whole
 * request refused with 400 is bisected; 403 rateLimitExceeded/quotaExceeded,
 * 429, 404 (a table just made, or dropped: made again), 5xx and the network
 * are retried with back-off (Retry-After honoured).
 *
 * Entries are read once into views of the batch (Entry); import rows of a
 * load go from those views straight into Avro, other changes become
 * insertAll rows (bq::Row). The entries are let go once planned.
 */
#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <deque>
#include <ctime>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "changelog/avro_schema.h"
#include "changelog/civil_date.h"
#include "changelog/entry_head.h"
#include "core/digest.h"
#include "sinks/bigquery_load.h"
#include "sinks/bigquery_sink.h"
#include "changelog/raw_json.h"

namespace pgsink
{

using json = nlohmann::json;
namespace bq = bigquery;

static int64_t now_unix()
{
    return static_cast<int64_t>(time(nullptr));
}

static bool valid_name(const std::string &s, const char *extra, size_t max)
{
    if (s.empty() || s.size() > max)
        return false;
    for (char ch : s)
        if (!isalnum(static_cast<unsigned char>(ch)) && strchr(extra, ch) == nullptr)
            return false;
    return true;
}

BigQuerySink::BigQuerySink(Settings settings) : settings_(std::move(settings))
{
    while (!settings_.endpoint.empty() && settings_.endpoint.back() == '/')
        settings_.endpoint.pop_back();
}

/*
 * Settings and the key file are checked at every open(): what is wrong is a
 * retryable error, shown in pgsink.sinks and retried with back-off, so that
 * a fix (a reload, a key file put in place) is taken up without a restart.
 */
bool BigQuerySink::open(const Resume &)
{
    if (settings_.endpoint.rfind("https://", 0) != 0 && settings_.endpoint.rfind("http://", 0) != 0)
        throw SinkError("pgsink.bigquery_endpoint must be an http(s) URL", true);
    try {
        auth_.load(settings_.credentials); /* what is wrong with the file, never its content */
    } catch (const std::runtime_error &e) {
        throw SinkError(e.what(), true);
    }
    if (settings_.project.empty())
        settings_.project = auth_.project_id();
    if (!valid_name(settings_.project, "-.:", 100))
        throw SinkError("pgsink.bigquery_project is not set or not a BigQuery project id (letters, "
                        "digits, '-', '.', ':'); the key file's project_id is used when it is "
                        "empty",
                        true);
    if (!valid_name(settings_.dataset, "_", 1024))
        throw SinkError("pgsink.bigquery_dataset must be a BigQuery dataset id: 1 to 1024 "
                        "letters, digits and underscores",
                        true);
    if (settings_.location.find_first_of("\"\\\r\n") != std::string::npos)
        throw SinkError("pgsink.bigquery_location is not a BigQuery location", true);
    /* The sink learns each table's columns from the Schema entries: told again at every start. */
    tables_.clear();
    location_.clear();
    fields_.clear();
    refused_.clear();
    refused_columns_.clear();
    dataset_ready_ = false;
    return true;
}

std::string BigQuerySink::describe() const
{
    return "bigquery " + url_for_messages(settings_.endpoint) + " dataset " + settings_.project +
           "." + settings_.dataset;
}

std::string BigQuerySink::state() const
{
    return "bigquery " +
           sha256_hex(settings_.endpoint + "\n" + settings_.project + "\n" + settings_.dataset, 16);
}

std::string BigQuerySink::api(const std::string &path) const
{
    return settings_.endpoint + "/bigquery/v2/projects/" + settings_.project + path;
}

std::string BigQuerySink::table_path(const std::string &table) const
{
    return api("/datasets/" + settings_.dataset + "/tables/" + table);
}

/* ------------------------------------------------ raw JSON values of a line */

using raw_json::skip_space;
using raw_json::value_end;

/* A JSON string's text (s is "..."): unescaped only when it must be. */
static std::string unquote(std::string_view s)
{
    if (s.size() >= 2 && s.front() == '"' && s.find('\\') == std::string_view::npos)
        return std::string(s.substr(1, s.size() - 2));
    return json::parse(s).get<std::string>();
}

/*
 * The members of the JSON object at s[i]: each name (a view of s, or of
 * its text kept in arena when it has escapes) and the place of its value,
 * to value(name, at), which returns where the value ends. Returns where the
 * object ends.
 */
template <class Value>
static size_t for_each_member(std::string_view s, size_t i, std::deque<std::string> *arena,
                              Value value)
{
    i = skip_space(s, i);
    if (i >= s.size() || s[i] != '{')
        throw std::runtime_error("not a JSON object");
    i = skip_space(s, i + 1);
    while (i < s.size() && s[i] != '}') {
        if (s[i] != '"')
            throw std::runtime_error("a JSON member's name is not a string");
        size_t key_end = raw_json::string_end(s, i);
        std::string_view key = s.substr(i, key_end - i);
        if (key.find('\\') == std::string_view::npos) {
            key = key.substr(1, key.size() - 2);
        } else {
            arena->push_back(json::parse(key).get<std::string>());
            key = arena->back();
        }
        i = skip_space(s, key_end);
        if (i >= s.size() || s[i] != ':')
            throw std::runtime_error("a JSON member has no value");
        i = skip_space(s, value(key, skip_space(s, i + 1)));
        if (i < s.size() && s[i] == ',')
            i = skip_space(s, i + 1);
    }
    if (i >= s.size())
        throw std::runtime_error("a JSON object has no end");
    return i + 1;
}

/*
 * The members of a JSON object: each name, and its value's exact text, as
 * views of s (a name with escapes: of its text, kept in arena).
 */
using Members = std::vector<std::pair<std::string_view, std::string_view>>;
/* The object's members at s[i] appended to *out; returns where it ends. */
static size_t members_into(std::string_view s, size_t i, std::deque<std::string> *arena,
                           Members *out)
{
    return for_each_member(s, i, arena, [&](std::string_view key, size_t at) {
        size_t end = value_end(s, at);
        out->emplace_back(key, s.substr(at, end - at));
        return end;
    });
}

/*
 * A changelog entry, read without a JSON library's tree: the rows' values
 * stay their exact text (numbers keep their digits), as views of the batch.
 */
struct Entry {
    bool schema = false, change = false;
    json schema_json; /* a Schema entry's "schema" */
    std::string op, lsn, xid, resync_since;
    std::string_view timestamp;
    std::string_view timestamp_raw;  /* its JSON text */
    const std::string *ns = nullptr; /* "schema.table" as the Schema entry names it */
    std::string_view nsp_raw, rel_raw;
    uint64_t sequence = 0;
    bool has_before = false, has_after = false; /* an object, not null */
    Members before, after;
    /* An import's "after", its members not read yet: read once, when its row is made. */
    std::string_view after_raw;
    bool after_unchecked = false; /* taken to end where the line does: not yet checked */
    std::vector<std::string> unchanged;
};

/* A JSON string as a view: of s when it has no escapes, else of its text kept in arena. */
static std::string_view string_view_of(std::string_view s, std::deque<std::string> *arena)
{
    if (s.size() >= 2 && s.front() == '"' && s.find('\\') == std::string_view::npos)
        return s.substr(1, s.size() - 2);
    arena->push_back(json::parse(s).get<std::string>());
    return arena->back();
}

/*
 * The entry of line; prev (the entry before, or nullptr) lends its table
 * name. whole: every member read, even of an import (see after_raw).
 */
static Entry entry_of(std::string_view line, std::deque<std::string> *arena, const Entry *prev,
                      bool whole = false)
{
    Entry e;
    /* The members an import's row needs, seen (pgsink writes them before "after"). */
    enum { TS = 1, SEQ = 2, NSP = 4, REL = 8, OP = 16, LSN = 32, XID = 64, ALL = 127 };
    int seen = 0;
    /* One pass over the line: "after" and "before" read as they are found. */
    for_each_member(line, 0, arena, [&](std::string_view key, size_t at) -> size_t {
        if ((key == "after" || key == "before") && at < line.size() && line[at] == '{') {
            bool after = key == "after";
            if (after && e.op == "import") {
                /* Most of an import's batch: no vector of members per line. */
                e.has_after = true;
                if (!whole && seen == ALL) {
                    /*
                     * Everything else it needs was seen: "after" taken to
                     * end where the line does, not scanned here. Its members
                     * are read when the row is encoded, which checks that
                     * the object ends there (after_unchecked).
                     */
                    size_t last = line.find_last_not_of(" \t\r\n");
                    size_t end = last == std::string_view::npos || last == 0
                                     ? std::string_view::npos
                                     : line.find_last_not_of(" \t\r\n", last - 1);
                    if (end != std::string_view::npos && end >= at && line[last] == '}' &&
                        line[end] == '}') {
                        e.after_raw = line.substr(at, end + 1 - at);
                        e.after_unchecked = true;
                        return last;
                    }
                }
                size_t end = value_end(line, at);
                e.after_raw = line.substr(at, end - at);
                return end;
            }
            Members &into = after ? e.after : e.before;
            (after ? e.has_after : e.has_before) = true;
            into.reserve(8);
            return members_into(line, at, arena, &into);
        }
        size_t end = value_end(line, at);
        std::string_view raw = line.substr(at, end - at);
        switch (key.size()) {
        case 2:
            if (key == "op") {
                seen |= OP;
                e.change = true;
                e.op = unquote(raw);
            }
            break;
        case 3:
            if (key == "lsn") {
                seen |= LSN;
                e.lsn = unquote(raw);
            } else if (key == "xid") {
                seen |= XID;
                if (raw != "null")
                    e.xid = std::string(raw);
            }
            break;
        case 4:
            if (key == "name") {
                seen |= REL;
                e.rel_raw = raw;
            }
            break;
        case 6:
            if (key == "schema") {
                e.schema = true;
                e.schema_json = json::parse(raw);
            }
            break;
        case 8:
            if (key == "sequence") {
                seen |= SEQ;
                std::from_chars(raw.data(), raw.data() + raw.size(), e.sequence);
            }
            break;
        case 9:
            if (key == "namespace") {
                seen |= NSP;
                e.nsp_raw = raw;
            } else if (key == "timestamp") {
                seen |= TS;
                e.timestamp = string_view_of(raw, arena);
                e.timestamp_raw = raw;
            } else if (key == "unchanged")
                for (const json &u : json::parse(raw))
                    e.unchanged.push_back(u.get<std::string>());
            break;
        case 12:
            if (key == "resync_since" && raw != "null")
                e.resync_since = unquote(raw);
            break;
        }
        return end;
    });
    /* The table as its Schema entry names it (Avro names); the same as the entry before's, often.
     */
    if (prev != nullptr && prev->ns != nullptr && prev->nsp_raw == e.nsp_raw &&
        prev->rel_raw == e.rel_raw) {
        e.ns = prev->ns;
    } else if (e.change) {
        std::string nsp = e.nsp_raw.empty() ? "" : unquote(e.nsp_raw);
        std::string rel = e.rel_raw.empty() ? "" : unquote(e.rel_raw);
        arena->push_back(avro_name(nsp) + "." + avro_name(rel));
        e.ns = &arena->back();
    }
    return e;
}

/* ------------------------------------------------------------ the exchange */

using TablePtr = std::shared_ptr<const BigQuerySink::Table>;

/*
 * Marks a value that is insertAll's JSON text already (read from BigQuery),
 * not the changelog's: no changelog value starts with it.
 */
static const char kReady = '\x01';

/* Key changes whose unchanged values one jobs.query reads at most. */
static const size_t kLookupsPerQuery = 20;

class BigQueryExchange final : public HttpSink::Exchange
{
  public:
    BigQueryExchange(BigQuerySink &sink, std::string_view lines, const std::string &key);
    HttpRequest next() override;
    std::optional<Answer> answer(const HttpResponse &response) override;

  private:
    enum class Step {
        token,
        noop,
        dataset,
        table_insert,
        table_get,
        table_patch,
        view_insert,
        view_patch,
        load_insert,
        load_get,
        query,
        query_results,
        wait,
        insert_all
    };
    struct Request {
        Step step;
        TablePtr table;
        std::string body;
        size_t load = 0;                 /* loads_ index */
        size_t query = 0;                /* queries_ index */
        std::vector<size_t> row_entries; /* insert_all: the entry of each row */
        long delay_ms = 0;
    };
    struct Load {
        TablePtr table;
        std::vector<size_t> entries;
        std::string job_id;
        std::string boundary; /* of its multipart body */
        int polls = 0;
    };
    /*
     * The values of a key change's unchanged TOASTed columns, read from the
     * raw table (jobs.query) when the old key's row came in an earlier batch.
     */
    struct Lookup {
        size_t entry = 0;
        TablePtr table;
        std::vector<std::string> key_values;      /* query parameter values, by t->key */
        uint64_t lsn = 0, sequence = 0;           /* of the key change: rows before it */
        std::vector<std::string> columns;         /* BigQuery names */
        std::map<std::string, std::string> found; /* column -> insertAll JSON text */
        std::string problem;                      /* why it cannot be read, or "" */
    };
    /* One jobs.query: lookups of one table, each a part of a UNION ALL. */
    struct Query {
        TablePtr table;
        std::vector<size_t> lookups;
        std::vector<std::string> columns; /* every lookup's */
        std::string job_id, location, page_token;
        int polls = 0;
    };
    void plan_entries();
    void need_lookup(size_t i, const Entry &e, const TablePtr &t,
                     const std::vector<std::string_view> &old,
                     const std::vector<std::string> &columns);
    void plan_queries();
    void plan_again();
    std::string query_json(const Query &g) const;
    void read_query_rows(Query &g, const json &answer);
    std::string load_job_id(const std::string &raw, const BigQuerySink::Table &t,
                            const std::vector<size_t> &entries) const;
    void rows_for(size_t i, const Entry &e, const TablePtr &t, std::vector<bq::Row> *made);
    void after_members(size_t i, const Entry &e, Members *out);
    void stream(const TablePtr &t, const std::vector<size_t> &entries);
    void plan_ddl();
    void plan_loads();
    void plan_inserts();
    std::optional<Answer> advance();
    bool new_column(const std::string &raw, const json &error) const;
    std::optional<Answer> failure(const HttpResponse &r, const Request &q);
    void refuse(size_t entry, const std::string &why);
    void refuse_table(const BigQuerySink::Table &t, const std::string &why,
                      const std::string &column = "");
    std::string raw_name(const BigQuerySink::Table &t) const { return t.name + "_raw"; }
    std::string table_json(const BigQuerySink::Table &t) const;
    std::string view_json(const BigQuerySink::Table &t) const;
    std::string what(const Request &q) const;
    void loaded(Load &l, const json &job, std::optional<Answer> *out);

    BigQuerySink &sink_;
    std::string stream_;                     /* the sink's, when the exchange was made */
    std::deque<std::string> arena_;          /* member names with escapes, decoded */
    std::vector<Entry> entries_;             /* parsed; let go after plan_loads() */
    std::vector<std::string_view> lines_of_; /* each entry's line in the batch */
    std::map<std::string, std::shared_ptr<const BigQuerySink::Table>> before_;
    std::vector<TablePtr> used_;      /* tables rows go to */
    std::vector<TablePtr> announced_; /* this batch's Schemas */
    /* Rows by raw table and the table's version (refused_for() tells versions apart). */
    std::map<std::string, std::pair<TablePtr, std::vector<bq::Row>>> rows_;
    std::string group_key(const BigQuerySink::Table &t) const
    {
        return raw_name(t) + '\x1f' + std::to_string(t.version);
    }
    bool refused_for(const BigQuerySink::Table &t, std::string *why) const;
    struct ImportGroup {
        TablePtr table;
        std::vector<size_t> entries;
        bool mixed = false; /* of several versions of the table */
    };
    std::map<std::string, ImportGroup> imports_; /* by raw name */
    bool need_latest_ = false;
    /* The latest values written in this batch per table and key (for a key change's TOAST). */
    std::map<std::string, std::map<std::string, std::map<std::string, std::string>>> latest_;
    std::vector<Load> loads_;
    std::vector<Request> steps_;
    size_t at_ = 0;
    int phase_ = 0; /* 0: DDL, 1: loads, 2: inserts */
    bool refreshed_ = false;
    uint64_t generation_ = 0;             /* of the token sent */
    std::map<size_t, Answer::Entry> out_; /* entries not taken, by index */
    std::vector<Lookup> lookups_;
    std::map<size_t, size_t> lookup_of_; /* entry -> lookups_ index */
    std::vector<Query> queries_;
    bool lookups_read_ = false;            /* entries planned again with the values read */
    std::map<size_t, TablePtr> schema_at_; /* entry -> its Schema's table */
    Earlier earlier_ = Earlier::done;
    int waits_ = 0; /* wait steps so far */

  public:
    void set_earlier(Earlier earlier) override { earlier_ = earlier; }
};

static std::string lower(std::string s)
{
    for (char &ch : s)
        ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
    return s;
}

/* The table a Schema entry describes. */
static BigQuerySink::Table table_of(const json &s, uint64_t version)
{
    BigQuerySink::Table t;
    t.ns = s.value("namespace", "");
    size_t dot = t.ns.find('.');
    if (dot == std::string::npos)
        throw std::runtime_error("a Schema entry without a \"schema.table\" namespace");
    t.name = bq::table_name(t.ns.substr(0, dot), t.ns.substr(dot + 1));
    t.version = version;
    std::vector<std::string> pg_key;
    for (const json &k : s.value("key", json::array()))
        pg_key.push_back(k.get<std::string>());
    std::set<std::string> seen;
    for (const json &f : s["fields"]) {
        std::string name = f.value("name", "");
        std::string pg_name = f.contains("pg_name") ? f["pg_name"].get<std::string>() : name;
        bool is_key = std::find(pg_key.begin(), pg_key.end(), pg_name) != pg_key.end();
        t.columns.push_back(bq::column_for(name, pg_name, f.value("pg_type", ""), is_key));
        if (is_key)
            t.key.push_back(name);
        std::string problem = bq::name_problem(name);
        if (problem.empty() && !seen.insert(lower(name)).second)
            problem = "BigQuery column names are the same without regard to case, and another "
                      "column has this name";
        if (!problem.empty() && t.refused.empty())
            t.refused = "table " + t.ns + " cannot be held in BigQuery: column " + pg_name + " (" +
                        name + "): " + problem + "; rename the column";
    }
    /* The key in key order (the Schema entry's), not the columns' order. */
    std::vector<std::string> ordered;
    for (const std::string &k : pg_key)
        for (const bq::Column &c : t.columns)
            if (c.pg_name == k)
                ordered.push_back(c.name);
    t.key = ordered;
    return t;
}

BigQueryExchange::BigQueryExchange(BigQuerySink &sink, std::string_view lines,
                                   const std::string & /* key: load job ids come from the rows */)
    : sink_(sink), stream_(sink.stream_)
{
    size_t count = 1;
    for (const char *p = lines.data(), *end = p + lines.size();
         (p = static_cast<const char *>(memchr(p, '\n', static_cast<size_t>(end - p)))) != nullptr;
         p++)
        count++;
    entries_.reserve(count);
    size_t at = 0;
    while (at < lines.size()) {
        size_t nl = lines.find('\n', at);
        if (nl == std::string_view::npos)
            nl = lines.size();
        try {
            entries_.push_back(nl > at ? entry_of(lines.substr(at, nl - at), &arena_,
                                                  entries_.empty() ? nullptr : &entries_.back())
                                       : Entry());
        } catch (const std::bad_alloc &) {
            throw;
        } catch (const std::exception &e) {
            /* A line that is not a changelog entry fails every attempt: refused (parked). */
            throw EntryError(std::string("an entry the sink cannot read: ") + e.what());
        }
        lines_of_.push_back(lines.substr(at, nl - at));
        at = nl + 1;
    }
    before_ = sink_.tables_;
    plan_entries();
    if (!sink_.auth_.valid(now_unix()))
        steps_.push_back(Request{Step::token, nullptr});
    plan_ddl();
    plan_queries(); /* the batch is planned again once they are answered */
    if (steps_.empty())
        plan_again();
    if (steps_.empty())
        plan_loads();
    if (steps_.empty())
        plan_inserts();
    if (steps_.empty())
        /* Nothing to write (entries refused, or only Schemas): the dataset is read, to answer. */
        steps_.push_back(Request{Step::noop, nullptr});
}

void BigQueryExchange::refuse(size_t entry, const std::string &why)
{
    out_[entry] = Answer::Entry{entry, false, 0, why};
}

/* Every entry's rows, with the table in effect at the entry. */
void BigQueryExchange::plan_entries()
{
    std::map<std::string, TablePtr> now = before_;
    /* Only a key-changing update that left a TOASTed column unchanged needs latest_. */
    need_latest_ = std::any_of(entries_.begin(), entries_.end(), [](const Entry &e) {
        return !e.unchanged.empty() && e.has_before && e.op == "update";
    });
    TablePtr group_table;
    std::pair<TablePtr, std::vector<bq::Row>> *group = nullptr;
    std::vector<bq::Row> made;
    /* The import group of the entry before (and its table's name): most of an import's batch. */
    const std::string *import_ns = nullptr;
    ImportGroup *import_group = nullptr;
    for (size_t i = 0; i < entries_.size(); i++) {
        const Entry &e = entries_[i];
        if (import_group != nullptr && e.ns == import_ns && e.change && e.op == "import") {
            import_group->entries.push_back(i);
            continue;
        }
        if (e.schema && lookups_read_) {
            /* Planned again (with values read from BigQuery): the same tables. */
            import_group = nullptr;
            const TablePtr &t = schema_at_.at(i);
            now[t->ns] = t;
            continue;
        }
        if (e.schema) {
            import_group = nullptr; /* the table may change */
            std::shared_ptr<BigQuerySink::Table> t;
            try {
                t = std::make_shared<BigQuerySink::Table>(
                    table_of(e.schema_json, ++sink_.versions_));
            } catch (const std::bad_alloc &) {
                throw;
            } catch (const std::exception &x) {
                /* A Schema entry it cannot read fails every attempt: refused (parked). */
                throw EntryError(std::string("a Schema entry the sink cannot read: ") + x.what());
            }
            parse_lsn(e.lsn.c_str(), e.lsn.size(), &t->schema_lsn);
            now[t->ns] = t;
            /*
             * The table's latest Schema, for the batches after this one: an
             * older batch sent again (batches are in flight together) does
             * not bring back the columns of its time.
             */
            auto known = sink_.tables_.find(t->ns);
            if (known == sink_.tables_.end() || known->second->schema_lsn <= t->schema_lsn)
                sink_.tables_[t->ns] = t;
            sink_.refused_.erase(raw_name(*t)); /* checked again */
            sink_.refused_columns_.erase(raw_name(*t));
            announced_.push_back(t);
            schema_at_[i] = t;
            continue;
        }
        if (!e.change)
            continue;
        /*
         * A dropped table: its BigQuery tables are kept (the history, and
         * the last rows); a resync's start: nothing to write, its end
         * carries the rule. Neither needs the table's Schema.
         */
        if (e.op == "drop" || e.op == "resync_start")
            continue;
        static const std::set<std::string> known_ops = {"insert",   "update", "delete",
                                                        "truncate", "import", "resync_end"};
        if (!known_ops.count(e.op)) {
            refuse(i, "the BigQuery sink does not know the entry's op \"" + e.op +
                          "\" (a newer pgsink wrote it?)");
            continue;
        }
        auto found = now.find(*e.ns);
        if (found == now.end()) {
            /* A batch that can never succeed would hold the cursor for good: refused. */
            refuse(i, "no Schema entry of " + *e.ns + " before its changes");
            continue;
        }
        TablePtr t = found->second;
        if (!t->refused.empty()) {
            refuse(i, t->refused);
            continue;
        }
        if (std::find(used_.begin(), used_.end(), t) == used_.end())
            used_.push_back(t);
        if (e.op == "import" && !need_latest_) {
            /* Rows made later: loaded straight from the entries, or streamed. */
            ImportGroup &g = imports_[raw_name(*t)];
            if (g.table && g.table != t)
                g.mixed = true; /* a Schema change in the middle: streamed */
            g.table = t;
            g.entries.push_back(i);
            import_ns = e.ns;
            import_group = &g;
            continue;
        }
        made.clear();
        try {
            rows_for(i, e, t, &made);
        } catch (const bq::Refusal &r) {
            refuse(i, r.what());
            continue;
        }
        if (group == nullptr || group_table != t) {
            group = &rows_[group_key(*t)];
            group->first = t;
            group_table = t;
        }
        for (bq::Row &r : made)
            group->second.push_back(std::move(r));
    }
}

/*
 * Entry i's "after", read only now (entry_of() took it unread), into out:
 * Refusal (the entry alone is parked) if it, or the rest of its line, is
 * not JSON.
 */
void BigQueryExchange::after_members(size_t i, const Entry &e, Members *out)
{
    try {
        size_t end = members_into(e.after_raw, 0, &arena_, out);
        /* Members after "after" (not pgsink's order): the line read whole, to be sure of it. */
        if (e.after_unchecked && end != e.after_raw.size())
            entry_of(lines_of_.at(i), &arena_, nullptr, true);
    } catch (const std::bad_alloc &) {
        throw;
    } catch (const bq::Refusal &) {
        throw;
    } catch (const std::exception &x) {
        throw bq::Refusal(std::string("an entry the sink cannot read: ") + x.what());
    }
}

/*
 * The rows of entry i (a change of table t): usually one, two for an update
 * that changes the key. Throws Refusal for a value t cannot hold.
 */
void BigQueryExchange::rows_for(size_t i, const Entry &e, const TablePtr &t,
                                std::vector<bq::Row> *made)
{
    const std::string &ns = *e.ns;
    const std::string &op = e.op;
    const std::string &lsn_text = e.lsn;
    uint64_t lsn = 0;
    if (!parse_lsn(lsn_text.c_str(), lsn_text.size(), &lsn) || lsn > uint64_t(INT64_MAX)) {
        throw bq::Refusal("the entry's lsn \"" + lsn_text + "\" is not one BigQuery's INT64 holds");
    }
    uint64_t seq = e.sequence;
    std::string id = lsn_text + "/" + std::to_string(seq);
    /* The changelog's JSON texts where insertAll takes them as they are (one of known_ops). */
    std::string timestamp = !e.timestamp_raw.empty() && e.timestamp_raw.front() == '"'
                                ? std::string(e.timestamp_raw)
                                : json(std::string(e.timestamp)).dump();
    std::string op_text = "\"" + op + "\"", delete_text = "\"delete\"";
    auto meta = [&](bq::Row &row, bool deleted, const std::vector<std::string> &unchanged) {
        row.values.emplace_back("_pgsink_lsn", std::to_string(lsn));
        row.values.emplace_back("_pgsink_sequence", std::to_string(seq));
        /* The old key of an update that changed it: a delete of that key. */
        row.values.emplace_back("_pgsink_op", deleted ? delete_text : op_text);
        row.values.emplace_back("_pgsink_timestamp", timestamp);
        if (!e.xid.empty())
            row.values.emplace_back("_pgsink_xid", e.xid);
        std::string list = "[";
        for (const std::string &u : unchanged)
            list += (list.size() > 1 ? "," : "") + json(u).dump();
        row.values.emplace_back("_pgsink_unchanged", list + "]");
    };
    /* The raw texts of a row's columns, by the columns' place (no data: not in the row). */
    using Values = std::vector<std::string_view>;
    auto values_of = [&](const Members &values) {
        Values v(t->columns.size());
        size_t hint = 0; /* members come in the columns' order, usually */
        for (const auto &[name, raw] : values)
            for (size_t k = 0; k < t->columns.size(); k++) {
                size_t c = (hint + k) % t->columns.size();
                if (t->columns[c].pg_name == name) {
                    v[c] = raw;
                    hint = c + 1;
                    break;
                }
            }
        return v;
    };
    auto key_of = [&](const Values &v) {
        std::string k;
        for (const std::string &name : t->key)
            for (size_t c = 0; c < t->columns.size(); c++)
                if (t->columns[c].name == name)
                    k += std::string(v[c].data() ? v[c] : "null") + '\x1f';
        return k;
    };
    auto make_row = [&](const Values &v, const std::string &row_id, bool deleted,
                        const std::vector<std::string> &unchanged) {
        bq::Row row;
        row.entry = i;
        row.insert_id = row_id;
        row.values.reserve(v.size() + 6);
        for (size_t c = 0; c < t->columns.size(); c++)
            if (v[c].data() != nullptr)
                row.values.emplace_back(t->columns[c].name,
                                        !v[c].empty() && v[c][0] == kReady
                                            ? std::string(v[c].substr(1))
                                            : bq::insert_value(t->columns[c], std::string(v[c])));
        meta(row, deleted, unchanged);
        return row;
    };
    /* What a row keeps for a later key change of this batch. */
    auto remember = [&](const std::string &k, const Values &v) {
        auto &known = latest_[ns][k];
        for (size_t c = 0; c < v.size(); c++)
            if (v[c].data() != nullptr)
                known[t->columns[c].name] = std::string(v[c]);
    };
    std::vector<std::string> carried; /* values a key change takes from the batch */
    if (!e.unchanged.empty())
        carried.reserve(t->columns.size()); /* never moved: rows point into its strings */
    {
        if (op == "truncate" || op == "resync_end") {
            bq::Row row;
            row.entry = i;
            row.insert_id = id;
            meta(row, false, {});
            if (op == "resync_end") {
                /* The resync rule: rows written before resync_since are gone here. */
                uint64_t since = 0;
                if (!parse_lsn(e.resync_since.c_str(), e.resync_since.size(), &since) ||
                    since > uint64_t(INT64_MAX))
                    throw bq::Refusal("a resync_end without a valid resync_since");
                row.values.emplace_back("_pgsink_resync_since", std::to_string(since));
            }
            made->push_back(std::move(row));
            if (need_latest_ && op == "truncate")
                latest_[ns].clear();
        } else if (op == "delete") {
            if (!e.has_before) /* REPLICA IDENTITY NOTHING: no key to delete by */
                throw bq::Refusal(kNoOldKey);
            auto v = values_of(e.before);
            made->push_back(make_row(v, id, true, {}));
            if (need_latest_)
                latest_[ns].erase(key_of(v));
        } else {
            Members read;
            if (!e.after_raw.empty())
                after_members(i, e, &read);
            auto v = values_of(e.after_raw.empty() ? e.after : read);
            std::vector<std::string> unchanged;
            for (const std::string &u : e.unchanged)
                for (const bq::Column &c : t->columns)
                    if (c.pg_name == u)
                        unchanged.push_back(c.name);
            std::string k = need_latest_ ? key_of(v) : std::string();
            if (op == "update" && e.has_before && !t->key.empty()) {
                if (k.empty())
                    k = key_of(v);
                auto old = values_of(e.before);
                std::string old_key = key_of(old);
                if (old_key != k) {
                    /*
                     * The old key's row is gone; unchanged values came from
                     * it: from this batch, else read from BigQuery first.
                     */
                    if (!unchanged.empty()) {
                        auto source = latest_[ns].find(old_key);
                        bool in_batch = source != latest_[ns].end();
                        std::vector<std::string> missing;
                        for (const std::string &u : unchanged)
                            if (!in_batch || !source->second.count(u))
                                missing.push_back(u);
                        const Lookup *read = nullptr;
                        if (!missing.empty()) {
                            auto l = lookup_of_.find(i);
                            if (l != lookup_of_.end())
                                read = &lookups_[l->second];
                            else if (!lookups_read_)
                                need_lookup(i, e, t, old, missing); /* this row is planned again */
                            else
                                throw bq::Refusal("an update changed the key and left the TOASTed "
                                                  "column " +
                                                  missing.front() +
                                                  " unchanged, and its value was not read");
                        }
                        for (const std::string &u : unchanged) {
                            if (in_batch && source->second.count(u)) {
                                carried.push_back(source->second[u]);
                            } else if (read != nullptr) {
                                auto f = read->found.find(u);
                                if (!read->problem.empty())
                                    throw bq::Refusal(read->problem);
                                if (f == read->found.end())
                                    throw bq::Refusal(
                                        "an update changed the key and left the TOASTed column " +
                                        u +
                                        " unchanged, and BigQuery's raw table holds no value of "
                                        "it for the old key (its row was never delivered, or "
                                        "parked): import the table again to send the row whole");
                                carried.push_back(kReady + f->second);
                            } else {
                                continue; /* read from BigQuery first */
                            }
                            for (size_t c = 0; c < t->columns.size(); c++)
                                if (t->columns[c].name == u)
                                    v[c] = carried.back();
                        }
                        unchanged.clear();
                    }
                    made->push_back(make_row(old, id + "/old", true, {}));
                    if (need_latest_)
                        latest_[ns].erase(old_key);
                }
            }
            made->push_back(make_row(v, id, false, unchanged));
            if (need_latest_)
                remember(k, v);
        }
    }
}

/*
 * Entry i (a key change of table t) needs the values of columns, which its
 * old key's rows sent in an earlier batch: read from BigQuery first, then
 * the batch is planned again.
 */
void BigQueryExchange::need_lookup(size_t i, const Entry &e, const TablePtr &t,
                                   const std::vector<std::string_view> &old,
                                   const std::vector<std::string> &columns)
{
    Lookup l;
    l.entry = i;
    l.table = t;
    l.columns = columns;
    l.sequence = e.sequence;
    parse_lsn(e.lsn.c_str(), e.lsn.size(), &l.lsn); /* checked by rows_for() */
    for (const std::string &name : t->key)
        for (size_t c = 0; c < t->columns.size(); c++) {
            const bq::Column &col = t->columns[c];
            if (col.name != name)
                continue;
            if (col.repeated || col.kind == bq::Kind::json || old[c].data() == nullptr)
                l.problem =
                    ("an update changed the key and left the TOASTed column " + columns.front() +
                     " unchanged; its value is in BigQuery only, "
                     "and key column " +
                     col.name +
                     " cannot be looked up (an "
                     "array, JSON or no value): import the table again");
            if (!l.problem.empty())
                break;
            std::string value = bq::insert_value(col, std::string(old[c]));
            if (!value.empty() && value[0] == '"')
                value = json::parse(value).get<std::string>();
            l.key_values.push_back(value);
        }
    lookup_of_[i] = lookups_.size();
    lookups_.push_back(std::move(l));
}

/* The jobs.query requests of the lookups: per table, kLookupsPerQuery at most each. */
void BigQueryExchange::plan_queries()
{
    std::map<std::string, std::vector<size_t>> by_table;
    for (size_t n = 0; n < lookups_.size(); n++)
        if (lookups_[n].problem.empty())
            by_table[raw_name(*lookups_[n].table)].push_back(n);
    for (auto &[raw, list] : by_table)
        for (size_t from = 0; from < list.size(); from += kLookupsPerQuery) {
            Query g;
            g.table = lookups_[list[from]].table;
            for (size_t k = from; k < std::min(list.size(), from + kLookupsPerQuery); k++) {
                g.lookups.push_back(list[k]);
                for (const std::string &c : lookups_[list[k]].columns)
                    if (std::find(g.columns.begin(), g.columns.end(), c) == g.columns.end())
                        g.columns.push_back(c);
            }
            Request q{Step::query, g.table, query_json(g)};
            q.query = queries_.size();
            queries_.push_back(std::move(g));
            steps_.push_back(std::move(q));
        }
}

/*
 * The query of g: per lookup, one row: its number, and for each column an
 * array of at most one STRUCT holding the latest value the raw table
 * received for the old key before the key change (by the view's rule: not
 * a delete, not listed in _pgsink_unchanged); empty when none was. Values
 * are query parameters, never in the SQL text.
 */
std::string BigQueryExchange::query_json(const Query &g) const
{
    const BigQuerySink::Table &t = *g.table;
    std::string ref = sink_.settings_.project + "." + sink_.settings_.dataset + "." + raw_name(t);
    std::string sql;
    json params = json::array();
    auto param = [&](const std::string &name, const char *type, const std::string &value) {
        params.push_back({{"name", name},
                          {"parameterType", {{"type", type}}},
                          {"parameterValue", {{"value", value}}}});
    };
    for (size_t n = 0; n < g.lookups.size(); n++) {
        const Lookup &l = lookups_[g.lookups[n]];
        std::string ns = std::to_string(n);
        std::string part = "SELECT " + ns + " AS _pgsink_n";
        for (const std::string &c : g.columns)
            part += ", ARRAY_AGG(IF(_pgsink_op = 'delete' OR " + json(c).dump() +
                    " IN UNNEST(_pgsink_unchanged), NULL, STRUCT(" + bq::quote(c) +
                    " AS v)) IGNORE NULLS ORDER BY _pgsink_lsn DESC, _pgsink_sequence DESC "
                    "LIMIT 1) AS " +
                    bq::quote(c);
        part += " FROM " + bq::quote(ref) + " WHERE ";
        for (size_t k = 0; k < t.key.size(); k++) {
            std::string name = "k" + ns + "_" + std::to_string(k);
            const char *type = "STRING";
            for (const bq::Column &c : t.columns)
                if (c.name == t.key[k])
                    type = bq::type_name(c.kind);
            part += bq::quote(t.key[k]) + " = @" + name + " AND ";
            param(name, type, l.key_values.at(k));
        }
        part += "(_pgsink_lsn < @l" + ns + " OR (_pgsink_lsn = @l" + ns +
                " AND _pgsink_sequence < @s" + ns + "))";
        param("l" + ns, "INT64", std::to_string(l.lsn));
        param("s" + ns, "INT64", std::to_string(l.sequence));
        sql += (n > 0 ? " UNION ALL " : "") + part;
    }
    json body = {{"query", sql},
                 {"useLegacySql", false},
                 {"parameterMode", "NAMED"},
                 {"queryParameters", params},
                 {"useQueryCache", false},
                 {"timeoutMs", 10000},
                 {"formatOptions", {{"useInt64Timestamp", true}}}};
    if (!sink_.location().empty())
        body["location"] = sink_.location();
    return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

/* Microseconds since 1970 as a TIMESTAMP insertAll takes: "YYYY-MM-DD HH:MM:SS.ffffffZ". */
static std::string timestamp_text(int64_t us)
{
    int64_t days = floor_div(us, 86400000000LL);
    int64_t rest = us - days * 86400000000LL;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    char out[64];
    snprintf(out, sizeof(out), "%04lld-%02lld-%02lld %02lld:%02lld:%02lld.%06lldZ",
             static_cast<long long>(y), static_cast<long long>(m), static_cast<long long>(d),
             static_cast<long long>(rest / 3600000000LL),
             static_cast<long long>(rest / 60000000LL % 60),
             static_cast<long long>(rest / 1000000LL % 60), static_cast<long long>(rest % 1000000));
    return out;
}

/* A value of a query's answer (rows' "v", formatOptions.useInt64Timestamp) as insertAll's JSON. */
static std::string query_value(const bq::Column &c, const json &v, bool element = false)
{
    if (v.is_null())
        return "null";
    if (c.repeated && !element) {
        if (!v.is_array())
            throw std::runtime_error("an array column's value is not an array");
        std::string out = "[";
        for (const json &x : v) {
            if (!x.is_object() || !x.contains("v"))
                throw std::runtime_error("an array element is not {\"v\": ...}");
            out += (out.size() > 1 ? "," : "") + query_value(c, x["v"], true);
        }
        return out + "]";
    }
    if (!v.is_string())
        throw std::runtime_error("a value is not a string");
    std::string text = v.get<std::string>();
    if (c.kind == bq::Kind::timestamp) {
        int64_t us = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), us);
        if (ec != std::errc() || end != text.data() + text.size())
            throw std::runtime_error("a TIMESTAMP is not microseconds");
        return json(timestamp_text(us)).dump();
    }
    /* JSON: a string holding the JSON text, as insertAll takes it; the others their text. */
    return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

/* The rows of a jobs.query answer (or a page of it): each lookup's values. */
void BigQueryExchange::read_query_rows(Query &g, const json &answer)
{
    const json none = json::array();
    const json &schema = answer.contains("schema") && answer["schema"].is_object()
                             ? answer["schema"].value("fields", none)
                             : none;
    std::map<std::string, size_t> at;
    for (size_t k = 0; k < schema.size(); k++)
        if (schema[k].is_object())
            at[lower(schema[k].value("name", ""))] = k;
    if (!answer.contains("rows"))
        return;
    if (!at.count("_pgsink_n"))
        throw std::runtime_error("the query's answer has no _pgsink_n column");
    for (const json &row : answer["rows"]) {
        const json &f = row.at("f");
        size_t n = std::stoul(f.at(at["_pgsink_n"]).at("v").get<std::string>());
        if (n >= g.lookups.size())
            continue;
        Lookup &l = lookups_[g.lookups[n]];
        for (const std::string &name : l.columns) {
            auto k = at.find(lower(name));
            if (k == at.end())
                throw std::runtime_error("the query's answer has no column " + name);
            const json &cell = f.at(k->second).at("v");
            if (!cell.is_array() || cell.empty())
                continue; /* no value sent before the key change */
            const json &value = cell[0].at("v").at("f").at(0).at("v");
            for (const bq::Column &c : l.table->columns)
                if (c.name == name)
                    l.found[name] = query_value(c, value);
        }
    }
}

/* Once the lookups are answered: every entry planned again, with the values read. */
void BigQueryExchange::plan_again()
{
    if (lookups_.empty() || lookups_read_)
        return;
    lookups_read_ = true;
    rows_.clear();
    imports_.clear();
    out_.clear();
    latest_.clear();
    used_.clear();
    plan_entries();
}

/* Entries of table t streamed: their rows to insertAll, refused ones refused. */
void BigQueryExchange::stream(const TablePtr &t, const std::vector<size_t> &entries)
{
    auto &group = rows_[group_key(*t)];
    group.first = t;
    std::vector<bq::Row> made;
    for (size_t i : entries) {
        made.clear();
        try {
            /* After plan_loads() the entries were let go: read again from the batch. */
            Entry again;
            if (entries_.empty())
                again = entry_of(lines_of_.at(i), &arena_, nullptr);
            rows_for(i, entries_.empty() ? again : entries_[i], t, &made);
        } catch (const bq::Refusal &r) {
            refuse(i, r.what());
            continue;
        }
        for (bq::Row &r : made)
            group.second.push_back(std::move(r));
    }
}

std::string BigQueryExchange::table_json(const BigQuerySink::Table &t) const
{
    std::string fields;
    for (const bq::Column &c : t.columns)
        fields += (fields.empty() ? "" : ",") + bq::field_json(c);
    for (const std::string &f : bq::helper_fields_json())
        fields += "," + f;
    json clustering = json::array();
    for (const bq::Column &c : t.columns)
        if (c.key && !c.repeated && c.kind != bq::Kind::float64 && c.kind != bq::Kind::json &&
            clustering.size() < 4)
            clustering.push_back(c.name);
    json ref = {{"projectId", sink_.settings_.project},
                {"datasetId", sink_.settings_.dataset},
                {"tableId", raw_name(t)}};
    std::string out = "{\"tableReference\":" + ref.dump() + ",\"schema\":{\"fields\":[" + fields +
                      "]},\"timePartitioning\":{\"type\":\"DAY\",\"field\":\"_pgsink_timestamp\"}";
    if (!clustering.empty() && clustering.size() == t.key.size())
        out += ",\"clustering\":{\"fields\":" + clustering.dump() + "}";
    out += ",\"labels\":{\"origin\":\"pgsink\"},\"description\":" +
           json("Every change to PostgreSQL table " + t.ns + " (pgsink)")
               .dump(-1, ' ', false, json::error_handler_t::replace) +
           "}";
    return out;
}

std::string BigQueryExchange::view_json(const BigQuerySink::Table &t) const
{
    std::string ref = sink_.settings_.project + "." + sink_.settings_.dataset + "." + raw_name(t);
    json view = {
        {"tableReference",
         {{"projectId", sink_.settings_.project},
          {"datasetId", sink_.settings_.dataset},
          {"tableId", t.name}}},
        {"view", {{"query", bq::view_query(ref, t.columns, t.key)}, {"useLegacySql", false}}},
        {"description", "Current rows of PostgreSQL table " + t.ns + " (pgsink)"}};
    return view.dump(-1, ' ', false, json::error_handler_t::replace);
}

/* A column as BigQuery has it, to know a table holds it: "name TYPE [REPEATED]". */
static std::string signature(const bq::Column &c)
{
    return lower(c.name) + " " + bq::type_name(c.kind) + (c.repeated ? " REPEATED" : "");
}

/* Phase 0: the dataset, the tables rows go to, the views of new Schemas. */
void BigQueryExchange::plan_ddl()
{
    phase_ = 0;
    if (!sink_.dataset_ready_) {
        json d = {
            {"datasetReference",
             {{"projectId", sink_.settings_.project}, {"datasetId", sink_.settings_.dataset}}},
            {"description", "Dataset created by pgsink"},
            {"labels", {{"origin", "pgsink"}}}};
        if (!sink_.settings_.location.empty())
            d["location"] = sink_.settings_.location;
        steps_.push_back(Request{Step::dataset, nullptr, d.dump()});
    }
    std::vector<TablePtr> tables = used_;
    for (const TablePtr &t : announced_)
        if (std::find(tables.begin(), tables.end(), t) == tables.end() && t->refused.empty())
            tables.push_back(t);
    std::set<std::string> planned;
    for (const TablePtr &t : tables) {
        std::string raw = raw_name(*t);
        auto known = sink_.fields_.find(raw);
        bool complete = known != sink_.fields_.end();
        for (const bq::Column &c : t->columns)
            complete = complete && known->second.count(signature(c)) > 0;
        std::string why;
        if (!complete && !refused_for(*t, &why) &&
            planned.insert(raw + "#" + std::to_string(t->version)).second)
            steps_.push_back(Request{Step::table_insert, t, table_json(*t)});
    }
    for (const TablePtr &t : announced_) {
        /* The newest Schema of the table only: an older batch sent again must not undo it. */
        if (t->key.empty() || !t->refused.empty() || sink_.tables_[t->ns] != t)
            continue;
        steps_.push_back(Request{Step::view_insert, t, view_json(*t)});
    }
}

/* Phase 1: load jobs for tables with many import rows; the others are streamed. */
void BigQueryExchange::plan_loads()
{
    phase_ = 1;
    for (auto &[raw, group] : imports_) {
        std::string why;
        if (group.table && refused_for(*group.table, &why)) {
            for (size_t i : group.entries)
                refuse(i, why);
            continue;
        }
        if (group.mixed ||
            group.entries.size() < static_cast<size_t>(sink_.settings_.load_min_rows) ||
            sink_.settings_.load_min_rows == 0) {
            stream(group.table, group.entries);
            continue;
        }
        Load l;
        l.table = group.table;
        l.entries = std::move(group.entries);
        const std::vector<bq::Column> &columns = l.table->columns;
        /*
         * Each change encoded as soon as it is gathered, while its line is in
         * the cache; room before the file for the multipart body's head.
         */
        const size_t room = 1024 + 2 * raw.size() + sink_.settings_.project.size() +
                            sink_.settings_.dataset.size() + sink_.location().size();
        std::string data;
        bool valid = true;
        try {
            bq::AvroFile file(columns, l.entries.size(), room);
            bq::RawChange c;
            for (size_t k = 0; k < l.entries.size() && valid; k++) {
                const Entry &e = entries_[l.entries[k]];
                c.entry = l.entries[k];
                uint64_t lsn = 0;
                valid = parse_lsn(e.lsn.c_str(), e.lsn.size(), &lsn) && lsn <= uint64_t(INT64_MAX);
                c.lsn = static_cast<int64_t>(lsn);
                c.sequence = static_cast<int64_t>(e.sequence);
                c.op = e.op;
                c.timestamp = e.timestamp;
                c.xid = e.xid;
                c.values.assign(columns.size(), std::string_view());
                size_t hint = 0; /* members come in the columns' order, usually */
                auto take = [&](std::string_view name, std::string_view value) {
                    for (size_t n = 0; n < columns.size(); n++) {
                        size_t col = (hint + n) % columns.size();
                        if (columns[col].pg_name == name) {
                            c.values[col] = value;
                            hint = col + 1;
                            break;
                        }
                    }
                };
                if (!e.after_raw.empty()) {
                    size_t end = for_each_member(e.after_raw, 0, &arena_,
                                                 [&](std::string_view name, size_t at) {
                                                     size_t end = value_end(e.after_raw, at);
                                                     take(name, e.after_raw.substr(at, end - at));
                                                     return end;
                                                 });
                    /* Members after "after" (not pgsink's order): the line read whole, which
                     * throws if it is not JSON; its row needs none of them. */
                    if (e.after_unchecked && end != e.after_raw.size())
                        entry_of(lines_of_.at(l.entries[k]), &arena_, nullptr, true);
                }
                for (const auto &[name, value] : e.after)
                    take(name, value);
                if (valid)
                    file.add(c);
            }
            if (valid)
                data = file.finish();
        } catch (const std::bad_alloc &) {
            throw;
        } catch (const std::exception &) {
            valid = false; /* a value Avro cannot take, or a row that is not JSON */
        }
        if (!valid) {
            /* Streamed instead, where each row is judged alone (and refused alone). */
            stream(l.table, l.entries);
            continue;
        }
        l.job_id = load_job_id(raw, *l.table, l.entries);
        json job = {{"jobReference", {{"projectId", sink_.settings_.project}, {"jobId", l.job_id}}},
                    {"configuration",
                     {{"load",
                       {{"destinationTable",
                         {{"projectId", sink_.settings_.project},
                          {"datasetId", sink_.settings_.dataset},
                          {"tableId", raw}}},
                        {"sourceFormat", "AVRO"},
                        {"useAvroLogicalTypes", true},
                        {"writeDisposition", "WRITE_APPEND"},
                        {"createDisposition", "CREATE_NEVER"}}}}}};
        if (!sink_.location().empty())
            job["jobReference"]["location"] = sink_.location();
        std::string body = bq::multipart_body(job.dump(), std::move(data), room, &l.boundary);
        Request q{Step::load_insert, l.table, std::move(body)};
        q.load = loads_.size();
        loads_.push_back(std::move(l));
        steps_.push_back(std::move(q));
    }
    /* The entries were made rows, Avro or bodies: their memory goes (a load that fails reads
     * its entries again). */
    std::vector<Entry>().swap(entries_);
}

/*
 * The job id of a load of these entries into raw: what identifies the rows
 * only (the spool and replay they come from, the table, their first and
 * last (lsn, sequence), their count, a digest of their lines and of the
 * table's columns), never the batch they came in. The same rows sent again
 * after a crash, in a batch cut otherwise or with the schemas in front,
 * make the same job id: BigQuery refuses it as a duplicate (409) and the
 * job already made counts. A replay (pgsink.rewind_sink()) loads again.
 */
std::string BigQueryExchange::load_job_id(const std::string &raw, const BigQuerySink::Table &t,
                                          const std::vector<size_t> &entries) const
{
    const Entry &first = entries_[entries.front()], &last = entries_[entries.back()];
    Sha256 rows;
    rows.add(stream_ + "\n" + raw + "\n" + first.lsn + "/" + std::to_string(first.sequence) + "\n" +
             last.lsn + "/" + std::to_string(last.sequence) + "\n" +
             std::to_string(entries.size()) + "\n");
    for (const bq::Column &c : t.columns)
        rows.add(signature(c) + (c.pg_name == c.name ? "" : " " + c.pg_name) + "\n");
    for (size_t i : entries) {
        rows.add(lines_of_.at(i));
        rows.add("\n");
    }
    return "pgsink_" + raw.substr(0, 200) + "_" + rows.hex(20);
}

/* Phase 2: insertAll requests, per table, within the limits. */
void BigQueryExchange::plan_inserts()
{
    phase_ = 2;
    for (auto &[key, group] : rows_) {
        std::string why;
        if (refused_for(*group.first, &why)) {
            for (const bq::Row &r : group.second)
                refuse(r.entry, why);
            continue;
        }
        std::string body;
        std::vector<size_t> entries;
        auto flush = [&]() {
            if (entries.empty())
                return;
            Request q{Step::insert_all, group.first,
                      "{\"skipInvalidRows\":false,\"ignoreUnknownValues\":false,\"rows\":[" + body +
                          "]}"};
            q.row_entries = std::move(entries);
            steps_.push_back(std::move(q));
            body.clear();
            entries.clear();
        };
        for (const bq::Row &r : group.second) {
            if (out_.count(r.entry))
                continue;
            std::string text = bq::insert_all_row(r);
            if (!entries.empty() &&
                (entries.size() >= static_cast<size_t>(sink_.settings_.max_rows) ||
                 body.size() + text.size() + 100 > sink_.settings_.max_bytes))
                flush();
            if (!entries.empty())
                body += ',';
            body += text;
            entries.push_back(r.entry);
        }
        flush();
    }
    rows_.clear(); /* in the requests' bodies now */
}

std::string BigQueryExchange::what(const Request &q) const
{
    std::string t = q.table ? q.table->name : "";
    switch (q.step) {
    case Step::token:
        return "the token request";
    case Step::noop:
        return "datasets.get of " + sink_.settings_.dataset;
    case Step::dataset:
        return "datasets.insert of " + sink_.settings_.dataset;
    case Step::table_insert:
        return "tables.insert of " + t + "_raw";
    case Step::table_get:
        return "tables.get of " + t + "_raw";
    case Step::table_patch:
        return "tables.patch of " + t + "_raw";
    case Step::view_insert:
        return "tables.insert of view " + t;
    case Step::view_patch:
        return "tables.patch of view " + t;
    case Step::load_insert:
        return "the load job of " + t + "_raw";
    case Step::load_get:
        return "jobs.get of the load job of " + t + "_raw";
    case Step::query:
        return "jobs.query of " + t + "_raw (values an update that changed the key left unchanged)";
    case Step::query_results:
        return "jobs.getQueryResults of " + t + "_raw";
    case Step::wait:
        return "datasets.get of " + sink_.settings_.dataset +
               " (while the batches before are delivered)";
    case Step::insert_all:
        return "insertAll into " + t + "_raw";
    }
    return "a request";
}

static std::string url_escape(const std::string &s);

HttpRequest BigQueryExchange::next()
{
    if (steps_.at(at_).step == Step::query && earlier_ != Earlier::done) {
        /*
         * The query reads what the batches before this one wrote: asked
         * once they are all delivered (meanwhile a free request, now and
         * then, to be called again).
         */
        Request w{Step::wait, nullptr};
        w.delay_ms = std::min<long>(1000, 100L << std::min(waits_, 4)); /* 0.1 s ... 1 s */
        waits_++;
        steps_.insert(steps_.begin() + static_cast<long>(at_), std::move(w));
    }
    Request &q = steps_.at(at_);
    if (q.step == Step::token)
        return sink_.auth_.token_request(now_unix());
    HttpRequest r;
    r.headers = {sink_.auth_.header(), "Content-Type: application/json; charset=UTF-8"};
    generation_ = sink_.auth_.generation();
    /*
     * An upload's body (megabytes) is handed over, not copied; should a 401
     * answer it, the batch is tried again, with a new token.
     */
    if (q.step == Step::load_insert)
        r.body = std::move(q.body);
    else
        r.body = q.body;
    r.delay_ms = q.delay_ms;
    r.keep_answer = 1 << 20;
    std::string raw = q.table ? raw_name(*q.table) : "";
    switch (q.step) {
    case Step::token:
        break;
    case Step::noop:
    case Step::wait:
        r.url = sink_.api("/datasets/" + sink_.settings_.dataset);
        r.method = "GET";
        r.body.clear();
        break;
    case Step::query:
        r.url = sink_.api("/queries");
        r.keep_answer = 1 << 26;
        break;
    case Step::query_results: {
        const Query &g = queries_.at(q.query);
        r.url = sink_.api("/queries/" + g.job_id) +
                "?formatOptions.useInt64Timestamp=true&timeoutMs=10000";
        if (!g.location.empty())
            r.url += "&location=" + g.location;
        if (!g.page_token.empty())
            r.url += "&pageToken=" + url_escape(g.page_token);
        r.method = "GET";
        r.body.clear();
        r.keep_answer = 1 << 26;
        break;
    }
    case Step::dataset:
        r.url = sink_.api("/datasets");
        break;
    case Step::table_insert:
    case Step::view_insert:
        r.url = sink_.api("/datasets/" + sink_.settings_.dataset + "/tables");
        break;
    case Step::table_get:
        r.url = sink_.table_path(raw);
        r.method = "GET";
        r.body.clear();
        break;
    case Step::table_patch:
        r.url = sink_.table_path(raw);
        r.method = "PATCH";
        break;
    case Step::view_patch:
        r.url = sink_.table_path(q.table->name);
        r.method = "PATCH";
        break;
    case Step::load_insert:
        r.url = sink_.settings_.endpoint + "/upload/bigquery/v2/projects/" +
                sink_.settings_.project + "/jobs?uploadType=multipart";
        r.headers[1] = "Content-Type: multipart/related; boundary=" + loads_.at(q.load).boundary;
        break;
    case Step::load_get:
        r.url = sink_.api("/jobs/" + loads_.at(q.load).job_id);
        if (!sink_.location().empty())
            r.url += "?location=" + sink_.location();
        r.method = "GET";
        r.body.clear();
        break;
    case Step::insert_all:
        r.url = sink_.table_path(raw) + "/insertAll";
        r.keep_answer = 1 << 26;
        break;
    }
    return r;
}

/* A query parameter's value for a URL. */
static std::string url_escape(const std::string &s)
{
    static const char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char ch : s) {
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out.push_back(static_cast<char>(ch));
        } else {
            out.push_back('%');
            out.push_back(kHex[ch >> 4]);
            out.push_back(kHex[ch & 15]);
        }
    }
    return out;
}

/* A dataset's location from its resource, if it has a plausible one (it goes into URLs). */
static bool location_of(const json &dataset, std::string *out)
{
    if (!dataset.is_object() || !dataset.contains("location") || !dataset["location"].is_string())
        return false;
    std::string l = dataset["location"].get<std::string>();
    if (l.empty() || !valid_name(l, "-_", 64))
        return false;
    *out = l;
    return true;
}

/* BigQuery's error: "reason: message" of its answer, excerpted; and the reason alone. */
static std::string error_text(const std::string &body, std::string *reason)
{
    json j = json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_object()) {
        const json &err = j["error"];
        std::string r, m = err.value("message", "");
        if (err.contains("errors") && err["errors"].is_array() && !err["errors"].empty() &&
            err["errors"][0].is_object())
            r = err["errors"][0].value("reason", "");
        if (r.empty() && err.contains("status") && err["status"].is_string())
            r = err["status"].get<std::string>();
        *reason = r;
        return credential_free_excerpt(r + (r.empty() ? "" : ": ") + m, 300);
    }
    reason->clear();
    return credential_free_excerpt(body, 200);
}

/*
 * Are t's changes refused? A table refused for a column BigQuery cannot
 * retype refuses the versions with that column only: a batch's changes from
 * before the ALTER TABLE are written.
 */
bool BigQueryExchange::refused_for(const BigQuerySink::Table &t, std::string *why) const
{
    auto it = sink_.refused_.find(raw_name(t));
    if (it == sink_.refused_.end())
        return false;
    auto columns = sink_.refused_columns_.find(raw_name(t));
    if (columns != sink_.refused_columns_.end() && !columns->second.empty() &&
        std::none_of(t.columns.begin(), t.columns.end(),
                     [&](const bq::Column &c) { return columns->second.count(signature(c)) > 0; }))
        return false;
    *why = it->second;
    return true;
}

void BigQueryExchange::refuse_table(const BigQuerySink::Table &t, const std::string &why,
                                    const std::string &column)
{
    std::string raw = raw_name(t);
    std::set<std::string> &columns = sink_.refused_columns_[raw];
    if (column.empty() || (sink_.refused_.count(raw) && columns.empty()))
        columns.clear(); /* every change of the table */
    else
        columns.insert(column);
    sink_.refused_[raw] = why;
}

std::optional<Answer> BigQueryExchange::failure(const HttpResponse &r, const Request &q)
{
    Answer a;
    a.status = static_cast<int>(r.status);
    a.response = credential_free_excerpt(r.body, 300);
    a.retry_after_ms = retry_after_ms(r.retry_after, static_cast<long>(now_unix()));
    std::string reason;
    std::string text = error_text(r.body, &reason);
    a.message = sink_.describe() + ": " + what(q) +
                (r.status == 0 ? " failed: " + r.transport_error
                               : " was answered HTTP " + std::to_string(r.status) +
                                     (text.empty() ? "" : " (" + text + ")"));
    a.kind = Answer::Kind::retry;
    if (r.status == 404) {
        /*
         * A table or the dataset is gone (dropped): made again at the next
         * attempt. The table in question only, unless BigQuery says the
         * dataset is gone (then its tables went with it) or the request
         * was not about a table.
         */
        bool table = q.table != nullptr && text.find("Not found: Dataset") == std::string::npos &&
                     q.step != Step::load_get && q.step != Step::query_results;
        if (table) {
            sink_.fields_.erase(raw_name(*q.table));
        } else if (q.step != Step::load_get && q.step != Step::query_results) {
            sink_.dataset_ready_ = false;
            sink_.fields_.clear();
        }
        return a;
    }
    bool refused = r.status == 400 || r.status == 413;
    if (refused && q.step == Step::insert_all) {
        a.kind = Answer::Kind::reject;
        std::string low = lower(text);
        a.too_large = r.status == 413 || low.find("too large") != std::string::npos ||
                      low.find("exceeds") != std::string::npos;
        return a;
    }
    if (r.status == 400 && (q.step == Step::table_insert || q.step == Step::table_patch ||
                            q.step == Step::view_insert || q.step == Step::view_patch)) {
        /* BigQuery refuses the table itself: its changes are parked, with the reason. */
        refuse_table(*q.table, "BigQuery refused " + what(q) + ": " + text);
        return advance();
    }
    return a;
}

void BigQueryExchange::loaded(Load &l, const json &job, std::optional<Answer> *out)
{
    const json &status = job.value("status", json::object());
    std::string state = status.value("state", "");
    if (state != "DONE") {
        /*
         * Asked again every 50 ms for the first 200 ms, then after a pause
         * that grows by half, to 2 s. A small load is done in a fraction of
         * a second, and its batch (and those after it, for the cursor) waits
         * for the answer: polled by doubling from 100 ms, a job done at
         * 110 ms was seen at 300 ms, and the polls capped an import's rate.
         */
        Request q{Step::load_get, l.table};
        q.load = static_cast<size_t>(&l - loads_.data());
        long delay = 50;
        for (int k = 4; k <= l.polls && delay < 2000; k++)
            delay += delay / 2;
        q.delay_ms = std::min<long>(2000, delay);
        l.polls++;
        steps_.insert(steps_.begin() + static_cast<long>(at_) + 1, std::move(q));
        *out = advance();
        return;
    }
    if (status.contains("errorResult") && status["errorResult"].is_object()) {
        /* The load failed: its rows are streamed instead, where each row is judged alone. */
        stream(l.table, l.entries);
        l.entries.clear();
    }
    *out = advance();
}

std::optional<Answer> BigQueryExchange::answer(const HttpResponse &r)
{
    Request &q = steps_.at(at_);
    if (q.step == Step::token) {
        std::string problem = sink_.auth_.take_token(r, now_unix());
        if (!problem.empty()) {
            Answer a;
            a.kind = Answer::Kind::retry;
            a.status = static_cast<int>(r.status);
            a.message = sink_.describe() + ": " + problem;
            a.retry_after_ms = retry_after_ms(r.retry_after, static_cast<long>(now_unix()));
            return a;
        }
        return advance();
    }
    if (r.status == 401) {
        /* The token expired or was revoked: a new one, and the same request again, once. */
        sink_.auth_.invalidate(generation_);
        if (!refreshed_ && q.step != Step::load_insert) {
            refreshed_ = true;
            steps_.insert(steps_.begin() + static_cast<long>(at_), Request{Step::token, nullptr});
            return std::nullopt;
        }
        return failure(r, q);
    }
    json j = json::parse(r.body, nullptr, false);
    std::string raw = q.table ? raw_name(*q.table) : "";
    switch (q.step) {
    case Step::token:
        break;
    case Step::noop:
        if (r.status != 200)
            return failure(r, q);
        location_of(j, &sink_.location_);
        return advance();
    case Step::dataset:
        if (r.status == 200 || r.status == 409) {
            sink_.dataset_ready_ = true;
            /* A dataset that was there: its location is the load jobs', whatever the setting. */
            if (!location_of(j, &sink_.location_) && r.status == 409)
                steps_.insert(steps_.begin() + static_cast<long>(at_) + 1,
                              Request{Step::noop, nullptr});
            return advance();
        }
        return failure(r, q);
    case Step::table_insert:
        if (r.status == 200) {
            std::set<std::string> &have = sink_.fields_[raw];
            for (const bq::Column &c : q.table->columns)
                have.insert(signature(c));
            return advance();
        }
        if (r.status == 409) {
            steps_.insert(steps_.begin() + static_cast<long>(at_) + 1,
                          Request{Step::table_get, q.table});
            return advance();
        }
        return failure(r, q);
    case Step::table_get: {
        if (r.status != 200 || !j.is_object())
            return failure(r, q);
        TablePtr t = q.table;
        json fields = j.contains("schema") && j["schema"].is_object()
                          ? j["schema"].value("fields", json::array())
                          : json::array();
        std::map<std::string, json> have;
        for (const json &f : fields)
            if (f.is_object())
                have[lower(f.value("name", ""))] = f;
        json missing = json::array();
        for (const bq::Column &c : t->columns) {
            auto it = have.find(lower(c.name));
            if (it == have.end()) {
                missing.push_back(json::parse(bq::field_json(c)));
                continue;
            }
            std::string type = it->second.value("type", "");
            std::string mode = it->second.value("mode", "NULLABLE");
            static const std::map<std::string, std::string> legacy = {
                {"INTEGER", "INT64"}, {"FLOAT", "FLOAT64"}, {"BOOLEAN", "BOOL"}};
            if (legacy.count(type))
                type = legacy.at(type);
            if (type != bq::type_name(c.kind) || (mode == "REPEATED") != c.repeated) {
                refuse_table(*t,
                             "column " + c.name + " of BigQuery table " + raw + " is " + type +
                                 " " + mode + " but now needs " + bq::type_name(c.kind) +
                                 (c.repeated ? " REPEATED" : "") +
                                 " (its type changed in PostgreSQL): BigQuery cannot change "
                                 "it; add the column anew under another name or rebuild the "
                                 "table, then rewind the sink or import the table again",
                             signature(c));
                return advance();
            }
        }
        for (const std::string &h : bq::helper_names())
            if (!have.count(h))
                missing.push_back(h); /* a table of someone else's */
        for (const json &m : missing)
            if (m.is_string()) {
                refuse_table(*t, "BigQuery table " + raw + " exists without pgsink's column " +
                                     m.get<std::string>() +
                                     ": it is not pgsink's; drop or rename it");
                return advance();
            }
        if (missing.empty()) {
            std::set<std::string> &known = sink_.fields_[raw];
            for (const bq::Column &c : t->columns)
                known.insert(signature(c));
            return advance();
        }
        json all = fields;
        for (const json &m : missing)
            all.push_back(m);
        json patch = {{"schema", {{"fields", all}}}};
        steps_.insert(steps_.begin() + static_cast<long>(at_) + 1,
                      Request{Step::table_patch, t,
                              patch.dump(-1, ' ', false, json::error_handler_t::replace)});
        return advance();
    }
    case Step::table_patch:
        if (r.status == 200) {
            std::set<std::string> &known = sink_.fields_[raw];
            for (const bq::Column &c : q.table->columns)
                known.insert(signature(c));
            return advance();
        }
        return failure(r, q);
    case Step::view_insert:
    case Step::view_patch:
        if (r.status == 200) {
            return advance();
        }
        if (r.status == 409 && q.step == Step::view_insert) {
            /* It exists: its query made current (a new column, or an older pgsink's view). */
            json patch = json::parse(q.body);
            patch.erase("tableReference");
            steps_.insert(steps_.begin() + static_cast<long>(at_) + 1,
                          Request{Step::view_patch, q.table,
                                  patch.dump(-1, ' ', false, json::error_handler_t::replace)});
            return advance();
        }
        return failure(r, q);
    case Step::wait:
        if (earlier_ == Earlier::waiting) {
            /* A batch before waits for a retry: this one gives its place up meanwhile. */
            Answer a;
            a.kind = Answer::Kind::retry;
            a.status = 0;
            a.message = sink_.describe() +
                        ": a batch with an update that changed the key waits for the batches "
                        "before it (it reads what they wrote)";
            a.retry_after_ms = 200;
            return a;
        }
        return advance();
    case Step::query:
    case Step::query_results: {
        Query &g = queries_.at(q.query);
        if (r.status == 400) {
            /* BigQuery refuses the query itself: its key changes are parked, with the reason. */
            std::string reason, text = error_text(r.body, &reason);
            for (size_t n : g.lookups)
                lookups_[n].problem = "an update changed the key and left a TOASTed column "
                                      "unchanged; reading its value from BigQuery failed (" +
                                      text + "): import the table again";
            return advance();
        }
        if (r.status != 200 || !j.is_object())
            return failure(r, q);
        const json &ref = j.value("jobReference", json::object());
        if (ref.is_object() && ref.contains("jobId") && ref["jobId"].is_string()) {
            std::string id = ref["jobId"].get<std::string>();
            std::string loc = ref.value("location", "");
            if (!valid_name(id, "-_", 1024) || (!loc.empty() && !valid_name(loc, "-_", 64)))
                return failure(r, q);
            g.job_id = id;
            g.location = loc;
        }
        if (!j.value("jobComplete", false)) {
            /* Not done yet: asked again after a pause that grows (0.1 s ... 2 s). */
            if (g.job_id.empty())
                return failure(r, q);
            Request again{Step::query_results, g.table};
            again.query = q.query;
            again.delay_ms = std::min<long>(2000, 100L << std::min(g.polls, 5));
            g.polls++;
            steps_.insert(steps_.begin() + static_cast<long>(at_) + 1, std::move(again));
            return advance();
        }
        try {
            read_query_rows(g, j);
        } catch (const std::exception &e) {
            Answer a;
            a.kind = Answer::Kind::retry;
            a.status = static_cast<int>(r.status);
            a.message = sink_.describe() + ": " + what(q) + ": an answer pgsink cannot read (" +
                        e.what() + ")";
            return a;
        }
        if (j.contains("pageToken") && j["pageToken"].is_string() && !g.job_id.empty()) {
            g.page_token = j["pageToken"].get<std::string>();
            Request page{Step::query_results, g.table};
            page.query = q.query;
            steps_.insert(steps_.begin() + static_cast<long>(at_) + 1, std::move(page));
        }
        return advance();
    }
    case Step::load_insert:
    case Step::load_get: {
        Load &l = loads_.at(q.load);
        if (r.status == 409 && q.step == Step::load_insert) {
            /* Sent before (a crash, a retry): that job is the load. */
            Request g{Step::load_get, l.table};
            g.load = q.load;
            steps_.insert(steps_.begin() + static_cast<long>(at_) + 1, std::move(g));
            return advance();
        }
        if (r.status != 200 || !j.is_object())
            return failure(r, q);
        std::optional<Answer> out;
        loaded(l, j, &out);
        return out;
    }
    case Step::insert_all: {
        if (r.status != 200 || !j.is_object())
            return failure(r, q);
        std::string().swap(q.body); /* answered: never sent again in this exchange */
        for (const json &err : j.value("insertErrors", json::array())) {
            if (!err.is_object() || !err.contains("index") || !err["index"].is_number_unsigned())
                continue;
            size_t row = err["index"].get<size_t>();
            if (row >= q.row_entries.size())
                continue;
            size_t entry = q.row_entries[row];
            bool retry = true;
            std::string why;
            for (const json &x : err.value("errors", json::array())) {
                if (!x.is_object())
                    continue;
                std::string reason = x.value("reason", "");
                static const std::set<std::string> again = {
                    "stopped", "backendError", "internalError", "timeout", "rateLimitExceeded"};
                if (!again.count(reason) && !new_column(raw, x)) {
                    retry = false;
                    std::string loc = x.value("location", "");
                    why = "BigQuery refused the row: " + reason +
                          (loc.empty() ? "" : " at " + loc) + ": " + x.value("message", "");
                }
            }
            auto was = out_.find(entry);
            if (was != out_.end() && !was->second.retry)
                continue; /* refused already */
            out_[entry] = Answer::Entry{
                entry, retry, 200,
                credential_free_excerpt(retry ? "BigQuery did not take the row (stopped, "
                                                "failed, or a column it does not "
                                                "see yet): sent again"
                                              : why,
                                        300)};
        }
        return advance();
    }
    }
    return advance();
}

/*
 * A row refused for a column the table has, since pgsink added it: BigQuery's
 * streaming sees a new column only some time after tables.patch ("no such
 * field"). That passes: the row is sent again.
 */
bool BigQueryExchange::new_column(const std::string &raw, const json &error) const
{
    std::string loc = lower(error.value("location", ""));
    if (error.value("reason", "") != "invalid" || loc.empty() ||
        error.value("message", "").find("no such field") == std::string::npos)
        return false;
    auto known = sink_.fields_.find(raw);
    if (known == sink_.fields_.end())
        return false;
    for (const std::string &sig : known->second)
        if (sig.compare(0, loc.size() + 1, loc + " ") == 0)
            return true;
    return false;
}

/* The next step, the next phase, or the batch's answer. */
std::optional<Answer> BigQueryExchange::advance()
{
    at_++;
    if (at_ >= steps_.size() && phase_ == 0)
        plan_again();
    if (at_ >= steps_.size() && phase_ == 0)
        plan_loads();
    if (at_ >= steps_.size() && phase_ == 1)
        plan_inserts();
    if (at_ < steps_.size())
        return std::nullopt;
    Answer a;
    a.status = 200;
    for (auto &[i, e] : out_)
        a.entries.push_back(e);
    if (!a.entries.empty())
        a.message = sink_.describe() + ": " + a.entries.front().response;
    return a;
}

std::unique_ptr<HttpSink::Exchange> BigQuerySink::exchange(std::string_view lines,
                                                           const std::string &key)
{
    return std::make_unique<BigQueryExchange>(*this, lines, key);
}

} // namespace pgsink

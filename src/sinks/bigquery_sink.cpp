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
        insert_all
    };
    struct Request {
        Step step;
        TablePtr table;
        std::string body;
        size_t load = 0;                 /* loads_ index */
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
    void plan_entries();
    void rows_for(size_t i, const Entry &e, const TablePtr &t, std::vector<bq::Row> *made);
    void stream(const TablePtr &t, const std::vector<size_t> &entries);
    void plan_ddl();
    void plan_loads();
    void plan_inserts();
    std::optional<Answer> advance();
    bool new_column(const std::string &raw, const json &error) const;
    std::optional<Answer> failure(const HttpResponse &r, const Request &q);
    void refuse(size_t entry, const std::string &why);
    void refuse_table(const BigQuerySink::Table &t, const std::string &why);
    std::string raw_name(const BigQuerySink::Table &t) const { return t.name + "_raw"; }
    std::string table_json(const BigQuerySink::Table &t) const;
    std::string view_json(const BigQuerySink::Table &t) const;
    std::string what(const Request &q) const;
    void loaded(Load &l, const json &job, std::optional<Answer> *out);

    BigQuerySink &sink_;
    std::string key_;
    std::deque<std::string> arena_;          /* member names with escapes, decoded */
    std::vector<Entry> entries_;             /* parsed; let go after plan_loads() */
    std::vector<std::string_view> lines_of_; /* each entry's line in the batch */
    std::map<std::string, std::shared_ptr<const BigQuerySink::Table>> before_;
    std::vector<TablePtr> used_;      /* tables rows go to */
    std::vector<TablePtr> announced_; /* this batch's Schemas */
    std::map<std::string, std::pair<TablePtr, std::vector<bq::Row>>> rows_; /* by raw name */
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
                                   const std::string &key)
    : sink_(sink), key_(key)
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
        entries_.push_back(nl > at ? entry_of(lines.substr(at, nl - at), &arena_,
                                              entries_.empty() ? nullptr : &entries_.back())
                                   : Entry());
        lines_of_.push_back(lines.substr(at, nl - at));
        at = nl + 1;
    }
    before_ = sink_.tables_;
    plan_entries();
    if (!sink_.auth_.valid(now_unix()))
        steps_.push_back(Request{Step::token, nullptr});
    plan_ddl();
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
        if (e.schema) {
            import_group = nullptr; /* the table may change */
            auto t =
                std::make_shared<BigQuerySink::Table>(table_of(e.schema_json, ++sink_.versions_));
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
            announced_.push_back(t);
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
            group = &rows_[raw_name(*t)];
            group->first = t;
            group_table = t;
        }
        for (bq::Row &r : made)
            group->second.push_back(std::move(r));
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
    std::string timestamp = json(std::string(e.timestamp)).dump();
    std::string op_text = json(op).dump(), delete_text = "\"delete\"";
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
                                        bq::insert_value(t->columns[c], std::string(v[c])));
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
    carried.reserve(t->columns.size());
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
            if (!e.has_before)
                return; /* REPLICA IDENTITY NOTHING: no key to delete by */
            auto v = values_of(e.before);
            made->push_back(make_row(v, id, true, {}));
            if (need_latest_)
                latest_[ns].erase(key_of(v));
        } else {
            Members read;
            if (!e.after_raw.empty())
                members_into(e.after_raw, 0, &arena_, &read);
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
                    /* The old key's row is gone; unchanged values came from it. */
                    if (!unchanged.empty()) {
                        auto source = latest_[ns].find(old_key);
                        for (const std::string &u : unchanged) {
                            if (source == latest_[ns].end() || !source->second.count(u))
                                throw bq::Refusal(
                                    "an update changed the key and left the TOASTed column " + u +
                                    " unchanged, and its value is not in this batch: "
                                    "import the table again to send the row whole");
                            carried.push_back(source->second[u]);
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

/* Entries of table t streamed: their rows to insertAll, refused ones refused. */
void BigQueryExchange::stream(const TablePtr &t, const std::vector<size_t> &entries)
{
    auto &group = rows_[raw_name(*t)];
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
        if (!complete && !sink_.refused_.count(raw) &&
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
        if (sink_.refused_.count(raw)) {
            for (size_t i : group.entries)
                refuse(i, sink_.refused_[raw]);
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
        } catch (const bq::Refusal &) {
            valid = false;
        }
        if (!valid) {
            /* A value Avro cannot take: streamed instead, where each row is judged alone. */
            stream(l.table, l.entries);
            continue;
        }
        /* The same rows of the same batch after a crash: the same job (BigQuery refuses it). */
        const Entry &first = entries_[l.entries.front()], &last = entries_[l.entries.back()];
        l.job_id =
            "pgsink_" + raw.substr(0, 200) + "_" +
            sha256_hex(key_ + "\n" + raw + "\n" + first.lsn + "/" + std::to_string(first.sequence) +
                           "\n" + last.lsn + "/" + std::to_string(last.sequence) + "\n" +
                           std::to_string(l.entries.size()) + "\n" +
                           sha256_hex(std::string_view(data).substr(room)),
                       20);
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

/* Phase 2: insertAll requests, per table, within the limits. */
void BigQueryExchange::plan_inserts()
{
    phase_ = 2;
    for (auto &[raw, group] : rows_) {
        if (sink_.refused_.count(raw)) {
            for (const bq::Row &r : group.second)
                refuse(r.entry, sink_.refused_[raw]);
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
            body += (entries.empty() ? "" : ",") + text;
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
    case Step::insert_all:
        return "insertAll into " + t + "_raw";
    }
    return "a request";
}

HttpRequest BigQueryExchange::next()
{
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
        r.url = sink_.api("/datasets/" + sink_.settings_.dataset);
        r.method = "GET";
        r.body.clear();
        break;
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

void BigQueryExchange::refuse_table(const BigQuerySink::Table &t, const std::string &why)
{
    sink_.refused_[raw_name(t)] = why;
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
        /* A table or the dataset is gone (dropped): made again at the next attempt. */
        sink_.dataset_ready_ = false;
        sink_.fields_.clear();
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
                refuse_table(*t, "column " + c.name + " of BigQuery table " + raw + " is " + type +
                                     " " + mode + " but now needs " + bq::type_name(c.kind) +
                                     (c.repeated ? " REPEATED" : "") +
                                     " (its type changed in PostgreSQL): BigQuery cannot change "
                                     "it; add the column anew under another name or rebuild the "
                                     "table, then rewind the sink or import the table again");
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

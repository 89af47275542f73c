/*
 * elasticsearch_sink.cpp: see elasticsearch_sink.h.
 *
 * One batch is one exchange, in three phases:
 *   1. indexes: for each new Schema entry (and each index to check again),
 *      PUT /<index> (made if missing, with its alias), GET its mapping (the
 *      fields it has, the key it was made for, the truncate position), PUT
 *      the fields it lacks;
 *   2. reads: POST /<index>/_mget of the documents that updates with
 *      unchanged TOASTed columns take values from, when no earlier change
 *      of the batch wrote them;
 *   3. writes: one POST /_bulk of every change, in order; a TRUNCATE ends a
 *      _bulk and runs after it (its position into _meta, _refresh,
 *      _delete_by_query), the changes after it go in the next _bulk.
 * Row values are never parsed into numbers: the changelog's JSON text of
 * each value goes into the document as it is (bigint and numeric as their
 * digits, json as PostgreSQL wrote it).
 */
#include <algorithm>
#include <charconv>
#include <cstring>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <sys/mman.h>

#include "changelog/avro_schema.h"
#include "changelog/entry_head.h"
#include "core/digest.h"
#include "http/redact.h"
#include "sinks/elasticsearch_sink.h"
#include "changelog/raw_json.h"

namespace pgsink
{

using json = nlohmann::json;

/* ------------------------------------------------------ raw JSON scanning */

using raw_json::value_end;

static size_t skip_ws(std::string_view s, size_t i)
{
    return raw_json::skip_space(s, i);
}

/* A JSON string's content (raw: with its quotes); a bare value's text as it is. */
static std::string text_of(std::string_view raw)
{
    if (raw.empty() || raw[0] != '"')
        return std::string(raw);
    if (raw.find('\\') == std::string_view::npos)
        return std::string(raw.substr(1, raw.size() - 2));
    return json::parse(raw).get<std::string>();
}

using Members = std::vector<std::pair<std::string, std::string_view>>;

/* The members of a JSON object into out, each value as its raw text. */
static void members_of(std::string_view s, Members &out)
{
    out.clear();
    size_t i = skip_ws(s, 0);
    if (i >= s.size() || s[i] != '{')
        throw std::runtime_error("not a JSON object");
    i = skip_ws(s, i + 1);
    while (i < s.size() && s[i] != '}') {
        size_t key_end = value_end(s, i);
        std::string key = text_of(s.substr(i, key_end - i));
        i = skip_ws(s, key_end);
        if (i >= s.size() || s[i] != ':')
            throw std::runtime_error("a JSON member has no value");
        i = skip_ws(s, i + 1);
        size_t end = value_end(s, i);
        out.emplace_back(std::move(key), s.substr(i, end - i));
        i = skip_ws(s, end);
        if (i < s.size() && s[i] == ',')
            i = skip_ws(s, i + 1);
    }
}

static Members members_of(std::string_view s)
{
    Members out;
    members_of(s, out);
    return out;
}

/* The elements of a JSON array, raw. */
static std::vector<std::string_view> elements_of(std::string_view s)
{
    std::vector<std::string_view> out;
    size_t i = skip_ws(s, 0);
    if (i >= s.size() || s[i] != '[')
        throw std::runtime_error("not a JSON array");
    i = skip_ws(s, i + 1);
    while (i < s.size() && s[i] != ']') {
        size_t end = value_end(s, i);
        out.push_back(s.substr(i, end - i));
        i = skip_ws(s, end);
        if (i < s.size() && s[i] == ',')
            i = skip_ws(s, i + 1);
    }
    return out;
}

/*
 * Calls f(key, value) for each member of the JSON object s: the key as
 * written between its quotes (escapes left as they are), the value raw;
 * stops when f returns false. Nothing is allocated.
 */
template <typename F> static void for_members(std::string_view s, F f)
{
    size_t i = skip_ws(s, 0);
    if (i >= s.size() || s[i] != '{')
        throw std::runtime_error("not a JSON object");
    i = skip_ws(s, i + 1);
    while (i < s.size() && s[i] != '}') {
        size_t key_end = value_end(s, i);
        std::string_view key = s.substr(i + 1, key_end - i - 2);
        i = skip_ws(s, key_end);
        if (i >= s.size() || s[i] != ':')
            throw std::runtime_error("a JSON member has no value");
        i = skip_ws(s, i + 1);
        size_t end = value_end(s, i);
        if (!f(key, s.substr(i, end - i)))
            return;
        i = skip_ws(s, end);
        if (i < s.size() && s[i] == ',')
            i = skip_ws(s, i + 1);
    }
}

/* The raw value of member name of the JSON object s ("" if none). */
static std::string_view find_member(std::string_view s, const std::string &name)
{
    std::string_view found;
    for_members(s, [&](std::string_view key, std::string_view value) {
        bool match = key.find('\\') == std::string_view::npos
                         ? key == name
                         : text_of("\"" + std::string(key) + "\"") == name;
        if (match)
            found = value;
        return !match;
    });
    return found;
}

static std::string_view member(const Members &m, const char *name)
{
    for (const auto &kv : m)
        if (kv.first == name)
            return kv.second;
    return {};
}

/* ---------------------------------------------------------------- the sink */

ElasticsearchSink::ElasticsearchSink(Settings settings)
    : settings_(std::move(settings)), spares_(std::make_shared<ElasticsearchSpares>())
{
    /* They go into a header: a line break would add headers of its own. */
    for (const std::string *v : {&settings_.api_key, &settings_.user, &settings_.password})
        if (v->find_first_of("\r\n") != std::string::npos)
            throw SinkError("pgsink.elasticsearch_api_key, pgsink.elasticsearch_user and "
                            "pgsink.elasticsearch_password may not hold line breaks",
                            false);
    if (!settings_.password.empty() && settings_.user.empty())
        throw SinkError("pgsink.elasticsearch_password is set but pgsink.elasticsearch_user is "
                        "not: set the user too (basic auth), or use pgsink.elasticsearch_api_key",
                        false);
    if (!settings_.api_key.empty() && !settings_.user.empty())
        throw SinkError("set either pgsink.elasticsearch_api_key or pgsink.elasticsearch_user "
                        "(with pgsink.elasticsearch_password), not both",
                        false);
    std::string why = elasticsearch_prefix_problem(settings_.index_prefix);
    if (!why.empty())
        throw SinkError(why, false);
    if (!settings_.api_key.empty())
        auth_header_ = "Authorization: ApiKey " + settings_.api_key;
    else if (!settings_.user.empty())
        auth_header_ = "Authorization: Basic " + base64(settings_.user + ":" + settings_.password);
}

bool ElasticsearchSink::open(const Resume &)
{
    if (settings_.url.empty())
        throw SinkError("pgsink.elasticsearch_url is not set", false);
    /* Indexes are learnt from the Schema entries, announced again at every start. */
    indexes_to_change().clear();
    last_lsn_ = 0;
    return true;
}

/* The commit LSN of a changelog line (0: none that can be read). */
static uint64_t lsn_of_line(std::string_view line)
{
    static const char kLsn[] = "\"lsn\":\"";
    const void *at = memmem(line.data(), line.size(), kLsn, sizeof(kLsn) - 1);
    if (at == nullptr)
        return 0;
    size_t from =
        static_cast<size_t>(static_cast<const char *>(at) - line.data()) + sizeof(kLsn) - 1;
    size_t end = line.find('"', from);
    uint64_t lsn = 0;
    if (end == std::string_view::npos || !parse_lsn(line.data() + from, end - from, &lsn))
        return 0;
    return lsn;
}

size_t ElasticsearchSink::batch_end(std::string_view lines) const
{
    if (lines.size() < 2 || lines.back() != '\n')
        return lines.size();
    /* The lines [start, at) from the last one back, while they are of the last one's transaction.
     */
    size_t at = lines.size();
    size_t start = lines.rfind('\n', at - 2);
    start = start == std::string_view::npos ? 0 : start + 1;
    uint64_t last = lsn_of_line(lines.substr(start, at - start));
    if (last == 0)
        return lines.size();
    while (start > 0) {
        at = start;
        size_t before = at < 2 ? std::string_view::npos : lines.rfind('\n', at - 2);
        start = before == std::string_view::npos ? 0 : before + 1;
        if (lsn_of_line(lines.substr(start, at - start)) != last)
            return at; /* after the line of the transaction before */
    }
    return lines.size(); /* one transaction */
}

std::string ElasticsearchSink::describe() const
{
    return "elasticsearch " + url_for_messages(settings_.url);
}

std::string ElasticsearchSink::state() const
{
    return "elasticsearch " + sha256_hex(settings_.url + "\n" + settings_.index_prefix, 16);
}

HttpRequest ElasticsearchSink::request_to(const std::string &method, const std::string &path,
                                          std::string body) const
{
    HttpRequest r;
    r.url = settings_.url + path;
    r.method = method == "POST" ? "" : method;
    r.body = std::move(body);
    r.headers = {path.find("_bulk") != std::string::npos ? "Content-Type: application/x-ndjson"
                                                         : "Content-Type: application/json"};
    if (!auth_header_.empty())
        r.headers.push_back(auth_header_);
    return r;
}

/* An answer's text without our secrets (a proxy may echo a request's headers). */
std::string ElasticsearchSink::scrub(std::string text) const
{
    std::vector<std::string> secrets = {settings_.api_key, settings_.password};
    if (!auth_header_.empty())
        secrets.push_back(auth_header_.substr(auth_header_.find(' ', 15) + 1));
    add_url_secrets(settings_.url, false, secrets);
    return redact(std::move(text), secrets);
}

/* ------------------------------------------------------------ the exchange */

/* The literal k at s[*i] (then *i is past it)? */
/*
 * Do the N - 1 bytes at p equal the literal k? Inline loads, no memcmp()
 * call: a line's head compares a dozen of these.
 */
template <size_t N> static inline bool same_bytes(const char *p, const char (&k)[N])
{
    constexpr size_t n = N - 1;
    static_assert(n >= 4 && n <= 16, "a literal of 4 to 16 bytes");
    if constexpr (n >= 8) {
        uint64_t a, b, c, d;
        memcpy(&a, p, 8);
        memcpy(&b, k, 8);
        memcpy(&c, p + n - 8, 8);
        memcpy(&d, k + n - 8, 8);
        return a == b && c == d;
    } else {
        uint32_t a, b, c, d;
        memcpy(&a, p, 4);
        memcpy(&b, k, 4);
        memcpy(&c, p + n - 4, 4);
        memcpy(&d, k + n - 4, 4);
        return a == b && c == d;
    }
}

/* a == b, for the short texts of a line's head (no memcmp() call); sizes equal. */
static inline bool same_text(std::string_view a, std::string_view b)
{
    size_t n = a.size(), at = 0;
    for (; at + 8 <= n; at += 8) {
        uint64_t x, y;
        memcpy(&x, a.data() + at, 8);
        memcpy(&y, b.data() + at, 8);
        if (x != y)
            return false;
    }
    for (; at < n; at++)
        if (a[at] != b[at])
            return false;
    return true;
}

/* Is v the literal k? */
template <size_t N> static inline bool is_literal(std::string_view v, const char (&k)[N])
{
    return v.size() == N - 1 && same_bytes(v.data(), k);
}

template <size_t N> static inline bool take(std::string_view s, size_t *i, const char (&k)[N])
{
    if (s.size() - *i < N - 1 || !same_bytes(s.data() + *i, k))
        return false;
    *i += N - 1;
    return true;
}

/*
 * Where the JSON object or array starting at s[i] ends (as value_end()),
 * 16 bytes at a time: a row's values are mostly short strings, which
 * value_end() skips one call each.
 */
static size_t container_end(std::string_view s, size_t i)
{
#ifdef __SSE2__
    const char *b = s.data(), *p = b + i, *end = b + s.size();
    int depth = 0;
    bool in_string = false, escaped = false; /* escaped: the next byte is escaped */
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  lower = _mm_set1_epi8(0x20), open = _mm_set1_epi8('{'),
                  close = _mm_set1_epi8('}'); /* [ and ] are { and } with 0x20 set */
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
        __m128i l = _mm_or_si128(v, lower);
        unsigned m = static_cast<unsigned>(_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                         _mm_or_si128(_mm_cmpeq_epi8(l, open), _mm_cmpeq_epi8(l, close)))));
        if (escaped) {
            m &= ~1u;
            escaped = false;
        }
        while (m != 0) {
            unsigned k = static_cast<unsigned>(__builtin_ctz(m));
            m &= m - 1;
            char c = p[k];
            if (in_string) {
                if (c == '"') {
                    in_string = false;
                } else if (c == '\\') {
                    if (k == 15)
                        escaped = true;
                    else
                        m &= ~(1u << (k + 1));
                }
            } else if (c == '"') {
                in_string = true;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return static_cast<size_t>(p + k - b) + 1;
            }
        }
        p += 16;
    }
    /* The last bytes: from the last place the state is known, as value_end() would. */
    for (; p < end; p++) {
        char c = *p;
        if (escaped) {
            escaped = false;
        } else if (in_string) {
            if (c == '"')
                in_string = false;
            else if (c == '\\')
                escaped = true;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return static_cast<size_t>(p - b) + 1;
        }
    }
    throw std::runtime_error("a JSON object or array has no end");
#else
    return value_end(s, i);
#endif
}

/* Does text go into JSON between quotes as it is? */
static inline bool plain_json_text(std::string_view text)
{
    for (char ch : text)
        if (ch == '"' || ch == '\\' || static_cast<unsigned char>(ch) < 0x20)
            return false;
    return true;
}

/* The value at s[*i] into *v, *i past it. */
static inline void take_value(std::string_view s, size_t *i, std::string_view *v)
{
    size_t end = *i;
    if (end < s.size() && s[end] == '"') {
        end = raw_json::string_end(s, end); /* most values of a line's head */
    } else {
        /* A number, null, true or false: up to what ends it (else value_end() says why). */
        while (end < s.size() && s[end] != ',' && s[end] != '}' && s[end] != ']' && s[end] != ' ' &&
               s[end] != '{' && s[end] != '[' && s[end] != '"' && s[end] != '\n')
            end++;
        if (end == *i || (end < s.size() && (s[end] == '{' || s[end] == '[' || s[end] == '"')))
            end = value_end(s, *i);
    }
    *v = s.substr(*i, end - *i);
    *i = end;
}

/* The member k (its name with what comes before it), its value into *v; false if it is not next. */
template <size_t N>
static inline bool take_member(std::string_view s, size_t *i, const char (&k)[N],
                               std::string_view *v)
{
    if (!take(s, i, k))
        return false;
    take_value(s, i, v);
    return true;
}

/*
 * The members of a Modification line that starts at lines[at], laid out as
 * the changelog writes it (timestamp, sequence, namespace, name, op, lsn,
 * xid, before, after, maybe unchanged; no spaces): where it ends (its
 * newline, or the end of lines); npos if the line is laid out otherwise (it
 * is then read member by member). Values raw, "null" left to the caller.
 */
/*
 * What the line before held from its namespace to its before member
 * (",\"namespace\":...,\"before\":<value>"), and the values read there: the
 * changes of one transaction to one table repeat it byte for byte (only
 * the sequence before it and the row after it differ), so a line that
 * holds the same bytes there, followed by ",\"after\":", has the same values
 * (the same bytes read from the same member name read the same), and they
 * are compared instead of read. Also the timestamp, which a transaction's
 * lines share.
 */
struct RepeatedHead {
    std::string_view timestamp;
    std::string_view bytes; /* empty: nothing yet */
    std::string_view ns, name, op, lsn, before;
};

/* Is the text at s[i] the same bytes as v, followed by what ends a value there (c)? */
static inline bool repeats(std::string_view s, size_t i, std::string_view v, char c)
{
    return !v.empty() && s.size() - i > v.size() && s[i + v.size()] == c &&
           memcmp(s.data() + i, v.data(), v.size()) == 0;
}

/* The value at s[*i] into *v, *i past it: compared with *last first, read (and kept in *last) if
 * not the same. */
static inline void take_repeated(std::string_view s, size_t *i, std::string_view *last,
                                 std::string_view *v)
{
    if (repeats(s, *i, *last, ',')) {
        *v = s.substr(*i, last->size());
        *i += last->size();
    } else {
        take_value(s, i, v);
        *last = *v;
    }
}

static size_t modification_head(std::string_view lines, size_t at, std::string_view *timestamp,
                                std::string_view *seq, std::string_view *ns, std::string_view *name,
                                std::string_view *op, std::string_view *lsn,
                                std::string_view *before, std::string_view *after,
                                std::string_view *unchanged, RepeatedHead &repeated)
{
    size_t i = at;
    std::string_view xid;
    if (!take(lines, &i, "{\"timestamp\":"))
        return std::string_view::npos;
    try {
        take_repeated(lines, &i, &repeated.timestamp, timestamp);
        if (!take_member(lines, &i, ",\"sequence\":", seq))
            return std::string_view::npos;
        if (repeats(lines, i, repeated.bytes, ',') &&
            lines.compare(i + repeated.bytes.size(), 9, ",\"after\":") == 0) {
            *ns = repeated.ns;
            *name = repeated.name;
            *op = repeated.op;
            *lsn = repeated.lsn;
            *before = repeated.before;
            i += repeated.bytes.size();
        } else {
            size_t from = i;
            repeated.bytes = {};
            if (!take_member(lines, &i, ",\"namespace\":", ns) ||
                !take_member(lines, &i, ",\"name\":", name) ||
                !take_member(lines, &i, ",\"op\":", op) ||
                !take_member(lines, &i, ",\"lsn\":", lsn) ||
                !take_member(lines, &i, ",\"xid\":", &xid) ||
                !take_member(lines, &i, ",\"before\":", before))
                return std::string_view::npos;
            repeated = {
                repeated.timestamp, lines.substr(from, i - from), *ns, *name, *op, *lsn, *before};
        }
        if (!take(lines, &i, ",\"after\":"))
            return std::string_view::npos;
        if (i < lines.size() && lines[i] == '{') { /* a row: most of the line */
            size_t end = container_end(lines, i);
            *after = lines.substr(i, end - i);
            i = end;
        } else {
            take_value(lines, &i, after);
        }
        if (take(lines, &i, ",\"unchanged\":"))
            take_value(lines, &i, unchanged);
        else
            *unchanged = {};
    } catch (const std::exception &) {
        return std::string_view::npos; /* the generic scan says what is wrong */
    }
    if (i >= lines.size() || lines[i] != '}' || (i + 1 < lines.size() && lines[i + 1] != '\n'))
        return std::string_view::npos;
    return i + 1;
}

/*
 * A batch's big buffers (its entries, its _bulk body: tens of MB) are new
 * memory every batch, and every 4 kB page of it was a page fault: a fifth
 * of the encoding's time. Asked for in huge pages (2 MB) where the kernel
 * gives them on request (transparent_hugepage = madvise), a few faults
 * instead. Only a hint: nothing changes if refused.
 */
static void ask_huge_pages(const void *start, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    constexpr uintptr_t kHuge = 2 << 20, kPage = 4096;
    if (bytes < 2 * kHuge)
        return;
    uintptr_t from = (reinterpret_cast<uintptr_t>(start) + kPage - 1) & ~(kPage - 1);
    uintptr_t to = (reinterpret_cast<uintptr_t>(start) + bytes) & ~(kPage - 1);
    if (to > from)
        (void)madvise(reinterpret_cast<void *>(from), to - from, MADV_HUGEPAGE);
#else
    (void)start;
    (void)bytes;
#endif
}

namespace
{
/* A changelog line, as far as the sink reads it. */
enum class Op { other, insert, update, delete_, truncate, import };

struct Change {
    bool schema = false;
    const std::string *nsp = nullptr; /* the Schema entry's namespace (Avro names) */
    const std::string &ns() const { return *nsp; }
    std::string_view op_raw; /* as a JSON string */
    Op kind = Op::other;
    uint64_t lsn = 0, seq = 0;
    std::string_view timestamp; /* raw */
    std::string_view before, after;
    std::vector<std::string> unchanged;
    json schema_json; /* a Schema entry's "schema" */
    /* Set by plan_reads(): the _id of the row (after; before for a delete), of the old row. */
    std::string id, old_id;
    bool id_ok = false, old_id_ok = false;
};

/* A document as read back or written earlier in the batch. */
struct Doc {
    uint64_t version = 0;
    uint64_t sequence = 0; /* _pgsink_sequence */
    bool deleted = false;
    std::map<std::string, std::string> fields; /* raw values */
};
} // namespace

/* A batch's lines, read (values as views into them). */
struct ElasticsearchBatch {
    std::vector<Change> entries;
    std::set<std::string> ns_pool; /* the namespaces of the entries (Change::nsp) */
    bool any_unchanged = false;    /* an update left TOASTed columns unchanged */
    std::vector<size_t> schemas;   /* which entries are Schema entries */
};

/* compare_heads false: every line's head read in full (RepeatedHead not used; for selftests). */
static void read_batch(std::string_view lines, ElasticsearchBatch &batch,
                       bool compare_heads = true);

/*
 * A batch's entries (a vector of tens of MB) kept for the next batch: new
 * memory costs a page fault and the zeroing of every page. One is kept
 * (the exchange made next takes what the one done leaves), about a batch's
 * size. Shared by the sink and its exchanges (one may end after the
 * sink); taken and given back on the worker's thread, locked anyway.
 */
struct ElasticsearchSpares {
    std::mutex lock;
    std::vector<Change> entries;
};

class ElasticsearchExchange final : public HttpSink::Exchange
{
  public:
    ElasticsearchExchange(ElasticsearchSink &sink, std::string_view lines, bool resent);
    ~ElasticsearchExchange() override;
    ElasticsearchExchange(const ElasticsearchExchange &) = delete;
    ElasticsearchExchange &operator=(const ElasticsearchExchange &) = delete;
    HttpRequest next() override;
    std::optional<Answer> answer(const HttpResponse &response) override;
    bool current() const override { return generation_ == sink_.generation_; }

  private:
    void plan();
    enum class Kind {
        create,
        get_mapping,
        put_mapping,
        mget,
        bulk,
        meta,
        refresh,
        delete_by_query
    };
    struct Step {
        Kind kind;
        std::string method, path, body;
        size_t table = 0;          /* new_[table] (DDL) */
        std::string ns;            /* mget: whose documents */
        std::vector<size_t> items; /* bulk: the entry of each action */
        size_t entry = 0;          /* meta, refresh, delete_by_query: the truncate */
    };
    void plan_ddl();
    void plan_reads();
    void plan_writes();
    std::optional<Answer> advance();
    std::optional<Answer> fail(const HttpResponse &r, Answer::Kind kind);
    void read_mapping(size_t table, const std::string &body);
    bool read_docs(const std::string &ns, const std::string &body);
    std::optional<Answer> index_missing(const HttpResponse &r);
    std::optional<Answer> read_bulk(const Step &step, const HttpResponse &r);
    std::optional<Answer> read_answer(const HttpResponse &r);
    const ElasticsearchSink::Index *
    in_effect(std::map<std::string, const ElasticsearchSink::Index *> &now, size_t i,
              const std::string &ns);
    const ElasticsearchSink::Index *
    in_effect_cached(std::map<std::string, const ElasticsearchSink::Index *> &now, size_t i,
                     const Change &c);
    /* in_effect_cached()'s last answer; nullptr before each pass over the entries. */
    const std::string *cached_nsp_ = nullptr;
    const ElasticsearchSink::Index *cached_index_ = nullptr;
    std::string id_of(const ElasticsearchSink::Index &t, std::string_view row, bool *ok) const;
    void refuse(size_t entry, const std::string &why)
    {
        refused_.push_back({entry, false, 0, why});
    }
    bool stored_newer(const Change &c, const std::string &id) const;

    ElasticsearchSink &sink_;
    std::string_view lines_; /* the batch (read by plan()) */
    std::vector<Change> entries_;
    std::vector<ElasticsearchSink::Index> new_; /* from this batch's Schema entries */
    std::vector<std::string> new_ns_;
    std::map<size_t, size_t> schema_at_; /* entry index of a Schema entry -> new_ index */
    std::vector<Step> steps_;
    size_t at_ = 0;
    int phase_ = 0;                                          /* 0: indexes, 1: reads, 2: writes */
    std::map<std::string, std::map<std::string, Doc>> read_; /* ns -> _id -> document read */
    std::vector<Answer::Entry> refused_;
    bool any_unchanged_ = false; /* an update of the batch left TOASTed columns unchanged */
    bool too_large_ = false;     /* a _bulk would be over max_bulk_bytes: the batch is split */
    /*
     * Entries sent again from the dead letters, out of the spool's order:
     * each document is read first, and a change older than what it holds
     * is left out (a change of the same transaction has the same version,
     * which external_gte would take).
     */
    bool resent_ = false;
    std::set<std::string> ns_pool_; /* the namespaces of the entries (Change::nsp) */
    std::vector<size_t> schemas_;   /* which of entries_ are Schema entries */
    /* What the sink knew of the indexes when the exchange was made, and its generation_ then. */
    std::map<std::string, ElasticsearchSink::Index> before_;
    uint64_t generation_ = 0;
    bool planned_ = false; /* plan() done (at the first next()) */
    std::shared_ptr<ElasticsearchSpares> spares_;
};

ElasticsearchExchange::ElasticsearchExchange(ElasticsearchSink &sink, std::string_view lines,
                                             bool resent)
    : sink_(sink), lines_(lines), resent_(resent), before_(sink.indexes_),
      generation_(sink.generation_), spares_(sink.spares_)
{
    /* Read and planned at the first next(), maybe on the prefetch thread: from before_. */
    std::lock_guard<std::mutex> hold(spares_->lock);
    entries_ = std::move(spares_->entries); /* empty, its memory kept */
    spares_->entries = {};
}

ElasticsearchExchange::~ElasticsearchExchange()
{
    try {
        entries_.clear();
        std::lock_guard<std::mutex> hold(spares_->lock);
        if (entries_.capacity() > spares_->entries.capacity())
            spares_->entries = std::move(entries_);
    } catch (...) {
        /* only memory not kept */
    }
}

/*
 * Everything the first request needs, from the batch, the settings and
 * before_ alone (it may run on the prefetch thread: nothing of sink_ that
 * changes is read or written).
 */
void ElasticsearchExchange::plan()
{
    planned_ = true;
    try {
        ElasticsearchBatch batch;
        batch.entries = std::move(entries_); /* empty: the memory of a batch before, maybe */
        read_batch(lines_, batch);
        entries_ = std::move(batch.entries);
        any_unchanged_ = batch.any_unchanged;
        ns_pool_ = std::move(batch.ns_pool); /* a set's nodes move: Change::nsp stays valid */
        schemas_ = std::move(batch.schemas);
        plan_ddl();
    } catch (const std::bad_alloc &) {
        throw;
    } catch (const EntryError &) {
        throw;
    } catch (const std::exception &e) {
        /* It only reads the entries: a line it cannot read fails every attempt. */
        throw EntryError(std::string("an entry the sink cannot read: ") + e.what());
    }
}

static void read_batch(std::string_view lines, ElasticsearchBatch &batch_read, bool compare_heads)
{
    ElasticsearchBatch *batch = &batch_read;
    std::vector<Change> &entries_ = batch->entries;
    std::set<std::string> &ns_pool_ = batch->ns_pool;
    size_t at = 0;
    std::string_view last_namespace, last_name; /* raw: the namespace of the entry before */
    size_t room = lines.size() / 128 + 16;      /* about a row a line's length: grown if more */
    if (entries_.capacity() < room) {
        entries_.reserve(room);
        ask_huge_pages(entries_.data(), entries_.capacity() * sizeof(Change));
    }
    RepeatedHead repeated;
    std::string_view last_lsn;
    uint64_t last_lsn_value = 0;
    while (at < lines.size()) {
        if (!compare_heads)
            repeated = RepeatedHead();
        entries_.emplace_back();
        Change &c = entries_.back();
        std::string_view schema, op, ns, name, lsn, seq, unchanged, resync_since;
        /* Most lines are Modifications as the changelog writes them: read in one go. */
        size_t end = modification_head(lines, at, &c.timestamp, &seq, &ns, &name, &op, &lsn,
                                       &c.before, &c.after, &unchanged, repeated);
        if (end != std::string_view::npos) {
            at = end + 1;
        } else {
            size_t nl = lines.find('\n', at);
            if (nl == std::string_view::npos)
                nl = lines.size();
            std::string_view line = lines.substr(at, nl - at);
            at = nl + 1;
            c.timestamp = c.before = c.after = seq = ns = name = op = lsn = unchanged = {};
            for_members(line, [&](std::string_view key, std::string_view value) {
                switch (key.size()) { /* by length first: one comparison a member */
                case 2:
                    if (key == "op")
                        op = value;
                    break;
                case 3:
                    if (key == "lsn")
                        lsn = value;
                    break;
                case 4:
                    if (key == "name")
                        name = value;
                    break;
                case 5:
                    if (key == "after")
                        c.after = value;
                    break;
                case 6:
                    if (key == "before")
                        c.before = value;
                    else if (key == "schema")
                        schema = value;
                    break;
                case 8:
                    if (key == "sequence")
                        seq = value;
                    break;
                case 12:
                    if (key == "resync_since")
                        resync_since = value;
                    break;
                case 9:
                    if (key == "namespace")
                        ns = value;
                    else if (key == "timestamp")
                        c.timestamp = value;
                    else if (key == "unchanged")
                        unchanged = value;
                    break;
                }
                return true;
            });
        }
        if (!schema.empty()) {
            c.schema = true;
            batch->schemas.push_back(entries_.size() - 1);
            c.schema_json = json::parse(schema);
            c.nsp = &*ns_pool_.insert(c.schema_json.value("namespace", "")).first;
            last_namespace = last_name = {};
            continue;
        }
        c.op_raw = op;
        c.kind = is_literal(op, "\"insert\"")     ? Op::insert
                 : is_literal(op, "\"update\"")   ? Op::update
                 : is_literal(op, "\"delete\"")   ? Op::delete_
                 : is_literal(op, "\"truncate\"") ? Op::truncate
                 : is_literal(op, "\"import\"")   ? Op::import
                                                  : Op::other;
        if (ns.size() == last_namespace.size() && name.size() == last_name.size() &&
            same_text(ns, last_namespace) && same_text(name, last_name) && entries_.size() > 1)
            c.nsp = entries_[entries_.size() - 2].nsp; /* most are of the table before */
        else
            c.nsp =
                &*ns_pool_.insert(avro_name(text_of(ns)) + "." + avro_name(text_of(name))).first;
        last_namespace = ns;
        last_name = name;
        /* The very view of the line before (a repeated head): its LSN, read once. */
        if (lsn.size() >= 2 && lsn.data() == last_lsn.data() && lsn.size() == last_lsn.size())
            c.lsn = last_lsn_value;
        else if (lsn.size() >= 2)
            parse_lsn(lsn.data() + 1, lsn.size() - 2, &c.lsn);
        last_lsn = lsn;
        last_lsn_value = c.lsn;
        std::from_chars(seq.data(), seq.data() + seq.size(), c.seq);
        /*
         * The resync rule (README, The changelog): at resync_end, a document
         * not written since resync_since is gone. Every document the table
         * holds was written since, so this is a TRUNCATE at (resync_since,
         * 0): what is older is removed, and never written again by a replay.
         * resync_start and drop entries change nothing (an index of a
         * dropped table stays, as an archive).
         */
        if (op == "\"resync_end\"" && resync_since.size() >= 2 &&
            parse_lsn(resync_since.data() + 1, resync_since.size() - 2, &c.lsn)) {
            c.kind = Op::truncate;
            c.seq = 0;
        }
        if (is_literal(c.before, "null"))
            c.before = {};
        if (is_literal(c.after, "null"))
            c.after = {};
        if (!unchanged.empty()) {
            for (std::string_view u : elements_of(unchanged))
                c.unchanged.push_back(text_of(u));
            batch->any_unchanged = true;
        }
    }
}

/* Names a column may not have: Elasticsearch's own fields, the sink's, object paths. */
static std::string field_problem(const std::string &name)
{
    static const char *const kMeta[] = {"_id",          "_index",
                                        "_source",      "_routing",
                                        "_ignored",     "_seq_no",
                                        "_version",     "_primary_term",
                                        "_tier",        "_doc_count",
                                        "_field_names", "_meta",
                                        "_nested_path", "_data_stream_timestamp",
                                        "_tsid",        "_type"};
    if (name.empty())
        return "an empty column name";
    if (name.find('.') != std::string::npos)
        return "column \"" + name + "\" has a dot, which Elasticsearch takes for an object path";
    if (name.rfind("_pgsink_", 0) == 0)
        return "column \"" + name + "\" clashes with the sink's own _pgsink_ fields";
    for (const char *m : kMeta)
        if (name == m)
            return "column \"" + name + "\" is the name of an Elasticsearch metadata field";
    return "";
}

static const char kMetaFields[] =
    R"("_pgsink_lsn":{"type":"long"},"_pgsink_sequence":{"type":"long"},)"
    R"("_pgsink_op":{"type":"keyword"},"_pgsink_deleted":{"type":"boolean"},)"
    R"("_pgsink_timestamp":{"type":"date","format":"strict_date_optional_time_nanos"})";

/* Phase 1: the indexes of new Schema entries, and those to check again. */
void ElasticsearchExchange::plan_ddl()
{
    for (size_t ei : schemas_) {
        const Change &c = entries_[ei];
        const json &s = c.schema_json;
        ElasticsearchSink::Index t;
        t.signature = s["fields"].dump() + s["key"].dump();
        /* The latest of this batch, else the one the sink knows. */
        const ElasticsearchSink::Index *known = nullptr;
        for (size_t k = new_ns_.size(); k-- > 0 && known == nullptr;)
            if (new_ns_[k] == c.ns())
                known = &new_[k];
        if (known == nullptr && before_.count(c.ns()))
            known = &before_.at(c.ns());
        if (known != nullptr && known->signature == t.signature && known->ready)
            continue;
        size_t dot = c.ns().find('.');
        t.name = elasticsearch_index_name(sink_.settings_.index_prefix, c.ns().substr(0, dot),
                                          c.ns().substr(dot + 1));
        for (const json &k : s["key"])
            t.key.push_back(k.get<std::string>());
        for (const json &f : s["fields"]) {
            ElasticsearchSink::Field field;
            field.name = f.contains("pg_name") ? f["pg_name"].get<std::string>()
                                               : f["name"].get<std::string>();
            field.pg_type = f.value("pg_type", "");
            field.mapping = elasticsearch_field_mapping(field.pg_type, sink_.settings_.json_stored);
            std::string why = field_problem(field.name);
            if (!why.empty() && t.refused.empty())
                t.refused = "table " + c.ns() + " cannot be an Elasticsearch index: " + why +
                            "; rename the column";
            t.fields.push_back(std::move(field));
        }
        if (t.key.empty())
            t.refused = "table " + c.ns() +
                        " has no key (primary key or replica identity index): an Elasticsearch "
                        "document needs one for its _id";
        /* Key columns the Schema entry names by their Avro names: the documents' names. */
        for (std::string &k : t.key)
            for (const json &f : s["fields"])
                if (f["name"] == k && f.contains("pg_name"))
                    k = f["pg_name"].get<std::string>();
        schema_at_[ei] = new_.size();
        new_.push_back(std::move(t));
        new_ns_.push_back(c.ns());
    }
    /* Indexes to check again (one that was missing at a write: made again). */
    for (auto &[ns, known] : before_)
        if (!known.ready && std::find(new_ns_.begin(), new_ns_.end(), ns) == new_ns_.end()) {
            new_.push_back(known);
            new_ns_.push_back(ns);
        }
    for (size_t i = 0; i < new_.size(); i++) {
        ElasticsearchSink::Index &t = new_[i];
        t.ready = true;
        if (!t.refused.empty())
            continue;
        std::string props;
        for (const ElasticsearchSink::Field &f : t.fields)
            props += json(f.name).dump() + ":" + f.mapping + ",";
        props += kMetaFields;
        json meta = {{"pgsink", {{"key", t.key}}}};
        json alias_filter = {{"filter", {{"term", {{"_pgsink_deleted", false}}}}}};
        std::string create = R"({"mappings":{"dynamic":"strict","_meta":)" + meta.dump() +
                             R"(,"properties":{)" + props + R"(}},"aliases":{)" +
                             json(t.name + "-live").dump() + ":" + alias_filter.dump() + "}}";
        steps_.push_back(Step{Kind::create, "PUT", "/" + t.name, create, i, "", {}, 0});
        steps_.push_back(
            Step{Kind::get_mapping, "GET", "/" + t.name + "/_mapping", "", i, "", {}, 0});
    }
    if (steps_.empty())
        plan_reads();
}

/* The index of entry i's namespace at that entry (nullptr: no Schema entry yet). */
const ElasticsearchSink::Index *
ElasticsearchExchange::in_effect(std::map<std::string, const ElasticsearchSink::Index *> &now,
                                 size_t i, const std::string &ns)
{
    auto schema = schema_at_.find(i);
    if (schema != schema_at_.end())
        return now[ns] = &new_[schema->second];
    auto it = now.find(ns);
    if (it != now.end())
        return it->second;
    /* As the sink knew it before the batch, or as checked again in this batch. */
    auto was = before_.find(ns);
    if (was == before_.end())
        return now[ns] = nullptr;
    if (!was->second.ready)
        for (size_t k = new_ns_.size(); k-- > 0;)
            if (new_ns_[k] == ns)
                return now[ns] = &new_[k];
    return now[ns] = &was->second;
}

/*
 * in_effect() for entry i, in order: most entries are of the table of the
 * entry before (until a Schema entry), which is not looked up again.
 */
const ElasticsearchSink::Index *ElasticsearchExchange::in_effect_cached(
    std::map<std::string, const ElasticsearchSink::Index *> &now, size_t i, const Change &c)
{
    if (!c.schema && c.nsp == cached_nsp_)
        return cached_index_;
    const ElasticsearchSink::Index *t = in_effect(now, i, c.ns());
    cached_nsp_ = c.schema ? nullptr : c.nsp;
    cached_index_ = t;
    return t;
}

/* A row's _id; *ok false if a key column is missing from it. */
std::string ElasticsearchExchange::id_of(const ElasticsearchSink::Index &t, std::string_view row,
                                         bool *ok) const
{
    *ok = true;
    if (t.key.size() == 1) { /* most keys: the text itself */
        const std::string &k = t.key[0];
        std::string_view v;
        /* Most rows start with their key column (as the table does): no search. */
        if (row.size() > k.size() + 4 && row[0] == '{' && row[1] == '"' &&
            same_text(row.substr(2, k.size()), k) && row[2 + k.size()] == '"' &&
            row[3 + k.size()] == ':' && plain_json_text(k)) {
            size_t i = 4 + k.size();
            try {
                take_value(row, &i, &v);
            } catch (const std::exception &) {
                v = {};
            }
            if (v.size() >= 2 && v[0] == '"' && plain_json_text(v.substr(1, v.size() - 2))) {
                std::string text(v.substr(1, v.size() - 2));
                if (!text.empty() && text.size() <= 512 && text[0] != '#')
                    return text;
                return elasticsearch_doc_id({text});
            }
        }
        if (v.empty())
            v = find_member(row, k);
        *ok = !v.empty() && v != "null";
        std::string text = text_of(v);
        if (!text.empty() && text.size() <= 512 && text[0] != '#')
            return text;
        return elasticsearch_doc_id({text});
    }
    std::vector<std::string> texts;
    Members m = members_of(row);
    for (const std::string &k : t.key) {
        std::string_view v = member(m, k.c_str());
        if (v.empty() || v == "null")
            *ok = false;
        texts.push_back(text_of(v));
    }
    return elasticsearch_doc_id(texts);
}

static bool before_position(const Change &c, uint64_t lsn, uint64_t seq)
{
    return c.lsn < lsn || (c.lsn == lsn && c.seq < seq);
}

/* A line of at most 320 bytes composed on the stack (the caller checks it fits). */
struct Composed {
    char buf[320];
    char *p = buf;
    size_t size() const { return static_cast<size_t>(p - buf); }
    template <size_t N> void lit(const char (&text)[N])
    {
        memcpy(p, text, N - 1);
        p += N - 1;
    }
    void put(std::string_view v)
    {
        memcpy(p, v.data(), v.size());
        p += v.size();
    }
    void number(uint64_t n) { p = std::to_chars(p, p + 24, n).ptr; }
};

/* A string literal appended without measuring it. */
template <size_t N> static inline void lit(std::string &out, const char (&text)[N])
{
    out.append(text, N - 1);
}

static void append_number(std::string &out, uint64_t n)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof(buf), n);
    out.append(buf, static_cast<size_t>(r.ptr - buf));
}

/*
 * Phase 2: the _ids of every change (kept for the writes), and the
 * documents that updates with unchanged TOASTed columns take values from.
 */
void ElasticsearchExchange::plan_reads()
{
    phase_ = 1;
    std::map<std::string, std::set<std::string>> wanted;  /* ns -> _ids */
    std::map<std::string, std::set<std::string>> carried; /* ns -> unchanged columns */
    std::set<std::string> written;                        /* ns + _id written earlier */
    std::map<std::string, const ElasticsearchSink::Index *> now;
    cached_nsp_ = nullptr;
    for (size_t i = 0; i < entries_.size(); i++) {
        Change &c = entries_[i];
        const ElasticsearchSink::Index *t = in_effect_cached(now, i, c);
        if (c.schema || t == nullptr || !t->refused.empty() || c.kind == Op::truncate)
            continue;
        std::string_view values = c.kind == Op::delete_ ? c.before : c.after;
        if (values.empty())
            continue;
        c.id = id_of(*t, values, &c.id_ok);
        if (c.kind == Op::update && !c.before.empty())
            c.old_id = id_of(*t, c.before, &c.old_id_ok);
        if (resent_ && !before_position(c, t->truncated_lsn, t->truncated_seq)) {
            /* Where each document is now (see resent_). */
            if (c.id_ok)
                wanted[c.ns()].insert(c.id);
            if (c.kind == Op::update && !c.before.empty() && c.old_id_ok)
                wanted[c.ns()].insert(c.old_id);
        }
        if (!any_unchanged_ || before_position(c, t->truncated_lsn, t->truncated_seq))
            continue;
        if (c.kind == Op::update && !c.unchanged.empty()) {
            const std::string &source = c.before.empty() ? c.id : c.old_id;
            if (!written.count(c.ns() + '\x1e' + source)) {
                wanted[c.ns()].insert(source);
                carried[c.ns()].insert(c.unchanged.begin(), c.unchanged.end());
            }
            /*
             * A key change: the new key's document too, to tell a replay
             * (plan_writes()), also when a change before it in the batch
             * wrote the old key: in a replay that change is skipped (the
             * index holds newer), and the values to carry are not there.
             */
            if (source != c.id && !written.count(c.ns() + '\x1e' + c.id))
                wanted[c.ns()].insert(c.id);
        }
        written.insert(c.ns() + '\x1e' + c.id);
    }
    for (auto &[ns, ids] : wanted) {
        const ElasticsearchSink::Index *t = in_effect(now, entries_.size(), ns);
        /* Only the fields carried over, and the tombstone flag: TOASTed values are large. */
        std::string fields;
        for (const std::string &f : carried[ns]) {
            raw_json::append_string(fields, f);
            fields += ",";
        }
        fields += R"("_pgsink_deleted","_pgsink_sequence")";
        std::vector<std::string> pieces(1);
        size_t n = 0;
        for (const std::string &id : ids) {
            if (n++ % 1000 == 0 && n > 1)
                pieces.emplace_back();
            if (!pieces.back().empty())
                pieces.back() += ",";
            pieces.back() += R"({"_id":)";
            raw_json::append_string(pieces.back(), id);
            pieces.back() += R"(,"_source":[)" + fields + "]}";
        }
        for (const std::string &p : pieces)
            steps_.push_back(Step{Kind::mget,
                                  "POST",
                                  "/" + t->name + "/_mget",
                                  R"({"docs":[)" + p + "]}",
                                  0,
                                  ns,
                                  {},
                                  0});
    }
    if (at_ >= steps_.size())
        plan_writes();
}

/* Phase 3: the changes, one _bulk (a TRUNCATE in between ends one). */
void ElasticsearchExchange::plan_writes()
{
    phase_ = 2;
    std::string bulk;
    std::vector<size_t> items;
    size_t room = 0;
    for (const Change &c : entries_)
        room += c.after.size() + c.before.size() + c.timestamp.size() + 200;
    bulk.reserve(room);
    ask_huge_pages(bulk.data(), bulk.capacity());
    /*
     * A batch of one table's changes (most are) names its index once, in
     * the path, instead of in every action line.
     */
    const std::string *one_ns = nullptr;
    bool one_table = true;
    for (const Change &c : entries_)
        if (!c.schema) {
            one_table = one_table && (one_ns == nullptr || one_ns == c.nsp);
            one_ns = c.nsp;
        }
    std::string bulk_index; /* the index of the bulk's actions (one_table) */
    size_t first_write = steps_.size();
    size_t changes = 0;
    for (const Change &c : entries_)
        changes += c.schema ? 0 : 1;
    auto flush = [&]() {
        if (items.empty())
            return;
        /*
         * Carried TOAST values can make a _bulk far larger than the batch:
         * past max_bulk_bytes (under Elasticsearch's default http.max_content_length,
         * and a bound on memory) the batch is split instead.
         */
        if (bulk.size() > sink_.settings_.max_bulk_bytes && changes > 1)
            too_large_ = true;
        /* Only what the sink reads of each item: the answer is a seventh of its size. */
        std::string path = (one_table ? "/" + bulk_index : std::string()) +
                           "/_bulk?filter_path=errors,items.*.status,items.*.error";
        steps_.push_back(
            Step{Kind::bulk, "POST", path, std::move(bulk), 0, "", std::move(items), 0});
        bulk.clear();
        items.clear();
    };
    /* ns -> _id -> the document as this batch leaves it (only those read later) */
    std::map<std::string, std::map<std::string, Doc>> cur;
    std::set<std::string> sources; /* ns + _id of documents later updates take values from */
    for (const Change &c : entries_)
        if (!c.schema && c.kind == Op::update && !c.unchanged.empty() && !c.after.empty())
            sources.insert(c.ns() + '\x1e' + (c.before.empty() ? c.id : c.old_id));
    /* The LSN's digits, made once for the many changes of a transaction. */
    uint64_t digits_of = 0;
    char digits[24];
    size_t digits_len = 0;
    auto lsn_digits = [&](uint64_t lsn) {
        if (digits_len == 0 || digits_of != lsn) {
            digits_len = static_cast<size_t>(
                std::to_chars(digits, digits + sizeof(digits), lsn).ptr - digits);
            digits_of = lsn;
        }
        return std::string_view(digits, digits_len);
    };
    auto append_lsn = [&](uint64_t lsn) { bulk += lsn_digits(lsn); };
    std::string index_json; /* the index of the entry before, as a JSON string */
    const ElasticsearchSink::Index *index_of = nullptr;
    auto action = [&](const ElasticsearchSink::Index &t, const std::string &id, const Change &c) {
        if (index_of != &t) {
            index_json.clear();
            raw_json::append_string(index_json, t.name);
            index_of = &t;
            bulk_index = t.name;
        }
        if (one_table && id.size() <= 128 && plain_json_text(id)) {
            /* Most actions: composed on the stack, appended at once. */
            Composed l;
            l.lit(R"({"index":{"_id":")");
            l.put(id);
            l.lit(R"(","version":)");
            l.put(lsn_digits(c.lsn));
            l.lit(",\"version_type\":\"external_gte\"}}\n");
            bulk.append(l.buf, l.size());
            return;
        }
        if (one_table) {
            lit(bulk, R"({"index":{"_id":)");
        } else {
            lit(bulk, R"({"index":{"_index":)");
            bulk += index_json;
            lit(bulk, R"(,"_id":)");
        }
        raw_json::append_string(bulk, id);
        lit(bulk, R"(,"version":)");
        append_lsn(c.lsn);
        lit(bulk, ",\"version_type\":\"external_gte\"}}\n");
    };
    auto meta = [&](const Change &c, bool deleted) {
        if (c.op_raw.size() + c.timestamp.size() <= 160) {
            Composed l;
            l.lit(R"("_pgsink_lsn":)");
            l.put(lsn_digits(c.lsn));
            l.lit(R"(,"_pgsink_sequence":)");
            l.number(c.seq);
            l.lit(R"(,"_pgsink_op":)");
            l.put(c.op_raw);
            if (deleted)
                l.lit(R"(,"_pgsink_deleted":true)");
            else
                l.lit(R"(,"_pgsink_deleted":false)");
            l.lit(R"(,"_pgsink_timestamp":)");
            l.put(c.timestamp.empty() ? std::string_view("null") : c.timestamp);
            l.lit("}\n");
            bulk.append(l.buf, l.size());
            return;
        }
        lit(bulk, R"("_pgsink_lsn":)");
        append_lsn(c.lsn);
        lit(bulk, R"(,"_pgsink_sequence":)");
        append_number(bulk, c.seq);
        lit(bulk, R"(,"_pgsink_op":)");
        bulk += c.op_raw;
        if (deleted)
            lit(bulk, R"(,"_pgsink_deleted":true)");
        else
            lit(bulk, R"(,"_pgsink_deleted":false)");
        lit(bulk, R"(,"_pgsink_timestamp":)");
        bulk += c.timestamp.empty() ? std::string_view("null") : c.timestamp;
        lit(bulk, "}\n");
    };
    Members row;
    auto tombstone = [&](const ElasticsearchSink::Index &t, const std::string &id,
                         std::string_view values, const Change &c, size_t i) {
        members_of(values, row);
        action(t, id, c);
        lit(bulk, "{");
        for (const std::string &k : t.key) {
            raw_json::append_string(bulk, k);
            lit(bulk, ":");
            bulk += member(row, k.c_str());
            lit(bulk, ",");
        }
        meta(c, true);
        items.push_back(i);
    };
    std::map<std::string, const ElasticsearchSink::Index *> now;
    cached_nsp_ = nullptr;
    for (size_t i = 0; i < entries_.size(); i++) {
        const Change &c = entries_[i];
        const ElasticsearchSink::Index *tp = in_effect_cached(now, i, c);
        if (c.schema || c.kind == Op::other)
            continue; /* resync_start, drop, and ops of later versions change no document */
        if (tp == nullptr) {
            refuse(i, "no Schema entry of " + c.ns() + " before its changes");
            continue;
        }
        const ElasticsearchSink::Index &t = *tp;
        if (!t.refused.empty()) {
            refuse(i, t.refused);
            continue;
        }
        /* Removed by a TRUNCATE that Elasticsearch has seen: never written again. */
        if (before_position(c, t.truncated_lsn, t.truncated_seq))
            continue;
        if (c.kind == Op::truncate) {
            flush();
            json meta_doc = {
                {"_meta",
                 {{"pgsink",
                   {{"key", t.key}, {"truncated_lsn", c.lsn}, {"truncated_sequence", c.seq}}}}}};
            steps_.push_back(Step{
                Kind::meta, "PUT", "/" + t.name + "/_mapping", meta_doc.dump(), 0, c.ns(), {}, i});
            steps_.push_back(
                Step{Kind::refresh, "POST", "/" + t.name + "/_refresh", "", 0, c.ns(), {}, i});
            std::string lsn = std::to_string(c.lsn);
            std::string before = R"({"query":{"bool":{"should":[{"range":{"_pgsink_lsn":{"lt":)" +
                                 lsn + R"(}}},{"bool":{"filter":[{"term":{"_pgsink_lsn":)" + lsn +
                                 R"(}},{"range":{"_pgsink_sequence":{"lt":)" +
                                 std::to_string(c.seq) + R"(}}}]}}],"minimum_should_match":1}}})";
            steps_.push_back(Step{Kind::delete_by_query,
                                  "POST",
                                  "/" + t.name + "/_delete_by_query?conflicts=proceed&refresh=true",
                                  before,
                                  0,
                                  c.ns(),
                                  {},
                                  i});
            cur[c.ns()].clear();
            read_[c.ns()].clear();
            continue;
        }
        if (c.kind == Op::delete_) {
            if (c.before.empty()) {
                refuse(i, kNoOldKey); /* REPLICA IDENTITY NOTHING: no key to delete by */
                continue;
            }
            if (!c.id_ok) {
                refuse(i, "a key column of this delete has no value");
                continue;
            }
            if (!stored_newer(c, c.id))
                tombstone(t, c.id, c.before, c, i);
            if (!sources.empty())
                cur[c.ns()].erase(c.id);
            continue;
        }
        if (c.after.empty())
            continue;
        if (!c.id_ok) {
            refuse(i, "a key column of this change has no value");
            continue;
        }
        bool key_changed = c.kind == Op::update && !c.before.empty();
        if (key_changed && !c.old_id_ok) {
            refuse(i, "a key column of this update's old row has no value");
            continue;
        }
        key_changed = key_changed && c.old_id != c.id;
        const std::string &source_id = key_changed ? c.old_id : c.id;
        std::string carried;
        Doc next;
        bool replayed = false; /* a key change the index holds: its old key's tombstone only */
        if (!c.unchanged.empty()) {
            std::map<std::string, Doc> &docs = cur[c.ns()];
            const Doc *source = nullptr;
            auto in_batch = docs.find(source_id);
            auto read = read_[c.ns()].find(source_id);
            if (in_batch != docs.end())
                source = &in_batch->second;
            else if (read != read_[c.ns()].end())
                source = &read->second;
            if (source != nullptr && source->version > c.lsn && in_batch == docs.end()) {
                /* Elasticsearch holds a newer version: this update would be refused (409). */
                if (!key_changed)
                    continue;
                /*
                 * A key change: the old key's newer document (a later batch
                 * overtook this one) is not where its values come from, and
                 * the new key still needs its row: delivered (below), or parked.
                 */
                source = nullptr;
            }
            std::string missing;
            for (const std::string &u : c.unchanged) {
                const std::string *value = nullptr;
                if (source != nullptr && !source->deleted) {
                    auto f = source->fields.find(u);
                    if (f != source->fields.end())
                        value = &f->second;
                }
                if (value == nullptr) {
                    missing += (missing.empty() ? "" : ", ") + u;
                    continue;
                }
                if (!carried.empty())
                    carried += ",";
                raw_json::append_string(carried, u);
                carried += ":" + *value;
                next.fields[u] = *value;
            }
            /*
             * A key change sent again (a replay after a crash, a rewind): the
             * old key's document may be the tombstone it left. If the new
             * key's document is this change's or a later one, it was
             * delivered: nothing to carry, nothing to park. The old key's
             * tombstone goes again all the same (the same version; 409 if
             * the index holds newer): only when values are missing, so that
             * a new key written meanwhile by a batch that overtook this one
             * never keeps the old key's document alive.
             */
            if (!missing.empty() && key_changed && docs.find(c.id) == docs.end()) {
                auto target = read_[c.ns()].find(c.id);
                replayed = target != read_[c.ns()].end() &&
                           (target->second.version > c.lsn ||
                            (target->second.version == c.lsn && target->second.sequence >= c.seq));
            }
            if (!missing.empty() && !replayed) {
                refuse(i, "the unchanged TOASTed value of column(s) " + missing +
                              " is not in Elasticsearch (the row was never delivered there, or "
                              "was deleted): import the table again");
                continue;
            }
        }
        if (key_changed && !stored_newer(c, c.old_id)) {
            /* A changed key: the old key's document becomes a tombstone. */
            tombstone(t, c.old_id, c.before, c, i);
            if (!sources.empty())
                cur[c.ns()].erase(c.old_id);
        }
        if (replayed || stored_newer(c, c.id))
            continue;
        action(t, c.id, c);
        /* The row as the changelog wrote it, the carried values, then the sink's fields. */
        std::string_view body = c.after;
        size_t close = body.rfind('}');
        bool has_members = body.find_first_not_of(" \t\r\n", 1) != close;
        bulk.append(body.data(), close);
        if (!carried.empty()) {
            if (has_members)
                lit(bulk, ",");
            bulk += carried;
        }
        if (has_members || !carried.empty())
            lit(bulk, ",");
        meta(c, false);
        items.push_back(i);
        if (bulk.size() > sink_.settings_.max_bulk_bytes && changes > 1) {
            too_large_ = true; /* too large anyway: the batch is split */
            break;
        }
        if (!sources.empty() && sources.count(c.ns() + '\x1e' + c.id)) {
            members_of(c.after, row);
            for (const auto &kv : row)
                next.fields[kv.first] = std::string(kv.second);
            next.version = c.lsn;
            cur[c.ns()][c.id] = std::move(next);
        }
    }
    flush();
    if (too_large_)
        steps_.resize(first_write); /* nothing of it is sent */
}

/* Sent again from the dead letters: does Elasticsearch hold document id at or after c? */
bool ElasticsearchExchange::stored_newer(const Change &c, const std::string &id) const
{
    if (!resent_)
        return false;
    auto ns = read_.find(c.ns());
    if (ns == read_.end())
        return false;
    auto d = ns->second.find(id);
    if (d == ns->second.end())
        return false;
    return d->second.version > c.lsn || (d->second.version == c.lsn && d->second.sequence >= c.seq);
}

HttpRequest ElasticsearchExchange::next()
{
    if (!planned_)
        plan();
    if (steps_.empty()) {
        /* Nothing to send (every change skipped or refused): a cheap request that answers. */
        steps_.push_back(Step{Kind::refresh, "GET", "/", "", 0, "", {}, 0});
    }
    Step &s = steps_.at(at_);
    /* An exchange is made anew for every attempt: its step's body is sent once. */
    HttpRequest r = sink_.request_to(s.method, s.path, std::move(s.body));
    if (s.kind == Kind::mget || s.kind == Kind::bulk || s.kind == Kind::get_mapping)
        r.keep_answer = static_cast<size_t>(1) << 30;
    return r;
}

/* The Elasticsearch error of an answer: "type: reason", or the body's start. */
static std::string es_error(const std::string &body)
{
    try {
        json j = json::parse(body);
        const json &e = j.contains("error") ? j["error"] : j;
        if (e.is_object() && e.contains("type"))
            return e.value("type", "") + ": " + e.value("reason", "");
        if (e.is_string())
            return e.get<std::string>();
    } catch (const std::exception &) {
    }
    return body;
}

std::optional<Answer> ElasticsearchExchange::fail(const HttpResponse &r, Answer::Kind kind)
{
    Answer a;
    a.kind = kind;
    a.status = static_cast<int>(r.status);
    a.response = answer_excerpt(sink_.scrub(es_error(r.body)), 300);
    a.too_large = r.status == 413;
    a.retry_after_ms = retry_after_ms(r.retry_after, static_cast<long>(time(nullptr)));
    const Step &s = steps_.at(at_);
    a.message = sink_.describe() +
                (r.status == 0 ? ": " + r.transport_error
                               : " answered HTTP " + std::to_string(r.status) + " to " + s.method +
                                     " " + s.path.substr(0, s.path.find('?')) + ": " + a.response);
    if (r.status == 401 || r.status == 403)
        a.message += " (check pgsink.elasticsearch_api_key, or _user and _password)";
    return a;
}

void ElasticsearchExchange::read_mapping(size_t table, const std::string &body)
{
    ElasticsearchSink::Index &t = new_[table];
    json j = json::parse(body);
    if (!j.contains(t.name))
        throw std::runtime_error("the mapping answer does not name index " + t.name);
    const json &m = j[t.name].value("mappings", json::object());
    const json props = m.value("properties", json::object());
    if (m.contains("_meta") && m["_meta"].contains("pgsink")) {
        const json &p = m["_meta"]["pgsink"];
        t.truncated_lsn = p.value("truncated_lsn", static_cast<uint64_t>(0));
        t.truncated_seq = p.value("truncated_sequence", static_cast<uint64_t>(0));
        if (p.contains("key") && p["key"] != json(t.key))
            t.refused = "the Elasticsearch index " + t.name + " was made for the key " +
                        p["key"].dump() + " but the table's key is now " + json(t.key).dump() +
                        ": documents would get other _ids; delete the index, then rewind the "
                        "sink or import the table again";
    }
    std::string missing;
    for (const ElasticsearchSink::Field &f : t.fields)
        if (!props.contains(f.name))
            missing += (missing.empty() ? "" : ",") + json(f.name).dump() + ":" + f.mapping;
    if (!missing.empty() && t.refused.empty())
        steps_.insert(steps_.begin() + static_cast<long>(at_) + 1,
                      Step{Kind::put_mapping,
                           "PUT",
                           "/" + t.name + "/_mapping",
                           R"({"properties":{)" + missing + "}}",
                           table,
                           "",
                           {},
                           0});
}

/* Every index is checked again (made again if missing) by the next attempt, which is retried. */
std::optional<Answer> ElasticsearchExchange::index_missing(const HttpResponse &r)
{
    for (auto &kv : sink_.indexes_to_change())
        kv.second.ready = false;
    std::optional<Answer> a = fail(r, Answer::Kind::retry);
    a->message += " (an index was deleted: it is made again, then the batch sent again)";
    return a;
}

/* The documents of an _mget answer into read_; false if one could not be read (its error). */
bool ElasticsearchExchange::read_docs(const std::string &ns, const std::string &body)
{
    Members top = members_of(body);
    std::string_view docs = member(top, "docs");
    if (docs.empty())
        throw std::runtime_error("an _mget answer without docs");
    for (std::string_view d : elements_of(docs)) {
        Members m = members_of(d);
        if (!member(m, "error").empty())
            return false;
        if (member(m, "found") != "true")
            continue;
        Doc doc;
        doc.version = strtoull(std::string(member(m, "_version")).c_str(), nullptr, 10);
        for (auto &kv : members_of(member(m, "_source")))
            doc.fields[kv.first] = std::string(kv.second);
        doc.deleted = doc.fields["_pgsink_deleted"] == "true";
        std::string_view sequence = doc.fields["_pgsink_sequence"];
        std::from_chars(sequence.data(), sequence.data() + sequence.size(), doc.sequence);
        read_[ns][text_of(member(m, "_id"))] = std::move(doc);
    }
    return true;
}

/* Per-item results of a _bulk: 409 is delivered; 429 and 5xx sent again; other errors parked. */
std::optional<Answer> ElasticsearchExchange::read_bulk(const Step &step, const HttpResponse &r)
{
    size_t head = r.body.find("\"errors\"");
    if (head != std::string::npos && head < 200) {
        size_t v = skip_ws(r.body, r.body.find(':', head) + 1);
        if (r.body.compare(v, 5, "false") == 0)
            return std::nullopt;
    }
    json j = json::parse(r.body);
    const json &items = j.at("items");
    if (items.size() != step.items.size())
        throw std::runtime_error("a _bulk answer with " + std::to_string(items.size()) +
                                 " items for " + std::to_string(step.items.size()) + " actions");
    std::map<size_t, Answer::Entry> worst;
    bool missing_index = false;
    for (size_t k = 0; k < items.size(); k++) {
        const json &item = items[k].begin().value();
        int status = item.value("status", 0);
        if ((status >= 200 && status < 300) || status == 409)
            continue;
        size_t entry = step.items[k];
        std::string why = answer_excerpt(sink_.scrub(es_error(item.dump())), 300);
        bool retry = status == 429 || status >= 500 || status == 0;
        if (status == 404 && why.rfind("index_not_found_exception", 0) == 0) {
            retry = true; /* someone deleted the index: made again, then the entry again */
            missing_index = true;
        }
        auto w = worst.find(entry);
        if (w == worst.end() || (retry && !w->second.retry))
            worst[entry] = Answer::Entry{entry, retry, status, why};
    }
    if (missing_index)
        for (auto &kv : sink_.indexes_to_change())
            kv.second.ready = false;
    /*
     * A change sent again must never land after a later change of the same
     * document that was taken: changes of one transaction share a version,
     * which external_gte lets the older overwrite. So every later change of
     * a document that an entry sent again writes goes again too, after it
     * (in the entries' order, as Elasticsearch applies a _bulk's items of
     * one shard); changes of later transactions have higher versions, and
     * a later batch of the same transaction waits for this one (order_of()).
     */
    bool any_retry = false;
    for (const auto &kv : worst)
        any_retry = any_retry || kv.second.retry;
    if (any_retry) {
        /* The document of item k: an entry's tombstone of its old key comes before its write. */
        auto doc_of = [&](size_t k) -> std::pair<const std::string *, const std::string *> {
            const Change &c = entries_[step.items[k]];
            bool old_key = k + 1 < step.items.size() && step.items[k + 1] == step.items[k];
            return {c.nsp, old_key ? &c.old_id : &c.id};
        };
        std::set<std::pair<const std::string *, std::string_view>> again;
        for (size_t k = 0; k < step.items.size(); k++) {
            size_t entry = step.items[k];
            auto [nsp, id] = doc_of(k);
            auto w = worst.find(entry);
            if (w == worst.end() && again.count({nsp, *id})) {
                w = worst
                        .emplace(entry, Answer::Entry{entry, true, 429,
                                                      "sent again after an earlier change of the "
                                                      "same document, which is sent again"})
                        .first;
                /* Its other item (the old key's tombstone) is written again too. */
                for (size_t j = k; j-- > 0 && step.items[j] == entry;) {
                    auto d = doc_of(j);
                    again.insert({d.first, *d.second});
                }
            }
            if (w != worst.end() && w->second.retry)
                again.insert({nsp, *id});
        }
    }
    for (auto &kv : worst)
        refused_.push_back(kv.second);
    return std::nullopt;
}

std::optional<Answer> ElasticsearchExchange::answer(const HttpResponse &r)
{
    try {
        return read_answer(r);
    } catch (const std::exception &) {
        /* A proxy's page, a cut answer: retried; the message never quotes a parser. */
        HttpResponse odd = r;
        odd.status = r.status == 200 ? 502 : r.status;
        std::optional<Answer> a = fail(odd, Answer::Kind::retry);
        a->status = static_cast<int>(r.status);
        a->message = sink_.describe() + " answered HTTP " + std::to_string(r.status) + " to " +
                     steps_.at(at_).method + " " +
                     steps_.at(at_).path.substr(0, steps_.at(at_).path.find('?')) +
                     " with what is not an Elasticsearch answer: " +
                     answer_excerpt(sink_.scrub(r.body), 200);
        return a;
    }
}

std::optional<Answer> ElasticsearchExchange::read_answer(const HttpResponse &r)
{
    Step &step = steps_.at(at_);
    if (r.status == 0 || r.status == 429 || r.status >= 500 || r.status == 401 || r.status == 403 ||
        r.status == 408)
        return fail(r, Answer::Kind::retry);
    /*
     * Someone deleted an index (a _bulk says so per item, read_bulk()): it is
     * made again, as the next attempt checks every index again, then the
     * batch goes again.
     */
    if (r.status == 404 && r.body.find("index_not_found_exception") != std::string::npos)
        return index_missing(r);
    bool ok = r.status >= 200 && r.status < 300;
    switch (step.kind) {
    case Kind::create:
        if (ok || (r.status == 400 &&
                   r.body.find("resource_already_exists_exception") != std::string::npos))
            break;
        if (r.status == 400) {
            /* Elasticsearch refuses the index (its name, its mapping): its changes are parked. */
            new_[step.table].refused = "Elasticsearch refused index " + new_[step.table].name +
                                       ": " + answer_excerpt(sink_.scrub(es_error(r.body)), 300);
            at_++; /* its mapping is not read */
            sink_.indexes_to_change()[new_ns_[step.table]] = new_[step.table];
            break;
        }
        return fail(r, Answer::Kind::retry);
    case Kind::get_mapping:
        if (!ok)
            return fail(r, Answer::Kind::retry);
        read_mapping(step.table, r.body);
        if (at_ + 1 >= steps_.size() || steps_[at_ + 1].kind != Kind::put_mapping)
            sink_.indexes_to_change()[new_ns_[step.table]] = new_[step.table];
        break;
    case Kind::put_mapping:
        if (r.status == 400)
            new_[step.table].refused = "Elasticsearch refused the new fields of index " +
                                       new_[step.table].name + ": " +
                                       answer_excerpt(sink_.scrub(es_error(r.body)), 300);
        else if (!ok)
            return fail(r, Answer::Kind::retry);
        sink_.indexes_to_change()[new_ns_[step.table]] = new_[step.table];
        break;
    case Kind::mget:
        if (!ok)
            return fail(r, Answer::Kind::retry);
        if (!read_docs(step.ns, r.body)) {
            if (r.body.find("index_not_found_exception") != std::string::npos)
                return index_missing(r);
            /* A document that could not be read is not a missing one: never parked for it. */
            HttpResponse partial = r;
            partial.status = 500;
            return fail(partial, Answer::Kind::retry);
        }
        break;
    case Kind::bulk:
        if (!ok)
            return fail(r, r.status == 413 || r.status == 400 ? Answer::Kind::reject
                                                              : Answer::Kind::retry);
        read_bulk(step, r);
        break;
    case Kind::meta: {
        if (!ok)
            return fail(r, Answer::Kind::retry);
        ElasticsearchSink::Index &t = sink_.indexes_to_change()[step.ns];
        t.truncated_lsn = entries_[step.entry].lsn;
        t.truncated_seq = entries_[step.entry].seq;
        break;
    }
    case Kind::refresh:
        if (!ok)
            return fail(r, Answer::Kind::retry);
        break;
    case Kind::delete_by_query: {
        if (!ok)
            return fail(r, Answer::Kind::retry);
        json j = json::parse(r.body);
        if (j.contains("failures") && !j["failures"].empty()) {
            HttpResponse partial = r;
            partial.status = 500;
            return fail(partial, Answer::Kind::retry);
        }
        break;
    }
    }
    return advance();
}

/* The next step, the next phase, or the batch's answer. */
std::optional<Answer> ElasticsearchExchange::advance()
{
    at_++;
    if (at_ >= steps_.size() && phase_ == 0)
        plan_reads();
    if (at_ >= steps_.size() && phase_ == 1)
        plan_writes();
    if (at_ >= steps_.size() && too_large_) {
        Answer a;
        a.kind = Answer::Kind::reject;
        a.too_large = true;
        a.status = 413;
        a.message = sink_.describe() +
                    ": a _bulk of this batch, with the unchanged TOASTed values it carries, would "
                    "be over " +
                    std::to_string(sink_.settings_.max_bulk_bytes >> 20) +
                    " MB: the batch is split";
        return a;
    }
    if (at_ >= steps_.size()) {
        Answer a;
        a.entries = refused_;
        if (!refused_.empty()) {
            a.status = refused_.front().status;
            /*
             * The reasons may quote key values: they go to pgsink.dead_letters
             * (superuser only), not to pgsink.sinks (pg_monitor reads it).
             */
            a.message = sink_.describe() + ": " + std::to_string(refused_.size()) +
                        " change(s) not taken; the reasons are in pgsink.dead_letters";
            a.retry_after_ms = -1;
        }
        return a;
    }
    return std::nullopt;
}

std::unique_ptr<HttpSink::Exchange> ElasticsearchSink::exchange(std::string_view lines,
                                                                const std::string &key)
{
    return make_exchange(lines, key, false);
}

std::unique_ptr<HttpSink::Exchange> ElasticsearchSink::exchange_resent(std::string_view lines,
                                                                       const std::string &key)
{
    return make_exchange(lines, key, true);
}

std::unique_ptr<HttpSink::Exchange>
ElasticsearchSink::make_exchange(std::string_view lines, const std::string &key, bool resent)
{
    (void)key;
    /* The lines are read at the first next() (a line it cannot read: EntryError then). */
    return std::make_unique<ElasticsearchExchange>(*this, lines, resent);
}

/*
 * What order_of() needs of a batch, from its lines' heads (the rows are
 * read with the rest when the exchange plans, maybe on the prefetch
 * thread): the commit LSN of its first and last lines, whether every line
 * is a plain change (an insert, update, delete or import, laid out as the
 * changelog writes it) and whether one leaves TOASTed columns unchanged.
 * Any other line (a Schema entry, a TRUNCATE, resync and drop entries, a
 * line laid out otherwise or not read) counts as special: its batch goes
 * alone, which is never wrong, only slower.
 */
struct Outline {
    uint64_t first_lsn = 0, last_lsn = 0;
    bool special = false, unchanged = false;
};

static Outline outline_of(std::string_view lines, bool compare_heads = true)
{
    Outline o;
    size_t at = 0;
    std::string_view first, last;
    /* The line before's timestamp, and its ",\"namespace\":...,\"lsn\":" (see RepeatedHead). */
    std::string_view last_timestamp, last_head;
    while (at < lines.size()) {
        const char *nl =
            static_cast<const char *>(memchr(lines.data() + at, '\n', lines.size() - at));
        size_t end = nl == nullptr ? lines.size() : static_cast<size_t>(nl - lines.data());
        std::string_view line = lines.substr(at, end - at);
        at = end + 1;
        if (!compare_heads)
            last_timestamp = last_head = {};
        if (first.data() == nullptr)
            first = line;
        last = line;
        if (o.special)
            continue; /* only the last line's LSN is still wanted */
        std::string_view timestamp, seq, ns, name, op;
        size_t i = 0;
        bool plain = false;
        try {
            plain = take(line, &i, "{\"timestamp\":") &&
                    (take_repeated(line, &i, &last_timestamp, &timestamp), true) &&
                    take_member(line, &i, ",\"sequence\":", &seq);
            /* The same bytes as the plain line before, up to its lsn: plain too. */
            if (plain && !repeats(line, i, last_head, '"')) {
                size_t from = i;
                plain = take_member(line, &i, ",\"namespace\":", &ns) &&
                        take_member(line, &i, ",\"name\":", &name) &&
                        take_member(line, &i, ",\"op\":", &op) && take(line, &i, ",\"lsn\":") &&
                        (is_literal(op, "\"insert\"") || is_literal(op, "\"update\"") ||
                         is_literal(op, "\"delete\"") || is_literal(op, "\"import\""));
                last_head = plain ? line.substr(from, i - from) : std::string_view();
            }
        } catch (const std::exception &) {
            plain = false;
        }
        if (!plain)
            last_head = {};
        /* "unchanged", an array, is the last member if there is one: the line ends "]}". */
        if (plain && line.size() >= 2 && line[line.size() - 2] == ']')
            o.unchanged = true;
        o.special = !plain;
    }
    /* Of a plain change, the first "lsn" member is the line's own (the values before are strings).
     */
    o.first_lsn = first.data() == nullptr ? 0 : lsn_of_line(first);
    o.last_lsn = last.data() == nullptr ? 0 : lsn_of_line(last);
    return o;
}

/*
 * For selftests: what the lines' heads read as, compared with the line
 * before's (RepeatedHead, outline_of()), against every head read in full;
 * "" if the same, else the first difference.
 */
std::string elasticsearch_compared_heads_problem(std::string_view lines)
{
    auto read = [lines](bool compare_heads, std::string *error) {
        ElasticsearchBatch b;
        try {
            read_batch(lines, b, compare_heads);
        } catch (const std::exception &e) {
            *error = e.what();
        }
        std::vector<std::string> out;
        for (const Change &c : b.entries) {
            std::string e = std::to_string(c.schema) + "|" + (c.nsp ? *c.nsp : "-") + "|" +
                            std::string(c.op_raw) + "|" + std::to_string(static_cast<int>(c.kind)) +
                            "|" + std::to_string(c.lsn) + "|" + std::to_string(c.seq) + "|" +
                            std::string(c.timestamp) + "|" + std::string(c.before) + "|" +
                            std::string(c.after) + "|";
            for (const std::string &u : c.unchanged)
                e += u + ",";
            if (c.schema)
                e += c.schema_json.dump();
            out.push_back(std::move(e));
        }
        out.push_back(b.any_unchanged ? "any unchanged" : "none unchanged");
        return out;
    };
    std::string error_compared, error_full;
    std::vector<std::string> compared = read(true, &error_compared),
                             full = read(false, &error_full);
    if (error_compared != error_full)
        return "read: \"" + error_compared + "\" against \"" + error_full + "\"";
    for (size_t k = 0; k < std::max(compared.size(), full.size()); k++)
        if (k >= compared.size() || k >= full.size() || compared[k] != full[k])
            return "entry " + std::to_string(k) + ": " +
                   (k < compared.size() ? compared[k] : std::string("none")) + " against " +
                   (k < full.size() ? full[k] : std::string("none"));
    Outline a = outline_of(lines, true), b = outline_of(lines, false);
    if (a.special != b.special || a.unchanged != b.unchanged || a.first_lsn != b.first_lsn ||
        a.last_lsn != b.last_lsn)
        return "outline: special " + std::to_string(a.special) + "/" + std::to_string(b.special) +
               " unchanged " + std::to_string(a.unchanged) + "/" + std::to_string(b.unchanged) +
               " lsn " + std::to_string(a.first_lsn) + "-" + std::to_string(a.last_lsn) + "/" +
               std::to_string(b.first_lsn) + "-" + std::to_string(b.last_lsn);
    return "";
}

Order ElasticsearchSink::order_of(std::string_view lines, const std::string &key, bool resent)
{
    (void)key;
    if (resent)
        return Order::alone; /* out of the spool's order: after everything before it */
    Outline o = outline_of(lines);
    uint64_t previous = last_lsn_;
    last_lsn_ = o.last_lsn;
    /* Schema entries, TRUNCATE, resync_end (see above). */
    if (o.special)
        return Order::alone;
    /* The same transaction as the batch before (or one whose LSN was not read). */
    if (o.first_lsn == 0 || o.first_lsn == previous)
        return Order::after_previous;
    if (o.unchanged)
        return Order::after_previous;
    return Order::free;
}

} // namespace pgsink

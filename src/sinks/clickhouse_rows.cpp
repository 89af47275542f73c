/*
 * clickhouse_rows.cpp: see clickhouse_rows.h.
 */
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "changelog/entry_head.h"
#include "changelog/raw_json.h"
#include "sinks/clickhouse_rows.h"

namespace pgsink::clickhouse
{

using raw_json::skip_space;
using raw_json::string_end;

using raw_json::value_end;

size_t scan_object_at(std::string_view s, size_t i, std::vector<Member> &out)
{
    i = skip_space(s, i);
    if (i >= s.size() || s[i] != '{')
        throw std::runtime_error("not a JSON object");
    i = skip_space(s, i + 1);
    while (i < s.size() && s[i] != '}') {
        if (s[i] != '"')
            throw std::runtime_error("a JSON member has no name");
        size_t name_end = string_end(s, i);
        std::string_view name = s.substr(i, name_end - i);
        i = skip_space(s, name_end);
        if (i >= s.size() || s[i] != ':')
            throw std::runtime_error("a JSON member has no value");
        i = skip_space(s, i + 1);
        size_t end = value_end(s, i);
        out.push_back(Member{name, s.substr(i, end - i)});
        i = skip_space(s, end);
        if (i < s.size() && s[i] == ',')
            i = skip_space(s, i + 1);
        else if (i >= s.size() || s[i] != '}')
            throw std::runtime_error("a JSON object is malformed");
    }
    if (i >= s.size())
        throw std::runtime_error("a JSON object has no end");
    return i + 1;
}

void scan_object(std::string_view s, std::vector<Member> &out)
{
    out.clear();
    scan_object_at(s, 0, out);
}

std::string string_content(std::string_view raw)
{
    if (raw.size() < 2 || raw.front() != '"' || raw.back() != '"')
        throw std::runtime_error("not a JSON string");
    if (raw.find('\\') == std::string_view::npos)
        return std::string(raw.substr(1, raw.size() - 2));
    return nlohmann::json::parse(raw).get<std::string>();
}

bool name_is(std::string_view raw, const std::string &n)
{
    if (raw.size() == n.size() + 2 && same(raw.substr(1, n.size()), n))
        return raw.substr(1, n.size()).find('\\') == std::string_view::npos;
    if (raw.find('\\') == std::string_view::npos)
        return false;
    return string_content(raw) == n;
}

std::string_view member_value(Row row, const std::string &n, size_t hint)
{
    if (hint < row.n && name_is(row.m[hint].name, n))
        return row.m[hint].value;
    for (size_t k = 0; k < row.n; k++)
        if (name_is(row.m[k].name, n))
            return row.m[k].value;
    return {};
}

/* n == lit, compared with a length known at compile time (no call to memcmp). */
template <size_t N> static inline bool is(std::string_view n, const char (&lit)[N])
{
    return n.size() == N - 1 && memcmp(n.data(), lit, N - 1) == 0;
}

static std::string_view unquoted(std::string_view raw)
{
    if (raw.size() >= 2 && raw.front() == '"' && raw.back() == '"')
        return raw.substr(1, raw.size() - 2);
    return raw;
}

/*
 * Ops that change rows: insert, update, delete, import, truncate, and
 * resync_end (a TRUNCATE at resync_since, once the entry is read whole).
 * Others (resync_start, drop, ops of later versions) change no row here: op
 * empty, as for a Schema entry. A dropped table's ClickHouse table stays,
 * as an archive.
 */
static void known_op(Entry &e)
{
    if (e.op.empty() || e.op == "insert" || e.op == "update" || e.op == "delete" ||
        e.op == "import" || e.op == "truncate" || e.op == "resync_end")
        return;
    e.op = {};
}

/* The members of e.line from s[i] (where a member's name starts) on, into e. */
static Entry scan_members(Entry e, size_t i, std::vector<Member> &rows, bool head_only)
{
    const std::string_view s = e.line;
    while (i < s.size() && s[i] != '}') {
        if (s[i] != '"')
            throw std::runtime_error("a JSON member has no name");
        size_t member = i;
        size_t name_end = string_end(s, i);
        std::string_view n = s.substr(i, name_end - i);
        i = skip_space(s, name_end);
        if (i >= s.size() || s[i] != ':')
            throw std::runtime_error("a JSON member has no value");
        i = skip_space(s, i + 1);
        size_t end;
        if (head_only && (is(n, "\"before\"") || is(n, "\"after\""))) {
            /* The head only: the rows (and what follows them) are read later. */
            e.head = true;
            e.head_end = member;
            known_op(e);
            if (!e.op.empty() && !parse_lsn(e.lsn.data(), e.lsn.size(), &e.lsn_value))
                e.odd = true;
            return e;
        }
        bool row = (is(n, "\"before\"") || is(n, "\"after\"")) && i < s.size() && s[i] == '{';
        if (row) {
            /* The row's members, scanned once, with the line. */
            size_t at = rows.size();
            end = scan_object_at(s, i, rows);
            (is(n, "\"before\"") ? e.before_at : e.after_at) = at;
            (is(n, "\"before\"") ? e.before_n : e.after_n) = rows.size() - at;
        } else {
            end = value_end(s, i);
        }
        std::string_view v = s.substr(i, end - i);
        switch (n.size()) { /* the name with its quotes */
        case 4:
            if (is(n, "\"op\""))
                e.op = unquoted(v);
            break;
        case 5:
            if (is(n, "\"lsn\""))
                e.lsn = unquoted(v);
            break;
        case 6:
            if (is(n, "\"name\""))
                e.name = v;
            break;
        case 7:
            if (is(n, "\"after\""))
                e.after = v;
            break;
        case 8:
            if (is(n, "\"schema\""))
                e.schema = v;
            else if (is(n, "\"before\""))
                e.before = v;
            break;
        case 10:
            if (is(n, "\"sequence\""))
                e.sequence = v;
            break;
        case 14:
            if (is(n, "\"resync_since\""))
                e.resync_since = unquoted(v);
            break;
        case 11:
            if (is(n, "\"timestamp\""))
                e.timestamp = v;
            else if (is(n, "\"namespace\""))
                e.ns = v;
            else if (is(n, "\"unchanged\""))
                e.unchanged = v;
            break;
        default:
            break;
        }
        i = skip_space(s, end);
        if (i < s.size() && s[i] == ',')
            i = skip_space(s, i + 1);
        else if (i >= s.size() || s[i] != '}')
            throw std::runtime_error("a changelog entry is malformed");
    }
    known_op(e);
    if (!e.op.empty() && !parse_lsn(e.lsn.data(), e.lsn.size(), &e.lsn_value)) {
        if (!head_only)
            throw std::runtime_error("an entry has no valid lsn");
        e.odd = true;
    }
    /*
     * The resync rule (README, The changelog): at resync_end, a row not
     * written since resync_since is gone. Every row the table holds was
     * written since, so it is a TRUNCATE at (resync_since, 0).
     */
    if (e.op == "resync_end" && !head_only) {
        if (parse_lsn(e.resync_since.data(), e.resync_since.size(), &e.lsn_value)) {
            e.op = "truncate";
            e.sequence = "0";
        } else {
            e.op = {};
        }
    }
    return e;
}

Entry scan_entry(std::string_view s, std::vector<Member> &rows, bool head_only)
{
    Entry e;
    e.line = s;
    size_t i = skip_space(s, 0);
    if (i >= s.size() || s[i] != '{')
        throw std::runtime_error("a changelog entry is not a JSON object");
    return scan_members(e, skip_space(s, i + 1), rows, head_only);
}

Entry scan_rest(const Entry &head, std::vector<Member> &rows)
{
    if (!head.head)
        return head; /* read whole already */
    Entry e = head;
    e.head = false;
    return scan_members(e, head.head_end, rows, false);
}

void encode_float(const Column &c, std::string_view u, char *buf, size_t *len)
{
    char text[64];
    std::string big;
    const char *p;
    if (u == "Infinity")
        p = "inf";
    else if (u == "-Infinity")
        p = "-inf";
    else if (u.size() < sizeof(text)) {
        memcpy(text, u.data(), u.size());
        text[u.size()] = '\0';
        p = text;
    } else {
        big.assign(u);
        p = big.c_str();
    }
    if (c.kind == Kind::float32) {
        float f = strtof(p, nullptr);
        uint32_t bits;
        memcpy(&bits, &f, sizeof(bits));
        *len = static_cast<size_t>(std::to_chars(buf, buf + 32, bits).ptr - buf);
    } else {
        double d = strtod(p, nullptr);
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        *len = static_cast<size_t>(std::to_chars(buf, buf + 32, bits).ptr - buf);
    }
}

void append_key_text(std::string &out, std::string_view text)
{
    if (!text.empty() && text[0] == '"') {
        if (text.find('\\') == std::string_view::npos)
            out.append(text.substr(1, text.size() - 2));
        else
            out += string_content(text); /* the same text, however escaped */
    } else if (text == "true") {
        out.push_back('1'); /* a boolean as ClickHouse's UInt8 answers it */
    } else if (text == "false") {
        out.push_back('0');
    } else {
        out.append(text);
    }
    out.push_back('\x1f');
}

} // namespace pgsink::clickhouse

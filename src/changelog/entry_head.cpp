/*
 * entry_head.cpp: see entry_head.h.
 */
#include <algorithm>
#include <cctype>
#include <cstring>

#include "changelog/civil_date.h"
#include "changelog/entry_head.h"

namespace pgsink
{

bool parse_lsn(const char *s, size_t len, uint64_t *lsn)
{
    uint64_t hi = 0, lo = 0;
    size_t i = 0;
    int digits = 0;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9')
            return c - '0';
        if (c >= 'A' && c <= 'F')
            return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
            return c - 'a' + 10;
        return -1;
    };
    for (; i < len && hex(s[i]) >= 0 && digits < 8; i++, digits++)
        hi = hi * 16 + hex(s[i]);
    if (digits == 0 || i >= len || s[i] != '/')
        return false;
    i++;
    digits = 0;
    for (; i < len && hex(s[i]) >= 0 && digits < 8; i++, digits++)
        lo = lo * 16 + hex(s[i]);
    if (digits == 0 || i != len)
        return false;
    *lsn = (hi << 32) | lo;
    return true;
}

bool line_lsn(const char *line, size_t len, uint64_t *lsn)
{
    return line_lsn(std::string(line, std::min<size_t>(len, 4096)), lsn);
}

/* Skip a JSON string that starts at s[i] == '"'; the index after it, or npos if it does not end. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return std::string::npos;
}

static size_t skip_json_string(const std::string &head, size_t i)
{
    return skip_string(head.data(), head.size(), i);
}

/*
 * The lsn of a changelog line, read from its head key by key: the entry
 * starts {"timestamp":"...", then (Modifications) "sequence", "namespace",
 * "name" and "op", then "lsn". Values are skipped as JSON strings or bare
 * numbers, so nothing inside a value, whatever it holds, can be taken for
 * the lsn. false: not a line of ours.
 */
bool line_lsn(const std::string &head, uint64_t *lsn)
{
    static const char kLsn[] = "\"lsn\":\"";
    if (head.empty() || head[0] != '{')
        return false;
    size_t i = 1;
    for (int keys = 0; keys < 8; keys++) {
        if (head.compare(i, sizeof(kLsn) - 1, kLsn) == 0) {
            size_t at = i + sizeof(kLsn) - 1;
            size_t end = head.find('"', at);
            return end != std::string::npos && parse_lsn(head.data() + at, end - at, lsn);
        }
        /* "key": value, */
        if (i >= head.size() || head[i] != '"')
            return false;
        i = skip_json_string(head, i);
        if (i == std::string::npos || i >= head.size() || head[i] != ':')
            return false;
        i++;
        if (i < head.size() && head[i] == '"') {
            i = skip_json_string(head, i);
            if (i == std::string::npos)
                return false;
        } else {
            while (i < head.size() && (isalnum(static_cast<unsigned char>(head[i])) ||
                                       head[i] == '-' || head[i] == '.'))
                i++;
        }
        if (i >= head.size() || head[i] != ',')
            return false;
        i++;
    }
    return false;
}

bool schema_line_table(const char *line, size_t len, std::string *table)
{
    /* {"timestamp":"...","lsn":"...","schema":{"namespace":"<table>", */
    static const char kTs[] = "{\"timestamp\":\"";
    static const char kLsn[] = ",\"lsn\":\"";
    static const char kSchema[] = ",\"schema\":{\"namespace\":\"";
    size_t i = sizeof(kTs) - 1;
    if (len < i || memcmp(line, kTs, i) != 0)
        return false;
    i = skip_string(line, len, i - 1);
    if (i == std::string::npos || len - i < sizeof(kLsn) - 1 ||
        memcmp(line + i, kLsn, sizeof(kLsn) - 1) != 0)
        return false;
    i = skip_string(line, len, i + sizeof(kLsn) - 2);
    if (i == std::string::npos || len - i < sizeof(kSchema) - 1 ||
        memcmp(line + i, kSchema, sizeof(kSchema) - 1) != 0)
        return false;
    size_t start = i + sizeof(kSchema) - 1;
    size_t end = skip_string(line, len, start - 1);
    if (end == std::string::npos)
        return false;
    table->assign(line + start, end - 1 - start);
    return true;
}

/*
 * The ends of the "timestamp" and "lsn" values at a line's head:
 * {"timestamp":"...","lsn":"..." (Schema entries) or, for modifications,
 * "lsn" a few keys later. ts_end: after the timestamp's closing quote.
 */
static bool head_values(const char *line, size_t len, size_t *ts_end, size_t *lsn_at,
                        size_t *lsn_end)
{
    static const char kTs[] = "{\"timestamp\":\"";
    size_t k = sizeof(kTs) - 1;
    if (len < k || memcmp(line, kTs, k) != 0)
        return false;
    *ts_end = skip_string(line, len, k - 1);
    if (*ts_end == std::string::npos)
        return false;
    std::string head(line, std::min<size_t>(len, 4096));
    size_t at = head.find("\"lsn\":\"");
    if (at == std::string::npos)
        return false;
    uint64_t lsn;
    if (!line_lsn(head, &lsn)) /* the real key, not a look-alike inside a value */
        return false;
    *lsn_at = at + 6;
    *lsn_end = skip_string(line, len, *lsn_at);
    return *lsn_end != std::string::npos;
}

bool restamp_schema_line(const char *schema_line, size_t schema_len, const char *entry,
                         size_t entry_len, std::string &out)
{
    size_t s_ts, s_lsn, s_lsn_end, e_ts, e_lsn, e_lsn_end;
    std::string table;
    if (!schema_line_table(schema_line, schema_len, &table) ||
        !head_values(schema_line, schema_len, &s_ts, &s_lsn, &s_lsn_end) ||
        !head_values(entry, entry_len, &e_ts, &e_lsn, &e_lsn_end))
        return false;
    out.append(entry, e_ts);                                     /* {"timestamp":"<entry's>" */
    out.append(schema_line + s_ts, s_lsn - s_ts);                /* ,"lsn": */
    out.append(entry + e_lsn, e_lsn_end - e_lsn);                /* "<entry's lsn>" */
    out.append(schema_line + s_lsn_end, schema_len - s_lsn_end); /* ,"schema":...} */
    return true;
}

bool line_table(const char *line, size_t len, std::string *table)
{
    if (schema_line_table(line, len, table))
        return true;
    /* {"timestamp":"...","sequence":N,"namespace":"s","name":"t", */
    std::string head(line, std::min<size_t>(len, 4096));
    static const char kNs[] = ",\"namespace\":\"", kName[] = ",\"name\":\"";
    size_t ns = head.find(kNs);
    if (ns == std::string::npos)
        return false;
    size_t ns_start = ns + sizeof(kNs) - 1;
    size_t ns_end = skip_string(head.data(), head.size(), ns_start - 1);
    if (ns_end == std::string::npos || head.compare(ns_end, sizeof(kName) - 1, kName) != 0)
        return false;
    size_t name_start = ns_end + sizeof(kName) - 1;
    size_t name_end = skip_string(head.data(), head.size(), name_start - 1);
    if (name_end == std::string::npos)
        return false;
    *table = head.substr(ns_start, ns_end - 1 - ns_start) + "." +
             head.substr(name_start, name_end - 1 - name_start);
    return true;
}

bool line_timestamp(const char *line, size_t len, int64_t *ts)
{
    /* {"timestamp":"2019-10-04T16:05:55.123456+00:00" */
    static const char kTs[] = "{\"timestamp\":\"";
    const size_t k = sizeof(kTs) - 1;
    if (len < k + 33 || memcmp(line, kTs, k) != 0)
        return false;
    const char *p = line + k;
    auto num = [&](int at, int digits, int64_t *v) {
        int64_t x = 0;
        for (int j = 0; j < digits; j++) {
            char c = p[at + j];
            if (c < '0' || c > '9')
                return false;
            x = x * 10 + (c - '0');
        }
        *v = x;
        return true;
    };
    int64_t y, mo, d, h, mi, s, us;
    if (!num(0, 4, &y) || p[4] != '-' || !num(5, 2, &mo) || p[7] != '-' || !num(8, 2, &d) ||
        p[10] != 'T' || !num(11, 2, &h) || !num(14, 2, &mi) || !num(17, 2, &s) || p[19] != '.' ||
        !num(20, 6, &us) || memcmp(p + 26, "+00:00\"", 7) != 0)
        return false;
    /* PostgreSQL's epoch is 2000-01-01. */
    int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) -
                   days_from_civil(2000, 1, 1);
    *ts = ((days * 24 + h) * 60 + mi) * 60 * 1000000LL + s * 1000000LL + us;
    return true;
}

} // namespace pgsink

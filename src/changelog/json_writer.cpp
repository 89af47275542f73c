/*
 * json_writer.cpp: JSON escaping, integers, base64, ISO 8601 timestamps.
 */
#include <charconv>
#include <cstdio>

#include "changelog/json_writer.h"

namespace pgsink::json
{

namespace
{

/* For each byte: 0 = copy as is, otherwise the character after the backslash ('u' = \u00XX). */
struct EscapeTable {
    char code[256];
    constexpr EscapeTable() : code()
    {
        for (int c = 0; c < 0x20; c++)
            code[c] = 'u';
        code['\b'] = 'b';
        code['\f'] = 'f';
        code['\n'] = 'n';
        code['\r'] = 'r';
        code['\t'] = 't';
        code['"'] = '"';
        code['\\'] = '\\';
    }
};
constexpr EscapeTable kEscape;

constexpr char kHex[] = "0123456789abcdef";

inline void put2(char *p, int v)
{
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
}

} // namespace

void append_string(std::string &out, std::string_view s)
{
    /*
     * Room for the string, its quotes, a few escapes and what usually follows
     * (closing braces, newline): a huge value then grows the buffer once
     * instead of doubling it, and its copy, for the last few bytes.
     */
    out.reserve(out.size() + s.size() + s.size() / 64 + 64);
    out.push_back('"');
    const char *p = s.data();
    const char *end = p + s.size();
    const char *run = p;
    for (; p < end; p++) {
        char code = kEscape.code[static_cast<unsigned char>(*p)];
        if (code == 0)
            continue;
        out.append(run, p - run);
        if (code == 'u') {
            char u[6] = {'\\', 'u', '0', '0', kHex[(*p >> 4) & 0xf], kHex[*p & 0xf]};
            out.append(u, 6);
        } else {
            char e[2] = {'\\', code};
            out.append(e, 2);
        }
        run = p + 1;
    }
    out.append(run, end - run);
    out.push_back('"');
}

void append_int(std::string &out, int64_t v)
{
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, res.ptr - buf);
}

void append_uint(std::string &out, uint64_t v)
{
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, res.ptr - buf);
}

void append_int_as_string(std::string &out, int64_t v)
{
    char buf[26];
    buf[0] = '"';
    auto res = std::to_chars(buf + 1, buf + sizeof(buf) - 1, v);
    *res.ptr = '"';
    out.append(buf, res.ptr + 1 - buf);
}

void append_base64(std::string &out, const unsigned char *data, size_t len)
{
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t start = out.size();
    out.resize(start + 2 + (len + 2) / 3 * 4);
    char *o = &out[start];
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8) | data[i + 2];
        o[0] = kAlphabet[(v >> 18) & 63];
        o[1] = kAlphabet[(v >> 12) & 63];
        o[2] = kAlphabet[(v >> 6) & 63];
        o[3] = kAlphabet[v & 63];
        o += 4;
    }
    if (i < len) {
        uint32_t v = uint32_t(data[i]) << 16;
        if (i + 1 < len)
            v |= uint32_t(data[i + 1]) << 8;
        o[0] = kAlphabet[(v >> 18) & 63];
        o[1] = kAlphabet[(v >> 12) & 63];
        o[2] = i + 1 < len ? kAlphabet[(v >> 6) & 63] : '=';
        o[3] = '=';
        o += 4;
    }
    *o = '"';
}

bool civil_from_pg_days(int64_t days, int *year, int *month, int *day)
{
    /* Howard Hinnant's days-to-civil algorithm, from 1970-01-01. */
    int64_t z = days + kPostgresEpochDays + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    if (y < 1 || y > 9999)
        return false;
    *year = static_cast<int>(y);
    *month = static_cast<int>(m);
    *day = static_cast<int>(d);
    return true;
}

bool append_date(std::string &out, int32_t pg_days)
{
    int y, m, d;
    if (!civil_from_pg_days(pg_days, &y, &m, &d))
        return false;
    char buf[10];
    put2(buf, y / 100);
    put2(buf + 2, y % 100);
    buf[4] = '-';
    put2(buf + 5, m);
    buf[7] = '-';
    put2(buf + 8, d);
    out.append(buf, 10);
    return true;
}

void append_time_of_day(std::string &out, int64_t usec, bool full_fraction)
{
    int64_t secs = usec / 1000000;
    int frac = static_cast<int>(usec % 1000000);
    char buf[16];
    /* time allows 24:00:00 */
    put2(buf, static_cast<int>(secs / 3600));
    buf[2] = ':';
    put2(buf + 3, static_cast<int>(secs / 60 % 60));
    buf[5] = ':';
    put2(buf + 6, static_cast<int>(secs % 60));
    size_t n = 8;
    if (frac != 0 || full_fraction) {
        buf[n++] = '.';
        for (int div = 100000; div > 0; div /= 10) {
            buf[n++] = static_cast<char>('0' + frac / div % 10);
        }
        if (!full_fraction)
            while (buf[n - 1] == '0')
                n--;
    }
    out.append(buf, n);
}

bool append_timestamp(std::string &out, int64_t pg_usec, bool utc_offset, bool full_fraction)
{
    int64_t days = pg_usec / kUsecPerDay;
    int64_t rem = pg_usec % kUsecPerDay;
    if (rem < 0) {
        rem += kUsecPerDay;
        days--;
    }
    size_t mark = out.size();
    if (!append_date(out, static_cast<int32_t>(days))) {
        out.resize(mark);
        return false;
    }
    out.push_back('T');
    append_time_of_day(out, rem, full_fraction);
    if (utc_offset)
        out.append("+00:00", 6);
    return true;
}

void append_lsn(std::string &out, uint64_t lsn)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "\"%X/%X\"", static_cast<unsigned>(lsn >> 32),
                     static_cast<unsigned>(lsn));
    out.append(buf, n);
}

} // namespace pgsink::json

/*
 * json_writer.cpp: JSON escaping, integers, base64, ISO 8601 timestamps.
 */
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "changelog/civil_date.h"
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

/* "00" to "99": two digits at a time. */
struct DigitPairs {
    char text[200];
    constexpr DigitPairs() : text()
    {
        for (int i = 0; i < 100; i++) {
            text[2 * i] = static_cast<char>('0' + i / 10);
            text[2 * i + 1] = static_cast<char>('0' + i % 10);
        }
    }
};
constexpr DigitPairs kPairs;

inline char *put2(char *p, int v)
{
    memcpy(p, &kPairs.text[2 * v], 2);
    return p + 2;
}

/*
 * Does any of the 8 bytes of w need escaping (a control character, '"' or
 * '\\')? Bit tricks on the whole word (a byte below 0x20; a byte equal to
 * '"' or '\\' is zero after the xor); exact for the question asked.
 */
inline bool word_needs_escape(uint64_t w)
{
    constexpr uint64_t kOnes = 0x0101010101010101ULL;
    constexpr uint64_t kHigh = 0x8080808080808080ULL;
    uint64_t quote = w ^ (kOnes * '"');
    uint64_t backslash = w ^ (kOnes * '\\');
    uint64_t hits =
        ((w - kOnes * 0x20) & ~w) | ((quote - kOnes) & ~quote) | ((backslash - kOnes) & ~backslash);
    return (hits & kHigh) != 0;
}

/* Where the first byte of [s, end) that needs escaping is (end if none). */
inline const char *find_escape(const char *s, const char *end)
{
    for (; end - s >= 8; s += 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        if (word_needs_escape(w))
            break;
    }
    for (; s < end; s++)
        if (kEscape.code[static_cast<unsigned char>(*s)] != 0)
            break;
    return s;
}

void append_escape(Out &out, char c)
{
    char code = kEscape.code[static_cast<unsigned char>(c)];
    char *p = out.reserve(6);
    p[0] = '\\';
    p[1] = code;
    if (code != 'u') {
        out.commit(p + 2);
        return;
    }
    p[2] = '0';
    p[3] = '0';
    p[4] = kHex[(c >> 4) & 0xf];
    p[5] = kHex[c & 0xf];
    out.commit(p + 6);
}

} // namespace

void Out::flush()
{
    target_->append(buf_, pos_ - buf_);
    pos_ = buf_;
}

void Out::append_slow(const char *s, size_t n)
{
    flush();
    if (n > static_cast<size_t>(end_ - buf_) / 2) {
        target_->append(s, n);
        return;
    }
    memcpy(pos_, s, n);
    pos_ += n;
}

void Out::expect(size_t n)
{
    size_t want = target_->size() + static_cast<size_t>(pos_ - buf_) + n;
    if (want > target_->capacity())
        target_->reserve(want);
}

void append_string(Out &out, const char *s, size_t len)
{
    /*
     * A huge value: room for it, a few escapes and what usually follows, so
     * that the target grows once instead of doubling for the last bytes.
     */
    if (len > Out::kBigValue)
        out.expect(len + len / 64 + 64);
    out.put('"');
    const char *end = s + len;
    while (s < end) {
        const char *clean_end = find_escape(s, end);
        out.append(s, clean_end - s);
        if (clean_end == end)
            break;
        append_escape(out, *clean_end);
        s = clean_end + 1;
    }
    out.put('"');
}

void append_string(std::string &out, std::string_view s)
{
    char storage[2 * Out::kMaxReserve];
    Out o(storage);
    o.begin(out);
    append_string(o, s.data(), s.size());
    o.flush();
}

void append_base64(Out &out, const unsigned char *data, size_t len)
{
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /* Whole groups of 3 bytes, at most kMaxReserve characters at a time. */
    constexpr size_t kPiece = Out::kMaxReserve / 4 * 3;
    if (len > Out::kBigValue)
        out.expect((len + 2) / 3 * 4 + 64);
    out.put('"');
    size_t i = 0;
    while (i + 3 <= len) {
        size_t piece_end = i + std::min(kPiece, (len - i) / 3 * 3);
        char *o = out.reserve(Out::kMaxReserve);
        for (; i < piece_end; i += 3) {
            uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8) | data[i + 2];
            o[0] = kAlphabet[(v >> 18) & 63];
            o[1] = kAlphabet[(v >> 12) & 63];
            o[2] = kAlphabet[(v >> 6) & 63];
            o[3] = kAlphabet[v & 63];
            o += 4;
        }
        out.commit(o);
    }
    char *o = out.reserve(5);
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
    out.commit(o + 1);
}

bool civil_from_pg_days(int64_t days, int *year, int *month, int *day)
{
    int64_t y;
    unsigned m, d;
    civil_from_days(days + kPostgresEpochDays, &y, &m, &d);
    if (y < 1 || y > 9999)
        return false;
    *year = static_cast<int>(y);
    *month = static_cast<int>(m);
    *day = static_cast<int>(d);
    return true;
}

/*
 * "YYYY-MM-DD" (no quotes), or nullptr outside years 1..9999. The last day
 * formatted is kept: the dates and timestamps of a stream of changes mostly
 * fall on the same few days.
 */
static char *format_ymd(char *p, int64_t pg_days)
{
    static int64_t last_days = INT64_MIN;
    static char last_text[10];
    if (pg_days != last_days) {
        int y, m, d;
        if (!civil_from_pg_days(pg_days, &y, &m, &d))
            return nullptr;
        char *t = put2(last_text, y / 100);
        t = put2(t, y % 100);
        *t++ = '-';
        t = put2(t, m);
        *t++ = '-';
        put2(t, d);
        last_days = pg_days;
    }
    memcpy(p, last_text, sizeof(last_text));
    return p + sizeof(last_text);
}

/* "HH:MM:SS[.ffffff]" (no quotes). */
static char *format_hms(char *p, int64_t usec, bool full_fraction)
{
    int secs = static_cast<int>(usec / 1000000);
    int frac = static_cast<int>(usec % 1000000);
    p = put2(p, secs / 3600);
    *p++ = ':';
    p = put2(p, secs / 60 % 60);
    *p++ = ':';
    p = put2(p, secs % 60);
    if (frac == 0 && !full_fraction)
        return p;
    *p++ = '.';
    p = put2(p, frac / 10000);
    p = put2(p, frac / 100 % 100);
    p = put2(p, frac % 100);
    if (!full_fraction)
        while (p[-1] == '0')
            p--;
    return p;
}

char *format_date(char *p, int32_t pg_days)
{
    char *end = format_ymd(p + 1, pg_days);
    if (end == nullptr)
        return nullptr;
    *p = '"';
    *end = '"';
    return end + 1;
}

char *format_time_of_day(char *p, int64_t usec_of_day)
{
    *p = '"';
    char *end = format_hms(p + 1, usec_of_day, false);
    *end = '"';
    return end + 1;
}

static char *format_timestamp_anew(char *p, int64_t pg_usec, bool utc_offset, bool full_fraction);

/*
 * Rows written together often share a timestamp (a column defaulting to
 * now(), a transaction's commit time): the last one formatted is kept.
 * Called by decoding only, in PostgreSQL's thread (as format_ymd()).
 */
struct LastTimestamp {
    int64_t usec = INT64_MIN;
    bool utc_offset = false, full_fraction = false;
    uint8_t len = 0;
    char text[kMaxDateTimeLen];
};

char *format_timestamp(char *p, int64_t pg_usec, bool utc_offset, bool full_fraction)
{
    static LastTimestamp last;
    if (pg_usec == last.usec && utc_offset == last.utc_offset &&
        full_fraction == last.full_fraction) {
        memcpy(p, last.text, last.len);
        return p + last.len;
    }
    char *end = format_timestamp_anew(p, pg_usec, utc_offset, full_fraction);
    if (end != nullptr && end - p <= static_cast<ptrdiff_t>(sizeof(last.text))) {
        last.len = static_cast<uint8_t>(end - p);
        memcpy(last.text, p, last.len);
        last.usec = pg_usec;
        last.utc_offset = utc_offset;
        last.full_fraction = full_fraction;
    }
    return end;
}

static char *format_timestamp_anew(char *p, int64_t pg_usec, bool utc_offset, bool full_fraction)
{
    int64_t days = pg_usec / kUsecPerDay;
    int64_t rem = pg_usec % kUsecPerDay;
    if (rem < 0) {
        rem += kUsecPerDay;
        days--;
    }
    char *o = format_ymd(p + 1, days);
    if (o == nullptr)
        return nullptr;
    *p = '"';
    *o++ = 'T';
    o = format_hms(o, rem, full_fraction);
    if (utc_offset) {
        memcpy(o, "+00:00", 6);
        o += 6;
    }
    *o = '"';
    return o + 1;
}

void append_lsn(Out &out, uint64_t lsn)
{
    char *p = out.reserve(24);
    int n =
        snprintf(p, 24, "\"%X/%X\"", static_cast<unsigned>(lsn >> 32), static_cast<unsigned>(lsn));
    out.commit(p + n);
}

} // namespace pgsink::json

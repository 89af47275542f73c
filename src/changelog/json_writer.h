/*
 * json_writer.h: JSON fragments written fast, into an Out buffer.
 *
 * Pure C++ (no PostgreSQL headers): the hot path of the changelog encoder,
 * where every captured value passes. Values are formatted with raw pointer
 * writes into a small buffer of the caller's that goes to a std::string in
 * one append: perf had a quarter of the encoder's time in the many small
 * std::string appends this replaces.
 */
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace pgsink::json
{

/*
 * A write buffer in front of a std::string (the target). Bytes are written
 * into caller-provided storage and appended to the target when it is full
 * and at flush(); pieces too big for it go to the target directly, so a huge
 * value never costs more memory than the target's own copy. Trivially
 * destructible (no memory of its own): it may live anywhere an ERROR can
 * longjmp through.
 */
class Out
{
  public:
    /* The most one reserve() may ask for. */
    static constexpr size_t kMaxReserve = 128;
    /* Values bigger than this make room in the target first (expect()). */
    static constexpr size_t kBigValue = 64 * 1024;

    template <size_t N> explicit Out(char (&storage)[N]) : buf_(storage), end_(storage + N)
    {
        static_assert(N >= 2 * kMaxReserve, "Out storage too small");
        pos_ = buf_;
    }
    Out(const Out &) = delete;
    Out &operator=(const Out &) = delete;

    /* Write to target from now on (bytes not flushed yet go to the previous target first). */
    void begin(std::string &target)
    {
        if (target_ != nullptr && pos_ != buf_)
            flush(); /* what was written for the previous target goes there, never lost */
        target_ = &target;
        pos_ = buf_;
    }
    /* Everything written so far goes to the target. */
    void flush();
    /* About n more bytes are coming: the target grows once, not by doubling for the last few. */
    void expect(size_t n);

    /* Room for n <= kMaxReserve bytes: write through the pointer, then commit() the end. */
    char *reserve(size_t n)
    {
        if (static_cast<size_t>(end_ - pos_) < n)
            flush();
        return pos_;
    }
    void commit(char *end) { pos_ = end; }

    void put(char c)
    {
        char *p = reserve(1);
        *p = c;
        pos_ = p + 1;
    }
    void append(const char *s, size_t n)
    {
        if (static_cast<size_t>(end_ - pos_) >= n) {
            memcpy(pos_, s, n);
            pos_ += n;
        } else {
            append_slow(s, n);
        }
    }
    void append(std::string_view s) { append(s.data(), s.size()); }
    /* A string literal, its length known at compile time. */
    template <size_t N> void literal(const char (&s)[N])
    {
        static_assert(N - 1 <= kMaxReserve, "literal too long");
        char *p = reserve(N - 1);
        memcpy(p, s, N - 1);
        pos_ = p + N - 1;
    }

  private:
    void append_slow(const char *s, size_t n);

    char *buf_;
    char *end_;
    char *pos_;
    std::string *target_ = nullptr;
};

/* Append s as a JSON string, quotes included. s must be valid UTF-8. */
void append_string(Out &out, const char *s, size_t len);
inline void append_string(Out &out, std::string_view s)
{
    append_string(out, s.data(), s.size());
}
/* The same into a std::string (schemas, names: not the hot path). */
void append_string(std::string &out, std::string_view s);

/* Decimal digits of v at p (at most 20); returns the end. */
inline char *format_int(char *p, int64_t v)
{
    return std::to_chars(p, p + 20, v).ptr;
}
inline char *format_uint(char *p, uint64_t v)
{
    return std::to_chars(p, p + 20, v).ptr;
}

inline void append_int(Out &out, int64_t v)
{
    out.commit(format_int(out.reserve(20), v));
}
inline void append_uint(Out &out, uint64_t v)
{
    out.commit(format_uint(out.reserve(20), v));
}
/* An integer as a JSON string: "123" (lossless for readers with doubles). */
inline void append_int_as_string(Out &out, int64_t v)
{
    char *p = out.reserve(22);
    *p = '"';
    p = format_int(p + 1, v);
    *p = '"';
    out.commit(p + 1);
}

/* Standard base64 (RFC 4648) of the bytes, as a JSON string. */
void append_base64(Out &out, const unsigned char *data, size_t len);

/* PostgreSQL's epoch (2000-01-01) is this many days after 1970-01-01. */
constexpr int64_t kPostgresEpochDays = 10957;
constexpr int64_t kUsecPerDay = 86400000000LL;

/*
 * Civil date of a day count since 2000-01-01 (proleptic Gregorian).
 * Returns false when the year is outside 1..9999, which ISO 8601 basic
 * formatting does not cover: callers then use PostgreSQL's own text.
 */
bool civil_from_pg_days(int64_t days, int *year, int *month, int *day);

/* The most format_date(), format_timestamp() and format_time_of_day() write, quotes included. */
constexpr size_t kMaxDateTimeLen = 36;

/*
 * A quoted ISO 8601 date/time at p, returning its end, or nullptr when the
 * year is outside 1..9999 (nothing usable written):
 *   "YYYY-MM-DD" for a day count since 2000-01-01;
 *   "YYYY-MM-DDTHH:MM:SS[.ffffff]" for microseconds since 2000-01-01, then
 *   "+00:00" when utc_offset is set (timestamptz, always in UTC).
 * full_fraction prints all six digits of the fraction (changelog
 * timestamps); otherwise its trailing zeros are dropped.
 */
char *format_date(char *p, int32_t pg_days);
char *format_timestamp(char *p, int64_t pg_usec, bool utc_offset, bool full_fraction);
/* A quoted "HH:MM:SS[.ffffff]" (trailing zeros of the fraction dropped); time allows 24:00:00. */
char *format_time_of_day(char *p, int64_t usec_of_day);

/* An LSN in PostgreSQL's text form, X/X in upper-case hex, as a JSON string. */
void append_lsn(Out &out, uint64_t lsn);

} // namespace pgsink::json

/*
 * json_writer.h: appends JSON fragments to a std::string, fast.
 *
 * Pure C++ (no PostgreSQL headers): the hot path of the changelog encoder,
 * where every captured value passes. Nothing here allocates except the
 * output string's own growth.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgsink::json
{

/* Append s as a JSON string, quotes included. s must be valid UTF-8. */
void append_string(std::string &out, std::string_view s);

void append_int(std::string &out, int64_t v);
void append_uint(std::string &out, uint64_t v);
/* An integer as a JSON string: "123" (lossless for readers with doubles). */
void append_int_as_string(std::string &out, int64_t v);

/* Standard base64 (RFC 4648) of the bytes, as a JSON string. */
void append_base64(std::string &out, const unsigned char *data, size_t len);

/* PostgreSQL's epoch (2000-01-01) is this many days after 1970-01-01. */
constexpr int64_t kPostgresEpochDays = 10957;
constexpr int64_t kUsecPerDay = 86400000000LL;

/*
 * Civil date of a day count since 2000-01-01 (proleptic Gregorian).
 * Returns false when the year is outside 1..9999, which ISO 8601 basic
 * formatting does not cover: callers then use PostgreSQL's own text.
 */
bool civil_from_pg_days(int64_t days, int *year, int *month, int *day);

/* "YYYY-MM-DD" (no quotes). */
bool append_date(std::string &out, int32_t pg_days);
/* "HH:MM:SS[.ffffff]" with trailing zeros of the fraction dropped (no quotes). */
void append_time_of_day(std::string &out, int64_t usec_of_day, bool full_fraction);
/*
 * "YYYY-MM-DDTHH:MM:SS[.ffffff]" for microseconds since 2000-01-01, and
 * "+00:00" after it when utc_offset is set (timestamptz, always in UTC).
 * full_fraction prints all six digits (changelog timestamps).
 */
bool append_timestamp(std::string &out, int64_t pg_usec, bool utc_offset, bool full_fraction);

/* An LSN in PostgreSQL's text form, X/X in upper-case hex, as a JSON string. */
void append_lsn(std::string &out, uint64_t lsn);

} // namespace pgsink::json

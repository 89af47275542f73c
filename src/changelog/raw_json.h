/*
 * raw_json.h: finding where JSON values end in a changelog line, without
 * parsing them: what the sinks that read entries as raw text (ClickHouse,
 * Elasticsearch, BigQuery) build their scanners on; and writing a string
 * as JSON text, for the bodies they build from those pieces.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace pgsink::raw_json
{

/* The first byte at or after s[i] that is not JSON whitespace. */
inline size_t skip_space(std::string_view s, size_t i)
{
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* The end of the JSON string whose opening quote is s[i]; throws if it has none. */
inline size_t string_end(std::string_view s, size_t i)
{
    const char *b = s.data(), *p = b + i + 1, *end = b + s.size();
#ifdef __SSE2__
    /* 16 bytes at a time: where the next quote or backslash is. */
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
        int mask =
            _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
        if (mask == 0) {
            p += 16;
            continue;
        }
        p += __builtin_ctz(static_cast<unsigned>(mask));
        if (*p == '"')
            return static_cast<size_t>(p - b) + 1;
        p += 2; /* a backslash and the character it escapes */
    }
#endif
    while (p < end) {
        if (*p == '"')
            return static_cast<size_t>(p - b) + 1;
        p += *p == '\\' ? 2 : 1;
    }
    throw std::runtime_error("a JSON string has no end");
}

/*
 * The end of the JSON value starting at s[i] (after leading whitespace): a
 * string, an object or array (nesting followed), or a scalar. Throws if it
 * is missing or does not end.
 */
size_t value_end(std::string_view s, size_t i);

/*
 * s as a JSON string, quotes included, appended to out: its bytes as they
 * are but for '"', '\\' and control characters (escaped). s must be valid
 * UTF-8 (the changelog's text is).
 */
void append_string(std::string &out, std::string_view s);

} // namespace pgsink::raw_json

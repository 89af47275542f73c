/*
 * ack_receiver.c: a webhook receiver for benchmarks that only acknowledges,
 * written so that it costs the machine as little as possible (the delivery
 * rate of the sink is measured, not the receiver's): one thread, epoll,
 * HTTP/1.1 keep-alive, every POST answered 200 once its body is read.
 *
 *   ack_receiver PORT COUNT_FILE
 *
 * It counts the entries received (the "lsn" keys: one per entry) and
 * writes the running total to COUNT_FILE after every request.
 *
 * Every byte of every request is read and looked at: the head is parsed
 * (Content-Length), the body is scanned for the entries as it arrives,
 * while it is in the cache, and then dropped (a body of megabytes is never
 * held whole, nor scanned again from memory once complete).
 */
#include "bench_server.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static const char kAnswer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
static const char kKey[] = "\"lsn\":";
#define KEY_LEN (sizeof(kKey) - 1)

#if defined(__x86_64__)
/* count_keys() 32 places at a time; returns where it stopped. */
__attribute__((target("avx2"))) static const char *count_keys_avx2(const char *p, const char *end,
                                                                   const char *limit, long long *n)
{
    const __m256i quote = _mm256_set1_epi8('"'), ell = _mm256_set1_epi8('l');
    while (p + 33 <= limit && p + 32 <= end) {
        __m256i a = _mm256_loadu_si256((const __m256i *)p);
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + 1));
        unsigned m = (unsigned)_mm256_movemask_epi8(
            _mm256_and_si256(_mm256_cmpeq_epi8(a, quote), _mm256_cmpeq_epi8(b, ell)));
        while (m != 0) {
            const char *at = p + __builtin_ctz(m);
            m &= m - 1;
            if (at + KEY_LEN <= limit && memcmp(at + 2, kKey + 2, KEY_LEN - 2) == 0)
                (*n)++;
        }
        p += 32;
    }
    return p;
}
#endif

/* Occurrences of kKey starting in [p, end) (each must end by limit). */
static long long count_keys(const char *p, const char *end, const char *limit)
{
    long long n = 0;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2"))
        p = count_keys_avx2(p, end, limit, &n);
#endif
#ifdef __SSE2__
    /* Candidates: a '"' followed by 'l', 16 places at a time. */
    const __m128i quote = _mm_set1_epi8('"'), ell = _mm_set1_epi8('l');
    while (p + 17 <= limit && p + 16 <= end) {
        __m128i a = _mm_loadu_si128((const __m128i *)p);
        __m128i b = _mm_loadu_si128((const __m128i *)(p + 1));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(a, quote), _mm_cmpeq_epi8(b, ell)));
        while (m != 0) {
            const char *at = p + __builtin_ctz(m);
            m &= m - 1;
            if (at + KEY_LEN <= limit && memcmp(at + 2, kKey + 2, KEY_LEN - 2) == 0)
                n++;
        }
        p += 16;
    }
#endif
    for (; p < end && p + KEY_LEN <= limit; p++)
        if (*p == '"' && memcmp(p, kKey, KEY_LEN) == 0)
            n++;
    return n;
}

/* Serve what c's buffer holds; 0 if the connection goes on. */
static int serve(struct conn *c)
{
    size_t at = 0;
    size_t *left = &c->body_left; /* of the body being received */
    for (;;) {
        if (*left > 0) {
            /* Body bytes: counted, then dropped (the last few kept while a key may straddle). */
            size_t avail = c->len - at, take = avail < *left ? avail : *left;
            size_t scan = take;
            if (take < *left)
                scan = take > KEY_LEN - 1 ? take - (KEY_LEN - 1) : 0;
            total += count_keys(c->buf + at, c->buf + at + scan, c->buf + at + take);
            at += scan;
            *left -= scan;
            if (*left > 0)
                break;
            if (write(c->fd, kAnswer, sizeof(kAnswer) - 1) < 0)
                return -1;
            save_count();
            continue;
        }
        char *head_end = memmem(c->buf + at, c->len - at, "\r\n\r\n", 4);
        if (head_end == NULL)
            break;
        size_t head_len = (size_t)(head_end - (c->buf + at)) + 4;
        size_t body_len = 0;
        for (char *p = c->buf + at; p < head_end; p++)
            if ((p == c->buf + at || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0)
                body_len = strtoul(p + 15, NULL, 10);
        at += head_len;
        *left = body_len;
        if (body_len == 0) {
            if (write(c->fd, kAnswer, sizeof(kAnswer) - 1) < 0)
                return -1;
            save_count();
        }
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
    return 0;
}

int main(int argc, char **argv)
{
    return bench_server_main("ack_receiver", argc, argv, serve);
}

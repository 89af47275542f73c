/*
 * es_bulk_receiver.c: a lean stand-in for Elasticsearch in benchmarks (the
 * Python fake of the TAP tests cannot take a million rows a second). It
 * answers what the elasticsearch sink sends, so the sink's own rate is
 * measured: one thread, epoll, HTTP/1.1 keep-alive.
 *
 *   es_bulk_receiver PORT COUNT_FILE
 *
 *   POST /[<index>/]_bulk  a valid answer: {"took","errors":false,"items":[...]}
 *                          with one item per action, in order, each with its
 *                          _index and _id, "result":"created", "status":201;
 *                          with ?filter_path (the sink's): {"errors":false,
 *                          "items":[{"index":{"status":201}},...]}, as
 *                          Elasticsearch filters it
 *   PUT /<index>           {"acknowledged":true}
 *   GET /<index>/_mapping  {"<index>":{"mappings":{}}} (no fields yet: the
 *                          sink adds them)
 *   PUT /<index>/_mapping  {"acknowledged":true}
 *   POST /<index>/_mget    {"docs":[]}
 *   anything else          {}
 * It stores nothing and checks no versions: the strict fake does that.
 * COUNT_FILE gets the running total of documents received.
 */
#include "bench_server.h"

struct out {
    char *p;
    size_t len, cap;
};

static struct out body, head;

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->p = realloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* The JSON string value after key in [p, end) (with its quotes), copied to o; or "". */
static void copy_string(struct out *o, const char *p, const char *end, const char *key)
{
    const char *k = memmem(p, (size_t)(end - p), key, strlen(key));
    if (k == NULL) {
        puts_(o, "\"\"");
        return;
    }
    const char *s = k + strlen(key), *e = s + 1;
    while (e < end && *e != '"')
        e += *e == '\\' ? 2 : 1;
    put(o, s, (size_t)(e + 1 - s));
}

/*
 * The answer to a _bulk body: one item per action line; with compact (the
 * request's filter_path=errors,items.*.status,items.*.error) only each
 * item's status, as Elasticsearch filters it.
 */
static void bulk_answer(const char *b, size_t n, int compact)
{
    const char *p = b, *end = b + n;
    int first = 1;
    puts_(&body,
          compact ? "{\"errors\":false,\"items\":[" : "{\"took\":1,\"errors\":false,\"items\":[");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            nl = end;
        const char *kind = p + 2; /* {"index": */
        const char *kind_end = memchr(kind, '"', (size_t)(nl - kind));
        if (kind_end == NULL)
            break;
        if (!first)
            puts_(&body, ",");
        first = 0;
        puts_(&body, "{\"");
        put(&body, kind, (size_t)(kind_end - kind));
        if (compact) {
            puts_(&body, "\":{\"status\":201}}");
            goto next;
        }
        puts_(&body, "\":{\"_index\":");
        copy_string(&body, p, nl, "\"_index\":");
        puts_(&body, ",\"_id\":");
        copy_string(&body, p, nl, "\"_id\":");
        puts_(&body, ",\"_version\":1,\"result\":\"created\",\"_shards\":{\"total\":1,"
                     "\"successful\":1,\"failed\":0},\"_seq_no\":0,\"_primary_term\":1,"
                     "\"status\":201}}");
    next:
        total++;
        p = nl + 1;
        if (strncmp(kind, "delete", 6) != 0) { /* its source line */
            nl = memchr(p, '\n', (size_t)(end - p));
            p = nl == NULL ? end : nl + 1;
        }
    }
    puts_(&body, "]}");
}

/* Serve every complete request in c's buffer; 0 if the connection goes on. */
static int serve(struct conn *c)
{
    size_t at = 0;
    for (;;) {
        char *start = c->buf + at;
        char *head_end = memmem(start, c->len - at, "\r\n\r\n", 4);
        if (head_end == NULL)
            break;
        size_t head_len = (size_t)(head_end - start) + 4;
        size_t body_len = 0;
        for (char *p = start; p < head_end; p++)
            if ((p == start || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0)
                body_len = strtoul(p + 15, NULL, 10);
        if (c->len - at < head_len + body_len)
            break;
        const char *req = start + head_len;
        char *sp = memchr(start, ' ', (size_t)(head_end - start));
        char *sp2 = sp ? memchr(sp + 1, ' ', (size_t)(head_end - sp - 1)) : NULL;
        body.len = 0;
        if (sp == NULL || sp2 == NULL) {
            puts_(&body, "{}");
        } else if (memmem(sp, (size_t)(sp2 - sp), "/_bulk", 6) != NULL) {
            bulk_answer(req, body_len, memmem(sp, (size_t)(sp2 - sp), "filter_path", 11) != NULL);
        } else if (memmem(sp, (size_t)(sp2 - sp), "/_mapping", 9) != NULL &&
                   strncmp(start, "GET", 3) == 0) {
            char *slash = sp + 2, *next = memchr(slash, '/', (size_t)(sp2 - slash));
            puts_(&body, "{\"");
            put(&body, slash, next ? (size_t)(next - slash) : 0);
            puts_(&body, "\":{\"mappings\":{}}}");
        } else if (memmem(sp, (size_t)(sp2 - sp), "/_mget", 6) != NULL) {
            puts_(&body, "{\"docs\":[]}");
        } else if (strncmp(start, "PUT", 3) == 0) {
            puts_(&body, "{\"acknowledged\":true}");
        } else {
            puts_(&body, "{}");
        }
        char h[256];
        int hn = snprintf(h, sizeof(h),
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          body.len);
        head.len = 0;
        put(&head, h, (size_t)hn);
        put(&head, body.p, body.len);
        for (size_t off = 0; off < head.len;) {
            ssize_t w = write(c->fd, head.p + off, head.len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
            off += (size_t)w;
        }
        at += head_len + body_len;
        save_count();
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
    return 0;
}

int main(int argc, char **argv)
{
    return bench_server_main("es_bulk_receiver", argc, argv, serve);
}

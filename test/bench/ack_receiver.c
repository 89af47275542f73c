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
 */
#include "bench_server.h"

static const char kAnswer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/* Serve every complete request in c's buffer; 0 if the connection goes on. */
static int serve(struct conn *c)
{
    size_t at = 0;
    for (;;) {
        char *head_end = memmem(c->buf + at, c->len - at, "\r\n\r\n", 4);
        if (head_end == NULL)
            break;
        size_t head_len = (size_t)(head_end - (c->buf + at)) + 4;
        size_t body_len = 0;
        for (char *p = c->buf + at; p < head_end; p++)
            if ((p == c->buf + at || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0)
                body_len = strtoul(p + 15, NULL, 10);
        if (c->len - at < head_len + body_len)
            break;
        const char *body = c->buf + at + head_len, *end = body + body_len;
        for (const char *p = body; (p = memmem(p, (size_t)(end - p), "\"lsn\":", 6)) != NULL; p += 6)
            total++;
        at += head_len + body_len;
        if (write(c->fd, kAnswer, sizeof(kAnswer) - 1) < 0)
            return -1;
        save_count();
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
    return 0;
}

int main(int argc, char **argv)
{
    return bench_server_main("ack_receiver", argc, argv, serve);
}

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
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    char *buf;
    size_t len, cap;
};

static const char kAnswer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
static long long total;
static const char *count_path;

static void save_count(void)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", count_path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fprintf(f, "%lld", total);
    fclose(f);
    rename(tmp, count_path);
}

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
    if (argc != 3) {
        fprintf(stderr, "usage: ack_receiver PORT COUNT_FILE\n");
        return 2;
    }
    count_path = argv[2];
    save_count();
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 64) < 0) {
        perror("ack_receiver: bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        struct epoll_event events[64];
        int n = epoll_wait(ep, events, 64, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0)
                    continue;
                c = calloc(1, sizeof(*c));
                c->fd = fd;
                c->cap = 1 << 20;
                c->buf = malloc(c->cap);
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                continue;
            }
            if (c->cap - c->len < (1 << 16)) {
                c->cap *= 2;
                c->buf = realloc(c->buf, c->cap);
            }
            ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len);
            if (got > 0) {
                c->len += (size_t)got;
                if (serve(c) == 0)
                    continue;
            } else if (got < 0 && errno == EINTR) {
                continue;
            }
            close(c->fd);
            free(c->buf);
            free(c);
        }
    }
}

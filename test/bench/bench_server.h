/*
 * bench_server.h: what the benchmarks' lean receivers (ack_receiver.c,
 * es_bulk_receiver.c) share: one thread, epoll, HTTP/1.1 keep-alive, a
 * connection's bytes in a growing buffer, and the running total of entries
 * received written to COUNT_FILE (the scripts read it). A receiver defines
 * how it serves the complete requests in a connection's buffer, and its
 * main() calls bench_server_main().
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
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
    size_t body_left; /* the receiver's own: zero on a new connection */
};

static long long total; /* entries received */
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

/*
 * name PORT COUNT_FILE: listen on 127.0.0.1:PORT and give each connection's
 * new bytes to serve(), which answers its complete requests, keeps the rest
 * and returns 0 while the connection goes on.
 */
static int bench_server_main(const char *name, int argc, char **argv, int (*serve)(struct conn *))
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT COUNT_FILE\n", name);
        return 2;
    }
    count_path = argv[2];
    save_count();
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 64) < 0) {
        fprintf(stderr, "%s: bind/listen: %s\n", name, strerror(errno));
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

/*
 * metrics_server.cpp: the "pgsink metrics" background worker, which serves
 * pgsink.metrics() over HTTP at pgsink.metrics_listen (host:port), for
 * Prometheus to scrape directly (GET /metrics).
 *
 * A static worker, registered at start when pgsink.metrics_listen is set
 * (changing it needs a restart, as listen_addresses does), connected to
 * pgsink.database. One connection at a time: a scrape runs SELECT
 * pgsink.metrics() in its own short transaction, which ends before a byte
 * is sent (no transaction is held across network I/O), then answers and
 * closes. Slow or silent clients are cut off after kClientTimeoutS. The
 * endpoint has no authentication: bind it to a loopback or private address.
 */
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/config.h"
#include "worker/workers.h"

extern "C" {
#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
}

namespace pgsink
{

/* A client gets this long to send its request and take the answer. */
static constexpr int kClientTimeoutS = 5;
/* Requests longer than this are refused. */
static constexpr size_t kMaxRequest = 8192;

void register_metrics_server()
{
    if (guc_metrics_listen == nullptr || guc_metrics_listen[0] == '\0')
        return;
    BackgroundWorker bgw;
    memset(&bgw, 0, sizeof(bgw));
    bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
    bgw.bgw_restart_time = 10;
    strlcpy(bgw.bgw_library_name, "pgsink", BGW_MAXLEN);
    strlcpy(bgw.bgw_function_name, "pgsink_metrics_main", BGW_MAXLEN);
    strlcpy(bgw.bgw_name, "pgsink metrics", BGW_MAXLEN);
    strlcpy(bgw.bgw_type, "pgsink metrics", BGW_MAXLEN);
    RegisterBackgroundWorker(&bgw);
}

/* Listen at pgsink.metrics_listen; ERROR (the worker restarts later) if it cannot. */
static int listen_socket()
{
    char host[256], port[16];
    if (!split_host_port(guc_metrics_listen, host, sizeof(host), port, sizeof(port)))
        ereport(ERROR,
                (errmsg("pgsink: invalid pgsink.metrics_listen \"%s\"", guc_metrics_listen)));
    struct addrinfo hints, *res = nullptr;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        ereport(ERROR, (errmsg("pgsink: cannot resolve pgsink.metrics_listen \"%s\": %s",
                               guc_metrics_listen, gai_strerror(rc))));
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 16) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        ereport(ERROR, (errmsg("pgsink: cannot listen at pgsink.metrics_listen \"%s\": %s",
                               guc_metrics_listen, strerror(err)),
                        errhint("Free the port or choose another one; the metrics worker "
                                "tries again in 10 seconds.")));
    return fd;
}

/*
 * SELECT pgsink.metrics() in a transaction of its own, ended before it
 * returns. Returns the text (palloc'd in TopMemoryContext) and sets *status
 * to 200, or an error message and 503.
 */
static char *collect_metrics(int *status)
{
    MemoryContext outer = CurrentMemoryContext;
    char *volatile result = nullptr;
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PG_TRY();
    {
        if (SPI_connect() != SPI_OK_CONNECT)
            elog(ERROR, "SPI_connect failed");
        PushActiveSnapshot(GetTransactionSnapshot());
        pgstat_report_activity(STATE_RUNNING, "SELECT pgsink.metrics()");
        if (SPI_execute("SELECT pgsink.metrics()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
            elog(ERROR, "SELECT pgsink.metrics() returned no row");
        bool isnull = false;
        Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        result = MemoryContextStrdup(TopMemoryContext, isnull ? "" : TextDatumGetCString(d));
        SPI_finish();
        PopActiveSnapshot();
        CommitTransactionCommand();
        *status = 200;
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(outer);
        ErrorData *e = CopyErrorData();
        FlushErrorState();
        AbortCurrentTransaction();
        result = MemoryContextStrdup(TopMemoryContext,
                                     psprintf("pgsink metrics are unavailable: %s\n", e->message));
        FreeErrorData(e);
        *status = 503;
    }
    PG_END_TRY();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextSwitchTo(outer);
    return result;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the client went away or timed out: nothing to do */
        data += n;
        len -= static_cast<size_t>(n);
    }
}

static void answer(int fd, int status, const char *content_type, const char *body, bool head)
{
    const char *reason = status == 200   ? "OK"
                         : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                         : status == 400 ? "Bad Request"
                                         : "Service Unavailable";
    size_t len = strlen(body);
    char *header =
        psprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n%s\r\n",
                 status, reason, content_type, len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
    send_all(fd, header, strlen(header));
    if (!head)
        send_all(fd, body, len);
    pfree(header);
}

/* Read one request and answer it. */
static void serve(int fd)
{
    struct timeval tv = {kClientTimeoutS, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);

    char req[kMaxRequest + 1];
    size_t got = 0;
    while (got < kMaxRequest) {
        ssize_t n = recv(fd, req + got, kMaxRequest - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        got += static_cast<size_t>(n);
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") != nullptr || strstr(req, "\n\n") != nullptr)
            break;
    }
    req[got] = '\0';
    const char *text = "text/plain; charset=utf-8";
    if (strstr(req, "\r\n\r\n") == nullptr && strstr(req, "\n\n") == nullptr) {
        answer(fd, 400, text, "request too long or incomplete\n", false);
        return;
    }
    bool head = strncmp(req, "HEAD ", 5) == 0;
    if (strncmp(req, "GET ", 4) != 0 && !head) {
        answer(fd, 405, text, "only GET and HEAD\n", false);
        return;
    }
    const char *path = req + (head ? 5 : 4);
    size_t plen = strcspn(path, " ?\r\n");
    if (!(plen == 8 && strncmp(path, "/metrics", 8) == 0)) {
        answer(fd, 404, text, "pgsink serves its metrics at /metrics\n", head);
        return;
    }
    int status = 503;
    char *body = collect_metrics(&status);
    answer(fd, status, status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : text, body,
           head);
    pfree(body);
}

} // namespace pgsink

using namespace pgsink;

void pgsink_metrics_main(Datum)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    log_shutdown_as_routine("metrics worker");
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(guc_database, nullptr, 0);

    int listen_fd = listen_socket();
    ereport(LOG, (errmsg("pgsink: serving metrics at http://%s/metrics", guc_metrics_listen)));
    WaitEventSet *set = CreateWaitEventSet(TopMemoryContext, 3);
    AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
    AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
    AddWaitEventToSet(set, WL_SOCKET_READABLE, listen_fd, nullptr, nullptr);
    for (;;) {
        WaitEvent event;
        int n = WaitEventSetWait(set, -1, &event, 1, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        if (n == 1 && (event.events & WL_SOCKET_READABLE)) {
            int client = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (client >= 0) {
                serve(client);
                close(client);
            }
        }
    }
}

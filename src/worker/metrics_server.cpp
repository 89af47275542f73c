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
#include <algorithm>
#include <arpa/inet.h>
#include <poll.h>
#include <ctime>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/restricted.h"
#include "http/http_pipeline.h"
#include "worker/workers.h"

extern "C" {
#include "access/xact.h"
#include "access/genam.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/pg_extension.h"
#include "utils/fmgroids.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "commands/extension.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/syscache.h"
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

/* A client gets this long to send its request, and this long to take the answer. */
static constexpr int kRequestTimeoutS = 2;
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

/* The schema of extension ext (PostgreSQL 15 keeps its own lookup static). */
static Oid extension_schema(Oid ext)
{
    Relation rel = table_open(ExtensionRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(ext));
    SysScanDesc scan = systable_beginscan(rel, ExtensionOidIndexId, true, nullptr, 1, &key);
    HeapTuple tup = systable_getnext(scan);
    Oid nsp =
        HeapTupleIsValid(tup) ? ((Form_pg_extension)GETSTRUCT(tup))->extnamespace : InvalidOid;
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return nsp;
}

/*
 * The OID of pgsink.metrics() as the extension installed it, or InvalidOid
 * (*why says why). Never found by name alone: the metrics worker runs as a
 * superuser, and a role with CREATE on the database could make a schema
 * "pgsink" and a function "metrics" in it before the extension exists (or
 * after it is dropped). So: the extension must exist, its schema must be
 * owned by a superuser, and the function must belong to the extension.
 */
static Oid metrics_function(const char **why)
{
    Oid ext = get_extension_oid("pgsink", true);
    if (!OidIsValid(ext)) {
        *why = "extension pgsink is not installed in pgsink.database";
        return InvalidOid;
    }
    Oid nsp = extension_schema(ext);
    HeapTuple tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
    if (!HeapTupleIsValid(tup)) {
        *why = "the schema of extension pgsink is missing";
        return InvalidOid;
    }
    Oid owner = ((Form_pg_namespace)GETSTRUCT(tup))->nspowner;
    char *nspname = pstrdup(NameStr(((Form_pg_namespace)GETSTRUCT(tup))->nspname));
    ReleaseSysCache(tup);
    if (!superuser_arg(owner)) {
        *why = "the schema of extension pgsink is not owned by a superuser";
        return InvalidOid;
    }
    Oid fn = LookupFuncName(list_make2(makeString(nspname), makeString(pstrdup("metrics"))), 0,
                            nullptr, true);
    if (!OidIsValid(fn) || getExtensionOfObject(ProcedureRelationId, fn) != ext) {
        *why = "pgsink.metrics() is missing: run ALTER EXTENSION pgsink UPDATE";
        return InvalidOid;
    }
    return fn;
}

/*
 * pgsink.metrics() in a transaction of its own, ended before it returns.
 * Returns the text in UTF-8 (palloc'd in TopMemoryContext) and sets *status
 * to 200, or a short reason and 503 (the details go to the server log, not
 * to an unauthenticated client).
 */
static char *collect_metrics(int *status)
{
    MemoryContext outer = CurrentMemoryContext;
    char *volatile result = nullptr;
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PG_TRY();
    {
        PushActiveSnapshot(GetTransactionSnapshot());
        pgstat_report_activity(STATE_RUNNING, "SELECT pgsink.metrics()");
        const char *why = nullptr;
        Oid fn = metrics_function(&why);
        if (OidIsValid(fn)) {
            Datum d = OidFunctionCall0(fn);
            text *t = DatumGetTextPP(d);
            /* Prometheus reads UTF-8, whatever the database's encoding (table names). */
            char *utf8 = pg_server_to_any(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), PG_UTF8);
            result = MemoryContextStrdup(TopMemoryContext, utf8);
            *status = 200;
        } else {
            result = MemoryContextStrdup(TopMemoryContext,
                                         psprintf("pgsink metrics are unavailable: %s\n", why));
            *status = 503;
        }
        PopActiveSnapshot();
        CommitTransactionCommand();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(outer);
        ErrorData *e = CopyErrorData();
        FlushErrorState();
        AbortCurrentTransaction();
        ereport(LOG, (errmsg("pgsink: a metrics scrape failed: %s", e->message)));
        FreeErrorData(e);
        result = MemoryContextStrdup(TopMemoryContext,
                                     "pgsink metrics are unavailable: see the server log\n");
        *status = 503;
    }
    PG_END_TRY();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextSwitchTo(outer);
    return result;
}

/*
 * Wait until fd is ready for events (POLLIN or POLLOUT) or the deadline
 * (ms since the epoch of monotonic_ms()) passes; interrupts (SIGTERM) are
 * served meanwhile. False: the deadline passed or the client went away.
 */
static bool wait_client(int fd, short events, int64 deadline)
{
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        int64 left = deadline - monotonic_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, static_cast<int>(std::min<int64>(left, 100)));
        if (n > 0)
            return (p.revents & events) != 0;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

static void send_all(int fd, const char *data, size_t len, int64 deadline)
{
    while (len > 0) {
        if (!wait_client(fd, POLLOUT, deadline))
            return; /* too slow, or gone: nothing more to do */
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return;
        data += n;
        len -= static_cast<size_t>(n);
    }
}

static void answer(int fd, int status, const char *content_type, const char *body, bool head,
                   int64 deadline)
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
    send_all(fd, header, strlen(header), deadline);
    if (!head)
        send_all(fd, body, len, deadline);
    pfree(header);
}

/*
 * Read one request and answer it, within kRequestTimeoutS for the request
 * and kClientTimeoutS for the answer, whatever the client does (a client
 * trickling bytes cannot hold the worker longer).
 */
static void serve(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int64 deadline = monotonic_ms() + kRequestTimeoutS * 1000;

    char req[kMaxRequest + 1];
    size_t got = 0;
    bool complete = false;
    while (got < kMaxRequest && !complete) {
        if (!wait_client(fd, POLLIN, deadline))
            return;
        ssize_t n = recv(fd, req + got, kMaxRequest - got, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return;
        got += static_cast<size_t>(n);
        req[got] = '\0';
        complete = strstr(req, "\r\n\r\n") != nullptr || strstr(req, "\n\n") != nullptr;
    }
    req[got] = '\0';
    deadline = monotonic_ms() + kClientTimeoutS * 1000;
    const char *text = "text/plain; charset=utf-8";
    if (!complete) {
        answer(fd, 400, text, "request too long\n", false, deadline);
        return;
    }
    bool head = strncmp(req, "HEAD ", 5) == 0;
    if (strncmp(req, "GET ", 4) != 0 && !head) {
        answer(fd, 405, text, "only GET and HEAD\n", false, deadline);
        return;
    }
    const char *path = req + (head ? 5 : 4);
    size_t plen = strcspn(path, " ?\r\n");
    if (!(plen == 8 && strncmp(path, "/metrics", 8) == 0)) {
        answer(fd, 404, text, "pgsink serves its metrics at /metrics\n", head, deadline);
        return;
    }
    int status = 503;
    char *body = collect_metrics(&status);
    answer(fd, status, status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : text, body,
           head, deadline);
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
    pin_session_search_path(); /* as every pgsink worker */

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

/*
 * launcher.cpp: the static background worker that starts the stream worker
 * and, through supervise_deliveries(), one delivery worker per sink.
 */
#include <algorithm>
#include <csignal>
#include <cstring>

#include "core/config.h"
#include "core/shared_state.h"
#include "worker/workers.h"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

/* A worker that ran this long without failing is healthy: its back-off resets. */
static constexpr long kHealthyRunMs = 60000;
static constexpr long kFirstBackoffMs = 1000;
/* How often to look for pgsink.database while it does not exist. */
static constexpr long kDatabasePollMs = 2000;

void register_launcher()
{
    BackgroundWorker bgw;
    memset(&bgw, 0, sizeof(bgw));
    bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
    bgw.bgw_restart_time = 5;
    strlcpy(bgw.bgw_library_name, "pgsink", BGW_MAXLEN);
    strlcpy(bgw.bgw_function_name, "pgsink_launcher_main", BGW_MAXLEN);
    strlcpy(bgw.bgw_name, "pgsink launcher", BGW_MAXLEN);
    strlcpy(bgw.bgw_type, "pgsink launcher", BGW_MAXLEN);
    RegisterBackgroundWorker(&bgw);
}

static void launcher_detach(int code, Datum arg)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->launcher_pid = 0;
    shared->launcher_procno = -1;
    LWLockRelease(shared_lock);
}

/*
 * The OID of pgsink.database, or InvalidOid while it does not exist. Without
 * a database of its own the launcher can only heap-scan shared catalogs (no
 * relcache for their indexes), as the autovacuum launcher does.
 */
static Oid lookup_database()
{
    Oid dboid = InvalidOid;
    SetCurrentStatementStartTimestamp(); /* else now() stays at the worker's start */
    StartTransactionCommand();
    Relation rel = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
    HeapTuple tup;
    while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection))) {
        Form_pg_database db = (Form_pg_database)GETSTRUCT(tup);
        if (strcmp(NameStr(db->datname), guc_database) == 0) {
            dboid = db->oid;
            break;
        }
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
    CommitTransactionCommand();
    return dboid;
}

void init_dynamic_worker(BackgroundWorker &bgw, const char *function, const char *name,
                         const char *type)
{
    memset(&bgw, 0, sizeof(bgw));
    bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
    bgw.bgw_restart_time = BGW_NEVER_RESTART; /* the launcher restarts it, with back-off */
    strlcpy(bgw.bgw_library_name, "pgsink", BGW_MAXLEN);
    strlcpy(bgw.bgw_function_name, function, BGW_MAXLEN);
    strlcpy(bgw.bgw_name, name, BGW_MAXLEN);
    strlcpy(bgw.bgw_type, type, BGW_MAXLEN);
    bgw.bgw_notify_pid = MyProcPid;
}

static BackgroundWorkerHandle *start_stream_worker(Oid dboid)
{
    BackgroundWorker bgw;
    init_dynamic_worker(bgw, "pgsink_stream_main", "pgsink stream", "pgsink stream");
    bgw.bgw_main_arg = ObjectIdGetDatum(dboid);

    BackgroundWorkerHandle *handle = nullptr;
    if (!RegisterDynamicBackgroundWorker(&bgw, &handle)) {
        ereport(WARNING,
                (errmsg("pgsink: could not start the stream worker: no background worker slot "
                        "free"),
                 errhint("Raise max_worker_processes.")));
        return nullptr;
    }
    return handle;
}

} // namespace pgsink

using namespace pgsink;

void pgsink_launcher_main(Datum main_arg)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    log_shutdown_as_routine("launcher");
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);

    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->launcher_pid = MyProcPid;
    shared->launcher_procno = MyProc->pgprocno;
    LWLockRelease(shared_lock);
    before_shmem_exit(launcher_detach, 0);

    BackgroundWorkerHandle *worker = nullptr;
    /*
     * A stream worker started by an earlier launcher (this one restarted
     * after an error): it is ours to wait for, not to start again. Without
     * a handle to it, its pid in shared memory says when it is gone.
     */
    pid_t adopted = 0;
    char worker_database[NAMEDATALEN] = "";
    LWLockAcquire(shared_lock, LW_SHARED);
    if (shared->worker_pid != 0 && kill(shared->worker_pid, 0) == 0) {
        adopted = shared->worker_pid;
        strlcpy(worker_database, shared->database, NAMEDATALEN);
    }
    LWLockRelease(shared_lock);
    if (adopted != 0)
        ereport(LOG, (errmsg("pgsink: launcher restarted; stream worker %d is still running",
                             static_cast<int>(adopted))));
    TimestampTz worker_started = 0;
    TimestampTz next_start = 0;
    long backoff_ms = kFirstBackoffMs;
    bool reported_missing_database = false;
    Oid database = InvalidOid; /* pgsink.database's OID, once found */

    for (;;) {
        CHECK_FOR_INTERRUPTS();
        long timeout_ms = kDatabasePollMs;

        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            /* A new pgsink.database: stop the worker; it restarts in the new one. */
            if (strcmp(worker_database, guc_database) != 0)
                database = InvalidOid; /* delivery workers stop too, and restart there */
            if ((worker != nullptr || adopted != 0) && strcmp(worker_database, guc_database) != 0) {
                ereport(LOG, (errmsg("pgsink: pgsink.database changed from \"%s\" to \"%s\"; "
                                     "restarting the stream worker",
                                     worker_database, guc_database)));
                if (worker != nullptr)
                    TerminateBackgroundWorker(worker);
                else
                    (void)kill(adopted, SIGTERM);
                next_start = 0;
                backoff_ms = kFirstBackoffMs;
            }
        }

        if (!OidIsValid(database)) {
            database = lookup_database();
            if (OidIsValid(database) && strcmp(worker_database, guc_database) != 0 &&
                (worker != nullptr || adopted != 0))
                database = InvalidOid; /* the old database's stream worker is still stopping */
        }
        long deliveries_ms = supervise_deliveries(database);

        if (adopted != 0) {
            LWLockAcquire(shared_lock, LW_SHARED);
            bool running = shared->worker_pid == adopted;
            LWLockRelease(shared_lock);
            if (running && kill(adopted, 0) == 0) {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                std::min<long>(deliveries_ms, kDatabasePollMs / 4),
                                PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
                continue;
            }
            adopted = 0; /* gone: start a worker of our own */
        }

        if (worker != nullptr) {
            pid_t pid;
            if (GetBackgroundWorkerPid(worker, &pid) == BGWH_STOPPED) {
                pfree(worker);
                worker = nullptr;
                TimestampTz now = GetCurrentTimestamp();
                LWLockAcquire(shared_lock, LW_EXCLUSIVE);
                bool streamed = shared->worker_streamed;
                bool restart_now = shared->restart_now;
                shared->restart_now = false;
                pid_t other = shared->worker_pid;
                LWLockRelease(shared_lock);
                if (other != 0 && kill(other, 0) == 0) {
                    /* Ours found an older worker running and left: that one is ours now. */
                    adopted = other;
                    LWLockAcquire(shared_lock, LW_SHARED);
                    strlcpy(worker_database, shared->database, NAMEDATALEN);
                    LWLockRelease(shared_lock);
                    continue;
                }
                /*
                 * A worker that exited to apply a reload is started again at
                 * once. One that made progress, or ran for a while, was
                 * healthy: its failure starts the back-off over.
                 */
                if (restart_now || streamed ||
                    TimestampDifferenceExceeds(worker_started, now, kHealthyRunMs))
                    backoff_ms = kFirstBackoffMs;
                next_start = restart_now ? now : TimestampTzPlusMilliseconds(now, backoff_ms);
                LWLockAcquire(shared_lock, LW_EXCLUSIVE);
                if (!restart_now)
                    shared->worker_restarts++;
                shared->next_start_at = next_start;
                if (strcmp(worker_database, guc_database) == 0)
                    shared->state = WorkerState::backing_off;
                LWLockRelease(shared_lock);
                backoff_ms = std::min<long>(backoff_ms * 2, guc_retry_max_interval_ms);
            }
        }

        if (worker == nullptr) {
            TimestampTz now = GetCurrentTimestamp();
            if (now < next_start) {
                timeout_ms = std::max<long>(1, (next_start - now) / 1000);
            } else {
                Oid dboid = lookup_database();
                database = dboid;
                if (!OidIsValid(dboid)) {
                    if (!reported_missing_database)
                        ereport(LOG,
                                (errmsg("pgsink: database \"%s\" does not exist; waiting for it",
                                        guc_database),
                                 errhint("Create it, or set pgsink.database to the database "
                                         "whose tables pgsink should capture.")));
                    reported_missing_database = true;
                    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
                    shared->state = WorkerState::waiting_for_database;
                    strlcpy(shared->database, guc_database, NAMEDATALEN);
                    LWLockRelease(shared_lock);
                } else {
                    reported_missing_database = false;
                    worker = start_stream_worker(dboid);
                    if (worker != nullptr) {
                        strlcpy(worker_database, guc_database, NAMEDATALEN);
                        worker_started = now;
                        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
                        shared->next_start_at = 0;
                        shared->worker_streamed = false;
                        shared->restart_now = false;
                        LWLockRelease(shared_lock);
                    } else {
                        next_start = TimestampTzPlusMilliseconds(now, kDatabasePollMs);
                    }
                }
            }
        }

        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                        std::min(timeout_ms, deliveries_ms), PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
}

/*
 * stream_worker.cpp: the dynamic background worker that runs in
 * pgsink.database, waits for the extension and streams changes.
 *
 * Lifecycle: SIGHUP reloads the configuration; SIGTERM ends the worker at
 * the next CHECK_FOR_INTERRUPTS (between WAL records, in every wait), so it
 * exits within a second, with nothing confirmed that is not durable; an ERROR is
 * recorded for pgsink.status() and ends the process with exit code 1, after
 * which the launcher restarts it with back-off.
 */
#include <cstring>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/restricted.h"
#include "core/shared_state.h"
#include "decoding/slot.h"
#include "decoding/value_encoder.h"
#include "worker/stream.h"
#include "worker/workers.h"

extern "C" {
#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

/* While waiting for the extension or a configuration fix, look again this often. */
static constexpr long kWaitPollMs = 1000;
/* While streaming, check this often that the extension still exists. */
static constexpr long kExtensionCheckMs = 2000;

static void worker_detach(int code, Datum arg)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    if (shared->worker_pid == MyProcPid) {
        shared->worker_pid = 0;
        shared->worker_procno = -1;
        if (shared->state != WorkerState::backing_off)
            shared->state = WorkerState::stopped;
    }
    LWLockRelease(shared_lock);
}

/*
 * Become the stream worker, unless another one runs (started by a launcher
 * that failed before it knew): then this one leaves quietly.
 */
static bool worker_attach()
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    pid_t other = shared->worker_pid;
    if (other != 0 && other != MyProcPid && kill(other, 0) == 0) {
        LWLockRelease(shared_lock);
        ereport(LOG, (errmsg("pgsink: stream worker %d is already running; this one exits",
                             static_cast<int>(other))));
        return false;
    }
    shared->worker_pid = MyProcPid;
    shared->worker_procno = MyProc->pgprocno;
    shared->worker_started_at = GetCurrentTimestamp();
    shared->state = WorkerState::starting;
    shared->worker_streamed = false;
    strlcpy(shared->database, guc_database, NAMEDATALEN);
    strlcpy(shared->slot_name, guc_slot_name, NAMEDATALEN);
    LWLockRelease(shared_lock);
    before_shmem_exit(worker_detach, 0);
    return true;
}

/* Is CREATE EXTENSION pgsink done in this database? Runs its own transaction. */
static bool extension_exists()
{
    SetCurrentStatementStartTimestamp(); /* else now() stays at the worker's start */
    StartTransactionCommand();
    bool exists = OidIsValid(get_extension_oid("pgsink", true));
    CommitTransactionCommand();
    return exists;
}

/* Sleep until the latch is set, the timeout passes or the postmaster dies. */
static void wait_for(long timeout_ms)
{
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
}

static void reload_config_if_requested()
{
    if (!ConfigReloadPending)
        return;
    ConfigReloadPending = false;
    ProcessConfigFile(PGC_SIGHUP);
    ereport(DEBUG1, (errmsg("pgsink: stream worker reloaded its configuration")));
}

/*
 * The worker's loop. Waits, without repeating itself in the log, while the
 * server configuration or the extension is missing; otherwise lets the
 * stream do a unit of work and sleeps when it is caught up. SIGTERM is
 * served by CHECK_FOR_INTERRUPTS (die), wherever the worker is waiting.
 */
static void stream_loop()
{
    const char *reported_problem = nullptr;
    bool reported_missing_extension = false;
    TimestampTz extension_checked_at = 0;
    bool extension_present = false;

    for (;;) {
        CHECK_FOR_INTERRUPTS();
        reload_config_if_requested();

        const char *problem = server_config_problem();
        if (problem == nullptr && !stream_running()) {
            /*
             * Only before the stream holds the slot (it is ours then). No
             * catalog access (and no cache reset) unless the slot is foreign.
             */
            Oid foreign = slot_foreign_database(guc_slot_name);
            if (OidIsValid(foreign)) {
                stream_before_catalog_access();
                problem = slot_database_problem(guc_slot_name, foreign);
                set_problem(ProblemKind::slot_database, problem);
            } else {
                clear_problem(ProblemKind::slot_database);
            }
        }
        if (problem != nullptr) {
            if (problem != reported_problem) {
                ereport(WARNING, (errmsg("pgsink: %s", problem)));
                record_error(problem);
                reported_problem = problem;
            }
            set_worker_state(WorkerState::misconfigured);
            stream_stop();
            wait_for(kWaitPollMs);
            continue;
        }
        reported_problem = nullptr;

        /* DROP EXTENSION is noticed within kExtensionCheckMs while streaming. */
        TimestampTz now = GetCurrentTimestamp();
        if (!extension_present ||
            TimestampDifferenceExceeds(extension_checked_at, now, kExtensionCheckMs)) {
            stream_before_catalog_access();
            extension_present = extension_exists();
            extension_checked_at = now;
        }
        if (!extension_present) {
            if (!reported_missing_extension)
                ereport(LOG, (errmsg("pgsink: extension \"pgsink\" does not exist in database "
                                     "\"%s\"; waiting for it",
                                     guc_database),
                              errhint("Run CREATE EXTENSION pgsink in that database.")));
            reported_missing_extension = true;
            set_worker_state(WorkerState::waiting_for_extension);
            stream_extension_dropped();
            wait_for(kWaitPollMs);
            continue;
        }
        reported_missing_extension = false;

        long sleep_ms = stream_step();
        if (sleep_ms > 0)
            wait_for(sleep_ms);
    }
}

/* After this many failures in a row, with one error at one slot position, pgsink is stuck. */
static constexpr int kStuckAfter = 3;

/*
 * Record an ERROR that ends the worker, for pgsink.status(), and log it.
 * The same error at the same slot position, start after start, means the
 * worker cannot get past that point on its own: pgsink.status() then says
 * so, with what to do, rather than backing off in silence forever.
 */
static void report_fatal_error()
{
    MemoryContextSwitchTo(TopMemoryContext);
    ErrorData *edata = CopyErrorData();
    const char *message = edata->message ? edata->message : "unknown error";
    SlotState slot = read_slot_state(guc_slot_name);
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    bool same = strncmp(shared->last_error, message, sizeof(shared->last_error) - 1) == 0 &&
                shared->failed_at == slot.confirmed_flush;
    shared->same_failures = same ? shared->same_failures + 1 : 1;
    shared->failed_at = slot.confirmed_flush;
    int failures = shared->same_failures;
    shared->state = WorkerState::backing_off;
    LWLockRelease(shared_lock);
    record_error(message);
    EmitErrorReport();
    FlushErrorState();
    if (failures == kStuckAfter) {
        char problem[kErrorLen];
        bool filenode = strstr(message, "could not map filenode") != nullptr;
        snprintf(problem, sizeof(problem),
                 "the stream worker fails at every start at slot position %X/%X: %s; %s",
                 static_cast<uint32>(slot.confirmed_flush >> 32),
                 static_cast<uint32>(slot.confirmed_flush), message,
                 filenode ? "the slot was made unusable by a PostgreSQL bug (a catalog change "
                            "committed while the slot was being created): run SELECT "
                            "pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) FROM "
                            "pgsink.status, then pgsink.reimport() each captured table"
                          : "see the server log around the first failure; the worker keeps "
                            "retrying with back-off");
        ereport(WARNING, (errmsg("pgsink: %s", problem)));
        set_problem(ProblemKind::stuck, problem);
    }
}

} // namespace pgsink

using namespace pgsink;

void pgsink_stream_main(Datum main_arg)
{
    Oid dboid = DatumGetObjectId(main_arg);

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    log_shutdown_as_routine("stream worker");
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
    if (!worker_attach())
        proc_exit(0);
    fix_output_settings(true);
    pin_session_search_path(); /* the worker runs SQL as superuser: no one else's operators */

    ereport(LOG, (errmsg("pgsink: stream worker started in database \"%s\"", guc_database)));

    PG_TRY();
    {
        cxx_entry([] { stream_loop(); });
    }
    PG_CATCH();
    {
        report_fatal_error();
    }
    PG_END_TRY();

    /* Only an ERROR gets here (the loop never returns): the launcher restarts us. */
    proc_exit(1);
}

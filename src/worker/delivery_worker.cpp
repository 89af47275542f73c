/*
 * delivery_worker.cpp: the dynamic background worker of one sink, started
 * by the launcher (one per name in pgsink.sink), connected to
 * pgsink.database. See worker/delivery.cpp for what it does.
 *
 * Lifecycle: SIGHUP reloads the configuration (a sink removed from
 * pgsink.sink stops); SIGTERM ends it in every wait; an ERROR is recorded
 * in its sink's slot for pgsink.sinks and ends the process with exit code
 * 1, after which the launcher restarts it with back-off.
 */
#include <cstring>
#include <malloc.h>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/restricted.h"
#include "core/shared_state.h"
#include "worker/delivery.h"
#include "worker/workers.h"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

static int my_slot = -1;

static void delivery_detach(int code, Datum arg)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    SinkSlot &s = shared->sinks[my_slot];
    if (s.pid == MyProcPid) {
        s.pid = 0;
        s.procno = -1;
        if (s.state != SinkState::backing_off)
            s.state = SinkState::stopped;
    }
    LWLockRelease(shared_lock);
}

/* Take the sink's slot, unless it is gone or another worker of the sink runs. */
static bool delivery_attach(const DeliveryArgs &args)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    SinkSlot &s = shared->sinks[args.slot];
    if (!s.in_use || strcmp(s.name, args.sink) != 0 ||
        (s.pid != 0 && s.pid != MyProcPid && kill(s.pid, 0) == 0)) {
        LWLockRelease(shared_lock);
        return false;
    }
    s.pid = MyProcPid;
    s.procno = MyProc->pgprocno;
    s.state = SinkState::starting;
    s.started_at = GetCurrentTimestamp();
    s.streamed = false;
    LWLockRelease(shared_lock);
    my_slot = args.slot;
    before_shmem_exit(delivery_detach, 0);
    return true;
}

/* Record the ERROR that ends the worker in its sink's slot, and log it. */
static void report_delivery_error()
{
    MemoryContextSwitchTo(TopMemoryContext);
    ErrorData *edata = CopyErrorData();
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    SinkSlot &s = shared->sinks[my_slot];
    strlcpy(s.last_error, edata->message ? edata->message : "unknown error", kErrorLen);
    s.last_error_at = GetCurrentTimestamp();
    s.state = SinkState::backing_off;
    s.errors++;
    LWLockRelease(shared_lock);
    EmitErrorReport();
    FlushErrorState();
}

} // namespace pgsink

using namespace pgsink;

void pgsink_delivery_main(Datum main_arg)
{
    DeliveryArgs args;
    memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    log_shutdown_as_routine("delivery worker");
    BackgroundWorkerUnblockSignals();
    /*
     * Batches are tens of megabytes, made and freed again and again: from
     * the heap, and kept there once freed, instead of fresh pages from the
     * kernel each time (perf had a quarter of the worker's time zeroing
     * them). The most the worker holds stays bounded by the batches in
     * flight (pgsink.max_in_flight, pgsink.batch_bytes). One arena: the
     * webhook's batches are read on a thread of their own and freed by the
     * worker's, and a thread's arena gave them fresh pages again and again
     * (a quarter of them, every run: 16k page faults per 1M rows). The
     * Elasticsearch sink's bodies, made on its prefetch thread, are freed
     * by the worker's too (its rate measured the same before and after).
     */
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_ARENA_MAX, 1);
    BackgroundWorkerInitializeConnectionByOid(args.database, InvalidOid, 0);
    if (!delivery_attach(args))
        proc_exit(0);
    pin_session_search_path();
    pgstat_report_appname(args.sink);

    ereport(LOG, (errmsg("pgsink: delivery worker of sink \"%s\" started", args.sink)));
    PG_TRY();
    {
        cxx_entry([&] { delivery_loop(args.slot, args.sink); });
    }
    PG_CATCH();
    {
        report_delivery_error();
        proc_exit(1); /* the launcher restarts it, with back-off */
    }
    PG_END_TRY();
    proc_exit(0); /* the sink left pgsink.sink */
}

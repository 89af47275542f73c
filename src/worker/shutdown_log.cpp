/*
 * shutdown_log.cpp: a requested stop of a pgsink worker is routine, not a
 * failure.
 *
 * Workers stop on SIGTERM through PostgreSQL's die(), which interrupts every
 * wait (for WAL, for other transactions while a slot is created, for a
 * query) and ends the process with FATAL "terminating background worker ...
 * due to administrator command". That is what happens at every shutdown and
 * whenever pgsink.database changes: logged as LOG, with pgsink's words,
 * operators' alerting on FATAL stays quiet. The process still ends exactly
 * as before.
 */
#include "worker/workers.h"

extern "C" {
#include "utils/elog.h"
#include "utils/memutils.h"
}

namespace pgsink
{

static emit_log_hook_type prev_emit_log_hook = nullptr;
static const char *worker_name = "worker";

static void soften_shutdown(ErrorData *edata)
{
    if (edata->elevel == FATAL && edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN) {
        edata->elevel = LOG;
        MemoryContext old = MemoryContextSwitchTo(ErrorContext);
        edata->message = psprintf("pgsink: %s stopping: terminated (server shutdown, "
                                  "pg_terminate_backend(), or a change of pgsink.database)",
                                  worker_name);
        MemoryContextSwitchTo(old);
    }
    if (prev_emit_log_hook)
        prev_emit_log_hook(edata);
}

void log_shutdown_as_routine(const char *name)
{
    worker_name = name;
    prev_emit_log_hook = emit_log_hook;
    emit_log_hook = soften_shutdown;
}

} // namespace pgsink

/*
 * workers.h: pgsink's background workers.
 *
 * The launcher is a static worker with no database: it can see pg_database,
 * so it waits for pgsink.database to exist without a restart loop, then runs
 * the stream worker in it as a dynamic worker and restarts it with an
 * exponential back-off when it fails.
 */
#pragma once

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "postmaster/bgworker.h"

PGDLLEXPORT void pgsink_launcher_main(Datum main_arg);
PGDLLEXPORT void pgsink_stream_main(Datum main_arg);
PGDLLEXPORT void pgsink_delivery_main(Datum main_arg);
PGDLLEXPORT void pgsink_metrics_main(Datum main_arg);
}

#include "core/config.h"

namespace pgsink
{

/* Register the launcher; called from _PG_init. */
void register_launcher();
/* Register the metrics worker if pgsink.metrics_listen is set; called from _PG_init. */
void register_metrics_server();

/*
 * A dynamic worker of pgsink's that the launcher starts and restarts (never
 * the postmaster), notifying the launcher when it starts and stops.
 */
void init_dynamic_worker(BackgroundWorker &bgw, const char *function, const char *name,
                         const char *type);

/* What the launcher tells a delivery worker (in bgw_extra). */
struct DeliveryArgs {
    Oid database;
    int slot; /* index into shared->sinks */
    char sink[kSinkNameLen];
};
static_assert(sizeof(DeliveryArgs) <= BGW_EXTRALEN, "DeliveryArgs fits in bgw_extra");

/*
 * The launcher's care of delivery workers: one per sink in pgsink.sink,
 * started in database dboid (InvalidOid: none may run), restarted with
 * back-off, stopped when their sink leaves the list. Returns how long the
 * launcher may sleep before it must look again.
 */
long supervise_deliveries(Oid dboid);

/* Ask the stream worker to look at pgsink.captured_tables when this transaction commits. */
void wake_worker_at_commit();

/* In a worker process: its stop on SIGTERM is logged as LOG, not FATAL. */
void log_shutdown_as_routine(const char *name);

} // namespace pgsink

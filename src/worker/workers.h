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

PGDLLEXPORT void pgsink_launcher_main(Datum main_arg);
PGDLLEXPORT void pgsink_stream_main(Datum main_arg);
}

namespace pgsink
{

/* Register the launcher; called from _PG_init. */
void register_launcher();

/* Ask the stream worker to look at pgsink.captured_tables when this transaction commits. */
void wake_worker_at_commit();

/* In a worker process: its stop on SIGTERM is logged as LOG, not FATAL. */
void log_shutdown_as_routine(const char *name);

} // namespace pgsink

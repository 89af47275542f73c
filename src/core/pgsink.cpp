/*
 * pgsink.cpp: module entry. Loaded through shared_preload_libraries, it
 * defines the GUCs, reserves shared memory and registers the launcher.
 */
#include "core/config.h"
#include "core/shared_state.h"
#include "worker/workers.h"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"

PG_MODULE_MAGIC;

PGDLLEXPORT void _PG_init(void);
}

void _PG_init(void)
{
    if (!process_shared_preload_libraries_in_progress)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("pgsink must be loaded via shared_preload_libraries"),
                 errhint("Add pgsink to shared_preload_libraries in postgresql.conf "
                         "(shared_preload_libraries = 'pgsink'), set wal_level = logical and "
                         "add pgsink to output_plugin_libraries, then restart the server.")));

    pgsink::define_gucs();
    pgsink::install_secret_redaction();
    pgsink::request_shared_state();
    pgsink::register_launcher();
    pgsink::register_metrics_server();
}

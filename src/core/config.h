/*
 * config.h: pgsink's GUCs (postgresql.conf settings under "pgsink.").
 */
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pgsink
{

/* Sinks selectable with pgsink.sink. Grows as sinks are implemented. */
enum SinkKind { SINK_FILE = 0 };

extern char *guc_database;
extern int guc_sink;
extern char *guc_file_path;
extern char *guc_slot_name;
extern int guc_batch_rows;
extern int guc_batch_bytes_kb;
extern int guc_flush_interval_ms;
extern int guc_poll_interval_ms;
extern int guc_retry_max_interval_ms;
extern int guc_import_chunk_rows;
extern int guc_import_chunk_time_ms;

/* Define every GUC; called once from _PG_init. */
void define_gucs();

/*
 * Why the server cannot run pgsink as configured (wal_level, the output
 * plugin whitelist), or nullptr when it can. The message says what to set.
 */
const char *server_config_problem();

} // namespace pgsink

/*
 * slot.h: pgsink's logical replication slot.
 */
#pragma once

extern "C" {
#include "postgres.h"
#include "access/xlogreader.h"
}

namespace pgsink
{

/* How decoding reads WAL: from local files, up to the flushed position. */
XLogReaderRoutine *wal_reader_routine();

/*
 * Create the slot (plugin pgsink) if it does not exist, as
 * pg_create_logical_replication_slot() does: waits for running transactions
 * to find a consistent point. Must run in a transaction, before it writes.
 */
void ensure_slot(const char *name);

} // namespace pgsink

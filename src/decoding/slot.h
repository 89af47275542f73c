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

/* A replication slot's state, as pg_replication_slots shows it. */
struct SlotState {
    bool exists = false;
    bool active = false;
    bool invalidated = false;
    XLogRecPtr confirmed_flush = InvalidXLogRecPtr;
    XLogRecPtr restart_lsn = InvalidXLogRecPtr;
};

/* Read the slot named name under the locks that guard it. */
SlotState read_slot_state(const char *name);

/* How decoding reads WAL: from local files, up to the flushed position. */
XLogReaderRoutine *wal_reader_routine();

/*
 * Create the slot (plugin pgsink) if it does not exist, as
 * pg_create_logical_replication_slot() does: waits for running transactions
 * to find a consistent point. Must run in a transaction, before it writes.
 */
void ensure_slot(const char *name);

} // namespace pgsink

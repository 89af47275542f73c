/*
 * slot.h: pgsink's logical replication slot.
 */
#pragma once

extern "C" {
#include "postgres.h"
#include "access/xlogreader.h"
#include "replication/logical.h"
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

/* Read the next WAL record into ctx and decode it (the stream, or a slot's healing). */
void decode_next_record(LogicalDecodingContext *ctx);

/*
 * Create the slot (plugin pgsink) if it does not exist, as
 * pg_create_logical_replication_slot() does: waits for running transactions
 * to find a consistent point. Must run in a transaction, before it writes.
 */
bool ensure_slot(const char *name); /* true if it created the slot */

/*
 * The slot was missing (or invalidated: why says which) while tables were
 * captured and has just been created again (starting at to): the changes
 * committed since from (0: the last position this server knew) are lost.
 * A WARNING, and pgsink.status shows it until the tables are resynced:
 * automatically (resyncing, pgsink.auto_resync) or by the operator.
 */
void report_lost_slot(const char *name, int64 captured, XLogRecPtr from, XLogRecPtr to,
                      int64 job_watermark, bool resyncing, const char *why);

/* The database of the logical slot named name if it is not this one; else InvalidOid. */
Oid slot_foreign_database(const char *name);

/*
 * Why the slot named name cannot be used from this database (it belongs to
 * database), with what to do. Runs a transaction.
 */
const char *slot_database_problem(const char *name, Oid database);

/*
 * The slots of plugin pgsink in database that nobody uses and that are not
 * named name (left behind by a change of pgsink.slot_name), as "a, b"
 * (palloc'd); empty if none. Each holds WAL.
 */
char *abandoned_slots(const char *name, Oid database);

} // namespace pgsink

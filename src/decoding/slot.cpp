/*
 * slot.cpp: creation of pgsink's logical replication slot.
 *
 * Both the stream worker and pgsink.add_table() create it when missing: a
 * table added before the slot exists would otherwise lose the changes made
 * between its add_table() and the worker's first start.
 */
#include "decoding/slot.h"

extern "C" {
#include "access/xact.h"
#include "access/xlogutils.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "utils/memutils.h"
}

namespace pgsink
{

XLogReaderRoutine *wal_reader_routine()
{
    static XLogReaderRoutine routine = {};
    routine.page_read = read_local_xlog_page;
    routine.segment_open = wal_segment_open;
    routine.segment_close = wal_segment_close;
    return &routine;
}

SlotState read_slot_state(const char *name)
{
    SlotState state;
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    for (int i = 0; i < max_replication_slots; i++) {
        ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
        if (!s->in_use)
            continue;
        SpinLockAcquire(&s->mutex);
        if (strcmp(NameStr(s->data.name), name) == 0) {
            state.exists = true;
            state.active = s->active_pid != 0;
            state.confirmed_flush = s->data.confirmed_flush;
            state.restart_lsn = s->data.restart_lsn;
            state.invalidated = !XLogRecPtrIsInvalid(s->data.invalidated_at) &&
                                XLogRecPtrIsInvalid(s->data.restart_lsn);
        }
        SpinLockRelease(&s->mutex);
    }
    LWLockRelease(ReplicationSlotControlLock);
    return state;
}

void ensure_slot(const char *name)
{
    if (SearchNamedReplicationSlot(name, true) != nullptr)
        return;
    /*
     * add_table() and the stream worker may both get here right after CREATE
     * EXTENSION: serialise them on the extension object (which also keeps
     * DROP EXTENSION out) and look again.
     */
    LockDatabaseObject(ExtensionRelationId, get_extension_oid("pgsink", false), 0, ExclusiveLock);
    if (SearchNamedReplicationSlot(name, true) != nullptr)
        return;
    if (IsTransactionState() && GetTopTransactionIdIfAny() != InvalidTransactionId)
        ereport(ERROR,
                (errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
                 errmsg("pgsink's replication slot \"%s\" does not exist yet, and it cannot be "
                        "created in a transaction that has already written",
                        name),
                 errhint("Call pgsink.add_table() in a transaction of its own: the slot is "
                         "created then.")));

    CheckLogicalDecodingRequirements();
    ereport(LOG, (errmsg("pgsink: creating logical replication slot \"%s\"", name)));
    ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
    LogicalDecodingContext *ctx = CreateInitDecodingContext(
        "pgsink", NIL, false, InvalidXLogRecPtr, wal_reader_routine(), nullptr, nullptr, nullptr);
    DecodingContextFindStartpoint(ctx);
    FreeDecodingContext(ctx);
    ReplicationSlotPersist();
    ReplicationSlotRelease();
}

} // namespace pgsink

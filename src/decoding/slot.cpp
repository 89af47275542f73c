/*
 * slot.cpp: creation of pgsink's logical replication slot.
 *
 * Both the stream worker and pgsink.add_table() create it when missing: a
 * table added before the slot exists would otherwise lose the changes made
 * between its add_table() and the worker's first start.
 */
#include <algorithm>

#include "decoding/slot.h"

extern "C" {
#include "access/xact.h"
#include "access/xlogutils.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/standby.h"
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

/* Does a slot of that name exist, and is it finished (persistent, not being created)? */
static bool slot_ready(const char *name)
{
    ReplicationSlot *slot = SearchNamedReplicationSlot(name, true);
    if (slot == nullptr)
        return false;
    SpinLockAcquire(&slot->mutex);
    bool persistent = slot->data.persistency == RS_PERSISTENT;
    SpinLockRelease(&slot->mutex);
    return persistent;
}

/*
 * Move the new slot's restart_lsn past its consistent point.
 *
 * PostgreSQL's snapshot builder ignores the commits it sees while it is
 * still building its first snapshot (decode.c returns early before
 * SNAPBUILD_FULL_SNAPSHOT). A catalog change committed then (a TRUNCATE,
 * an ALTER) while an older transaction still runs stays invisible to every
 * historic snapshot built from this slot's restart_lsn: decoding later fails
 * with "could not map filenode ... to relation OID", at every restart, and
 * copies of the slot too, because restart_lsn cannot move while that window
 * is replayed from it. (Reproduced on 15.20 with test_decoding alone.)
 *
 * The cure is PostgreSQL's own slot advance: decode in fast-forward mode
 * (no catalog lookups) up to a fresh running-transactions record and
 * confirm it, until restart_lsn lies after the consistent point; decoding
 * then starts from a snapshot serialized after the window. Nothing is
 * captured yet (the caller writes only after this), so nothing is skipped.
 */
static void heal_new_slot()
{
    XLogRecPtr consistent = MyReplicationSlot->data.confirmed_flush;
    long wait_ms = 10;
    for (int round = 0; MyReplicationSlot->data.restart_lsn < consistent; round++) {
        XLogRecPtr upto = LogStandbySnapshot();
        XLogFlush(upto);
        LogicalDecodingContext *ctx = CreateDecodingContext(
            InvalidXLogRecPtr, NIL, true, wal_reader_routine(), nullptr, nullptr, nullptr);
        XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);
        while (ctx->reader->EndRecPtr < upto) {
            char *errm = nullptr;
            XLogRecord *record = XLogReadRecord(ctx->reader, &errm);
            if (errm)
                elog(ERROR, "pgsink: could not read WAL while preparing the slot: %s", errm);
            if (record != nullptr)
                LogicalDecodingProcessRecord(ctx, ctx->reader);
            CHECK_FOR_INTERRUPTS();
        }
        LogicalConfirmReceivedLocation(ctx->reader->EndRecPtr);
        FreeDecodingContext(ctx);
        if (MyReplicationSlot->data.restart_lsn >= consistent)
            break;
        if (round == 10)
            ereport(LOG, (errmsg("pgsink: waiting for older transactions to end before the new "
                                 "replication slot is ready")));
        /* A transaction older than the consistent point still runs: wait for it. */
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        wait_ms = std::min<long>(wait_ms * 2, 1000);
    }
    ReplicationSlotMarkDirty();
    ReplicationSlotSave();
}

void ensure_slot(const char *name)
{
    /* A slot being created by someone else is not ready: wait for it on the lock below. */
    if (slot_ready(name))
        return;
    /*
     * add_table() and the stream worker may both get here right after CREATE
     * EXTENSION: serialise them on the extension object (which also keeps
     * DROP EXTENSION out) and look again.
     */
    LockDatabaseObject(ExtensionRelationId, get_extension_oid("pgsink", false), 0, ExclusiveLock);
    if (SearchNamedReplicationSlot(name, true) != nullptr)
        return; /* made while we waited for the lock (or not ours: the caller checks) */
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
    /*
     * Still ephemeral while it heals: a concurrent add_table() does not take
     * it for ready (slot_ready()) and waits on the lock above, so nothing
     * it captures can fall inside the range the healing skips.
     */
    heal_new_slot();
    ReplicationSlotPersist();
    ReplicationSlotRelease();
}

} // namespace pgsink

namespace pgsink
{

const char *slot_database_problem(const char *name)
{
    static char message[1024];
    ReplicationSlot *slot = SearchNamedReplicationSlot(name, true);
    if (slot == nullptr)
        return nullptr;
    SpinLockAcquire(&slot->mutex);
    Oid database = slot->data.database;
    bool logical = SlotIsLogical(slot);
    SpinLockRelease(&slot->mutex);
    if (!logical || database == MyDatabaseId)
        return nullptr;
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    const char *dbname = get_database_name(database);
    snprintf(message, sizeof(message),
             "replication slot \"%s\" belongs to database \"%s\", not to pgsink.database "
             "\"%s\": set pgsink.slot_name to another name and reload, or drop the slot with "
             "SELECT pg_drop_replication_slot('%s') if nothing in \"%s\" needs it",
             name, dbname ? dbname : "?", get_database_name(MyDatabaseId), name,
             dbname ? dbname : "?");
    CommitTransactionCommand();
    return message;
}

std::string abandoned_slots(const char *name, Oid database)
{
    std::string names;
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    for (int i = 0; i < max_replication_slots; i++) {
        ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
        if (!s->in_use)
            continue;
        SpinLockAcquire(&s->mutex);
        if (s->data.database == database && s->active_pid == 0 &&
            strcmp(NameStr(s->data.plugin), "pgsink") == 0 &&
            strcmp(NameStr(s->data.name), name) != 0) {
            if (!names.empty())
                names.append(", ");
            names.append(NameStr(s->data.name));
        }
        SpinLockRelease(&s->mutex);
    }
    LWLockRelease(ReplicationSlotControlLock);
    return names;
}

} // namespace pgsink

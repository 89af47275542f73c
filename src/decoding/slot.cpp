/*
 * slot.cpp: creation of pgsink's logical replication slot.
 *
 * Both the stream worker and pgsink.add_table() create it when missing: a
 * table added before the slot exists would otherwise lose the changes made
 * between its add_table() and the worker's first start.
 */
#include <algorithm>

#include "decoding/slot.h"
#include "core/shared_state.h"

extern "C" {
#include "access/xact.h"
#include "access/xlogutils.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "replication/reorderbuffer.h"
#include "storage/procarray.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/standby.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

void decode_next_record(LogicalDecodingContext *ctx)
{
    char *errm = nullptr;
    XLogRecord *record = XLogReadRecord(ctx->reader, &errm);
    if (errm)
        elog(ERROR, "pgsink: could not read WAL for logical decoding: %s", errm);
    if (record != nullptr)
        LogicalDecodingProcessRecord(ctx, ctx->reader);
    CHECK_FOR_INTERRUPTS();
}

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
/* heal_new_slot()'s rounds: read to a fresh running-xacts record, confirm, wait. */
static void heal_rounds(LogicalDecodingContext *ctx, XLogRecPtr consistent)
{
    long wait_ms = 10;
    for (int round = 0;; round++) {
        XLogRecPtr upto = LogStandbySnapshot();
        XLogFlush(upto);
        while (ctx->reader->EndRecPtr < upto)
            decode_next_record(ctx);
        LogicalConfirmReceivedLocation(ctx->reader->EndRecPtr);
        if (MyReplicationSlot->data.restart_lsn >= consistent)
            return;
        if (round == 10)
            ereport(LOG, (errmsg("pgsink: waiting for older transactions to end before the new "
                                 "replication slot is ready")));
        /*
         * A transaction older than the consistent point still runs: wait for
         * it on its lock, as slot creation does, so that the deadlock
         * detector sees the wait (we hold the extension's lock, and maybe a
         * table's). If the oldest one known has ended already, poll.
         */
        ReorderBufferTXN *oldest = ReorderBufferGetOldestTXN(ctx->reorder);
        if (oldest != nullptr && TransactionIdIsValid(oldest->xid) &&
            TransactionIdIsInProgress(oldest->xid)) {
            XactLockTableWait(oldest->xid, nullptr, nullptr, XLTW_None);
        } else {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                            PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            wait_ms = std::min<long>(wait_ms * 2, 1000);
        }
        CHECK_FOR_INTERRUPTS();
    }
}

static void heal_new_slot()
{
    XLogRecPtr consistent = MyReplicationSlot->data.confirmed_flush;
    if (MyReplicationSlot->data.restart_lsn >= consistent)
        return;
    /* One context, read forward: a long wait never re-reads the WAL it has read. */
    LogicalDecodingContext *volatile ctx = CreateDecodingContext(
        InvalidXLogRecPtr, NIL, true, wal_reader_routine(), nullptr, nullptr, nullptr);
    XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);
    PG_TRY();
    {
        heal_rounds(ctx, consistent);
    }
    PG_CATCH();
    {
        FreeDecodingContext(ctx); /* closes its WAL segment, which an abort would not */
        PG_RE_THROW();
    }
    PG_END_TRY();
    FreeDecodingContext(ctx);
    ReplicationSlotMarkDirty();
    ReplicationSlotSave();
}

/* The error for a transaction that has written and would have to wait for (or make) the slot. */
static void refuse_in_written_transaction(const char *name)
{
    if (IsTransactionState() && GetTopTransactionIdIfAny() != InvalidTransactionId)
        ereport(ERROR,
                (errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
                 errmsg("pgsink's replication slot \"%s\" is not ready yet, and a transaction "
                        "that has already written cannot wait for it or create it",
                        name),
                 errhint("Call pgsink.add_table() in a transaction of its own: the slot is "
                         "created then.")));
}

bool ensure_slot(const char *name)
{
    if (slot_ready(name))
        return false;
    /*
     * Creating the slot waits for running transactions (and so does healing
     * it): a transaction that has written would wait for itself through the
     * creator, unseen by the deadlock detector. Refuse before waiting.
     */
    refuse_in_written_transaction(name);
    /*
     * add_table() and the stream worker may both get here right after CREATE
     * EXTENSION: serialise them on the extension object (which also keeps
     * DROP EXTENSION out) and look again.
     */
    LockDatabaseObject(ExtensionRelationId, get_extension_oid("pgsink", false), 0, ExclusiveLock);
    /* A creator that failed releases the lock before its slot is dropped: give it a moment. */
    for (int i = 0;
         i < 200 && SearchNamedReplicationSlot(name, true) != nullptr && !slot_ready(name); i++) {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    }
    if (ReplicationSlot *other = SearchNamedReplicationSlot(name, true)) {
        SpinLockAcquire(&other->mutex);
        bool temporary = other->data.persistency == RS_TEMPORARY;
        int pid = other->active_pid;
        SpinLockRelease(&other->mutex);
        if (temporary)
            ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE),
                            errmsg("replication slot \"%s\" is a temporary slot of another "
                                   "session (PID %d)",
                                   name, pid),
                            errhint("Set pgsink.slot_name to a name no other tool uses.")));
        if (!slot_ready(name))
            ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE),
                            errmsg("replication slot \"%s\" is still being created by another "
                                   "session",
                                   name),
                            errhint("Try again in a moment.")));
        return false; /* made while we waited for the lock (or not ours: the caller checks) */
    }

    CheckLogicalDecodingRequirements();
    ereport(LOG, (errmsg("pgsink: creating logical replication slot \"%s\"", name)));
    ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
    /*
     * An error (a cancel while waiting, say) caught by the caller in a
     * subtransaction would otherwise leave the half-made slot acquired by
     * this session: release it, which drops an ephemeral slot.
     */
    PG_TRY();
    {
        LogicalDecodingContext *ctx =
            CreateInitDecodingContext("pgsink", NIL, false, InvalidXLogRecPtr, wal_reader_routine(),
                                      nullptr, nullptr, nullptr);
        DecodingContextFindStartpoint(ctx);
        FreeDecodingContext(ctx);
        /*
         * Still ephemeral while it heals: a concurrent add_table() does not
         * take it for ready (slot_ready()) and waits on the lock above, so
         * nothing it captures can fall inside the range the healing skips.
         */
        heal_new_slot();
    }
    PG_CATCH();
    {
        if (MyReplicationSlot != nullptr)
            ReplicationSlotRelease();
        PG_RE_THROW();
    }
    PG_END_TRY();
    ReplicationSlotPersist();
    ReplicationSlotRelease();
    return true;
}

} // namespace pgsink

namespace pgsink
{

Oid slot_foreign_database(const char *name)
{
    ReplicationSlot *slot = SearchNamedReplicationSlot(name, true);
    if (slot == nullptr)
        return InvalidOid;
    SpinLockAcquire(&slot->mutex);
    Oid database = slot->data.database;
    bool logical = SlotIsLogical(slot);
    SpinLockRelease(&slot->mutex);
    return logical && database != MyDatabaseId ? database : InvalidOid;
}

const char *slot_database_problem(const char *name, Oid database)
{
    static char message[1024];
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

char *abandoned_slots(const char *name, Oid database)
{
    /* Allocated before the locks: nothing may allocate while a spinlock is held. */
    NameData *found = static_cast<NameData *>(palloc(sizeof(NameData) * max_replication_slots));
    int nfound = 0;
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    for (int i = 0; i < max_replication_slots; i++) {
        ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
        if (!s->in_use)
            continue;
        SpinLockAcquire(&s->mutex);
        if (s->data.database == database && s->active_pid == 0 &&
            s->data.persistency == RS_PERSISTENT &&
            strcmp(NameStr(s->data.plugin), "pgsink") == 0 &&
            strcmp(NameStr(s->data.name), name) != 0)
            found[nfound++] = s->data.name;
        SpinLockRelease(&s->mutex);
    }
    LWLockRelease(ReplicationSlotControlLock);
    StringInfoData names;
    initStringInfo(&names);
    for (int i = 0; i < nfound; i++)
        appendStringInfo(&names, "%s%s", i ? ", " : "", NameStr(found[i]));
    pfree(found);
    return names.data;
}

/*
 * The slot was recreated while tables were captured: the changes committed
 * between its last confirmed position and the new slot's start are lost.
 * Say so loudly, in the log and in pgsink.status, until every captured
 * table has an import job above job_watermark (the newest job id when the
 * loss was found), committed: the worker checks (importer.cpp).
 */
void report_lost_slot(const char *name, int64 captured, XLogRecPtr from, XLogRecPtr to,
                      int64 job_watermark, bool resyncing, const char *why)
{
    if (from == InvalidXLogRecPtr) {
        LWLockAcquire(shared_lock, LW_SHARED);
        from = shared->confirmed_lsn;
        LWLockRelease(shared_lock);
    }
    char range[128];
    if (from != InvalidXLogRecPtr)
        snprintf(range, sizeof(range), "between %X/%X and %X/%X", static_cast<uint32>(from >> 32),
                 static_cast<uint32>(from), static_cast<uint32>(to >> 32), static_cast<uint32>(to));
    else
        snprintf(range, sizeof(range), "before %X/%X (since its last confirmed position)",
                 static_cast<uint32>(to >> 32), static_cast<uint32>(to));
    char message[kErrorLen];
    snprintf(message, sizeof(message),
             "replication slot \"%s\" %s while %lld tables were captured, and was created "
             "again: changes committed %s were lost; %s",
             name, why, static_cast<long long>(captured), range,
             resyncing ? "pgsink is resyncing every captured table (pgsink.imports shows how "
                         "far), after which every sink holds exactly the tables' rows again"
                       : "call pgsink.resync() (or pgsink.reimport() for each captured table)");
    if (resyncing)
        ereport(WARNING, (errmsg("pgsink: %s", message),
                          errdetail("pgsink.auto_resync is on: nothing to do but watch "
                                    "pgsink.imports; rows deleted meanwhile are removed from "
                                    "the sinks when each table's resync closes."),
                          errhint("Raise max_slot_wal_keep_size (or fix what dropped the slot) "
                                  "so that it does not happen again.")));
    else
        ereport(WARNING,
                (errmsg("pgsink: %s", message),
                 errdetail("The slot was dropped, invalidated, or did not survive a failover or "
                           "a restore."),
                 errhint("SELECT pgsink.resync(); or set pgsink.auto_resync = on.")));
    LWLockAcquire(shared_lock, LW_EXCLUSIVE); /* message and watermark together */
    strlcpy(shared->problems[static_cast<int>(ProblemKind::slot_lost)], message, kErrorLen);
    shared->slot_lost = true;
    shared->slot_lost_watermark = job_watermark;
    LWLockRelease(shared_lock);
}

} // namespace pgsink

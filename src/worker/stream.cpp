/*
 * stream.cpp: decode the slot, append to the spool, confirm what is durable.
 *
 * The worker keeps one decoding context for its lifetime (as a walsender
 * does) and decodes up to the flushed WAL position, as
 * pg_logical_slot_get_changes() does. Entries fill a batch; a full batch is
 * appended to the spool at once, even in the middle of a transaction, so
 * memory stays bounded; after each round the spool makes everything durable
 * and only then does the slot confirm the position decoded up to. Sinks
 * are not the stream's business: each has a delivery worker reading the
 * spool (worker/delivery.cpp), so a slow or failing sink never holds WAL.
 *
 * A crash anywhere restarts decoding at the spool's durable lsn (or the
 * slot's confirmed position, if later); the spool cuts what it holds past
 * its last durable round (see spool/spool_writer.cpp). When the spool
 * reaches pgsink.spool_max_size, decoding waits (the slot keeps the WAL)
 * until sinks catch up and their segments are removed.
 */
#include <cstring>
#include <deque>
#include <memory>
#include <string>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/shared_state.h"
#include "decoding/entry_consumer.h"
#include "decoding/slot.h"
#include "imports/importer.h"
#include "spool/sink_cursor.h"
#include "spool/spool_writer.h"
#include "worker/table_counts.h"
#include "decoding/resync_marker.h"
#include "core/pause.h"
#include "worker/stream.h"

extern "C" {
#include "access/xact.h"
#include "executor/spi.h"
#include "utils/snapmgr.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

/*
 * Entries are appended to the spool in writes of about this size: the
 * bytes are still in the CPU's cache when the kernel copies them (perf: with
 * 16 MB writes, a quarter of the stream worker's time went to that copy).
 */
static constexpr size_t kSpoolWriteBytes = 256 * 1024;
/* A round ends (the spool is synced, delivery workers woken) once it holds this much. */
static constexpr size_t kRoundBytes = 32 << 20;
/* How often delivered segments are looked for while the spool is not full. */
static constexpr long kHousekeepingMs = 500;

/* The decoding context's text-output hooks: the worker never writes through them. */
static void unused_prepare_write(LogicalDecodingContext *, XLogRecPtr, TransactionId, bool)
{
    elog(ERROR, "pgsink: unexpected output plugin write in the stream worker");
}
static void unused_write(LogicalDecodingContext *, XLogRecPtr, TransactionId, bool)
{
    elog(ERROR, "pgsink: unexpected output plugin write in the stream worker");
}

class Stream final : public EntryConsumer
{
  public:
    std::string &buffer() override { return batch_; }
    void entry_done(Oid relid) override;
    void schema_done() override;
    void commit(const TxnMeta &txn, uint64 entries) override;

    bool running() const { return ctx_ != nullptr; }
    void start();
    long step();
    void stop();
    void before_catalog_access();

  private:
    void write_batch();
    void persist_and_confirm(XLogRecPtr decoded_upto, bool wait);
    void confirm_durable(bool streaming);
    bool spool_full();
    bool paused();
    void remove_delivered_segments();

    LogicalDecodingContext *ctx_ = nullptr;
    Importer importer_;
    MemoryContext cxt_ = nullptr;
    spool::Writer spool_;
    TableCounts table_counts_; /* of what was written since the last round's end */
    bool caught_up_ = false;
    TimestampTz paused_since_ = 0;
    std::string batch_;
    size_t entry_start_ = 0; /* where in batch_ the entry being written starts */
    uint64 batch_entries_ = 0;
    /* Written to the spool since the last round's end (counted once durable). */
    uint64 unsynced_entries_ = 0;
    uint64 unsynced_txns_ = 0;
    TimestampTz unsynced_commit_time_ = 0;
    /* Rounds ended, and what they hold, until durable: then counted and confirmed. */
    struct Unconfirmed {
        XLogRecPtr lsn;
        uint64 entries, txns;
        TimestampTz commit_time;
        std::vector<TableCounts::Count> counts;
    };
    std::deque<Unconfirmed> unconfirmed_;
    XLogRecPtr confirmed_ = InvalidXLogRecPtr;
    bool caches_need_reset_ = false;
    bool full_ = false; /* waiting for sinks: pgsink.spool_max_size reached */
    TimestampTz housekeeping_at_ = 0;
};

/*
 * Holding the slot marks this process as "in logical decoding", and other
 * sessions' snapshots then leave its transaction ids out: its own
 * transactions (import chunks, job updates) would look aborted to them, and
 * their updates could fork rows of pgsink.import_jobs. The flag is only
 * right while decoding: clear it for the worker's own transactions.
 */
static void set_in_logical_decoding(bool on)
{
    LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
    if (on)
        MyProc->statusFlags |= PROC_IN_LOGICAL_DECODING;
    else
        MyProc->statusFlags &= ~PROC_IN_LOGICAL_DECODING;
    ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
    LWLockRelease(ProcArrayLock);
}

static Stream *the_stream = nullptr;

/*
 * Decoding runs outside a transaction, and each transaction the worker or
 * the reorder buffer runs leaves no resource owner behind: give the stream
 * one of its own, created once.
 */
static void use_stream_resource_owner()
{
    static ResourceOwner owner = nullptr;
    if (CurrentResourceOwner != nullptr)
        return;
    if (owner == nullptr)
        owner = ResourceOwnerCreate(nullptr, "pgsink stream");
    CurrentResourceOwner = owner;
}

static Stream &stream()
{
    if (the_stream == nullptr)
        the_stream = new Stream();
    return *the_stream;
}

/* The spool keeps the Schema entries in effect, for each new segment (see spool_files.h). */
void Stream::schema_done()
{
    spool_.note_schema(batch_.data() + entry_start_, batch_.size() - entry_start_);
    entry_done(InvalidOid);
}

void Stream::entry_done(Oid relid)
{
    if (relid != InvalidOid)
        table_counts_.add(relid, batch_.size() + 1 - entry_start_);
    batch_.push_back('\n');
    entry_start_ = batch_.size();
    batch_entries_++;
    if (batch_.size() >=
            std::min<size_t>(static_cast<size_t>(guc_batch_bytes_kb) * 1024, kSpoolWriteBytes) ||
        batch_entries_ >= static_cast<uint64>(guc_batch_rows))
        write_batch();
}

void Stream::commit(const TxnMeta &txn, uint64 entries)
{
    spool_.transaction_end(txn.commit_lsn, txn.commit_time, batch_.size(), batch_entries_);
    table_counts_.commit(txn.commit_time);
    unsynced_txns_++;
    unsynced_commit_time_ = txn.commit_time;
}

/* Append the batch to the spool (not yet durable). */
void Stream::write_batch()
{
    if (batch_.empty())
        return;
    spool_.write(batch_, batch_entries_); /* a huge row's buffer is freed once written */
    unsynced_entries_ += batch_entries_;
    batch_entries_ = 0;
    entry_start_ = 0;
}

/*
 * End a round: what is written goes to be made durable (by the spool's
 * thread; with wait, before this returns), and what is durable by now is
 * confirmed.
 */
void Stream::persist_and_confirm(XLogRecPtr decoded_upto, bool wait)
{
    write_batch();
    spool_.sync(decoded_upto, wait); /* a failed fsync is never retried in place */
    unconfirmed_.push_back(Unconfirmed{decoded_upto, unsynced_entries_, unsynced_txns_,
                                       unsynced_commit_time_, table_counts_.take()});
    unsynced_entries_ = 0;
    unsynced_txns_ = 0;
    unsynced_commit_time_ = 0;
    confirm_durable(true);
}

/*
 * Confirm the slot up to what the spool made durable, and count what that
 * holds; streaming: the worker's state is "streaming" (not paused or
 * waiting for a full spool).
 */
void Stream::confirm_durable(bool streaming)
{
    XLogRecPtr durable = spool_.durable_lsn();
    uint64 entries = 0, txns = 0;
    TimestampTz commit_time = 0;
    while (!unconfirmed_.empty() && unconfirmed_.front().lsn <= durable) {
        Unconfirmed &u = unconfirmed_.front();
        entries += u.entries;
        txns += u.txns;
        if (u.commit_time != 0)
            commit_time = u.commit_time;
        TableCounts::publish(u.counts);
        unconfirmed_.pop_front();
    }

    bool advanced = durable > confirmed_;
    if (advanced) {
        LogicalConfirmReceivedLocation(durable);
        ReplicationSlotMarkDirty();
        confirmed_ = durable;
    }

    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->confirmed_lsn = confirmed_;
    shared->entries_delivered += entries;
    shared->transactions_delivered += txns;
    if (commit_time != 0)
        shared->last_commit_time = commit_time;
    if (streaming)
        shared->state = WorkerState::streaming;
    shared->caught_up = caught_up_;
    /* Healthy: the slot moved, past where the last failure was. */
    if (advanced && confirmed_ > shared->failed_at)
        shared->worker_streamed = true;
    /* The worker streams again after failing: the failure is over. */
    bool recovered = shared->same_failures > 0 && confirmed_ > shared->failed_at;
    LWLockRelease(shared_lock);
    if (advanced)
        announce_progress();
    if (recovered) {
        clear_error();
        clear_problem(ProblemKind::stuck);
    }
}

/*
 * The lowest cursor of the sinks pgsink.sink lists: segments before it are
 * delivered everywhere. A listed sink without a cursor yet (its worker has
 * not started) holds everything, so nothing it could still need goes.
 */
static uint64 lowest_sink_cursor(uint64 spool_id)
{
    char names[kMaxSinks][kSinkNameLen];
    int n = configured_sinks(names);
    uint64 lowest = UINT64_MAX;
    std::string dir = spool::directory();
    for (int i = 0; i < n; i++) {
        uint64 cursor = 0;
        bool known = false, rewinding = false;
        uint64 rewind_to = 0;
        LWLockAcquire(shared_lock, LW_SHARED);
        if (SinkSlot *slot = find_sink_slot(names[i])) {
            if (slot->cursor_valid && slot->spool_id == spool_id) {
                cursor = slot->cursor;
                known = true;
            }
            /* A rewind not applied yet: its target must stay too. */
            rewinding = slot->rewind_requests != slot->rewind_applied;
            rewind_to = slot->rewind_offset;
        }
        LWLockRelease(shared_lock);
        spool::Cursor c;
        if (!known && spool::read_cursor(dir, names[i], &c) && c.spool_id == spool_id) {
            cursor = c.offset;
            known = true;
        }
        if (!known)
            cursor = 0;
        if (rewinding)
            cursor = std::min(cursor, rewind_to);
        lowest = std::min(lowest, cursor);
    }
    /* Sinks this process does not list yet (a reload not seen): their cursors count too. */
    LWLockAcquire(shared_lock, LW_SHARED);
    for (const SinkSlot &slot : shared->sinks)
        if (slot.in_use && slot.cursor_valid && slot.spool_id == spool_id)
            lowest = std::min<uint64>(lowest, slot.cursor);
    LWLockRelease(shared_lock);
    return lowest;
}

/*
 * Remove segments every sink has delivered (and kept for
 * pgsink.spool_retention). At pgsink.spool_max_size, retention yields:
 * delivered segments go at once, and a segment being written that every
 * sink has delivered is closed so that it can go too; otherwise a spool
 * full of delivered entries would stop decoding for good.
 */
void Stream::remove_delivered_segments()
{
    TimestampTz now = GetCurrentTimestamp();
    if (!full_ && !TimestampDifferenceExceeds(housekeeping_at_, now, kHousekeepingMs))
        return;
    housekeeping_at_ = now;
    uint64 max = static_cast<uint64>(guc_spool_max_size_mb) << 20;
    bool at_max = max > 0 && spool_.bytes() >= max;
    /* No rewind may pick a target between the look at the cursors and the removal. */
    LWLockAcquire(spool_lock, LW_EXCLUSIVE);
    try {
        uint64 lowest = lowest_sink_cursor(spool_.id());
        spool_.remove_delivered(lowest, at_max ? 0 : guc_spool_retention_s);
        if (at_max && spool_.bytes() >= max && spool_.roll_if_delivered(lowest))
            spool_.remove_delivered(lowest, 0);
    } catch (...) {
        LWLockRelease(spool_lock);
        throw;
    }
    LWLockRelease(spool_lock);
}

/*
 * Is decoding paused (pgsink.pause())? Then it waits where it is, with the
 * slot holding the WAL after it, until pgsink.resume(); sinks go on
 * delivering what the spool holds.
 */
bool Stream::paused()
{
    TimestampTz since = decoding_paused_since();
    if (since != 0 || paused_since_ != 0) {
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        shared->state = since != 0 ? WorkerState::paused : WorkerState::streaming;
        LWLockRelease(shared_lock);
    }
    if ((since != 0) != (paused_since_ != 0)) {
        if (since != 0)
            ereport(LOG, (errmsg("pgsink: decoding is paused (pgsink.pause()); the replication "
                                 "slot keeps the WAL until pgsink.resume()")));
        else
            ereport(LOG, (errmsg("pgsink: decoding resumes")));
    }
    paused_since_ = since;
    return since != 0;
}

/*
 * Is the spool at pgsink.spool_max_size? Then decoding waits (the slot
 * keeps the WAL, as without a spool) and says so once, until sinks catch up.
 */
bool Stream::spool_full()
{
    uint64 max = static_cast<uint64>(guc_spool_max_size_mb) << 20;
    bool full = max > 0 && spool_.bytes() >= max;
    if (full != full_) {
        full_ = full;
        TimestampTz now = GetCurrentTimestamp();
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        shared->spool.full = full;
        shared->spool.full_since = full ? now : 0;
        shared->state = full ? WorkerState::spool_full : WorkerState::streaming;
        LWLockRelease(shared_lock);
        if (full)
            ereport(WARNING,
                    (errmsg("pgsink: the spool reached pgsink.spool_max_size (%d MB); decoding "
                            "waits until sinks deliver",
                            guc_spool_max_size_mb),
                     errdetail("Nothing is lost: the replication slot keeps the WAL meanwhile. "
                               "See SELECT * FROM pgsink.sinks for the sinks behind."),
                     errhint("Fix the failing sink, or raise pgsink.spool_max_size.")));
        else
            ereport(LOG, (errmsg("pgsink: the spool is below pgsink.spool_max_size again; "
                                 "decoding resumes")));
    }
    return full;
}

/*
 * Is the slot named name invalidated (its WAL removed)? Then *confirmed is
 * where it had confirmed up to: the changes after it are lost.
 */
static bool slot_invalidated(const char *name, XLogRecPtr *confirmed)
{
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    ReplicationSlot *slot = SearchNamedReplicationSlot(name, false);
    bool invalid = false;
    if (slot != nullptr) {
        SpinLockAcquire(&slot->mutex);
        invalid = slot->data.invalidated_at != InvalidXLogRecPtr &&
                  slot->data.restart_lsn == InvalidXLogRecPtr && slot->active_pid == 0 &&
                  slot->data.database == MyDatabaseId;
        *confirmed = slot->data.confirmed_flush;
        SpinLockRelease(&slot->mutex);
    }
    LWLockRelease(ReplicationSlotControlLock);
    return invalid;
}

/*
 * The slot was lost while tables were captured: resync every captured
 * table that has a key (unfinished imports give way). In the caller's
 * transaction. Returns how many.
 */
static int64 schedule_resyncs()
{
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_execute("UPDATE pgsink.import_jobs SET state = 'expired', "
                "error = 'replaced by a resync: the replication slot was lost', "
                "finished_at = pg_catalog.now() "
                "WHERE state OPERATOR(pg_catalog.=) ANY ('{scheduled,running,failed}')",
                false, 0);
    int rc = SPI_execute("INSERT INTO pgsink.import_jobs (relid, resync) "
                         "SELECT c.relid, true FROM pgsink.captured_tables c "
                         "WHERE EXISTS (SELECT FROM pg_catalog.pg_index i "
                         "              WHERE i.indrelid OPERATOR(pg_catalog.=) c.relid "
                         "                AND (i.indisprimary OR i.indisreplident)) "
                         "ORDER BY c.relid",
                         false, 0);
    int64 n = rc == SPI_OK_INSERT ? static_cast<int64>(SPI_processed) : 0;
    PopActiveSnapshot();
    SPI_finish();
    if (n > 0)
        request_import_scan();
    return n;
}

/* How many tables are captured, and the newest import job id; in a transaction. */
static int64 count_captured_tables(int64 *newest_job)
{
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    int rc = SPI_execute("SELECT pg_catalog.count(*), "
                         "  (SELECT coalesce(pg_catalog.max(id), 0) FROM pgsink.import_jobs) "
                         "FROM pgsink.captured_tables",
                         true, 1);
    bool isnull = true;
    int64 n = 0;
    *newest_job = 0;
    if (rc == SPI_OK_SELECT && SPI_processed == 1) {
        HeapTuple tup = SPI_tuptable->vals[0];
        Datum count = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);
        n = isnull ? 0 : DatumGetInt64(count);
        Datum newest = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
        *newest_job = isnull ? 0 : DatumGetInt64(newest);
    }
    PopActiveSnapshot();
    SPI_finish();
    return n;
}

void Stream::start()
{
    if (cxt_ == nullptr)
        cxt_ = AllocSetContextCreate(TopMemoryContext, "pgsink stream", ALLOCSET_DEFAULT_SIZES);

    CheckLogicalDecodingRequirements();
    const char *name = guc_slot_name;
    SetCurrentStatementStartTimestamp(); /* else now() stays at the worker's start */
    StartTransactionCommand();
    /*
     * add_table() creates the slot before its table is captured: a missing
     * slot while tables are captured was lost (dropped, or gone with a
     * failover), and with it the changes committed since it last confirmed.
     */
    /*
     * A loss is made durable (resync_marker.h) before the slot is dropped or
     * created again, and forgotten only once the resync jobs are committed:
     * a crash in between resyncs at the next start.
     */
    ResyncMarker marker;
    bool marked = guc_auto_resync && read_resync_marker(&marker);
    XLogRecPtr invalidated_at = InvalidXLogRecPtr;
    /*
     * An invalidated slot (it fell behind max_slot_wal_keep_size) cannot
     * decode again: with pgsink.auto_resync, drop it and heal as for a lost
     * one; else say what to do (below).
     */
    if (guc_auto_resync && slot_invalidated(name, &invalidated_at)) {
        if (!marked) {
            marker.lost_from = invalidated_at;
            marker.set_why("was invalidated (it fell behind max_slot_wal_keep_size)");
            write_resync_marker(marker);
            marked = true;
        }
        ReplicationSlotDrop(name, true);
        ereport(LOG, (errmsg("pgsink: dropped invalidated replication slot \"%s\" to create it "
                             "again and resync the captured tables",
                             name)));
    }
    bool slot_missing = SearchNamedReplicationSlot(name, true) == nullptr;
    int64 newest_job = 0;
    int64 captured = slot_missing || marked ? count_captured_tables(&newest_job) : 0;
    if (slot_missing && captured > 0 && guc_auto_resync && !marked) {
        LWLockAcquire(shared_lock, LW_SHARED);
        marker.lost_from = shared->confirmed_lsn;
        LWLockRelease(shared_lock);
        marker.set_why("was missing");
        write_resync_marker(marker);
        marked = true;
    }
    bool created = ensure_slot(name);
    bool lost = (created && captured > 0) || (marked && captured > 0);
    bool scheduling = lost && guc_auto_resync;
    bool resyncing = scheduling && schedule_resyncs() > 0;
    CommitTransactionCommand();
    /*
     * The jobs are committed (none when every captured table is keyless:
     * nothing can be resynced, and the loss is reported below), or nothing
     * is captured: the marker has done its work.
     */
    if (marked && (scheduling || captured == 0))
        remove_resync_marker();
    use_stream_resource_owner();
    ReplicationSlotAcquire(name, true);
    if (lost)
        report_lost_slot(name, captured, marked ? marker.lost_from : InvalidXLogRecPtr,
                         MyReplicationSlot->data.confirmed_flush, newest_job, resyncing,
                         marked ? marker.why : "was missing");
    const char *abandoned = abandoned_slots(name, MyDatabaseId);
    if (abandoned[0] != '\0')
        ereport(WARNING,
                (errmsg("pgsink: replication slots of plugin pgsink that the stream worker does "
                        "not use hold WAL: %s",
                        abandoned),
                 errdetail("The stream worker uses slot \"%s\" (pgsink.slot_name); the others "
                           "were left by an earlier pgsink.slot_name, or are read through "
                           "pg_logical_slot_get_changes().",
                           name),
                 errhint("If nothing reads them, drop each with SELECT "
                         "pg_drop_replication_slot('name').")));

    if (strcmp(NameStr(MyReplicationSlot->data.plugin), "pgsink") != 0)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("replication slot \"%s\" uses output plugin \"%s\", not pgsink",
                               name, NameStr(MyReplicationSlot->data.plugin)),
                        errhint("Set pgsink.slot_name to a name no other tool uses.")));
    if (MyReplicationSlot->data.invalidated_at != InvalidXLogRecPtr &&
        MyReplicationSlot->data.restart_lsn == InvalidXLogRecPtr)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("replication slot \"%s\" was invalidated: it fell behind "
                        "max_slot_wal_keep_size and the WAL it needed is gone",
                        name),
                 errhint("Changes were lost. Set pgsink.auto_resync = on, or drop the slot with "
                         "SELECT pg_drop_replication_slot('%s') and call pgsink.resync(); raise "
                         "max_slot_wal_keep_size to avoid this.",
                         name)));

    confirmed_ = MyReplicationSlot->data.confirmed_flush;
    /*
     * The spool may hold transactions the slot had not confirmed when the
     * server stopped (a slot's position is saved lazily): decoding starts
     * after them, so none is written twice.
     */
    XLogRecPtr spooled = spool_.open(confirmed_);

    MemoryContext old = MemoryContextSwitchTo(cxt_);
    worker_consumer = this;
    ctx_ = CreateDecodingContext(spooled > confirmed_ ? spooled : InvalidXLogRecPtr, NIL, false,
                                 wal_reader_routine(), unused_prepare_write, unused_write, nullptr);
    MemoryContextSwitchTo(old);
    if (spooled > confirmed_) {
        LogicalConfirmReceivedLocation(spooled);
        ReplicationSlotMarkDirty();
        confirmed_ = spooled;
    }

    /* Decoding starts at restart_lsn so that every transaction after confirmed_flush is whole. */
    XLogBeginRead(ctx_->reader, MyReplicationSlot->data.restart_lsn);
    caches_need_reset_ = true;

    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->state = WorkerState::streaming;
    shared->confirmed_lsn = confirmed_;
    strlcpy(shared->slot_name, name, NAMEDATALEN);
    LWLockRelease(shared_lock);
    ereport(LOG, (errmsg("pgsink: streaming from slot \"%s\" at %X/%X to the spool in \"%s\"", name,
                         static_cast<uint32>(confirmed_ >> 32), static_cast<uint32>(confirmed_),
                         guc_spool_directory)));
}

long Stream::step()
{
    if (!running())
        start();
    use_stream_resource_owner();
    remove_delivered_segments();
    if (spool_full() || paused()) {
        /* What the spool's thread is making durable is confirmed before the wait. */
        if (spool_.wait_durable())
            confirm_durable(false);
        return guc_poll_interval_ms * 10; /* delivery workers or pgsink.resume() wake us */
    }
    if (caches_need_reset_) {
        /* Drop catalog cache entries built outside historic snapshots. */
        InvalidateSystemCaches();
        set_in_logical_decoding(true);
        caches_need_reset_ = false;
    }

    XLogRecPtr end = GetFlushRecPtr(nullptr);
    TimestampTz deadline =
        TimestampTzPlusMilliseconds(GetCurrentTimestamp(), guc_flush_interval_ms);
    uint32 records = 0;
    while (ctx_->reader->EndRecPtr < end) {
        decode_next_record(ctx_);
        /*
         * Deliver what we have after flush_interval, or once a round holds
         * kRoundBytes: latency stays bounded during catch-up, and delivery
         * workers copy each round while the next is decoded.
         */
        if ((++records & 255) == 0) {
            if (spool_.unsynced_bytes() + batch_.size() >= kRoundBytes ||
                GetCurrentTimestamp() >= deadline)
                break;
            /* A round the spool's thread made durable meanwhile: delivery can start on it. */
            if (spool_.reap())
                confirm_durable(true);
        }
    }
    bool caught_up = ctx_->reader->EndRecPtr >= end;
    caught_up_ = caught_up;
    /*
     * Caught up, the round is waited for (the stream sleeps next, and
     * latency counts); while catching up, decoding goes on as the spool's
     * thread makes it durable.
     */
    persist_and_confirm(ctx_->reader->EndRecPtr, caught_up);

    /*
     * Imports run between rounds, one chunk at a time, and only when the
     * stream is caught up: streamed changes wait for at most one chunk read
     * (pgsink.import_chunk_time).
     */
    if (importer_.ready_to_persist(confirmed_)) {
        before_catalog_access();
        importer_.after_confirm(confirmed_);
    }
    if (caught_up && !importer_.busy() && importer_.due()) {
        before_catalog_access();
        if (importer_.read_next_chunk())
            return 0; /* decode up to its high watermark at once */
    }
    return caught_up ? guc_poll_interval_ms : 0;
}

void Stream::stop()
{
    if (ctx_ != nullptr) {
        FreeDecodingContext(ctx_);
        ctx_ = nullptr;
        InvalidateSystemCaches();
    }
    set_in_logical_decoding(false); /* the worker's next transactions are ordinary ones */
    caches_need_reset_ = false;
    worker_consumer = nullptr;
    importer_.reset();
    if (MyReplicationSlot != nullptr)
        ReplicationSlotRelease();
    spool_.close();
    batch_.clear();
    entry_start_ = 0;
    batch_entries_ = 0;
    /* Written but not confirmed: cut at the next open and decoded again. */
    table_counts_.clear();
    paused_since_ = 0;
    unsynced_entries_ = 0;
    unsynced_txns_ = 0;
    unsynced_commit_time_ = 0;
    unconfirmed_.clear();
}

void Stream::before_catalog_access()
{
    if (running()) {
        InvalidateSystemCaches();
        set_in_logical_decoding(false);
        caches_need_reset_ = true;
    }
}

long stream_step()
{
    return stream().step();
}

bool stream_running()
{
    return the_stream != nullptr && the_stream->running();
}

void stream_stop()
{
    if (the_stream)
        the_stream->stop();
}

void stream_before_catalog_access()
{
    if (the_stream)
        the_stream->before_catalog_access();
}

void stream_extension_dropped()
{
    stream_stop();
    ReplicationSlot *slot = SearchNamedReplicationSlot(guc_slot_name, true);
    if (slot == nullptr)
        return;
    SpinLockAcquire(&slot->mutex);
    bool ours =
        slot->data.database == MyDatabaseId && strcmp(NameStr(slot->data.plugin), "pgsink") == 0;
    SpinLockRelease(&slot->mutex);
    if (!ours)
        return;
    /* Nobody consumes this slot any more: drop it rather than let it hold WAL. */
    ReplicationSlotDrop(guc_slot_name, true);
    ereport(LOG, (errmsg("pgsink: dropped replication slot \"%s\": extension pgsink was dropped",
                         guc_slot_name)));
}

} // namespace pgsink

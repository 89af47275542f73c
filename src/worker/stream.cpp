/*
 * stream.cpp: decode the slot, deliver to the sink, confirm what is durable.
 *
 * The worker keeps one decoding context for its lifetime (as a walsender
 * does) and decodes up to the flushed WAL position, as
 * pg_logical_slot_get_changes() does. Entries fill a batch; a full batch is
 * written to the sink at once, even in the middle of a transaction, so
 * memory stays bounded; after each round the sink makes everything durable
 * and only then does the slot confirm the position decoded up to. A crash
 * anywhere replays from the slot's confirmed position, and the sink drops
 * what it holds past it (see sinks/file_sink.cpp).
 */
#include <cstring>
#include <memory>
#include <string>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/shared_state.h"
#include "decoding/entry_consumer.h"
#include "decoding/slot.h"
#include "imports/importer.h"
#include "sinks/sink_factory.h"
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

static constexpr long kFirstRetryMs = 100;
/* While a sink keeps failing, repeat the warning at most this often. */
static constexpr long kRepeatWarningMs = 60000;

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
    void entry_done() override;
    void commit(const TxnMeta &txn, uint64 entries) override;

    bool running() const { return ctx_ != nullptr; }
    void start();
    long step();
    void stop();
    void before_catalog_access();

  private:
    void open_sink();
    void reopen_if_sink_settings_changed();
    void check_sink_between_rounds();
    void write_batch();
    void deliver_and_confirm(XLogRecPtr decoded_upto);
    template <typename F> void with_retry(F &&f);

    LogicalDecodingContext *ctx_ = nullptr;
    Importer importer_;
    MemoryContext cxt_ = nullptr;
    std::unique_ptr<Sink> sink_;
    std::string sink_settings_; /* the settings sink_ was made with */
    std::string batch_;
    uint64 batch_entries_ = 0;
    /* Written to the sink but not yet durable (counted as delivered after sync). */
    uint64 unsynced_entries_ = 0;
    uint64 unsynced_txns_ = 0;
    TimestampTz unsynced_commit_time_ = 0;
    XLogRecPtr confirmed_ = InvalidXLogRecPtr;
    bool caches_need_reset_ = false;
    bool sink_failing_ = false;
    char last_warning_[kErrorLen] = "";
    TimestampTz last_warning_at_ = 0;
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
bool stream_restart_for_reload = false;

/*
 * Thrown out of a retry wait to restart the stream in place (a reload). In
 * the middle of decoding (a batch filled inside a transaction) the output
 * plugin's boundary turns it into an ERROR with this message: the worker
 * restarts instead, which applies the new configuration too.
 */
struct StreamRestart : std::runtime_error {
    StreamRestart()
        : std::runtime_error("configuration reloaded while the sink was failing; restarting the "
                             "stream to apply it")
    {
    }
};

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

/*
 * Run a sink operation; retry a retryable failure with exponential back-off
 * until it succeeds, keeping the error in pgsink.status(). Interrupts
 * (SIGTERM) are served while waiting. Non-retryable errors propagate.
 */
template <typename F> void Stream::with_retry(F &&f)
{
    long backoff_ms = kFirstRetryMs;
    for (;;) {
        char message[kErrorLen];
        bool failed = false;
        try {
            f();
        } catch (const SinkError &e) {
            if (!e.retryable())
                throw;
            strlcpy(message, e.what(), sizeof(message));
            failed = true;
        }
        if (!failed) {
            if (sink_failing_) {
                sink_failing_ = false;
                set_worker_state(WorkerState::streaming);
                clear_error();
                ereport(LOG, (errmsg("pgsink: the sink has recovered")));
            }
            return;
        }

        sink_failing_ = true;
        TimestampTz now = GetCurrentTimestamp();
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        strlcpy(shared->last_error, message, sizeof(shared->last_error));
        shared->last_error_at = now;
        shared->sink_error = true; /* cleared once the sink works again */
        shared->state = WorkerState::sink_retrying;
        shared->sink_retry_at = TimestampTzPlusMilliseconds(now, backoff_ms);
        LWLockRelease(shared_lock);
        if (strcmp(message, last_warning_) != 0 ||
            TimestampDifferenceExceeds(last_warning_at_, now, kRepeatWarningMs)) {
            ereport(WARNING, (errmsg("pgsink: %s", message),
                              errdetail("Nothing is lost: the slot keeps the changes until the "
                                        "sink accepts them. Retrying with back-off.")));
            strlcpy(last_warning_, message, sizeof(last_warning_));
            last_warning_at_ = now;
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, backoff_ms,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            /*
             * A fix may be in the new configuration: restart the stream
             * (from the slot's confirmed position) to apply it.
             */
            stream_restart_for_reload = true;
            throw StreamRestart();
        }
        backoff_ms = std::min<long>(backoff_ms * 2, guc_retry_max_interval_ms);
    }
}

void Stream::entry_done()
{
    batch_.push_back('\n');
    batch_entries_++;
    if (batch_.size() >= static_cast<size_t>(guc_batch_bytes_kb) * 1024 ||
        batch_entries_ >= static_cast<uint64>(guc_batch_rows))
        write_batch();
}

void Stream::commit(const TxnMeta &txn, uint64 entries)
{
    unsynced_txns_++;
    unsynced_commit_time_ = txn.commit_time;
}

/* Hand the batch to the sink (not yet durable), and free its memory if a huge row grew it. */
void Stream::write_batch()
{
    if (batch_.empty())
        return;
    with_retry([&] { sink_->write(batch_.data(), batch_.size()); });
    unsynced_entries_ += batch_entries_;
    batch_entries_ = 0;
    size_t limit = static_cast<size_t>(guc_batch_bytes_kb) * 1024;
    if (batch_.capacity() > 2 * limit)
        std::string().swap(batch_);
    else
        batch_.clear();
}

void Stream::deliver_and_confirm(XLogRecPtr decoded_upto)
{
    write_batch();
    sink_->sync(); /* a failed fsync is never retried in place: see file_sink.cpp */

    bool advanced = decoded_upto > confirmed_;
    if (advanced) {
        LogicalConfirmReceivedLocation(decoded_upto);
        ReplicationSlotMarkDirty();
        confirmed_ = decoded_upto;
    }

    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->confirmed_lsn = confirmed_;
    shared->entries_delivered += unsynced_entries_;
    shared->transactions_delivered += unsynced_txns_;
    if (unsynced_commit_time_ != 0)
        shared->last_commit_time = unsynced_commit_time_;
    if (!sink_failing_) {
        shared->state = WorkerState::streaming;
        /* Healthy: the slot moved, past where the last failure was. */
        if (advanced && confirmed_ > shared->failed_at)
            shared->worker_streamed = true;
    }
    /* The worker streams again after failing: the failure is over. */
    bool recovered = !sink_failing_ && shared->same_failures > 0 && confirmed_ > shared->failed_at;
    LWLockRelease(shared_lock);
    if (recovered) {
        clear_error();
        clear_problem(ProblemKind::stuck);
    }
    unsynced_entries_ = 0;
    unsynced_txns_ = 0;
    unsynced_commit_time_ = 0;
}

void Stream::open_sink()
{
    sink_ = make_sink();
    sink_settings_ = sink_settings();
    with_retry([&] { sink_->open(confirmed_); });
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
    bool slot_missing = SearchNamedReplicationSlot(name, true) == nullptr;
    int64 newest_job = 0;
    int64 captured = slot_missing ? count_captured_tables(&newest_job) : 0;
    bool created = ensure_slot(name);
    CommitTransactionCommand();
    use_stream_resource_owner();
    ReplicationSlotAcquire(name, true);
    if (created && captured > 0)
        report_lost_slot(name, captured, MyReplicationSlot->data.confirmed_flush, newest_job);
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
                 errhint("Changes were lost. Drop the slot with SELECT "
                         "pg_drop_replication_slot('%s'), then re-import the captured tables; "
                         "raise max_slot_wal_keep_size to avoid this.",
                         name)));

    confirmed_ = MyReplicationSlot->data.confirmed_flush;
    open_sink();
    clear_sink_error(); /* the sink works (again): an earlier stream's or worker's is over */

    MemoryContext old = MemoryContextSwitchTo(cxt_);
    worker_consumer = this;
    ctx_ = CreateDecodingContext(InvalidXLogRecPtr, NIL, false, wal_reader_routine(),
                                 unused_prepare_write, unused_write, nullptr);
    MemoryContextSwitchTo(old);

    /* Decoding starts at restart_lsn so that every transaction after confirmed_flush is whole. */
    XLogBeginRead(ctx_->reader, MyReplicationSlot->data.restart_lsn);
    caches_need_reset_ = true;

    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->state = WorkerState::streaming;
    shared->confirmed_lsn = confirmed_;
    strlcpy(shared->slot_name, name, NAMEDATALEN);
    LWLockRelease(shared_lock);
    ereport(LOG, (errmsg("pgsink: streaming from slot \"%s\" at %X/%X to %s", name,
                         static_cast<uint32>(confirmed_ >> 32), static_cast<uint32>(confirmed_),
                         sink_->describe().c_str())));
}

/* After a reload that changed the sink's settings: a new sink (a new file). */
void Stream::reopen_if_sink_settings_changed()
{
    if (sink_settings() == sink_settings_)
        return;
    std::string old = sink_->describe();
    write_batch();
    sink_->sync();
    sink_->close();
    open_sink();
    ereport(LOG, (errmsg("pgsink: the sink's settings changed: from %s to %s", old.c_str(),
                         sink_->describe().c_str())));
    forget_sent_schemas();
}

/*
 * Everything written is confirmed here: the sink may look at its
 * destination (a file moved away, deleted, truncated). A method of its own,
 * so that its strings are gone before decoding, whose ERRORs jump.
 */
void Stream::check_sink_between_rounds()
{
    Sink::Notice notice = sink_->between_rounds();
    if (notice.level == Sink::Notice::Level::warning) {
        ereport(WARNING, (errmsg("pgsink: %s", notice.message.c_str()),
                          errdetail("%s", notice.detail.c_str())));
        record_error(notice.message.c_str());
    } else if (notice.level == Sink::Notice::Level::log) {
        ereport(LOG, (errmsg("pgsink: %s", notice.message.c_str())));
    }
    if (notice.reopen) {
        with_retry([&] { sink_->open(confirmed_); });
        forget_sent_schemas(); /* a new destination: announce every schema again */
    }
}

long Stream::step()
{
    if (!running())
        start();
    reopen_if_sink_settings_changed();
    check_sink_between_rounds();
    use_stream_resource_owner();
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
        if ((++records & 1023) == 0 && GetCurrentTimestamp() >= deadline)
            break; /* deliver what we have: latency stays bounded during catch-up */
    }
    bool caught_up = ctx_->reader->EndRecPtr >= end;
    deliver_and_confirm(ctx_->reader->EndRecPtr);

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
    if (sink_)
        sink_->close();
    batch_.clear();
    batch_entries_ = 0;
    /* Written but not confirmed: cut at the next open and decoded again. */
    unsynced_entries_ = 0;
    unsynced_txns_ = 0;
    unsynced_commit_time_ = 0;
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
    try {
        return stream().step();
    } catch (const StreamRestart &) {
        stream_restart_for_reload = false; /* caught between rounds: restarted in place */
        ereport(LOG, (errmsg("pgsink: configuration reloaded while the sink was failing; "
                             "restarting the stream from the slot's confirmed position to "
                             "apply it")));
        stream_stop();
        return 0;
    }
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

/*
 * delivery.cpp: one sink's delivery from the spool.
 *
 * The cursor (spool/sink_cursor.h) is the single source of truth for
 * spool -> sink: a batch of whole lines is read from it, up to the durable
 * end the stream worker published, written to the sink and made durable
 * there (sync), and only then is the cursor saved, with the sink's own
 * state (the file sink: its file's identity and size). A crash anywhere
 * re-delivers from the cursor, and the file sink cuts back to it first:
 * exactly once. Other sinks get each entry at least once, with its
 * (lsn, sequence) to make it idempotent.
 *
 * An AppendSink (the file) is written batch by batch. An HttpSink keeps up
 * to pgsink.max_in_flight requests open (http/http_pipeline.h) while the
 * next batches are read; the window (http/delivery_window.h) tracks them,
 * and the cursor advances past its contiguous prefix of acknowledged
 * batches. The worker waits on its latch and the requests' sockets
 * together, so SIGTERM and SIGHUP are served at once.
 *
 * A retryable sink error is retried here, with exponential back-off, while
 * the spool keeps the entries: no other sink and no decoding waits for it.
 * Any other error ends the worker; the launcher restarts it with back-off.
 * Never in a transaction, never inside decoding.
 */
#include <algorithm>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>
#include <string>
#include <unordered_map>

#include "boundary/pg_boundary.h"
#include "changelog/entry_head.h"
#include "core/config.h"
#include "core/digest.h"
#include "core/pause.h"
#include "core/shared_state.h"
#include "http/request_prefetch.h"
#include "worker/batch_read_ahead.h"
#include "sinks/sink_factory.h"
#include "spool/sink_cursor.h"
#include "spool/spool_reader.h"
#include "worker/delivery.h"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

static constexpr long kFirstRetryMs = 100;
/* While a sink keeps failing, repeat the warning at most this often. */
static constexpr long kRepeatWarningMs = 60000;
/* A sink that cannot refuse entries is written in pieces of this size (see deliver()). */
static constexpr size_t kPieceBytes = 256 * 1024;
/* An idle worker looks at the spool at least this often (it is woken sooner). */
static constexpr long kIdleWaitMs = 1000;
/*
 * Requests are made ahead (http/request_prefetch.h) for batches of this size
 * and more (a thread for a small one costs more than it saves), and used if
 * at most HttpSink::made_ahead_max_age_ms() old.
 */
static constexpr size_t kPrefetchMinBytes = 64 * 1024;

/* The sink must be made again (new settings) or opened again at the cursor. */
struct Reopen : std::exception {
    const char *what() const noexcept override { return "pgsink: the sink is opened again"; }
};
/* The sink is no longer in pgsink.sink: the worker ends. */
struct Unlisted : std::exception {
    const char *what() const noexcept override { return "pgsink: the sink is not listed"; }
};

class Delivery
{
  public:
    Delivery(int slot, std::string name)
        : slot_(slot), name_(std::move(name)), dir_(spool::directory()), cursor_file_(dir_, name_),
          reader_(dir_)
    {
        live_prefetch = prefetch_;
        live_read_ahead = &read_ahead_;
    }
    ~Delivery()
    {
        live_prefetch = nullptr;
        live_read_ahead = nullptr;
    }
    Delivery(const Delivery &) = delete;
    Delivery &operator=(const Delivery &) = delete;
    void run();
    /* The prefetches of the Delivery of this process, joined at exit (prefetch_at_exit()). */
    static RequestPrefetch *live_prefetch;
    static constexpr int kPrefetches = 2;
    /* The same for its read-ahead. */
    static BatchReadAhead *live_read_ahead;

  private:
    SpoolShared durable() const;
    void wait(long ms);
    void reload();
    bool rewind_pending() const;
    void position_cursor();
    void open_sink();
    void reopen_sink();
    std::string schemas_before(std::string_view batch, uint64_t offset);
    void deliver(const SpoolShared &d);
    void start_http();
    void reset_window();
    WindowPolicy window_policy() const;
    size_t max_in_flight() const;
    HttpSink::Exchange::Earlier earlier_of(uint64_t id) const;
    void read_range(const SpoolShared &d);
    void http_round(const SpoolShared &d, bool paused);
    void send_due(size_t max, bool serve = true);
    void prefetch_next();
    RequestPrefetch *prefetch_of(uint64_t id);
    void drop_wait_set();
    void refuse_batch(uint64_t id, const std::string &why);
    void take_outcome(const DeliveryWindow::Outcome &o);
    bool is_paused();
    void wait_for_sockets(long timeout_ms);
    void serve_interrupts();
    void advance(const SpoolShared &d);
    void failing(const std::string &message, long delay_ms);
    void recovered();
    void park(const std::string &entry, int status, const std::string &response);
    void retry_parked();
    void forget_parked(const std::vector<int64> &ids, const std::vector<int32> &attempts);
    void apply_rewind();
    void check_between_rounds();
    void save();
    void publish(SinkState state);
    void needs_reimport(const std::string &why);
    template <typename F> void with_retry(F &&f);
    SinkSlot &slot() const { return shared->sinks[slot_]; }
    /* The spool's reader, once the batch read ahead with it is dropped. */
    spool::Reader &reader()
    {
        read_ahead_.cancel();
        return reader_;
    }

    int slot_;
    std::string name_, dir_;
    spool::CursorFile cursor_file_;
    spool::Reader reader_;
    spool::Cursor cursor_;
    uint64_t first_lsn_ = 0; /* for a sink without state: where its entries start */
    /*
     * The sink must first be told the Schema entries in effect at the
     * cursor (a new sink, a new file, a rewind). Saved with the cursor, so
     * that a restart before the announcement still makes it.
     */
    bool announce_ = false;
    bool new_destination_ = false; /* the sink said its destination is new (a rotated file) */
    std::unique_ptr<Sink> sink_;
    HttpSink *http_ = nullptr; /* sink_, when it is an HttpSink */
    std::unique_ptr<HttpPipeline> pipeline_;
    std::unique_ptr<DeliveryWindow> window_;
    /* The exchange of each batch in flight, by the batch's id. */
    std::unordered_map<uint64_t, std::unique_ptr<HttpSink::Exchange>> exchanges_;
    /* What each range in window_ covers, in the same order. */
    struct RangeInfo {
        uint64_t bytes = 0, entries = 0; /* of the spool */
        int64_t last_ts = 0;             /* commit time of its last entry, if have_ts */
        bool have_ts = false;
        bool schemas = false;        /* it carries the schemas owed (announce_) */
        std::vector<int64> parked;   /* entries sent again from pgsink.dead_letters: their ids */
        std::vector<int32> attempts; /* ... and attempts when read */
    };
    std::deque<RangeInfo> ranges_;
    uint64_t read_end_ = 0; /* the spool is read into the window up to here */
    MemoryContext wait_context_ = nullptr;
    /* The latch and the requests' sockets, kept between waits while the sockets stay the same. */
    WaitEventSet *wait_set_ = nullptr;
    uint64_t wait_set_generation_ = 0;
    std::vector<HttpPipeline::Wait> wait_set_sockets_;
    std::string settings_;
    uint64 delivered_entries_ = 0, delivered_bytes_ = 0; /* not yet published */
    bool failing_ = false;
    bool paused_ = false;
    TimestampTz retry_checked_at_ = 0;
    std::string last_warning_;
    TimestampTz last_warning_at_ = 0;
    /* After reader_: stopped before the reader it uses. */
    BatchReadAhead read_ahead_;
    /*
     * Last: they are stopped first, before the window and the sink they
     * read. Two: the requests of the next two batches are made at once (on
     * two cores, signing one batch while the one before is sent left a
     * core idle whenever sending was quicker).
     */
    RequestPrefetch prefetch_[kPrefetches];
};

/* A snapshot of what the spool made durable. */
SpoolShared Delivery::durable() const
{
    LWLockAcquire(shared_lock, LW_SHARED);
    SpoolShared d = shared->spool;
    LWLockRelease(shared_lock);
    return d;
}

/*
 * Sleep on the latch. Interrupts are served here: SIGTERM ends the process
 * (FATAL); an ERROR (a cancel) becomes an exception, so that it unwinds
 * this C++ code before PostgreSQL sees it.
 */
void Delivery::wait(long ms)
{
    pg_call([ms] {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    });
}

/* After SIGHUP: a sink no longer listed stops; new settings re-make the sink. */
void Delivery::reload()
{
    if (!ConfigReloadPending)
        return;
    ConfigReloadPending = false;
    pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
    if (!sink_configured(name_.c_str()))
        throw Unlisted();
    if (sink_ && sink_settings(name_) != settings_)
        throw Reopen();
    if (window_)
        window_->set_policy(window_policy());
}

bool Delivery::rewind_pending() const
{
    LWLockAcquire(shared_lock, LW_SHARED);
    bool pending = slot().rewind_requests != slot().rewind_applied;
    LWLockRelease(shared_lock);
    return pending;
}

/* The sink failed; the next attempt is in delay_ms: say so in the status and (not too often) the
 * log. */
void Delivery::failing(const std::string &message, long delay_ms)
{
    failing_ = true;
    TimestampTz now = GetCurrentTimestamp();
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    strlcpy(slot().last_error, message.c_str(), kErrorLen);
    slot().last_error_at = now;
    slot().state = SinkState::retrying;
    slot().errors++;
    slot().retries++;
    slot().retry_at = TimestampTzPlusMilliseconds(now, delay_ms);
    LWLockRelease(shared_lock);
    if (message != last_warning_ ||
        TimestampDifferenceExceeds(last_warning_at_, now, kRepeatWarningMs)) {
        ereport(WARNING,
                (errmsg("pgsink: sink \"%s\": %s", name_.c_str(), message.c_str()),
                 errdetail("Nothing is lost: the spool keeps the entries until the sink "
                           "accepts them. Retrying with back-off; other sinks and decoding "
                           "go on.")));
        last_warning_ = message;
        last_warning_at_ = now;
    }
}

void Delivery::recovered()
{
    if (!failing_)
        return;
    failing_ = false;
    ereport(LOG, (errmsg("pgsink: sink \"%s\" has recovered", name_.c_str())));
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    slot().last_error[0] = '\0';
    slot().last_error_at = 0;
    slot().retry_at = 0;
    LWLockRelease(shared_lock);
}

template <typename F> void Delivery::with_retry(F &&f)
{
    long backoff_ms = kFirstRetryMs;
    for (;;) {
        std::string message;
        try {
            f();
            recovered();
            return;
        } catch (const SinkError &e) {
            if (!e.retryable())
                throw;
            message = e.what();
        }
        /*
         * Full jitter over the exponential back-off, so that sinks retrying
         * together do not stay in step.
         */
        long delay_ms = 1 + static_cast<long>(pg_prng_double(&pg_global_prng_state) *
                                              static_cast<double>(backoff_ms));
        failing(message, delay_ms);
        wait(delay_ms);
        reload(); /* a fix may be in the new configuration */
        backoff_ms = std::min<long>(backoff_ms * 2, guc_retry_max_interval_ms);
    }
}

/* Save the cursor durably (with the sink's state and whether schemas are owed), then publish it. */
void Delivery::save()
{
    if (sink_)
        cursor_.sink_state = sink_->state();
    cursor_.announce = announce_;
    cursor_file_.save(cursor_);
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    SinkSlot &s = slot();
    s.cursor_valid = true;
    s.spool_id = cursor_.spool_id;
    s.cursor = cursor_.offset;
    s.cursor_entries = cursor_.entries;
    s.delivered_lsn = cursor_.delivered_lsn;
    s.delivered_commit_time = cursor_.delivered_time;
    LWLockRelease(shared_lock);
    announce_progress();
}

/* Counters and state after a batch. */
void Delivery::publish(SinkState state)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    SinkSlot &s = slot();
    s.entries_delivered += delivered_entries_;
    s.bytes_delivered += delivered_bytes_;
    s.state = state;
    s.streamed = s.streamed || delivered_entries_ > 0;
    bool full = shared->spool.full;
    LWLockRelease(shared_lock);
    delivered_entries_ = delivered_bytes_ = 0;
    if (full)
        wake_worker(); /* the stream worker removes delivered segments, and resumes */
}

/* Stop delivering and say why, until pgsink.rewind_sink() gives a new cursor. */
void Delivery::needs_reimport(const std::string &why)
{
    ereport(WARNING,
            (errmsg("pgsink: sink \"%s\" cannot resume: %s", name_.c_str(), why.c_str()),
             errhint("Run SELECT pgsink.rewind_sink('%s', '-infinity') to deliver from the "
                     "oldest entry the spool holds, and pgsink.reimport() the captured tables "
                     "to fill the gap.",
                     name_.c_str())));
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    slot().state = SinkState::needs_reimport;
    strlcpy(slot().last_error, why.c_str(), kErrorLen);
    slot().last_error_at = GetCurrentTimestamp();
    LWLockRelease(shared_lock);
    while (!rewind_pending()) {
        wait(kIdleWaitMs);
        reload();
    }
}

/*
 * Where this sink resumes: its saved cursor, or (a new sink) the oldest
 * entry the spool holds. A pending rewind applies to the saved cursor (the
 * sink keeps its state: the file is not cut). When the cursor cannot be
 * used, the worker waits for a rewind (see needs_reimport()).
 */
void Delivery::position_cursor()
{
    SpoolShared d = durable();
    spool::Cursor c;
    bool have = cursor_file_.load(&c);
    if (have) {
        cursor_ = c;
        announce_ = c.announce;
    }
    if (rewind_pending()) {
        apply_rewind();
        return;
    }
    if (!have) {
        spool::Position p = reader().oldest();
        cursor_ = spool::Cursor();
        cursor_.spool_id = d.id;
        cursor_.offset = p.offset;
        cursor_.entries = p.entries;
        first_lsn_ = p.lsn;
        announce_ = true;
        ereport(LOG, (errmsg("pgsink: sink \"%s\" starts at the oldest entry in the spool "
                             "(offset %llX)",
                             name_.c_str(), static_cast<unsigned long long>(p.offset))));
        save(); /* from now on the spool keeps what it has not delivered */
        return;
    }
    char why[256];
    if (c.spool_id != d.id)
        snprintf(why, sizeof(why),
                 "the spool was made anew since it last delivered (its identity changed), so "
                 "entries may be missing");
    else if (c.offset < d.oldest_offset)
        snprintf(why, sizeof(why),
                 "entries from spool offset %llX to %llX were removed before it delivered them "
                 "(it was not in pgsink.sink meanwhile?)",
                 static_cast<unsigned long long>(c.offset),
                 static_cast<unsigned long long>(d.oldest_offset));
    else if (c.offset > d.durable_end)
        snprintf(why, sizeof(why),
                 "its cursor (offset %llX) is past the end of the spool (%llX): the spool lost "
                 "entries it had made durable",
                 static_cast<unsigned long long>(c.offset),
                 static_cast<unsigned long long>(d.durable_end));
    else {
        first_lsn_ = 0;
        save(); /* publish it: the stream worker keeps what it has not delivered */
        return;
    }
    needs_reimport(why);
    apply_rewind();
}

/*
 * Apply pgsink.rewind_sink(): a new cursor, published (and saved) before
 * anything else, so the spool keeps the segments from there on; the sink
 * keeps its state (its destination is the same) and is told the schemas.
 */
void Delivery::apply_rewind()
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    if (slot().rewind_requests == slot().rewind_applied) {
        LWLockRelease(shared_lock);
        return;
    }
    uint64 offset = slot().rewind_offset, entries = slot().rewind_entries;
    uint64 id = shared->spool.id;
    /* Published with the request's end: the spool keeps the target from here on. */
    slot().rewind_applied = slot().rewind_requests;
    slot().cursor_valid = true;
    slot().spool_id = id;
    slot().cursor = offset;
    slot().cursor_entries = entries;
    LWLockRelease(shared_lock);
    cursor_.spool_id = id;
    cursor_.offset = offset;
    cursor_.entries = entries;
    cursor_.delivered_lsn = 0;
    cursor_.delivered_time = 0;
    cursor_.replays++; /* the replay's batches get ids of their own */
    announce_ = true;
    reset_window(); /* requests in flight are abandoned: delivery starts over from there */
    save();
    ereport(LOG, (errmsg("pgsink: sink \"%s\" rewound to spool offset %llX", name_.c_str(),
                         static_cast<unsigned long long>(offset))));
}

void Delivery::open_sink()
{
    sink_ = make_sink(name_);
    http_ = dynamic_cast<HttpSink *>(sink_.get());
    settings_ = sink_settings(name_);
    Sink::Resume from;
    from.state = cursor_.sink_state;
    from.first_lsn = first_lsn_ != 0 ? first_lsn_ : reader().lsn_at(cursor_.offset);
    bool fresh = false;
    with_retry([&] { fresh = sink_->open(from); });
    if (fresh || cursor_.sink_state.empty()) {
        /* Its state from now on (a new file), saved before anything is delivered into it. */
        announce_ = announce_ || fresh;
        save();
    }
    start_http();
    ereport(LOG,
            (errmsg("pgsink: sink \"%s\" delivers to %s from spool offset %llX", name_.c_str(),
                    sink_->describe().c_str(), static_cast<unsigned long long>(cursor_.offset))));
}

/* After Reopen: everything delivered is acknowledged; a new sink, or the same one opened again. */
void Delivery::reopen_sink()
{
    if (!sink_)
        return;
    if (sink_settings(name_) != settings_) {
        std::string old = sink_->describe();
        reset_window();
        pipeline_.reset();
        window_.reset();
        sink_->close();
        sink_.reset();
        http_ = nullptr;
        ereport(LOG, (errmsg("pgsink: sink \"%s\"'s settings changed: it was %s", name_.c_str(),
                             old.c_str())));
        return; /* open_sink() makes the new one */
    }
    reset_window();
    Sink::Resume from;
    from.state = cursor_.sink_state;
    bool fresh = false;
    with_retry([&] { fresh = sink_->open(from); });
    if (fresh || new_destination_) {
        new_destination_ = false;
        announce_ = true;
        save();
    }
}

/*
 * A new destination, a new sink or a rewind: the Schema entries in effect at
 * the cursor go first, in the same write as the batch they precede, with
 * that batch's first timestamp and lsn (entries stay in order).
 */
std::string Delivery::schemas_before(std::string_view batch, uint64_t offset)
{
    std::string out;
    /* A reader of its own: reader_'s buffer holds the batch. */
    std::string schemas = spool::Reader(dir_).schemas_at(offset);
    size_t first_end = batch.find('\n');
    size_t at = 0;
    while (at < schemas.size()) {
        size_t nl = schemas.find('\n', at);
        if (!restamp_schema_line(schemas.data() + at, nl - at, batch.data(), first_end, out))
            out.append(schemas, at, nl - at); /* as it was: never drop a schema */
        out.push_back('\n');
        at = nl + 1;
    }
    return out;
}

/*
 * Run f (SPI calls) in a short transaction of its own, with a snapshot, as
 * the delivery worker does between network calls: never across them.
 * PostgreSQL code only: an ERROR becomes an exception (pg_call).
 */
template <typename F> static void in_transaction(F &&f)
{
    pg_call([&] {
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        f();
        PopActiveSnapshot();
        SPI_finish();
        CommitTransactionCommand();
    });
}

/* Park one refused entry (without its newline), in a transaction of its own. */
void Delivery::park(const std::string &entry, int status, const std::string &response)
{
    std::string key = sha256_hex(entry);
    uint64_t lsn = 0;
    char lsn_text[32] = "";
    if (line_lsn(entry.data(), entry.size(), &lsn))
        snprintf(lsn_text, sizeof(lsn_text), "%X/%X", static_cast<unsigned>(lsn >> 32),
                 static_cast<unsigned>(lsn));
    std::string table;
    bool has_table = line_table(entry.data(), entry.size(), &table);
    const char *sink = name_.c_str();
    in_transaction([&] {
        Oid types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
        Datum values[7] = {CStringGetTextDatum(sink),
                           CStringGetTextDatum(entry.c_str()),
                           CStringGetTextDatum(key.c_str()),
                           lsn_text[0] ? CStringGetTextDatum(lsn_text) : (Datum)0,
                           has_table ? CStringGetTextDatum(table.c_str()) : (Datum)0,
                           Int32GetDatum(status),
                           CStringGetTextDatum(response.c_str())};
        char nulls[7] = {' ', ' ', ' ', lsn_text[0] ? ' ' : 'n', has_table ? ' ' : 'n', ' ', ' '};
        int rc = SPI_execute_with_args(
            "INSERT INTO pgsink.dead_letters AS d "
            "  (sink, entry, entry_key, lsn, \"table\", http_status, response) "
            "VALUES ($1, $2, $3, $4::pg_catalog.pg_lsn, $5, $6, $7) "
            "ON CONFLICT (sink, entry_key) DO UPDATE SET "
            "  attempts = d.attempts OPERATOR(pg_catalog.+) 1, "
            "  last_failed_at = pg_catalog.now(), http_status = excluded.http_status, "
            "  response = excluded.response, retry_requested = false",
            7, types, values, nulls, false, 0);
        if (rc != SPI_OK_INSERT)
            elog(ERROR, "pgsink: could not park a dead letter: %s", SPI_result_code_string(rc));
    });
    ereport(WARNING,
            (errmsg("pgsink: sink \"%s\" refused an entry for good (HTTP %d); it is parked in "
                    "pgsink.dead_letters",
                    name_.c_str(), status),
             errdetail("Entry at lsn %s of %s; the sink answered: %s", lsn_text[0] ? lsn_text : "?",
                       has_table ? table.c_str() : "?", response.c_str()),
             errhint("Fix the receiver, then SELECT pgsink.retry_dead_letters().")));
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    slot().dead_letters++;
    LWLockRelease(shared_lock);
}

/*
 * When caught up, at most once a second: entries pgsink.retry_dead_letters()
 * asked for are sent again (out of their original order, by nature), as a
 * range of the window of their own; when it is done, those the sink
 * accepted leave the table, and those it refused again stay parked.
 *
 * While schemas are owed (announce_: a new receiver, a sink opened again,
 * a rewind), the Schema entries in effect at the end of what was read go in
 * front of the parked entries (their own may be gone from the spool). They
 * are not held back until a range of the spool carries the schemas: an idle
 * sink (nothing new to read) would never send them.
 */
void Delivery::retry_parked()
{
    TimestampTz now = GetCurrentTimestamp();
    /* Not while parked entries are already out. */
    bool out = std::any_of(ranges_.begin(), ranges_.end(),
                           [](const RangeInfo &r) { return !r.parked.empty(); });
    if (!http_ || out || !TimestampDifferenceExceeds(retry_checked_at_, now, kIdleWaitMs))
        return;
    retry_checked_at_ = now;
    RangeInfo info;
    std::string lines;
    const char *sink = name_.c_str();
    in_transaction([&] {
        Oid types[1] = {TEXTOID};
        Datum values[1] = {CStringGetTextDatum(sink)};
        /* Before ALTER EXTENSION pgsink UPDATE has made the table, there is nothing to send. */
        int rc = SPI_execute_with_args(
            "SELECT id, entry, attempts FROM pgsink.dead_letters "
            "WHERE pg_catalog.to_regclass('pgsink.dead_letters') IS NOT NULL "
            "  AND sink OPERATOR(pg_catalog.=) $1 AND retry_requested ORDER BY id LIMIT 100",
            1, types, values, nullptr, true, 0);
        if (rc != SPI_OK_SELECT)
            elog(ERROR, "pgsink: could not read dead letters: %s", SPI_result_code_string(rc));
        for (uint64 i = 0; i < SPI_processed; i++) {
            bool isnull;
            HeapTuple tup = SPI_tuptable->vals[i];
            int64 id = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
            int32 tries = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
            char *entry = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);
            info.parked.push_back(id);
            info.attempts.push_back(tries);
            lines.append(entry);
            lines.push_back('\n');
        }
    });
    if (info.parked.empty())
        return;
    ereport(LOG, (errmsg("pgsink: sink \"%s\" sends %zu parked entries again", name_.c_str(),
                         info.parked.size())));
    std::string schemas = announce_ ? schemas_before(lines, read_end_) : std::string();
    size_t n =
        info.parked.size() + static_cast<size_t>(std::count(schemas.begin(), schemas.end(), '\n'));
    lines.insert(0, schemas);
    /* A new key for every retry: the receiver must not take it for one it has seen. */
    std::string key = "p";
    for (size_t i = 0; i < info.parked.size(); i++)
        key += "-" + std::to_string(info.parked[i]) + "." + std::to_string(info.attempts[i]);
    key = sha256_hex(key + "@" + std::to_string(now), 16);
    ranges_.push_back(std::move(info));
    Order order = http_->order_of(lines, key, true);
    window_->add(std::move(lines), n, std::move(key), true, order);
}

/* Parked entries sent again are done: those accepted leave the table. */
void Delivery::forget_parked(const std::vector<int64> &ids, const std::vector<int32> &attempts)
{
    in_transaction([&] {
        Datum *id_elems = static_cast<Datum *>(palloc(sizeof(Datum) * ids.size()));
        Datum *try_elems = static_cast<Datum *>(palloc(sizeof(Datum) * ids.size()));
        for (size_t i = 0; i < ids.size(); i++) {
            id_elems[i] = Int64GetDatum(ids[i]);
            try_elems[i] = Int32GetDatum(attempts[i]);
        }
        int n = static_cast<int>(ids.size());
        Oid types[2] = {INT8ARRAYOID, INT4ARRAYOID};
        Datum values[2] = {
            PointerGetDatum(
                construct_array(id_elems, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
            PointerGetDatum(construct_array(try_elems, n, INT4OID, 4, true, TYPALIGN_INT))};
        /*
         * Accepted entries go. One refused again was parked again (its
         * attempts went up): it stays, even if a retry was asked for
         * meanwhile.
         */
        int rc = SPI_execute_with_args(
            "DELETE FROM pgsink.dead_letters d "
            "USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS a(id, attempts) "
            "WHERE d.id OPERATOR(pg_catalog.=) a.id "
            "  AND d.attempts OPERATOR(pg_catalog.=) a.attempts",
            2, types, values, nullptr, false, 0);
        if (rc != SPI_OK_DELETE)
            elog(ERROR, "pgsink: could not remove dead letters: %s", SPI_result_code_string(rc));
    });
}

/* The commit time of a piece's last line, if its head has one. */
static bool last_line_timestamp(std::string_view piece, int64_t *ts)
{
    size_t len = piece.size();
    size_t last = len >= 2 ? piece.rfind('\n', len - 2) : std::string_view::npos;
    last = last == std::string_view::npos ? 0 : last + 1;
    return line_timestamp(piece.data() + last, len - last, ts);
}

/*
 * One batch of an AppendSink from the cursor toward the durable end, written
 * in pieces small enough to be still in the CPU's cache when the kernel
 * copies them, made durable once for the whole batch.
 */
void Delivery::deliver(const SpoolShared &d)
{
    AppendSink *sink = static_cast<AppendSink *>(sink_.get());
    size_t max = static_cast<size_t>(guc_batch_bytes_kb) * 1024;
    uint64_t lines = 0;
    size_t n = 0;
    int64_t ts = 0;
    bool have_ts = false;
    while (n < max && cursor_.offset + n < d.durable_end) {
        uint64_t piece_lines = 0;
        std::string_view piece =
            reader().read(cursor_.offset + n, d.durable_end, kPieceBytes, &piece_lines);
        if (announce_) {
            std::string out = schemas_before(piece, cursor_.offset);
            out.append(piece);
            with_retry([&] { sink->write(out.data(), out.size()); });
            announce_ = false;
        } else {
            with_retry([&] { sink->write(piece.data(), piece.size()); });
        }
        have_ts = last_line_timestamp(piece, &ts) || have_ts;
        n += piece.size();
        lines += piece_lines;
    }
    with_retry([&] { sink->sync(); });
    if (have_ts)
        cursor_.delivered_time = ts;
    cursor_.offset += n;
    cursor_.entries += lines;
    if (cursor_.offset == d.durable_end)
        cursor_.delivered_lsn = std::max<uint64_t>(cursor_.delivered_lsn, d.durable_lsn);
    delivered_entries_ += lines;
    delivered_bytes_ += n;
    save();
    publish(cursor_.offset == d.durable_end ? SinkState::idle : SinkState::delivering);
}

static double jitter_random()
{
    return pg_prng_double(&pg_global_prng_state);
}

WindowPolicy Delivery::window_policy() const
{
    WindowPolicy p;
    p.stop_on_rejection = guc_on_rejection == ON_REJECTION_STOP;
    p.first_retry_ms = kFirstRetryMs;
    p.max_retry_ms = guc_retry_max_interval_ms;
    p.random = jitter_random;
    /* What the spool reader keeps of its own buffer (Reader::read()). */
    p.spare_at_most = 2 * std::max<size_t>(static_cast<size_t>(guc_batch_bytes_kb) * 1024, 1 << 20);
    return p;
}

size_t Delivery::max_in_flight() const
{
    /* 'stop' is for those who want strict order: one batch at a time. */
    if (guc_on_rejection == ON_REJECTION_STOP)
        return 1;
    size_t n = static_cast<size_t>(guc_max_in_flight > 0 ? guc_max_in_flight
                                                         : http_->default_max_in_flight());
    size_t limit = static_cast<size_t>(http_->max_in_flight_limit());
    return limit > 0 ? std::min(n, limit) : n;
}

/* What the batches before batch id are doing, for its exchange. */
HttpSink::Exchange::Earlier Delivery::earlier_of(uint64_t id) const
{
    switch (window_->earlier(id)) {
    case 0:
        return HttpSink::Exchange::Earlier::done;
    case 1:
        return HttpSink::Exchange::Earlier::in_flight;
    default:
        return HttpSink::Exchange::Earlier::waiting;
    }
}

/* For an HttpSink: its requests in flight and their window, empty. */
void Delivery::start_http()
{
    if (!http_)
        return;
    pipeline_ = std::make_unique<HttpPipeline>(http_->http_options());
    window_ = std::make_unique<DeliveryWindow>(window_policy());
    reset_window();
}

/* Abandon the requests in flight and what the window holds: delivery goes on from the cursor. */
void Delivery::reset_window()
{
    for (RequestPrefetch &p : prefetch_)
        p.cancel(); /* it reads a batch of the window */
    read_ahead_.cancel();
    if (pipeline_)
        pipeline_->cancel_all();
    exchanges_.clear();
    if (window_)
        window_->clear();
    ranges_.clear();
    read_end_ = cursor_.offset;
}

/*
 * Read the next range of the spool into the window: one batch (at most
 * pgsink.batch_bytes), with the schemas owed in front of the first.
 */
void Delivery::read_range(const SpoolShared &d)
{
    size_t max = static_cast<size_t>(guc_batch_bytes_kb) * 1024;
    RangeInfo info;
    std::optional<SpoolBatch> ahead = read_ahead_.take(read_end_, max);
    SpoolBatch batch = ahead ? std::move(*ahead)
                             : read_spool_batch(reader_, read_end_, d.durable_end, max,
                                                window_->take_spare_lines());
    info.entries = batch.entries;
    std::string_view piece = batch.lines;
    /* The sink may end it earlier (HttpSink::batch_end): the rest is the next batch's. */
    if (read_end_ + piece.size() < d.durable_end) {
        size_t cut = http_->batch_end(piece);
        if (cut > 0 && cut < piece.size()) {
            info.entries -= spool::count_newlines(piece.data() + cut, piece.size() - cut);
            piece = piece.substr(0, cut);
        }
    }
    info.bytes = piece.size();
    info.have_ts = last_line_timestamp(piece, &info.last_ts);
    bool owed = announce_ && std::none_of(ranges_.begin(), ranges_.end(),
                                          [](const RangeInfo &r) { return r.schemas; });
    /*
     * The batch's key (the webhook-id): its place in the spool, the replay
     * it belongs to, and the heads of its first and last entries, so it is
     * the same for the same batch after a crash, and differs for other
     * entries at the same place (a spool restored from a backup).
     */
    char place[96];
    snprintf(place, sizeof(place), "%llx-%llx-%llx-%llx%s",
             static_cast<unsigned long long>(cursor_.spool_id),
             static_cast<unsigned long long>(cursor_.replays),
             static_cast<unsigned long long>(read_end_),
             static_cast<unsigned long long>(read_end_ + info.bytes), owed ? "s" : "");
    size_t edge = std::min<size_t>(piece.size(), 256);
    std::string key = sha256_hex(std::string(place) + "\n" + std::string(piece.substr(0, edge)) +
                                     "\n" + std::string(piece.substr(piece.size() - edge)),
                                 16);
    std::string lines;
    size_t count = info.entries;
    if (owed) {
        lines = schemas_before(piece, read_end_);
        count += static_cast<size_t>(std::count(lines.begin(), lines.end(), '\n'));
        info.schemas = true;
    }
    if (lines.empty()) {
        batch.lines.resize(piece.size()); /* what batch_end() left of it */
        lines = std::move(batch.lines);
    } else {
        lines.append(piece);
    }
    read_end_ += info.bytes;
    /*
     * The batch after it is read on a thread meanwhile, for a sink whose
     * requests are made ahead too (only a head start: without a thread it
     * is read when needed).
     */
    if (http_->prepares_ahead() && read_end_ < d.durable_end) {
        try {
            read_ahead_.start(reader_, read_end_, d.durable_end, max, window_->take_spare_lines());
        } catch (const std::exception &) {
            read_ahead_.cancel();
        }
    }
    ranges_.push_back(std::move(info));
    Order order = http_->order_of(lines, key, false);
    window_->add(std::move(lines), count, std::move(key), false, order);
}

/*
 * Wait on the latch and the requests' sockets together, at most timeout_ms;
 * then tell the pipeline which sockets are ready. Interrupts are served
 * here, as in wait().
 */
void Delivery::wait_for_sockets(long timeout_ms)
{
    static constexpr int kMaxEvents = 64;
    const std::vector<HttpPipeline::Wait> &waits = pipeline_->waits();
    WaitEvent events[kMaxEvents];
    int n = 0;
    if (wait_context_ == nullptr)
        wait_context_ = pg_call([] {
            return AllocSetContextCreate(TopMemoryContext, "pgsink delivery wait",
                                         ALLOCSET_SMALL_SIZES);
        });
    /*
     * The set is made again only when a socket came or went: a big request
     * takes many turns here, and an epoll set made and closed at each one
     * showed in the profile.
     */
    bool rebuild = wait_set_ == nullptr || wait_set_generation_ != pipeline_->waits_generation() ||
                   wait_set_sockets_.size() != waits.size();
    try {
        pg_call([&] {
            if (rebuild) {
                if (wait_set_ != nullptr)
                    FreeWaitEventSet(wait_set_);
                wait_set_ = nullptr;
                MemoryContextReset(wait_context_);
                WaitEventSet *set =
                    CreateWaitEventSet(wait_context_, 2 + static_cast<int>(waits.size()));
                AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
                AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
                for (const HttpPipeline::Wait &w : waits)
                    AddWaitEventToSet(set,
                                      (w.read ? WL_SOCKET_READABLE : 0) |
                                          (w.write ? WL_SOCKET_WRITEABLE : 0),
                                      w.fd, nullptr, nullptr);
                wait_set_ = set;
            } else {
                for (size_t i = 0; i < waits.size(); i++)
                    if (waits[i].read != wait_set_sockets_[i].read ||
                        waits[i].write != wait_set_sockets_[i].write)
                        ModifyWaitEvent(wait_set_, 2 + static_cast<int>(i),
                                        (waits[i].read ? WL_SOCKET_READABLE : 0) |
                                            (waits[i].write ? WL_SOCKET_WRITEABLE : 0),
                                        nullptr);
            }
        });
    } catch (...) {
        drop_wait_set();
        throw;
    }
    wait_set_sockets_ = waits;
    wait_set_generation_ = pipeline_->waits_generation();
    pg_call([&] {
        n = WaitEventSetWait(wait_set_, timeout_ms, events, kMaxEvents, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    });
    for (int i = 0; i < n; i++)
        if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
            pipeline_->on_socket(events[i].fd, (events[i].events & WL_SOCKET_READABLE) != 0,
                                 (events[i].events & WL_SOCKET_WRITEABLE) != 0);
    pipeline_->on_timer();
}

/* Forget the wait set (it is made again at the next wait). */
void Delivery::drop_wait_set()
{
    WaitEventSet *set = wait_set_;
    wait_set_ = nullptr;
    wait_set_sockets_.clear();
    if (set == nullptr)
        return;
    try {
        pg_call([set] { FreeWaitEventSet(set); });
    } catch (...) {
        /* its memory goes with the context's next reset */
    }
}

/* Between batches of a round: SIGTERM, a cancel, a reload that changes the sink (Reopen). */
void Delivery::serve_interrupts()
{
    pg_call([] { CHECK_FOR_INTERRUPTS(); });
    reload();
}

/* Is a request's body still being sent (a socket waits to be written)? */
static bool sending(const HttpPipeline &pipeline)
{
    for (const HttpPipeline::Wait &w : pipeline.waits())
        if (w.write)
            return true;
    return false;
}

/*
 * Start every request the window lets go now (max in flight). A batch whose
 * request was made ahead takes it; others make theirs here. serve: serve
 * interrupts between batches (not while answers taken are not yet saved:
 * a reload that reopens the sink would send them again).
 */
void Delivery::send_due(size_t max, bool serve)
{
    int64_t now = monotonic_ms();
    /* Which spool and replay the batches come from (BigQuery's load job ids). */
    char stream[64];
    snprintf(stream, sizeof(stream), "%llx-%llx", static_cast<unsigned long long>(cursor_.spool_id),
             static_cast<unsigned long long>(cursor_.replays));
    http_->set_stream(stream);
    while (DeliveryWindow::Batch *b = window_->next_to_send(now, max)) {
        /*
         * Made ahead (started now if need be). While a request is still being
         * sent, the worker serves it and the batch goes when made (the wait is
         * short meanwhile); else the worker waits for it here.
         */
        if (http_->makes_every_request_ahead()) {
            if (prefetch_of(b->id) == nullptr)
                prefetch_next();
            RequestPrefetch *making = prefetch_of(b->id);
            if (making != nullptr && making->making(b->id) && sending(*pipeline_))
                break;
        }
        window_->sent(b);
        std::string failure, refusal;
        try {
            std::unique_ptr<HttpSink::Exchange> ex;
            HttpRequest request;
            RequestPrefetch *ahead = prefetch_of(b->id);
            std::optional<RequestPrefetch::Made> made;
            if (ahead != nullptr)
                made = ahead->take(b->id, now, http_->made_ahead_max_age_ms());
            if (made) {
                ex = std::move(made->exchange);
                request = std::move(made->request);
            } else {
                ex = b->park_always ? http_->exchange_resent(b->lines, b->key)
                                    : http_->exchange(b->lines, b->key);
            }
            ex->set_earlier(earlier_of(b->id));
            if (!made)
                request = ex->next();
            pipeline_->submit(b->id, std::move(request));
            exchanges_[b->id] = std::move(ex);
            /*
             * Started now (libcurl writes what the socket takes), not after
             * the next batches are made or read: making a big batch takes
             * tens of ms (BigQuery's Avro), and the receiver works on this
             * one meanwhile.
             */
            pipeline_->on_timer();
        } catch (const EntryError &e) {
            refusal = e.what(); /* never passes: its entries at fault are parked */
        } catch (const std::exception &e) {
            failure = e.what(); /* no request went out: retried with back-off */
        }
        if (!refusal.empty())
            refuse_batch(b->id, refusal);
        if (!failure.empty()) {
            DeliveryWindow::Outcome o = window_->failed(
                b->id, sink_->describe() + ": could not make a request: " + failure, now);
            failing(o.message, o.delay_ms);
        }
        if (serve)
            serve_interrupts();
        now = monotonic_ms();
    }
    if (http_->makes_every_request_ahead())
        prefetch_next(); /* the next batch read, made while the requests in flight are served */
}

/* The prefetch holding (or making) the request of batch id, if one does. */
RequestPrefetch *Delivery::prefetch_of(uint64_t id)
{
    for (RequestPrefetch &p : prefetch_)
        if (p.busy() && p.id() == id)
            return &p;
    return nullptr;
}

/*
 * Make the requests of the batches that go out next, each on a prefetch
 * thread, if the sink can. One made for a batch no longer next (split,
 * retried, abandoned) is dropped.
 */
void Delivery::prefetch_next()
{
    if (!http_->prepares_ahead())
        return;
    /* As many at once as the sink's exchanges allow (they may share its buffers). */
    int n = std::clamp(http_->made_ahead_at_once(), 1, kPrefetches);
    const DeliveryWindow::Batch *next[kPrefetches] = {};
    for (int i = 0; i < n; i++)
        next[i] = window_->next_in_line(static_cast<size_t>(i));
    for (RequestPrefetch &p : prefetch_)
        if (p.busy() &&
            std::none_of(next, next + kPrefetches, [&p](const DeliveryWindow::Batch *b) {
                return b != nullptr && b->id == p.id();
            }))
            p.cancel();
    for (const DeliveryWindow::Batch *b : next) {
        if (b == nullptr || b->lines.size() < kPrefetchMinBytes || prefetch_of(b->id) != nullptr)
            continue;
        RequestPrefetch *free = nullptr;
        for (RequestPrefetch &p : prefetch_)
            if (!p.busy() && free == nullptr)
                free = &p;
        if (free == nullptr)
            return;
        /* Only a head start: if it cannot be had (no thread, no memory), the request is made later.
         */
        try {
            free->start(b->id,
                        b->park_always ? http_->exchange_resent(b->lines, b->key)
                                       : http_->exchange(b->lines, b->key),
                        monotonic_ms());
        } catch (const std::exception &) {
            free->cancel();
        }
    }
}

/*
 * One turn of an HttpSink's delivery: read ahead into the window, send what
 * is due, wait, read the answers (parking what is refused for good), and
 * advance the cursor past the acknowledged prefix.
 */
void Delivery::http_round(const SpoolShared &d, bool paused)
{
    /* Paused: requests in flight are answered; nothing new (or again) goes out. */
    size_t max = paused ? 0 : max_in_flight();
    /*
     * First what can go now: a request made ahead goes out the moment there
     * is room, and the request of the batch after it is started at once.
     */
    if (!paused) {
        send_due(max);
        prefetch_next();
    }
    /*
     * Then read ahead, one range more than can be in flight: the next
     * batch is read while requests are out, and its request made ahead.
     * A sink whose requests are made ahead gets one range more: the batch
     * after the next is read while the next one's request is being made,
     * so that making it can start the moment the next one goes out (else
     * each batch waited for its read, then for its request to be made).
     * Interrupts are served between batches: reading and encoding many big
     * ones takes a while.
     */
    /* A sink that makes requests ahead: one range more, read while the one before is made. */
    size_t ahead = max + (http_->prepares_ahead() ? 2 : 1);
    while (!paused && window_->ranges() < ahead && read_end_ < d.durable_end) {
        read_range(d);
        send_due(max);
        prefetch_next();
        serve_interrupts();
    }
    int64_t now = monotonic_ms();
    long timeout = kIdleWaitMs;
    if (pipeline_->timeout_ms() >= 0)
        timeout = std::min(timeout, pipeline_->timeout_ms());
    int64_t due = paused ? -1 : window_->next_due_ms(max);
    if (due >= 0)
        timeout = std::min<long>(timeout, std::max<int64_t>(0, due - now));
    if (http_->makes_every_request_ahead() && sending(*pipeline_) &&
        std::any_of(std::begin(prefetch_), std::end(prefetch_),
                    [](const RequestPrefetch &p) { return p.making(); }))
        timeout = std::min(timeout, 1L); /* it goes out soon after it is made */
    wait_for_sockets(timeout);

    for (auto &[tag, response] : pipeline_->take_done()) {
        auto ex = exchanges_.find(tag);
        if (ex == exchanges_.end() || window_->in_flight_batch(tag) == nullptr)
            continue; /* abandoned meanwhile */
        std::optional<Answer> said;
        std::string failure, refusal;
        try {
            ex->second->set_earlier(earlier_of(tag));
            said = ex->second->answer(response);
            if (!said)
                pipeline_->submit(tag, ex->second->next()); /* the exchange goes on */
        } catch (const EntryError &e) {
            refusal = e.what();
        } catch (const std::exception &e) {
            failure = e.what();
        }
        if (!said && failure.empty() && refusal.empty())
            continue;
        exchanges_.erase(ex);
        if (!refusal.empty()) {
            refuse_batch(tag, refusal);
            continue;
        }
        if (!failure.empty()) {
            DeliveryWindow::Outcome o = window_->failed(
                tag, sink_->describe() + ": could not make a request: " + failure, monotonic_ms());
            failing(o.message, o.delay_ms);
            continue;
        }
        const Answer &answer = *said;
        DeliveryWindow::Outcome o = window_->complete(tag, answer, monotonic_ms());
        take_outcome(o);
        if (!o.retrying && answer.kind == Answer::Kind::ack && window_->retrying() == 0)
            recovered(); /* something was taken, and nothing waits for a retry */
    }
    /*
     * A sink whose requests are made ahead sends the next one before the
     * cursor is saved: saving it syncs a file, and with one request in
     * flight the receiver had nothing to do meanwhile, at every batch.
     */
    if (!paused && http_->sends_before_cursor_save() && pipeline_->in_flight() < max) {
        send_due(max, false);
        prefetch_next();
    }
    advance(d);
}

/* What a batch's completion asks: refused entries parked, or a retry said. */
void Delivery::take_outcome(const DeliveryWindow::Outcome &o)
{
    /* Parked (committed) before the cursor can pass them. */
    for (const DeliveryWindow::Parked &p : o.park)
        park(p.entry, p.status, p.response);
    if (o.retrying)
        failing(o.message, o.delay_ms);
}

/*
 * Batch id holds entries the sink cannot read (EntryError): refused for
 * good, as a receiver refuses, never retried for ever with the cursor held.
 * The window bisects it; the entries at fault are parked with the reason
 * (pgsink.on_rejection = 'stop' holds it instead, saying so).
 */
void Delivery::refuse_batch(uint64_t id, const std::string &why)
{
    Answer a;
    a.kind = Answer::Kind::reject;
    /* The status is readable by pg_monitor: the reason, which may quote values, is not in it. */
    a.message =
        sink_->describe() + ": an entry the sink cannot read was refused (see pgsink.dead_letters)";
    a.response = "pgsink refused this entry: " + answer_excerpt(why, 400);
    take_outcome(window_->complete(id, a, monotonic_ms()));
}

/* Move the cursor past the ranges the window is done with, and save it. */
void Delivery::advance(const SpoolShared &d)
{
    std::vector<uint64_t> done = window_->pop_done();
    if (done.empty())
        return;
    bool moved = false;
    for (size_t i = 0; i < done.size(); i++) {
        RangeInfo info = std::move(ranges_.front());
        ranges_.pop_front();
        if (!info.parked.empty()) {
            forget_parked(info.parked, info.attempts);
            continue;
        }
        moved = true;
        cursor_.offset += info.bytes;
        cursor_.entries += info.entries;
        if (info.have_ts)
            cursor_.delivered_time = info.last_ts;
        if (info.schemas)
            announce_ = false;
        delivered_entries_ += info.entries;
        delivered_bytes_ += info.bytes;
    }
    if (!moved)
        return;
    if (cursor_.offset == d.durable_end)
        cursor_.delivered_lsn = std::max<uint64_t>(cursor_.delivered_lsn, d.durable_lsn);
    save();
    publish(failing_                          ? SinkState::retrying
            : cursor_.offset == d.durable_end ? SinkState::idle
                                              : SinkState::delivering);
}

/*
 * Is delivery paused (pgsink.pause('<sink>'))? The state says so, and the
 * log when it changes; the cursor stays, the spool keeps the entries.
 */
bool Delivery::is_paused()
{
    TimestampTz since = sink_paused_since(name_.c_str());
    bool changed = (since != 0) != paused_;
    paused_ = since != 0;
    if (changed)
        ereport(LOG, (errmsg(paused_ ? "pgsink: delivery of sink \"%s\" is paused "
                                       "(pgsink.pause()); the spool keeps its entries until "
                                       "pgsink.resume()"
                                     : "pgsink: delivery of sink \"%s\" resumes",
                             name_.c_str())));
    if (paused_ || changed) {
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        slot().state = paused_ ? SinkState::paused : SinkState::delivering;
        LWLockRelease(shared_lock);
    }
    return paused_;
}

/* Between batches: what the sink noticed about its destination (a rotated file). */
void Delivery::check_between_rounds()
{
    std::string before = cursor_.sink_state;
    Sink::Notice notice = sink_->between_rounds();
    if (notice.level == Sink::Notice::Level::warning) {
        ereport(WARNING, (errmsg("pgsink: sink \"%s\": %s", name_.c_str(), notice.message.c_str()),
                          errdetail("%s", notice.detail.c_str())));
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        strlcpy(slot().last_error, notice.message.c_str(), kErrorLen);
        slot().last_error_at = GetCurrentTimestamp();
        LWLockRelease(shared_lock);
    } else if (notice.level == Sink::Notice::Level::log) {
        ereport(LOG, (errmsg("pgsink: sink \"%s\": %s", name_.c_str(), notice.message.c_str())));
    }
    if (notice.reopen) {
        new_destination_ = true;
        throw Reopen();
    }
    /* The destination changed in place (a truncated file): its new state, at once. */
    if (sink_->state() != before)
        save();
}

void Delivery::run()
{
    /* The stream worker opens (recovers) the spool: until then its end is unknown. */
    for (bool said = false; !durable().ready;) {
        if (!said) {
            LWLockAcquire(shared_lock, LW_EXCLUSIVE);
            slot().state = SinkState::waiting_for_spool;
            LWLockRelease(shared_lock);
            said = true;
        }
        wait(kIdleWaitMs);
        reload();
    }
    position_cursor();

    bool reopen = false;
    for (;;) {
        try {
            if (reopen) {
                reopen = false;
                reopen_sink();
            }
            if (!sink_)
                open_sink();
            for (;;) {
                pg_call([] { CHECK_FOR_INTERRUPTS(); });
                reload();
                if (rewind_pending())
                    apply_rewind();
                check_between_rounds();
                SpoolShared d = durable();
                if (d.id != cursor_.spool_id) {
                    /*
                     * The spool was made anew under us: what was not delivered
                     * may be gone. Files of the old one are not read or
                     * written again.
                     */
                    reader().reset();
                    cursor_file_.reset();
                    reset_window(); /* nothing in flight while it waits */
                    needs_reimport("the spool was made anew (its identity changed) while it "
                                   "delivered, so entries may be missing");
                    apply_rewind();
                    continue;
                }
                bool pause = is_paused();
                if (pause && (!http_ || window_->in_flight() == 0)) {
                    wait(kIdleWaitMs); /* pgsink.resume() wakes it */
                    continue;
                }
                if (http_ && read_end_ == d.durable_end && !pause)
                    retry_parked(); /* all read: parked entries asked for may join */
                if (http_ && (!window_->empty() || read_end_ < d.durable_end)) {
                    http_round(d, pause);
                    continue;
                }
                if (!http_ && cursor_.offset < d.durable_end) {
                    deliver(d);
                    continue;
                }
                if (cursor_.delivered_lsn < d.durable_lsn) {
                    /* Caught up: what the stream decoded since (no entries) is delivered too. */
                    cursor_.delivered_lsn = d.durable_lsn;
                    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
                    slot().delivered_lsn = d.durable_lsn;
                    slot().state = SinkState::idle;
                    LWLockRelease(shared_lock);
                    announce_progress();
                }
                wait(kIdleWaitMs);
            }
        } catch (const Reopen &) {
            reopen = true;
        }
    }
}

RequestPrefetch *Delivery::live_prefetch = nullptr;
BatchReadAhead *Delivery::live_read_ahead = nullptr;

/*
 * A FATAL (SIGTERM is served by die()) leaves through proc_exit() without
 * unwinding: the prefetch thread, never joined, would still be signing a
 * batch (EVP_MAC_*) while exit() runs OpenSSL's atexit cleanup: the worker
 * dies of SIGSEGV and the postmaster restarts the whole cluster. Joined
 * first (it ends within one batch's request).
 */
static void prefetch_at_exit(int, Datum)
{
    RequestPrefetch *p = Delivery::live_prefetch;
    BatchReadAhead *r = Delivery::live_read_ahead;
    Delivery::live_prefetch = nullptr;
    Delivery::live_read_ahead = nullptr;
    try {
        for (int i = 0; p != nullptr && i < Delivery::kPrefetches; i++)
            p[i].cancel();
        if (r != nullptr)
            r->cancel(); /* a pread(): it ends soon */
    } catch (...) {
        /* could not join: nothing better to do on the way out */
    }
}

void delivery_loop(int slot, const char *sink)
{
    static bool registered = false;
    if (!registered) {
        pg_call([] { before_shmem_exit(prefetch_at_exit, 0); });
        registered = true;
    }
    try {
        Delivery delivery(slot, sink);
        delivery.run();
    } catch (const Unlisted &) {
        ereport(LOG, (errmsg("pgsink: sink \"%s\" is no longer in pgsink.sink; its delivery "
                             "worker stops",
                             sink)));
    }
}

} // namespace pgsink

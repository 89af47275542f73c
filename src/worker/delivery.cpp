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
 * A retryable sink error is retried here, with exponential back-off, while
 * the spool keeps the entries: no other sink and no decoding waits for it.
 * Any other error ends the worker; the launcher restarts it with back-off.
 * Never in a transaction, never inside decoding.
 */
#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include "boundary/pg_boundary.h"
#include "changelog/entry_head.h"
#include "core/config.h"
#include "core/digest.h"
#include "core/shared_state.h"
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
    /* While the sink waits on the network: interrupts, and a reload that changes the sink. */
    void poll()
    {
        pg_call([] { CHECK_FOR_INTERRUPTS(); });
        reload();
    }
    Delivery(int slot, std::string name)
        : slot_(slot), name_(std::move(name)), dir_(spool::directory()), cursor_file_(dir_, name_),
          reader_(dir_)
    {
    }
    void run();

  private:
    SpoolShared durable() const;
    void wait(long ms);
    void reload();
    bool rewind_pending() const;
    void position_cursor();
    void open_sink();
    void reopen_sink();
    std::string schemas_before(std::string_view batch);
    void deliver(const SpoolShared &d);
    /* park_always: entries refused are parked whatever pgsink.on_rejection says (retries). */
    void send(std::string_view lines, bool park_always = false);
    void park(std::string_view entry, const SinkRejected &r);
    void retry_parked();
    void apply_rewind();
    void check_between_rounds();
    void save();
    void publish(SinkState state);
    void needs_reimport(const std::string &why);
    template <typename F> void with_retry(F &&f);
    SinkSlot &slot() const { return shared->sinks[slot_]; }

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
    std::string settings_;
    uint64 delivered_entries_ = 0, delivered_bytes_ = 0; /* not yet published */
    bool failing_ = false;
    TimestampTz retry_checked_at_ = 0;
    std::string last_warning_;
    TimestampTz last_warning_at_ = 0;
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
}

bool Delivery::rewind_pending() const
{
    LWLockAcquire(shared_lock, LW_SHARED);
    bool pending = slot().rewind_requests != slot().rewind_applied;
    LWLockRelease(shared_lock);
    return pending;
}

template <typename F> void Delivery::with_retry(F &&f)
{
    long backoff_ms = kFirstRetryMs;
    for (;;) {
        std::string message;
        long asked_ms = -1;
        try {
            f();
            if (failing_) {
                failing_ = false;
                ereport(LOG, (errmsg("pgsink: sink \"%s\" has recovered", name_.c_str())));
                LWLockAcquire(shared_lock, LW_EXCLUSIVE);
                slot().last_error[0] = '\0';
                slot().last_error_at = 0;
                slot().retry_at = 0;
                LWLockRelease(shared_lock);
            }
            return;
        } catch (const SinkError &e) {
            if (!e.retryable())
                throw;
            message = e.what();
            asked_ms = e.retry_after_ms();
        }
        failing_ = true;
        /*
         * Full jitter over the exponential back-off, so that sinks retrying
         * together do not stay in step; a longer Retry-After the sink got
         * wins, up to pgsink.retry_max_interval.
         */
        long delay_ms = 1 + static_cast<long>(pg_prng_double(&pg_global_prng_state) *
                                              static_cast<double>(backoff_ms));
        /* Never less than the back-off: "Retry-After: 0" must not make a hot loop. */
        if (asked_ms > delay_ms)
            delay_ms = std::min<long>(asked_ms, guc_retry_max_interval_ms);
        TimestampTz now = GetCurrentTimestamp();
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        strlcpy(slot().last_error, message.c_str(), kErrorLen);
        slot().last_error_at = now;
        slot().state = SinkState::retrying;
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
        spool::Position p = reader_.oldest();
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
    announce_ = true;
    save();
    ereport(LOG, (errmsg("pgsink: sink \"%s\" rewound to spool offset %llX", name_.c_str(),
                         static_cast<unsigned long long>(offset))));
}

void Delivery::open_sink()
{
    sink_ = make_sink(name_);
    settings_ = sink_settings(name_);
    Sink::Resume from;
    from.state = cursor_.sink_state;
    from.first_lsn = first_lsn_ != 0 ? first_lsn_ : reader_.lsn_at(cursor_.offset);
    bool fresh = false;
    with_retry([&] { fresh = sink_->open(from); });
    if (fresh || cursor_.sink_state.empty()) {
        /* Its state from now on (a new file), saved before anything is delivered into it. */
        announce_ = announce_ || fresh;
        save();
    }
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
        sink_->close();
        sink_.reset();
        ereport(LOG, (errmsg("pgsink: sink \"%s\"'s settings changed: it was %s", name_.c_str(),
                             old.c_str())));
        return; /* open_sink() makes the new one */
    }
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
std::string Delivery::schemas_before(std::string_view batch)
{
    std::string out;
    /* A reader of its own: reader_'s buffer holds the batch. */
    std::string schemas = spool::Reader(dir_).schemas_at(cursor_.offset);
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

/*
 * Write lines to the sink and make them durable. Entries the sink refuses
 * for good are found by bisection (a half that passes is delivered; a
 * refused half is split again) and parked in pgsink.dead_letters, or, with
 * pgsink.on_rejection = 'stop', the refusal holds the sink. A batch refused
 * as too large (413) is split the same way.
 */
void Delivery::send(std::string_view lines, bool park_always)
{
    std::optional<SinkRejected> rejected;
    try {
        with_retry([&] {
            sink_->write(lines.data(), lines.size());
            sink_->sync();
        });
        return;
    } catch (const SinkRejected &r) {
        rejected = r;
    }
    bool stop = guc_on_rejection == ON_REJECTION_STOP && !park_always;
    if (stop && !rejected->too_large())
        throw *rejected;
    size_t count = static_cast<size_t>(std::count(lines.begin(), lines.end(), '\n'));
    if (count > 1) {
        size_t mid = 0;
        for (size_t i = 0; i < count / 2; i++)
            mid = lines.find('\n', mid) + 1;
        send(lines.substr(0, mid), park_always);
        send(lines.substr(mid), park_always);
        return;
    }
    if (stop)
        throw *rejected; /* one entry too large, and nowhere to park it */
    park(lines.substr(0, lines.size() - 1), *rejected);
}

/* Park one refused entry (without its newline), in a transaction of its own. */
void Delivery::park(std::string_view entry, const SinkRejected &r)
{
    std::string key = sha256_hex(entry);
    uint64_t lsn = 0;
    char lsn_text[32] = "";
    if (line_lsn(entry.data(), entry.size(), &lsn))
        snprintf(lsn_text, sizeof(lsn_text), "%X/%X", static_cast<unsigned>(lsn >> 32),
                 static_cast<unsigned>(lsn));
    std::string table;
    bool has_table = line_table(entry.data(), entry.size(), &table);
    std::string text(entry);
    std::string response = r.response();
    int status = r.status();
    const char *sink = name_.c_str();
    in_transaction([&] {
        Oid types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
        Datum values[7] = {CStringGetTextDatum(sink),
                           CStringGetTextDatum(text.c_str()),
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
 * asked for are sent again (out of their original order, by nature); those
 * the sink accepts leave the table, those it refuses again stay parked.
 */
void Delivery::retry_parked()
{
    TimestampTz now = GetCurrentTimestamp();
    if (!sink_->can_reject() || !TimestampDifferenceExceeds(retry_checked_at_, now, kIdleWaitMs))
        return;
    retry_checked_at_ = now;
    std::vector<int64> ids;
    std::vector<int32> attempts;
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
            ids.push_back(id);
            attempts.push_back(tries);
            lines.append(entry);
            lines.push_back('\n');
        }
    });
    if (ids.empty())
        return;
    ereport(LOG, (errmsg("pgsink: sink \"%s\" sends %zu parked entries again", name_.c_str(),
                         ids.size())));
    send(lines, true);
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

/* One batch from the cursor toward the durable end. */
void Delivery::deliver(const SpoolShared &d)
{
    size_t max = static_cast<size_t>(guc_batch_bytes_kb) * 1024;
    uint64_t lines = 0;
    size_t n = 0;
    int64_t ts = 0;
    bool have_ts = false;
    /* The commit time of the last entry delivered: the head of a piece's last line. */
    auto note_last_line = [&](std::string_view piece) {
        size_t len = piece.size();
        size_t last = len >= 2 ? piece.rfind('\n', len - 2) : std::string_view::npos;
        last = last == std::string_view::npos ? 0 : last + 1;
        have_ts = line_timestamp(piece.data() + last, len - last, &ts) || have_ts;
    };
    if (sink_->can_reject()) {
        /* One request: the whole batch, bisected if the sink refuses it. */
        std::string_view batch = reader_.read(cursor_.offset, d.durable_end, max, &lines);
        n = batch.size();
        if (announce_) {
            std::string out = schemas_before(batch);
            out.append(batch);
            send(out);
            announce_ = false;
        } else {
            send(batch);
        }
        note_last_line(batch);
    } else {
        /*
         * Written in pieces small enough to be still in the CPU's cache when
         * the kernel copies them, made durable once for the whole batch.
         */
        while (n < max && cursor_.offset + n < d.durable_end) {
            uint64_t piece_lines = 0;
            std::string_view piece =
                reader_.read(cursor_.offset + n, d.durable_end, kPieceBytes, &piece_lines);
            if (announce_) {
                std::string out = schemas_before(piece);
                out.append(piece);
                with_retry([&] { sink_->write(out.data(), out.size()); });
                announce_ = false;
            } else {
                with_retry([&] { sink_->write(piece.data(), piece.size()); });
            }
            note_last_line(piece);
            n += piece.size();
            lines += piece_lines;
        }
        with_retry([&] { sink_->sync(); });
    }
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
                    reader_.reset();
                    cursor_file_.reset();
                    needs_reimport("the spool was made anew (its identity changed) while it "
                                   "delivered, so entries may be missing");
                    apply_rewind();
                    continue;
                }
                if (cursor_.offset < d.durable_end) {
                    deliver(d);
                    continue;
                }
                retry_parked();
                if (cursor_.delivered_lsn < d.durable_lsn) {
                    /* Caught up: what the stream decoded since (no entries) is delivered too. */
                    cursor_.delivered_lsn = d.durable_lsn;
                    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
                    slot().delivered_lsn = d.durable_lsn;
                    slot().state = SinkState::idle;
                    LWLockRelease(shared_lock);
                }
                wait(kIdleWaitMs);
            }
        } catch (const Reopen &) {
            reopen = true;
        }
    }
}

static Delivery *active_delivery = nullptr;

/*
 * Between polls of a sink's request: interrupts (SIGTERM ends the process;
 * an ERROR unwinds) and reloads (new settings for the sink abandon the
 * request: it is sent again from the cursor).
 */
static void poll_interrupts()
{
    if (active_delivery)
        active_delivery->poll();
    else
        pg_call([] { CHECK_FOR_INTERRUPTS(); });
}

void delivery_loop(int slot, const char *sink)
{
    set_sink_poll(poll_interrupts);
    try {
        Delivery delivery(slot, sink);
        active_delivery = &delivery;
        delivery.run();
    } catch (const Unlisted &) {
        ereport(LOG, (errmsg("pgsink: sink \"%s\" is no longer in pgsink.sink; its delivery "
                             "worker stops",
                             sink)));
    }
}

} // namespace pgsink

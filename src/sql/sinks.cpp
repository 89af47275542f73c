/*
 * sinks.cpp: pgsink.sinks() (one row per sink in pgsink.sink), pgsink.spool()
 * (the spool's disk use and positions) and pgsink.rewind_sink().
 */
#include <cstring>
#include <string>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/pause.h"
#include "core/shared_state.h"
#include "spool/spool_files.h"
#include "spool/spool_reader.h"

extern "C" {
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

PGDLLEXPORT Datum pgsink_sinks(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pgsink_spool(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pgsink_table_counts(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_table_counts);
PGDLLEXPORT Datum pgsink_rewind_sink_time(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pgsink_rewind_sink_lsn(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_sinks);
PG_FUNCTION_INFO_V1(pgsink_spool);
PG_FUNCTION_INFO_V1(pgsink_rewind_sink_time);
PG_FUNCTION_INFO_V1(pgsink_rewind_sink_lsn);
}

namespace pgsink
{

enum SinkColumn {
    S_SINK,
    S_STATE,
    S_PID,
    S_CURSOR,
    S_DELIVERED_LSN,
    S_LAST_DELIVERED_COMMIT,
    S_LAG_ENTRIES,
    S_LAG_BYTES,
    S_LAG_SECONDS,
    S_ENTRIES_DELIVERED,
    S_BYTES_DELIVERED,
    S_DEAD_LETTERS,
    S_LAST_ERROR,
    S_LAST_ERROR_AT,
    S_NEXT_RETRY_AT,
    S_STARTED_AT,
    S_RESTARTS,
    S_NEXT_START_AT,
    S_ERRORS,
    S_RETRIES,
    S_PAUSED_SINCE,
    S_NUM
};

/* A row being filled: every column null until set. */
template <int N> struct Row {
    Datum values[N];
    bool nulls[N];
    Row()
    {
        memset(values, 0, sizeof(values));
        for (bool &b : nulls)
            b = true;
    }
    void set(int col, Datum v)
    {
        values[col] = v;
        nulls[col] = false;
    }
};

static void check_columns(TupleDesc tupdesc, int expected, const char *fn)
{
    if (tupdesc->natts != expected)
        elog(ERROR, "%s has %d columns, expected %d: run ALTER EXTENSION pgsink UPDATE", fn,
             tupdesc->natts, expected);
}

/* One row per sink in pgsink.sink, in the list's order. */
static Datum sinks(PG_FUNCTION_ARGS)
{
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    check_columns(rsinfo->setDesc, S_NUM, "pgsink.sinks()");

    char names[kMaxSinks][kSinkNameLen];
    int n = configured_sinks(names);
    SpoolShared spool;
    SinkSlot slots[kMaxSinks];
    PauseState pause;
    LWLockAcquire(shared_lock, LW_SHARED);
    spool = shared->spool;
    memcpy(slots, shared->sinks, sizeof(slots));
    pause = shared->pause;
    LWLockRelease(shared_lock);
    TimestampTz now = GetCurrentTimestamp();

    for (int i = 0; i < n; i++) {
        const SinkSlot *s = nullptr;
        for (const SinkSlot &slot : slots)
            if (slot.in_use && strcmp(slot.name, names[i]) == 0)
                s = &slot;
        Row<S_NUM> row;
        auto set = [&](int col, Datum v) { row.set(col, v); };
        set(S_SINK, CStringGetTextDatum(names[i]));
        for (const auto &p : pause.sinks)
            if (p.name[0] != '\0' && strcmp(p.name, names[i]) == 0)
                set(S_PAUSED_SINCE, TimestampTzGetDatum(p.since));
        set(S_STATE, CStringGetTextDatum(sink_state_name(s ? s->state : SinkState::stopped)));
        if (s != nullptr) {
            if (s->pid != 0)
                set(S_PID, Int32GetDatum(s->pid));
            if (s->cursor_valid) {
                set(S_CURSOR, Int64GetDatum(static_cast<int64>(s->cursor)));
                if (s->delivered_lsn != InvalidXLogRecPtr)
                    set(S_DELIVERED_LSN, LSNGetDatum(s->delivered_lsn));
                if (spool.ready) {
                    bool behind = spool.durable_end > s->cursor;
                    set(S_LAG_ENTRIES,
                        Int64GetDatum(
                            behind ? static_cast<int64>(spool.durable_entries - s->cursor_entries)
                                   : 0));
                    set(S_LAG_BYTES,
                        Int64GetDatum(behind ? static_cast<int64>(spool.durable_end - s->cursor)
                                             : 0));
                    /* Behind: how long ago the first entry it has not delivered committed (at
                     * most). */
                    double lag = 0;
                    if (behind && s->delivered_commit_time != 0)
                        lag = static_cast<double>(now - s->delivered_commit_time) / 1e6;
                    else if (behind && spool.newest_commit_time != 0)
                        lag = static_cast<double>(now - spool.newest_commit_time) / 1e6;
                    set(S_LAG_SECONDS, Float8GetDatum(lag > 0 ? lag : 0));
                }
            }
            if (s->delivered_commit_time != 0)
                set(S_LAST_DELIVERED_COMMIT, TimestampTzGetDatum(s->delivered_commit_time));
            set(S_ENTRIES_DELIVERED, Int64GetDatum(static_cast<int64>(s->entries_delivered)));
            set(S_BYTES_DELIVERED, Int64GetDatum(static_cast<int64>(s->bytes_delivered)));
            set(S_DEAD_LETTERS, Int64GetDatum(static_cast<int64>(s->dead_letters)));
            set(S_ERRORS, Int64GetDatum(static_cast<int64>(s->errors)));
            set(S_RETRIES, Int64GetDatum(static_cast<int64>(s->retries)));
            if (s->last_error[0] != '\0') {
                set(S_LAST_ERROR, CStringGetTextDatum(s->last_error));
                set(S_LAST_ERROR_AT, TimestampTzGetDatum(s->last_error_at));
            }
            if (s->state == SinkState::retrying && s->retry_at != 0)
                set(S_NEXT_RETRY_AT, TimestampTzGetDatum(s->retry_at));
            if (s->started_at != 0)
                set(S_STARTED_AT, TimestampTzGetDatum(s->started_at));
            set(S_RESTARTS, Int32GetDatum(s->restarts));
            if (s->pid == 0 && s->next_start_at != 0)
                set(S_NEXT_START_AT, TimestampTzGetDatum(s->next_start_at));
        } else {
            set(S_RESTARTS, Int32GetDatum(0));
            set(S_ENTRIES_DELIVERED, Int64GetDatum(0));
            set(S_BYTES_DELIVERED, Int64GetDatum(0));
            set(S_DEAD_LETTERS, Int64GetDatum(0));
            set(S_ERRORS, Int64GetDatum(0));
            set(S_RETRIES, Int64GetDatum(0));
        }
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row.values, row.nulls);
    }
    return (Datum)0;
}

/*
 * What the stream worker made durable in the spool per table since the
 * server started (relid 0: tables beyond kMaxTableStats, together).
 */
static Datum table_counts(PG_FUNCTION_ARGS)
{
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    check_columns(rsinfo->setDesc, 4, "pgsink.table_counts()");
    /* palloc'd, no C++ object: an ERROR may longjmp out of tuplestore_putvalues(). */
    TableStats *tables = static_cast<TableStats *>(palloc(sizeof(shared->tables)));
    LWLockAcquire(shared_lock, LW_SHARED);
    memcpy(tables, shared->tables, sizeof(shared->tables));
    LWLockRelease(shared_lock);
    for (int i = 0; i < kMaxTableStats; i++) {
        const TableStats &t = tables[i];
        if (t.relid == InvalidOid && t.entries == 0)
            continue;
        Row<4> row;
        row.set(0, ObjectIdGetDatum(t.relid));
        row.set(1, Int64GetDatum(static_cast<int64>(t.entries)));
        row.set(2, Int64GetDatum(static_cast<int64>(t.bytes)));
        if (t.last_change_time != 0)
            row.set(3, TimestampTzGetDatum(t.last_change_time));
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row.values, row.nulls);
    }
    return (Datum)0;
}

enum SpoolColumn {
    P_DIRECTORY,
    P_BYTES,
    P_SEGMENTS,
    P_MAX_BYTES,
    P_FULL,
    P_FULL_SINCE,
    P_RETENTION,
    P_OLDEST_OFFSET,
    P_OLDEST_LSN,
    P_OLDEST_COMMIT_TIME,
    P_DURABLE_OFFSET,
    P_DURABLE_ENTRIES,
    P_DURABLE_LSN,
    P_NEWEST_COMMIT_TIME,
    P_NUM
};

/* The oldest retained position; false if the spool has no segment (yet). */
static bool oldest_position(spool::Position *p)
{
    std::string dir = spool::directory();
    if (spool::list_segments(dir).empty())
        return false;
    *p = spool::Reader(dir).oldest();
    return true;
}

static Datum spool_status(PG_FUNCTION_ARGS)
{
    TupleDesc tupdesc;
    if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "pgsink.spool() must return a record");
    check_columns(tupdesc, P_NUM, "pgsink.spool()");
    SpoolShared s;
    LWLockAcquire(shared_lock, LW_SHARED);
    s = shared->spool;
    LWLockRelease(shared_lock);
    spool::Position oldest;
    bool have_oldest = cxx_entry([&] { return oldest_position(&oldest); });

    Row<P_NUM> row;
    auto set = [&](int col, Datum v) { row.set(col, v); };
    set(P_DIRECTORY, CStringGetTextDatum(guc_spool_directory));
    if (guc_spool_max_size_mb > 0)
        set(P_MAX_BYTES, Int64GetDatum(static_cast<int64>(guc_spool_max_size_mb) << 20));
    Interval *retention = static_cast<Interval *>(palloc0(sizeof(Interval)));
    retention->time = static_cast<int64>(guc_spool_retention_s) * USECS_PER_SEC;
    set(P_RETENTION, IntervalPGetDatum(retention));
    if (s.ready) {
        set(P_BYTES, Int64GetDatum(static_cast<int64>(s.bytes)));
        set(P_SEGMENTS, Int32GetDatum(s.segments));
        set(P_FULL, BoolGetDatum(s.full));
        if (s.full)
            set(P_FULL_SINCE, TimestampTzGetDatum(s.full_since));
        set(P_DURABLE_OFFSET, Int64GetDatum(static_cast<int64>(s.durable_end)));
        set(P_DURABLE_ENTRIES, Int64GetDatum(static_cast<int64>(s.durable_entries)));
        if (s.durable_lsn != InvalidXLogRecPtr)
            set(P_DURABLE_LSN, LSNGetDatum(s.durable_lsn));
        if (s.newest_commit_time != 0)
            set(P_NEWEST_COMMIT_TIME, TimestampTzGetDatum(s.newest_commit_time));
    }
    if (have_oldest) {
        set(P_OLDEST_OFFSET, Int64GetDatum(static_cast<int64>(oldest.offset)));
        if (oldest.lsn != 0)
            set(P_OLDEST_LSN, LSNGetDatum(oldest.lsn));
        if (oldest.commit_time != 0)
            set(P_OLDEST_COMMIT_TIME, TimestampTzGetDatum(oldest.commit_time));
    }
    HeapTuple tuple = heap_form_tuple(tupdesc, row.values, row.nulls);
    PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

/*
 * Point a sink's cursor at the first entry at or after the target (an lsn,
 * or a commit time; -infinity: the oldest retained). Its delivery worker
 * applies it before its next batch, after sending the schemas in effect
 * there. Returns the new cursor (a spool offset).
 */
static Datum rewind_sink(const char *sink, bool by_lsn, XLogRecPtr lsn, TimestampTz since)
{
    LWLockAcquire(shared_lock, LW_SHARED);
    SinkSlot *slot = find_sink_slot(sink);
    int index = slot ? static_cast<int>(slot - shared->sinks) : -1;
    SpoolShared sp = shared->spool;
    LWLockRelease(shared_lock);
    if (!sink_configured(sink) || index < 0)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
                        errmsg("sink \"%s\" is not in pgsink.sink", sink),
                        errhint("SELECT sink FROM pgsink.sinks lists the configured sinks.")));
    if (!sp.ready)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the spool is not open yet"),
                        errhint("The stream worker opens it when it starts; see pgsink.status.")));

    spool::Position p = cxx_entry([&] {
        spool::Reader reader(spool::directory());
        if (!by_lsn && TIMESTAMP_IS_NOBEGIN(since))
            return reader.oldest();
        return by_lsn ? reader.seek_lsn(lsn, sp.durable_end)
                      : reader.seek_time(since, sp.durable_end);
    });

    /*
     * Under spool_lock, the stream worker removes no segment: the target is
     * checked to be there and published (it then stays) in one step.
     */
    LWLockAcquire(spool_lock, LW_EXCLUSIVE);
    uint64 oldest = cxx_entry([&] { return spool::Reader(spool::directory()).oldest().offset; });
    if (oldest > p.offset) {
        LWLockRelease(spool_lock);
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the spool removed the entries to rewind to while the rewind "
                               "was requested"),
                        errhint("Rewind to a later point, or raise pgsink.spool_retention.")));
    }
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    SinkSlot &s = shared->sinks[index];
    s.rewind_offset = p.offset;
    s.rewind_entries = p.entries;
    uint64 request = ++s.rewind_requests;
    int procno = s.pid != 0 ? s.procno : -1;
    LWLockRelease(shared_lock);
    LWLockRelease(spool_lock);
    set_latch_of(procno);

    /* Wait (briefly) for the worker to take it. */
    TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
    for (;;) {
        LWLockAcquire(shared_lock, LW_SHARED);
        bool applied = shared->sinks[index].rewind_applied >= request;
        LWLockRelease(shared_lock);
        if (applied)
            break;
        if (GetCurrentTimestamp() >= deadline) {
            ereport(
                NOTICE,
                (errmsg("the delivery worker of sink \"%s\" has not applied the rewind yet", sink),
                 errdetail("It applies it when it runs again; see pgsink.sinks.")));
            break;
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    }
    PG_RETURN_INT64(static_cast<int64>(p.offset));
}

} // namespace pgsink

Datum pgsink_sinks(PG_FUNCTION_ARGS)
{
    return pgsink::sinks(fcinfo);
}

Datum pgsink_table_counts(PG_FUNCTION_ARGS)
{
    return pgsink::table_counts(fcinfo);
}

Datum pgsink_spool(PG_FUNCTION_ARGS)
{
    return pgsink::spool_status(fcinfo);
}

/* Sink names are case-folded, as in pgsink.sink. */
static char *sink_name_arg(PG_FUNCTION_ARGS)
{
    char *sink = text_to_cstring(PG_GETARG_TEXT_PP(0));
    for (char *c = sink; *c; c++)
        *c = static_cast<char>(pg_tolower(static_cast<unsigned char>(*c)));
    return sink;
}

Datum pgsink_rewind_sink_time(PG_FUNCTION_ARGS)
{
    char *sink = sink_name_arg(fcinfo);
    return pgsink::rewind_sink(sink, false, InvalidXLogRecPtr, PG_GETARG_TIMESTAMPTZ(1));
}

Datum pgsink_rewind_sink_lsn(PG_FUNCTION_ARGS)
{
    char *sink = sink_name_arg(fcinfo);
    return pgsink::rewind_sink(sink, true, PG_GETARG_LSN(1), 0);
}

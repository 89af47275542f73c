/*
 * status.cpp: pgsink.status(), a snapshot of the worker's shared state and
 * of its replication slot, read under the locks that guard them.
 */
#include "core/config.h"
#include "core/shared_state.h"
#include "boundary/pg_boundary.h"
#include "decoding/slot.h"

extern "C" {
#include "access/htup_details.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "funcapi.h"
#include "replication/slot.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "commands/dbcommands.h"

PGDLLEXPORT Datum pgsink_status(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_status);
}

namespace pgsink
{

enum StatusColumn {
    COL_WORKER_PID,
    COL_LAUNCHER_PID,
    COL_STATE,
    COL_DATABASE,
    COL_SLOT_NAME,
    COL_SLOT_ACTIVE,
    COL_CONFIRMED_LSN,
    COL_LAG_BYTES,
    COL_RETAINED_WAL_BYTES,
    COL_ENTRIES_DELIVERED,
    COL_TRANSACTIONS_DELIVERED,
    COL_LAST_COMMIT_TIME,
    COL_LAST_ERROR,
    COL_LAST_ERROR_AT,
    COL_WORKER_STARTED_AT,
    COL_WORKER_RESTARTS,
    COL_NEXT_START_AT,
    COL_SINK_RETRY_AT,
    COL_CONFIG_PROBLEM,
    COL_LAG_SECONDS,
    COL_PAUSED_SINCE,
    NUM_COLUMNS
};

static Datum status(PG_FUNCTION_ARGS)
{
    TupleDesc tupdesc;
    if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "pgsink.status() must return a record");
    if (tupdesc->natts != NUM_COLUMNS)
        elog(ERROR,
             "pgsink.status() has %d columns, expected %d: run ALTER EXTENSION pgsink "
             "UPDATE",
             tupdesc->natts, NUM_COLUMNS);

    SharedState s;
    LWLockAcquire(shared_lock, LW_SHARED);
    memcpy(&s, shared, sizeof(s));
    LWLockRelease(shared_lock);

    const char *slot_name = s.slot_name[0] ? s.slot_name : guc_slot_name;
    SlotState slot = read_slot_state(slot_name);
    XLogRecPtr flush = RecoveryInProgress() ? InvalidXLogRecPtr : GetFlushRecPtr(nullptr);

    Datum values[NUM_COLUMNS];
    bool nulls[NUM_COLUMNS];
    memset(nulls, 0, sizeof(nulls));

    auto set_or_null = [&](int col, bool present, Datum value) {
        values[col] = present ? value : (Datum)0;
        nulls[col] = !present;
    };

    set_or_null(COL_WORKER_PID, s.worker_pid != 0, Int32GetDatum(s.worker_pid));
    set_or_null(COL_LAUNCHER_PID, s.launcher_pid != 0, Int32GetDatum(s.launcher_pid));
    values[COL_STATE] = CStringGetTextDatum(worker_state_name(s.state));
    values[COL_DATABASE] = CStringGetTextDatum(s.database[0] ? s.database : guc_database);
    values[COL_SLOT_NAME] = CStringGetTextDatum(slot_name);
    values[COL_SLOT_ACTIVE] = BoolGetDatum(slot.active);
    set_or_null(COL_CONFIRMED_LSN, slot.exists && !XLogRecPtrIsInvalid(slot.confirmed_flush),
                LSNGetDatum(slot.confirmed_flush));
    set_or_null(COL_LAG_BYTES,
                slot.exists && !XLogRecPtrIsInvalid(slot.confirmed_flush) && flush != 0,
                Int64GetDatum(flush > slot.confirmed_flush ? flush - slot.confirmed_flush : 0));
    set_or_null(COL_RETAINED_WAL_BYTES,
                slot.exists && !XLogRecPtrIsInvalid(slot.restart_lsn) && flush != 0,
                Int64GetDatum(flush > slot.restart_lsn ? flush - slot.restart_lsn : 0));
    values[COL_ENTRIES_DELIVERED] = Int64GetDatum(s.entries_delivered);
    values[COL_TRANSACTIONS_DELIVERED] = Int64GetDatum(s.transactions_delivered);
    set_or_null(COL_LAST_COMMIT_TIME, s.last_commit_time != 0,
                TimestampTzGetDatum(s.last_commit_time));

    /* Everything that needs an operator, most fundamental first ("; " between). */
    StringInfoData problems;
    initStringInfo(&problems);
    auto add_problem = [&](const char *p) {
        appendStringInfo(&problems, "%s%s", problems.len ? "; " : "", p);
    };
    if (const char *p = server_config_problem())
        add_problem(p);
    if (slot.invalidated)
        add_problem("the replication slot was invalidated because it fell behind "
                    "max_slot_wal_keep_size: changes were lost; set pgsink.auto_resync = on to "
                    "heal by itself, or drop the slot with pg_drop_replication_slot() and call "
                    "pgsink.resync()");
    for (const char *p : s.problems)
        if (p[0] != '\0')
            add_problem(p);
    /* The slots of pgsink.database, wherever pgsink.status() is called from. */
    Oid database = get_database_oid(s.database[0] ? s.database : guc_database, true);
    const char *abandoned = OidIsValid(database) ? abandoned_slots(slot_name, database) : "";
    if (abandoned[0] != '\0')
        add_problem(psprintf("replication slots of plugin pgsink that the stream worker does not "
                             "use hold WAL (%s): if nothing else reads them "
                             "(pg_logical_slot_get_changes()), drop each with SELECT "
                             "pg_drop_replication_slot('name')",
                             abandoned));
    const char *problem = problems.len ? problems.data : nullptr;
    set_or_null(COL_LAST_ERROR, s.last_error[0] != '\0', CStringGetTextDatum(s.last_error));
    set_or_null(COL_LAST_ERROR_AT, s.last_error_at != 0, TimestampTzGetDatum(s.last_error_at));
    set_or_null(COL_WORKER_STARTED_AT, s.worker_started_at != 0,
                TimestampTzGetDatum(s.worker_started_at));
    values[COL_WORKER_RESTARTS] = Int32GetDatum(s.worker_restarts);
    set_or_null(COL_NEXT_START_AT, s.worker_pid == 0 && s.next_start_at != 0,
                TimestampTzGetDatum(s.next_start_at));
    /* Sinks retry in their delivery workers since 0.3.0: see pgsink.sinks.next_retry_at. */
    set_or_null(COL_SINK_RETRY_AT, false, (Datum)0);
    set_or_null(COL_CONFIG_PROBLEM, problem != nullptr,
                problem ? CStringGetTextDatum(problem) : (Datum)0);

    /*
     * Caught up: nothing committed waits. Behind or paused: at most the age
     * of the last transaction put in the spool (what waits committed after).
     */
    bool running = s.state == WorkerState::streaming || s.state == WorkerState::paused ||
                   s.state == WorkerState::spool_full;
    bool idle = s.caught_up && s.pause.decoding_since == 0 && s.state == WorkerState::streaming;
    TimestampTz now = GetCurrentTimestamp();
    set_or_null(COL_LAG_SECONDS, running && (idle || s.last_commit_time != 0),
                Float8GetDatum(idle ? 0.0 : static_cast<double>(now - s.last_commit_time) / 1e6));
    set_or_null(COL_PAUSED_SINCE, s.pause.decoding_since != 0,
                TimestampTzGetDatum(s.pause.decoding_since));

    HeapTuple tuple = heap_form_tuple(tupdesc, values, nulls);
    PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

} // namespace pgsink

Datum pgsink_status(PG_FUNCTION_ARGS)
{
    return pgsink::cxx_entry([&] { return pgsink::status(fcinfo); });
}

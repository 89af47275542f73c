/*
 * wait.cpp: pgsink.wait_for_delivery(timeout): block until everything
 * committed before the call is durable in every sink.
 *
 * It writes a small non-transactional logical message, flushes it, and waits
 * until every sink in pgsink.sink has delivered past it: a delivery worker
 * publishes the spool's durable lsn as delivered once its cursor reached
 * the spool's end, and the spool's durable lsn passes the message only
 * after the stream worker decoded past it. Both announce their progress
 * (announce_progress()), so the call returns as soon as the last sink is
 * there.
 */
#include <algorithm>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/shared_state.h"
#include "decoding/slot.h"

extern "C" {
#include "access/xlog.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/message.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

PGDLLEXPORT Datum pgsink_wait_for_delivery(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_wait_for_delivery);
}

namespace pgsink
{

static Datum wait_for_delivery(PG_FUNCTION_ARGS)
{
    Interval *timeout = PG_GETARG_INTERVAL_P(0);
    int64 timeout_us = timeout->time + (int64)timeout->day * USECS_PER_DAY +
                       (int64)timeout->month * DAYS_PER_MONTH * USECS_PER_DAY;
    if (RecoveryInProgress())
        ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                        errmsg("pgsink.wait_for_delivery() cannot run during recovery")));

    const char *marker = "wait_for_delivery";
    XLogRecPtr target = LogLogicalMessage("pgsink", marker, strlen(marker), false);
    XLogFlush(target);

    TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_us / 1000);
    char names[kMaxSinks][kSinkNameLen];
    /*
     * Woken when the slot or a sink moves forward (announce_progress()), and
     * every 100 ms anyway: a sink listed in pgsink.sink may have no worker
     * yet, and the list itself may change.
     */
    ConditionVariablePrepareToSleep(&shared->progress_cv);
    for (;;) {
        XLogRecPtr confirmed = read_slot_state(guc_slot_name).confirmed_flush;
        /* The sink that is furthest behind, and how far it got. */
        int n = configured_sinks(names);
        const char *behind = nullptr;
        XLogRecPtr delivered = InvalidXLogRecPtr;
        char behind_state[64] = "";
        char behind_error[kErrorLen] = "";
        LWLockAcquire(shared_lock, LW_SHARED);
        for (int i = 0; i < n && behind == nullptr; i++) {
            SinkSlot *slot = find_sink_slot(names[i]);
            XLogRecPtr at = slot ? slot->delivered_lsn : InvalidXLogRecPtr;
            if (at < target) {
                behind = names[i];
                delivered = at;
                strlcpy(behind_state, sink_state_name(slot ? slot->state : SinkState::stopped),
                        sizeof(behind_state));
                if (slot)
                    strlcpy(behind_error, slot->last_error, sizeof(behind_error));
            }
        }
        WorkerState stream_state = shared->state;
        char stream_error[kErrorLen];
        strlcpy(stream_error, shared->last_error, sizeof(stream_error));
        LWLockRelease(shared_lock);
        if (behind == nullptr && confirmed != InvalidXLogRecPtr && confirmed >= target) {
            ConditionVariableCancelSleep();
            PG_RETURN_LSN(confirmed);
        }
        TimestampTz now = GetCurrentTimestamp();
        if (now >= deadline) {
            if (behind != nullptr && confirmed >= target)
                ereport(ERROR,
                        (errcode(ERRCODE_QUERY_CANCELED),
                         errmsg("pgsink did not deliver up to %X/%X within the timeout",
                                static_cast<uint32>(target >> 32), static_cast<uint32>(target)),
                         errdetail("Sink \"%s\" is %s, delivered up to %X/%X%s%s.", behind,
                                   behind_state, static_cast<uint32>(delivered >> 32),
                                   static_cast<uint32>(delivered),
                                   behind_error[0] ? "; last error: " : "", behind_error),
                         errhint("See SELECT * FROM pgsink.sinks.")));
            ereport(ERROR,
                    (errcode(ERRCODE_QUERY_CANCELED),
                     errmsg("pgsink did not deliver up to %X/%X within the timeout",
                            static_cast<uint32>(target >> 32), static_cast<uint32>(target)),
                     errdetail("The stream worker is %s; confirmed position %X/%X%s%s.",
                               worker_state_name(stream_state),
                               static_cast<uint32>(confirmed >> 32), static_cast<uint32>(confirmed),
                               stream_error[0] ? "; last error: " : "", stream_error),
                     errhint("See SELECT * FROM pgsink.status.")));
        }
        /*
         * Interrupts are served inside; an ERROR's abort cancels the sleep.
         * Never past the deadline: a short timeout ends on time.
         */
        long sleep_ms = static_cast<long>(std::min<int64>((deadline - now + 999) / 1000, 100));
        (void)ConditionVariableTimedSleep(&shared->progress_cv, sleep_ms, PG_WAIT_EXTENSION);
    }
}

} // namespace pgsink

Datum pgsink_wait_for_delivery(PG_FUNCTION_ARGS)
{
    return pgsink::cxx_entry([&] { return pgsink::wait_for_delivery(fcinfo); });
}

/*
 * delivery_supervisor.cpp: the launcher's side of delivery workers (see
 * workers.h, supervise_deliveries()).
 *
 * Each sink in pgsink.sink gets a slot in shared memory (shared->sinks) and
 * a worker. A worker that stops is started again after a back-off that
 * doubles up to pgsink.retry_max_interval, and starts over once a worker
 * delivered or ran a minute. A sink removed from the list has its worker
 * stopped and its slot freed; its cursor file stays, so that adding it
 * again resumes where it was (or says it needs a rewind). A launcher that
 * restarted adopts the workers still running, by their pids.
 */
#include <algorithm>
#include <csignal>
#include <cstring>

#include "core/config.h"
#include "core/shared_state.h"
#include "worker/workers.h"

extern "C" {
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

static constexpr long kHealthyRunMs = 60000;
static constexpr long kFirstBackoffMs = 1000;

struct Supervised {
    BackgroundWorkerHandle *handle = nullptr;
    Oid database = InvalidOid;
    TimestampTz started = 0;
    TimestampTz next_start = 0;
    long backoff_ms = kFirstBackoffMs;
    bool reported_no_slot = false; /* said once, until a worker starts */
};
static Supervised workers[kMaxSinks];

static BackgroundWorkerHandle *start_delivery_worker(Oid dboid, int slot, const char *sink,
                                                     bool *reported)
{
    BackgroundWorker bgw;
    char name[BGW_MAXLEN];
    snprintf(name, sizeof(name), "pgsink delivery %s", sink);
    init_dynamic_worker(bgw, "pgsink_delivery_main", name, "pgsink delivery");
    DeliveryArgs args;
    memset(&args, 0, sizeof(args));
    args.database = dboid;
    args.slot = slot;
    strlcpy(args.sink, sink, sizeof(args.sink));
    memcpy(bgw.bgw_extra, &args, sizeof(args));

    BackgroundWorkerHandle *handle = nullptr;
    if (!RegisterDynamicBackgroundWorker(&bgw, &handle)) {
        if (*reported)
            return nullptr;
        *reported = true;
        ereport(WARNING,
                (errmsg("pgsink: could not start the delivery worker of sink \"%s\": no "
                        "background worker slot free",
                        sink),
                 errhint("Raise max_worker_processes (pgsink needs two, plus one per sink).")));
        return nullptr;
    }
    *reported = false;
    return handle;
}

/* Give every listed sink a slot; free the slots of sinks no longer listed once stopped. */
static void assign_slots(char (*names)[kSinkNameLen], int n)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    for (int i = 0; i < kMaxSinks; i++) {
        SinkSlot &s = shared->sinks[i];
        if (!s.in_use)
            continue;
        bool listed = false;
        for (int j = 0; j < n; j++)
            listed = listed || strcmp(names[j], s.name) == 0;
        bool running = s.pid != 0 && kill(s.pid, 0) == 0;
        if (!listed && !running && workers[i].handle == nullptr) {
            memset(&s, 0, sizeof(s));
            s.procno = -1;
            workers[i] = Supervised();
        }
    }
    for (int j = 0; j < n; j++) {
        if (find_sink_slot(names[j]) != nullptr)
            continue;
        for (int i = 0; i < kMaxSinks; i++) {
            SinkSlot &s = shared->sinks[i];
            if (s.in_use)
                continue;
            memset(&s, 0, sizeof(s));
            s.in_use = true;
            s.procno = -1;
            strlcpy(s.name, names[j], sizeof(s.name));
            workers[i] = Supervised();
            break;
        }
    }
    LWLockRelease(shared_lock);
}

long supervise_deliveries(Oid dboid)
{
    char names[kMaxSinks][kSinkNameLen];
    int n = configured_sinks(names);
    assign_slots(names, n);
    long timeout_ms = 1000;
    TimestampTz now = GetCurrentTimestamp();

    for (int i = 0; i < kMaxSinks; i++) {
        Supervised &w = workers[i];
        LWLockAcquire(shared_lock, LW_SHARED);
        SinkSlot s = shared->sinks[i];
        LWLockRelease(shared_lock);
        if (!s.in_use)
            continue;
        bool listed = false;
        for (int j = 0; j < n; j++)
            listed = listed || strcmp(names[j], s.name) == 0;
        bool adopted = w.handle == nullptr && s.pid != 0 && kill(s.pid, 0) == 0;

        /* Not listed, or in another database: stop it. */
        bool wrong_database = w.handle != nullptr && w.database != dboid;
        if (!listed || wrong_database || (adopted && !OidIsValid(dboid))) {
            if (w.handle != nullptr)
                TerminateBackgroundWorker(w.handle);
            else if (adopted)
                (void)kill(s.pid, SIGTERM);
        }
        if (adopted)
            continue; /* started by an earlier launcher: its pid says when it is gone */

        if (w.handle != nullptr) {
            pid_t pid;
            if (GetBackgroundWorkerPid(w.handle, &pid) != BGWH_STOPPED)
                continue;
            pfree(w.handle);
            w.handle = nullptr;
            if (s.streamed || TimestampDifferenceExceeds(w.started, now, kHealthyRunMs))
                w.backoff_ms = kFirstBackoffMs;
            w.next_start = TimestampTzPlusMilliseconds(now, w.backoff_ms);
            w.backoff_ms = std::min<long>(w.backoff_ms * 2, guc_retry_max_interval_ms);
            LWLockAcquire(shared_lock, LW_EXCLUSIVE);
            shared->sinks[i].restarts++;
            shared->sinks[i].next_start_at = w.next_start;
            if (shared->sinks[i].state != SinkState::needs_reimport)
                shared->sinks[i].state = SinkState::backing_off;
            LWLockRelease(shared_lock);
        }
        if (!listed || !OidIsValid(dboid))
            continue;
        if (now < w.next_start) {
            timeout_ms = std::min<long>(timeout_ms, std::max<long>(1, (w.next_start - now) / 1000));
            continue;
        }
        w.handle = start_delivery_worker(dboid, i, s.name, &w.reported_no_slot);
        w.database = dboid;
        w.started = now;
        if (w.handle == nullptr)
            w.next_start = TimestampTzPlusMilliseconds(now, kFirstBackoffMs);
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        shared->sinks[i].next_start_at = 0;
        LWLockRelease(shared_lock);
    }
    return timeout_ms;
}

} // namespace pgsink

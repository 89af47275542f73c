/*
 * shared_state.cpp: allocation of and small helpers around SharedState.
 */
#include <cstring>

#include "core/pause.h"
#include "core/shared_state.h"

extern "C" {
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

SharedState *shared = nullptr;
LWLock *shared_lock = nullptr;
LWLock *spool_lock = nullptr;
LWLock *pause_lock = nullptr;

static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

const char *worker_state_name(WorkerState s)
{
    switch (s) {
    case WorkerState::stopped:
        return "stopped";
    case WorkerState::starting:
        return "starting";
    case WorkerState::waiting_for_database:
        return "waiting for database";
    case WorkerState::waiting_for_extension:
        return "waiting for extension";
    case WorkerState::misconfigured:
        return "misconfigured";
    case WorkerState::streaming:
        return "streaming";
    case WorkerState::backing_off:
        return "backing off";
    case WorkerState::spool_full:
        return "spool full";
    case WorkerState::paused:
        return "paused";
    }
    return "unknown";
}

const char *sink_state_name(SinkState s)
{
    switch (s) {
    case SinkState::stopped:
        return "stopped";
    case SinkState::starting:
        return "starting";
    case SinkState::waiting_for_spool:
        return "waiting for spool";
    case SinkState::delivering:
        return "delivering";
    case SinkState::idle:
        return "idle";
    case SinkState::retrying:
        return "retrying";
    case SinkState::backing_off:
        return "backing off";
    case SinkState::needs_reimport:
        return "needs reimport";
    case SinkState::paused:
        return "paused";
    }
    return "unknown";
}

static void shmem_request()
{
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
    RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)));
    RequestNamedLWLockTranche("pgsink", 3);
}

static void shmem_startup()
{
    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();

    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    shared = static_cast<SharedState *>(ShmemInitStruct("pgsink", sizeof(SharedState), &found));
    if (!found) {
        memset(shared, 0, sizeof(SharedState));
        shared->launcher_procno = -1;
        shared->worker_procno = -1;
        shared->state = WorkerState::stopped;
        shared->confirmed_lsn = InvalidXLogRecPtr;
        for (SinkSlot &slot : shared->sinks)
            slot.procno = -1;
        load_pause_state(&shared->pause);
        ConditionVariableInit(&shared->progress_cv);
    }
    shared_lock = &(GetNamedLWLockTranche("pgsink"))[0].lock;
    spool_lock = &(GetNamedLWLockTranche("pgsink"))[1].lock;
    pause_lock = &(GetNamedLWLockTranche("pgsink"))[2].lock;
    LWLockRelease(AddinShmemInitLock);
}

void request_shared_state()
{
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = shmem_request;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = shmem_startup;
}

void record_error(const char *message)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    strlcpy(shared->last_error, message, sizeof(shared->last_error));
    shared->last_error_at = GetCurrentTimestamp();
    LWLockRelease(shared_lock);
}

void clear_error()
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->last_error[0] = '\0';
    shared->last_error_at = 0;
    shared->same_failures = 0;
    LWLockRelease(shared_lock);
}

void set_problem(ProblemKind kind, const char *message)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    strlcpy(shared->problems[static_cast<int>(kind)], message, kErrorLen);
    LWLockRelease(shared_lock);
}

void clear_problem(ProblemKind kind)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->problems[static_cast<int>(kind)][0] = '\0';
    LWLockRelease(shared_lock);
}

void set_worker_state(WorkerState s)
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->state = s;
    LWLockRelease(shared_lock);
}

void set_latch_of(int procno)
{
    if (procno >= 0 && static_cast<uint32>(procno) < ProcGlobal->allProcCount)
        SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

void wake_worker()
{
    LWLockAcquire(shared_lock, LW_SHARED);
    int procno = shared->worker_pid != 0 ? shared->worker_procno : -1;
    LWLockRelease(shared_lock);
    set_latch_of(procno);
}

SinkSlot *find_sink_slot(const char *name)
{
    for (SinkSlot &slot : shared->sinks)
        if (slot.in_use && strcmp(slot.name, name) == 0)
            return &slot;
    return nullptr;
}

void announce_progress()
{
    ConditionVariableBroadcast(&shared->progress_cv);
}

void wake_delivery_workers()
{
    int procnos[kMaxSinks];
    LWLockAcquire(shared_lock, LW_SHARED);
    for (int i = 0; i < kMaxSinks; i++)
        procnos[i] =
            shared->sinks[i].in_use && shared->sinks[i].pid != 0 ? shared->sinks[i].procno : -1;
    LWLockRelease(shared_lock);
    for (int procno : procnos)
        set_latch_of(procno);
}

void request_import_scan()
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    shared->import_requests++;
    LWLockRelease(shared_lock);
}

} // namespace pgsink

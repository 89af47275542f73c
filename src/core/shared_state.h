/*
 * shared_state.h: pgsink's state in shared memory, read by pgsink.status().
 *
 * Holds only plain values (pids, proc numbers, LSNs, counters, text): never a
 * process-local pointer or file descriptor. Guarded by one LWLock.
 */
#pragma once

extern "C" {
#include "postgres.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "storage/lwlock.h"
}

namespace pgsink
{

enum class WorkerState : int {
    stopped = 0,           /* no stream worker running */
    starting,              /* connected, checking the database */
    waiting_for_database,  /* pgsink.database does not exist (launcher) */
    waiting_for_extension, /* CREATE EXTENSION pgsink not run yet */
    misconfigured,         /* wal_level / output_plugin_libraries: see last_error */
    streaming,             /* decoding and delivering */
    sink_retrying,         /* the sink failed; retrying with back-off */
    backing_off,           /* the worker failed; the launcher restarts it later */
};

const char *worker_state_name(WorkerState s);

constexpr int kErrorLen = 1024;

struct SharedState {
    pid_t launcher_pid;
    int launcher_procno; /* index into ProcGlobal->allProcs, for its latch */
    pid_t worker_pid;
    int worker_procno;
    WorkerState state;
    char database[NAMEDATALEN];
    char slot_name[NAMEDATALEN];
    XLogRecPtr confirmed_lsn;
    uint64 entries_delivered;
    uint64 transactions_delivered;
    TimestampTz last_commit_time; /* commit time of the last delivered transaction */
    TimestampTz worker_started_at;
    int worker_restarts;
    TimestampTz next_start_at; /* when the launcher restarts a failed worker */
    TimestampTz sink_retry_at; /* when a failing sink is tried again (state sink_retrying) */
    uint64 import_requests;    /* bumped when an import is scheduled: the worker looks at once */
    char last_error[kErrorLen];
    TimestampTz last_error_at;
    /*
     * Problems that need an operator, found while running (the slot was
     * lost, belongs to another database, decoding is stuck), for
     * pgsink.status().config_problem; empty if none.
     */
    char problems[4][kErrorLen]; /* by ProblemKind; [0] unused */
    /* The worker failed this many times in a row with one error at one slot position. */
    int same_failures;
    XLogRecPtr failed_at; /* the slot position of the last failure */
    bool worker_streamed; /* the current worker made progress: it was healthy */
    bool restart_now;     /* the worker exited to apply a reload: start the next at once */
    bool sink_error;      /* last_error is the sink's: cleared once the sink works again */
    /* The slot was lost: re-imports must have job ids above this (see report_lost_slot()). */
    bool slot_lost;
    int64 slot_lost_watermark;
};

/* Attached in every process by the shmem startup hook. */
extern SharedState *shared;
extern LWLock *shared_lock;

void request_shared_state();

/* Record an error for pgsink.status(); also keeps it for the log's dedup. */
void record_error(const char *message);
/* The error is over (the sink or the worker recovered): pgsink.status() stops showing it. */
void clear_error();
/* The same, if the error on record is the sink's (shared->sink_error). */
void clear_sink_error();
/* Kinds of shared->problems: each is set and cleared by what starts and ends it. */
enum class ProblemKind : int { none = 0, slot_database, slot_lost, stuck };
/* Set a problem pgsink.status() shows in config_problem. */
void set_problem(ProblemKind kind, const char *message);
/* Clear it, if it is of that kind. */
void clear_problem(ProblemKind kind);
void set_worker_state(WorkerState s);

/* Wake the stream worker by setting its latch. */
void wake_worker();

/* An import was scheduled: the worker should look at pgsink.import_jobs. */
void request_import_scan();

} // namespace pgsink

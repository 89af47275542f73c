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
#include "storage/condition_variable.h"
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
    backing_off,           /* the worker failed; the launcher restarts it later */
    spool_full,            /* the spool reached pgsink.spool_max_size: decoding waits */
    paused,                /* pgsink.pause(): decoding waits for pgsink.resume() */
};

/* A delivery worker's state, one per configured sink (pgsink.sinks). */
enum class SinkState : int {
    stopped = 0,       /* no delivery worker running */
    starting,          /* started, opening the spool and the sink */
    waiting_for_spool, /* the stream worker has not opened the spool yet */
    delivering,        /* behind the spool's end, delivering */
    idle,              /* caught up with the spool */
    retrying,          /* the sink failed; retrying with back-off */
    backing_off,       /* the worker failed; the launcher restarts it later */
    needs_reimport,    /* entries it never delivered left the spool: see last_error */
    paused,            /* pgsink.pause('<sink>'): delivery waits for pgsink.resume() */
};
const char *sink_state_name(SinkState s);

const char *worker_state_name(WorkerState s);

constexpr int kErrorLen = 1024;
/* Most sinks pgsink.sink may list. */
constexpr int kMaxSinks = 8;

/*
 * The spool as the stream worker last made it durable (see spool/). Readers
 * deliver only up to durable_end: bytes after it may still be cut.
 */
struct SpoolShared {
    bool ready;                     /* the stream worker opened (recovered) the spool */
    uint64 id;                      /* identity of the spool directory (cursors carry it) */
    uint64 durable_end;             /* offset up to which the spool is durable */
    uint64 durable_entries;         /* entries before durable_end, since the spool began */
    XLogRecPtr durable_lsn;         /* every transaction committed before it is in the spool */
    TimestampTz newest_commit_time; /* commit time of the last durable transaction */
    uint64 oldest_offset;           /* first retained offset (start of the oldest segment) */
    uint64 bytes;                   /* disk used by segments */
    int segments;
    bool full; /* pgsink.spool_max_size reached: decoding waits */
    TimestampTz full_since;
};

/* One configured sink and its delivery worker. */
struct SinkSlot {
    bool in_use;
    char name[NAMEDATALEN];
    pid_t pid;
    int procno;
    SinkState state;
    bool cursor_valid;                 /* cursor was loaded or saved by the sink's worker */
    uint64 spool_id;                   /* the spool the cursor points into */
    uint64 cursor;                     /* spool offset delivered up to (durable in the sink) */
    uint64 cursor_entries;             /* entries before cursor */
    XLogRecPtr delivered_lsn;          /* every transaction committed before it is delivered */
    TimestampTz delivered_commit_time; /* commit time of the last delivered entry */
    uint64 entries_delivered;          /* since the server started */
    uint64 bytes_delivered;
    uint64 dead_letters; /* entries parked since the server started */
    uint64 errors;       /* failed attempts and worker failures, since the server started */
    uint64 retries;      /* attempts made again after a retryable failure */
    char last_error[kErrorLen];
    TimestampTz last_error_at;
    TimestampTz retry_at; /* next attempt while retrying */
    TimestampTz started_at;
    int restarts;
    TimestampTz next_start_at;
    bool streamed; /* the current worker delivered: it was healthy */
    /* pgsink.rewind_sink(): a new cursor, applied by the worker before its next batch. */
    uint64 rewind_requests;
    uint64 rewind_applied;
    uint64 rewind_offset;
    uint64 rewind_entries;
};

/* Most tables counted apart in pgsink.tables and the metrics (the rest: relid 0). */
constexpr int kMaxTableStats = 512;

/* What the stream worker made durable in the spool for one captured table, since start. */
struct TableStats {
    Oid relid; /* 0: free, or (in the last slot) every table that found no slot */
    uint64 entries;
    uint64 bytes;
    TimestampTz last_change_time; /* commit time of its last change in the spool */
};

/*
 * pgsink.pause() and pgsink.resume(): kept in shared memory and in the file
 * kPauseFile of the data directory, so a pause outlives a restart.
 */
struct PauseState {
    TimestampTz decoding_since; /* 0: decoding runs */
    struct {
        char name[NAMEDATALEN]; /* "": free */
        TimestampTz since;
    } sinks[kMaxSinks];
};

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
    /* The slot was lost: re-imports must have job ids above this (see report_lost_slot()). */
    bool slot_lost;
    int64 slot_lost_watermark;
    SpoolShared spool;
    SinkSlot sinks[kMaxSinks];
    /* The stream worker's last round decoded all WAL flushed when it began. */
    bool caught_up;
    PauseState pause;
    TableStats tables[kMaxTableStats];
    /*
     * Broadcast when the slot's confirmed position or a sink's delivered
     * position advances: pgsink.wait_for_delivery() sleeps on it.
     */
    ConditionVariable progress_cv;
};

/* Attached in every process by the shmem startup hook. */
extern SharedState *shared;
extern LWLock *shared_lock;
/*
 * Held while the stream worker decides which spool segments to remove and
 * removes them, and while pgsink.rewind_sink() checks its target and
 * publishes it: a rewind's target is never removed under it.
 */
extern LWLock *spool_lock;

void request_shared_state();

/* Record an error for pgsink.status(); also keeps it for the log's dedup. */
void record_error(const char *message);
/* The error is over (the sink or the worker recovered): pgsink.status() stops showing it. */
void clear_error();
/* Kinds of shared->problems: each is set and cleared by what starts and ends it. */
enum class ProblemKind : int { none = 0, slot_database, slot_lost, stuck };
/* Set a problem pgsink.status() shows in config_problem. */
void set_problem(ProblemKind kind, const char *message);
/* Clear it, if it is of that kind. */
void clear_problem(ProblemKind kind);
void set_worker_state(WorkerState s);

/* Wake the stream worker by setting its latch. */
void wake_worker();

/* The slot of the sink with this name, or nullptr; call with shared_lock held. */
SinkSlot *find_sink_slot(const char *name);
/* The slot or a sink moved forward: wake pgsink.wait_for_delivery() (shared_lock not held). */
void announce_progress();
/* Wake every delivery worker (new entries are durable in the spool). */
void wake_delivery_workers();
/* Set a process's latch by its proc number (-1: nobody). */
void set_latch_of(int procno);

/* An import was scheduled: the worker should look at pgsink.import_jobs. */
void request_import_scan();

} // namespace pgsink

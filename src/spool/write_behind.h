/*
 * write_behind.h: the spool's writes, done by a thread of their own.
 *
 * The stream worker spends about a third of its time in the kernel when it
 * writes the spool itself: copying into the page cache, ext4's block
 * allocation, starting writeback (sync_file_range). Handing full buffers to
 * a thread lets decoding go on meanwhile, on the other core.
 *
 * The thread only calls write() and sync_file_range() on the descriptor it
 * is given, and never PostgreSQL (DESIGN.md: no thread calls into
 * PostgreSQL); it is created with every signal blocked, so PostgreSQL's
 * handlers run in the worker's own thread. A failed write is kept and
 * reported to the worker's thread at its next call (the writes after it are
 * dropped: the worker restarts, and the spool is cut back to its last round
 * end). Buffers are recycled; at most kBuffers of them, holding at most
 * kQueueBytes, are queued at once (rows of up to 4 MB make buffers of up to
 * 4 MB), and those kept for reuse have at most kFreeBytes of capacity; one
 * that a huge row grew past kKeepBytes is queued alone and freed once
 * written.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pgsink::spool
{

class WriteBehind
{
  public:
    WriteBehind() = default;
    ~WriteBehind();
    WriteBehind(const WriteBehind &) = delete;
    WriteBehind &operator=(const WriteBehind &) = delete;

    /*
     * Queue data (taken: data is left empty, with a recycled buffer's
     * capacity) to be appended to fd, whose byte offset file_offset it
     * starts at. Waits while every buffer is queued.
     */
    void submit(int fd, uint64_t file_offset, std::string &data);
    /*
     * Queue the removal of files nobody reads any more (delivered segments,
     * renamed out of readers' sight): freeing their pages and blocks is
     * slow, and need not hold up decoding. Failures are ignored: what is
     * left is removed at the spool's next start.
     */
    void unlink_later(std::vector<std::string> paths);
    /*
     * Queue a call of f on the thread, after everything queued before it
     * (the spool's fsyncs at a round's end: decoding goes on meanwhile).
     * f makes system calls only, and throws (pgsink::Error) to fail: the
     * exception is kept and rethrown by rethrow_failure(), and nothing
     * queued after it is done. A call queued after a failure is still made,
     * with skipped = true, only to release what it holds (descriptors).
     * Returns its ticket (see completed()).
     */
    uint64_t call(std::function<void(bool skipped)> f);
    /* Tickets of the calls done: every call with a ticket up to it succeeded. */
    uint64_t completed() const;
    /* Throw the exception a call failed with, if any. */
    void rethrow_failure();
    /* Wait until everything queued is done (writes are not durable: the caller syncs). */
    void drain();
    /* Stop the thread (after draining); a new submit() starts it again. */
    void stop();

    /* A failed write: errno and nonzero, until clear_error(). */
    int error() const;
    void clear_error();

  private:
    struct Job {
        int fd;
        uint64_t offset;
        std::string data;
        std::vector<std::string> unlink;        /* instead of data */
        std::function<void(bool skipped)> call; /* instead of data */
        uint64_t ticket = 0;
    };
    void run();
    void work();
    void start();
    friend size_t write_behind_queued_while_stalled(size_t *kept_bytes);

    /*
     * 16 MB of 256 kB buffers: the thread stops writing for a round's
     * fdatasync or a segment's unlink (a discard, on a file system mounted
     * so) for about 10 ms, about 9 MB of decoding; with 16 buffers the
     * worker waited for every one (perf sched: 29 waits of 10 ms over 3M
     * rows, a fifth of its time). The thread writes three times as fast as
     * the worker decodes, so the queue empties again before the next.
     */
    static constexpr size_t kBuffers = 64;
    static constexpr size_t kKeepBytes = 4 << 20;
    /*
     * The bytes queued, whatever their number: 64 buffers of rows of 1 to
     * 4 MB would hold 256 MB. 64 of 256 kB (and a row's end) stay under it.
     */
    static constexpr size_t kQueueBytes = 20 << 20;
    /*
     * The capacity of the buffers kept for reuse: 64 that rows of up to
     * 256 kB made (a string's doubling leaves each 256 to about 600 kB) are
     * all kept; 64 that rows of up to 4 MB grew (256 MB) are not.
     */
    static constexpr size_t kFreeBytes = 40 << 20;
    static constexpr size_t kWakeAfter = 4; /* buffers queued before an idle thread is woken */
    mutable std::mutex mutex_;
    std::condition_variable work_, done_;
    std::deque<Job> queue_;
    std::vector<std::string> free_;
    size_t busy_ = 0;         /* jobs queued or being written */
    size_t queued_bytes_ = 0; /* their data's bytes */
    size_t free_bytes_ = 0;   /* free_'s capacity */
    bool stopping_ = false;
    bool dead_ = false; /* the thread ended on an exception (out of memory) */
    int error_ = 0;
    std::exception_ptr failure_; /* what a call threw (error_ is then EIO) */
    uint64_t tickets_ = 0;       /* calls queued */
    uint64_t completed_ = 0;     /* the last call done without a failure before or in it */
    std::thread thread_;
};

/*
 * For pgsink._selftest_boundary('write_behind'): how many 3 MB buffers
 * submit() queues while the thread is held in a call (a round's fsync);
 * *kept_bytes the capacity kept for reuse after 60 buffers of 3 MB
 * capacity were written.
 */
size_t write_behind_queued_while_stalled(size_t *kept_bytes);

} // namespace pgsink::spool

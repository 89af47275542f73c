/* write_behind.cpp: see write_behind.h. */
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fcntl.h>
#include <pthread.h>
#include <stdexcept>
#include <unistd.h>

#include "core/quiet_thread.h"
#include "spool/write_behind.h"

namespace pgsink::spool
{

WriteBehind::~WriteBehind()
{
    stop();
}

/* Append all of data at the end of fd; 0 or errno. */
static int write_all(int fd, const std::string &data)
{
    const char *p = data.data();
    size_t len = data.size();
    while (len > 0) {
        ssize_t n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += n;
        len -= static_cast<size_t>(n);
    }
    return 0;
}

/* An exception escaping a thread would end the process, and restart the whole cluster. */
void WriteBehind::run()
{
    try {
        work();
    } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (error_ == 0)
            error_ = ENOMEM;
        dead_ = true; /* nothing queued is written any more: submit() and drain() return */
        for (Job &job : queue_)
            if (job.call) {
                try {
                    job.call(true); /* only releases what it holds */
                } catch (...) {
                }
            }
        queue_.clear();
        busy_ = 0;
        queued_bytes_ = 0;
        done_.notify_all();
    }
}

void WriteBehind::work()
{
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty())
            return; /* stopping, everything written */
        Job job = std::move(queue_.front());
        queue_.pop_front();
        bool skip = error_ != 0;
        lock.unlock();
        int err = 0;
        std::exception_ptr failed;
        for (const std::string &path : job.unlink)
            (void)::unlink(path.c_str());
        if (job.call) {
            try {
                job.call(skip);
            } catch (...) {
                failed = std::current_exception();
            }
        } else if (!skip && job.unlink.empty()) {
            err = write_all(job.fd, job.data);
            /* Start writing it out now, so that the fsync at the round's end has little left. */
            if (err == 0)
                (void)sync_file_range(job.fd, static_cast<off_t>(job.offset),
                                      static_cast<off_t>(job.data.size()), SYNC_FILE_RANGE_WRITE);
        }
        size_t written = job.data.size();
        if (job.data.capacity() > kKeepBytes)
            std::string().swap(job.data);
        job.data.clear();
        lock.lock();
        queued_bytes_ -= written;
        if (err != 0 && error_ == 0)
            error_ = err;
        if (failed && error_ == 0) {
            error_ = EIO;
            failure_ = failed;
        }
        if (job.call && !skip && error_ == 0)
            completed_ = job.ticket;
        /*
         * Kept for reuse while the kept ones' capacity stays under
         * kFreeBytes: buffers rows of up to 4 MB grew would otherwise all
         * stay that large (64 of them); freed after the lock is let go.
         */
        std::string dropped;
        if (job.unlink.empty() && !job.call) {
            if (free_bytes_ + job.data.capacity() <= kFreeBytes) {
                free_bytes_ += job.data.capacity();
                free_.push_back(std::move(job.data));
            } else {
                dropped.swap(job.data);
            }
        }
        busy_--;
        lock.unlock(); /* the worker, woken, does not block on the lock at once */
        done_.notify_all();
        std::string().swap(dropped);
        lock.lock();
    }
}

/* Start the thread if it is not running (mutex_ held). */
void WriteBehind::start()
{
    if (!thread_.joinable()) {
        stopping_ = false;
        free_.reserve(kBuffers + 1); /* so that giving a buffer back never allocates */
        thread_ = quiet_thread([this] { run(); });
    }
}

void WriteBehind::submit(int fd, uint64_t file_offset, std::string &data)
{
    std::unique_lock<std::mutex> lock(mutex_);
    start();
    /* A huge buffer waits for the queue to empty: one at a time in memory. */
    bool huge = data.size() > kKeepBytes;
    size_t size = data.size();
    auto room = [&] {
        return dead_ || busy_ == 0 ||
               (!huge && busy_ < kBuffers && queued_bytes_ + size <= kQueueBytes);
    };
    /*
     * What it waits for may be buffers queued without waking the thread
     * (kWakeAfter below): wake it first, or a huge buffer after one to three
     * of them waits for ever.
     */
    if (!room())
        work_.notify_one();
    done_.wait(lock, room);
    if (dead_) {
        data.clear(); /* the error is reported (error()); the worker restarts */
        return;
    }
    std::string spare;
    if (!free_.empty()) {
        spare = std::move(free_.back());
        free_.pop_back();
        free_bytes_ -= spare.capacity();
    }
    queue_.push_back(Job{fd, file_offset, std::move(data), {}, {}, 0});
    busy_++;
    queued_bytes_ += size;
    data = std::move(spare);
    data.clear();
    /*
     * An idle thread is woken for kWakeAfter buffers at a time, not for
     * each: on two busy cores the woken thread takes the worker's core, and
     * a wake-up per 256 kB buffer switched the worker out hundreds of times
     * a second (perf sched). The round's end (call()) and drain() wake it
     * for whatever is queued.
     */
    bool wake = huge || queue_.size() >= kWakeAfter;
    /*
     * Woken after the lock is let go: woken under it, the thread would run
     * only to block on the lock, and the worker be switched out twice a
     * buffer (perf: most of the stream worker's context switches).
     */
    lock.unlock();
    if (wake)
        work_.notify_one();
}

void WriteBehind::unlink_later(std::vector<std::string> paths)
{
    std::unique_lock<std::mutex> lock(mutex_);
    start();
    if (dead_)
        return; /* removed at the spool's next start */
    queue_.push_back(Job{-1, 0, std::string(), std::move(paths), {}, 0});
    busy_++;
    work_.notify_one();
}

uint64_t WriteBehind::call(std::function<void(bool skipped)> f)
{
    std::unique_lock<std::mutex> lock(mutex_);
    start();
    if (dead_) {
        lock.unlock();
        f(true);           /* only to release what it holds */
        return UINT64_MAX; /* never done: the error is reported first */
    }
    Job job{-1, 0, std::string(), {}, std::move(f), ++tickets_};
    uint64_t ticket = job.ticket;
    queue_.push_back(std::move(job));
    busy_++;
    lock.unlock();
    work_.notify_one();
    return ticket;
}

uint64_t WriteBehind::completed() const
{
    std::lock_guard<std::mutex> lock(mutex_);
    return completed_;
}

void WriteBehind::rethrow_failure()
{
    std::exception_ptr failed;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        failed = failure_;
    }
    if (failed)
        std::rethrow_exception(failed);
}

void WriteBehind::drain()
{
    work_.notify_one(); /* buffers submit() queued without waking the thread */
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0 || dead_; });
}

void WriteBehind::stop()
{
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    work_.notify_all();
    if (thread_.joinable())
        thread_.join();
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = false;
    dead_ = false;
}

int WriteBehind::error() const
{
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
}

void WriteBehind::clear_error()
{
    std::lock_guard<std::mutex> lock(mutex_);
    if (!dead_) { /* a dead thread dropped what came after: its error stays until stop() */
        error_ = 0;
        failure_ = nullptr;
    }
}

size_t write_behind_queued_while_stalled(size_t *kept_bytes)
{
    *kept_bytes = 0;
    int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        throw std::runtime_error("could not open /dev/null");
    std::mutex mutex;
    std::condition_variable released;
    bool release = false;
    std::atomic<size_t> queued{0};
    WriteBehind io;
    /* The thread held as by a round's fsync. */
    io.call([&](bool) {
        std::unique_lock<std::mutex> lock(mutex);
        released.wait(lock, [&] { return release; });
    });
    auto let_go = [&] {
        {
            std::lock_guard<std::mutex> lock(mutex);
            release = true;
        }
        released.notify_all();
    };
    std::thread feeder;
    try {
        feeder = quiet_thread([&] {
            try {
                for (int i = 0; i < 70; i++) {
                    std::string buffer(3 << 20, 'x');
                    io.submit(fd, 0, buffer);
                    queued++;
                }
            } catch (...) {
            }
        });
    } catch (...) {
        let_go();
        io.stop();
        ::close(fd);
        throw;
    }
    /* Until the feeder waits (its count still for 100 ms), or 5 s. */
    size_t seen = SIZE_MAX;
    for (int i = 0; i < 50 && queued.load() != seen; i++) {
        seen = queued.load();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    seen = queued.load();
    let_go();
    feeder.join();
    io.drain();
    /*
     * Then 60 buffers of 256 kB whose capacity is 3 MB (rows of 3 MB grew
     * them) queued behind a stall (under kBuffers and kQueueBytes: none
     * waits, as nothing would let the stall go): kept, they hold 180 MB.
     */
    {
        std::lock_guard<std::mutex> lock(mutex);
        release = false;
    }
    io.call([&](bool) {
        std::unique_lock<std::mutex> lock(mutex);
        released.wait(lock, [&] { return release; });
    });
    for (int i = 0; i < 60 && *kept_bytes == 0; i++) {
        std::string buffer;
        try {
            buffer.reserve(3 << 20);
            buffer.assign(256 << 10, 'x');
            io.submit(fd, 0, buffer);
        } catch (...) {
            *kept_bytes = SIZE_MAX; /* reported as a failure */
        }
    }
    let_go();
    io.drain();
    {
        std::lock_guard<std::mutex> lock(io.mutex_);
        if (*kept_bytes == 0)
            *kept_bytes = io.free_bytes_;
    }
    io.stop();
    ::close(fd);
    return seen;
}

} // namespace pgsink::spool

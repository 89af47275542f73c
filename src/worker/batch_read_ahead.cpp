/*
 * batch_read_ahead.cpp: see batch_read_ahead.h.
 */
#include "worker/batch_read_ahead.h"
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/quiet_thread.h"

namespace pgsink
{

SpoolBatch read_spool_batch(spool::Reader &reader, uint64_t offset, uint64_t end, size_t max,
                            std::string spare)
{
    SpoolBatch b;
    bool segment_end = false;
    std::string_view piece = reader.read(offset, end, max, &b.entries, &segment_end);
    /*
     * A batch does not end where a spool segment does: it goes on in the
     * next one. A short batch there cost a request of its own, and BigQuery
     * streams an import batch with few rows instead of loading it (1.3% of
     * an import's rows, a fifth of its time).
     */
    std::string joined;
    while (segment_end && joined.size() + piece.size() < max) {
        if (joined.empty())
            joined.reserve(max); /* grown once, not copied at each doubling */
        joined.append(piece);
        uint64_t more = 0;
        piece = reader.read(offset + joined.size(), end, max - joined.size(), &more, &segment_end);
        b.entries += more;
    }
    if (!joined.empty()) {
        joined.append(piece);
        b.lines = std::move(joined);
    } else {
        /* The reader's buffer itself: a copy was a third of reading (perf). */
        b.lines = reader.take_buffer(std::move(spare));
        b.lines.resize(piece.size());
    }
    return b;
}

void BatchReadAhead::start(spool::Reader &reader, uint64_t offset, uint64_t end, size_t max,
                           std::string spare)
{
    cancel();
    offset_ = offset;
    max_ = max;
    failed_ = false;
    /* The thread owns batch_ and the reader until joined; nothing else touches them meanwhile. */
    thread_ = quiet_thread([this, &reader, offset, end, max, spare = std::move(spare)]() mutable {
        pthread_setname_np(pthread_self(), "pgsink-read"); /* for top -H and perf */
        /*
         * Behind the worker's thread and the request thread: reading ahead
         * has a batch's time of slack, making the next request has none.
         */
        setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 5);
        try {
            batch_ = read_spool_batch(reader, offset, end, max, std::move(spare));
        } catch (...) {
            failed_ = true; /* read again by the caller, who reports the error */
        }
    });
}

std::optional<SpoolBatch> BatchReadAhead::take(uint64_t offset, size_t max)
{
    if (!thread_.joinable())
        return std::nullopt;
    thread_.join();
    std::optional<SpoolBatch> out;
    if (offset == offset_ && max == max_ && !failed_)
        out = std::move(batch_);
    batch_ = SpoolBatch{};
    return out;
}

void BatchReadAhead::cancel()
{
    if (thread_.joinable())
        thread_.join();
    batch_ = SpoolBatch{};
}

} // namespace pgsink

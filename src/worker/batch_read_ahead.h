/*
 * batch_read_ahead.h: the next batch of an HTTP sink read from the spool on
 * a thread of its own, while the delivery worker's thread sends the batches
 * before it.
 *
 * Reading a batch costs the worker's thread as much as sending it: the
 * pread() out of the page cache and the reader's count of its lines (about
 * 55 ms per 1M rows of 287 bytes with a copy the window kept, a third of the
 * webhook worker's own time; the window now keeps the reader's buffer).
 * Read ahead, the worker only takes it.
 *
 * The reader belongs to the thread from start() until take() or cancel():
 * the worker uses it for nothing else meanwhile (Delivery::reader() cancels
 * first). The thread never calls PostgreSQL, has every signal blocked
 * (core/quiet_thread.h), and lets no exception escape: a read that fails
 * is dropped, and the worker reads that batch itself (and sees the error).
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include "spool/spool_reader.h"

namespace pgsink
{

/* A batch of the spool: whole lines, and how many. */
struct SpoolBatch {
    std::string lines;
    uint64_t entries = 0;
};

/*
 * The batch at offset, read before end: whole lines, at most about max bytes
 * (a longer line alone), going on into the next spool segment when one ends
 * before (a short batch at each segment's end cost a request of its own).
 * Its lines are the reader's buffer, which takes spare (a batch done with)
 * in exchange.
 */
SpoolBatch read_spool_batch(spool::Reader &reader, uint64_t offset, uint64_t end, size_t max,
                            std::string spare = {});

class BatchReadAhead
{
  public:
    BatchReadAhead() = default;
    ~BatchReadAhead() { cancel(); }
    BatchReadAhead(const BatchReadAhead &) = delete;
    BatchReadAhead &operator=(const BatchReadAhead &) = delete;

    /* Read the batch at offset (read_spool_batch(), given spare) with reader, on the thread. */
    void start(spool::Reader &reader, uint64_t offset, uint64_t end, size_t max,
               std::string spare = {});
    /*
     * The batch at offset of at most max bytes, once read (waits for the
     * thread); nothing if the thread read another one, or failed.
     */
    std::optional<SpoolBatch> take(uint64_t offset, size_t max);
    /* Wait for the thread and drop what it read. */
    void cancel();

  private:
    std::thread thread_;
    uint64_t offset_ = 0;
    size_t max_ = 0;
    bool failed_ = false;
    SpoolBatch batch_;
};

} // namespace pgsink

/*
 * importer.h: the stream worker's import (backfill) side.
 *
 * Between decoding rounds, the worker reads the next chunk of the oldest
 * unfinished import job in one short transaction, between two watermarks
 * (see import_chunk.h). The decoder emits the chunk at the high watermark;
 * once the sink has made it durable and the slot is saved past it, the job's
 * cursor advances. A crash before that reads the chunk again: no gap.
 */
#pragma once

#include <memory>

#include "imports/import_chunk.h"

namespace pgsink
{

class Importer
{
  public:
    /* Is a chunk read and waiting for its high watermark (or its confirmation)? */
    bool busy() const { return chunk_ != nullptr; }
    /*
     * Read the next chunk if a job is runnable. Runs its own transactions;
     * call outside decoding. Returns true if a chunk was read.
     */
    bool read_next_chunk();
    /* Is a job possibly runnable (active, newly requested, or time to look again)? */
    bool due() const;
    /* Has the pending chunk been emitted and confirmed past its high watermark? */
    bool ready_to_persist(XLogRecPtr confirmed) const
    {
        return chunk_ && chunk_->emitted && confirmed >= chunk_->high_end;
    }
    /* The slot confirmed `confirmed`: persist the chunk's cursor if it is durable. */
    void after_confirm(XLogRecPtr confirmed);
    /* Forget the chunk (the stream stopped; it is read again later). */
    void reset();

  private:
    /* A chunk failed: back off (or end the job, if it can never succeed). */
    void record_failure(int64 job_id, const char *message, bool expire);

    /* Keep a finished chunk's buffers for the next one. */
    void recycle(std::unique_ptr<ImportChunk> chunk);

    std::unique_ptr<ImportChunk> chunk_;
    std::unique_ptr<ImportChunk> spare_;
    uint64 chunk_seq_ = 0;
    uint64 requests_seen_ = 0;
    bool job_active_ = true; /* look at once after start */
    TimestampTz next_look_ = 0;
};

} // namespace pgsink

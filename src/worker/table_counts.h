/*
 * table_counts.h: the stream worker's counts of entries and bytes per
 * captured table, kept locally while a round is written, taken at the
 * round's end, and added to shared memory (SharedState::tables) once the
 * round is durable, for pgsink.tables and pgsink.metrics().
 */
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

extern "C" {
#include "postgres.h"
#include "datatype/timestamp.h"
}

namespace pgsink
{

class TableCounts
{
  public:
    /* An entry of bytes bytes for table relid (consecutive entries of one table are cheap). */
    void add(Oid relid, size_t bytes)
    {
        if (last_ >= counts_.size() || counts_[last_].relid != relid)
            last_ = find(relid);
        Count &c = counts_[last_];
        c.entries++;
        c.bytes += bytes;
        if (c.txn != txn_) {
            c.txn = txn_;
            touched_.push_back(last_);
        }
    }
    /* The transaction whose entries were added committed at commit_time. */
    void commit(TimestampTz commit_time);

    struct Count {
        Oid relid;
        uint64_t entries = 0, bytes = 0;
        TimestampTz last_change = 0;
        uint64_t txn = 0;
    };
    /* Everything counted since the last take() (a round ended), and start again. */
    std::vector<Count> take();
    /* Add a round's counts to shared memory (the round is durable). */
    static void publish(const std::vector<Count> &counts);
    /* Forget what was counted (the round was not made durable). */
    void clear();

  private:
    size_t find(Oid relid);

    std::vector<Count> counts_;
    std::unordered_map<Oid, size_t> index_;
    std::vector<size_t> touched_; /* counts_ the current transaction added to */
    size_t last_ = SIZE_MAX;
    uint64_t txn_ = 1;
};

} // namespace pgsink

/* table_counts.cpp: see table_counts.h. */
#include "core/shared_state.h"
#include "worker/table_counts.h"

namespace pgsink
{

size_t TableCounts::find(Oid relid)
{
    auto it = index_.find(relid);
    if (it != index_.end())
        return it->second;
    Count c;
    c.relid = relid;
    counts_.push_back(c);
    index_.emplace(relid, counts_.size() - 1);
    return counts_.size() - 1;
}

void TableCounts::commit(TimestampTz commit_time)
{
    for (size_t i : touched_)
        counts_[i].last_change = commit_time;
    touched_.clear();
    txn_++;
}

/*
 * The slot of relid in the shared table: open addressing on relid; a table
 * that finds no free slot is counted in the last one, relid 0 ("other
 * tables"). Call with shared_lock held exclusively.
 */
static TableStats &shared_slot(Oid relid)
{
    constexpr int probe_slots = kMaxTableStats - 1;
    int start = static_cast<int>(relid % probe_slots);
    for (int i = 0; i < probe_slots; i++) {
        TableStats &t = shared->tables[(start + i) % probe_slots];
        if (t.relid == relid)
            return t;
        if (t.relid == InvalidOid) {
            t.relid = relid;
            return t;
        }
    }
    return shared->tables[kMaxTableStats - 1];
}

std::vector<TableCounts::Count> TableCounts::take()
{
    std::vector<Count> taken;
    taken.swap(counts_);
    clear();
    return taken;
}

void TableCounts::publish(const std::vector<Count> &counts)
{
    if (counts.empty())
        return;
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    for (const Count &c : counts) {
        TableStats &t = shared_slot(c.relid);
        t.entries += c.entries;
        t.bytes += c.bytes;
        if (c.last_change > t.last_change_time)
            t.last_change_time = c.last_change;
    }
    LWLockRelease(shared_lock);
}

void TableCounts::clear()
{
    counts_.clear();
    index_.clear();
    touched_.clear();
    last_ = SIZE_MAX;
}

} // namespace pgsink

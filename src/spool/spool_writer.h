/*
 * spool_writer.h: the stream worker's side of the spool (see
 * spool_files.h): append entries, make them durable before the slot
 * confirms, start a new segment when one is full, and remove segments every
 * sink has delivered.
 *
 * Errors (a full disk, an I/O error) are thrown as pgsink::Error and are
 * never retried in place: the stream worker restarts, and open() cuts the
 * spool back to its last round end, whose transactions the slot confirmed
 * or will skip (the stream starts decoding at the spool's durable lsn).
 */
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "spool/spool_files.h"
#include "spool/write_behind.h"

namespace pgsink::spool
{

class Writer
{
  public:
    Writer() = default;
    ~Writer();
    Writer(const Writer &) = delete;
    Writer &operator=(const Writer &) = delete;

    /*
     * Open the spool, made anew or recovered (cut back to its last round
     * end), and publish it in shared memory. Returns the lsn before which
     * every committed transaction is in the spool; a new spool starts at
     * slot_confirmed.
     */
    uint64_t open(uint64_t slot_confirmed);
    bool is_open() const { return seg_fd_ >= 0; }
    void close();

    /*
     * A Schema entry is about to be appended: remembered, so that each new
     * segment says which schemas are in effect where it starts.
     */
    void note_schema(const char *line, size_t len);
    /*
     * Append entries (whole lines, not durable yet), written by a thread
     * (write_behind.h): data is taken, and left empty with a recycled
     * buffer's capacity.
     */
    void write(std::string &data, uint64_t entries);
    /*
     * A transaction's entries were all written, but for the last pending
     * bytes (entries) still in the caller's batch: maybe an index record.
     */
    void transaction_end(uint64_t lsn, int64_t commit_time, size_t pending, uint64_t entries);
    /*
     * End a round: everything written is to be made durable, and every
     * transaction committed before decoded_upto is in the spool. The fsyncs
     * (segment, then its round end in the index) are made by the writes'
     * thread, after the writes before them, while decoding goes on; with
     * wait, sync() returns once they are done. A full segment is followed
     * by a new one, made in the same turn of the thread. Publishes (and
     * wakes the delivery workers for) whatever rounds are durable by now.
     */
    void sync(uint64_t decoded_upto, bool wait);
    /* Take in (and publish) the rounds the thread made durable since; whether there were any. */
    bool reap();
    /* Wait for the rounds being made durable, and reap() them; whether there were any. */
    bool wait_durable();
    /* Every transaction committed before it is durable in the spool. */
    uint64_t durable_lsn() const { return durable_lsn_; }

    /*
     * Remove the oldest segments that end at or before min_cursor and were
     * last written retention_s seconds ago or more (never the one being
     * written). Publishes the spool's size.
     */
    void remove_delivered(uint64_t min_cursor, int retention_s);
    /*
     * Close the segment being written and start the next, if it holds
     * anything and everything in it is before min_cursor (delivered): then
     * remove_delivered() can remove it. Returns whether it did.
     */
    bool roll_if_delivered(uint64_t min_cursor);
    /* Disk used by the segments. */
    uint64_t bytes() const { return bytes_; }
    /* Written since the last sync(). */
    uint64_t unsynced_bytes() const { return end_ - submitted_end_; }
    uint64_t id() const { return id_; }

  private:
    /* A round whose fsyncs are queued: durable once the thread's call with ticket is done. */
    struct Round {
        uint64_t ticket;
        uint64_t end, entries, lsn;
        int64_t commit_time;
    };
    /* Size at which a segment is rolled (pgsink.spool_segment_size). */
    static uint64_t segment_bytes();
    void open_segment_files(uint64_t start, int *seg_fd, int *idx_fd);
    void create_segment(uint64_t start);
    void roll();
    std::string schemas_text() const;
    void publish();
    void check_writes();

    std::string dir_;
    uint64_t id_ = 0;
    int seg_fd_ = -1;
    int idx_fd_ = -1;
    uint64_t seg_start_ = 0;
    uint64_t end_ = 0;           /* offset after the last byte written */
    uint64_t entries_ = 0;       /* entries before end_ */
    uint64_t submitted_end_ = 0; /* end_ at the last round's end */
    uint64_t durable_end_ = 0;   /* what the rounds done made durable */
    uint64_t durable_entries_ = 0;
    uint64_t durable_lsn_ = 0;
    int64_t durable_commit_time_ = 0;
    int64_t last_commit_time_ = 0;
    std::deque<Round> rounds_;                   /* ended, not yet durable, oldest first */
    uint64_t indexed_at_ = 0;                    /* offset of the last index record */
    std::vector<IndexRecord> pending_;           /* transaction ends not yet in the index file */
    std::map<std::string, std::string> schemas_; /* table -> its latest Schema entry */
    uint64_t bytes_ = 0;
    uint64_t oldest_ = 0;
    int segments_ = 0;
    WriteBehind io_;
};

} // namespace pgsink::spool

/*
 * spool_reader.h: reading the spool (see spool_files.h) from an offset:
 * delivery workers read batches of whole lines from their cursor;
 * pgsink.rewind_sink() finds the offset of an lsn or a time.
 *
 * A reader never reads past the end it is given: the durable end the
 * stream worker published (SpoolShared), since bytes after it may be cut.
 * Pure file reads, no PostgreSQL calls: errors are thrown (pgsink::Error).
 */
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spool/spool_files.h"

namespace pgsink::spool
{

/* A place in the spool: an offset, and the number of entries before it. */
struct Position {
    uint64_t offset = 0;
    uint64_t entries = 0;
    uint64_t lsn = 0;        /* the first entry there has this lsn or a later one */
    int64_t commit_time = 0; /* of the newest transaction before it, where known */
};

/* The newlines in [p, p + len) (every piece read is counted: vectorized). */
uint64_t count_newlines(const char *p, size_t len);

class Reader
{
  public:
    explicit Reader(std::string dir) : dir_(std::move(dir)) {}
    ~Reader();
    Reader(const Reader &) = delete;
    Reader &operator=(const Reader &) = delete;

    /*
     * Whole lines from offset: at least one line, at most about max bytes,
     * never past end nor past the end of a segment. Empty at end; *lines
     * gets their count; *segment_end (if given) whether the lines stop
     * where a segment does, with more before end (in the next segment).
     * The view is valid until the next read().
     */
    std::string_view read(uint64_t offset, uint64_t end, size_t max, uint64_t *lines,
                          bool *segment_end = nullptr);
    /*
     * The buffer the last read() returned a view of (its bytes start the
     * string; the string may be longer than the view), traded for spare,
     * which the next read() fills: a batch read is kept without copying
     * it. A spare that held a batch before keeps its pages, so the next
     * read() does not fault them in again; it zero-fills only what it
     * grows the spare by (a batch is cut to its last whole line).
     */
    std::string take_buffer(std::string spare);

    /* Forget the segments and close the file (the spool was made anew). */
    void reset();

    /* The oldest retained position. */
    Position oldest();
    /* The first entry whose lsn is at or after lsn, before end. Throws if no longer retained. */
    Position seek_lsn(uint64_t lsn, uint64_t end);
    /* The first entry committed at or after ts, before end. Throws if no longer retained. */
    Position seek_time(int64_t ts, uint64_t end);
    /* The lsn an entry at offset has at least (a segment's or a record's bound). */
    uint64_t lsn_at(uint64_t offset);

    /*
     * The Schema entries in effect at offset (the latest of each table
     * before it), as lines: what a sink starting or rewound there must be
     * told first.
     */
    std::string schemas_at(uint64_t offset);

  private:
    const Segment &segment_of(uint64_t offset);
    int fd_of(const Segment &s);
    /* Scan lines [from, to) of the spool, calling f(line, len, offset) until it returns false. */
    template <typename F> void scan(uint64_t from, uint64_t to, F &&f);
    void collect_schemas(uint64_t from, uint64_t to,
                         std::vector<std::pair<std::string, std::string>> &m);
    std::vector<std::pair<std::string, std::string>> base_schemas(size_t segment_index);
    Position seek(bool by_lsn, uint64_t lsn, int64_t ts, uint64_t end);

    std::string dir_;
    std::vector<Segment> segments_;
    int fd_ = -1;
    uint64_t fd_start_ = UINT64_MAX;
    std::string buf_; /* what read() returns a view of; its size is the room used */
};

} // namespace pgsink::spool
